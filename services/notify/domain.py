"""Notify's pure rules: who hears of an event, on which channel, when, and in which words.

No I/O and no clock here: the worker passes in the event, the issue's facts, the recipient
directory and the time (the retry jitter draws from a random generator it is given). Rules and
templates are versioned data (`rules.yaml`, `templates.yaml`) loaded once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID, uuid5
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared.grid import GridLevel, cut, level_of, parent_of, within

HERE = Path(__file__).resolve().parent
DELIVERY_NS = UUID("6f0d3c52-5c47-4f0e-9c0e-2a3f1f5b7a01")
"""Namespace of delivery ids: uuid5(namespace, "event/recipient/channel") is stable across replays."""
REMINDER_NS = UUID("0b7d5a9e-3d1c-4d5e-8f6a-9c2b1e4d7f02")
DIGEST_NS = UUID("3c9e1f7a-8b2d-4e6f-a1c3-5d7e9f0b2a04")
"""Namespace of personal digests: uuid5(namespace, "recipient/channel/digest time/carried ids")."""
DIGEST_EVENT_TYPE = "PersonalDigest"
DEFAULT_TZ = "Asia/Shanghai"

Channel = Literal["inbox", "email", "webhook", "sms"]
CHANNELS: tuple[Channel, ...] = ("inbox", "email", "webhook", "sms")
Language = Literal["zh", "en"]
Role = Literal["owner", "unit_contact", "leader", "volunteer", "operator"]
RecipientId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.:-]{0,99}$")]
HHMM = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class QuietHours(BaseModel):
    """A daily window in the recipient's time zone when non-urgent messages wait; may wrap midnight."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    start: HHMM
    end: HHMM
    tz: str = DEFAULT_TZ

    @field_validator("tz")
    @classmethod
    def _known_tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name, e.g. Asia/Shanghai)") from None
        return v


class Recipient(BaseModel):
    """A person who can be told: where they sit on the grid, their role, channels and preferences."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    recipient_id: RecipientId
    name: str = Field(min_length=1, max_length=100, description="as written in IssueAssigned.owner")
    grid_path: str = Field(min_length=1, max_length=200)
    role: Role
    unit: str | None = Field(default=None, max_length=64, description="responsible unit or department code")
    channels: list[Channel] = Field(default_factory=lambda: list[Channel](["inbox"]), min_length=1)
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    webhook_url: str | None = Field(default=None, max_length=500, pattern=r"^https?://")
    phone: str | None = Field(default=None, max_length=32, pattern=r"^\+?[0-9 -]{5,31}$")
    quiet_hours: QuietHours | None = None
    digest_at: HHMM | None = Field(
        default=None,
        description="gather non-urgent messages into one digest a day at this local time (the quiet-hours"
        " time zone, else Asia/Shanghai); urgent ones still go at once",
    )
    language: Language = "zh"
    active: bool = True

    @property
    def tz(self) -> str:
        return self.quiet_hours.tz if self.quiet_hours is not None else DEFAULT_TZ

    def address(self, channel: Channel) -> str | None:
        """Where this channel reaches the person; None if they gave no address for it."""
        return {
            "inbox": self.recipient_id,
            "email": self.email,
            "webhook": self.webhook_url,
            "sms": self.phone,
        }[channel]


@dataclass(frozen=True)
class Subscription:
    """A recipient asked to hear of every event of a type inside an area."""

    recipient_id: str
    event_type: str
    area: str


@dataclass(frozen=True)
class IssueFacts:
    """What notify keeps of an issue from its events (deadline state for reminders)."""

    issue_id: UUID
    grid_path: str
    category: str = ""
    severity: str = ""
    description: str = ""
    responsible_unit: str | None = None
    owner: str | None = None
    deadline: datetime | None = None
    closed: bool = False


@dataclass(frozen=True)
class Occurrence:
    """Something to tell people about: a domain event, or a reminder that came due."""

    event_id: UUID
    event_type: str
    grid_path: str
    occurred_at: datetime
    payload: Mapping[str, Any]
    issue: IssueFacts | None = None
    area_facts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Extra template values per grid path (e.g. a township's open and overdue issues for its digest)."""


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    id: str
    event: str = Field(description="event type name it matches")
    to: list[str] = Field(min_length=1)
    template: str
    urgent: bool = False
    at_local: HHMM | None = Field(default=None, description="hold non-urgent messages until this local time")


