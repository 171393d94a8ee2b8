"""The volunteer context's rules as pure deciders: no I/O, no clock; time, ids and whatever the
handler looked up (a site's area, which volunteers are active) come in with the command.

Aggregates and their streams:
- practice site `site-<code>`, volunteer `volunteer-<uuid>`, activity `activity-<uuid>`,
- household `household-<code>` and incentive fund `fund-<code>` (a redemption changes both,
  decided together by `decide_redemption` and appended atomically),
- project `project-<uuid>`, nomination `nomination-<uuid>`, creation title `title-<code>`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal
from uuid import UUID

import yaml

from shared.decider import Decider, DomainError
from shared.events.envelope import DomainEvent
from shared.events.volunteer import (
    ActivityCheckInOpened,
    ActivityForm,
    ActivityHeld,
    ActivityPlanned,
    ActivityReviewed,
    ActivityTheme,
    CheckInLapsed,
    CreationCategory,
    CreationTitleAwarded,
    CreationTitleReviewed,
    CreationTitleRevoked,
    FundContributed,
    FundDrawn,
    FundEstablished,
    HonourAwarded,
    HonourKind,
    HoursApproved,
    HoursCredited,
    HoursDeclined,
    HoursReported,
    HouseholdEnrolled,
    Level,
    NominationEndorsed,
    NominationSubmitted,
    Participation,
    PointsAwarded,
    PointsRedeemed,
    ProjectAwarded,
    ProjectEntered,
    ProjectRegistered,
    ProjectShortlisted,
    ReviewVerdict,
    SiteClosed,
    SiteKind,
    SiteRegistered,
    VolunteerCheckedIn,
    VolunteerCheckedOut,
    VolunteerDeactivated,
    VolunteerRegistered,
)
from shared.grid import GridLevel, level_of, within

CHECK_IN_LIMIT = timedelta(hours=24)
"""A volunteer never checked out is closed (and flagged, not credited) this long after check-in."""

# --- personal data masking ---------------------------------------------------------------------

_PHONE = re.compile(r"^1[3-9]\d{9}$")
_ID_NUMBER = re.compile(r"^\d{17}[\dX]$")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def valid_phone(phone: str) -> bool:
    """A mainland mobile number: 11 digits starting 13-19."""
    return bool(_PHONE.match(phone))


def id_check_char(first17: str) -> str:
    """The GB 11643 check character of an 18-character resident ID number."""
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def valid_id_number(id_number: str) -> bool:
    """18 characters with a correct GB 11643 check character."""
    return bool(_ID_NUMBER.match(id_number)) and id_check_char(id_number[:17]) == id_number[17]


def mask_phone(phone: str) -> str:
    """13812345678 -> 138****5678."""
    return f"{phone[:3]}****{phone[-4:]}"


def mask_id_number(id_number: str) -> str:
    """350625199001011234 -> 350***********1234."""
    return f"{id_number[:3]}{'*' * 11}{id_number[-4:]}"


def mask_name(name: str) -> str:
    """林小明 -> 林*明, 林明 -> 林*: the family name stays, the rest is hidden."""
    if len(name) <= 1:
        return "*"
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


# --- practice sites ----------------------------------------------------------------------------

SITE_LEVEL: dict[str, GridLevel] = {
    "centre": GridLevel.DISTRICT,
    "institute": GridLevel.TOWNSHIP,
    "station": GridLevel.COMMUNITY,
}


@dataclass(frozen=True)
class SiteState:
    registered: bool = False
    kind: str = ""
    grid_path: str = ""
    name: str = ""
    closed: bool = False


@dataclass(frozen=True)
class RegisterSite:
    site_id: str
    kind: SiteKind
    name: str
    grid_path: str


@dataclass(frozen=True)
class CloseSite:
    site_id: str
    reason: str


SiteCommand = RegisterSite | CloseSite


def decide_site(cmd: SiteCommand, s: SiteState) -> list[DomainEvent]:
    if isinstance(cmd, RegisterSite):
        if s.registered:
            raise DomainError(f"site {cmd.site_id} is already registered")
        if level_of(cmd.grid_path) != SITE_LEVEL[cmd.kind]:
            raise DomainError(f"a {cmd.kind} sits at {SITE_LEVEL[cmd.kind].name.lower()} level, not at {cmd.grid_path}")
        return [SiteRegistered(site_id=cmd.site_id, kind=cmd.kind, name=cmd.name, grid_path=cmd.grid_path)]
    if not s.registered:
        raise DomainError(f"no site {cmd.site_id}")
    if s.closed:
        raise DomainError(f"site {cmd.site_id} is already closed")
    return [SiteClosed(site_id=cmd.site_id, reason=cmd.reason)]


def evolve_site(s: SiteState, e: DomainEvent) -> SiteState:
    if isinstance(e, SiteRegistered):
        return SiteState(True, e.kind, e.grid_path, e.name)
    if isinstance(e, SiteClosed):
        return replace(s, closed=True)
    return s


site_decider: Decider[SiteCommand, SiteState] = Decider(SiteState(), decide_site, evolve_site)


# --- volunteers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VolunteerState:
    registered: bool = False
    active: bool = False
    site_id: str = ""
    grid_path: str = ""


@dataclass(frozen=True)
class RegisterVolunteer:
    """Full personal data comes in; only its masked form goes out in the event."""

    volunteer_id: UUID
    site_id: str
    site: SiteState
    name: str
    phone: str
    id_number: str
    at: datetime
    skills: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeactivateVolunteer:
    volunteer_id: UUID
    reason: str
    at: datetime


VolunteerCommand = RegisterVolunteer | DeactivateVolunteer


def decide_volunteer(cmd: VolunteerCommand, s: VolunteerState) -> list[DomainEvent]:
    if isinstance(cmd, RegisterVolunteer):
        if s.registered:
            raise DomainError(f"volunteer {cmd.volunteer_id} is already registered")
        if not cmd.site.registered or cmd.site.closed:
            raise DomainError(f"no open practice site {cmd.site_id}")
        if not valid_phone(cmd.phone):
            raise DomainError("phone is not a mainland mobile number")
        if not valid_id_number(cmd.id_number):
            raise DomainError("ID number is not a valid resident ID number")
        return [
            VolunteerRegistered(
                volunteer_id=cmd.volunteer_id,
                site_id=cmd.site_id,
                grid_path=cmd.site.grid_path,
                name_masked=mask_name(cmd.name),
                phone_masked=mask_phone(cmd.phone),
                id_number_masked=mask_id_number(cmd.id_number),
                skills=list(cmd.skills),
                registered_at=cmd.at,
            )
        ]
    if not s.registered:
        raise DomainError(f"no volunteer {cmd.volunteer_id}")
    if not s.active:
        raise DomainError(f"volunteer {cmd.volunteer_id} is already deactivated")
    return [VolunteerDeactivated(volunteer_id=cmd.volunteer_id, reason=cmd.reason, deactivated_at=cmd.at)]


def evolve_volunteer(s: VolunteerState, e: DomainEvent) -> VolunteerState:
    if isinstance(e, VolunteerRegistered):
        return VolunteerState(True, True, e.site_id, e.grid_path)
    if isinstance(e, VolunteerDeactivated):
        return replace(s, active=False)
    return s


volunteer_decider: Decider[VolunteerCommand, VolunteerState] = Decider(
    VolunteerState(), decide_volunteer, evolve_volunteer
)


# --- activities and service hours -------------------------------------------------------------

ActivityStatus = Literal["none", "planned", "held", "reviewed"]


@dataclass(frozen=True)
class ActivityState:
    status: ActivityStatus = "none"
    activity_id: UUID | None = None
    site_id: str = ""
    grid_path: str = ""
    theme: str = ""
    form: str = ""
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    credited: Mapping[UUID, float] = field(default_factory=dict)
    pending: Mapping[UUID, float] = field(default_factory=dict)
    checked_in: Mapping[UUID, datetime] = field(default_factory=dict)
    lapsed: frozenset[UUID] = frozenset()
    code_digest: str = ""
    code_valid_until: datetime | None = None

    def served_on(self) -> datetime:
        """When the service was given: the held time, else the planned start."""
        at = self.started_at or self.starts_at
        assert at is not None
        return at


@dataclass(frozen=True)
class PlanActivity:
    activity_id: UUID
    site_id: str
    site: SiteState
    title: str
    theme: ActivityTheme
    form: ActivityForm
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class HoldActivity:
    """The station records the activity; `active_volunteers` are the ids it looked up as active."""

    started_at: datetime
    ended_at: datetime
    participants: Sequence[Participation]
    audience: int
    active_volunteers: frozenset[UUID]
    photos: tuple[str, ...] = ()
    summary: str = ""


@dataclass(frozen=True)
class OpenCheckIn:
    code: str
    valid_until: datetime
    at: datetime


@dataclass(frozen=True)
class CheckIn:
    volunteer_id: UUID
    code: str
    at: datetime
    active: bool


@dataclass(frozen=True)
class CheckOut:
    volunteer_id: UUID
    at: datetime


@dataclass(frozen=True)
class CloseLapsedCheckIns:
    now: datetime


@dataclass(frozen=True)
class ReportHours:
    volunteer_id: UUID
    hours: float
    active: bool
    note: str = ""


@dataclass(frozen=True)
class ApproveHours:
    volunteer_id: UUID


@dataclass(frozen=True)
class DeclineHours:
    volunteer_id: UUID
    reason: str


@dataclass(frozen=True)
class ReviewActivity:
    verdict: ReviewVerdict
    at: datetime
    note: str = ""


ActivityCommand = (
    PlanActivity
    | HoldActivity
    | OpenCheckIn
    | CheckIn
    | CheckOut
    | CloseLapsedCheckIns
    | ReportHours
    | ApproveHours
    | DeclineHours
    | ReviewActivity
)


def code_digest(activity_id: UUID, code: str) -> str:
    """What travels instead of the activity code: SHA-256 of the activity id and the code."""
    return hashlib.sha256(f"{activity_id}:{code}".encode()).hexdigest()


def _hours_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 3600


def _quarter_hours(start: datetime, end: datetime) -> float:
    """Elapsed time rounded down to whole quarter hours."""
    return int((end - start).total_seconds() // 900) / 4


def _ensure_open(s: ActivityState) -> None:
    if s.status == "none":
        raise DomainError("no such activity: plan it first")
    if s.status == "reviewed":
        raise DomainError("the activity is reviewed and closed")


def _ensure_creditable(s: ActivityState, vid: UUID) -> None:
    if vid in s.credited:
        raise DomainError(f"volunteer {vid} is already credited for this activity")


def _credit(
    s: ActivityState, vid: UUID, hours: float, basis: Literal["recorded", "check_out", "self_report"]
) -> HoursCredited:
    assert s.activity_id is not None
    return HoursCredited(activity_id=s.activity_id, volunteer_id=vid, hours=hours, basis=basis, served_on=s.served_on())


def decide_activity(cmd: ActivityCommand, s: ActivityState) -> list[DomainEvent]:
    if isinstance(cmd, PlanActivity):
        if s.status != "none":
            raise DomainError(f"activity {cmd.activity_id} is already planned")
        if not cmd.site.registered or cmd.site.closed:
            raise DomainError(f"no open practice site {cmd.site_id}")
        if cmd.ends_at <= cmd.starts_at:
            raise DomainError("an activity must end after it starts")
        if cmd.ends_at - cmd.starts_at > timedelta(hours=24):
            raise DomainError("an activity lasts at most 24 hours")
        return [
            ActivityPlanned(
                activity_id=cmd.activity_id,
                site_id=cmd.site_id,
                grid_path=cmd.site.grid_path,
                title=cmd.title,
                theme=cmd.theme,
                form=cmd.form,
                starts_at=cmd.starts_at,
                ends_at=cmd.ends_at,
            )
        ]
    _ensure_open(s)
    aid = s.activity_id
    assert aid is not None
    if isinstance(cmd, HoldActivity):
        if s.status != "planned":
            raise DomainError("the activity is already held")
        if cmd.ended_at <= cmd.started_at:
            raise DomainError("an activity must end after it starts")
        span = _hours_between(cmd.started_at, cmd.ended_at)
        if span > 24:
            raise DomainError("an activity lasts at most 24 hours")
        seen: set[UUID] = set()
        for p in cmd.participants:
            if p.volunteer_id in seen:
                raise DomainError(f"volunteer {p.volunteer_id} is listed twice")
            seen.add(p.volunteer_id)
            if p.volunteer_id not in cmd.active_volunteers:
                raise DomainError(f"volunteer {p.volunteer_id} is not an active registered volunteer")
            _ensure_creditable(s, p.volunteer_id)
            if p.volunteer_id in s.pending:
                raise DomainError(f"volunteer {p.volunteer_id} has self-reported hours pending")
            if p.hours > span:
                raise DomainError(f"volunteer {p.volunteer_id}: {p.hours} h is longer than the activity ({span:g} h)")
        held = ActivityHeld(
            activity_id=aid,
            site_id=s.site_id,
            grid_path=s.grid_path,
            theme=s.theme,
            form=s.form,
            started_at=cmd.started_at,
            ended_at=cmd.ended_at,
            participants=list(cmd.participants),
            audience=cmd.audience,
            photos=list(cmd.photos),
            summary=cmd.summary,
        )
        after = evolve_activity(s, held)
        return [held, *(_credit(after, p.volunteer_id, p.hours, "recorded") for p in cmd.participants)]
    if isinstance(cmd, OpenCheckIn):
        if not re.fullmatch(r"\d{6}", cmd.code):
            raise DomainError("an activity code has 6 digits")
        if cmd.valid_until <= cmd.at or cmd.valid_until - cmd.at > timedelta(hours=12):
            raise DomainError("an activity code is valid for up to 12 hours")
        return [
            ActivityCheckInOpened(activity_id=aid, code_digest=code_digest(aid, cmd.code), valid_until=cmd.valid_until)
        ]
    if isinstance(cmd, CheckIn):
        if not s.code_digest or s.code_valid_until is None:
            raise DomainError("check-in is not open for this activity")
        if cmd.at > s.code_valid_until:
            raise DomainError("the activity code has expired")
        if code_digest(aid, cmd.code) != s.code_digest:
            raise DomainError("wrong activity code")
        if not cmd.active:
            raise DomainError(f"volunteer {cmd.volunteer_id} is not an active registered volunteer")
        _ensure_creditable(s, cmd.volunteer_id)
        if cmd.volunteer_id in s.checked_in:
            raise DomainError(f"volunteer {cmd.volunteer_id} is already checked in")
        if cmd.volunteer_id in s.lapsed:
            raise DomainError(f"volunteer {cmd.volunteer_id}'s check-in lapsed; report hours for approval instead")
        return [VolunteerCheckedIn(activity_id=aid, volunteer_id=cmd.volunteer_id, at=cmd.at)]
    if isinstance(cmd, CheckOut):
        since = s.checked_in.get(cmd.volunteer_id)
        if since is None:
            raise DomainError(f"volunteer {cmd.volunteer_id} is not checked in")
        if cmd.at - since > CHECK_IN_LIMIT:
            raise DomainError("checked in more than 24 h ago: the check-in is closed, report hours for approval")
        hours = _quarter_hours(since, cmd.at)
        if hours <= 0:
            raise DomainError("less than a quarter hour served")
        _ensure_creditable(s, cmd.volunteer_id)
        return [
            VolunteerCheckedOut(activity_id=aid, volunteer_id=cmd.volunteer_id, at=cmd.at, hours=hours),
            _credit(s, cmd.volunteer_id, hours, "check_out"),
        ]
    if isinstance(cmd, CloseLapsedCheckIns):
        return [
            CheckInLapsed(activity_id=aid, volunteer_id=vid, checked_in_at=at, closed_at=cmd.now)
            for vid, at in sorted(s.checked_in.items(), key=lambda kv: kv[1])
            if cmd.now - at > CHECK_IN_LIMIT
        ]
    if isinstance(cmd, ReportHours):
        if s.status != "held":
            raise DomainError("hours can be reported only for an activity that was held")
        if not cmd.active:
            raise DomainError(f"volunteer {cmd.volunteer_id} is not an active registered volunteer")
        _ensure_creditable(s, cmd.volunteer_id)
        if cmd.volunteer_id in s.pending:
            raise DomainError(f"volunteer {cmd.volunteer_id} already has hours pending for this activity")
        if cmd.volunteer_id in s.checked_in:
            raise DomainError(f"volunteer {cmd.volunteer_id} is checked in: check out instead")
        assert s.started_at is not None and s.ended_at is not None
        span = _hours_between(s.started_at, s.ended_at)
        if cmd.hours > span:
            raise DomainError(f"{cmd.hours} h is longer than the activity ({span:g} h)")
        return [HoursReported(activity_id=aid, volunteer_id=cmd.volunteer_id, hours=cmd.hours, note=cmd.note)]
    if isinstance(cmd, ApproveHours):
        pending = s.pending.get(cmd.volunteer_id)
        if pending is None:
            raise DomainError(f"no hours pending for volunteer {cmd.volunteer_id}")
        return [
            HoursApproved(activity_id=aid, volunteer_id=cmd.volunteer_id, hours=pending),
            _credit(s, cmd.volunteer_id, pending, "self_report"),
        ]
    if isinstance(cmd, DeclineHours):
        if cmd.volunteer_id not in s.pending:
            raise DomainError(f"no hours pending for volunteer {cmd.volunteer_id}")
        return [HoursDeclined(activity_id=aid, volunteer_id=cmd.volunteer_id, reason=cmd.reason)]
    # ReviewActivity
    if s.status != "held":
        raise DomainError("only a held activity can be reviewed")
    if s.pending:
        raise DomainError(f"{len(s.pending)} self-reported hours still wait for approval")
    return [ActivityReviewed(activity_id=aid, verdict=cmd.verdict, note=cmd.note, reviewed_at=cmd.at)]


def evolve_activity(s: ActivityState, e: DomainEvent) -> ActivityState:
    if isinstance(e, ActivityPlanned):
        return ActivityState(
            status="planned",
            activity_id=e.activity_id,
            site_id=e.site_id,
            grid_path=e.grid_path,
            theme=e.theme,
            form=e.form,
            starts_at=e.starts_at,
            ends_at=e.ends_at,
        )
    if isinstance(e, ActivityHeld):
        return replace(s, status="held", started_at=e.started_at, ended_at=e.ended_at)
    if isinstance(e, ActivityCheckInOpened):
        return replace(s, code_digest=e.code_digest, code_valid_until=e.valid_until)
    if isinstance(e, VolunteerCheckedIn):
        return replace(s, checked_in={**s.checked_in, e.volunteer_id: e.at})
    if isinstance(e, VolunteerCheckedOut):
        return replace(s, checked_in={k: v for k, v in s.checked_in.items() if k != e.volunteer_id})
    if isinstance(e, CheckInLapsed):
        return replace(
            s,
            checked_in={k: v for k, v in s.checked_in.items() if k != e.volunteer_id},
            lapsed=s.lapsed | {e.volunteer_id},
        )
    if isinstance(e, HoursCredited):
        return replace(s, credited={**s.credited, e.volunteer_id: e.hours})
    if isinstance(e, HoursReported):
        return replace(s, pending={**s.pending, e.volunteer_id: e.hours})
    if isinstance(e, HoursApproved | HoursDeclined):
        return replace(s, pending={k: v for k, v in s.pending.items() if k != e.volunteer_id})
    if isinstance(e, ActivityReviewed):
        return replace(s, status="reviewed" if e.verdict == "accepted" else "held")
    return s


activity_decider: Decider[ActivityCommand, ActivityState] = Decider(ActivityState(), decide_activity, evolve_activity)


# --- village civility points and the incentive fund --------------------------------------------


@dataclass(frozen=True)
class PointsRule:
    code: str
    name: str
    max_points: int


@dataclass(frozen=True)
class PointsRules:
    """The rules file: what points may be awarded for, and what a point is worth in yuan."""

    version: int
    yuan_per_point: int
    rules: Mapping[str, PointsRule]


RULES_FILE = Path(__file__).with_name("points-rules.yaml")


def parse_rules(raw: Mapping[str, object]) -> PointsRules:
    rules_raw = raw["rules"]
    assert isinstance(rules_raw, dict)
    version, ypp = raw["version"], raw["yuan_per_point"]
    assert isinstance(version, int) and isinstance(ypp, int)
    return PointsRules(
        version=version,
        yuan_per_point=ypp,
        rules={code: PointsRule(code, str(r["name"]), int(r["max_points"])) for code, r in rules_raw.items()},
    )


def load_rules(path: Path = RULES_FILE) -> PointsRules:
    """Read the points rules file (I/O: call it at start-up, not inside a decider)."""
    return parse_rules(yaml.safe_load(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class HouseholdState:
    enrolled: bool = False
    grid_path: str = ""
    label: str = ""
    balance: int = 0


@dataclass(frozen=True)
class AwardPoints:
    household_id: str
    grid_path: str
    label: str
    points: int
    rule: str
    reason: str
    rules: PointsRules


@dataclass(frozen=True)
class RedeemPoints:
    household_id: str
    fund_id: str
    points: int
    item: str
    reason: str
    rules: PointsRules


def decide_household(cmd: AwardPoints, s: HouseholdState) -> list[DomainEvent]:
    """Award points; the household is enrolled by its first award."""
    out: list[DomainEvent] = []
    if not s.enrolled:
        if level_of(cmd.grid_path) < GridLevel.COMMUNITY:
            raise DomainError("a household belongs to a community or village (or a grid in it)")
        out.append(HouseholdEnrolled(household_id=cmd.household_id, grid_path=cmd.grid_path, label=cmd.label))
    elif cmd.grid_path != s.grid_path:
        raise DomainError(f"household {cmd.household_id} is enrolled at {s.grid_path}, not {cmd.grid_path}")
    rule = cmd.rules.rules.get(cmd.rule)
    if rule is None:
        raise DomainError(f"rules v{cmd.rules.version} have no rule {cmd.rule!r}")
    if cmd.points > rule.max_points:
        raise DomainError(f"rule {cmd.rule} ({rule.name}) allows at most {rule.max_points} points")
    out.append(
        PointsAwarded(
            household_id=cmd.household_id,
            points=cmd.points,
            rule=cmd.rule,
            reason=cmd.reason,
            rules_version=cmd.rules.version,
            balance_after=s.balance + cmd.points,
        )
    )
    return out


def evolve_household(s: HouseholdState, e: DomainEvent) -> HouseholdState:
    if isinstance(e, HouseholdEnrolled):
        return HouseholdState(True, e.grid_path, e.label, 0)
    if isinstance(e, PointsAwarded | PointsRedeemed):
        return replace(s, balance=e.balance_after)
    return s


household_decider: Decider[AwardPoints, HouseholdState] = Decider(HouseholdState(), decide_household, evolve_household)


@dataclass(frozen=True)
class FundState:
    established: bool = False
    grid_path: str = ""
    name: str = ""
    balance: int = 0


@dataclass(frozen=True)
class EstablishFund:
    fund_id: str
    name: str
    grid_path: str


@dataclass(frozen=True)
class ContributeToFund:
    fund_id: str
    yuan: int
    donor: str


FundCommand = EstablishFund | ContributeToFund


def decide_fund(cmd: FundCommand, s: FundState) -> list[DomainEvent]:
    if isinstance(cmd, EstablishFund):
        if s.established:
            raise DomainError(f"fund {cmd.fund_id} already exists")
        return [FundEstablished(fund_id=cmd.fund_id, name=cmd.name, grid_path=cmd.grid_path)]
    if not s.established:
        raise DomainError(f"no fund {cmd.fund_id}")
    return [FundContributed(fund_id=cmd.fund_id, yuan=cmd.yuan, donor=cmd.donor, balance_after=s.balance + cmd.yuan)]


def evolve_fund(s: FundState, e: DomainEvent) -> FundState:
    if isinstance(e, FundEstablished):
        return FundState(True, e.grid_path, e.name, 0)
    if isinstance(e, FundContributed | FundDrawn):
        return replace(s, balance=e.balance_after)
    return s


fund_decider: Decider[FundCommand, FundState] = Decider(FundState(), decide_fund, evolve_fund)


def decide_redemption(
    cmd: RedeemPoints, household: HouseholdState, fund: FundState
) -> tuple[list[DomainEvent], list[DomainEvent]]:
    """A redemption spends the household's points and draws the fund: (household events, fund events).
    Refused if the household's balance or the fund's balance would go negative."""
    if not household.enrolled:
        raise DomainError(f"household {cmd.household_id} has no points")
    if not fund.established:
        raise DomainError(f"no fund {cmd.fund_id}")
    if not within(household.grid_path, fund.grid_path):
        raise DomainError(f"fund {cmd.fund_id} serves {fund.grid_path}, not {household.grid_path}")
    if cmd.points > household.balance:
        raise DomainError(f"household {cmd.household_id} has {household.balance} points, cannot redeem {cmd.points}")
    yuan = cmd.points * cmd.rules.yuan_per_point
    if yuan > fund.balance:
        raise DomainError(f"fund {cmd.fund_id} holds {fund.balance} yuan, cannot pay {yuan}")
    return (
        [
            PointsRedeemed(
                household_id=cmd.household_id,
                points=cmd.points,
                fund_id=cmd.fund_id,
                yuan=yuan,
                item=cmd.item,
                reason=cmd.reason,
                rules_version=cmd.rules.version,
                balance_after=household.balance - cmd.points,
            )
        ],
        [FundDrawn(fund_id=cmd.fund_id, yuan=yuan, household_id=cmd.household_id, balance_after=fund.balance - yuan)],
    )


# --- volunteer service projects ----------------------------------------------------------------


@dataclass(frozen=True)
class ProjectState:
    registered: bool = False
    grid_path: str = ""
    entered: frozenset[tuple[str, int]] = frozenset()
    shortlisted: frozenset[tuple[str, int]] = frozenset()
    awarded: frozenset[tuple[str, int]] = frozenset()


@dataclass(frozen=True)
class RegisterProject:
    project_id: UUID
    name: str
    organiser: str
    grid_path: str
    description: str = ""


@dataclass(frozen=True)
class EnterProject:
    contest: str
    year: int
    level: Level | None = None


@dataclass(frozen=True)
class ShortlistProject:
    contest: str
    year: int


@dataclass(frozen=True)
class AwardProject:
    contest: str
    year: int
    prize: str


ProjectCommand = RegisterProject | EnterProject | ShortlistProject | AwardProject


def decide_project(cmd: ProjectCommand, s: ProjectState, project_id: UUID | None = None) -> list[DomainEvent]:
    if isinstance(cmd, RegisterProject):
        if s.registered:
            raise DomainError(f"project {cmd.project_id} is already registered")
        return [
            ProjectRegistered(
                project_id=cmd.project_id,
                name=cmd.name,
                organiser=cmd.organiser,
                grid_path=cmd.grid_path,
                description=cmd.description,
            )
        ]
    if not s.registered or project_id is None:
        raise DomainError("no such project")
    key = (cmd.contest, cmd.year)
    if isinstance(cmd, EnterProject):
        if key in s.entered:
            raise DomainError(f"already entered in {cmd.contest} {cmd.year}")
        return [ProjectEntered(project_id=project_id, contest=cmd.contest, year=cmd.year, level=cmd.level)]
    if key not in s.entered:
        raise DomainError(f"not entered in {cmd.contest} {cmd.year}")
    if isinstance(cmd, ShortlistProject):
        if key in s.shortlisted:
            raise DomainError(f"already shortlisted in {cmd.contest} {cmd.year}")
        return [ProjectShortlisted(project_id=project_id, contest=cmd.contest, year=cmd.year)]
    if key not in s.shortlisted:
        raise DomainError(f"only a shortlisted project can be awarded in {cmd.contest} {cmd.year}")
    if key in s.awarded:
        raise DomainError(f"already awarded in {cmd.contest} {cmd.year}")
    return [ProjectAwarded(project_id=project_id, contest=cmd.contest, year=cmd.year, prize=cmd.prize)]


@dataclass(frozen=True)
class _ProjectCommandFor:
    project_id: UUID
    command: ProjectCommand


def evolve_project(s: ProjectState, e: DomainEvent) -> ProjectState:
    if isinstance(e, ProjectRegistered):
        return ProjectState(True, e.grid_path)
    if isinstance(e, ProjectEntered):
        return replace(s, entered=s.entered | {(e.contest, e.year)})
    if isinstance(e, ProjectShortlisted):
        return replace(s, shortlisted=s.shortlisted | {(e.contest, e.year)})
    if isinstance(e, ProjectAwarded):
        return replace(s, awarded=s.awarded | {(e.contest, e.year)})
    return s


def _decide_project_for(cmd: _ProjectCommandFor, s: ProjectState) -> list[DomainEvent]:
    return decide_project(cmd.command, s, cmd.project_id)


def project_command(project_id: UUID, command: ProjectCommand) -> _ProjectCommandFor:
    """Wrap a project command with the project's id (the events name it)."""
    return _ProjectCommandFor(project_id, command)


