"""The scoring rules, one by one: deductions, give-backs, overdue steps, recurrence, credits,
Asia/Shanghai day boundaries, late events, ranking, weekly summary, lists and metrics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import ClassVar
from uuid import UUID, uuid4

import pytest

from services.scoring.domain import Publication, PublishDay, decide_publication, evolve_publication
from services.scoring.rules import (
    DaySums,
    IssueFacts,
    ScoreItem,
    WeekLine,
    competition_rank,
    evolve_issue,
    iso_week,
    laggards,
    load_rules,
    long_term_metrics,
    parse_rules,
    percentile,
    rank_day,
    red_black,
    score_activity,
    score_event,
    week_days,
    weekly_summary,
)
from shared.events.envelope import DomainEvent, EventEnvelope
from shared.events.inspection import (
    AssignmentReturned,
    ExtensionGranted,
    ExtensionRequested,
    IssueAssigned,
    IssueBacklogged,
    IssueFound,
    IssueOverdue,
    IssueReopened,
    RectificationClosed,
    RectificationRejected,
    RectificationReported,
)
from shared.grid import GridPath

RULES = load_rules()
GRID = "changtai/wuan/c01/g03"
# 2026-03-02 is a Monday; 16:00 UTC is 00:00 the next day in Asia/Shanghai.
T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 09:00 Shanghai, Monday 2 March


def env(payload: DomainEvent, at: datetime, grid: str = GRID) -> EventEnvelope:
    return EventEnvelope(
        event_id=uuid4(),
        type=payload.event_type,
        schema_version=payload.schema_version,
        stream_id=f"issue-{getattr(payload, 'issue_id', 'x')}",
        stream_version=1,
        occurred_at=at,
        recorded_at=at,
        source="inspection-team-1",
        actor="张三",
        grid_path=grid,
        correlation_id=uuid4(),
        payload=payload.model_dump(mode="json"),
    )


def found(iid: UUID, at: datetime = T0, category: str = "sanitation", severity: str = "major") -> IssueFound:
    return IssueFound(
        issue_id=iid,
        grid_path=GRID,
        method="unannounced",
        category=category,
        case_type="event",
        severity=severity,  # type: ignore[arg-type]
        description="沿街垃圾未及时清运",
        found_at=at,
        standards_version=1,
        deadline_hours=24,
    )


def assigned(iid: UUID, unit: str = "urban-management", deadline: datetime | None = None) -> IssueAssigned:
    return IssueAssigned(issue_id=iid, responsible_unit=unit, owner="李四", deadline=deadline or T0 + timedelta(days=1))


def play(events: Sequence[tuple[DomainEvent, datetime]], grid: str = GRID) -> tuple[list[ScoreItem], IssueFacts | None]:
    facts: IssueFacts | None = None
    items: list[ScoreItem] = []
    for payload, at in events:
        e = env(payload, at, grid)
        items += score_event(RULES, facts, e, payload)
        facts = evolve_issue(facts, e, payload)
    return items, facts


def by(items: list[ScoreItem], level: str, subject: str) -> Decimal:
    return sum((i.points for i in items if i.level == level and i.subject == subject), Decimal(0))


def test_rules_file_loads_and_its_digest_follows_its_content():
    raw = RULES.model_dump(mode="json")
    assert RULES.base_points == 100
    assert parse_rules(raw).digest() == RULES.digest()
    raw["reopened"] = "4"
    assert parse_rules(raw).digest() != RULES.digest()


@pytest.mark.parametrize(
    ("category", "severity", "expected"),
    [
        ("sanitation", "major", 2),
        ("sanitation", "serious", 4),
        ("food-safety", "serious", 10),
        ("unlisted", "major", 3),
    ],
)
def test_an_issue_found_deducts_from_its_township_by_category_and_severity(category, severity, expected):
    iid = uuid4()
    items, _ = play([(found(iid, category=category, severity=severity), T0)])
    assert [(i.level, i.subject, i.rule, i.points, i.day) for i in items] == [
        ("township", "changtai/wuan", "issue_found", Decimal(-expected), date(2026, 3, 2))
    ]
    assert items[0].issue_id == iid


def test_the_campaign_day_turns_at_midnight_asia_shanghai_not_utc():
    last_second = datetime(2026, 3, 2, 15, 59, 59, tzinfo=UTC)  # 23:59:59 on 2 March in Shanghai
    midnight = datetime(2026, 3, 2, 16, 0, 0, tzinfo=UTC)  # 00:00:00 on 3 March in Shanghai
    early_utc = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)  # 1 March 24:30 UTC-wise is still 2 March 08:30 Shanghai
    days = [play([(found(uuid4(), at), at)])[0][0].day for at in (last_second, midnight, early_utc)]
    assert days == [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 2)]


def test_assignment_charges_the_unit_and_moving_it_refunds_the_first_unit():
    iid = uuid4()
    items, facts = play(
        [
            (found(iid), T0),
            (assigned(iid, "housing"), T0 + timedelta(hours=1)),
            (assigned(iid, "urban-management"), T0 + timedelta(hours=2)),
        ]
    )
    assert by(items, "unit", "housing") == 0
    assert by(items, "unit", "urban-management") == -2
    assert facts is not None and facts.charged_unit == "urban-management"
    # a returned assignment gives the unit its deduction back
    returned, _ = play(
        [
            (found(iid), T0),
            (assigned(iid, "housing"), T0),
            (AssignmentReturned(issue_id=iid, responsible_unit="housing", reason="不属本单位"), T0),
        ]
    )
    assert by(returned, "unit", "housing") == 0
    assert by(returned, "township", "changtai/wuan") == -2


def test_closing_by_the_deadline_gives_half_back_and_closing_late_gives_nothing():
    iid = uuid4()
    deadline = T0 + timedelta(days=1)
    closed = RectificationClosed(issue_id=iid, responsible_unit="urban-management", deadline=deadline, on_time=True)
    on_time, _ = play([(found(iid), T0), (assigned(iid), T0), (closed, T0 + timedelta(hours=5))])
    assert by(on_time, "township", "changtai/wuan") == Decimal("-1.00")
    assert by(on_time, "unit", "urban-management") == Decimal("-1.00")
    late = closed.model_copy(update={"on_time": False})
    items, facts = play([(found(iid), T0), (assigned(iid), T0), (late, T0 + timedelta(days=2))])
    assert by(items, "township", "changtai/wuan") == -2
    assert facts is not None and facts.on_time is False and facts.closed_at == T0 + timedelta(days=2)


def test_each_overdue_step_deducts_more_and_steps_beyond_the_table_repeat_its_last():
    iid = uuid4()
    events: list[tuple[DomainEvent, datetime]] = [(found(iid), T0), (assigned(iid), T0)]
    for step, level in enumerate(["community", "township", "district", "district"], start=1):
        overdue = IssueOverdue(
            issue_id=iid,
            responsible_unit="urban-management",
            deadline=T0,
            step=step,
            escalation_level=level,  # type: ignore[arg-type]
            escalated_to="changtai",
        )
        events.append((overdue, T0 + timedelta(days=step)))
    items, facts = play(events)
    steps = [i.points for i in items if i.rule == "overdue_step" and i.level == "unit"]
    assert steps == [Decimal(-2), Decimal(-3), Decimal(-5), Decimal(-5)]
    assert [i.day for i in items if i.rule == "overdue_step" and i.level == "township"] == [
        date(2026, 3, 3),
        date(2026, 3, 4),
        date(2026, 3, 5),
        date(2026, 3, 6),
    ]
    assert facts is not None and facts.overdue_steps == 4


def test_a_reopened_issue_deducts_extra_and_counts_as_recurrence_only_within_30_days():
    iid = uuid4()
    close = RectificationClosed(issue_id=iid, responsible_unit="urban-management", deadline=T0, on_time=False)
    reopen = IssueReopened(issue_id=iid, reason="又有垃圾堆放")
    soon, facts = play([(found(iid), T0), (assigned(iid), T0), (close, T0), (reopen, T0 + timedelta(days=30))])
    assert [(i.level, i.points) for i in soon if i.rule == "reopened"] == [
        ("township", Decimal(-3)),
        ("unit", Decimal(-3)),
    ]
    assert facts is not None and facts.recurred_30d and facts.closed_at is None and facts.reopened == 1
    _, later = play([(found(iid), T0), (assigned(iid), T0), (close, T0), (reopen, T0 + timedelta(days=31))])
    assert later is not None and not later.recurred_30d


def test_rework_and_backlog_deduct_and_extensions_only_count_for_metrics():
    iid = uuid4()
    items, facts = play(
        [
            (found(iid, severity="minor"), T0),
            (assigned(iid), T0),
            (ExtensionRequested(issue_id=iid, requested_deadline=T0 + timedelta(days=3), reason="材料未到"), T0),
            (ExtensionGranted(issue_id=iid, previous_deadline=T0, new_deadline=T0 + timedelta(days=3)), T0),
            (
                RectificationReported(issue_id=iid, responsible_unit="urban-management", text="已清理", reported_at=T0),
                T0,
            ),
            (RectificationRejected(issue_id=iid, responsible_unit="urban-management", reason="仍有残留"), T0),
            (IssueBacklogged(issue_id=iid, responsible_unit=None, reason="需立项改造"), T0),
        ]
    )
    assert by(items, "unit", "urban-management") == Decimal(-1 - 1 - 2)
    assert by(items, "township", "changtai/wuan") == Decimal(-1 - 1 - 2)
    assert {i.rule for i in items} == {"issue_found", "issue_assigned", "rectification_rejected", "backlogged"}
    assert facts is not None
    assert (facts.extension_requested, facts.extensions_granted, facts.reported, facts.rejected) == (True, 1, 1, 1)
    assert facts.deadline == T0 + timedelta(days=3)


class _Held(DomainEvent):
    """Stands in for the volunteer context's ActivityHeld (the rules read only its grid path)."""

    event_type: ClassVar[str] = "ActivityHeld"
    topic: ClassVar[str] = "volunteer.activity"
    grid_path: GridPath


