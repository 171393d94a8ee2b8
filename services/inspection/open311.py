"""Open311 GeoReport v2 facade (JSON): civic-reporting clients and public hotlines file public
reports into Wenming without a custom integration.

- `GET  /open311/v2/services.json`: the standards table's categories as services.
- `POST /open311/v2/requests.json`: form-encoded or JSON; `api_key` is a department token;
  the location is given as `attribute[grid_path]` (a unit grid of the district) and optionally
  `address_string`, `lat`, `long`. Each request becomes an IssueFound with method
  "public_report"; its `service_request_id` is the issue id.
- `GET  /open311/v2/requests.json` and `/open311/v2/requests/{id}.json`: status follows the issue
  (open until closed or backlogged).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs
from uuid import UUID, uuid4

import orjson
from fastapi import APIRouter, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.inspection.api import _report_command
from services.inspection.domain import issue_decider, issue_stream
from shared.auth import Principal, TokenAuthenticator
from shared.campaign_time import utcnow
from shared.decider import execute
from shared.events.inspection import IssueReport
from shared.events.registry import registry
from shared.eventstore import EventMeta

router = APIRouter(
    prefix="/open311/v2",
    tags=["open311"],
    responses={
        400: {"description": "Malformed request (an Open311 error list)"},
        401: {"description": "api_key missing or invalid"},
        403: {"description": "This api_key may not file requests"},
        404: {"description": "No such service request"},
    },
)
CLOSED = ("closed", "backlogged")


class Open311Error(Exception):
    """Answered as GeoReport v2 errors: a list of {code, description}."""

    def __init__(self, code: int, description: str):
        super().__init__(description)
        self.code = code
        self.description = description


def _error(code: int, description: str) -> Open311Error:
    return Open311Error(code, description)


def install(app: FastAPI) -> None:
    """Mount the facade and its error format on an app."""

    @app.exception_handler(Open311Error)
    async def _open311_error(_: Request, exc: Open311Error) -> JSONResponse:
        return JSONResponse([{"code": exc.code, "description": exc.description}], status_code=exc.code)

    app.include_router(router)


async def _principal(request: Request, api_key: str | None) -> Principal:
    if not api_key:
        raise _error(status.HTTP_401_UNAUTHORIZED, "api_key is required")
    auth: TokenAuthenticator = request.app.state.auth
    principal = await auth.principal(api_key)
    if principal is None:
        raise _error(status.HTTP_401_UNAUTHORIZED, "invalid api_key")
    if "issue:report" not in principal.scopes:
        raise _error(status.HTTP_403_FORBIDDEN, "this api_key may not file requests")
    return principal


@router.get("/services.json")
async def services(request: Request) -> list[dict[str, Any]]:
    table = request.app.state.standards
    return [
        {
            "service_code": c.code,
            "service_name": c.name,
            "description": f"{c.name_en}. {c.standard}".strip(),
            "metadata": True,
            "type": "realtime",
            "keywords": c.case_type,
            "group": c.case_type,
        }
        for c in table.categories.values()
    ]


@router.get("/services/{service_code}.json")
async def service_definition(service_code: str, request: Request) -> dict[str, Any]:
    if service_code not in request.app.state.standards.categories:
        raise _error(status.HTTP_404_NOT_FOUND, f"unknown service_code {service_code}")
    return {
        "service_code": service_code,
        "attributes": [
            {
                "variable": True,
                "code": "grid_path",
                "datatype": "string",
                "required": True,
                "order": 1,
                "datatype_description": "unit grid path, e.g. changtai/wuan/c01/g03",
                "description": "网格 / grid",
            },
        ],
    }


async def _params(request: Request) -> dict[str, str]:
    ctype = request.headers.get("content-type", "")
    raw = await request.body()
    if ctype.startswith("application/json"):
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _error(status.HTTP_400_BAD_REQUEST, "body is not valid JSON") from None
        if not isinstance(data, dict):
            raise _error(status.HTTP_400_BAD_REQUEST, "body must be an object")
        return {str(k): str(v) for k, v in data.items()}
    parsed = parse_qs(raw.decode(errors="replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


@router.post("/requests.json", status_code=201)
async def post_request(request: Request) -> list[dict[str, Any]]:
    p = await _params(request)
    principal = await _principal(request, p.get("api_key"))
    grid_path = p.get("attribute[grid_path]") or p.get("grid_path")
    if not grid_path:
        raise _error(status.HTTP_400_BAD_REQUEST, "attribute[grid_path] is required")
    if not p.get("service_code"):
        raise _error(status.HTTP_400_BAD_REQUEST, "service_code is required")
    photos = [p["media_url"]] if p.get("media_url") else []
    try:
        body = IssueReport(
            grid_path=grid_path,
            category=p["service_code"],
            severity="minor",
            description=p.get("description") or p["service_code"],
            found_at=utcnow(),
            method="public_report",
            location=p.get("address_string"),
            photos=photos,
            issue_id=uuid4(),
        )
    except ValidationError as exc:
        raise _error(
            status.HTTP_400_BAD_REQUEST,
            "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()),
        ) from None
    try:
        cmd = _report_command(body, request, principal, ["body"])
    except HTTPException as exc:
        detail = exc.detail[0]["msg"] if isinstance(exc.detail, list) else str(exc.detail)
        raise _error(400 if exc.status_code == 422 else exc.status_code, detail) from None
    cmd = replace(cmd, public_report_id=str(cmd.issue_id))
    key = p.get("attribute[request_id]")
    await execute(
        request.app.state.store,
        issue_decider,
        issue_stream(cmd.issue_id),
        cmd,
        EventMeta(
            source=principal.department,
            actor=p.get("email") or principal.department,
            grid_path=cmd.grid_path,
            occurred_at=cmd.found_at,
        ),
        f"{principal.department}:open311:{key}" if key else None,
    )
    return [{"service_request_id": str(cmd.issue_id), "service_notice": "已受理 accepted", "account_id": None}]


def _as_request(row: Any) -> dict[str, Any]:
    updated: datetime = row["updated_at"]
    return {
        "service_request_id": str(row["issue_id"]),
        "status": "closed" if row["status"] in CLOSED else "open",
        "status_notes": row["status"],
        "service_code": row["category"],
        "service_name": row["category"],
        "description": row["description"],
        "agency_responsible": row["responsible_unit"],
        "requested_datetime": row["found_at"].isoformat(),
        "updated_datetime": updated.isoformat(),
        "expected_datetime": row["deadline"].isoformat() if row["deadline"] else None,
        "address": row["location"],
        "address_id": row["grid_path"],
        "media_url": None,
    }


_COLS = "issue_id, status, category, description, responsible_unit, found_at, updated_at, deadline, location, grid_path"


@router.get("/requests.json")
async def get_requests(
    request: Request,
    service_request_id: str | None = None,
    service_code: str | None = None,
    status_: str | None = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
) -> list[dict[str, Any]]:
    status_ = status_ or request.query_params.get("status")
    where: list[str] = ["method = 'public_report'"]
    args: list[Any] = []
    if service_request_id:
        try:
            ids = [UUID(x) for x in service_request_id.split(",")]
        except ValueError:
            raise _error(status.HTTP_400_BAD_REQUEST, "service_request_id must be ids separated by commas") from None
        args.append(ids)
        where.append(f"issue_id = ANY(${len(args)})")
    if service_code:
        args.append(service_code)
        where.append(f"category = ${len(args)}")
    if status_ in ("open", "closed"):
        args.append(list(CLOSED))
        where.append(f"{'' if status_ == 'closed' else 'NOT '}(status = ANY(${len(args)}))")
    if start_date:
        args.append(start_date)
        where.append(f"found_at >= ${len(args)}")
    if end_date:
        args.append(end_date)
        where.append(f"found_at < ${len(args)}")
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT {_COLS} FROM inspection_issues WHERE {' AND '.join(where)} ORDER BY found_at DESC LIMIT 1000",
            *args,
        )
    return [_as_request(r) for r in rows]


@router.get("/requests/{request_id}.json")
async def get_request(request_id: UUID, request: Request) -> list[dict[str, Any]]:
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(f"SELECT {_COLS} FROM inspection_issues WHERE issue_id = $1", request_id)
    if row is None:
        # Accepted but not yet on the problem list: answer from the event store.
        envs = await request.app.state.store.load(issue_stream(request_id))
        if not envs or envs[0].payload.get("method") != "public_report":
            raise _error(status.HTTP_404_NOT_FOUND, f"no service request {request_id}")
        state = issue_decider.fold(registry.payload(e) for e in envs)
        found = envs[0].payload
        row = {
            "issue_id": request_id,
            "status": state.status,
            "category": state.category,
            "description": found["description"],
            "responsible_unit": state.responsible_unit,
            "found_at": state.found_at,
            "updated_at": envs[-1].occurred_at,
            "deadline": state.deadline,
            "location": found.get("location"),
            "grid_path": state.grid_path,
        }
    return [_as_request(row)]
