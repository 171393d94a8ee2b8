"""The inspection context's deciders: pure rules of the closed loop (闭环).

An issue goes found → assigned (unit, named owner, deadline) → rectification reported →
closed after verification, or rejected back to in progress; it may be returned by a unit that
is not responsible and re-routed, given a deadline extension, closed as backlogged (挂账, never
counted as fixed), marked overdue once per escalation step, and reopened if it recurs.
No I/O, no clock: time comes in with each command.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from shared.decider import Decider, DomainError
from shared.events.envelope import DomainEvent
from shared.events.inspection import (
    AssignmentReturned,
    CaseType,
    CategoryStandard,
    ExtensionGranted,
    ExtensionRefused,
    ExtensionRequested,
    InspectionConducted,
    InspectionMethod,
    IssueAssigned,
    IssueBacklogged,
    IssueFound,
    IssueOverdue,
    IssueReopened,
    RectificationClosed,
    RectificationRejected,
    RectificationReported,
    Severity,
    StandardsTableAdopted,
)
from shared.grid import level_of, parent_of

IssueStatus = Literal["none", "found", "assigned", "reported", "returned", "closed", "backlogged"]
OPEN_STATUSES: frozenset[str] = frozenset({"found", "assigned", "reported", "returned"})
ESCALATION_INTERVAL = timedelta(hours=24)
"""After the deadline, one more escalation step per interval while the issue stays open."""
MAX_OVERDUE_STEPS = 3


# ---------------------------------------------------------------- issue


@dataclass(frozen=True)
class IssueState:
    status: IssueStatus = "none"
    issue_id: UUID | None = None
    grid_path: str = ""
    category: str = ""
    severity: str = ""
    found_at: datetime | None = None
    responsible_unit: str | None = None
    owner: str | None = None
    deadline: datetime | None = None
    reported_at: datetime | None = None
    overdue_steps: int = 0
    extension_requested: datetime | None = None
    rejections: int = 0
    reopened: int = 0
    returned_by: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ReportIssue:
    issue_id: UUID
    grid_path: str
    method: InspectionMethod
    category: CategoryStandard
    severity: Severity
    description: str
    found_at: datetime
    standards_version: int
    location: str | None = None
    photos: tuple[str, ...] = ()
    inspection_id: UUID | None = None
    public_report_id: str | None = None


@dataclass(frozen=True)
class AssignIssue:
    responsible_unit: str
    owner: str
    deadline: datetime
    at: datetime


@dataclass(frozen=True)
class ReturnAssignment:
    unit: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class RequestExtension:
    unit: str
    requested_deadline: datetime
    reason: str
    at: datetime


@dataclass(frozen=True)
class DecideExtension:
    grant: bool
    reason: str
    at: datetime


@dataclass(frozen=True)
class ReportRectification:
    unit: str
    text: str
    photos: tuple[str, ...]
    at: datetime


@dataclass(frozen=True)
class VerifyRectification:
    accept: bool
    reason: str
    at: datetime


@dataclass(frozen=True)
class BacklogIssue:
    reason: str
    at: datetime


@dataclass(frozen=True)
class MarkOverdue:
    step: int
    at: datetime


@dataclass(frozen=True)
class ReopenIssue:
    reason: str
    at: datetime


IssueCommand = (
    ReportIssue
    | AssignIssue
    | ReturnAssignment
    | RequestExtension
    | DecideExtension
    | ReportRectification
    | VerifyRectification
    | BacklogIssue
    | MarkOverdue
    | ReopenIssue
)


def escalation_target(grid_path: str, step: int) -> tuple[str, Literal["community", "township", "district"]]:
    """Step n goes n grid levels up from the issue's node, but never above the district."""
    target = grid_path
    for _ in range(step):
        up = parent_of(target)
        if up is None:
            break
        target = up
    level = {1: "district", 2: "township", 3: "community"}.get(int(level_of(target)), "community")
    return target, level  # type: ignore[return-value]


def overdue_steps_due(state: IssueState, now: datetime) -> int:
    """How many escalation steps are due at `now` for an open issue (0 if none)."""
    if state.status not in ("assigned", "returned") or state.deadline is None or now <= state.deadline:
        return 0
    return min(MAX_OVERDUE_STEPS, 1 + int((now - state.deadline) / ESCALATION_INTERVAL))


def _require(cond: bool, why: str) -> None:
    if not cond:
        raise DomainError(why)


