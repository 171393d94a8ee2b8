"""HTTP API of the notify service (/v1): recipients, subscriptions, the inbox, dead letters.

Managing recipients and subscriptions, listing deliveries and re-driving dead letters need
scope `notify:admin` and act only inside the department's area. An inbox is read by an admin of
its area or by the recipient's own unit (department). Every command is idempotent by nature
(PUT, mark read, snooze, re-drive); the `Idempotency-Key` header is accepted for uniformity.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.notify.bounces import parse_bounce
from services.notify.domain import Recipient, RecipientId
from services.notify.ledger import recipient_from_row, upsert_recipient
from services.notify.worker import redrive, report_bounce
from shared.auth import Principal, require
from shared.campaign_time import utcnow
from shared.grid import GridPath, within
from shared.service import IdempotencyKey

router = APIRouter(prefix="/v1")
Admin = Annotated[Principal, Depends(require("notify:admin"))]
Anyone = Annotated[Principal, Depends(require())]


class RecipientIn(Recipient):
    """A recipient as registered; `webhook_secret` is the HMAC key their receiver verifies with
    (generated and returned once when a webhook URL comes without one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    grid_path: GridPath
    webhook_secret: str | None = Field(default=None, min_length=16, max_length=200)


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recipient_id: RecipientId
    event_type: str = Field(min_length=1, max_length=100)
    area: GridPath


class SnoozeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    until: AwareDatetime


class BounceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)


async def _recipient_row(request: Request, recipient_id: str) -> Any:
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM notify_recipients WHERE recipient_id = $1", recipient_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no recipient {recipient_id}")
    return row


@router.put("/recipients/{recipient_id}")
async def put_recipient(
    recipient_id: RecipientId, body: RecipientIn, request: Request, principal: Admin, key: str | None = IdempotencyKey
) -> dict[str, Any]:
    """Register or update a recipient (channels, addresses, quiet hours, language)."""
    if body.recipient_id != recipient_id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "recipient_id in path and body differ")
    principal.require_area(body.grid_path)
    async with request.app.state.pool.acquire() as conn:
        old = await conn.fetchrow("SELECT grid_path FROM notify_recipients WHERE recipient_id = $1", recipient_id)
        if old is not None:
            principal.require_area(old["grid_path"])
        has_secret = old is not None and await conn.fetchval(
            "SELECT webhook_secret IS NOT NULL FROM notify_recipients WHERE recipient_id = $1", recipient_id
        )
        secret = body.webhook_secret
        new_secret = body.webhook_url is not None and secret is None and not has_secret
        if new_secret:
            secret = "whsec_" + secrets.token_urlsafe(32)
        recipient = Recipient.model_validate(body.model_dump(exclude={"webhook_secret"}))
        await upsert_recipient(conn, recipient, secret)
    out: dict[str, Any] = recipient.model_dump(mode="json")
    if new_secret:
        out["webhook_secret"] = secret
    return out


@router.get("/recipients")
async def list_recipients(
    request: Request, principal: Admin, area: GridPath | None = None, limit: int = Query(500, ge=1, le=5000)
) -> list[dict[str, Any]]:
    scope = area or principal.area
    if not principal.sees(scope):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"department {principal.department} does not see {scope}")
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM notify_recipients ORDER BY recipient_id")
    narrowed = scope if within(scope, principal.area) else principal.area
    return [recipient_from_row(r).model_dump(mode="json") for r in rows if within(r["grid_path"], narrowed)][:limit]


@router.put("/subscriptions")
async def put_subscription(
    body: SubscriptionIn, request: Request, principal: Admin, key: str | None = IdempotencyKey
) -> dict[str, str]:
    """The recipient hears of every event of this type inside the area."""
    principal.require_area(body.area)
    await _recipient_row(request, body.recipient_id)
    async with request.app.state.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO notify_subscriptions (recipient_id, event_type, area) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            body.recipient_id,
            body.event_type,
            body.area,
        )
    return body.model_dump()


@router.delete("/subscriptions", status_code=status.HTTP_204_NO_CONTENT)
async def delete_subscription(
    body: SubscriptionIn, request: Request, principal: Admin, key: str | None = IdempotencyKey
) -> None:
    principal.require_area(body.area)
    async with request.app.state.pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM notify_subscriptions WHERE recipient_id = $1 AND event_type = $2 AND area = $3",
            body.recipient_id,
            body.event_type,
            body.area,
        )


async def _inbox_owner(request: Request, principal: Principal, recipient_id: str) -> None:
    row = await _recipient_row(request, recipient_id)
    if row["unit"] is not None and row["unit"] == principal.department:
        return
    if "notify:admin" in principal.scopes and principal.can_act_in(row["grid_path"]):
        return
    raise HTTPException(
        status.HTTP_403_FORBIDDEN, f"department {principal.department} may not read {recipient_id}'s inbox"
    )


@router.get("/inbox/{recipient_id}")
async def inbox(
    recipient_id: RecipientId,
    request: Request,
    principal: Anyone,
    unread: bool = False,
    include_snoozed: bool = False,
    limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """The recipient's messages, newest first; snoozed ones are hidden until their time comes."""
    await _inbox_owner(request, principal, recipient_id)
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT message_id, event_type, subject, body, urgent, created_at, read_at, snoozed_until FROM notify_inbox"
            " WHERE recipient_id = $1 AND ($2 = false OR read_at IS NULL)"
            " AND ($3 OR snoozed_until IS NULL OR snoozed_until <= $4) ORDER BY created_at DESC LIMIT $5",
            recipient_id,
            unread,
            include_snoozed,
            utcnow(),
            limit,
        )
    return [dict(r) for r in rows]


