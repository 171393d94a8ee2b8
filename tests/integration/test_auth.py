"""Department tokens against a real database: 401 without a valid token, 403 outside scope or area."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Depends

from shared.auth import Principal, issue_token, require, upsert_departments
from shared.service import create_app

pytestmark = pytest.mark.integration


@pytest.fixture
async def client_and_tokens(settings):
    app = create_app("auth-probe", settings)

    @app.post("/v1/issues/{township}/assign")
    async def assign(township: str, who: Principal = Depends(require("issue:assign"))) -> dict[str, str]:
        who.require_area(f"changtai/{township}")
        return {"by": who.department}

    async with app.router.lifespan_context(app):
        async with app.state.pool.acquire() as conn:
            await upsert_departments(
                conn,
                [
                    {
                        "code": "wuan-office",
                        "name": "武安镇创城办",
                        "kind": "township_office",
                        "area": "changtai/wuan",
                        "scopes": ["issue:assign", "issue:report"],
                    },
                    {
                        "code": "transport",
                        "name": "区交通运输局",
                        "kind": "district_department",
                        "area": "changtai",
                        "scopes": ["issue:rectify"],
                    },
                ],
            )
            tokens = {d: await issue_token(conn, d) for d in ("wuan-office", "transport")}
            revoked = await issue_token(conn, "wuan-office")
            await conn.execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE department = 'wuan-office'"
                " AND token_hash = sha256($1::text::bytea)",
                revoked,
            )
            stored = await conn.fetch("SELECT token_hash FROM api_tokens")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield client, tokens, revoked, stored


async def test_tokens_scopes_and_areas(client_and_tokens):
    client, tokens, revoked, stored = client_and_tokens
    auth = {d: {"Authorization": f"Bearer {t}"} for d, t in tokens.items()}
    r = await client.post("/v1/issues/wuan/assign")
    assert r.status_code == 401
    r = await client.post("/v1/issues/wuan/assign", headers={"Authorization": "Bearer wm_not-a-token"})
    assert r.status_code == 401
    r = await client.post("/v1/issues/wuan/assign", headers={"Authorization": f"Bearer {revoked}"})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    r = await client.post("/v1/issues/wuan/assign", headers=auth["transport"])
    assert r.status_code == 403 and "lacks scope issue:assign" in r.json()["detail"]
    r = await client.post("/v1/issues/yanxi/assign", headers=auth["wuan-office"])
    assert r.status_code == 403 and "only in changtai/wuan" in r.json()["detail"]
    r = await client.post("/v1/issues/wuan/assign", headers=auth["wuan-office"])
    assert r.status_code == 200 and r.json() == {"by": "wuan-office"}
    # Only hashes are stored: no stored value equals or contains a token.
    assert all(tok.encode() not in bytes(row["token_hash"]) for row in stored for tok in tokens.values())