def test_a_volunteer_activity_credits_its_township_on_its_day():
    payload = _Held(grid_path="changtai/yanxi/c02")
    at = datetime(2026, 3, 3, 17, 0, tzinfo=UTC)  # 01:00 on 4 March in Shanghai
    items = score_activity(RULES, env(payload, at, "changtai/yanxi/c02"), payload)
    assert [(i.subject, i.points, i.day) for i in items] == [("changtai/yanxi", Decimal(1), date(2026, 3, 4))]


def test_a_late_event_lands_on_its_own_day_and_changes_that_days_score():
    iid = uuid4()
    on_day = [(found(uuid4()), T0)]
    items, _ = play(on_day)
    sums = {"changtai/wuan": DaySums(sum((i.points for i in items), Decimal(0)), Decimal(0), len(items))}
    before = {s.subject: s.score for s in rank_day(RULES, date(2026, 3, 2), "township", sums)}
    # found on Monday 23:30 Shanghai, recorded three days later
    late_at = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
    late = env(found(iid, late_at, severity="serious"), late_at)
    late = late.model_copy(update={"recorded_at": late_at + timedelta(days=3)})
    late_items = score_event(RULES, None, late, found(iid, late_at, severity="serious"))
    assert late_items[0].day == date(2026, 3, 2)
    items += late_items
    sums = {"changtai/wuan": DaySums(sum((i.points for i in items), Decimal(0)), Decimal(0), len(items))}
    after = {s.subject: s.score for s in rank_day(RULES, date(2026, 3, 2), "township", sums)}
    assert before["changtai/wuan"] == 98 and after["changtai/wuan"] == 94


