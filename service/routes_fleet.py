"""The fleet: its rate (PUT /v1/rate), retention sweeps, and health for load balancers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from producers import control, sweeps
from service.auth import Principal, refuse, require
from service.context import get_context
from service.models import Health, Problem, RateChange, RateChanged
from service.views import visible_job
from worker.sweeps import load_sweeps

router = APIRouter(tags=["fleet"])
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (400, 401, 403, 404, 422, 503)
}


class SweepList(BaseModel):
    """Retention sweeps of the token's key aliases: schedule, last run, next run."""

    sweeps: list[dict[str, Any]]


@router.put("/v1/rate", response_model=RateChanged, responses=_PROBLEMS, summary="Rethrottle")
def put_rate(
    change: RateChange, request: Request, principal: Principal = Depends(require("control"))
) -> RateChanged:
    """Change the fleet's rate for a key alias, or one job's own limit, for every worker now."""
    ctx = get_context(request)
    if change.job_id is not None:
        visible_job(ctx.store, principal, change.job_id, request)
    elif not principal.sees(change.key_alias):
        raise refuse(
            403, f"this token may not use key alias {change.key_alias!r}", request, principal
        )
    message = control.rethrottle(
        ctx.store,
        change.rate,
        job_id=change.job_id,
        key_alias=change.key_alias,
        settings=ctx.settings,
    )
    return RateChanged(message=message)


@router.get("/v1/sweeps", response_model=SweepList, responses=_PROBLEMS, summary="Sweeps")
def get_sweeps(request: Request, principal: Principal = Depends(require("read"))) -> SweepList:
    """The sweeps of WICKSON_SWEEPS_FILE whose key alias this token sees."""
    ctx = get_context(request)
    if ctx.settings.sweeps_file is None:
        return SweepList(sweeps=[])
    mine = [s for s in load_sweeps(ctx.settings.sweeps_file) if principal.sees(s.key_alias)]
    return SweepList(sweeps=sweeps.overview(mine, ctx.store, datetime.now(UTC)))


@router.get("/healthz", response_model=Health, tags=["health"], summary="The process answers")
def healthz() -> Health:
    """Liveness: the process serves requests (Redis is not asked)."""
    return Health()


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Problem}},
    tags=["health"],
    summary="Redis answers",
)
def readyz(request: Request) -> Health | JSONResponse:
    """Readiness: 200 when Redis answers a PING, 503 otherwise."""
    try:
        get_context(request).store.redis.ping()
    except Exception as exc:  # any failure to reach Redis means not ready
        return JSONResponse({"detail": f"Redis did not answer: {type(exc).__name__}"}, 503)
    return Health()
