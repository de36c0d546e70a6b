"""Reading and checking a batch-delete request body, as the contract's 400s describe it.

Pure. Parsing happens first (the ledger counts the ids of every request received, even
one refused with 401 or 429); checking happens only after auth and the rate limit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

MISSING_MEDIA_IDS = "MISSING_MEDIA_IDS"
INVALID_MEDIA_IDS = "INVALID_MEDIA_IDS"
BATCH_TOO_LARGE = "BATCH_TOO_LARGE"

# Stands for "no media_ids key", distinct from an explicit null (which is invalid).
_ABSENT = object()
_MAX_IDS_ECHOED = 10


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """A request body as sent: `media_ids` is any JSON value, or absent."""

    media_ids: object = _ABSENT
    reason: str | None = None

    @property
    def size(self) -> int:
        """How many ids were sent (0 unless media_ids is an array)."""
        return len(self.media_ids) if isinstance(self.media_ids, list) else 0


@dataclass(frozen=True, slots=True)
class Rejection:
    """A 400: the contract's error code, a message, and error details."""

    code: str
    message: str
    details: dict[str, object] = field(default_factory=dict)


def parse_body(body: bytes) -> BatchRequest:
    """The request in `body`; a body that is not a JSON object has no media_ids."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # ValueError covers bad JSON and bad UTF-8
        return BatchRequest()
    if not isinstance(document, dict):
        return BatchRequest()
    reason = document.get("reason")
    return BatchRequest(
        media_ids=document.get("media_ids", _ABSENT),
        reason=reason if isinstance(reason, str) else None,
    )


def validate_batch(
    request: BatchRequest, max_batch: int, invalid_id: re.Pattern[str] | None
) -> list[str] | Rejection:
    """The ids to delete, or why the whole request is refused (nothing gets deleted)."""
    ids = request.media_ids
    if ids is _ABSENT:
        return Rejection(MISSING_MEDIA_IDS, "media_ids is required")
    if not isinstance(ids, list) or not ids:
        return Rejection(INVALID_MEDIA_IDS, "media_ids must be a non-empty array")
    if len(ids) > max_batch:
        return Rejection(
            BATCH_TOO_LARGE,
            f"At most {max_batch} media ids per request",
            {"max_batch": max_batch, "received": len(ids)},
        )
    if not all(isinstance(media_id, str) for media_id in ids):
        return Rejection(INVALID_MEDIA_IDS, "media_ids must be an array of strings")
    return _check_pattern(ids, invalid_id)


def _check_pattern(ids: list[str], invalid_id: re.Pattern[str] | None) -> list[str] | Rejection:
    """Refuse the batch if any id matches the server's notion of a malformed id."""
    if invalid_id is None:
        return ids
    bad = [media_id for media_id in ids if invalid_id.search(media_id)]
    if not bad:
        return ids
    return Rejection(
        INVALID_MEDIA_IDS, "media_ids contains invalid ids", {"invalid_ids": bad[:_MAX_IDS_ECHOED]}
    )
