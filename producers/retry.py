"""retry-failed: which failures are worth sending again, and the job that does it.

The new job holds the ids of a finished job that failed for a retryable reason; the two
are linked both ways (`retry_of` on the new job, `retried_by` on the original), and
retrying the same job twice returns the same new job (idempotency key `retry-of:<job>`).
Ids counted `not_attempted` are not failures: `resume` re-attempts those.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import redis

from producers.submit import Job, store_for, submit
from worker.api import is_not_found
from worker.errors import InputError
from worker.ingest import INVALID_REASON
from worker.settings import Settings, get_settings
from worker.store import JobStore, Priority

DENIED_WORDS = ("access denied", "belongs to another", "forbidden", "not authorized", "permission")
"""Per-id reasons saying the key may not delete the media: sending it again cannot help."""
_BARE_CODE = re.compile(r"[A-Z][A-Z0-9_]*")
"""A reason that is only an error code: a 4xx the API gave for this id alone."""


def is_retryable(reason: str) -> bool:
    """Whether an id that failed with `reason` may be deleted by sending it again.

    Permanent (False): `invalid_id` (refused before sending), "not found" answers (nothing
    left to delete), access-denied answers (the media belongs to someone else) and a bare
    4xx code the API gave for the id alone (INVALID_MEDIA_IDS: the id itself is refused).
    Retryable (True): everything else: retries given up on transient errors
    ("PROCESSING_ERROR: gave up after 8 attempts ..."), a crash loop of our workers
    ("worker_crash_loop: ..."), and per-id failures the API did not explain.
    """
    text = reason.strip()
    if text == INVALID_REASON or is_not_found(text) or _BARE_CODE.fullmatch(text):
        return False
    return not any(word in text.lower() for word in DENIED_WORDS)


def retry_failed(
    job_id: str,
    *,
    settings: Settings | None = None,
    client: redis.Redis | None = None,
    priority: Priority | None = None,
    start: Callable[[JobStore], object] | None = None,
) -> Job | None:
    """Submit a job of the ids job `job_id` failed for retryable reasons, with its reason,
    key alias and (unless given) priority; None if none is retryable. Raises JobNotFound,
    and InputError for a job still running."""
    settings = settings or get_settings()
    store = store_for(settings, client)
    status = store.status(job_id)
    if not status.finished:
        raise InputError(f"job {job_id} is {status.state}: retry its failures once it has ended")
    if not any(is_retryable(reason) for reason in status.failure_reasons):
        return None
    ids = (media_id for media_id, why in store.iter_failures(job_id) if is_retryable(why))
    job = submit(
        ids,
        reason=status.reason,
        idempotency_key=f"retry-of:{job_id}",
        settings=settings,
        client=store.redis,
        start=start,
        key_alias=status.key_alias,
        priority=priority or status.priority,
        retry_of=job_id,
        verify_input=False,  # failures stream in hash order: the same ids, not the same lines
    )
    store.link_retry(job_id, job.id)
    return job