def test_ranking_starts_everyone_at_the_base_and_ties_share_a_rank():
    sums = {"a": DaySums(Decimal(-3), Decimal(1), 2), "b": DaySums(Decimal(-2), Decimal(0), 1), "c": DaySums()}
    rows = rank_day(RULES, date(2026, 3, 2), "township", sums, ["a", "b", "c", "d"])
    assert [(r.subject, r.score, r.rank) for r in rows] == [
        ("c", 100, 1),
        ("d", 100, 1),
        ("a", 98, 3),
        ("b", 98, 3),
    ]
    assert competition_rank([("x", Decimal(5)), ("y", Decimal(7))], descending=False)[0] == ("x", Decimal(5), 1)


def test_explanation_item_by_item_adds_up_to_the_score():
    iid = uuid4()
    closed = RectificationClosed(issue_id=iid, responsible_unit="urban-management", deadline=T0, on_time=True)
    items, _ = play([(found(iid, severity="serious"), T0), (assigned(iid), T0), (closed, T0 + timedelta(hours=3))])
    town = [i for i in items if i.subject == "changtai/wuan"]
    assert [(i.rule, i.points) for i in town] == [("issue_found", Decimal(-4)), ("closed_on_time", Decimal(2))]
    assert all(i.reason for i in town)
    rows = rank_day(RULES, date(2026, 3, 2), "township", {"changtai/wuan": DaySums(Decimal(-4), Decimal(2), 2)})
    assert rows[0].score == RULES.base_points + sum(i.points for i in town) == 98


