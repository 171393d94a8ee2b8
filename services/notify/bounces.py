"""Bounce e-mails read into delivery failures.

A bounce is a delivery status notification (RFC 3464): a `multipart/report;
report-type=delivery-status` message whose `message/delivery-status` part says, per recipient,
what happened (`Action: failed`, `Status: 5.1.1`, `Diagnostic-Code: smtp; 550 ...`), and which
carries the original message or its headers (`message/rfc822` or `text/rfc822-headers`). Our
e-mails carry `Message-ID: <delivery-id@wenming.notify>` and `X-Wenming-Delivery-Id`, so the
original's headers name the delivery. Pure parsing with the standard library's `email` package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from uuid import UUID

_MESSAGE_ID = re.compile(r"<([0-9a-fA-F-]{36})@wenming\.notify>")


class NotABounce(ValueError):
    """The message is not a delivery status notification about one of our e-mails."""


@dataclass(frozen=True)
class Bounce:
    """What a DSN says of one of our deliveries."""

    delivery_id: UUID
    action: str
    """failed, delayed, delivered, relayed or expanded (RFC 3464 §2.3.3)."""
    status: str
    """The enhanced status code, e.g. 5.1.1 (RFC 3463)."""
    recipient: str | None
    diagnostic: str | None

    @property
    def failed(self) -> bool:
        """The MTA gave up on the message: the delivery failed. `delayed` is not a failure yet."""
        return self.action == "failed"

    @property
    def reason(self) -> str:
        parts = [f"{self.status} {self.action}"]
        if self.recipient:
            parts.append(f"for {self.recipient}")
        if self.diagnostic:
            parts.append(f"({self.diagnostic})")
        return " ".join(parts)[:500]


def _value(block: Message, name: str) -> str | None:
    raw = block.get(name)
    if raw is None:
        return None
    text = " ".join(str(raw).split())
    if name in ("Action", "Status"):
        return text
    _type, sep, rest = text.partition(";")  # "rfc822; x@y" and "smtp; 550 ..." name their type first
    return rest.strip() if sep else text


def _original_headers(report: EmailMessage) -> Message | None:
    for part in report.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
        if ctype == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(part.get_payload())
            return HeaderParser(policy=policy.default).parsestr(text)
    return None


def _delivery_id(original: Message | None) -> UUID:
    if original is None:
        raise NotABounce("the report carries neither the original message nor its headers")
    header = original.get("X-Wenming-Delivery-Id")
    if header is not None:
        try:
            return UUID(str(header).strip())
        except ValueError:
            pass
    found = _MESSAGE_ID.search(str(original.get("Message-ID", "")))
    if found is None:
        raise NotABounce("the original message is not one of ours (no <delivery-id@wenming.notify> Message-ID)")
    return UUID(found.group(1))


def parse_bounce(raw: bytes) -> list[Bounce]:
    """Every per-recipient report in a DSN, each naming our delivery; `NotABounce` says why not."""
    report = BytesParser(policy=policy.default).parsebytes(raw)
    if not isinstance(report, EmailMessage) or report.get_content_type() != "multipart/report":
        raise NotABounce(f"expected multipart/report, got {report.get_content_type()}")
    if str(report.get_param("report-type") or "").lower() != "delivery-status":
        raise NotABounce("expected report-type=delivery-status")
    status_part = next((p for p in report.walk() if p.get_content_type() == "message/delivery-status"), None)
    if status_part is None:
        raise NotABounce("no message/delivery-status part")
    blocks = status_part.get_payload()
    if not isinstance(blocks, list) or len(blocks) < 2:
        raise NotABounce("the delivery-status part has no per-recipient fields")
    delivery = _delivery_id(_original_headers(report))
    out = []
    for block in blocks[1:]:  # the first block is per message (Reporting-MTA, ...)
        if not isinstance(block, Message):
            raise NotABounce("the delivery-status part is not made of header blocks")
        action, status = _value(block, "Action"), _value(block, "Status")
        if not action or not status:
            raise NotABounce("a per-recipient block lacks Action or Status")
        out.append(
            Bounce(
                delivery_id=delivery,
                action=action.lower(),
                status=status.split()[0],
                recipient=_value(block, "Final-Recipient") or _value(block, "Original-Recipient"),
                diagnostic=_value(block, "Diagnostic-Code"),
            )
        )
    return out