project_decider: Decider[_ProjectCommandFor, ProjectState] = Decider(
    ProjectState(), _decide_project_for, evolve_project
)


# --- honours -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NominationState:
    submitted: bool = False
    honour: str = ""
    grid_path: str = ""
    year: int = 0
    endorsed_by: frozenset[str] = frozenset()
    awarded_level: str = ""


@dataclass(frozen=True)
class SubmitNomination:
    nomination_id: UUID
    honour: HonourKind
    nominee: str
    grid_path: str
    year: int
    deeds: str


@dataclass(frozen=True)
class EndorseNomination:
    nomination_id: UUID
    endorsed_by: str
    note: str = ""


@dataclass(frozen=True)
class AwardHonour:
    nomination_id: UUID
    level: Level


NominationCommand = SubmitNomination | EndorseNomination | AwardHonour


def decide_nomination(cmd: NominationCommand, s: NominationState) -> list[DomainEvent]:
    if isinstance(cmd, SubmitNomination):
        if s.submitted:
            raise DomainError(f"nomination {cmd.nomination_id} is already submitted")
        return [
            NominationSubmitted(
                nomination_id=cmd.nomination_id,
                honour=cmd.honour,
                nominee=cmd.nominee,
                grid_path=cmd.grid_path,
                year=cmd.year,
                deeds=cmd.deeds,
            )
        ]
    if not s.submitted:
        raise DomainError(f"no nomination {cmd.nomination_id}")
    if s.awarded_level:
        raise DomainError(f"the honour was already awarded at {s.awarded_level} level")
    if isinstance(cmd, EndorseNomination):
        if cmd.endorsed_by in s.endorsed_by:
            raise DomainError(f"{cmd.endorsed_by} already endorsed this nomination")
        return [NominationEndorsed(nomination_id=cmd.nomination_id, endorsed_by=cmd.endorsed_by, note=cmd.note)]
    if not s.endorsed_by:
        raise DomainError("a nomination must be endorsed before the honour is awarded")
    return [
        HonourAwarded(
            nomination_id=cmd.nomination_id,
            honour=s.honour,
            level=cmd.level,
            year=s.year,
        )
    ]


