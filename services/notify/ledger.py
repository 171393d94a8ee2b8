"""The delivery ledger and the recipient directory in PostgreSQL.

Exactly once per (event, recipient, channel): a planned delivery is inserted with its stable
delivery id and `ON CONFLICT DO NOTHING`, so a replayed event or a repeated reminder adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from services.notify.domain import Planned, QuietHours, Recipient, Subscription
from shared.db import Conn

WAKE_CHANNEL = "wenming_notify"
"""NOTIFY channel that wakes the dispatcher when deliveries are added or re-driven."""

_INSERT = (
    "INSERT INTO notify_deliveries (delivery_id, event_id, event_type, rule, rules_version, recipient_id, channel,"
    " address, language, subject, body, urgent, grid_path, next_attempt_at, status)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT DO NOTHING"
)


async def insert_planned(conn: Conn, planned: Sequence[Planned]) -> None:
    """Add deliveries to the ledger (a delivery already there stays as it is) and wake the dispatcher.
    A delivery for a personal digest goes in `held`, for the digester, not the dispatcher."""
    if not planned:
        return
    await conn.executemany(
        _INSERT,
        [
            (
                p.delivery_id,
                p.event_id,
                p.event_type,
                p.rule,
                p.rules_version,
                p.recipient_id,
                p.channel,
                p.address,
                p.language,
                p.subject,
                p.body,
                p.urgent,
                p.grid_path,
                p.not_before,
                "held" if p.held else "pending",
            )
            for p in planned
        ],
    )
    await conn.execute("SELECT pg_notify($1, '')", WAKE_CHANNEL)


def recipient_from_row(row: asyncpg.Record) -> Recipient:
    qh = row["quiet_hours"]
    return Recipient(
        recipient_id=row["recipient_id"],
        name=row["name"],
        grid_path=row["grid_path"],
        role=row["role"],
        unit=row["unit"],
        channels=list(row["channels"]),
        email=row["email"],
        webhook_url=row["webhook_url"],
        phone=row["phone"],
        quiet_hours=QuietHours.model_validate(qh) if qh else None,
        digest_at=row["digest_at"],
        language=row["language"],
        active=row["active"],
    )


async def load_directory(conn: Conn) -> tuple[list[Recipient], list[Subscription]]:
    """Every active recipient and every subscription."""
    rows = await conn.fetch("SELECT * FROM notify_recipients WHERE active")
    subs = await conn.fetch("SELECT recipient_id, event_type, area FROM notify_subscriptions")
    return [recipient_from_row(r) for r in rows], [
        Subscription(s["recipient_id"], s["event_type"], s["area"]) for s in subs
    ]


async def upsert_recipient(conn: Conn, r: Recipient, webhook_secret: str | None) -> None:
    quiet: dict[str, Any] | None = r.quiet_hours.model_dump() if r.quiet_hours else None
    await conn.execute(
        "INSERT INTO notify_recipients (recipient_id, name, grid_path, role, unit, channels, email, webhook_url,"
        " webhook_secret, phone, quiet_hours, language, active, digest_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        " ON CONFLICT (recipient_id) DO UPDATE SET name = EXCLUDED.name, grid_path = EXCLUDED.grid_path,"
        " role = EXCLUDED.role, unit = EXCLUDED.unit, channels = EXCLUDED.channels, email = EXCLUDED.email,"
        " webhook_url = EXCLUDED.webhook_url,"
        " webhook_secret = COALESCE(EXCLUDED.webhook_secret, notify_recipients.webhook_secret),"
        " phone = EXCLUDED.phone, quiet_hours = EXCLUDED.quiet_hours, language = EXCLUDED.language,"
        " active = EXCLUDED.active, digest_at = EXCLUDED.digest_at, updated_at = now()",
        r.recipient_id,
        r.name,
        r.grid_path,
        r.role,
        r.unit,
        list(r.channels),
        r.email,
        r.webhook_url,
        webhook_secret,
        r.phone,
        quiet,
        r.language,
        r.active,
        r.digest_at,
    )
