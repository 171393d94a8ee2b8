"""HTTP side of the dashboard: the page, the session, the grid the operator may see, the panels
as one snapshot, and the live stream (SSE). Everything is read-only and limited to the
operator's grid area."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from services.dashboard.feed import Feed, FeedHub
from services.dashboard.session import COOKIE, HEALTH_SCOPE, SessionSigner, bearer_viewer, viewer
from shared.auth import Principal
from shared.grid import Grid, GridLevel, level_of, within

router = APIRouter(prefix="/v1")

AreaParam = Query(
    default=None,
    max_length=200,
    description="Narrow the view to a grid node inside your area (default: your whole area).",
)


def _grid(request: Request) -> Grid:
    grid: Grid = request.app.state.grid
    return grid


def _hub(request: Request) -> FeedHub:
    hub: FeedHub = request.app.state.hub
    return hub


def view_area(principal: Principal, grid: Grid, area: str | None) -> str:
    """The area to show: the principal's own, or a node inside it (403 outside, 422 unknown)."""
    if area is None:
        return principal.area
    if area not in grid:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{area} is not a grid node of {grid.district}")
    if not within(area, principal.area):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"department {principal.department} sees only {principal.area}, not {area}"
        )
    return area


async def _feed(request: Request, principal: Principal, area: str | None) -> Feed:
    where = view_area(principal, _grid(request), area)
    return await _hub(request).feed(where, HEALTH_SCOPE in principal.scopes)


@router.post("/session", tags=["session"])
async def open_session(
    request: Request, response: Response, principal: Principal = Depends(bearer_viewer)
) -> dict[str, Any]:
    """Log in with a department token (Bearer): returns who you are and sets the session cookie
    that the live stream uses. Call it again before `expires_at` to renew."""
    signer: SessionSigner = request.app.state.signer
    token = request.headers["authorization"].partition(" ")[2].strip()
    value, expires = signer.make(token)
    response.set_cookie(
        COOKIE,
        value,
        max_age=signer.ttl_s,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/v1",
    )
    async with request.app.state.pool.acquire() as conn:
        dept = await conn.fetchrow("SELECT name, name_en FROM departments WHERE code = $1", principal.department)
    return {
        "department": principal.department,
        "name": dept["name"] if dept else principal.department,
        "name_en": dept["name_en"] if dept else principal.department,
        "kind": principal.kind,
        "area": principal.area,
        "health": HEALTH_SCOPE in principal.scopes,
        "expires_at": expires,
    }


@router.delete("/session", status_code=204, tags=["session"])
async def close_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/v1")


@router.get("/meta", tags=["view"])
async def meta(request: Request, principal: Principal = Depends(viewer)) -> dict[str, Any]:
    """The grid nodes you may see (district down to communities, with their unit grids), and the
    display names of categories and departments."""
    grid = _grid(request)
    nodes = []
    for path, node in grid.nodes.items():
        if level_of(path) > GridLevel.COMMUNITY or not principal.sees(path):
            continue
        nodes.append(
            {
                "path": path,
                "name": node.name,
                "kind": node.kind,
                "population": node.population,
                "children": [c for c in node.children if principal.sees(c)],
            }
        )
    async with request.app.state.pool.acquire() as conn:
        departments = {
            r["code"]: {"name": r["name"], "name_en": r["name_en"]}
            for r in await conn.fetch("SELECT code, name, name_en FROM departments ORDER BY code")
        }
    return {
        "district": grid.district,
        "area": principal.area,
        "nodes": nodes,
        "categories": request.app.state.categories,
        "departments": departments,
    }


@router.get("/panels", tags=["view"])
async def panels(request: Request, principal: Principal = Depends(viewer), area: str | None = AreaParam) -> Response:
    """Every panel now, as the stream's opening snapshot (for scripts and first paint)."""
    feed = await _feed(request, principal, area)
    body = feed.snapshot("fresh").split(b"\ndata: ", 1)[1].rstrip(b"\n")
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


@router.get("/stream", tags=["view"])
async def stream(
    request: Request,
    principal: Principal = Depends(viewer),
    area: str | None = AreaParam,
    last_event_id_q: str | None = Query(
        default=None, alias="last_event_id", max_length=64, description="Resume after this id (a reloaded page)."
    ),
    last_event_id: str | None = Header(default=None, alias="Last-Event-ID", max_length=64),
) -> StreamingResponse:
    """Server-Sent Events: a `snapshot` event, then a `panel` event per changed panel, each with
    an id `<epoch>.<seq>`. Reconnecting with Last-Event-ID (header, as EventSource does, or the
    `last_event_id` parameter) resumes exactly after it."""
    feed = await _feed(request, principal, area)
    return StreamingResponse(
        _hub(request).stream(feed, last_event_id or last_event_id_q),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Connection": "keep-alive"},
    )
