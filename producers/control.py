"""Job controls for operators and apps: pause, resume, cancel, recover.

Each is one atomic store operation, then the messages it calls for, sent by task name
(producers never import the tasks themselves) to the queue of the job's priority.
"""

from __future__ import annotations

from collections.abc import Iterable

from worker.errors import InputError
from worker.ratelimit import FleetLimiter
from worker.store import JobStore, Priority
from worker.watchdog import recover


def publish_batches(job_id: str, indices: Iterable[int], priority: Priority = "normal") -> int:
    """Queue one delete_batch message per batch index on the queue of `priority` (pass
    the job's: `store.priority(job_id)`); returns how many."""
    from worker.celery import BATCH_TASK, app, queue_for

    n = 0
    for index in indices:
        app.send_task(BATCH_TASK, args=[job_id, index], queue=queue_for(priority))
        n += 1
    return n


def send_start(job_id: str, priority: Priority = "normal") -> None:
    """Queue the task that starts the job on the fleet, on the queue of its priority."""
    from worker.celery import START_TASK, app, queue_for

    app.send_task(START_TASK, args=[job_id], queue=queue_for(priority))


def pause(store: JobStore, job_id: str) -> bool:
    """Pause a job: nothing more is sent for it; False if it was not queued or running."""
    return store.pause(job_id)


def resume(store: JobStore, job_id: str) -> int | None:
    """Resume a paused job, or re-attempt what a failed or cancelled one did not attempt.
    Returns the batches queued, or None if the job was in no state to resume."""
    status = store.status(job_id)
    todo = store.resume(job_id)
    if todo == "start":
        send_start(job_id, status.priority)
        return 0
    if not todo and status.state not in ("paused", "failed", "cancelled"):
        return None
    return publish_batches(job_id, todo, status.priority)


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
        store,
        stale_s=stale_s,
        publish=lambda job_id, todo: publish_batches(job_id, todo, store.priority(job_id)),
        start=lambda job_id: send_start(job_id, store.priority(job_id)),
        job_ids=job_ids,
    )


def rethrottle(
    store: JobStore,
    rate: float | str | None,
    *,
    job_id: str | None = None,
    key_alias: str = "default",
    default_rate: float | str = 10.0,
) -> str:
    """Change a rate now: the fleet's (of one key alias; a number or 'auto'), or one job's
    own limit under it (None lifts it). Every worker reads it on its next request."""
    if job_id is not None:
        if rate == "auto":
            raise InputError("a job's own rate is a number; 'auto' is for the fleet")
        store.set_job_rate(job_id, None if rate is None else _positive(rate))
        return f"job {job_id}: " + ("fleet rate only" if rate is None else f"{rate} requests/s")
    if rate is None:
        raise InputError("the fleet needs a rate: a number of requests/s, or 'auto'")
    limiter = FleetLimiter(store.redis, store.keys.limiter(key_alias), rate=default_rate)
    try:
        limiter.set_rate(rate)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return f"fleet ({key_alias}): {rate} requests/s, now at {limiter.rate:g}"


def _positive(rate: float | str) -> float:
    try:
        value = float(rate)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise InputError(f"rate must be > 0 requests/s, got {rate!r}")
    return value