def decide_issue(cmd: IssueCommand, s: IssueState) -> list[DomainEvent]:
    iid = s.issue_id
    if isinstance(cmd, ReportIssue):
        _require(s.status == "none", "issue already exists")
        sev = cmd.category.severities.get(cmd.severity)
        _require(sev is not None, f"category {cmd.category.code} has no severity {cmd.severity}")
        assert sev is not None
        case_type: CaseType = cmd.category.case_type
        return [
            IssueFound(
                issue_id=cmd.issue_id,
                grid_path=cmd.grid_path,
                inspection_id=cmd.inspection_id,
                method=cmd.method,
                category=cmd.category.code,
                case_type=case_type,
                severity=cmd.severity,
                description=cmd.description,
                location=cmd.location,
                photos=list(cmd.photos),
                found_at=cmd.found_at,
                standards_version=cmd.standards_version,
                deadline_hours=sev.deadline_hours,
                public_report_id=cmd.public_report_id,
            )
        ]
    _require(s.status != "none", "no such issue")
    assert iid is not None
    if isinstance(cmd, AssignIssue):
        _require(
            s.status in ("found", "returned"),
            f"cannot assign an issue that is {s.status}"
            + (" (re-route it only after a return)" if s.status == "assigned" else ""),
        )
        _require(cmd.deadline > cmd.at, "deadline must be in the future")
        _require(
            cmd.responsible_unit not in s.returned_by or s.status != "returned",
            f"{cmd.responsible_unit} returned this issue as not its remit; route it elsewhere",
        )
        return [
            IssueAssigned(
                issue_id=iid,
                responsible_unit=cmd.responsible_unit,
                owner=cmd.owner,
                deadline=cmd.deadline,
                rerouted=s.status == "returned",
            )
        ]
    if isinstance(cmd, ReturnAssignment):
        _require(s.status == "assigned", f"only an assigned issue can be returned; it is {s.status}")
        _require(cmd.unit == s.responsible_unit, f"{cmd.unit} is not the responsible unit")
        return [AssignmentReturned(issue_id=iid, responsible_unit=cmd.unit, reason=cmd.reason)]
    if isinstance(cmd, RequestExtension):
        _require(s.status == "assigned", f"an extension needs an assigned issue; it is {s.status}")
        _require(cmd.unit == s.responsible_unit, f"{cmd.unit} is not the responsible unit")
        _require(s.extension_requested is None, "an extension request is already pending")
        assert s.deadline is not None
        _require(cmd.requested_deadline > s.deadline, "requested deadline must be later than the current one")
        return [ExtensionRequested(issue_id=iid, requested_deadline=cmd.requested_deadline, reason=cmd.reason)]
    if isinstance(cmd, DecideExtension):
        _require(s.extension_requested is not None, "no extension request is pending")
        _require(s.status == "assigned", f"an extension is decided on an assigned issue; it is {s.status}")
        assert s.extension_requested is not None and s.deadline is not None
        if cmd.grant:
            return [ExtensionGranted(issue_id=iid, previous_deadline=s.deadline, new_deadline=s.extension_requested)]
        _require(bool(cmd.reason.strip()), "a refusal needs a reason")
        return [ExtensionRefused(issue_id=iid, reason=cmd.reason)]
    if isinstance(cmd, ReportRectification):
        _require(s.status == "assigned", f"cannot report a rectification on an issue that is {s.status}")
        _require(cmd.unit == s.responsible_unit, f"{cmd.unit} is not the responsible unit")
        return [
            RectificationReported(
                issue_id=iid, responsible_unit=cmd.unit, text=cmd.text, photos=list(cmd.photos), reported_at=cmd.at
            )
        ]
    if isinstance(cmd, VerifyRectification):
        _require(s.status == "reported", f"nothing to verify: the issue is {s.status}")
        assert s.responsible_unit is not None and s.deadline is not None and s.reported_at is not None
        if cmd.accept:
            return [
                RectificationClosed(
                    issue_id=iid,
                    responsible_unit=s.responsible_unit,
                    deadline=s.deadline,
                    on_time=s.reported_at <= s.deadline and s.overdue_steps == 0,
                    note=cmd.reason,
                )
            ]
        _require(bool(cmd.reason.strip()), "a rejection needs a reason")
        return [RectificationRejected(issue_id=iid, responsible_unit=s.responsible_unit, reason=cmd.reason)]
    if isinstance(cmd, BacklogIssue):
        _require(s.status in OPEN_STATUSES, f"cannot backlog an issue that is {s.status}")
        return [IssueBacklogged(issue_id=iid, responsible_unit=s.responsible_unit, reason=cmd.reason)]
    if isinstance(cmd, MarkOverdue):
        _require(cmd.step == s.overdue_steps + 1, f"overdue step {cmd.step} is not next (had {s.overdue_steps})")
        _require(overdue_steps_due(s, cmd.at) >= cmd.step, f"overdue step {cmd.step} is not due at {cmd.at}")
        assert s.deadline is not None and s.responsible_unit is not None
        target, level = escalation_target(s.grid_path, cmd.step)
        return [
            IssueOverdue(
                issue_id=iid,
                responsible_unit=s.responsible_unit,
                deadline=s.deadline,
                step=cmd.step,
                escalation_level=level,
                escalated_to=target,
            )
        ]
    if isinstance(cmd, ReopenIssue):
        _require(s.status in ("closed", "backlogged"), f"only a closed issue can be reopened; it is {s.status}")
        return [IssueReopened(issue_id=iid, reason=cmd.reason)]
    raise TypeError(f"unknown command {cmd!r}")


