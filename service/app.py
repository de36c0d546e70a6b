"""The ASGI app: `create_app(settings)` wires the store, the tokens and the routes.

FastAPI, because the models at our edges are pydantic already and the OpenAPI document
(`/openapi.json`, `/docs`) comes with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
import structlog
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from producers.submit import store_for
from service import routes_fleet, routes_jobs
from service.auth import TokenTable
from service.context import ServiceContext
from service.models import explain
from service.settings import ServiceSettings, load_service_settings
from worker.errors import ConfigError, InputError, JobNotFound, StoreUnavailable
from worker.series import SAMPLE_EVERY_S, record_progress
from worker.store import JobStore

log = structlog.get_logger("wickson_purge.service")

DESCRIPTION = """Delete media from the Wickson API at scale: submit a job of media ids,
follow it, control it, read its completion report. Authenticate with a bearer token.
Every unique id ends with one outcome: deleted, not_found, failed or not_attempted."""


def create_app(
    settings: ServiceSettings | None = None, redis_client: redis.Redis | None = None
) -> FastAPI:
    """The service's app for `settings` (default: from the environment). Start tasks are
    published to the settings' broker by this process's Celery producer."""
    settings = settings or load_service_settings()
    from worker.celery import configure

    configure(settings)
    app = FastAPI(title="wickson-purge", version="1", description=DESCRIPTION, lifespan=_lifespan)
    app.state.ctx = ServiceContext(
        settings=settings,
        store=store_for(settings, redis_client),
        tokens=TokenTable(settings.tokens()),
    )
    if not settings.tokens():
        log.warning("service.no_tokens", hint="set WICKSON_SERVICE_TOKENS: every request is 401")
    app.include_router(routes_jobs.router)
    app.include_router(routes_fleet.router)
    _add_error_handlers(app)
    from service import console

    console.mount(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Sample job progress for the charts while serving; on shutdown, stop and delete the
    console's pending uploads."""
    sampler = asyncio.create_task(_sample_progress(app.state.ctx.store))
    yield
    sampler.cancel()
    app.state.uploads.close()


async def _sample_progress(store: JobStore) -> None:
    """record_progress every tick (one process per tick samples, whoever calls it)."""
    while True:
        try:
            await run_in_threadpool(record_progress, store)
        except (StoreUnavailable, redis.RedisError) as exc:
            log.warning("series.sample_failed", error=str(exc))
        await asyncio.sleep(SAMPLE_EVERY_S)


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    """Our exceptions as 4xx and 503: the caller's input, an unknown job, Redis away."""

    @app.exception_handler(JobNotFound)
    async def not_found(_request: Request, exc: JobNotFound) -> JSONResponse:
        return _problem(404, str(exc))

    @app.exception_handler(InputError)
    async def bad_input(_request: Request, exc: InputError) -> JSONResponse:
        return _problem(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(422, explain(exc.errors()))

    @app.exception_handler(ValidationError)
    async def bad_model(_request: Request, exc: ValidationError) -> JSONResponse:
        return _problem(422, explain(exc.errors()))

    @app.exception_handler(StoreUnavailable)
    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def unavailable(_request: Request, exc: Exception) -> JSONResponse:
        return _problem(503, f"Redis did not answer ({type(exc).__name__}); retry")

    @app.exception_handler(ConfigError)
    async def misconfigured(_request: Request, exc: ConfigError) -> JSONResponse:
        return _problem(503, f"the service is misconfigured: {exc}")
