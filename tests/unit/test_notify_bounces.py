"""Bounce e-mails (RFC 3464 delivery status notifications) name the delivery that failed and why."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID, uuid4

import pytest

from services.notify.bounces import NotABounce, parse_bounce

POSTFIX_BOUNCE = (Path(__file__).parent / "data" / "bounce_postfix.eml").read_bytes()
"""A Postfix "Undelivered Mail Returned to Sender" with the original's headers (text/rfc822-headers)."""


def dsn(
    delivery_id: UUID | None, *, action: str = "failed", status: str = "5.2.2", whole_original: bool = True
) -> bytes:
    """A DSN as Exim sends it: the original message attached whole (message/rfc822)."""
    message_id = f"<{delivery_id}@wenming.notify>" if delivery_id else "<123@elsewhere.example>"
    original = (
        "--b1\nContent-Type: message/rfc822\n\n"
        "From: notify@wenming.local\nTo: li.si@example.cn\nSubject: =?utf-8?b?5pW05pS55Lu75Yqh?=\n"
        f"Message-ID: {message_id}\nContent-Type: text/plain; charset=utf-8\n\nplease rectify\n\n"
    )
    text = (
        "From: Mail Delivery System <Mailer-Daemon@mx.example.cn>\nTo: notify@wenming.local\n"
        "Subject: Mail delivery failed: returning message to sender\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\n\n'
        "--b1\nContent-Type: text/plain; charset=us-ascii\n\nThis message was created automatically.\n\n"
        "--b1\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.cn\n\n"
        f"Action: {action}\nFinal-Recipient: rfc822;li.si@example.cn\nStatus: {status}\n"
        "Diagnostic-Code: smtp; 552 5.2.2 mailbox full\n\n"
        f"{original if whole_original else ''}--b1--\n"
    )
    return text.encode()


def test_a_postfix_bounce_names_the_delivery_the_recipient_and_the_smtp_reason() -> None:
    [b] = parse_bounce(POSTFIX_BOUNCE)
    assert b.delivery_id == UUID("0f8e7c1a-3b2d-5e4f-9a8b-7c6d5e4f3a2b")
    assert b.failed and b.action == "failed" and b.status == "5.1.1"
    assert b.recipient == "wang.wu@chengguan.changtai.gov.cn"
    assert b.reason.startswith("5.1.1 failed for wang.wu@chengguan.changtai.gov.cn (550 5.1.1")
    assert "User unknown in local recipient table" in b.reason


def test_a_bounce_with_the_whole_original_attached_is_read_by_its_message_id() -> None:
    did = uuid4()
    [b] = parse_bounce(dsn(did))
    assert (b.delivery_id, b.status, b.recipient, b.diagnostic) == (
        did,
        "5.2.2",
        "li.si@example.cn",
        "552 5.2.2 mailbox full",
    )


def test_a_delayed_report_is_not_a_failure() -> None:
    [b] = parse_bounce(dsn(uuid4(), action="delayed", status="4.4.1"))
    assert not b.failed and b.action == "delayed"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"From: a@b\nSubject: hello\n\njust a letter\n", "expected multipart/report"),
        (dsn(None), "not one of ours"),
        (dsn(uuid4(), whole_original=False), "neither the original message nor its headers"),
        (b"", "expected multipart/report"),
    ],
)
def test_what_is_not_a_bounce_of_ours_says_why(raw: bytes, why: str) -> None:
    with pytest.raises(NotABounce, match=why):
        parse_bounce(raw)
