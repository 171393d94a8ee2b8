"""schemathesis against the OpenAPI documents of the inspection, volunteer, scoring and notify services and the
operator dashboard (all but its endless SSE stream), in process
over ASGI: generated requests (valid and invalid, with and without a token) never get a 5xx, and
every status code they get is documented for that operation."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from services.dashboard.app import build_app as build_dashboard_app
from services.inspection.app import build_app as build_inspection_app
from services.notify.app import build_app as build_notify_app
from services.scoring.api import build_app as build_scoring_app
from services.volunteer.api import create_volunteer_app
from shared.auth import SCOPES, issue_token, upsert_departments
from shared.db import create_pool
from shared.grid import cached_grid
from shared.settings import Settings

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("WENMING_CONTRACT_EXAMPLES", "25"))
TESTER: dict[str, Any] = {
    "code": "contract-tester",
    "name": "契约测试",
    "name_en": "Contract tester",
    "kind": "campaign_office",
    "area": "changtai",
    "scopes": sorted(SCOPES),
}
CHECKS = [not_a_server_error, status_code_conformance]
schemathesis.serializer.alias("message/rfc822", "application/octet-stream")  # bounce e-mails, sent raw


@pytest.fixture(scope="session")
async def token(settings: Settings) -> AsyncIterator[str]:
    """A token of a test department holding every scope over the whole district."""
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await upsert_departments(conn, [*cached_grid(settings.district_file).departments, TESTER])
            yield await issue_token(conn, TESTER["code"], "contract")
    finally:
        await pool.close()


APP_SETTINGS = Settings()
"""The apps' settings, pointed at the session's database and topics before their first request
(the schema must exist when the tests are collected; the lifespan starts on the first call)."""


def _schema(app: FastAPI) -> Any:
    """The app's OpenAPI document, called over ASGI; read without starting the app's lifespan
    (which connects to the database the settings name)."""
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
    return schema


inspection = _schema(build_inspection_app(APP_SETTINGS, workers=False))
volunteer = _schema(create_volunteer_app(APP_SETTINGS))
scoring = _schema(build_scoring_app(APP_SETTINGS, worker=False))
notify = _schema(build_notify_app(APP_SETTINGS, workers=False))
dashboard = _schema(build_dashboard_app(APP_SETTINGS, health=False)).exclude(path="/v1/stream")


@pytest.fixture(scope="session", autouse=True)
def _apps_use_the_session_database(settings: Settings) -> None:
    for name in ("pg_dsn", "kafka_bootstrap", "topic_prefix"):
        setattr(APP_SETTINGS, name, getattr(settings, name))


CONTRACT = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


def _check(case: Case[Any], token: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)


@inspection.parametrize()  # type: ignore[untyped-decorator]
@CONTRACT
def test_inspection_api_answers_only_documented_statuses_and_never_5xx(case: Case[Any], token: str) -> None:
    _check(case, token)


@volunteer.parametrize()  # type: ignore[untyped-decorator]
@CONTRACT
def test_volunteer_api_answers_only_documented_statuses_and_never_5xx(case: Case[Any], token: str) -> None:
    _check(case, token)


@scoring.parametrize()  # type: ignore[untyped-decorator]
@CONTRACT
def test_scoring_api_answers_only_documented_statuses_and_never_5xx(case: Case[Any], token: str) -> None:
    _check(case, token)


@notify.parametrize()  # type: ignore[untyped-decorator]
@CONTRACT
def test_notify_api_answers_only_documented_statuses_and_never_5xx(case: Case[Any], token: str) -> None:
    _check(case, token)


@dashboard.parametrize()  # type: ignore[untyped-decorator]
@CONTRACT
def test_dashboard_api_answers_only_documented_statuses_and_never_5xx(case: Case[Any], token: str) -> None:
    _check(case, token)