def evolve_nomination(s: NominationState, e: DomainEvent) -> NominationState:
    if isinstance(e, NominationSubmitted):
        return NominationState(True, e.honour, e.grid_path, e.year)
    if isinstance(e, NominationEndorsed):
        return replace(s, endorsed_by=s.endorsed_by | {e.endorsed_by})
    if isinstance(e, HonourAwarded):
        return replace(s, awarded_level=e.level)
    return s


nomination_decider: Decider[NominationCommand, NominationState] = Decider(
    NominationState(), decide_nomination, evolve_nomination
)


# --- creation titles ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TitleState:
    """One holder's title in one creation category, at the levels it holds now."""

    exists: bool = False
    category: str = ""
    holder: str = ""
    grid_path: str = ""
    levels: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AwardTitle:
    title_id: str
    category: CreationCategory
    holder: str
    grid_path: str
    level: Level
    year: int


@dataclass(frozen=True)
class ReviewTitle:
    title_id: str
    level: Level
    passed: bool
    year: int
    note: str = ""


@dataclass(frozen=True)
class RevokeTitle:
    title_id: str
    level: Level
    reason: str


TitleCommand = AwardTitle | ReviewTitle | RevokeTitle


def decide_title(cmd: TitleCommand, s: TitleState) -> list[DomainEvent]:
    if isinstance(cmd, AwardTitle):
        if s.exists and (s.category != cmd.category or s.holder != cmd.holder):
            raise DomainError(f"title {cmd.title_id} belongs to {s.holder} ({s.category})")
        if cmd.level in s.levels:
            raise DomainError(f"{cmd.holder} already holds this title at {cmd.level} level")
        return [
            CreationTitleAwarded(
                title_id=cmd.title_id,
                category=cmd.category,
                holder=cmd.holder,
                grid_path=cmd.grid_path,
                level=cmd.level,
                year=cmd.year,
            )
        ]
    if cmd.level not in s.levels:
        raise DomainError(f"title {cmd.title_id} is not held at {cmd.level} level")
    if isinstance(cmd, ReviewTitle):
        return [
            CreationTitleReviewed(
                title_id=cmd.title_id, level=cmd.level, passed=cmd.passed, note=cmd.note, year=cmd.year
            )
        ]
    return [CreationTitleRevoked(title_id=cmd.title_id, level=cmd.level, reason=cmd.reason)]


def evolve_title(s: TitleState, e: DomainEvent) -> TitleState:
    if isinstance(e, CreationTitleAwarded):
        return TitleState(True, e.category, e.holder, e.grid_path, s.levels | {e.level})
    if isinstance(e, CreationTitleRevoked):
        return replace(s, levels=s.levels - {e.level})
    return s


title_decider: Decider[TitleCommand, TitleState] = Decider(TitleState(), decide_title, evolve_title)


# --- stream ids --------------------------------------------------------------------------------


def site_stream(site_id: str) -> str:
    return f"site-{site_id}"


def volunteer_stream(volunteer_id: UUID) -> str:
    return f"volunteer-{volunteer_id}"


def activity_stream(activity_id: UUID) -> str:
    return f"activity-{activity_id}"


def household_stream(household_id: str) -> str:
    return f"household-{household_id}"


def fund_stream(fund_id: str) -> str:
    return f"fund-{fund_id}"


def project_stream(project_id: UUID) -> str:
    return f"project-{project_id}"


def nomination_stream(nomination_id: UUID) -> str:
    return f"nomination-{nomination_id}"


def title_stream(title_id: str) -> str:
    return f"title-{title_id}"
