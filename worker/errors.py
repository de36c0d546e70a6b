"""The exceptions of wickson-purge, by what the caller can do about them.

    PurgeError
    ├── InputError            fix the input: bad id file, unknown job, job too large
    │   ├── JobNotFound
    │   └── EmptyInput        the input holds no id at all (a sweep: nothing to do)
    ├── ConfigError           fix the configuration: the worker refuses to start
    ├── StoreUnavailable      retry: Redis did not answer (nothing was committed)
    ├── BrokerUnavailable     retry: the broker took no message (the work waits in Redis)
    ├── Deferred              retry later: the wait is long, free the worker slot
    └── ApiError              an answer (or non-answer) of the Wickson API
        ├── Retryable         retry the same ids after a wait
        │   ├── RateLimited       429: wait `retry_after_s` if the server said so
        │   ├── ServerError       5xx: the ids may or may not have been deleted
        │   ├── ApiUnreachable    no connection: nothing was sent
        │   └── OutcomeUnknown    timeout, reset, unparseable 200: may have deleted
        ├── BadRequest        400: split or bisect the batch, never resend it as is
        └── JobStopping       stop the job: no request for it can succeed
            └── AuthFailed        401/403: the key is wrong, revoked or read-only

`ServerError` and `OutcomeUnknown` set `maybe_deleted`: the ids of such a request may be
gone, so a stopping job confirms them with another request instead of counting them
not_attempted, and giving up on them says so. No exception carries the API key.

`describe` turns pydantic's validation errors into the lines of our messages (settings,
sweeps files, the service's requests): one formatter, each caller naming the places.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Place = Callable[[Sequence[Any]], str]
"""Names the place of an error from its pydantic `loc` ('' for the whole input)."""


class PurgeError(Exception):
    """Base of every error this package raises on purpose."""


class InputError(PurgeError, ValueError):
    """The caller's input is wrong; the message names the value and what is allowed."""


class JobNotFound(InputError, LookupError):
    """No job with this id exists (or its retention period is over)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}: unknown id, or its results have expired")
        self.job_id = job_id


class EmptyInput(InputError):
    """The input holds no id (empty, blank lines, a header only): there is nothing to do."""


class ConfigError(PurgeError):
    """The configuration is unusable; the message names the variable."""


class StoreUnavailable(PurgeError):
    """Redis did not answer; nothing was committed and the operation can be retried."""


class BrokerUnavailable(PurgeError):
    """The broker did not take a wake-up; the work is in the store, and a keeper
    publishes the wake-ups the fleet misses once the broker answers."""


class Deferred(PurgeError):
    """A wait too long to spend holding a worker slot: come back in `countdown_s`."""

    def __init__(self, countdown_s: float, why: str, *, waited_s: float = 0.0) -> None:
        super().__init__(f"deferred {countdown_s:.2f} s: {why}")
        self.countdown_s = countdown_s
        self.why = why
        self.waited_s = waited_s
        """Seconds already spent waiting before deferring (the run's limiter wait)."""


class ApiError(PurgeError):
    """The Wickson API did not delete the batch as asked."""

    code: str = "API_ERROR"
    maybe_deleted: bool = False
    limit: float | None = None
    """The request rate the API announced in its rate-limit headers, if any."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        if code:
            self.code = code


class Retryable(ApiError):
    """Worth retrying after a backoff."""


class RateLimited(Retryable):
    """429: the fleet must pause; `retry_after_s` is the server's hint, if any."""

    code = "RATE_LIMIT_EXCEEDED"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message, status=429)
        self.retry_after_s = retry_after_s


class ServerError(Retryable):
    """5xx: the request may have deleted some ids before failing."""

    code = "PROCESSING_ERROR"
    maybe_deleted = True


class ApiUnreachable(Retryable):
    """The connection could not be made: nothing was sent, nothing can have been deleted."""

    code = "API_UNREACHABLE"


class OutcomeUnknown(Retryable):
    """No usable answer (timeout, connection error, unparseable 200): may have deleted."""

    code = "OUTCOME_UNKNOWN"
    maybe_deleted = True


class BadRequest(ApiError):
    """400: the request itself was refused; resending it unchanged cannot help."""

    code = "BAD_REQUEST"


class JobStopping(ApiError):
    """No request of this job can succeed; the job stops."""


class AuthFailed(JobStopping):
    """401/403: the key is invalid, revoked, or lacks the delete capability."""

    code = "INVALID_API_KEY"


def dotted(loc: Sequence[Any]) -> str:
    """A pydantic location as 'query.priority' (the default `Place`)."""
    return ".".join(str(part) for part in loc)


def describe(
    errors: Iterable[Mapping[str, Any]],
    *,
    place: Place = dotted,
    shown: Callable[[Mapping[str, Any]], str] = lambda _error: "",
) -> list[str]:
    """pydantic's validation errors (`exc.errors()`) as lines 'place: message', one per
    place: the alternatives of a union joined by '; or ', pydantic's 'Value error, '
    dropped, then what `shown` says of the value (never a secret's: the caller decides)."""
    found: dict[str, tuple[list[str], str]] = {}
    for error in errors:
        where = place(tuple(error.get("loc", ())))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        found.setdefault(where, ([], shown(error)))[0].append(message)
    return [
        f"{where + ': ' if where else ''}{'; or '.join(messages)}{value}"
        for where, (messages, value) in found.items()
    ]
