"""Events of the notify context, on topic `notify.delivery` (key = notification stream id).

One stream per delivery, `notification-<delivery_id>`: a delivery is one (source event,
recipient, channel). `NotificationSent` says a channel's provider accepted it; `NotificationFailed`
says it was given up and dead-lettered (an operator may re-drive it, so a later
`NotificationSent` on the same stream can follow).
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, Field

from shared.events.envelope import DomainEvent
from shared.events.registry import registry

Channel = Literal["inbox", "email", "webhook", "sms"]


@registry.register
class NotificationSent(DomainEvent):
    """A channel's provider accepted the message (the inbox: it was written)."""

    event_type = "NotificationSent"
    topic = "notify.delivery"
    delivery_id: UUID = Field(description="stable id; e-mail Message-ID and webhook X-Wenming-Delivery-Id carry it")
    source_event_id: UUID
    source_event_type: str = Field(min_length=1, max_length=100)
    rule: str = Field(min_length=1, max_length=100)
    recipient_id: str = Field(min_length=1, max_length=100)
    channel: Channel
    provider: str = Field(min_length=1, max_length=200)
    attempts: int = Field(ge=1)
    urgent: bool
    sent_at: AwareDatetime


@registry.register
class NotificationFailed(DomainEvent):
    """Retries are exhausted or the failure is permanent (a bounce): dead-lettered with the reason."""

    event_type = "NotificationFailed"
    topic = "notify.delivery"
    delivery_id: UUID
    source_event_id: UUID
    source_event_type: str = Field(min_length=1, max_length=100)
    rule: str = Field(min_length=1, max_length=100)
    recipient_id: str = Field(min_length=1, max_length=100)
    channel: Channel
    attempts: int = Field(ge=0)
    permanent: bool = Field(description="true for a bounce or refusal, false when retries ran out")
    reason: str = Field(min_length=1, max_length=1000)
    failed_at: AwareDatetime
