"""Reading jobs for a token: tenant checks and the public view of a job."""

from __future__ import annotations

import time

from fastapi import HTTPException, Request

from producers.report import ids_per_s
from service.auth import Principal, refuse
from service.models import JobView
from worker.errors import JobNotFound
from worker.store import JobState, JobStatus, JobStore
from worker.webhooks import status_payload, webhook_status

SCAN_MAX = 10_000
"""Newest jobs looked at for a listing (the store keeps a week of them)."""


def visible_job(store: JobStore, principal: Principal, job_id: str, request: Request) -> JobStatus:
    """The job, if this token may see it; 404 alike for an unknown or another tenant's job."""
    try:
        status = store.status(job_id)
    except JobNotFound:
        raise HTTPException(404, f"no job {job_id[:64]!r}") from None
    if not principal.sees(status.key_alias):
        raise refuse(404, f"no job {job_id!r}", request, principal)
    return status


def job_view(store: JobStore, status: JobStatus, *, webhook: bool = True) -> JobView:
    """What GET /v1/jobs/{id} answers: the status, ids/s and (if asked) its webhook."""
    data = status_payload(status)
    rate = ids_per_s(status, time.time())
    data["ids_per_s"] = None if rate is None else round(rate, 1)
    if webhook:
        data["webhook"] = webhook_status(store, status.job_id)
    return JobView.model_validate(data)


def visible_jobs(
    store: JobStore,
    principal: Principal,
    states: frozenset[JobState] | None,
    *,
    limit: int,
    offset: int,
) -> tuple[list[JobStatus], bool]:
    """A page of the token's jobs, newest first, and whether more follow."""
    want = offset + limit + 1
    fetch = want
    while True:
        found = store.list_jobs(states, limit=fetch, scan_max=SCAN_MAX)
        mine = [s for s in found if principal.sees(s.key_alias)]
        if len(mine) >= want or len(found) < fetch or fetch >= SCAN_MAX:
            break
        fetch = min(fetch * 4, SCAN_MAX)  # other tenants' jobs took places: look further
    return mine[offset : offset + limit], len(mine) > offset + limit
