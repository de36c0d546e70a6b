"""Job controls for operators and apps: pause, resume, cancel, recover.

Each is one atomic store operation, then the messages it calls for, sent by task name
(producers never import the tasks themselves).
"""

from __future__ import annotations

from collections.abc import Iterable

from worker.store import JobStore
from worker.watchdog import recover


def publish_batches(job_id: str, indices: Iterable[int]) -> int:
    """Queue one delete_batch message per batch index; returns how many."""
    from worker.celery import BATCH_TASK, app

    n = 0
    for index in indices:
        app.send_task(BATCH_TASK, args=[job_id, index])
        n += 1
    return n


def send_start(job_id: str) -> None:
    """Queue the task that starts the job on the fleet."""
    from worker.celery import START_TASK, app

    app.send_task(START_TASK, args=[job_id])


def pause(store: JobStore, job_id: str) -> bool:
    """Pause a job: nothing more is sent for it; False if it was not queued or running."""
    return store.pause(job_id)


def resume(store: JobStore, job_id: str) -> int | None:
    """Resume a paused job, or re-attempt what a failed or cancelled one did not attempt.
    Returns the batches queued, or None if the job was in no state to resume."""
    state = store.status(job_id).state
    todo = store.resume(job_id)
    if todo == "start":
        send_start(job_id)
        return 0
    if not todo and state not in ("paused", "failed", "cancelled"):
        return None
    return publish_batches(job_id, todo)


def cancel(store: JobStore, job_id: str, *, stale_s: float = 600.0) -> bool:
    """Cancel a job: no new request for it; ids not yet sent end `not_attempted`."""
    if not store.stop(job_id, "cancelled", "CANCELLED: cancelled by an operator"):
        return False
    # A paused job's parked batches have no message: publish them now, to be skipped.
    recover_lost(store, stale_s=stale_s, job_ids=[job_id])
    return True


def recover_lost(
    store: JobStore, *, stale_s: float, job_ids: Iterable[str] | None = None
) -> dict[str, int]:
    """What the watchdog does, on demand: requeue lost batches and start tasks."""
    return recover(
        store, stale_s=stale_s, publish=publish_batches, start=send_start, job_ids=job_ids
    )
