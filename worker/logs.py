"""Logging: structlog everywhere, JSON lines in production, readable in a terminal.

Our lines are structlog's; the stdlib's (Celery, kombu, httpx) go through the same
processors by `structlog.stdlib.ProcessorFormatter` on the root logger, so both render
alike and `scrub_secrets` runs last before rendering on every line: any occurrence of a
registered secret (the API key) in any value becomes '**********', whoever logged it.

Inside `batch_context(run)` every line, ours or a library's, carries the run's job_id,
batch, attempt (failed API attempts so far) and operation_id (the last API operation,
once there is one), read when the line is logged.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol, TextIO

import structlog

_SECRETS: set[str] = set()
MASK = "**********"


def register_secret(value: str) -> None:
    """Never let `value` reach a log line again (short values are ignored: too generic)."""
    if len(value) >= 4:
        _SECRETS.add(value)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _SECRETS:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask(v) for v in value)
    if isinstance(value, BaseException):
        return _mask(repr(value))
    return value


def scrub_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask every registered secret in every value."""
    if _SECRETS:
        for key, value in event_dict.items():
            event_dict[key] = _mask(value)
    return event_dict


class BatchLike(Protocol):
    """What a log line needs of a batch run (`worker.batch.BatchRun` has it)."""

    job_id: str
    index: int
    attempts: int
    operation_id: str


_BATCH: ContextVar[BatchLike | None] = ContextVar("wickson_purge_batch", default=None)


@contextmanager
def batch_context(run: BatchLike) -> Iterator[None]:
    """Every line logged inside (this thread or task) carries `run`'s ids, live."""
    token = _BATCH.set(run)
    try:
        yield
    finally:
        _BATCH.reset(token)


def add_batch_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: job_id, batch, attempt, operation_id of the current run
    (values the line sets itself win)."""
    run = _BATCH.get()
    if run is not None:
        event_dict.setdefault("job_id", run.job_id)
        event_dict.setdefault("batch", run.index)
        event_dict.setdefault("attempt", run.attempts)
        if run.operation_id:
            event_dict.setdefault("operation_id", run.operation_id)
    return event_dict


_HANDLER_NAME = "wickson-purge"
QUIET_LOGGERS = {
    "httpx": logging.WARNING,  # "HTTP Request: DELETE ..." per request
    "httpcore": logging.WARNING,
    "celery.worker.strategy": logging.WARNING,  # "Task ... received" per message
    "celery.app.trace": logging.WARNING,  # "Task ... succeeded/retry" (errors still show)
}
"""Loggers whose INFO is a line per request or message, without job or batch: `batch.run`
says it once per run, with both. At DEBUG they all speak."""


def configure_logging(
    *, json: bool | None = None, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Configure structlog, and the stdlib root logger to render through the same
    processors, writing to `stream` (stderr). JSON unless `stream` is a terminal. Calling
    it again replaces the previous configuration."""
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_batch_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, scrub_secrets, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    _configure_stdlib(shared, renderer, level, stream)


def _configure_stdlib(shared: list[Any], renderer: Any, level: int, stream: TextIO) -> None:
    """Route stdlib records (Celery, kombu, httpx) through `shared`, the scrubber and
    `renderer`, by one handler on the root logger (ours replaced, others' kept)."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(level, quiet) if level > logging.DEBUG else level)
