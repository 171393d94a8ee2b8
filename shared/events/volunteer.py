"""Events of the volunteer context: practice sites, the volunteer register, activities and their
service hours, volunteer projects, honours, village civility points and creation titles.

No event carries a volunteer's full phone or ID number: those stay in the service's
`volunteer_personal_data` table; events carry the masked forms only (138****5678).
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from shared.events.envelope import DomainEvent
from shared.events.registry import registry
from shared.grid import GridPath

SiteKind = Literal["centre", "institute", "station"]
"""centre = 新时代文明实践中心 (district), institute = 所 (township), station = 站 (community/village)."""
ActivityTheme = Literal[
    "policy_talk",
    "model_deeds_talk",
    "sanitation",
    "civilised_traffic",
    "care_visit",
    "festival",
    "training",
    "other",
]
"""宣讲 (policy, model deeds), 环境卫生整治, 文明交通劝导, 关爱走访, 我们的节日, 志愿者培训."""
ActivityForm = Literal["talk", "drive", "persuasion", "visit", "opera", "clapper_talk", "performance", "training"]
"""opera = 芗剧 (local opera), clapper_talk = 快板 / 三句半."""
HoursBasis = Literal["recorded", "check_out", "self_report"]
"""How hours were established: recorded by the station, checked out with the activity code, or
self-reported and approved."""
ReviewVerdict = Literal["accepted", "returned"]
HonourKind = Literal["moral_model", "good_person", "good_youngster"]
"""道德模范, 身边好人, 新时代好少年."""
Level = Literal["national", "provincial", "municipal", "district"]
CreationCategory = Literal["village_town", "community", "unit", "campus", "family"]
"""五大创建: 文明村镇, 文明社区, 文明单位, 文明校园, 文明家庭."""

Code = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
PhotoRef = Annotated[str, StringConstraints(min_length=1, max_length=500)]
MaskedPhone = Annotated[str, StringConstraints(pattern=r"^\d{3}\*{4}\d{4}$")]
MaskedIdNumber = Annotated[str, StringConstraints(pattern=r"^\d{3}\*{11}[\dX]{4}$")]
Hours = Annotated[float, Field(gt=0, le=24, multiple_of=0.25)]
Points = Annotated[int, Field(gt=0, le=10_000)]
Year = Annotated[int, Field(ge=2000, le=2100)]
MAX_PHOTOS = 10


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- practice sites ---------------------------------------------------------------------------


@registry.register
class SiteRegistered(DomainEvent):
    """A practice centre, institute or station opened on the grid."""

    event_type = "SiteRegistered"
    topic = "volunteer.site"
    site_id: Code
    kind: SiteKind
    name: Name
    grid_path: GridPath


@registry.register
class SiteClosed(DomainEvent):
    event_type = "SiteClosed"
    topic = "volunteer.site"
    site_id: Code
    reason: ShortText


# --- the volunteer register -------------------------------------------------------------------


@registry.register
class VolunteerRegistered(DomainEvent):
    """A volunteer entered in the register (招募登记造册); personal data masked."""

    event_type = "VolunteerRegistered"
    topic = "volunteer.volunteer"
    volunteer_id: UUID
    site_id: Code
    grid_path: GridPath
    name_masked: Name
    phone_masked: MaskedPhone
    id_number_masked: MaskedIdNumber
    skills: list[Annotated[str, StringConstraints(min_length=1, max_length=50)]] = Field(
        default_factory=list, max_length=20
    )
    registered_at: AwareDatetime


@registry.register
class VolunteerDeactivated(DomainEvent):
    event_type = "VolunteerDeactivated"
    topic = "volunteer.volunteer"
    volunteer_id: UUID
    reason: ShortText
    deactivated_at: AwareDatetime


# --- activities and service hours -------------------------------------------------------------


class Participation(_Part):
    volunteer_id: UUID
    hours: Hours


@registry.register
class ActivityPlanned(DomainEvent):
    event_type = "ActivityPlanned"
    topic = "volunteer.activity"
    activity_id: UUID
    site_id: Code
    grid_path: GridPath
    title: Name
    theme: ActivityTheme
    form: ActivityForm
    starts_at: AwareDatetime
    ends_at: AwareDatetime


@registry.register
class ActivityCheckInOpened(DomainEvent):
    """A short-lived 6-digit activity code (or its QR code) opened; only its digest travels."""

    event_type = "ActivityCheckInOpened"
    topic = "volunteer.activity"
    activity_id: UUID
    code_digest: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    valid_until: AwareDatetime


@registry.register
class VolunteerCheckedIn(DomainEvent):
    event_type = "VolunteerCheckedIn"
    topic = "volunteer.activity"
    activity_id: UUID
    volunteer_id: UUID
    at: AwareDatetime


@registry.register
class VolunteerCheckedOut(DomainEvent):
    event_type = "VolunteerCheckedOut"
    topic = "volunteer.activity"
    activity_id: UUID
    volunteer_id: UUID
    at: AwareDatetime
    hours: Hours


@registry.register
class CheckInLapsed(DomainEvent):
    """Checked in but never out within 24 h: closed and flagged, no hours credited."""

    event_type = "CheckInLapsed"
    topic = "volunteer.activity"
    activity_id: UUID
    volunteer_id: UUID
    checked_in_at: AwareDatetime
    closed_at: AwareDatetime


@registry.register
class ActivityHeld(DomainEvent):
    """The activity took place: who served how long, how many people came, photos."""

    event_type = "ActivityHeld"
    topic = "volunteer.activity"
    activity_id: UUID
    site_id: Code
    grid_path: GridPath
    theme: ActivityTheme
    form: ActivityForm
    started_at: AwareDatetime
    ended_at: AwareDatetime
    participants: list[Participation] = Field(max_length=500)
    audience: int = Field(ge=0, le=100_000)
    photos: list[PhotoRef] = Field(default_factory=list, max_length=MAX_PHOTOS)
    summary: str = Field(default="", max_length=4000)


@registry.register
class HoursCredited(DomainEvent):
    """Service hours credited to one volunteer for one activity (never twice for the same pair)."""

    event_type = "HoursCredited"
    topic = "volunteer.activity"
    activity_id: UUID
    volunteer_id: UUID
    hours: Hours
    basis: HoursBasis
    served_on: AwareDatetime


@registry.register
class HoursReported(DomainEvent):
    """Self-reported hours, pending approval."""

    event_type = "HoursReported"
    topic = "volunteer.activity"
    activity_id: UUID
    volunteer_id: UUID
    hours: Hours
    note: str = Field(default="", max_length=2000)


@registry.register
class HoursApproved(DomainEvent):
    event_type = "HoursApproved"
    topic = "volunteer.activity"
    activity_id: UUID
    volunteer_id: UUID
    hours: Hours


@registry.register
class HoursDeclined(DomainEvent):
    event_type = "HoursDeclined"
    topic = "volunteer.activity"
    activity_id: UUID
    volunteer_id: UUID
    reason: ShortText


@registry.register
class ActivityReviewed(DomainEvent):
    """The loop closed: the activity record checked (accepted, or returned with a reason)."""

    event_type = "ActivityReviewed"
    topic = "volunteer.activity"
    activity_id: UUID
    verdict: ReviewVerdict
    note: str = Field(default="", max_length=2000)
    reviewed_at: AwareDatetime


# --- volunteer service projects and contests ---------------------------------------------------


@registry.register
class ProjectRegistered(DomainEvent):
    event_type = "ProjectRegistered"
    topic = "volunteer.project"
    project_id: UUID
    name: Name
    organiser: Name
    grid_path: GridPath
    description: str = Field(default="", max_length=4000)


@registry.register
class ProjectEntered(DomainEvent):
    """Entered in a contest round, e.g. the provincial volunteer service project contest."""

    event_type = "ProjectEntered"
    topic = "volunteer.project"
    project_id: UUID
    contest: Code
    year: Year
    level: Level | None = Field(default=None, description="the contest's level (an optional field added in v1)")


@registry.register
class ProjectShortlisted(DomainEvent):
    event_type = "ProjectShortlisted"
    topic = "volunteer.project"
    project_id: UUID
    contest: Code
    year: Year


@registry.register
class ProjectAwarded(DomainEvent):
    event_type = "ProjectAwarded"
    topic = "volunteer.project"
    project_id: UUID
    contest: Code
    year: Year
    prize: Name


# --- honours -----------------------------------------------------------------------------------


@registry.register
class NominationSubmitted(DomainEvent):
    event_type = "NominationSubmitted"
    topic = "volunteer.honour"
    nomination_id: UUID
    honour: HonourKind
    nominee: Name
    grid_path: GridPath
    year: Year
    deeds: ShortText


@registry.register
class NominationEndorsed(DomainEvent):
    event_type = "NominationEndorsed"
    topic = "volunteer.honour"
    nomination_id: UUID
    endorsed_by: Code
    note: str = Field(default="", max_length=2000)


@registry.register
class HonourAwarded(DomainEvent):
    event_type = "HonourAwarded"
    topic = "volunteer.honour"
    nomination_id: UUID
    honour: HonourKind
    level: Level
    year: Year


# --- village civility points -------------------------------------------------------------------


@registry.register
class HouseholdEnrolled(DomainEvent):
    """A household joins the village civility points scheme (乡风文明积分)."""

    event_type = "HouseholdEnrolled"
    topic = "volunteer.points"
    household_id: Code
    grid_path: GridPath
    label: Name


@registry.register
class PointsAwarded(DomainEvent):
    event_type = "PointsAwarded"
    topic = "volunteer.points"
    household_id: Code
    points: Points
    rule: Code
    reason: ShortText
    rules_version: int = Field(ge=1)
    balance_after: int = Field(ge=0)


@registry.register
class PointsRedeemed(DomainEvent):
    event_type = "PointsRedeemed"
    topic = "volunteer.points"
    household_id: Code
    points: Points
    fund_id: Code
    yuan: int = Field(ge=0)
    item: Name
    reason: ShortText
    rules_version: int = Field(ge=1)
    balance_after: int = Field(ge=0)


@registry.register
class FundEstablished(DomainEvent):
    """The incentive fund (激励专项基金) of an area, from which redemptions are paid."""

    event_type = "FundEstablished"
    topic = "volunteer.points"
    fund_id: Code
    name: Name
    grid_path: GridPath


@registry.register
class FundContributed(DomainEvent):
    event_type = "FundContributed"
    topic = "volunteer.points"
    fund_id: Code
    yuan: int = Field(gt=0, le=10_000_000)
    donor: Name
    balance_after: int = Field(ge=0)


@registry.register
class FundDrawn(DomainEvent):
    """Money paid out of the fund for one household's redemption."""

    event_type = "FundDrawn"
    topic = "volunteer.points"
    fund_id: Code
    yuan: int = Field(ge=0)
    household_id: Code
    balance_after: int = Field(ge=0)


# --- creation titles -------------------------------------------------------------------------


@registry.register
class CreationTitleAwarded(DomainEvent):
    event_type = "CreationTitleAwarded"
    topic = "volunteer.title"
    title_id: Code
    category: CreationCategory
    holder: Name
    grid_path: GridPath
    level: Level
    year: Year


@registry.register
class CreationTitleReviewed(DomainEvent):
    """The periodic review (复查) of a title held at a level."""

    event_type = "CreationTitleReviewed"
    topic = "volunteer.title"
    title_id: Code
    level: Level
    passed: bool
    note: str = Field(default="", max_length=2000)
    year: Year


@registry.register
class CreationTitleRevoked(DomainEvent):
    event_type = "CreationTitleRevoked"
    topic = "volunteer.title"
    title_id: Code
    level: Level
    reason: ShortText
