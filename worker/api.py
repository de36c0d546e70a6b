"""The Wickson API client: one request, one classified answer. Knows nothing of Celery.

`WicksonClient.delete_batch` returns a `BatchOutcome` for a 200 (per id: deleted, failed
with the API's reason, or unaccounted) and raises an `errors.ApiError` subclass for
everything else. httpx errors are translated in exactly one place (`_transport_errors`).
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from worker.errors import (
    ApiError,
    ApiUnreachable,
    AuthFailed,
    BadRequest,
    JobStopping,
    OutcomeUnknown,
    RateLimited,
    ServerError,
)

DELETE_PATH = "/v1/media/batch"
MAX_ERROR_CHARS = 300
"""An API error message is cut to this length (after the key is masked in it)."""
NOT_FOUND_WORDS = (
    "not found",
    "not_found",
    "notfound",
    "does not exist",
    "no such",
    "already deleted",
)


# -- the wire format (pydantic at the edge) ----------------------------------------------


class DeleteRequest(BaseModel):
    media_ids: list[str] = Field(min_length=1, max_length=100)
    reason: str | None = None


class _Deleted(BaseModel):
    count: int = 0
    media_ids: list[str] = []
    hd_vectors: int = 0
    ld_vectors: int = 0


class _Failed(BaseModel):
    count: int = 0
    media_ids: list[str] = []
    reasons: dict[str, str] = {}


class _Data(BaseModel):
    deleted: _Deleted
    failed: _Failed = _Failed()


class _Metadata(BaseModel):
    operation_id: str | None = None
    timestamp: str | None = None
    processing_time_ms: float | None = None
    reason: str | None = None


class DeleteResponse(BaseModel):
    """The 200 body."""

    model_config = ConfigDict(extra="ignore")
    success: bool = True
    message: str | None = None
    data: _Data
    metadata: _Metadata = _Metadata()


class _ErrorInfo(BaseModel):
    code: str = "UNKNOWN"
    details: dict[str, object] = {}


class ErrorResponse(BaseModel):
    """The error body of 4xx/5xx answers."""

    model_config = ConfigDict(extra="ignore")
    success: bool = False
    message: str | None = None
    error: _ErrorInfo = _ErrorInfo()


# -- classification (pure) ---------------------------------------------------------------


@dataclass
class BatchOutcome:
    """A 200 answer, checked against what was asked.

    `unaccounted` ids were requested but the answer does not say what happened to them
    (missing from both lists, or in both): the caller retries them, never assumes them
    deleted. `anomalies` says what was wrong with the body, for the log.
    """

    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unaccounted: list[str] = field(default_factory=list)
    hd_vectors: int = 0
    ld_vectors: int = 0
    operation_id: str = ""
    anomalies: list[str] = field(default_factory=list)
    limit: float | None = None
    """The request rate the API announced in its rate-limit headers, if any."""


def classify_success(requested: Sequence[str], body: DeleteResponse) -> BatchOutcome:
    """Turn a 200 body into per-id outcomes, trusting only ids that were requested."""
    asked = set(requested)
    deleted_set = set(body.data.deleted.media_ids)
    failed_set = set(body.data.failed.media_ids) | set(body.data.failed.reasons)
    out = BatchOutcome(
        hd_vectors=body.data.deleted.hd_vectors,
        ld_vectors=body.data.deleted.ld_vectors,
        operation_id=body.metadata.operation_id or "",
    )
    stray = (deleted_set | failed_set) - asked
    if stray:
        out.anomalies.append(f"{len(stray)} ids in the answer were never requested")
    both = deleted_set & failed_set
    if both:
        out.anomalies.append(f"{len(both)} ids listed both deleted and failed")
    for media_id in dict.fromkeys(requested):
        if media_id in both:
            out.unaccounted.append(media_id)
        elif media_id in deleted_set:
            out.deleted.append(media_id)
        elif media_id in failed_set:
            out.failed[media_id] = (
                body.data.failed.reasons.get(media_id) or "failed (no reason given)"
            )
        else:
            out.unaccounted.append(media_id)
    if out.unaccounted and not both:
        out.anomalies.append(f"{len(out.unaccounted)} requested ids missing from the answer")
    if body.data.deleted.count != len(deleted_set) or body.data.failed.count != len(
        set(body.data.failed.media_ids)
    ):
        out.anomalies.append("counts disagree with the id lists")
    return out


def is_not_found(reason: str) -> bool:
    """Whether a per-id failure reason says the id does not exist (any more)."""
    text = reason.lower()
    return any(word in text for word in NOT_FOUND_WORDS)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


_POLICY = re.compile(r"(?:^|[;,\s])q=(\d+(?:\.\d+)?)(?:.*?;\s*w=(\d+(?:\.\d+)?))?")


def announced_limit(headers: Mapping[str, str]) -> float | None:
    """The request rate (per second) a response announces, from `RateLimit-Policy`
    (IETF draft: q=quota;w=window) or `X-RateLimit-Limit` (taken as per second), else None."""
    lowered = {k.lower(): v for k, v in headers.items()}
    policy = lowered.get("ratelimit-policy")
    if policy:
        match = _POLICY.search(policy)
        if match:
            quota, window = float(match.group(1)), float(match.group(2) or 1)
            return quota / window if quota > 0 and window > 0 else None
    value = lowered.get("x-ratelimit-limit", "").strip()
    try:
        limit = float(value.split(",")[0]) if value else 0.0
    except ValueError:
        return None
    return limit if limit > 0 and math.isfinite(limit) else None


def classify_error(status: int, headers: Mapping[str, str], content: bytes) -> ApiError:
    """The exception for a non-200 answer, from its status, headers and error body."""
    try:
        body = ErrorResponse.model_validate_json(content)
        code, message = body.error.code, body.message or ""
    except ValidationError:
        code, message = f"HTTP_{status}", "unparseable error body"
    # Not cut here: the caller masks the key first, then cuts (a key echoed across the
    # cut would otherwise keep its first characters).
    text = f"{status} {code}: {message}"
    if status == 429:
        return RateLimited(text, retry_after_s=parse_retry_after(headers.get("retry-after")))
    if status in (401, 403):
        return AuthFailed(text, status=status, code=code)
    if status in (404, 405):
        # Not an answer of the batch endpoint: a wrong WICKSON_API_URL or a proxy.
        return JobStopping(text + " (is WICKSON_API_URL right?)", status=status, code=code)
    if status == 408:
        return OutcomeUnknown(text, status=status)
    if 400 <= status < 500:
        return BadRequest(text, status=status, code=code)
    if status >= 500:
        return ServerError(text, status=status, code=code)
    return OutcomeUnknown(f"unexpected status {status}", status=status)


# -- the client --------------------------------------------------------------------------


class WicksonClient:
    """A reusable client for the batch-delete endpoint: build one per process."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._key = api_key
        self._http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            transport=transport,
            headers={"Content-Type": "application/json", "User-Agent": "wickson-purge"},
        )

    def __repr__(self) -> str:
        return f"WicksonClient({str(self._http.base_url)!r})"

    def close(self) -> None:
        self._http.close()

    def delete_batch(self, media_ids: Sequence[str], reason: str | None = None) -> BatchOutcome:
        """Delete up to 100 ids in one request. Raises an ApiError subclass unless 200."""
        payload = DeleteRequest(media_ids=list(media_ids), reason=reason).model_dump_json(
            exclude_none=True
        )
        with _transport_errors():
            response = self._http.request(
                "DELETE",
                DELETE_PATH,
                content=payload,
                headers={"X-Api-Key": self._key.get_secret_value()},
            )
        limit = announced_limit(response.headers)
        if response.status_code != 200:
            error = classify_error(response.status_code, response.headers, response.content)
            error.limit = limit
            # An API that echoes the key must not get it into our errors (and Redis): mask,
            # then cut.
            secret = self._key.get_secret_value()
            text = str(error).replace(secret, "**********") if secret else str(error)
            error.args = (text[:MAX_ERROR_CHARS],)
            raise error
        try:
            body = DeleteResponse.model_validate_json(response.content)
        except ValidationError:
            raise OutcomeUnknown("200 with an unparseable body", status=200) from None
        outcome = classify_success(media_ids, body)
        outcome.limit = limit
        return outcome


@contextmanager
def _transport_errors() -> Iterator[None]:
    """httpx's errors become OutcomeUnknown (the request may have been processed), except
    those raised before anything was sent."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise ApiUnreachable(f"cannot connect: {type(exc).__name__}") from None
    except httpx.TimeoutException as exc:
        raise OutcomeUnknown(f"no answer in time: {type(exc).__name__}") from None
    except httpx.TransportError as exc:
        raise OutcomeUnknown(f"connection failed: {type(exc).__name__}") from None
