"""Notify's pure rules: rule matching, quiet hours, templating, reminders, backoff."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from services.notify.domain import (
    Held,
    IssueFacts,
    Occurrence,
    Planned,
    QuietHours,
    Recipient,
    RetryPolicy,
    RuleBook,
    Subscription,
    compose_digest,
    default_rules,
    default_templates,
    delivery_id,
    digest_id,
    plan,
    quiet_until,
    release_at,
    reminder_occurrence,
    reminders_for,
    render,
)

NOW = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai
GRID = "changtai/wuan/c01/g03"

OWNER = Recipient(
    recipient_id="um-wang",
    name="王磊",
    grid_path="changtai/wuan/c01",
    role="owner",
    unit="urban-management",
    channels=["inbox", "email", "webhook"],
    email="wang@example.org",
    webhook_url="http://127.0.0.1:1/hook",
)
UNIT = Recipient(
    recipient_id="um-desk", name="城管局值班", grid_path="changtai", role="unit_contact", unit="urban-management"
)
OTHER_UNIT = Recipient(
    recipient_id="hs-desk", name="住建局值班", grid_path="changtai", role="unit_contact", unit="housing"
)
COMMUNITY_LEADER = Recipient(
    recipient_id="c01-leader", name="陈书记", grid_path="changtai/wuan/c01", role="leader", language="en"
)
TOWNSHIP_LEADER = Recipient(recipient_id="wuan-leader", name="林镇长", grid_path="changtai/wuan", role="leader")
DIRECTORY = [OWNER, UNIT, OTHER_UNIT, COMMUNITY_LEADER, TOWNSHIP_LEADER]


def issue(**kw: object) -> IssueFacts:
    base: dict[str, object] = dict(
        issue_id=uuid4(),
        grid_path=GRID,
        category="sanitation",
        severity="minor",
        description="沿街垃圾未及时清运",
        responsible_unit="urban-management",
        owner="王磊",
        deadline=NOW + timedelta(hours=24),
    )
    base.update(kw)
    return IssueFacts(**base)  # type: ignore[arg-type]


def occ(event_type: str, payload: dict[str, object], facts: IssueFacts | None = None) -> Occurrence:
    return Occurrence(uuid4(), event_type, GRID, NOW, payload, facts)


def who(planned: list[Planned]) -> set[tuple[str, str]]:
    return {(p.recipient_id, p.channel) for p in planned}


def run(o: Occurrence, directory=DIRECTORY, subs=(), now=NOW):
    return plan(default_rules(), default_templates(), o, directory, subs, now=now)


def test_assignment_reaches_the_owner_on_each_channel_and_their_unit_only():
    facts = issue()
    o = occ(
        "IssueAssigned",
        {"owner": "王磊", "responsible_unit": "urban-management", "deadline": facts.deadline.isoformat()},  # type: ignore[union-attr]
        facts,
    )
    assert who(run(o)) == {("um-wang", "inbox"), ("um-wang", "email"), ("um-wang", "webhook"), ("um-desk", "inbox")}


def test_owner_with_the_same_name_in_another_unit_is_not_told():
    namesake = OWNER.model_copy(update={"recipient_id": "hs-wang", "unit": "housing"})
    facts = issue()
    o = occ("IssueAssigned", {"owner": "王磊", "responsible_unit": "urban-management"}, facts)
    assert "hs-wang" not in {p.recipient_id for p in run(o, [*DIRECTORY, namesake])}


def test_overdue_step_one_tells_the_owner_and_the_community_leader_step_two_the_township_leader():
    facts = issue()
    one = occ(
        "IssueOverdue", {"step": 1, "escalated_to": "changtai/wuan/c01", "responsible_unit": "urban-management"}, facts
    )
    assert {p.recipient_id for p in run(one)} == {"um-wang", "c01-leader"}
    two = occ(
        "IssueOverdue", {"step": 2, "escalation_level": "township", "responsible_unit": "urban-management"}, facts
    )
    assert {p.recipient_id for p in run(two)} == {"um-wang", "wuan-leader"}
    assert all(p.urgent for p in run(two))


def test_rectification_rejected_tells_only_the_owner_with_the_reason():
    facts = issue()
    o = occ("RectificationRejected", {"responsible_unit": "urban-management", "reason": "垃圾仍有残留"}, facts)
    planned = run(o)
    assert {p.recipient_id for p in planned} == {"um-wang"}
    assert all("垃圾仍有残留" in p.body for p in planned)


def test_events_without_a_rule_tell_nobody_and_future_event_types_match_by_name():
    assert run(occ("IssueFound", {"category": "sanitation"}, issue())) == []
    scores = [
        {"level": "township", "subject": "changtai/wuan", "name": "武安镇", "score": 96.5, "rank": 3},
        {"level": "township", "subject": "changtai/yanxi", "name": "岩溪镇", "score": 98.0, "rank": 1},
        {"level": "unit", "subject": "urban-management", "name": "区城市管理局", "score": 91.0, "rank": 2},
    ]
    digest = Occurrence(
        uuid4(),
        "DailyScoresPublished",
        "changtai",
        NOW,
        {"day": "2026-11-24", "scores": scores},
        area_facts={"changtai/wuan": {"open_issues": 5, "overdue_issues": 2}},
    )
    planned = {p.recipient_id: p for p in run(digest)}
    assert set(planned) == {"wuan-leader", "um-desk"}
    assert planned["wuan-leader"].subject == "【每日评比】武安镇2026-11-24排名第3名"
    assert "未整改问题5个，其中超期2个" in planned["wuan-leader"].body
    assert "区城市管理局" in planned["um-desk"].subject and "第2名" in planned["um-desk"].subject


def test_the_daily_digest_waits_for_eight_oclock_local_time():
    scores = [{"level": "township", "subject": "changtai/wuan", "name": "武安镇", "score": 96.5, "rank": 3}]
    late = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)  # 22:00 local
    digest = Occurrence(uuid4(), "DailyScoresPublished", "changtai", late, {"day": "2026-11-24", "scores": scores})
    [p] = run(digest, now=late)
    assert p.not_before == datetime(2026, 11, 25, 0, 0, tzinfo=UTC)  # 08:00 the next morning
    [p] = run(digest, now=datetime(2026, 11, 24, 23, 30, tzinfo=UTC))  # 07:30 local
    assert p.not_before == datetime(2026, 11, 24, 23, 59, tzinfo=UTC) + timedelta(minutes=1)


def test_weekly_laggards_reach_their_leaders_and_planned_activities_their_sites_volunteers():
    laggards = [{"level": "township", "subject": "changtai/wuan", "name": "武安镇", "average": 88.2, "issues": []}]
    week = Occurrence(uuid4(), "WeeklySummaryPublished", "changtai", NOW, {"week": "2026-W48", "laggards": laggards})
    [p] = run(week)
    assert p.recipient_id == "wuan-leader" and "2026-W48" in p.subject and "88.2" in p.body
    volunteer = Recipient(
        recipient_id="vol-1", name="志愿者小林", grid_path="changtai/wuan/c01", role="volunteer", unit="wenquan-station"
    )
    other = volunteer.model_copy(update={"recipient_id": "vol-2", "unit": "yanxi-station"})
    activity = Occurrence(
        uuid4(),
        "ActivityPlanned",
        "changtai/wuan/c01",
        NOW,
        {"site_id": "wenquan-station", "title": "文明交通劝导", "starts_at": "2026-11-28T01:00:00+00:00"},
    )
    [p] = run(activity, [*DIRECTORY, volunteer, other])
    assert p.recipient_id == "vol-1"
    assert p.subject == "【志愿活动】文明交通劝导" and "2026-11-28 09:00" in p.body


def test_subscribers_hear_of_events_inside_their_area_only():
    facts = issue()
    o = occ("IssueAssigned", {"owner": "nobody", "responsible_unit": "transport"}, facts)
    subs = [
        Subscription("wuan-leader", "IssueAssigned", "changtai/wuan"),
        Subscription("c01-leader", "IssueAssigned", "changtai/yanxi"),
    ]
    assert {p.recipient_id for p in run(o, subs=subs)} == {"wuan-leader"}


def test_inactive_recipients_and_channels_without_an_address_are_skipped():
    no_email = OWNER.model_copy(update={"email": None})
    facts = issue()
    o = occ("IssueAssigned", {"owner": "王磊", "responsible_unit": "urban-management"}, facts)
    assert ("um-wang", "email") not in who(run(o, [no_email, UNIT]))
    assert run(o, [OWNER.model_copy(update={"active": False})]) == []


def test_delivery_ids_are_stable_per_event_recipient_and_channel():
    e = uuid4()
    assert delivery_id(e, "um-wang", "email") == delivery_id(e, "um-wang", "email")
    assert delivery_id(e, "um-wang", "email") != delivery_id(e, "um-wang", "webhook")
    o = occ("IssueAssigned", {"owner": "王磊", "responsible_unit": "urban-management"}, issue())
    assert {p.delivery_id for p in run(o)} == {p.delivery_id for p in run(o)}


def test_rules_refuse_an_unknown_selector():
    with pytest.raises(ValueError, match="unknown recipient selector"):
        RuleBook.model_validate(
            {"version": 1, "rules": [{"id": "x", "event": "IssueAssigned", "to": ["everyone"], "template": "t"}]}
        )


# --- quiet hours


QUIET = QuietHours(start="22:00", end="07:00")


def test_quiet_hours_wrapping_midnight():
    at_2330 = datetime(2026, 11, 24, 15, 30, tzinfo=UTC)  # 23:30 local
    assert quiet_until(QUIET, at_2330) == datetime(2026, 11, 24, 23, 0, tzinfo=UTC)  # 07:00 next day local
    at_0300 = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)  # 03:00 local on the 25th
    assert quiet_until(QUIET, at_0300) == datetime(2026, 11, 24, 23, 0, tzinfo=UTC)
    assert quiet_until(QUIET, NOW) is None  # noon
    assert quiet_until(QuietHours(start="12:00", end="14:00"), NOW) == datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


def test_non_urgent_messages_wait_out_quiet_hours_and_escalations_do_not():
    sleeper = OWNER.model_copy(update={"quiet_hours": QUIET})
    night = datetime(2026, 11, 24, 15, 30, tzinfo=UTC)
    assert release_at(sleeper, night, urgent=False) == datetime(2026, 11, 24, 23, 0, tzinfo=UTC)
    assert release_at(sleeper, night, urgent=True) == night
    facts = issue()
    assigned = occ("IssueAssigned", {"owner": "王磊", "responsible_unit": "urban-management"}, facts)
    overdue = occ("IssueOverdue", {"step": 1, "escalated_to": "changtai/wuan/c01"}, facts)
    assert {p.not_before for p in run(assigned, [sleeper], now=night)} == {datetime(2026, 11, 24, 23, 0, tzinfo=UTC)}
    assert {p.not_before for p in run(overdue, [sleeper], now=night)} == {night}


def test_a_digest_reader_s_non_urgent_messages_are_held_for_the_digest_hour_and_urgent_ones_are_not():
    reader = OWNER.model_copy(update={"digest_at": "18:00"})
    facts = issue()
    assigned = occ("IssueAssigned", {"owner": "王磊", "responsible_unit": "urban-management"}, facts)
    overdue = occ("IssueOverdue", {"step": 1, "escalated_to": "changtai/wuan/c01"}, facts)
    at_six = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # 18:00 in Asia/Shanghai
    held = run(assigned, [reader])
    assert {(p.held, p.not_before) for p in held} == {(True, at_six)}
    assert {(p.held, p.not_before) for p in run(overdue, [reader])} == {(False, NOW)}
    after_six = run(assigned, [reader], now=at_six + timedelta(minutes=1))
    assert {p.not_before for p in after_six} == {at_six + timedelta(days=1)}  # tomorrow's
    assert {p.held for p in run(assigned, [OWNER])} == {False}


def test_a_digest_in_quiet_hours_waits_for_their_end_in_the_quiet_hours_time_zone():
    night_owl = OWNER.model_copy(
        update={"digest_at": "07:30", "quiet_hours": QuietHours(start="22:00", end="08:00", tz="Europe/Berlin")}
    )
    facts = issue()
    assigned = occ("IssueAssigned", {"owner": "王磊", "responsible_unit": "urban-management"}, facts)
    # NOW is 05:00 in Berlin (quiet until 08:00): the next 07:30 after the quiet hours is tomorrow's.
    [p, *_] = run(assigned, [night_owl])
    assert p.held and p.not_before == datetime(2026, 11, 25, 6, 30, tzinfo=UTC)


def test_a_digest_lists_every_held_message_oldest_first_in_the_reader_s_language():
    reader = COMMUNITY_LEADER.model_copy(update={"digest_at": "18:00"})
    due = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    items = [
        Held("second", "body two", NOW + timedelta(hours=1)),
        Held("first", "body one", NOW),
    ]
    msg = compose_digest(default_templates(), reader, items, due)
    assert msg.subject == "[Campaign digest] 2 notifications, 2026-11-24"
    assert msg.body.index("1. [2026-11-24 12:00] first\nbody one") < msg.body.index("2. [2026-11-24 13:00] second")
    zh = compose_digest(default_templates(), reader.model_copy(update={"language": "zh"}), items, due)
    assert zh.subject == "【创城通知汇总】2026-11-24 共2条"
    a, b = uuid4(), uuid4()
    assert digest_id("c01-leader", "inbox", due, [a, b]) == digest_id("c01-leader", "inbox", due, [b, a])
    assert digest_id("c01-leader", "inbox", due, [a, b]) != digest_id("c01-leader", "email", due, [a, b])
    assert digest_id("c01-leader", "inbox", due, [a, b]) != digest_id("c01-leader", "inbox", due, [a])


# --- templating


def test_templates_render_in_the_recipients_language_with_local_deadline():
    facts = issue(deadline=datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    o = occ(
        "IssueOverdue", {"step": 1, "escalated_to": "changtai/wuan/c01", "deadline": "2026-11-25T10:00:00+00:00"}, facts
    )
    names = {"changtai/wuan/c01/g03": "文泉社区03网格", "changtai/wuan/c01": "文泉社区"}
    planned = plan(default_rules(), default_templates(), o, DIRECTORY, now=NOW, place_name=lambda p: names.get(p, p))
    by = {p.recipient_id: p for p in planned}
    assert by["um-wang"].language == "zh"
    assert "文泉社区03网格" in by["um-wang"].subject and "逾期" in by["um-wang"].subject
    assert "2026-11-25 18:00" in by["um-wang"].body  # Asia/Shanghai
    assert by["c01-leader"].subject.startswith("[Overdue, step 1]")
    assert "Escalated to 文泉社区" in by["c01-leader"].body


def test_missing_placeholder_renders_a_dash_and_unknown_language_falls_back_to_chinese():
    tpl = render(default_templates(), "rectification_rejected", "fr", {"place": "文泉社区"})
    assert "文泉社区" in tpl.subject
    assert "原因：—" in tpl.body
    with pytest.raises(ValueError, match="no template"):
        render(default_templates(), "nope", "zh", {})


def test_every_rule_and_reminder_has_a_template_in_both_languages():
    templates = default_templates()
    book = default_rules()
    for name in {r.template for r in book.rules} | {r.template for r in book.reminders}:
        assert set(templates[name]) == {"zh", "en"}, name


# --- reminders


def test_reminders_24h_and_2h_before_the_deadline_and_none_already_past():
    deadline = NOW + timedelta(hours=30)
    due = reminders_for(default_rules(), uuid4(), deadline, NOW)
    assert sorted(d.due_at for d in due) == [deadline - timedelta(hours=24), deadline - timedelta(hours=2)]
    short = reminders_for(default_rules(), uuid4(), NOW + timedelta(hours=10), NOW)
    assert [d.before_hours for d in short] == [2]


def test_reminder_occurrence_has_a_stable_id_and_the_2h_one_is_urgent():
    facts = issue(deadline=NOW + timedelta(hours=30))
    book = default_rules()
    due = {d.before_hours: d for d in reminders_for(book, facts.issue_id, facts.deadline, NOW)}  # type: ignore[arg-type]
    a, b = reminder_occurrence(book, due[24], facts), reminder_occurrence(book, due[24], facts)
    assert a.event_id == b.event_id
    planned24 = plan(book, default_templates(), a, DIRECTORY, now=a.occurred_at)
    planned2 = plan(book, default_templates(), reminder_occurrence(book, due[2], facts), DIRECTORY, now=NOW)
    assert {p.recipient_id for p in planned24} == {"um-wang"}
    assert "24小时" in planned24[0].subject
    assert not planned24[0].urgent and planned2[0].urgent


# --- retries


def test_backoff_grows_exponentially_with_jitter_and_gives_up():
    policy = RetryPolicy(base_s=1, cap_s=30, max_attempts=5, rng=random.Random(7))
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 30)]:
        delays = {policy.delay(attempt).total_seconds() for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered
    assert not policy.gives_up(4) and policy.gives_up(5)
