"""Departments and their API tokens: who is calling, what they may do, and in which grid area.

Tokens are random (`wm_` + 43 url-safe characters) and stored only as SHA-256 hashes. A
request without a valid token gets 401; a token without the command's scope, or acting on a
grid path outside its department's area, gets 403.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.db import Conn
from shared.grid import within

SCOPES = frozenset(
    {
        "inspection:write",
        "issue:report",
        "issue:assign",
        "issue:rectify",
        "issue:verify",
        "standards:write",
        "volunteer:write",
        "points:write",
        "honours:write",
        "titles:write",
        "scoring:read",
        "notify:admin",
        "ops:admin",
    }
)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated department behind a request."""

    department: str
    kind: str
    area: str
    scopes: frozenset[str]

    def can_act_in(self, grid_path: str) -> bool:
        return within(grid_path, self.area)

    def require_area(self, grid_path: str) -> None:
        if not self.can_act_in(grid_path):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"department {self.department} may act only in {self.area}, not in {grid_path}",
            )

    def sees(self, grid_path: str) -> bool:
        """A read may cover the department's area or a node above it narrowed to the area."""
        return within(grid_path, self.area) or within(self.area, grid_path)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return "wm_" + secrets.token_urlsafe(32)


async def upsert_departments(conn: Conn, departments: Iterable[dict[str, Any]]) -> int:
    rows = [(d["code"], d["name"], d.get("name_en", ""), d["kind"], d["area"], list(d["scopes"])) for d in departments]
    for r in rows:
        unknown = set(r[5]) - SCOPES
        if unknown:
            raise ValueError(f"department {r[0]}: unknown scopes {sorted(unknown)}")
    await conn.executemany(
        "INSERT INTO departments (code, name, name_en, kind, area, scopes) VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, name_en = EXCLUDED.name_en, kind = EXCLUDED.kind,"
        " area = EXCLUDED.area, scopes = EXCLUDED.scopes",
        rows,
    )
    return len(rows)


async def issue_token(conn: Conn, department: str, label: str = "") -> str:
    """A new token for a department; only its hash is stored, so show it once."""
    token = new_token()
    await conn.execute(
        "INSERT INTO api_tokens (token_hash, department, label) VALUES ($1, $2, $3)",
        hash_token(token),
        department,
        label,
    )
    return token


class TokenAuthenticator:
    """Resolves bearer tokens to principals, caching hits briefly (revocation takes effect within `ttl_s`)."""

    def __init__(self, pool: asyncpg.Pool, ttl_s: float = 30.0):
        self.pool = pool
        self.ttl_s = ttl_s
        self._cache: dict[bytes, tuple[float, Principal]] = {}

    async def principal(self, token: str) -> Principal | None:
        h = hash_token(token)
        hit = self._cache.get(h)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT d.code, d.kind, d.area, d.scopes FROM api_tokens t JOIN departments d ON d.code = t.department"
                " WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
                h,
            )
        if row is None:
            self._cache.pop(h, None)
            return None
        p = Principal(row["code"], row["kind"], row["area"], frozenset(row["scopes"]))
        self._cache[h] = (now + self.ttl_s, p)
        return p


_bearer = HTTPBearer(auto_error=False)


def require(scope: str | None = None) -> Callable[[Request], Awaitable[Principal]]:
    """FastAPI dependency: the caller's principal, 401 without a valid token, 403 without `scope`."""
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"unknown scope {scope}")

    async def dependency(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
        if creds is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        auth: TokenAuthenticator = request.app.state.auth
        principal = await auth.principal(creds.credentials)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"}
            )
        if scope is not None and scope not in principal.scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"department {principal.department} lacks scope {scope}")
        return principal

    return dependency
