"""Every transition of the issue, inspection and standards deciders, including the refused ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from services.inspection.domain import (
    AdoptStandards,
    AssignIssue,
    BacklogIssue,
    DecideExtension,
    MarkOverdue,
    RecordInspection,
    ReopenIssue,
    ReportIssue,
    ReportRectification,
    RequestExtension,
    ReturnAssignment,
    VerifyRectification,
    escalation_target,
    inspection_decider,
    issue_decider,
    overdue_steps_due,
    standards_decider,
)
from services.inspection.standards import load_standards
from shared.decider import DomainError
from shared.events.inspection import (
    AssignmentReturned,
    ExtensionGranted,
    ExtensionRefused,
    IssueAssigned,
    IssueBacklogged,
    IssueFound,
    IssueOverdue,
    IssueReopened,
    RectificationClosed,
    RectificationRejected,
    RectificationReported,
)

T0 = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)  # 09:00 in Asia/Shanghai
STANDARDS = load_standards()
SANITATION = STANDARDS.category("sanitation")
GRID = "changtai/wuan/c01/g03"


def found(**kw):
    cmd = ReportIssue(
        issue_id=uuid4(),
        grid_path=GRID,
        method="unannounced",
        category=SANITATION,
        severity="minor",
        description="垃圾未清运",
        found_at=T0,
        standards_version=STANDARDS.version,
    )
    return issue_decider.fold(issue_decider.decide(cmd, issue_decider.initial))


def run(state, *cmds):
    events = []
    for c in cmds:
        new = issue_decider.decide(c, state)
        events += new
        state = issue_decider.fold(new, state)
    return state, events


ASSIGN = AssignIssue("urban-management", "李四", T0 + timedelta(hours=24), T0)
REPORT = ReportRectification("urban-management", "已清运", ("photo://fix.jpg",), T0 + timedelta(hours=5))


def test_report_issue_takes_the_deadline_from_the_standards_table():
    cmd = ReportIssue(
        issue_id=uuid4(),
        grid_path=GRID,
        method="unannounced",
        category=SANITATION,
        severity="serious",
        description="大面积脏乱",
        found_at=T0,
        standards_version=1,
    )
    [e] = issue_decider.decide(cmd, issue_decider.initial)
    assert isinstance(e, IssueFound)
    assert e.deadline_hours == 4 and e.case_type == "event" and e.grid_path == GRID
    with pytest.raises(DomainError, match="already exists"):
        issue_decider.decide(cmd, issue_decider.fold([e]))


def test_full_loop_found_assigned_reported_rejected_reported_closed():
    s, events = run(
        found(),
        ASSIGN,
        REPORT,
        VerifyRectification(False, "仍有垃圾", T0 + timedelta(hours=6)),
        ReportRectification("urban-management", "已彻底清理", (), T0 + timedelta(hours=8)),
        VerifyRectification(True, "", T0 + timedelta(hours=9)),
    )
    assert [type(e) for e in events] == [
        IssueAssigned,
        RectificationReported,
        RectificationRejected,
        RectificationReported,
        RectificationClosed,
    ]
    assert s.status == "closed" and s.rejections == 1
    assert events[-1].on_time is True


def test_closing_late_is_not_on_time():
    _, events = run(
        found(),
        ASSIGN,
        ReportRectification("urban-management", "已清运", (), T0 + timedelta(hours=30)),
        VerifyRectification(True, "", T0 + timedelta(hours=31)),
    )
    assert events[-1].on_time is False


@pytest.mark.parametrize(
    "cmd, why",
    [
        (VerifyRectification(True, "", T0), "nothing to verify: the issue is found"),
        (
            ReportRectification("urban-management", "x", (), T0),
            "cannot report a rectification on an issue that is found",
        ),
        (ReturnAssignment("urban-management", "不归我管", T0), "only an assigned issue can be returned"),
        (RequestExtension("urban-management", T0 + timedelta(days=3), "x", T0), "needs an assigned issue"),
        (DecideExtension(True, "", T0), "no extension request is pending"),
        (ReopenIssue("复发", T0), "only a closed issue can be reopened"),
        (MarkOverdue(1, T0 + timedelta(days=5)), "not due"),
    ],
)
def test_refused_on_an_unassigned_issue(cmd, why):
    with pytest.raises(DomainError, match=why):
        issue_decider.decide(cmd, found())


def test_nothing_but_reopen_on_a_closed_issue():
    s, _ = run(found(), ASSIGN, REPORT, VerifyRectification(True, "", T0 + timedelta(hours=6)))
    with pytest.raises(DomainError, match="cannot report a rectification on an issue that is closed"):
        issue_decider.decide(REPORT, s)
    with pytest.raises(DomainError, match="cannot assign"):
        issue_decider.decide(ASSIGN, s)
    with pytest.raises(DomainError, match="cannot backlog"):
        issue_decider.decide(BacklogIssue("x", T0), s)
    s2, [e] = run(s, ReopenIssue("同一位置再次出现垃圾", T0 + timedelta(days=2)))
    assert isinstance(e, IssueReopened) and s2.status == "found" and s2.reopened == 1


def test_assign_refuses_a_past_deadline_and_reassigning():
    with pytest.raises(DomainError, match="deadline must be in the future"):
        issue_decider.decide(AssignIssue("housing", "王五", T0 - timedelta(hours=1), T0), found())
    s, _ = run(found(), ASSIGN)
    with pytest.raises(DomainError, match="cannot assign an issue that is assigned"):
        issue_decider.decide(ASSIGN, s)


def test_return_and_reroute():
    s, _ = run(found(), ASSIGN)
    with pytest.raises(DomainError, match="not the responsible unit"):
        issue_decider.decide(ReturnAssignment("housing", "x", T0), s)
    s, [ret] = run(s, ReturnAssignment("urban-management", "属住建部门职责", T0))
    assert isinstance(ret, AssignmentReturned) and s.status == "returned"
    with pytest.raises(DomainError, match="returned this issue"):
        issue_decider.decide(AssignIssue("urban-management", "李四", T0 + timedelta(days=1), T0), s)
    s, [re] = run(s, AssignIssue("housing", "王五", T0 + timedelta(days=1), T0))
    assert isinstance(re, IssueAssigned) and re.rerouted and s.responsible_unit == "housing"


def test_extension_granted_moves_the_deadline_and_refused_does_not():
    s, _ = run(found(), ASSIGN)
    later = T0 + timedelta(days=3)
    with pytest.raises(DomainError, match="later than the current one"):
        issue_decider.decide(RequestExtension("urban-management", T0, "x", T0), s)
    s, _ = run(s, RequestExtension("urban-management", later, "需采购配件", T0))
    with pytest.raises(DomainError, match="already pending"):
        issue_decider.decide(RequestExtension("urban-management", later, "again", T0), s)
    granted, [g] = run(s, DecideExtension(True, "", T0))
    assert isinstance(g, ExtensionGranted) and granted.deadline == later
    refused, [r] = run(s, DecideExtension(False, "理由不充分", T0))
    assert isinstance(r, ExtensionRefused) and refused.deadline == ASSIGN.deadline


def test_backlog_closes_without_counting_as_fixed():
    s, [e] = run(run(found(), ASSIGN)[0], BacklogIssue("需纳入旧改项目", T0 + timedelta(hours=3)))
    assert isinstance(e, IssueBacklogged) and s.status == "backlogged"
    with pytest.raises(DomainError):
        issue_decider.decide(VerifyRectification(True, "", T0), s)


def test_overdue_steps_escalate_one_level_up_each_day():
    s, _ = run(found(), ASSIGN)
    deadline = ASSIGN.deadline
    assert overdue_steps_due(s, deadline) == 0
    assert overdue_steps_due(s, deadline + timedelta(minutes=1)) == 1
    with pytest.raises(DomainError, match="not next"):
        issue_decider.decide(MarkOverdue(2, deadline + timedelta(days=2)), s)
    s, [o1] = run(s, MarkOverdue(1, deadline + timedelta(minutes=1)))
    assert isinstance(o1, IssueOverdue) and (o1.escalation_level, o1.escalated_to) == ("community", "changtai/wuan/c01")
    with pytest.raises(DomainError, match="not due"):
        issue_decider.decide(MarkOverdue(2, deadline + timedelta(hours=2)), s)
    s, [o2] = run(s, MarkOverdue(2, deadline + timedelta(hours=25)))
    s, [o3] = run(s, MarkOverdue(3, deadline + timedelta(hours=49)))
    assert (o2.escalation_level, o3.escalation_level) == ("township", "district")
    assert o3.escalated_to == "changtai"
    assert overdue_steps_due(s, deadline + timedelta(days=30)) == 3  # capped at the district
    with pytest.raises(DomainError):
        issue_decider.decide(MarkOverdue(4, deadline + timedelta(days=30)), s)
    _, [_, c] = run(s, REPORT, VerifyRectification(True, "", deadline + timedelta(days=3)))
    assert isinstance(c, RectificationClosed) and c.on_time is False


def test_escalation_target_from_a_community_level_issue():
    assert escalation_target("changtai/wuan/c01", 1) == ("changtai/wuan", "township")
    assert escalation_target("changtai/wuan/c01", 3) == ("changtai", "district")


def test_inspection_recorded_once_and_not_backwards():
    iid = uuid4()
    cmd = RecordInspection(
        iid, "inspection-team-1", "unannounced", "changtai/wuan", T0, T0 + timedelta(hours=2), ("张三", "赵六")
    )
    [e] = inspection_decider.decide(cmd, inspection_decider.initial)
    with pytest.raises(DomainError, match="already recorded"):
        inspection_decider.decide(cmd, inspection_decider.fold([e]))
    with pytest.raises(DomainError, match="cannot finish before"):
        inspection_decider.decide(
            RecordInspection(uuid4(), "t", "routine", "changtai", T0, T0 - timedelta(hours=1), ()),
            inspection_decider.initial,
        )


def test_standards_table_changes_are_events_and_only_move_forward():
    cats = tuple(STANDARDS.categories.values())
    [e] = standards_decider.decide(AdoptStandards(1, cats), standards_decider.initial)
    s = standards_decider.fold([e])
    assert standards_decider.decide(AdoptStandards(1, cats), s) == []  # already in force
    with pytest.raises(DomainError, match="not newer"):
        standards_decider.decide(AdoptStandards(1, cats[:2]), s)
    [e2] = standards_decider.decide(AdoptStandards(2, cats[:2]), s)
    assert e2.table_version == 2
