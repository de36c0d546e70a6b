"""/v1/jobs: submit (text, CSV, JSON; dry runs; Idempotency-Key), list, status, report,
and the controls (pause, resume, cancel, retry-failed)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from producers import control
from producers.report import REPORT_COLUMNS, dry_run_data
from producers.retry import retry_failed
from producers.submit import DryRun, IngestReport, Job, dry_run, submit
from service import ingest
from service.auth import Principal, refuse, require
from service.context import ServiceContext, get_context
from service.models import (
    DryRunResult,
    InvalidLine,
    JobList,
    JobRequest,
    JobView,
    Outcome,
    Problem,
    RetryStarted,
    Submitted,
    explain,
)
from service.views import job_view, visible_job, visible_jobs
from worker.errors import InputError
from worker.settings import ALIAS_PATTERN
from worker.store import JobState, JobStore, Priority, ReportRow

router = APIRouter(prefix="/v1", tags=["jobs"])

JobId = Path(max_length=64, description="the job's id, as submit answered it")
REPORT_CHUNK_ROWS = 1_000
"""Rows per chunk of a streamed report."""

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (400, 401, 403, 404, 409, 413, 415, 422, 503)
}
_IDS_SCHEMA = {"type": "string", "example": "vec-0000001\nvec-0000002\n"}
SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "text/plain": {"schema": _IDS_SCHEMA},
            "text/csv": {"schema": {"type": "string", "example": "media_id,title\nvec-1,a\n"}},
            "application/json": {"schema": JobRequest.model_json_schema()},
        },
    }
}


@router.post(
    "/jobs",
    status_code=202,
    response_model=Submitted,
    responses={200: {"model": DryRunResult, "description": "a dry run"}, **_PROBLEMS},
    openapi_extra=SUBMIT_BODY,
    summary="Submit a purge: ids as text/plain, text/csv (media_id column) or JSON",
)
async def create_job(
    request: Request,
    principal: Principal = Depends(require("submit")),
    reason: str | None = Query(None, max_length=1_000),
    priority: Priority | None = Query(None),
    dry_run_: bool | None = Query(None, alias="dry_run"),
    callback_url: str | None = Query(None, max_length=2_048),
    key_alias: str | None = Query(None, pattern=ALIAS_PATTERN),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key", pattern=r"^[!-~]{1,255}$"),
) -> Submitted | JSONResponse:
    """Stream the ids into staging and queue the job (202), or dry-run it (200)."""
    ctx = get_context(request)
    media = ingest.media_type(request)
    if media not in (*ingest.TEXT_TYPES, ingest.JSON_TYPE):
        raise HTTPException(
            415, f"send ids as text/plain, text/csv or application/json, not {media[:80]!r}"
        )
    body = await ingest.spool(request, max_bytes=_body_limit(ctx, media))
    params: dict[str, Any] = {
        "reason": reason, "priority": priority, "dry_run": dry_run_,
        "callback_url": callback_url, "key_alias": key_alias,
    }  # fmt: skip
    with _ingest_errors(), contextlib.closing(body):
        lines = _ids_and_params(body, media, params, ctx.settings.max_job_ids)
        _check_params(ctx, principal, params, request)
        if params["dry_run"]:
            plan = await run_in_threadpool(_dry_run, ctx, lines, params)
            return JSONResponse(_dry_run_result(plan).model_dump(mode="json"))
        job = await _submit(ctx, lines, params, media, body.sha256, idempotency_key)
    return _submitted(job)


def _body_limit(ctx: ServiceContext, media: str) -> int:
    """Bytes a body may have: JSON is parsed whole; text is bounded by the id limit."""
    if media == ingest.JSON_TYPE:
        return ctx.settings.service_max_json_bytes
    return ctx.settings.max_job_ids * ingest.BYTES_PER_LINE + 1_048_576


def _check_params(
    ctx: ServiceContext, principal: Principal, params: dict[str, Any], request: Request
) -> None:
    """Resolve the key alias (403 if not the token's) and the priority; a callback needs
    the signing secret."""
    alias = params["key_alias"] or principal.default_alias
    if not principal.sees(alias):
        raise refuse(403, f"this token may not use key alias {alias!r}", request, principal)
    if params["callback_url"] and ctx.settings.webhook_secret is None:
        raise HTTPException(422, "callback_url: the service has no WICKSON_WEBHOOK_SECRET")
    params.update(key_alias=alias, priority=params["priority"] or "normal")


@contextlib.contextmanager
def _ingest_errors() -> Iterator[None]:
    """The producer's refusals as HTTP: too many ids 413, a CSV line it cannot read 422."""
    try:
        yield
    except InputError as exc:
        if ingest.too_large(exc):
            raise HTTPException(413, str(exc)) from None
        raise
    except csv.Error as exc:  # read_lines' CSV parser on a line it cannot read
        raise HTTPException(422, f"a CSV line could not be read: {exc}") from None


def _ids_and_params(
    body: ingest.Body, media: str, params: dict[str, Any], max_ids: int
) -> Iterator[bytes] | list[str]:
    """The ids to read; a JSON body's fields fill `params` (they win over the query)."""
    if media != ingest.JSON_TYPE:
        if media == "text/csv":
            ingest.check_csv_header(body)
        return body.lines()
    try:
        request = JobRequest.model_validate(ingest.parse_json(body))
    except ValidationError as exc:
        raise HTTPException(422, explain(exc.errors())) from None
    for name in params:
        value = getattr(request, name)
        if value is not None:
            params[name] = value
    if len(request.media_ids) > max_ids:
        raise HTTPException(
            413, f"{len(request.media_ids):,} ids: over WICKSON_MAX_JOB_IDS ({max_ids:,})"
        )
    return request.media_ids


async def _submit(
    ctx: ServiceContext,
    lines: Iterator[bytes] | list[str],
    params: dict[str, Any],
    media: str,
    body_sha256: str,
    idempotency_key: str | None,
) -> Job:
    """Submit in a worker thread, under the Idempotency-Key (scoped to the key alias)."""
    store = ctx.store
    scoped = None if idempotency_key is None else f"http:{params['key_alias']}:{idempotency_key}"
    bound = False
    if scoped is not None:
        digest = ingest.request_hash(
            media, body_sha256, {k: v for k, v in params.items() if k != "dry_run"}
        )
        bound = ingest.bind_idempotency_key(store, scoped, digest, ctx.settings.job_retention_s)
    try:
        return await run_in_threadpool(
            lambda: submit(
                lines,
                reason=params["reason"],
                idempotency_key=scoped,
                settings=ctx.settings,
                client=store.redis,
                key_alias=params["key_alias"],
                priority=params["priority"],
                callback_url=params["callback_url"],
            )
        )
    except BaseException:
        if bound:
            ingest.unbind_idempotency_key(store, scoped or "")
        raise


def _dry_run(
    ctx: ServiceContext, lines: Iterator[bytes] | list[str], params: dict[str, Any]
) -> DryRun:
    return dry_run(
        lines,
        reason=params["reason"],
        settings=ctx.settings,
        client=ctx.store.redis,
        key_alias=params["key_alias"],
        priority=params["priority"],
    )


def _invalid_lines(report: IngestReport) -> list[InvalidLine]:
    return [
        InvalidLine(line=line.number, text=line.text[:200], problem=line.problem or "")
        for line in report.invalid_lines
    ]


def _dry_run_result(plan: DryRun) -> DryRunResult:
    data = dry_run_data(plan)
    data["invalid_lines"] = _invalid_lines(plan.report)
    return DryRunResult.model_validate(data)


def _submitted(job: Job) -> Submitted:
    url = f"/v1/jobs/{job.id}"
    report = job.report
    if report is None:
        return Submitted(job_id=job.id, replayed=True, status_url=url)
    return Submitted(
        job_id=job.id,
        submitted=report.submitted,
        valid=report.valid,
        invalid=report.invalid,
        duplicates=report.duplicates,
        invalid_lines=_invalid_lines(report),
        status_url=url,
    )


@router.get(
    "/jobs", response_model=JobList, responses=_PROBLEMS, summary="Recent jobs, newest first"
)
def list_jobs(
    request: Request,
    principal: Principal = Depends(require("read")),
    state: list[JobState] | None = Query(None, description="only jobs in these states"),
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=10_000),
) -> JobList:
    """A page of the token's jobs (its key aliases only)."""
    store = get_context(request).store
    states = frozenset(state) if state else None
    page, more = visible_jobs(store, principal, states, limit=limit, offset=offset)
    return JobList(
        jobs=[job_view(store, s, webhook=False) for s in page],
        next_offset=offset + limit if more else None,
    )


