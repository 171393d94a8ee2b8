"""Read models of the volunteer service, kept from the volunteer.* topics (rebuildable).

- `volunteer-register`: practice sites and the (masked) volunteer register;
- `volunteer-activities`: activities (a site's calendar) and hours credited per volunteer;
- `volunteer-points`: households' points ledgers and balances, incentive funds;
- `volunteer-honours`: honours by year and level, creation titles by level;
- `volunteer-projects`: volunteer service projects and their contest rounds (entered,
  shortlisted, awarded).

Every write is keyed by an aggregate id (plus stream version for ledgers) and sets absolute
values taken from the events, so replaying a topic gives the same tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import get_args
from uuid import UUID

from shared.db import Conn
from shared.events.volunteer import (
    ActivityHeld,
    ActivityPlanned,
    ActivityReviewed,
    CheckInLapsed,
    CreationTitleAwarded,
    CreationTitleRevoked,
    FundContributed,
    FundDrawn,
    FundEstablished,
    HonourAwarded,
    HoursApproved,
    HoursCredited,
    HoursDeclined,
    HoursReported,
    HouseholdEnrolled,
    Level,
    NominationEndorsed,
    NominationSubmitted,
    PointsAwarded,
    PointsRedeemed,
    ProjectAwarded,
    ProjectEntered,
    ProjectRegistered,
    ProjectShortlisted,
    SiteClosed,
    SiteRegistered,
    VolunteerCheckedIn,
    VolunteerCheckedOut,
    VolunteerDeactivated,
    VolunteerRegistered,
)
from shared.projection import Applied, Projection


class RegisterProjection(Projection):
    name = "volunteer-register"
    topics = ("volunteer.site", "volunteer.volunteer")
    tables = ("volunteer_sites", "volunteer_register")

    async def apply(self, conn: Conn, events: Sequence[Applied]) -> None:
        for _env, e in events:
            if isinstance(e, SiteRegistered):
                await conn.execute(
                    "INSERT INTO volunteer_sites (site_id, kind, name, grid_path) VALUES ($1, $2, $3, $4)"
                    " ON CONFLICT (site_id) DO UPDATE SET kind = $2, name = $3, grid_path = $4",
                    e.site_id,
                    e.kind,
                    e.name,
                    e.grid_path,
                )
            elif isinstance(e, SiteClosed):
                await conn.execute("UPDATE volunteer_sites SET closed = true WHERE site_id = $1", e.site_id)
            elif isinstance(e, VolunteerRegistered):
                await conn.execute(
                    "INSERT INTO volunteer_register (volunteer_id, site_id, grid_path, name_masked, phone_masked,"
                    " skills, registered_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (volunteer_id) DO NOTHING",
                    e.volunteer_id,
                    e.site_id,
                    e.grid_path,
                    e.name_masked,
                    e.phone_masked,
                    e.skills,
                    e.registered_at,
                )
            elif isinstance(e, VolunteerDeactivated):
                await conn.execute(
                    "UPDATE volunteer_register SET active = false WHERE volunteer_id = $1", e.volunteer_id
                )


class ActivityProjection(Projection):
    name = "volunteer-activities"
    topics = ("volunteer.activity",)
    tables = ("volunteer_activities", "volunteer_hours", "volunteer_open_check_ins")

    async def apply(self, conn: Conn, events: Sequence[Applied]) -> None:
        for env, e in events:
            if isinstance(e, VolunteerCheckedIn):
                await conn.execute(
                    "INSERT INTO volunteer_open_check_ins (activity_id, volunteer_id, grid_path, checked_in_at)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    e.activity_id,
                    e.volunteer_id,
                    env.grid_path,
                    e.at,
                )
            elif isinstance(e, VolunteerCheckedOut | CheckInLapsed):
                await conn.execute(
                    "DELETE FROM volunteer_open_check_ins WHERE activity_id = $1 AND volunteer_id = $2",
                    e.activity_id,
                    e.volunteer_id,
                )
            if isinstance(e, ActivityPlanned):
                await conn.execute(
                    "INSERT INTO volunteer_activities (activity_id, site_id, grid_path, title, theme, form, starts_at,"
                    " ends_at, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'planned')"
                    " ON CONFLICT (activity_id) DO NOTHING",
                    e.activity_id,
                    e.site_id,
                    e.grid_path,
                    e.title,
                    e.theme,
                    e.form,
                    e.starts_at,
                    e.ends_at,
                )
            elif isinstance(e, ActivityHeld):
                await conn.execute(
                    "UPDATE volunteer_activities SET status = 'held', started_at = $2, ended_at = $3, audience = $4,"
                    " participants = $5, photos = $6 WHERE activity_id = $1",
                    e.activity_id,
                    e.started_at,
                    e.ended_at,
                    e.audience,
                    len(e.participants),
                    e.photos,
                )
            elif isinstance(e, HoursCredited):
                await conn.execute(
                    "INSERT INTO volunteer_hours (volunteer_id, activity_id, hours, basis, served_on)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (volunteer_id, activity_id) DO NOTHING",
                    e.volunteer_id,
                    e.activity_id,
                    e.hours,
                    e.basis,
                    e.served_on,
                )
            elif isinstance(e, HoursReported):
                await conn.execute(
                    "UPDATE volunteer_activities SET pending = pending + 1 WHERE activity_id = $1", e.activity_id
                )
            elif isinstance(e, HoursApproved | HoursDeclined):
                await conn.execute(
                    "UPDATE volunteer_activities SET pending = pending - 1 WHERE activity_id = $1", e.activity_id
                )
            elif isinstance(e, CheckInLapsed):
                await conn.execute(
                    "UPDATE volunteer_activities SET lapsed = lapsed + 1 WHERE activity_id = $1", e.activity_id
                )
            elif isinstance(e, ActivityReviewed):
                await conn.execute(
                    "UPDATE volunteer_activities SET verdict = $2,"
                    " status = CASE WHEN $2 = 'accepted' THEN 'reviewed' ELSE status END WHERE activity_id = $1",
                    e.activity_id,
                    e.verdict,
                )


class PointsProjection(Projection):
    name = "volunteer-points"
    topics = ("volunteer.points",)
    tables = ("volunteer_households", "volunteer_points_ledger", "volunteer_funds")

    async def apply(self, conn: Conn, events: Sequence[Applied]) -> None:
        for env, e in events:
            if isinstance(e, HouseholdEnrolled):
                await conn.execute(
                    "INSERT INTO volunteer_households (household_id, grid_path, label, balance) VALUES ($1, $2, $3, 0)"
                    " ON CONFLICT (household_id) DO NOTHING",
                    e.household_id,
                    e.grid_path,
                    e.label,
                )
            elif isinstance(e, PointsAwarded | PointsRedeemed):
                awarded = isinstance(e, PointsAwarded)
                await conn.execute(
                    "INSERT INTO volunteer_points_ledger (household_id, entry, kind, points, balance_after, rule, item,"
                    " reason, rules_version, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                    " ON CONFLICT (household_id, entry) DO NOTHING",
                    e.household_id,
                    env.stream_version,
                    "awarded" if awarded else "redeemed",
                    e.points if awarded else -e.points,
                    e.balance_after,
                    e.rule if isinstance(e, PointsAwarded) else None,
                    e.item if isinstance(e, PointsRedeemed) else None,
                    e.reason,
                    e.rules_version,
                    env.occurred_at,
                )
                await conn.execute(
                    "UPDATE volunteer_households SET balance = $2 WHERE household_id = $1",
                    e.household_id,
                    e.balance_after,
                )
            elif isinstance(e, FundEstablished):
                await conn.execute(
                    "INSERT INTO volunteer_funds (fund_id, name, grid_path, balance) VALUES ($1, $2, $3, 0)"
                    " ON CONFLICT (fund_id) DO NOTHING",
                    e.fund_id,
                    e.name,
                    e.grid_path,
                )
            elif isinstance(e, FundContributed | FundDrawn):
                await conn.execute(
                    "UPDATE volunteer_funds SET balance = $2 WHERE fund_id = $1", e.fund_id, e.balance_after
                )


class HonoursProjection(Projection):
    name = "volunteer-honours"
    topics = ("volunteer.honour", "volunteer.title")
    tables = ("volunteer_honours", "volunteer_titles")

    async def apply(self, conn: Conn, events: Sequence[Applied]) -> None:
        for _env, e in events:
            if isinstance(e, NominationSubmitted):
                await conn.execute(
                    "INSERT INTO volunteer_honours (nomination_id, honour, nominee, grid_path, year)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (nomination_id) DO NOTHING",
                    e.nomination_id,
                    e.honour,
                    e.nominee,
                    e.grid_path,
                    e.year,
                )
            elif isinstance(e, NominationEndorsed):
                await conn.execute(
                    "UPDATE volunteer_honours SET endorsements = endorsements + 1 WHERE nomination_id = $1",
                    e.nomination_id,
                )
            elif isinstance(e, HonourAwarded):
                await conn.execute(
                    "UPDATE volunteer_honours SET level = $2 WHERE nomination_id = $1", e.nomination_id, e.level
                )
            elif isinstance(e, CreationTitleAwarded):
                await conn.execute(
                    "INSERT INTO volunteer_titles (title_id, level, category, holder, grid_path, year)"
                    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (title_id, level) DO UPDATE SET"
                    " category = $3, holder = $4, grid_path = $5, year = $6, revoked = false",
                    e.title_id,
                    e.level,
                    e.category,
                    e.holder,
                    e.grid_path,
                    e.year,
                )
            elif isinstance(e, CreationTitleRevoked):
                await conn.execute(
                    "UPDATE volunteer_titles SET revoked = true WHERE title_id = $1 AND level = $2", e.title_id, e.level
                )


LEVELS: frozenset[str] = frozenset(get_args(Level))


def contest_level(contest: str) -> str | None:
    """The level of a contest named by its code (`provincial-volunteer-projects` -> provincial),
    or None when the code names no level (the contest events carry no level of their own)."""
    return next((w for w in re.split(r"[-_]", contest) if w in LEVELS), None)


class ProjectsProjection(Projection):
    """Volunteer service projects and the contest rounds they were entered, shortlisted and
    awarded in. Timestamps come from the events, counts are recounted from the rounds, so a
    replay gives the same rows."""

    name = "volunteer-projects"
    topics = ("volunteer.project",)
    tables = ("volunteer_projects", "volunteer_project_rounds")

    async def apply(self, conn: Conn, events: Sequence[Applied]) -> None:
        for env, e in events:
            if not isinstance(e, ProjectRegistered | ProjectEntered | ProjectShortlisted | ProjectAwarded):
                continue
            if isinstance(e, ProjectRegistered):
                await conn.execute(
                    "INSERT INTO volunteer_projects (project_id, name, organiser, department, grid_path, description,"
                    " registered_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)"
                    " ON CONFLICT (project_id) DO NOTHING",
                    e.project_id,
                    e.name,
                    e.organiser,
                    env.source,
                    e.grid_path,
                    e.description,
                    env.occurred_at,
                )
            elif isinstance(e, ProjectEntered):
                await conn.execute(
                    "INSERT INTO volunteer_project_rounds (project_id, contest, year, level, entered_at)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (project_id, contest, year) DO NOTHING",
                    e.project_id,
                    e.contest,
                    e.year,
                    e.level or contest_level(e.contest),
                    env.occurred_at,
                )
            elif isinstance(e, ProjectShortlisted):
                await conn.execute(
                    "UPDATE volunteer_project_rounds SET shortlisted_at = $4"
                    " WHERE project_id = $1 AND contest = $2 AND year = $3",
                    e.project_id,
                    e.contest,
                    e.year,
                    env.occurred_at,
                )
            elif isinstance(e, ProjectAwarded):
                await conn.execute(
                    "UPDATE volunteer_project_rounds SET awarded_at = $4, prize = $5"
                    " WHERE project_id = $1 AND contest = $2 AND year = $3",
                    e.project_id,
                    e.contest,
                    e.year,
                    env.occurred_at,
                    e.prize,
                )
            await _recount(conn, e.project_id, env.occurred_at)


async def _recount(conn: Conn, project_id: UUID, at: datetime) -> None:
    """Set a project's round counts from its rounds and move updated_at to the latest event."""
    await conn.execute(
        "UPDATE volunteer_projects p SET rounds_entered = r.entered, rounds_shortlisted = r.shortlisted,"
        " rounds_awarded = r.awarded, updated_at = GREATEST(p.updated_at, $2)"
        " FROM (SELECT count(*) AS entered, count(shortlisted_at) AS shortlisted, count(awarded_at) AS awarded"
        " FROM volunteer_project_rounds WHERE project_id = $1) r WHERE p.project_id = $1",
        project_id,
        at,
    )


PROJECTIONS: tuple[Projection, ...] = (
    RegisterProjection(),
    ActivityProjection(),
    PointsProjection(),
    HonoursProjection(),
    ProjectsProjection(),
)
