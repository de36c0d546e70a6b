"""The web console: server-rendered pages (Jinja2) over the same store and producer code
as the API; live updates by polling small endpoints, no JavaScript build step.

Sign-in takes a service token and opens a session (service/sessions.py); every form
carries the session's CSRF token; a token without `control` sees no control buttons."""

from __future__ import annotations

import csv
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData, UploadFile

from producers import control
from producers.report import duration
from producers.submit import dry_run, submit
from service import sessions
from service.auth import refuse
from service.context import ServiceContext, get_context
from service.models import JobView
from service.routes_jobs import report_response
from service.settings import Scope
from service.uploads import Uploads
from service.views import job_view, visible_job, visible_jobs
from worker.errors import InputError
from worker.series import series
from worker.store import PRIORITIES, JobStatus

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/console", include_in_schema=False)
ACTIVE = frozenset({"queued", "running", "paused", "stopping", "staging"})


class ConsoleError(Exception):
    """A refusal shown as a page (or, for a signed-out user, a trip to the sign-in page)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def mount(app: FastAPI) -> None:
    """Add the console's routes, static files and error pages to `app`."""
    app.state.uploads = Uploads()
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(ConsoleError)
    async def console_error(request: Request, exc: ConsoleError) -> Response:
        if exc.status == 401:
            return RedirectResponse("/console/login", status_code=303)
        session = sessions.current(get_context(request), request)
        return templates.TemplateResponse(
            request,
            "error.html",
            {"session": session, "message": exc.message},
            exc.status,
            headers=security_headers(),
        )

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/console/jobs", status_code=307)


def signed_in(request: Request) -> sessions.Session:
    """The request's console session (a dependency); signed out: to the sign-in page."""
    session = sessions.current(get_context(request), request)
    if session is None:
        raise ConsoleError(401, "sign in first")
    return session


def allowed(request: Request, session: sessions.Session, scope: Scope) -> None:
    """Refuse (403 page, logged with the token's name) a session without `scope`."""
    if not session.principal.can(scope):
        refuse(403, f"this token lacks the {scope!r} scope", request, session.principal)
        raise ConsoleError(403, f"Your token may not do this (it lacks the “{scope}” scope).")


async def checked_form(request: Request, session: sessions.Session) -> FormData:
    """The posted form, if it carries the session's CSRF token (else a logged 403)."""
    form = await request.form()
    token = form.get("csrf")
    if not session.csrf_ok(token if isinstance(token, str) else None):
        refuse(403, "CSRF token missing or wrong", request, session.principal)
        raise ConsoleError(403, "This form has expired or did not come from this console.")
    return form


def page(
    request: Request, name: str, session: sessions.Session | None, **context: Any
) -> HTMLResponse:
    """A rendered page whose scripts run only by this response's nonce (CSP), unframable."""
    nonce = secrets.token_urlsafe(16)
    response = templates.TemplateResponse(
        request, name, {"session": session, "nonce": nonce, **context}
    )
    response.headers.update(security_headers(nonce))
    return response


