"""Events of the inspection context: inspections, issues and their closed loop, the standards table."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from shared.events.envelope import DomainEvent, EventEnvelope
from shared.events.registry import registry
from shared.grid import GridPath

InspectionMethod = Literal["unannounced", "routine", "self_check", "public_report"]
"""unannounced = 五不两直 (no notice, no escort, straight to the site)."""
CaseType = Literal["component", "event"]
"""component = 部件 (a bin, a manhole cover, a sign); event = 事件 (litter, a stall, a poster)."""
Severity = Literal["minor", "major", "serious"]
PhotoRef = Annotated[str, StringConstraints(min_length=1, max_length=500)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Code = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
MAX_PHOTOS = 10


class SeverityStandard(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    deadline_hours: int = Field(gt=0, le=24 * 90)
    description: str = ""


class CategoryStandard(BaseModel):
    """One row of 一图一标准: what the category is, how grave each severity, how long to fix."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    code: Code
    name: str
    name_en: str
    case_type: CaseType
    standard: str = ""
    severities: dict[Severity, SeverityStandard]


@registry.register
class StandardsTableAdopted(DomainEvent):
    event_type = "StandardsTableAdopted"
    topic = "inspection.standards"
    table_version: int = Field(ge=1)
    categories: list[CategoryStandard]


@registry.register
class InspectionConducted(DomainEvent):
    event_type = "InspectionConducted"
    topic = "inspection.inspection"
    inspection_id: UUID
    team: Code
    method: InspectionMethod
    area: GridPath
    started_at: AwareDatetime
    finished_at: AwareDatetime
    inspectors: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = Field(max_length=50)
    notes: str = Field(default="", max_length=4000)


@registry.register
class IssueFound(DomainEvent):
    """An issue found on a grid and put on the day's problem list.

    v2 added `grid_path` (before, only the envelope carried it)."""

    event_type = "IssueFound"
    schema_version = 2
    topic = "inspection.issue"
    issue_id: UUID
    grid_path: GridPath
    inspection_id: UUID | None = None
    method: InspectionMethod
    category: Code
    case_type: CaseType
    severity: Severity
    description: ShortText
    location: str | None = Field(default=None, max_length=500)
    photos: list[PhotoRef] = Field(default_factory=list, max_length=MAX_PHOTOS)
    found_at: AwareDatetime
    standards_version: int = Field(ge=1)
    deadline_hours: int = Field(gt=0, description="default deadline from the standards table")
    public_report_id: str | None = Field(default=None, max_length=100, description="set for Open311 reports")


@registry.register
class IssueAssigned(DomainEvent):
    """立即整改、专人跟踪、限期反馈: a responsible unit, one named owner, a deadline."""

    event_type = "IssueAssigned"
    topic = "inspection.issue"
    issue_id: UUID
    responsible_unit: Code
    owner: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    deadline: AwareDatetime
    rerouted: bool = False


@registry.register
class AssignmentReturned(DomainEvent):
    """The unit says the issue is not its remit; the office re-routes it."""

    event_type = "AssignmentReturned"
    topic = "inspection.issue"
    issue_id: UUID
    responsible_unit: Code
    reason: ShortText


@registry.register
class ExtensionRequested(DomainEvent):
    event_type = "ExtensionRequested"
    topic = "inspection.issue"
    issue_id: UUID
    requested_deadline: AwareDatetime
    reason: ShortText


@registry.register
class ExtensionGranted(DomainEvent):
    event_type = "ExtensionGranted"
    topic = "inspection.issue"
    issue_id: UUID
    previous_deadline: AwareDatetime
    new_deadline: AwareDatetime


@registry.register
class ExtensionRefused(DomainEvent):
    event_type = "ExtensionRefused"
    topic = "inspection.issue"
    issue_id: UUID
    reason: ShortText


@registry.register
class RectificationReported(DomainEvent):
    """The responsible unit reports back with evidence. v2 added `reported_at`."""

    event_type = "RectificationReported"
    schema_version = 2
    topic = "inspection.issue"
    issue_id: UUID
    responsible_unit: Code
    text: ShortText
    photos: list[PhotoRef] = Field(default_factory=list, max_length=MAX_PHOTOS)
    reported_at: AwareDatetime


