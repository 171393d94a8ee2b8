"""Delivery channels: e-mail over SMTP, signed webhooks, an SMS gateway adapter; failover and breakers.

Every outgoing message carries its stable delivery id (uuid5 of event, recipient and channel):

- e-mail: `Message-ID: <delivery-id@wenming.notify>` and `X-Wenming-Delivery-Id: <delivery-id>`;
- webhook and SMS gateway: header `X-Wenming-Delivery-Id: <delivery-id>` (also in the JSON body).

**Receivers must dedupe on that id.** The ledger claims a row before sending and confirms it
after; if the worker dies after the provider accepted a message but before the confirmation was
written, the restarted worker sends it again with the same id (at least once on the wire, once
for a receiver that dedupes). The in-app inbox needs no such help: its write and the ledger
confirmation are one PostgreSQL transaction.

Webhook and gateway requests are signed: `X-Wenming-Timestamp: <unix seconds>` and
`X-Wenming-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`; see `verify`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import smtplib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import orjson

from services.notify.config import NotifyConfig


class DeliveryError(Exception):
    """A send that did not go through. `permanent` (a bounce, a refusal) means: do not retry."""

    def __init__(self, reason: str, *, permanent: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Deferred(Exception):
    """Every provider's circuit is open: try again at `retry_in_s` without spending an attempt."""

    def __init__(self, reason: str, retry_in_s: float):
        super().__init__(reason)
        self.reason = reason
        self.retry_in_s = retry_in_s


@dataclass(frozen=True)
class Outgoing:
    """One message on its way to one recipient on one channel."""

    delivery_id: UUID
    event_id: UUID
    event_type: str
    recipient_id: str
    channel: str
    address: str
    subject: str
    body: str
    language: str
    urgent: bool
    secret: str | None = None

    def json(self, sent_at: float) -> bytes:
        return orjson.dumps(
            {
                "delivery_id": str(self.delivery_id),
                "event_id": str(self.event_id),
                "event_type": self.event_type,
                "recipient_id": self.recipient_id,
                "subject": self.subject,
                "body": self.body,
                "language": self.language,
                "urgent": self.urgent,
                "sent_at": int(sent_at),
            }
        )


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `"<timestamp>." + body`."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver checks: a fresh timestamp and a matching signature (constant-time compare)."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def signed_headers(out: Outgoing, secret: str, body: bytes, now: float) -> dict[str, str]:
    ts = int(now)
    return {
        "Content-Type": "application/json",
        "X-Wenming-Delivery-Id": str(out.delivery_id),
        "X-Wenming-Event-Type": out.event_type,
        "X-Wenming-Timestamp": str(ts),
        "X-Wenming-Signature": sign(secret, ts, body),
    }


