"""Any sequence of volunteer-context commands, valid or not, keeps each aggregate replayable and
its rules whole: hours credited once per volunteer and activity, no balance ever negative,
points and yuan conserved between a household and its incentive fund."""

from __future__ import annotations

import copy
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from services.volunteer.domain import (
    ActivityCommand,
    ApproveHours,
    AwardHonour,
    AwardPoints,
    AwardTitle,
    CheckIn,
    CheckOut,
    CloseLapsedCheckIns,
    ContributeToFund,
    DeclineHours,
    EndorseNomination,
    EstablishFund,
    HoldActivity,
    OpenCheckIn,
    PlanActivity,
    RedeemPoints,
    ReportHours,
    ReviewActivity,
    ReviewTitle,
    RevokeTitle,
    SiteState,
    SubmitNomination,
    activity_decider,
    decide_redemption,
    fund_decider,
    household_decider,
    load_rules,
    nomination_decider,
    title_decider,
)
from shared.decider import DomainError
from shared.events.volunteer import (
    ActivityReviewed,
    CreationTitleAwarded,
    CreationTitleRevoked,
    FundContributed,
    FundDrawn,
    HonourAwarded,
    HoursCredited,
    Participation,
    PointsAwarded,
    PointsRedeemed,
)
from tests.property.harness import EXAMPLES, play, stored

FAST = settings(max_examples=EXAMPLES, deadline=None)
T0 = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
QUARTER = timedelta(minutes=15)
ACTIVITY = UUID("5a1c0de0-0000-4000-8000-000000000001")
VOLUNTEERS = [UUID(f"5a1c0de0-0000-4000-8000-00000000010{i}") for i in range(4)]
ACTIVE = frozenset(VOLUNTEERS[:3])
"""The fourth volunteer is not an active registered volunteer."""
OPEN_SITE = SiteState(True, "station", "changtai/wuan/c01", "武安镇c01站")
CLOSED_SITE = SiteState(True, "station", "changtai/wuan/c01", "武安镇c01站", closed=True)
RULES = load_rules()

at = st.integers(min_value=0, max_value=4 * 48).map(lambda q: T0 + q * QUARTER)
vid = st.sampled_from(VOLUNTEERS)
hours = st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0, 8.0])

plan = st.builds(
    PlanActivity,
    activity_id=st.just(ACTIVITY),
    site_id=st.just("wuan-c01"),
    site=st.sampled_from([OPEN_SITE, OPEN_SITE, CLOSED_SITE]),
    title=st.just("垃圾分类宣讲"),
    theme=st.sampled_from(["policy_talk", "sanitation", "care_visit"]),
    form=st.sampled_from(["talk", "drive", "visit"]),
    starts_at=at,
    ends_at=at,
)
activity_commands: st.SearchStrategy[ActivityCommand] = st.one_of(
    plan,
    st.builds(
        HoldActivity,
        started_at=at,
        ended_at=at,
        participants=st.lists(st.builds(Participation, volunteer_id=vid, hours=hours), max_size=4),
        audience=st.integers(min_value=0, max_value=200),
        active_volunteers=st.just(ACTIVE),
    ),
    st.builds(OpenCheckIn, code=st.sampled_from(["246810", "24681"]), valid_until=at, at=at),
    st.builds(CheckIn, volunteer_id=vid, code=st.sampled_from(["246810", "135790"]), at=at, active=st.booleans()),
    st.builds(CheckOut, volunteer_id=vid, at=at),
    st.builds(CloseLapsedCheckIns, now=at),
    st.builds(ReportHours, volunteer_id=vid, hours=hours, active=st.booleans()),
    st.builds(ApproveHours, volunteer_id=vid),
    st.builds(DeclineHours, volunteer_id=vid, reason=st.just("无签到记录")),
    st.builds(ReviewActivity, verdict=st.sampled_from(["accepted", "returned"]), at=at),
)
activity_sequences = st.tuples(plan, st.lists(activity_commands, max_size=30)).map(lambda t: [t[0], *t[1]])


@FAST
@given(activity_sequences)
def test_an_activity_replays_and_credits_each_volunteer_at_most_once(cmds: list[ActivityCommand]) -> None:
    run = play(activity_decider, cmds)
    credited = Counter(e.volunteer_id for e in run.history if isinstance(e, HoursCredited))
    assert all(n == 1 for n in credited.values()), credited
    assert set(credited) <= ACTIVE, "hours credited to a volunteer who is not active"
    assert all(0 < e.hours <= 24 for e in run.history if isinstance(e, HoursCredited))
    reviewed = [i for i, e in enumerate(run.history) if isinstance(e, ActivityReviewed) and e.verdict == "accepted"]
    if reviewed:
        assert reviewed[0] == len(run.history) - 1, "events after the activity was reviewed and closed"
    for state in run.states:
        assert not (set(state.pending) & set(state.credited)), "hours both pending and credited"


# --- village civility points and the incentive fund ----------------------------------------------

