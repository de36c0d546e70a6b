"""The wire form of answers: JSON envelopes of the contract and rate-limit headers.

Pure: times are passed in. Bodies are compact JSON bytes, built once per request.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from email.utils import formatdate

from ops.fake_api.config import RateHeaders, RetryAfterFormat
from ops.fake_api.outcome import Outcome

INVALID_API_KEY = "INVALID_API_KEY"
INSUFFICIENT_PERMISSIONS = "INSUFFICIENT_PERMISSIONS"
RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
PROCESSING_ERROR = "PROCESSING_ERROR"

# Every error code of the contract and its HTTP status.
ERROR_STATUS = {
    "MISSING_MEDIA_IDS": 400,
    "INVALID_MEDIA_IDS": 400,
    "BATCH_TOO_LARGE": 400,
    INVALID_API_KEY: 401,
    INSUFFICIENT_PERMISSIONS: 403,
    RATE_LIMIT_EXCEEDED: 429,
    PROCESSING_ERROR: 500,
}

ERROR_MESSAGES = {
    INVALID_API_KEY: "Invalid or missing API key",
    INSUFFICIENT_PERMISSIONS: "API key lacks the delete capability",
    RATE_LIMIT_EXCEEDED: "Too many requests, slow down",
    PROCESSING_ERROR: "Error during deletion processing",
}


def _dumps(document: object) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(document, separators=(",", ":")).encode()


def error_body(code: str, message: str, request_id: str, details: dict[str, object]) -> bytes:
    """The contract's error envelope."""
    return _dumps(
        {
            "success": False,
            "message": message,
            "error": {"code": code, "details": {**details, "request_id": request_id}},
        }
    )


def success_body(
    outcome: Outcome, operation_id: str, reason: str | None, processing_ms: int, wall_now: float
) -> bytes:
    """The contract's 200 body for `outcome` (which may have been distorted by a lie)."""
    deleted, failed = outcome.deleted_count, outcome.failed_count
    return _dumps(
        {
            "success": True,
            "message": f"Batch deletion completed: {deleted} deleted, {failed} failed",
            "data": {
                "deleted": {
                    "count": deleted,
                    "media_ids": outcome.deleted,
                    "hd_vectors": outcome.hd_vectors,
                    "ld_vectors": outcome.ld_vectors,
                },
                "failed": {
                    "count": failed,
                    "media_ids": list(outcome.failed),
                    "reasons": outcome.failed,
                },
            },
            "metadata": {
                "operation_id": operation_id,
                "timestamp": iso_utc(wall_now),
                "processing_time_ms": processing_ms,
                "reason": reason,
            },
        }
    )


def garble(body: bytes) -> bytes:
    """A body cut in half: it looks like JSON and says 200, but does not parse."""
    return body[: max(1, len(body) // 2)]


def iso_utc(wall_now: float) -> str:
    """ISO 8601 UTC to the second, like the contract's example: 2025-03-09T12:34:56Z."""
    return datetime.fromtimestamp(wall_now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def retry_after(seconds: int, fmt: RetryAfterFormat, wall_now: float) -> str:
    """A Retry-After value: delta-seconds, or the HTTP-date at which to retry."""
    if fmt == "seconds":
        return str(seconds)
    # An HTTP-date has whole seconds: round the instant up so a client never retries early.
    return formatdate(math.ceil(wall_now + seconds), usegmt=True)


def rate_limit_headers(
    style: RateHeaders, limit: int, remaining: int, reset_s: int
) -> dict[str, str]:
    """The quota headers every response carries in the x-ratelimit and ietf styles."""
    if style == "x-ratelimit":
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset_s),
        }
    if style == "ietf":
        return {
            "RateLimit-Policy": f'"default";q={limit};w=1',
            "RateLimit": f'"default";r={remaining};t={reset_s}',
        }
    return {}
