"""Logging: structlog everywhere, JSON lines in production, readable in a terminal.

`scrub_secrets` runs last before rendering: any occurrence of a registered secret (the
API key) in any value of any log line becomes '**********', whoever logged it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

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


def configure_logging(*, json: bool | None = None, level: int = logging.INFO) -> None:
    """Configure structlog (and the stdlib root logger) once per process."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrub_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