def test_weekly_summary_averages_seven_days_with_missing_days_at_the_base():
    week = "2026-W10"
    days = week_days(week)
    assert days[0] == date(2026, 3, 2) and iso_week(days[6]) == week and len(days) == 7
    prev_monday = days[0] - timedelta(days=7)
    daily = {
        "a": {days[0]: Decimal(93), days[3]: Decimal(100)},  # week: (93 + 6*100)/7 = 99.00
        "b": {days[1]: Decimal(86), prev_monday: Decimal(93)},  # week 98.00, last week 99.00
    }
    lines = {w.subject: w for w in weekly_summary(RULES, "township", week, daily, ["c"])}
    assert lines["a"].average == Decimal("99.00") and lines["a"].trend == Decimal("-1.00")
    assert lines["b"].average == Decimal("98.00") and lines["b"].trend == Decimal("-1.00")
    assert (lines["a"].worst_day, lines["a"].worst_score) == (days[0], 93)
    assert (lines["b"].best_day, lines["b"].best_score) == (days[0], 100)
    assert [lines[s].rank for s in "cab"] == [1, 2, 3]


def test_laggards_are_the_bottom_that_lost_points_with_their_costliest_issues():
    i1, i2, i3 = uuid4(), uuid4(), uuid4()
    d = date(2026, 3, 2)
    lines = [
        WeekLine("township", "a", Decimal(97), Decimal(0), d, Decimal(100), d, Decimal(90), 1),
        WeekLine("township", "b", Decimal(95), Decimal(0), d, Decimal(100), d, Decimal(80), 2),
        WeekLine("township", "c", Decimal(100), Decimal(0), d, Decimal(100), d, Decimal(100), 3),
    ]
    lost = {"b": {i1: Decimal(-2), i2: Decimal(-8), i3: Decimal(-5)}, "a": {i1: Decimal(-3)}}
    out = laggards(RULES, lines, lost)
    assert [(x.subject, x.issues) for x in out] == [("b", [i2, i3, i1]), ("a", [i1])]


def test_red_and_black_lists_take_the_best_at_100_and_the_worst_below_95():
    scores = [("a", Decimal(100)), ("b", Decimal(94)), ("c", Decimal(99)), ("d", Decimal(90)), ("e", Decimal(100))]
    red, black = red_black(RULES, scores)
    assert red == [("a", 100), ("e", 100)]
    assert black == [("d", 90), ("b", 94)]


def test_percentiles_interpolate_like_postgres_percentile_cont():
    assert percentile([], 0.5) is None
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile([float(x) for x in range(1, 11)], 0.9) == pytest.approx(9.1)


def test_long_term_metrics_from_issue_facts():
    def f(**kw: object) -> IssueFacts:
        return IssueFacts(issue_id=uuid4(), grid_path=GRID, township="changtai/wuan", found_at=T0, **kw)  # type: ignore[arg-type]

    facts = [
        f(closed_at=T0 + timedelta(hours=10), last_closed_at=T0 + timedelta(hours=10), on_time=True, reported=1),
        f(
            closed_at=T0 + timedelta(hours=30),
            last_closed_at=T0 + timedelta(hours=30),
            on_time=False,
            reported=2,
            rejected=1,
            overdue_steps=1,
        ),
        f(last_closed_at=T0, reopened=1, recurred_30d=True, extension_requested=True),
        f(backlogged_at=T0, overdue_steps=2),
    ]
    m = long_term_metrics(GRID, 2000, facts)
    assert (m.issues, m.issues_per_1000, m.closed, m.closure_rate, m.on_time_closure_rate) == (4, 2.0, 2, 0.5, 0.5)
    assert (m.rework_rate, m.extension_rate, m.backlog, m.overdue) == (round(1 / 3, 4), 0.25, 1, 2)
    assert (m.median_hours_to_close, m.p90_hours_to_close) == (20.0, 28.0)
    assert m.recurrence_rate_30d == round(1 / 3, 4)


def test_publishing_the_same_day_twice_is_a_no_op_and_a_change_is_a_new_revision():
    cmd = PublishDay(date(2026, 3, 2), 1, [], [], [])
    first = decide_publication(cmd, Publication())
    assert [e.event_type for e in first] == ["DailyScoresPublished", "RedBlackListPublished"]
    state = evolve_publication(Publication(), first[0])
    assert decide_publication(cmd, state) == []
    from shared.events.scoring import ListEntry

    changed = PublishDay(date(2026, 3, 2), 1, [], [], [ListEntry(level="township", subject="x", name="x", score=90)])
    again = decide_publication(changed, state)
    assert [getattr(e, "revision", None) for e in again] == [2, 2]
