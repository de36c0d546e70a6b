"""The watchdog: finds work whose message was lost, and queues it again.

Celery on Redis has known windows where a message vanishes (BRPOP then ZADD is not
atomic, a retry whose publish failed, a producer killed between seal and start). The
store stamps every queued batch; a batch queued longer than `stale_after_s` ago that
no run owns and that is not done is published again. Duplicates are harmless: the
store counts every id once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import structlog

from worker.store import JobStore

log = structlog.get_logger("wickson_purge.watchdog")

ACTIVE_STATES = frozenset({"queued", "running", "stopping"})


def recover(
    store: JobStore,
    *,
    stale_s: float,
    publish: Callable[[str, Iterable[int]], int],
    start: Callable[[str], None],
    job_ids: Iterable[str] | None = None,
) -> dict[str, int]:
    """Requeue the lost work of the given (default: every active) job; returns
    job id -> batches requeued (-1: its start task was sent again)."""
    found: dict[str, int] = {}
    for job_id in job_ids if job_ids is not None else store.jobs_in_states(ACTIVE_STATES):
        lost = store.stalled(job_id, stale_s=stale_s)
        if lost == "start":
            start(job_id)
            found[job_id] = -1
        elif lost:
            found[job_id] = publish(job_id, lost)
    if found:
        log.warning("watchdog.requeued", jobs=found)
    return found
