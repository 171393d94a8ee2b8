"""Campaign time: the campaign's day is the Asia/Shanghai calendar day of when a thing happened."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

CAMPAIGN_TZ = ZoneInfo("Asia/Shanghai")


def campaign_day(at: datetime) -> date:
    """The Asia/Shanghai calendar day of an aware datetime."""
    if at.tzinfo is None:
        raise ValueError("campaign time must be timezone-aware")
    return at.astimezone(CAMPAIGN_TZ).date()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a campaign day, in UTC."""
    start = datetime.combine(day, time(0), CAMPAIGN_TZ)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)