def evolve_issue(s: IssueState, e: DomainEvent) -> IssueState:
    if isinstance(e, IssueFound):
        return IssueState(
            status="found",
            issue_id=e.issue_id,
            grid_path=e.grid_path,
            category=e.category,
            severity=e.severity,
            found_at=e.found_at,
        )
    if isinstance(e, IssueAssigned):
        return replace(
            s,
            status="assigned",
            responsible_unit=e.responsible_unit,
            owner=e.owner,
            deadline=e.deadline,
            overdue_steps=0,
            extension_requested=None,
            reported_at=None,
        )
    if isinstance(e, AssignmentReturned):
        return replace(s, status="returned", returned_by=(*s.returned_by, e.responsible_unit), extension_requested=None)
    if isinstance(e, ExtensionRequested):
        return replace(s, extension_requested=e.requested_deadline)
    if isinstance(e, ExtensionGranted):
        return replace(s, deadline=e.new_deadline, extension_requested=None)
    if isinstance(e, ExtensionRefused):
        return replace(s, extension_requested=None)
    if isinstance(e, RectificationReported):
        return replace(s, status="reported", reported_at=e.reported_at, extension_requested=None)
    if isinstance(e, RectificationRejected):
        return replace(s, status="assigned", rejections=s.rejections + 1, reported_at=None)
    if isinstance(e, RectificationClosed):
        return replace(s, status="closed", extension_requested=None)
    if isinstance(e, IssueBacklogged):
        return replace(s, status="backlogged", extension_requested=None)
    if isinstance(e, IssueOverdue):
        return replace(s, overdue_steps=e.step)
    if isinstance(e, IssueReopened):
        return replace(
            s,
            status="found",
            reopened=s.reopened + 1,
            responsible_unit=None,
            owner=None,
            deadline=None,
            overdue_steps=0,
            returned_by=(),
        )
    return s


issue_decider: Decider[IssueCommand, IssueState] = Decider(IssueState(), decide_issue, evolve_issue)


def issue_stream(issue_id: UUID) -> str:
    return f"issue-{issue_id}"


# ---------------------------------------------------------------- inspection


@dataclass(frozen=True)
class InspectionState:
    exists: bool = False


@dataclass(frozen=True)
class RecordInspection:
    inspection_id: UUID
    team: str
    method: InspectionMethod
    area: str
    started_at: datetime
    finished_at: datetime
    inspectors: tuple[str, ...]
    notes: str = ""


def decide_inspection(cmd: RecordInspection, s: InspectionState) -> list[DomainEvent]:
    _require(not s.exists, "inspection already recorded")
    _require(cmd.finished_at >= cmd.started_at, "an inspection cannot finish before it started")
    return [
        InspectionConducted(
            inspection_id=cmd.inspection_id,
            team=cmd.team,
            method=cmd.method,
            area=cmd.area,
            started_at=cmd.started_at,
            finished_at=cmd.finished_at,
            inspectors=list(cmd.inspectors),
            notes=cmd.notes,
        )
    ]


def evolve_inspection(s: InspectionState, e: DomainEvent) -> InspectionState:
    return InspectionState(exists=True) if isinstance(e, InspectionConducted) else s


inspection_decider: Decider[RecordInspection, InspectionState] = Decider(
    InspectionState(), decide_inspection, evolve_inspection
)


# ---------------------------------------------------------------- standards table (一图一标准)


@dataclass(frozen=True)
class StandardsState:
    version: int = 0
    categories: tuple[CategoryStandard, ...] = ()


@dataclass(frozen=True)
class AdoptStandards:
    version: int
    categories: tuple[CategoryStandard, ...]


def decide_standards(cmd: AdoptStandards, s: StandardsState) -> list[DomainEvent]:
    if cmd.version == s.version and cmd.categories == s.categories:
        return []  # already in force
    _require(cmd.version > s.version, f"standards version {cmd.version} is not newer than {s.version}")
    codes = [c.code for c in cmd.categories]
    _require(len(codes) == len(set(codes)), "category codes must be unique")
    return [StandardsTableAdopted(table_version=cmd.version, categories=list(cmd.categories))]


def evolve_standards(s: StandardsState, e: DomainEvent) -> StandardsState:
    if isinstance(e, StandardsTableAdopted):
        return StandardsState(e.table_version, tuple(e.categories))
    return s


standards_decider: Decider[AdoptStandards, StandardsState] = Decider(
    StandardsState(), decide_standards, evolve_standards
)
STANDARDS_STREAM = "standards-table"