class Reminder(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    before_hours: float = Field(gt=0)
    template: str = "deadline_reminder"
    urgent: bool = False

    @property
    def before(self) -> timedelta:
        return timedelta(hours=self.before_hours)


SELECTORS = ("owner", "unit", "escalation_leader", "township_leader", "site_volunteers", "subscribers")
PARAM_SELECTORS = ("payload_subjects", "payload_people")


class RuleBook(BaseModel):
    """The versioned rules: which event types notify whom, with which template."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    version: int = Field(ge=1)
    reminders: list[Reminder] = Field(default_factory=list)
    rules: list[Rule]

    @field_validator("rules")
    @classmethod
    def _known_selectors(cls, rules: list[Rule]) -> list[Rule]:
        for r in rules:
            for sel in r.to:
                name = sel.split(":", 1)[0]
                if sel not in SELECTORS and not (name in PARAM_SELECTORS and ":" in sel):
                    raise ValueError(f"rule {r.id}: unknown recipient selector {sel!r}")
        return rules

    def for_type(self, event_type: str) -> list[Rule]:
        return [r for r in self.rules if r.event == event_type]

    def event_types(self) -> set[str]:
        return {r.event for r in self.rules}


class Template(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    subject: str
    body: str


Templates = dict[str, dict[str, Template]]


def load_rules(path: Path = HERE / "rules.yaml") -> RuleBook:
    return RuleBook.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def load_templates(path: Path = HERE / "templates.yaml") -> Templates:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {name: {lang: Template.model_validate(t) for lang, t in langs.items()} for name, langs in raw.items()}


@lru_cache(maxsize=1)
def default_rules() -> RuleBook:
    return load_rules()


@lru_cache(maxsize=1)
def default_templates() -> Templates:
    return load_templates()


# --- quiet hours -------------------------------------------------------------------------


def _hm(s: str) -> time:
    h, m = s.split(":")
    return time(int(h), int(m))


def quiet_until(quiet: QuietHours | None, at: datetime) -> datetime | None:
    """The end of the quiet window `at` falls in (UTC), or None if `at` is not quiet."""
    if quiet is None:
        return None
    tz = ZoneInfo(quiet.tz)
    local = at.astimezone(tz)
    start, end = _hm(quiet.start), _hm(quiet.end)
    if start == end:
        return None
    now_t = local.time()
    if start < end:
        inside = start <= now_t < end
        end_day = local.date()
    else:  # wraps midnight, e.g. 22:00-07:00
        inside = now_t >= start or now_t < end
        end_day = local.date() + timedelta(days=1) if now_t >= start else local.date()
    if not inside:
        return None
    return datetime.combine(end_day, end, tz).astimezone(UTC)


def release_at(recipient: Recipient, at: datetime, *, urgent: bool) -> datetime:
    """When a message may go out: now, or (non-urgent, in quiet hours) when the quiet hours end."""
    if urgent:
        return at
    return quiet_until(recipient.quiet_hours, at) or at


def next_local(hhmm: str, at: datetime, tz: str = DEFAULT_TZ) -> datetime:
    """The first `hhmm` local time at or after `at` (UTC): a digest's fixed hour."""
    zone = ZoneInfo(tz)
    local = at.astimezone(zone)
    candidate = datetime.combine(local.date(), _hm(hhmm), zone)
    if candidate < local:
        candidate = datetime.combine(local.date() + timedelta(days=1), _hm(hhmm), zone)
    return candidate.astimezone(UTC)


# --- templating --------------------------------------------------------------------------


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "—"


SEVERITY_ZH = {"minor": "一般", "major": "较重", "serious": "严重"}


def local_time(at: datetime | str | None, tz: str = DEFAULT_TZ) -> str:
    """A time as the campaign reads it: `2026-11-25 18:00` in Asia/Shanghai."""
    if at is None:
        return "—"
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def render(templates: Templates, name: str, language: str, context: Mapping[str, Any]) -> Template:
    """The template in the language (falling back to zh) with placeholders filled; missing ones show "—"."""
    try:
        langs = templates[name]
    except KeyError:
        raise ValueError(f"no template {name!r}") from None
    tpl = langs.get(language) or langs["zh"]
    values = _Missing({k: v for k, v in context.items() if v is not None})
    return Template(subject=tpl.subject.format_map(values), body=tpl.body.format_map(values))


def message_context(occ: Occurrence, recipient: Recipient, place_name: Callable[[str], str]) -> dict[str, Any]:
    """Everything a template may use: payload fields, the issue's facts, the recipient, place names."""
    ctx: dict[str, Any] = {k: v for k, v in occ.payload.items() if isinstance(v, str | int | float)}
    mine = {recipient.grid_path} if recipient.role == "leader" else {recipient.unit} - {None}
    for value in occ.payload.values():  # a ranking's line about the recipient's own township or unit
        if isinstance(value, list):
            for entry in value:
                if isinstance(entry, dict) and (entry.get("subject") in mine or entry.get("grid_path") in mine):
                    ctx.update({k: v for k, v in entry.items() if isinstance(v, str | int | float)})
    key = f"unit:{recipient.unit}" if recipient.role == "unit_contact" else recipient.grid_path
    ctx.update(occ.area_facts.get(key, {}))
    issue = occ.issue
    if issue is not None:
        ctx.setdefault("category", issue.category)
        ctx.setdefault("severity", issue.severity)
        ctx.setdefault("description", issue.description)
        ctx.setdefault("responsible_unit", issue.responsible_unit)
        ctx.setdefault("owner", issue.owner)
        ctx["deadline_local"] = local_time(occ.payload.get("new_deadline") or ctx.get("deadline") or issue.deadline)
        if issue.deadline is not None:
            ctx["hours_left"] = max(0, round((issue.deadline - occ.occurred_at).total_seconds() / 3600))
    elif "deadline" in ctx:
        ctx["deadline_local"] = local_time(str(ctx["deadline"]))
    ctx["severity_zh"] = SEVERITY_ZH.get(str(ctx.get("severity", "")), ctx.get("severity"))
    ctx["place"] = place_name(occ.grid_path)
    if "escalated_to" in ctx:
        ctx["escalated_place"] = place_name(str(ctx["escalated_to"]))
    if "starts_at" in ctx:
        ctx["starts_local"] = local_time(str(ctx["starts_at"]))
    ctx["recipient_name"] = recipient.name
    return ctx


# --- who hears of what -------------------------------------------------------------------


def escalation_node(occ: Occurrence) -> str | None:
    """The node an overdue issue escalated to: the payload's, else one level up per step."""
    target = occ.payload.get("escalated_to")
    if isinstance(target, str) and target:
        return target
    step = int(occ.payload.get("step", 1))
    node: str | None = occ.grid_path
    for _ in range(step):
        node = parent_of(node) if node is not None else None
    return node


def select(selector: str, occ: Occurrence, directory: Sequence[Recipient], subs: Sequence[Subscription]) -> list[str]:
    """Recipient ids a selector names for an occurrence (see rules.yaml for the selectors)."""
    name, _, arg = selector.partition(":")
    issue = occ.issue
    if name == "owner":
        owner = occ.payload.get("owner") or (issue.owner if issue else None)
        unit = occ.payload.get("responsible_unit") or (issue.responsible_unit if issue else None)
        if not owner:
            return []
        return [
            r.recipient_id for r in directory if r.name == owner and (r.unit is None or unit is None or r.unit == unit)
        ]
    if name == "unit":
        unit = occ.payload.get("responsible_unit") or (issue.responsible_unit if issue else None)
        return [r.recipient_id for r in directory if r.role == "unit_contact" and unit and r.unit == unit]
    if name == "escalation_leader":
        node = escalation_node(occ)
        return [r.recipient_id for r in directory if r.role == "leader" and node and r.grid_path == node]
    if name == "township_leader":
        if level_of(occ.grid_path) < GridLevel.TOWNSHIP:
            return []
        town = cut(occ.grid_path, GridLevel.TOWNSHIP)
        return [r.recipient_id for r in directory if r.role == "leader" and r.grid_path == town]
    if name == "payload_subjects":  # a township (grid path) -> its leader; a unit (code) -> its desk
        entries = occ.payload.get(arg) or []
        wanted = {e if isinstance(e, str) else str(e.get("subject") or e.get("grid_path") or "") for e in entries}
        return [
            r.recipient_id
            for r in directory
            if (r.role == "leader" and r.grid_path in wanted) or (r.role == "unit_contact" and r.unit in wanted)
        ]
    if name == "site_volunteers":
        site = occ.payload.get("site_id")
        return [r.recipient_id for r in directory if r.role == "volunteer" and site and r.unit == site]
    if name == "payload_people":
        people = {str(p) for p in occ.payload.get(arg) or []}
        return [r.recipient_id for r in directory if r.recipient_id in people]
    if name == "subscribers":
        return [s.recipient_id for s in subs if s.event_type == occ.event_type and within(occ.grid_path, s.area)]
    raise ValueError(f"unknown selector {selector!r}")


def delivery_id(event_id: UUID, recipient_id: str, channel: str) -> UUID:
    """The stable id of one (event, recipient, channel): the ledger key, the e-mail Message-ID,
    the webhook's X-Wenming-Delivery-Id. A receiver dedupes on it."""
    return uuid5(DELIVERY_NS, f"{event_id}/{recipient_id}/{channel}")


@dataclass(frozen=True)
class Planned:
    """One message to deliver, as it goes into the ledger."""

    delivery_id: UUID
    event_id: UUID
    event_type: str
    rule: str
    rules_version: int
    recipient_id: str
    channel: Channel
    address: str
    language: str
    subject: str
    body: str
    urgent: bool
    not_before: datetime
    grid_path: str
    held: bool = False
    """Waits for the recipient's personal digest (status `held`) instead of going out on its own."""


def plan(
    book: RuleBook,
    templates: Templates,
    occ: Occurrence,
    directory: Sequence[Recipient],
    subs: Sequence[Subscription] = (),
    *,
    now: datetime,
    place_name: Callable[[str], str] = lambda p: p,
) -> list[Planned]:
    """Every delivery an occurrence calls for: one per (recipient, channel) they accept and gave an
    address for; a recipient named by several rules or selectors hears once per channel."""
    by_id = {r.recipient_id: r for r in directory if r.active}
    out: dict[tuple[str, str], Planned] = {}
    for rule in book.for_type(occ.event_type):
        named: list[str] = []
        for sel in rule.to:
            named.extend(select(sel, occ, list(by_id.values()), subs))
        for rid in dict.fromkeys(named):
            recipient = by_id.get(rid)
            if recipient is None:
                continue
            msg = render(templates, rule.template, recipient.language, message_context(occ, recipient, place_name))
            urgent = rule.urgent or occ.payload.get("urgent") is True
            not_before = release_at(recipient, now, urgent=urgent)
            if rule.at_local is not None and not urgent:
                not_before = max(not_before, next_local(rule.at_local, now))
            held = recipient.digest_at is not None and not urgent
            if held:
                assert recipient.digest_at is not None
                not_before = next_local(recipient.digest_at, max(now, not_before), recipient.tz)
            for channel in recipient.channels:
                address = recipient.address(channel)
                if address is None or (rid, channel) in out:
                    continue
                out[(rid, channel)] = Planned(
                    delivery_id=delivery_id(occ.event_id, rid, channel),
                    event_id=occ.event_id,
                    event_type=occ.event_type,
                    rule=rule.id,
                    rules_version=book.version,
                    recipient_id=rid,
                    channel=channel,
                    address=address,
                    language=recipient.language,
                    subject=msg.subject,
                    body=msg.body,
                    urgent=urgent,
                    not_before=not_before,
                    grid_path=occ.grid_path,
                    held=held,
                )
    return list(out.values())


# --- personal digests --------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """A message waiting in a recipient's digest."""

    subject: str
    body: str
    created_at: datetime


def digest_id(recipient_id: str, channel: str, due_at: datetime, members: Sequence[UUID]) -> UUID:
    """The stable id of one personal digest, from what it carries: composing the same held messages
    twice gives the same delivery; a message that came in late goes in a digest of its own."""
    carried = ",".join(sorted(str(m) for m in members))
    return uuid5(DIGEST_NS, f"{recipient_id}/{channel}/{due_at.astimezone(UTC).isoformat()}/{carried}")


def compose_digest(templates: Templates, recipient: Recipient, items: Sequence[Held], due_at: datetime) -> Template:
    """One message for everything held for a recipient, oldest first, each with its time."""
    ordered = sorted(items, key=lambda h: h.created_at)
    lines = [f"{n}. [{local_time(h.created_at, recipient.tz)}] {h.subject}\n{h.body}" for n, h in enumerate(ordered, 1)]
    context = {
        "recipient_name": recipient.name,
        "count": len(ordered),
        "date_local": due_at.astimezone(ZoneInfo(recipient.tz)).date().isoformat(),
        "items": "\n\n".join(lines),
    }
    return render(templates, "personal_digest", recipient.language, context)


# --- reminders ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DueReminder:
    issue_id: UUID
    before_hours: float
    deadline: datetime
    due_at: datetime


def reminders_for(book: RuleBook, issue_id: UUID, deadline: datetime, assigned_at: datetime) -> list[DueReminder]:
    """The reminders an assignment (or a new deadline) calls for; one already past is dropped."""
    return [
        DueReminder(issue_id, r.before_hours, deadline, deadline - r.before)
        for r in book.reminders
        if deadline - r.before > assigned_at
    ]


def reminder_occurrence(book: RuleBook, due: DueReminder, issue: IssueFacts) -> Occurrence:
    """A due reminder as an occurrence with a stable id, so it is delivered once however often it is seen."""
    event_id = uuid5(REMINDER_NS, f"{due.issue_id}/{due.before_hours}/{due.deadline.isoformat()}")
    urgent = any(r.urgent for r in book.reminders if r.before_hours == due.before_hours)
    return Occurrence(
        event_id=event_id,
        event_type="DeadlineReminder",
        grid_path=issue.grid_path,
        occurred_at=due.due_at,
        payload={"issue_id": str(due.issue_id), "deadline": due.deadline.isoformat(), "urgent": urgent},
        issue=issue,
    )


# --- retries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, then dead-letter after `max_attempts`."""

    base_s: float = 5.0
    cap_s: float = 3600.0
    max_attempts: int = 8
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, attempt: int) -> timedelta:
        """Wait before attempt `attempt + 1`: uniform in [ceiling/2, ceiling], ceiling = base·2^(attempt-1)."""
        ceiling = min(self.cap_s, self.base_s * (2 ** max(0, attempt - 1)))
        return timedelta(seconds=self.rng.uniform(ceiling / 2, ceiling))

    def gives_up(self, attempts: int) -> bool:
        return attempts >= self.max_attempts
