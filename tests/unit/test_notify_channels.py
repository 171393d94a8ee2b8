"""Channel plumbing without a network: signatures, failover to a second provider, circuit breakers."""

from __future__ import annotations

import time
from uuid import uuid4

import pytest

from services.notify.channels import (
    Breakers,
    CircuitBreaker,
    Deferred,
    DeliveryError,
    Outgoing,
    email_message,
    failover,
    sign,
    verify,
)

OUT = Outgoing(
    delivery_id=uuid4(),
    event_id=uuid4(),
    event_type="IssueAssigned",
    recipient_id="um-wang",
    channel="sms",
    address="+86 138 0000 0000",
    subject="【创城交办】",
    body="请立即整改",
    language="zh",
    urgent=False,
)


class FakeProvider:
    def __init__(self, name: str, fail: DeliveryError | None = None):
        self.name = name
        self.fail = fail
        self.calls = 0

    async def send(self, out: Outgoing) -> None:
        self.calls += 1
        if self.fail is not None:
            raise self.fail


def test_signature_verifies_only_with_the_secret_the_body_and_a_fresh_timestamp():
    body = b'{"delivery_id": "x"}'
    now = 1_800_000_000
    sig = sign("s3cret", now, body)
    assert sig.startswith("sha256=")
    assert verify("s3cret", str(now), body, sig, now=now + 10)
    assert not verify("other", str(now), body, sig, now=now)
    assert not verify("s3cret", str(now), body + b" ", sig, now=now)
    assert not verify("s3cret", str(now), body, sig, now=now + 3600)  # replayed later
    assert not verify("s3cret", "abc", body, sig, now=now)


async def test_second_provider_takes_over_when_the_first_fails():
    first = FakeProvider("gw-a", DeliveryError("HTTP 503"))
    second = FakeProvider("gw-b")
    assert await failover([first, second], Breakers(3, 30), OUT) == "gw-b"
    assert first.calls == second.calls == 1


async def test_a_permanent_refusal_is_not_retried_on_another_provider():
    first = FakeProvider("gw-a", DeliveryError("number does not exist", permanent=True))
    second = FakeProvider("gw-b")
    with pytest.raises(DeliveryError) as err:
        await failover([first, second], Breakers(3, 30), OUT)
    assert err.value.permanent and second.calls == 0


async def test_all_providers_failing_is_a_retryable_failure_naming_each():
    a, b = FakeProvider("gw-a", DeliveryError("timeout")), FakeProvider("gw-b", DeliveryError("HTTP 500"))
    with pytest.raises(DeliveryError) as err:
        await failover([a, b], Breakers(3, 30), OUT)
    assert not err.value.permanent
    assert "gw-a: timeout" in err.value.reason and "gw-b: HTTP 500" in err.value.reason


async def test_open_circuit_skips_the_provider_and_all_open_defers_without_calling():
    breakers = Breakers(2, 30)
    a, b = FakeProvider("gw-a", DeliveryError("HTTP 503")), FakeProvider("gw-b")
    for _ in range(2):
        await failover([a, b], breakers, OUT)
    assert a.calls == 2
    await failover([a, b], breakers, OUT)
    assert a.calls == 2 and b.calls == 3  # gw-a's circuit is open: not called
    lone = FakeProvider("gw-c", DeliveryError("HTTP 503"))
    solo = Breakers(1, 30)
    with pytest.raises(DeliveryError):
        await failover([lone], solo, OUT)
    with pytest.raises(Deferred) as d:
        await failover([lone], solo, OUT)
    assert lone.calls == 1 and 0 < d.value.retry_in_s <= 30


def test_breaker_half_opens_after_cooldown_and_closes_on_success():
    br = CircuitBreaker(threshold=2, cooldown_s=10)
    now = time.monotonic()
    br.failure(now)
    assert br.retry_in(now) == 0
    br.failure(now)
    assert br.retry_in(now + 1) == pytest.approx(9)
    assert br.retry_in(now + 10) == 0
    br.success()
    assert br.retry_in(now) == 0 and br.failures == 0


def test_email_carries_the_delivery_id_as_message_id():
    msg = email_message(OUT, "notify@wenming.local")
    assert msg["Message-ID"] == f"<{OUT.delivery_id}@wenming.notify>"
    assert msg["X-Wenming-Delivery-Id"] == str(OUT.delivery_id)
    assert msg.get_content().strip() == "请立即整改"