@dataclass
class CircuitBreaker:
    """Opens after `threshold` consecutive failures; after `cooldown_s` lets one trial through."""

    threshold: int
    cooldown_s: float
    failures: int = 0
    opened_at: float | None = None

    def retry_in(self, now: float) -> float:
        """0 if a call may go now, else seconds until the circuit half-opens."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown_s - now)

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = now


@dataclass
class Breakers:
    """One circuit breaker per endpoint (scheme, host and port)."""

    threshold: int
    cooldown_s: float
    by_endpoint: dict[str, CircuitBreaker] = field(default_factory=dict)

    def of(self, endpoint: str) -> CircuitBreaker:
        if endpoint not in self.by_endpoint:
            self.by_endpoint[endpoint] = CircuitBreaker(self.threshold, self.cooldown_s)
        return self.by_endpoint[endpoint]


def endpoint_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Provider(Protocol):
    @property
    def name(self) -> str: ...

    async def send(self, out: Outgoing) -> None: ...


async def failover(providers: Sequence[Provider], breakers: Breakers, out: Outgoing) -> str:
    """Try the providers in order, skipping open circuits; returns the name of the one that took it."""
    if not providers:
        raise DeliveryError(f"no provider configured for {out.channel}", permanent=True)
    reasons: list[str] = []
    waits: list[float] = []
    for p in providers:
        breaker = breakers.of(p.name)
        wait = breaker.retry_in(time.monotonic())
        if wait > 0:
            waits.append(wait)
            reasons.append(f"{p.name}: circuit open")
            continue
        try:
            await p.send(out)
        except DeliveryError as exc:
            if exc.permanent:  # the message itself is refused: another provider will not help
                breaker.success()
                raise
            breaker.failure(time.monotonic())
            reasons.append(f"{p.name}: {exc.reason}")
            continue
        breaker.success()
        return p.name
    if len(waits) == len(providers):
        raise Deferred("; ".join(reasons), min(waits))
    raise DeliveryError("; ".join(reasons))


# --- e-mail ------------------------------------------------------------------------------


def email_message(out: Outgoing, mail_from: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = out.address
    msg["Subject"] = out.subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{out.delivery_id}@wenming.notify>"
    msg["X-Wenming-Delivery-Id"] = str(out.delivery_id)
    msg["X-Wenming-Event-Type"] = out.event_type
    if out.urgent:
        msg["Importance"] = "high"
    msg.set_content(out.body)
    return msg


@dataclass
class SmtpProvider:
    """One SMTP relay; stdlib smtplib in a worker thread. 5xx refusals are bounces (permanent)."""

    host: str
    port: int
    mail_from: str
    timeout_s: float = 10.0

    @property
    def name(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def _send_blocking(self, msg: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                f"recipient refused: {exc.recipients}", permanent=all(c >= 500 for c in codes)
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", permanent=exc.smtp_code >= 500) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP {exc.__class__.__name__}: {exc}") from None

    async def send(self, out: Outgoing) -> None:
        await asyncio.to_thread(self._send_blocking, email_message(out, self.mail_from))


# --- webhook and SMS gateway -------------------------------------------------------------


def _http_failure(status: int, text: str) -> DeliveryError:
    permanent = 400 <= status < 500 and status not in (408, 425, 429)
    return DeliveryError(f"HTTP {status}: {text[:200]}", permanent=permanent)


class WebhookChannel:
    """POSTs the signed JSON message to the recipient's URL; a circuit breaker per endpoint."""

    def __init__(self, client: httpx.AsyncClient, breakers: Breakers, default_secret: str):
        self.client = client
        self.breakers = breakers
        self.default_secret = default_secret

    async def send(self, out: Outgoing) -> str:
        endpoint = endpoint_of(out.address)
        breaker = self.breakers.of(endpoint)
        wait = breaker.retry_in(time.monotonic())
        if wait > 0:
            raise Deferred(f"{endpoint}: circuit open", wait)
        now = time.time()
        body = out.json(now)
        headers = signed_headers(out, out.secret or self.default_secret, body, now)
        try:
            resp = await self.client.post(out.address, content=body, headers=headers)
        except httpx.HTTPError as exc:
            breaker.failure(time.monotonic())
            raise DeliveryError(f"{exc.__class__.__name__}: {exc}") from None
        if resp.is_success:
            breaker.success()
            return endpoint
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            breaker.failure(time.monotonic())
        raise _http_failure(resp.status_code, resp.text)


@dataclass
class SmsGateway:
    """An SMS gateway shaped like a webhook: signed JSON in, `{"status": "accepted"|"failed"}` out.
    A "failed" report is a failure, not a send."""

    url: str
    secret: str
    client: httpx.AsyncClient

    @property
    def name(self) -> str:
        return self.url

    async def send(self, out: Outgoing) -> None:
        now = time.time()
        body = orjson.dumps(
            {"delivery_id": str(out.delivery_id), "to": out.address, "text": f"{out.subject} {out.body}"[:500]}
        )
        try:
            resp = await self.client.post(self.url, content=body, headers=signed_headers(out, self.secret, body, now))
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{exc.__class__.__name__}: {exc}") from None
        if not resp.is_success:
            raise _http_failure(resp.status_code, resp.text)
        try:
            report: Any = resp.json()
        except ValueError:
            report = {}
        if isinstance(report, dict) and report.get("status") == "failed":
            raise DeliveryError(f"gateway failed: {report.get('reason', 'no reason')}", permanent=False)


class Channels:
    """The push channels (the inbox is written by the dispatcher inside its ledger transaction)."""

    def __init__(self, config: NotifyConfig, client: httpx.AsyncClient | None = None):
        self.config = config
        self.client = client or httpx.AsyncClient(timeout=config.http_timeout_s)
        self.breakers = Breakers(config.breaker_threshold, config.breaker_cooldown_s)
        self.smtp: list[Provider] = []
        for hp in config.smtp_servers:
            host, _, port = hp.rpartition(":")
            self.smtp.append(SmtpProvider(host, int(port), config.mail_from, config.smtp_timeout_s))
        self.sms: list[Provider] = [SmsGateway(u, config.sms_secret, self.client) for u in config.sms_gateways]
        self.webhook = WebhookChannel(self.client, self.breakers, config.webhook_secret)

    async def send(self, out: Outgoing) -> str:
        """Deliver on a push channel; returns the provider that accepted it."""
        if out.channel == "email":
            return await failover(self.smtp, self.breakers, out)
        if out.channel == "webhook":
            return await self.webhook.send(out)
        if out.channel == "sms":
            return await failover(self.sms, self.breakers, out)
        raise DeliveryError(f"unknown channel {out.channel}", permanent=True)

    async def aclose(self) -> None:
        await self.client.aclose()