HOUSEHOLD = "wuan-c01-h017"
FUND = "wuan-fund"
household_grid = st.sampled_from(["changtai/wuan/c01", "changtai/wuan/c01/g03", "changtai/wuan"])
points = st.integers(min_value=1, max_value=60)
points_commands = st.one_of(
    st.builds(
        AwardPoints,
        household_id=st.just(HOUSEHOLD),
        grid_path=household_grid,
        label=st.just("林家"),
        points=points,
        rule=st.sampled_from([*RULES.rules, "no-such-rule"]),
        reason=st.just("庭院整洁"),
        rules=st.just(RULES),
    ),
    st.builds(
        RedeemPoints,
        household_id=st.just(HOUSEHOLD),
        fund_id=st.just(FUND),
        points=points,
        item=st.just("洗衣粉"),
        reason=st.just("积分兑换"),
        rules=st.just(RULES),
    ),
    st.builds(
        EstablishFund,
        fund_id=st.just(FUND),
        name=st.just("乡风文明激励基金"),
        grid_path=st.sampled_from(["changtai/wuan", "changtai/wuan", "changtai/zhanban"]),
    ),
    st.builds(
        ContributeToFund, fund_id=st.just(FUND), yuan=st.integers(min_value=1, max_value=500), donor=st.just("乡贤")
    ),
)


@FAST
@given(st.lists(points_commands, max_size=40))
def test_points_and_fund_replay_never_go_negative_and_are_conserved(cmds: list[Any]) -> None:
    household, fund = household_decider.initial, fund_decider.initial
    h_events: list[Any] = []
    f_events: list[Any] = []
    for cmd in cmds:
        before = copy.deepcopy((household, fund))
        try:
            new_h: list[Any]
            new_f: list[Any]
            if isinstance(cmd, AwardPoints):
                new_h, new_f = list(household_decider.decide(cmd, household)), []
            elif isinstance(cmd, RedeemPoints):
                new_h, new_f = decide_redemption(cmd, household, fund)
            else:
                new_h, new_f = [], list(fund_decider.decide(cmd, fund))
        except DomainError:
            assert (household, fund) == before
            continue
        household = household_decider.fold(new_h, household)
        fund = fund_decider.fold(new_f, fund)
        h_events += new_h
        f_events += new_f
        assert household.balance >= 0 and fund.balance >= 0
        assert household_decider.fold(stored(h_events)) == household
        assert fund_decider.fold(stored(f_events)) == fund
    awarded = sum(e.points for e in h_events if isinstance(e, PointsAwarded))
    redeemed = [e for e in h_events if isinstance(e, PointsRedeemed)]
    assert household.balance == awarded - sum(e.points for e in redeemed)
    contributed = sum(e.yuan for e in f_events if isinstance(e, FundContributed))
    drawn = [e for e in f_events if isinstance(e, FundDrawn)]
    assert fund.balance == contributed - sum(e.yuan for e in drawn)
    assert [e.yuan for e in drawn] == [e.points * RULES.yuan_per_point for e in redeemed]
    assert all(e.balance_after >= 0 for e in [*h_events, *f_events] if hasattr(e, "balance_after"))


# --- honours and creation titles -----------------------------------------------------------------

NOMINATION = UUID("5a1c0de0-0000-4000-8000-000000000201")
nomination_commands = st.one_of(
    st.builds(
        SubmitNomination,
        nomination_id=st.just(NOMINATION),
        honour=st.sampled_from(["moral_model", "good_person", "good_youngster"]),
        nominee=st.just("林某"),
        grid_path=st.just("changtai/wuan/c01"),
        year=st.just(2026),
        deeds=st.just("照顾孤寡老人十年"),
    ),
    st.builds(
        EndorseNomination,
        nomination_id=st.just(NOMINATION),
        endorsed_by=st.sampled_from(["wuan-office", "civilisation-office"]),
    ),
    st.builds(
        AwardHonour, nomination_id=st.just(NOMINATION), level=st.sampled_from(["district", "municipal", "provincial"])
    ),
)


@FAST
@given(st.lists(nomination_commands, max_size=15))
def test_a_nomination_replays_and_is_honoured_once_after_endorsement(cmds: list[Any]) -> None:
    run = play(nomination_decider, cmds)
    kinds = [type(e).__name__ for e in run.history]
    assert kinds.count("HonourAwarded") <= 1
    if "HonourAwarded" in kinds:
        assert "NominationEndorsed" in kinds[: kinds.index("HonourAwarded")]
        assert isinstance(run.history[-1], HonourAwarded), "events after the honour was awarded"


title_level = st.sampled_from(["district", "municipal", "provincial", "national"])
title_commands = st.one_of(
    st.builds(
        AwardTitle,
        title_id=st.just("family-lin"),
        category=st.sampled_from(["family", "family", "unit"]),
        holder=st.sampled_from(["林家", "林家", "王家"]),
        grid_path=st.just("changtai/wuan/c01"),
        level=title_level,
        year=st.just(2026),
    ),
    st.builds(ReviewTitle, title_id=st.just("family-lin"), level=title_level, passed=st.booleans(), year=st.just(2026)),
    st.builds(RevokeTitle, title_id=st.just("family-lin"), level=title_level, reason=st.just("复查不合格")),
)


@FAST
@given(st.lists(title_commands, max_size=20))
def test_a_title_replays_and_holds_exactly_the_levels_awarded_and_not_revoked(cmds: list[Any]) -> None:
    run = play(title_decider, cmds)
    held: set[str] = set()
    for e in run.history:
        if isinstance(e, CreationTitleAwarded):
            assert e.level not in held, "a level awarded twice while held"
            held.add(e.level)
        elif isinstance(e, CreationTitleRevoked):
            assert e.level in held
            held.discard(e.level)
    assert run.state.levels == held
