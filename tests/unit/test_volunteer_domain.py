"""The volunteer context's rules: sites, the register, activities and hours, points, honours, titles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from services.volunteer import domain as d
from shared.decider import DomainError
from shared.events.volunteer import (
    ActivityHeld,
    CheckInLapsed,
    FundDrawn,
    HoursCredited,
    HouseholdEnrolled,
    Participation,
    PointsAwarded,
    PointsRedeemed,
    VolunteerRegistered,
)

T0 = datetime(2026, 11, 7, 1, 0, tzinfo=UTC)  # 09:00 in Changtai
RULES = d.parse_rules(
    {
        "version": 3,
        "yuan_per_point": 2,
        "rules": {
            "clean-courtyard": {"name": "庭院整洁", "max_points": 10},
            "good-deed": {"name": "好人好事", "max_points": 50},
        },
    }
)


def id_number(first17: str = "35062519900101123") -> str:
    return first17 + d.id_check_char(first17)


def station() -> d.SiteState:
    return d.site_decider.fold(
        d.decide_site(
            d.RegisterSite("wenquan-station", "station", "文泉社区新时代文明实践站", "changtai/wuan/c01"), d.SiteState()
        )
    )


def planned(aid: UUID | None = None) -> d.ActivityState:
    aid = aid or uuid4()
    cmd = d.PlanActivity(
        aid,
        "wenquan-station",
        station(),
        "文明交通劝导",
        "civilised_traffic",
        "persuasion",
        T0,
        T0 + timedelta(hours=3),
    )
    return d.activity_decider.fold(d.decide_activity(cmd, d.ActivityState()))


def run(s: d.ActivityState, cmd: d.ActivityCommand) -> tuple[list[object], d.ActivityState]:
    events = d.decide_activity(cmd, s)
    return list(events), d.activity_decider.fold(events, s)


# --- sites and volunteers ------------------------------------------------------------------------


def test_a_site_sits_at_the_grid_level_of_its_kind():
    assert d.decide_site(d.RegisterSite("c", "centre", "长泰区新时代文明实践中心", "changtai"), d.SiteState())
    assert d.decide_site(d.RegisterSite("i", "institute", "枋洋镇新时代文明实践所", "changtai/fangyang"), d.SiteState())
    with pytest.raises(DomainError, match="station sits at community level"):
        d.decide_site(d.RegisterSite("s", "station", "x", "changtai/wuan"), d.SiteState())
    with pytest.raises(DomainError, match="already registered"):
        d.decide_site(d.RegisterSite("wenquan-station", "station", "x", "changtai/wuan/c01"), station())


def test_registered_volunteer_event_carries_only_masked_personal_data():
    vid = uuid4()
    idn = id_number()
    cmd = d.RegisterVolunteer(vid, "wenquan-station", station(), "林小明", "13812345678", idn, T0, ("急救",))
    [event] = d.decide_volunteer(cmd, d.VolunteerState())
    assert isinstance(event, VolunteerRegistered)
    assert event.phone_masked == "138****5678"
    assert event.id_number_masked == idn[:3] + "*" * 11 + idn[-4:]
    assert event.name_masked == "林*明"
    dumped = event.model_dump_json()
    assert "13812345678" not in dumped and idn not in dumped and "林小明" not in dumped
    assert event.grid_path == "changtai/wuan/c01"


def test_volunteer_registration_refusals_and_deactivation():
    vid = uuid4()
    good = d.RegisterVolunteer(vid, "wenquan-station", station(), "林明", "13812345678", id_number(), T0)
    with pytest.raises(DomainError, match="mobile"):
        d.decide_volunteer(
            d.RegisterVolunteer(vid, "x", station(), "林明", "1381234", id_number(), T0), d.VolunteerState()
        )
    bad_id = id_number()[:17] + ("0" if id_number()[17] != "0" else "1")
    with pytest.raises(DomainError, match="ID number"):
        d.decide_volunteer(
            d.RegisterVolunteer(vid, "x", station(), "林明", "13812345678", bad_id, T0), d.VolunteerState()
        )
    with pytest.raises(DomainError, match="no open practice site"):
        d.decide_volunteer(
            d.RegisterVolunteer(vid, "x", d.SiteState(), "林明", "13812345678", id_number(), T0), d.VolunteerState()
        )
    s = d.volunteer_decider.fold(d.decide_volunteer(good, d.VolunteerState()))
    assert s.active
    with pytest.raises(DomainError, match="already registered"):
        d.decide_volunteer(good, s)
    s = d.volunteer_decider.fold(d.decide_volunteer(d.DeactivateVolunteer(vid, "迁出本区", T0), s), s)
    assert not s.active
    with pytest.raises(DomainError, match="already deactivated"):
        d.decide_volunteer(d.DeactivateVolunteer(vid, "again", T0), s)


def test_masks():
    assert d.mask_phone("13912345678") == "139****5678"
    assert d.mask_name("欧阳小芳") == "欧**芳"
    assert d.mask_name("王五") == "王*"


# --- activities ------------------------------------------------------------------------------------


def test_closed_loop_credits_each_participant_once_with_recorded_hours():
    s = planned()
    a, b = uuid4(), uuid4()
    held = d.HoldActivity(
        T0,
        T0 + timedelta(hours=3),
        [Participation(volunteer_id=a, hours=3), Participation(volunteer_id=b, hours=1.5)],
        audience=120,
        active_volunteers=frozenset({a, b}),
        photos=("photo://a.jpg",),
    )
    events, s = run(s, held)
    assert isinstance(events[0], ActivityHeld) and events[0].audience == 120
    credits = {e.volunteer_id: e.hours for e in events if isinstance(e, HoursCredited)}
    assert credits == {a: 3, b: 1.5}
    assert all(e.basis == "recorded" for e in events if isinstance(e, HoursCredited))
    with pytest.raises(DomainError, match="already held"):
        d.decide_activity(held, s)
    with pytest.raises(DomainError, match="already credited"):
        d.decide_activity(d.ReportHours(a, 1, active=True), s)
    events, s = run(s, d.ReviewActivity("accepted", T0 + timedelta(days=1)))
    assert s.status == "reviewed"
    with pytest.raises(DomainError, match="reviewed and closed"):
        d.decide_activity(d.ReportHours(uuid4(), 1, active=True), s)


def test_holding_refuses_unknown_duplicate_and_overlong_participants():
    s = planned()
    a = uuid4()

    def hold(parts: list[Participation], active: set[UUID]) -> None:
        d.decide_activity(d.HoldActivity(T0, T0 + timedelta(hours=2), parts, 10, frozenset(active)), s)

    with pytest.raises(DomainError, match="not an active"):
        hold([Participation(volunteer_id=a, hours=1)], set())
    with pytest.raises(DomainError, match="listed twice"):
        hold([Participation(volunteer_id=a, hours=1), Participation(volunteer_id=a, hours=1)], {a})
    with pytest.raises(DomainError, match="longer than the activity"):
        hold([Participation(volunteer_id=a, hours=3)], {a})
    with pytest.raises(DomainError, match="plan it first"):
        d.decide_activity(d.HoldActivity(T0, T0 + timedelta(hours=1), [], 0, frozenset()), d.ActivityState())


def test_check_in_and_out_with_the_activity_code_credits_once():
    s = planned()
    v = uuid4()
    events, s = run(s, d.OpenCheckIn("482913", T0 + timedelta(hours=4), T0))
    assert "482913" not in events[0].model_dump_json()  # type: ignore[attr-defined]
    with pytest.raises(DomainError, match="wrong activity code"):
        d.decide_activity(d.CheckIn(v, "000000", T0, active=True), s)
    with pytest.raises(DomainError, match="expired"):
        d.decide_activity(d.CheckIn(v, "482913", T0 + timedelta(hours=5), active=True), s)
    _, s = run(s, d.CheckIn(v, "482913", T0 + timedelta(minutes=5), active=True))
    with pytest.raises(DomainError, match="already checked in"):
        d.decide_activity(d.CheckIn(v, "482913", T0 + timedelta(minutes=6), active=True), s)
    events, s = run(s, d.CheckOut(v, T0 + timedelta(hours=2, minutes=17)))
    credited = [e for e in events if isinstance(e, HoursCredited)]
    assert [(c.hours, c.basis) for c in credited] == [(2.0, "check_out")]
    with pytest.raises(DomainError, match="not checked in"):
        d.decide_activity(d.CheckOut(v, T0 + timedelta(hours=3)), s)
    with pytest.raises(DomainError, match="already credited"):
        d.decide_activity(d.CheckIn(v, "482913", T0 + timedelta(hours=3), active=True), s)
    # Recording the same volunteer again when the activity is held is a double credit.
    with pytest.raises(DomainError, match="already credited"):
        d.decide_activity(
            d.HoldActivity(T0, T0 + timedelta(hours=3), [Participation(volunteer_id=v, hours=2)], 5, frozenset({v})), s
        )


def test_never_checked_out_is_closed_after_24_hours_flagged_and_not_credited():
    s = planned()
    v, w = uuid4(), uuid4()
    _, s = run(s, d.OpenCheckIn("111222", T0 + timedelta(hours=2), T0))
    _, s = run(s, d.CheckIn(v, "111222", T0, active=True))
    _, s = run(s, d.CheckIn(w, "111222", T0 + timedelta(hours=1), active=True))
    assert d.decide_activity(d.CloseLapsedCheckIns(T0 + timedelta(hours=20)), s) == []
    with pytest.raises(DomainError, match="more than 24 h"):
        d.decide_activity(d.CheckOut(v, T0 + timedelta(hours=24, minutes=30)), s)
    events, s = run(s, d.CloseLapsedCheckIns(T0 + timedelta(hours=24, minutes=30)))
    assert [(type(e), e.volunteer_id) for e in events] == [(CheckInLapsed, v)]  # type: ignore[attr-defined]
    assert v not in s.credited and v in s.lapsed
    with pytest.raises(DomainError, match="lapsed"):
        d.decide_activity(d.CheckIn(v, "111222", T0 + timedelta(hours=1), active=True), s)


def test_self_reported_hours_wait_for_approval_or_decline():
    s = planned()
    a, b = uuid4(), uuid4()
    with pytest.raises(DomainError, match="only for an activity that was held"):
        d.decide_activity(d.ReportHours(a, 1, active=True), s)
    _, s = run(s, d.HoldActivity(T0, T0 + timedelta(hours=3), [], 40, frozenset()))
    _, s = run(s, d.ReportHours(a, 2, active=True, note="负责签到"))
    _, s = run(s, d.ReportHours(b, 1, active=True))
    assert dict(s.pending) == {a: 2, b: 1}
    with pytest.raises(DomainError, match="already has hours pending"):
        d.decide_activity(d.ReportHours(a, 1, active=True), s)
    with pytest.raises(DomainError, match="still wait for approval"):
        d.decide_activity(d.ReviewActivity("accepted", T0), s)
    events, s = run(s, d.ApproveHours(a))
    assert [(e.volunteer_id, e.hours, e.basis) for e in events if isinstance(e, HoursCredited)] == [
        (a, 2, "self_report")
    ]
    with pytest.raises(DomainError, match="no hours pending"):
        d.decide_activity(d.ApproveHours(a), s)
    events, s = run(s, d.DeclineHours(b, "未见签到记录"))
    assert b not in s.credited and not s.pending
    _, s = run(s, d.ReviewActivity("accepted", T0 + timedelta(days=1)))
    assert s.status == "reviewed"


def test_plan_refuses_closed_site_and_backwards_times():
    closed = d.site_decider.fold(d.decide_site(d.CloseSite("wenquan-station", "合并"), station()), station())
    with pytest.raises(DomainError, match="no open practice site"):
        d.decide_activity(
            d.PlanActivity(uuid4(), "wenquan-station", closed, "t", "sanitation", "drive", T0, T0 + timedelta(hours=1)),
            d.ActivityState(),
        )
    with pytest.raises(DomainError, match="end after it starts"):
        d.decide_activity(
            d.PlanActivity(uuid4(), "wenquan-station", station(), "t", "sanitation", "drive", T0, T0), d.ActivityState()
        )


# --- points and the fund ------------------------------------------------------------------------


def award(s: d.HouseholdState, points: int, rule: str = "clean-courtyard") -> d.HouseholdState:
    cmd = d.AwardPoints("fy-c03-h012", "changtai/fangyang/c03", "青年村3组12号", points, rule, "庭院整洁", RULES)
    return d.household_decider.fold(d.decide_household(cmd, s), s)


def fund(yuan: int) -> d.FundState:
    s = d.fund_decider.fold(
        d.decide_fund(d.EstablishFund("fangyang-fund", "枋洋镇乡风文明积分基金", "changtai/fangyang"), d.FundState())
    )
    if yuan:
        s = d.fund_decider.fold(d.decide_fund(d.ContributeToFund("fangyang-fund", yuan, "镇财政"), s), s)
    return s


def test_first_award_enrols_the_household_and_names_rule_and_version():
    cmd = d.AwardPoints(
        "fy-c03-h012", "changtai/fangyang/c03", "青年村3组12号", 8, "clean-courtyard", "庭院整洁", RULES
    )
    events = d.decide_household(cmd, d.HouseholdState())
    assert isinstance(events[0], HouseholdEnrolled)
    assert isinstance(events[1], PointsAwarded)
    assert (events[1].rule, events[1].rules_version, events[1].balance_after) == ("clean-courtyard", 3, 8)
    s = award(award(d.HouseholdState(), 8), 40, "good-deed")
    assert s.balance == 48
    assert len(d.decide_household(cmd, s)) == 1  # enrolled only once


def test_awards_outside_the_rules_are_refused():
    with pytest.raises(DomainError, match="at most 10 points"):
        award(d.HouseholdState(), 11)
    with pytest.raises(DomainError, match="no rule 'bribery'"):
        award(d.HouseholdState(), 1, "bribery")
    s = award(d.HouseholdState(), 5)
    with pytest.raises(DomainError, match="enrolled at changtai/fangyang/c03"):
        d.decide_household(d.AwardPoints("fy-c03-h012", "changtai/wuan/c01", "x", 1, "clean-courtyard", "r", RULES), s)


def test_redemption_spends_points_and_draws_the_fund_never_below_zero():
    h = award(award(d.HouseholdState(), 10), 10)
    f = fund(100)
    cmd = d.RedeemPoints("fy-c03-h012", "fangyang-fund", 15, "洗衣液两瓶", "积分兑换", RULES)
    hh, ff = d.decide_redemption(cmd, h, f)
    assert isinstance(hh[0], PointsRedeemed) and hh[0].balance_after == 5 and hh[0].yuan == 30
    assert isinstance(ff[0], FundDrawn) and ff[0].balance_after == 70
    h = d.household_decider.fold(hh, h)
    with pytest.raises(DomainError, match="has 5 points, cannot redeem 15"):
        d.decide_redemption(cmd, h, d.fund_decider.fold(ff, f))
    with pytest.raises(DomainError, match="holds 20 yuan, cannot pay 30"):
        d.decide_redemption(cmd, award(award(d.HouseholdState(), 10), 10), fund(20))
    other_area = d.fund_decider.fold(
        d.decide_fund(d.EstablishFund("wuan-fund", "武安镇基金", "changtai/wuan"), d.FundState())
    )
    with pytest.raises(DomainError, match="serves changtai/wuan"):
        d.decide_redemption(cmd, award(d.HouseholdState(), 10), other_area)


def test_rules_file_parses():
    rules = d.load_rules()
    assert rules.version >= 1 and rules.yuan_per_point >= 1
    assert all(r.max_points > 0 for r in rules.rules.values())


# --- projects, honours, titles -----------------------------------------------------------------


def test_project_contest_rounds_in_order():
    pid = uuid4()
    s = d.project_decider.fold(
        d.project_decider.decide(
            d.project_command(pid, d.RegisterProject(pid, "护苗行动", "长泰区志愿者协会", "changtai")), d.ProjectState()
        )
    )
    with pytest.raises(DomainError, match="not entered"):
        d.project_decider.decide(d.project_command(pid, d.ShortlistProject("fujian-volunteer-projects", 2022)), s)
    for cmd in (
        d.EnterProject("fujian-volunteer-projects", 2022),
        d.ShortlistProject("fujian-volunteer-projects", 2022),
    ):
        s = d.project_decider.fold(d.project_decider.decide(d.project_command(pid, cmd), s), s)
    with pytest.raises(DomainError, match="already entered"):
        d.project_decider.decide(d.project_command(pid, d.EnterProject("fujian-volunteer-projects", 2022)), s)
    [ev] = d.project_decider.decide(
        d.project_command(pid, d.AwardProject("fujian-volunteer-projects", 2022, "银奖")), s
    )
    assert ev.prize == "银奖"  # type: ignore[attr-defined]


def test_honour_needs_an_endorsement_and_is_awarded_once():
    nid = uuid4()
    s = d.nomination_decider.fold(
        d.decide_nomination(
            d.SubmitNomination(nid, "good_person", "杨伟林", "changtai/wuan/c05", 2022, "多年照顾孤寡老人"),
            d.NominationState(),
        )
    )
    with pytest.raises(DomainError, match="must be endorsed"):
        d.decide_nomination(d.AwardHonour(nid, "provincial"), s)
    s = d.nomination_decider.fold(d.decide_nomination(d.EndorseNomination(nid, "wuan-office"), s), s)
    with pytest.raises(DomainError, match="already endorsed"):
        d.decide_nomination(d.EndorseNomination(nid, "wuan-office"), s)
    s = d.nomination_decider.fold(d.decide_nomination(d.AwardHonour(nid, "provincial"), s), s)
    with pytest.raises(DomainError, match="already awarded at provincial"):
        d.decide_nomination(d.AwardHonour(nid, "national"), s)


def test_title_twice_at_the_same_level_is_refused_but_revoked_can_be_won_again():
    award_cmd = d.AwardTitle("unit-market-regulation", "unit", "区市场监督管理局", "changtai", "provincial", 2022)
    s = d.title_decider.fold(d.decide_title(award_cmd, d.TitleState()))
    with pytest.raises(DomainError, match="already holds this title at provincial level"):
        d.decide_title(award_cmd, s)
    s = d.title_decider.fold(
        d.decide_title(
            d.AwardTitle("unit-market-regulation", "unit", "区市场监督管理局", "changtai", "municipal", 2021), s
        ),
        s,
    )
    assert s.levels == {"provincial", "municipal"}
    with pytest.raises(DomainError, match="not held at national"):
        d.decide_title(d.ReviewTitle("unit-market-regulation", "national", True, 2023), s)
    s = d.title_decider.fold(d.decide_title(d.RevokeTitle("unit-market-regulation", "provincial", "复查不合格"), s), s)
    assert d.decide_title(award_cmd, s)