@registry.register
class RectificationRejected(DomainEvent):
    """Verification failed: back to in-progress with the reason."""

    event_type = "RectificationRejected"
    topic = "inspection.issue"
    issue_id: UUID
    responsible_unit: Code
    reason: ShortText


@registry.register
class RectificationClosed(DomainEvent):
    """Verified and closed as fixed."""

    event_type = "RectificationClosed"
    topic = "inspection.issue"
    issue_id: UUID
    responsible_unit: Code
    deadline: AwareDatetime
    on_time: bool
    note: str = Field(default="", max_length=2000)


@registry.register
class IssueBacklogged(DomainEvent):
    """挂账: closed because it cannot be fixed in time; never counted as fixed."""

    event_type = "IssueBacklogged"
    topic = "inspection.issue"
    issue_id: UUID
    responsible_unit: Code | None
    reason: ShortText


@registry.register
class IssueOverdue(DomainEvent):
    """The deadline passed unclosed; each step escalates one grid level up."""

    event_type = "IssueOverdue"
    topic = "inspection.issue"
    issue_id: UUID
    responsible_unit: Code
    deadline: AwareDatetime
    step: int = Field(ge=1, description="1 for the first deadline passed, 2 for the next, …")
    escalation_level: Literal["community", "township", "district"]
    escalated_to: GridPath


@registry.register
class IssueReopened(DomainEvent):
    """The issue recurred after closing (recurrence)."""

    event_type = "IssueReopened"
    topic = "inspection.issue"
    issue_id: UUID
    reason: ShortText


class IssueReport(BaseModel):
    """An issue found, as a department reports it (HTTP body, or a record on the inbound topic):
    where, what (a category of the standards table), how grave, and the evidence."""

    model_config = ConfigDict(extra="forbid")

    grid_path: GridPath
    category: Code
    severity: Severity
    description: ShortText
    found_at: AwareDatetime
    method: InspectionMethod = "unannounced"
    location: str | None = Field(default=None, max_length=500)
    photos: list[PhotoRef] = Field(default_factory=list, max_length=MAX_PHOTOS)
    inspection_id: UUID | None = None
    issue_id: UUID | None = Field(default=None, description="client-chosen id (optional)")


# ---------------------------------------------------------------- superseded versions and upcasters


@registry.register_old
class IssueFoundV1(DomainEvent):
    """IssueFound as first released: the grid path was only on the envelope."""

    event_type = "IssueFound"
    schema_version = 1
    topic = "inspection.issue"
    issue_id: UUID
    inspection_id: UUID | None = None
    method: InspectionMethod
    category: Code
    case_type: CaseType
    severity: Severity
    description: ShortText
    location: str | None = Field(default=None, max_length=500)
    photos: list[PhotoRef] = Field(default_factory=list, max_length=MAX_PHOTOS)
    found_at: AwareDatetime
    standards_version: int = Field(ge=1)
    deadline_hours: int = Field(gt=0)
    public_report_id: str | None = Field(default=None, max_length=100)


@registry.register_old
class RectificationReportedV1(DomainEvent):
    """RectificationReported as first released: the time was only the envelope's occurred_at."""

    event_type = "RectificationReported"
    schema_version = 1
    topic = "inspection.issue"
    issue_id: UUID
    responsible_unit: Code
    text: ShortText
    photos: list[PhotoRef] = Field(default_factory=list, max_length=MAX_PHOTOS)


@registry.upcaster("IssueFound", 1)
def _issue_found_v1_to_v2(payload: dict[str, Any], env: EventEnvelope) -> dict[str, Any]:
    return {"grid_path": env.grid_path, **payload}


@registry.upcaster("RectificationReported", 1)
def _rectification_reported_v1_to_v2(payload: dict[str, Any], env: EventEnvelope) -> dict[str, Any]:
    return {"reported_at": env.occurred_at.isoformat(), **payload}
