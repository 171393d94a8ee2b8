"""Who is watching: a department token in the Authorization header, or (for EventSource, which
cannot send headers) a short-lived signed session cookie made from it.

The cookie holds the token's SHA-256 hash and an expiry, signed with HMAC-SHA256 under a key
of this process (or WENMING_DASHBOARD_SECRET). It is HttpOnly and SameSite=Strict; the token
itself never leaves the page's memory and is never logged. Each use looks the hash up again, so
a revoked token stops opening streams at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time

import asyncpg
from fastapi import HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.auth import Principal, TokenAuthenticator, hash_token

COOKIE = "wm_dashboard"
COOKIE_TTL_S = 900
"""A session lasts 15 minutes; the page renews it every few minutes while it holds the token."""
VIEW_SCOPE = "scoring:read"
HEALTH_SCOPE = "ops:admin"
"""Stream health is for the campaign office's operators."""

_bearer = HTTPBearer(auto_error=False)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Makes and checks session cookies: `<token hash>.<expiry>.<signature>`, base64url."""

    def __init__(self, key: bytes | None = None, ttl_s: int = COOKIE_TTL_S):
        env = os.environ.get("WENMING_DASHBOARD_SECRET", "")
        self.key = key or (env.encode() if env else secrets.token_bytes(32))
        self.ttl_s = ttl_s

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest())

    def make(self, token: str, now: float | None = None) -> tuple[str, int]:
        """A cookie value for the token and its expiry (unix seconds)."""
        expires = int((now or time.time()) + self.ttl_s)
        body = f"{_b64(hash_token(token))}.{expires}"
        return f"{body}.{self._sign(body)}", expires

    def check(self, value: str, now: float | None = None) -> bytes | None:
        """The token hash inside a valid, unexpired cookie, else None."""
        parts = value.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        body = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._sign(body), parts[2]):
            return None
        if int(parts[1]) <= (now or time.time()):
            return None
        try:
            return _unb64(parts[0])
        except ValueError:
            return None


async def principal_by_hash(pool: asyncpg.Pool, token_hash: bytes) -> Principal | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT d.code, d.kind, d.area, d.scopes FROM api_tokens t JOIN departments d ON d.code = t.department"
            " WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
            token_hash,
        )
    return None if row is None else Principal(row["code"], row["kind"], row["area"], frozenset(row["scopes"]))


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def _allowed(principal: Principal) -> Principal:
    if VIEW_SCOPE not in principal.scopes:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"department {principal.department} lacks scope {VIEW_SCOPE}")
    return principal


async def bearer_viewer(request: Request) -> Principal:
    """FastAPI dependency: the watching department from its bearer token (header only)."""
    creds: HTTPAuthorizationCredentials | None = await _bearer(request)
    if creds is None:
        raise _unauthorized("missing bearer token")
    auth: TokenAuthenticator = request.app.state.auth
    principal = await auth.principal(creds.credentials)
    if principal is None:
        raise _unauthorized("invalid or revoked token")
    return _allowed(principal)


async def viewer(request: Request) -> Principal:
    """FastAPI dependency: the watching department from its bearer token or its session cookie."""
    if request.headers.get("authorization"):
        return await bearer_viewer(request)
    value = request.cookies.get(COOKIE)
    if not value:
        raise _unauthorized("log in first: no token and no session")
    signer: SessionSigner = request.app.state.signer
    token_hash = signer.check(value)
    if token_hash is None:
        raise _unauthorized("session expired or invalid: log in again")
    principal = await principal_by_hash(request.app.state.pool, token_hash)
    if principal is None:
        raise _unauthorized("token revoked")
    return _allowed(principal)