async def _touch_message(request: Request, recipient_id: str, message_id: UUID, sql: str, value: datetime) -> None:
    async with request.app.state.pool.acquire() as conn:
        done = await conn.fetchval(sql, message_id, recipient_id, value)
    if not done:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no message {message_id} for {recipient_id}")


@router.post("/inbox/{recipient_id}/{message_id}/read")
async def mark_read(
    recipient_id: RecipientId, message_id: UUID, request: Request, principal: Anyone, key: str | None = IdempotencyKey
) -> dict[str, str]:
    await _inbox_owner(request, principal, recipient_id)
    await _touch_message(
        request,
        recipient_id,
        message_id,
        "UPDATE notify_inbox SET read_at = coalesce(read_at, $3) WHERE message_id = $1 AND recipient_id = $2"
        " RETURNING true",
        utcnow(),
    )
    return {"status": "read"}


@router.post("/inbox/{recipient_id}/{message_id}/snooze")
async def snooze(
    recipient_id: RecipientId,
    message_id: UUID,
    body: SnoozeIn,
    request: Request,
    principal: Anyone,
    key: str | None = IdempotencyKey,
) -> dict[str, str]:
    await _inbox_owner(request, principal, recipient_id)
    await _touch_message(
        request,
        recipient_id,
        message_id,
        "UPDATE notify_inbox SET snoozed_until = $3 WHERE message_id = $1 AND recipient_id = $2 RETURNING true",
        body.until,
    )
    return {"status": "snoozed", "until": body.until.isoformat()}


DeliveryStatus = Literal["pending", "claimed", "sent", "failed", "dead", "unconfirmed", "held", "digested"]


@router.get("/deliveries")
async def deliveries(
    request: Request,
    principal: Admin,
    status_: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    recipient_id: str | None = None,
    event_id: UUID | None = None,
    limit: int = Query(200, ge=1, le=2000),
) -> list[dict[str, Any]]:
    """The ledger in the department's area: status, attempts, provider, last error."""
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT delivery_id, event_id, event_type, rule, rules_version, recipient_id, channel, status, attempts,"
            " next_attempt_at, sent_at, provider, last_error, urgent, grid_path, created_at, digest_id"
            " FROM notify_deliveries WHERE ($1::text IS NULL OR status = $1)"
            " AND ($2::text IS NULL OR recipient_id = $2)"
            " AND ($3::uuid IS NULL OR event_id = $3) AND (grid_path = $4 OR grid_path LIKE $4 || '/%')"
            " ORDER BY created_at DESC LIMIT $5",
            status_,
            recipient_id,
            event_id,
            principal.area,
            limit,
        )
    return [dict(r) for r in rows]


async def _in_area(request: Request, principal: Principal, delivery_id: UUID) -> None:
    async with request.app.state.pool.acquire() as conn:
        path = await conn.fetchval("SELECT grid_path FROM notify_deliveries WHERE delivery_id = $1", delivery_id)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no delivery {delivery_id}")
    principal.require_area(path)


@router.post("/deliveries/{delivery_id}/redrive")
async def redrive_one(
    delivery_id: UUID, request: Request, principal: Admin, key: str | None = IdempotencyKey
) -> dict[str, Any]:
    """Send a dead-lettered delivery again, with fresh attempts (409 if it is not dead)."""
    await _in_area(request, principal, delivery_id)
    async with request.app.state.pool.acquire() as conn:
        ids = await redrive(conn, delivery_id, utcnow())
    if not ids:
        raise HTTPException(status.HTTP_409_CONFLICT, f"delivery {delivery_id} is not dead-lettered")
    return {"redriven": [str(i) for i in ids]}


@router.post("/deliveries/{delivery_id}/bounce")
async def bounce(
    delivery_id: UUID, body: BounceIn, request: Request, principal: Admin, key: str | None = IdempotencyKey
) -> dict[str, str]:
    """A bounce or a gateway's failure report after the send: the delivery becomes failed, not sent."""
    await _in_area(request, principal, delivery_id)
    async with request.app.state.pool.acquire() as conn:
        done = await report_bounce(request.app.state.store, conn, delivery_id, body.reason, utcnow())
    if not done:
        raise HTTPException(status.HTTP_409_CONFLICT, f"delivery {delivery_id} is not sent")
    return {"status": "dead"}


_RAW_MAIL = {
    "requestBody": {
        "required": True,
        "content": {"message/rfc822": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post("/bounces", openapi_extra=_RAW_MAIL)
async def bounce_email(request: Request, principal: Admin) -> dict[str, Any]:
    """A bounce e-mail as received (an RFC 3464 delivery status notification, the raw message, e.g.
    piped from the sender address's mailbox): each delivery it reports `failed` becomes failed, not
    sent; a `delayed` report changes nothing. 422 says why a message is not a bounce of ours."""
    try:
        reports = parse_bounce(await request.body())
    except (ValueError, LookupError, TypeError, AttributeError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"not a bounce of ours: {exc}") from None
    out = []
    for b in reports:
        await _in_area(request, principal, b.delivery_id)
        outcome = f"unchanged: {b.action}"
        if b.failed:
            async with request.app.state.pool.acquire() as conn:
                if await report_bounce(request.app.state.store, conn, b.delivery_id, b.reason, utcnow()):
                    outcome = "failed"
                else:
                    now = await conn.fetchval(
                        "SELECT status FROM notify_deliveries WHERE delivery_id = $1", b.delivery_id
                    )
                    outcome = "already failed" if now == "dead" else f"unchanged: the delivery is {now}"
        out.append({"delivery_id": str(b.delivery_id), "action": b.action, "status": b.status, "outcome": outcome})
    return {"reports": out}