def security_headers(nonce: str | None = None) -> dict[str, str]:
    """No framing (a Cancel button under someone else's page), no foreign scripts."""
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    return {
        "Content-Security-Policy": (
            f"default-src 'self'; script-src {script}; style-src 'self' 'unsafe-inline';"
            " img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


def console_job(
    request: Request, session: sessions.Session, job_id: str, scope: Scope = "read"
) -> JobStatus:
    """The job, if the session's token has `scope` (else a 403 page) and may see the job
    (else a 404 page); ids longer than any job's are cut."""
    allowed(request, session, scope)
    try:
        return visible_job(get_context(request).store, session.principal, job_id[:64], request)
    except HTTPException as exc:
        raise ConsoleError(exc.status_code, str(exc.detail)) from None


def row(view: JobView, now: float) -> dict[str, Any]:
    """A job as the jobs table shows it."""
    data = view.model_dump()
    data["percent"] = round(100 * view.done / view.total, 1) if view.total else 100.0
    data["age"] = duration(now - view.created_at) if view.created_at else "-"
    return data


# -- signing in ----------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request) -> HTMLResponse:
    """The sign-in form, with a CSRF token bound to a short-lived cookie."""
    token = secrets.token_urlsafe(32)
    response = page(request, "login.html", None, csrf=token, error=None)
    sessions.set_cookie(response, sessions.LOGIN_CSRF_COOKIE, token, 3_600, _https(request))
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the token; open a session and go to the jobs list, or say it is wrong."""
    ctx = get_context(request)
    form = await request.form()
    expected = request.cookies.get(sessions.LOGIN_CSRF_COOKIE, "")
    presented = form.get("csrf")
    if (
        not expected
        or not isinstance(presented, str)
        or not secrets.compare_digest(presented, expected)
    ):
        refuse(403, "sign-in CSRF token missing or wrong", request, None)
        raise ConsoleError(403, "This sign-in form has expired: reload the page and try again.")
    token = form.get("token")
    principal = ctx.tokens.authenticate(token.strip()) if isinstance(token, str) else None
    if principal is None:
        refuse(401, "console sign-in with an unknown token", request, None)
        return page(request, "login.html", None, csrf=expected, error="That token is not valid.")
    response = RedirectResponse("/console/jobs", status_code=303)
    sessions.start(ctx, principal, response, _https(request))
    response.delete_cookie(sessions.LOGIN_CSRF_COOKIE, path=sessions.COOKIE_PATH)
    return response


@router.post("/logout")
async def logout(request: Request, session: sessions.Session = Depends(signed_in)) -> Response:
    await checked_form(request, session)
    response = RedirectResponse("/console/login", status_code=303)
    sessions.end(get_context(request), session, response)
    return response


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


# -- jobs ------------------------------------------------------------------------------------


@router.get("")
def console_root() -> RedirectResponse:
    return RedirectResponse("/console/jobs", status_code=303)


@router.get("/jobs")
def jobs_page(request: Request, session: sessions.Session = Depends(signed_in)) -> HTMLResponse:
    """Recent jobs: state, priority, progress, ids/s, age, reason; rows refresh live."""
    allowed(request, session, "read")
    return page(request, "jobs.html", session, rows=_rows(request, session))


@router.get("/jobs/rows")
def jobs_rows(request: Request, session: sessions.Session = Depends(signed_in)) -> HTMLResponse:
    """The jobs table's rows alone (what the page polls)."""
    allowed(request, session, "read")
    return page(request, "_job_rows.html", session, rows=_rows(request, session))


def _rows(request: Request, session: sessions.Session) -> list[dict[str, Any]]:
    store = get_context(request).store
    found, _more = visible_jobs(store, session.principal, None, limit=100, offset=0)
    now = time.time()
    return [row(job_view(store, s, webhook=False), now) for s in found]


@router.get("/jobs/{job_id}")
def job_page(
    request: Request, job_id: str, session: sessions.Session = Depends(signed_in)
) -> HTMLResponse:
    """One job: counters, failure reasons, live rate chart, reports, controls."""
    status = console_job(request, session, job_id)
    view = job_view(get_context(request).store, status)
    return page(request, "job.html", session, job=row(view, time.time()), active=ACTIVE)


@router.get("/jobs/{job_id}/live")
def job_live(
    request: Request, job_id: str, session: sessions.Session = Depends(signed_in)
) -> JSONResponse:
    """The job's view as JSON, polled by its page."""
    status = console_job(request, session, job_id)
    store = get_context(request).store
    data = row(job_view(store, status, webhook=False), time.time())
    data["series"] = [[s.t, s.done, s.rate_limited] for s in series(store, status.job_id)]
    return JSONResponse(data)


@router.get("/jobs/{job_id}/report")
def job_report(
    request: Request,
    job_id: str,
    outcome: str | None = None,
    fmt: str = "csv",
    session: sessions.Session = Depends(signed_in),
) -> Response:
    """A report download (the API's, with the session's rights)."""
    console_job(request, session, job_id)
    if fmt not in ("csv", "jsonl") or outcome not in (None, "deleted", "not_found", "failed",
                                                     "not_attempted", "pending"):  # fmt: skip
        raise ConsoleError(422, "unknown report format or outcome")
    return report_response(get_context(request).store, job_id, [outcome] if outcome else [], fmt)


@router.post("/jobs/{job_id}/{action}")
async def job_action(
    request: Request, job_id: str, action: str, session: sessions.Session = Depends(signed_in)
) -> Response:
    """Pause, resume or cancel (cancel only from its confirmation page), then the job page."""
    await checked_form(request, session)
    status = console_job(request, session, job_id, "control")
    ctx = get_context(request)
    done = await run_in_threadpool(_act, ctx, action, status.job_id)
    if done is None:
        raise ConsoleError(404, f"no action {action!r}")
    if not done:
        raise ConsoleError(409, f"Job {status.job_id} is {status.state}: it cannot {action} now.")
    return RedirectResponse(f"/console/jobs/{status.job_id}", status_code=303)


def _act(ctx: ServiceContext, action: str, job_id: str) -> bool | None:
    if action == "pause":
        return control.pause(ctx.store, job_id)
    if action == "resume":
        return control.resume(ctx.store, job_id)
    if action == "cancel":
        return control.cancel(ctx.store, job_id)
    return None


@router.get("/jobs/{job_id}/cancel")
def cancel_page(
    request: Request, job_id: str, session: sessions.Session = Depends(signed_in)
) -> HTMLResponse:
    """Ask before cancelling: what stops, and that it cannot be undone."""
    status = console_job(request, session, job_id, "control")
    view = job_view(get_context(request).store, status, webhook=False)
    return page(request, "cancel.html", session, job=row(view, time.time()))


# -- a new purge -----------------------------------------------------------------------------


@router.get("/new")
def new_page(request: Request, session: sessions.Session = Depends(signed_in)) -> HTMLResponse:
    """Upload a file of ids, with a reason and a priority."""
    allowed(request, session, "submit")
    return page(request, "new.html", session, priorities=PRIORITIES, error=None)


@router.post("/new")
async def new_dry_run(
    request: Request, session: sessions.Session = Depends(signed_in)
) -> HTMLResponse:
    """Keep the upload, dry-run it, and show the counts, invalid lines and ETA to confirm."""
    form = await checked_form(request, session)
    allowed(request, session, "submit")
    ctx = get_context(request)
    upload, reason, priority = (
        form.get("ids"),
        str(form.get("reason") or ""),
        str(form.get("priority") or "normal"),
    )
    if not isinstance(upload, UploadFile) or not upload.filename:
        return page(
            request, "new.html", session, priorities=PRIORITIES, error="Choose a file of ids."
        )
    uploads: Uploads = request.app.state.uploads
    meta = {"token": session.principal.name, "reason": reason, "priority": priority,
            "filename": upload.filename, "key_alias": session.principal.default_alias}  # fmt: skip
    upload_id = await run_in_threadpool(uploads.save, upload.file, meta)
    path, _ = uploads.path(upload_id, session.principal.name) or (None, None)
    assert path is not None
    try:
        plan = await run_in_threadpool(_dry_run, ctx, path, meta)
    except (InputError, csv.Error) as exc:  # bad input: say so on the form
        uploads.discard(upload_id)
        return page(request, "new.html", session, priorities=PRIORITIES, error=str(exc))
    return page(request, "dry_run.html", session, plan=plan, meta=meta, upload_id=upload_id,
                estimate=duration(plan.estimate_s))  # fmt: skip


def _dry_run(ctx: ServiceContext, path: Path, meta: dict[str, Any]) -> Any:
    with open(path, "rb") as source:
        return dry_run(source, **_job_options(ctx, meta))


def _job_options(ctx: ServiceContext, meta: dict[str, Any]) -> dict[str, Any]:
    """What the dry run and the submit of an upload are both given: its reason, key alias
    and priority, and the service's settings and Redis."""
    return {
        "reason": meta["reason"] or None,
        "settings": ctx.settings,
        "client": ctx.store.redis,
        "key_alias": meta["key_alias"],
        "priority": meta["priority"],
    }


@router.post("/new/confirm")
async def new_confirm(request: Request, session: sessions.Session = Depends(signed_in)) -> Response:
    """Submit the upload the dry run showed; then its job page."""
    form = await checked_form(request, session)
    allowed(request, session, "submit")
    uploads: Uploads = request.app.state.uploads
    upload_id = str(form.get("upload_id") or "")
    found = uploads.path(upload_id, session.principal.name)
    if found is None:
        raise ConsoleError(
            404, "This upload has expired or was submitted already: upload it again."
        )
    path, meta = found
    ctx = get_context(request)
    try:
        job = await run_in_threadpool(_submit, ctx, path, meta)
    except (InputError, csv.Error) as exc:
        raise ConsoleError(422, str(exc)) from None
    finally:
        uploads.discard(upload_id)
    return RedirectResponse(f"/console/jobs/{job}", status_code=303)


def _submit(ctx: ServiceContext, path: Path, meta: dict[str, Any]) -> str:
    with open(path, "rb") as source:
        return submit(source, **_job_options(ctx, meta)).id