@router.get("/jobs/{job_id}", response_model=JobView, responses=_PROBLEMS, summary="A job's status")
def get_job(
    request: Request, job_id: str = JobId, principal: Principal = Depends(require("read"))
) -> JobView:
    """State, counters, failure reasons and webhook deliveries (`status --json`'s fields)."""
    store = get_context(request).store
    return job_view(store, visible_job(store, principal, job_id, request))


@router.get(
    "/jobs/{job_id}/report",
    responses={
        200: {"content": {"text/csv": {}, "application/x-ndjson": {}}, "description": "rows"},
        **_PROBLEMS,
    },
    response_class=StreamingResponse,
    summary="A completion report, streamed: media_id, outcome, reason, operation_id",
)
def get_report(
    request: Request,
    job_id: str = JobId,
    principal: Principal = Depends(require("read")),
    outcome: list[Outcome] | None = Query(None, description="only these outcomes"),
    fmt: Literal["csv", "jsonl"] = Query("csv", alias="format"),
) -> StreamingResponse:
    """Every unique id's outcome (or only `outcome`s), in flat memory."""
    store = get_context(request).store
    visible_job(store, principal, job_id, request)
    return report_response(store, job_id, outcome or [], fmt)


def report_response(
    store: JobStore, job_id: str, outcomes: Sequence[str], fmt: str
) -> StreamingResponse:
    """A job's report streamed as a CSV or JSONL download (only `outcomes`, if any)."""
    rows = _report_rows(store, job_id, frozenset(outcomes))
    media = "text/csv" if fmt == "csv" else "application/x-ndjson"
    filename = f"{job_id}-report.{fmt}"
    return StreamingResponse(
        _report_chunks(rows, fmt),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _report_rows(store: JobStore, job_id: str, wanted: frozenset[str]) -> Iterator[ReportRow]:
    for row in store.iter_report(job_id):
        if not wanted or row.outcome in wanted:
            yield row


def _report_chunks(rows: Iterator[ReportRow], fmt: str) -> Iterator[str]:
    """The report as text chunks of REPORT_CHUNK_ROWS rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if fmt == "csv":
        writer.writerow(REPORT_COLUMNS)
    for n, row in enumerate(rows, start=1):
        if fmt == "csv":
            writer.writerow(row)
        else:
            buffer.write(json.dumps(row._asdict()) + "\n")
        if n % REPORT_CHUNK_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _control_route(verb: str, act: Callable[[ServiceContext, str], bool], summary: str) -> None:
    """Register POST /v1/jobs/{id}/<verb>: 200 with the job, 409 if its state forbids it."""

    def route(
        request: Request, job_id: str = JobId, principal: Principal = Depends(require("control"))
    ) -> JobView:
        ctx = get_context(request)
        status = visible_job(ctx.store, principal, job_id, request)
        if not act(ctx, job_id):
            raise HTTPException(409, f"job {job_id} is {status.state}: cannot {verb} it")
        return job_view(ctx.store, ctx.store.status(job_id))

    route.__name__ = f"{verb}_job"
    route.__doc__ = summary
    router.post(
        f"/jobs/{{job_id}}/{verb}", response_model=JobView, responses=_PROBLEMS, summary=summary
    )(route)


_control_route(
    "pause", lambda ctx, j: control.pause(ctx.store, j), "Pause: it keeps its place, sends nothing"
)
_control_route(
    "resume",
    lambda ctx, j: control.resume(ctx.store, j),
    "Resume a paused job, or re-attempt what a failed or cancelled one did not attempt",
)
_control_route(
    "cancel",
    lambda ctx, j: control.cancel(ctx.store, j),
    "Cancel: no new request; ids not sent end not_attempted",
)


@router.post(
    "/jobs/{job_id}/retry-failed",
    response_model=RetryStarted,
    responses=_PROBLEMS,
    summary="A new job of the ids an ended job failed for retryable reasons",
)
def retry_job(
    request: Request, job_id: str = JobId, principal: Principal = Depends(require("control"))
) -> RetryStarted:
    """Submit the retryable failures again (once: a second call answers the same job)."""
    ctx = get_context(request)
    status = visible_job(ctx.store, principal, job_id, request)
    if not status.finished:
        raise HTTPException(
            409, f"job {job_id} is {status.state}: retry its failures once it has ended"
        )
    job = retry_failed(job_id, settings=ctx.settings, client=ctx.store.redis)
    return RetryStarted(job_id=job.id if job else None, retry_of=job_id)
