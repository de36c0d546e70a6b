"""Job controls for operators and apps: pause, resume, cancel, recover, rethrottle.

Each is one atomic store operation; resume and recover then wake the fleet (publish the
drain messages it misses), by task name: producers never import the tasks themselves.
"""

from __future__ import annotations

import structlog

from worker.errors import BrokerUnavailable, InputError
from worker.keeper import wake_fleet
from worker.ratelimit import FleetLimiter
from worker.store import JobStore

log = structlog.get_logger("wickson_purge.control")


def wake(store: JobStore) -> int:
    """Publish the drain runs the fleet misses while a job is runnable; returns how many.
    A broker that does not answer is no error: the job waits in the store, and the
    workers' keepers wake it once the broker is back."""
    from worker.celery import send_drains

    try:
        return wake_fleet(store, send_drains)
    except BrokerUnavailable as exc:
        log.warning("wake.broker_unavailable", error=str(exc), hint="keepers will wake the job")
        return 0


def pause(store: JobStore, job_id: str) -> bool:
    """Pause a job: nothing more is sent for it; False if it was not queued or running."""
    return store.pause(job_id)


def resume(store: JobStore, job_id: str) -> bool:
    """Resume a paused job, or re-attempt what a failed or cancelled one did not attempt;
    False if the job was in no state to resume."""
    if not store.resume(job_id):
        return False
    wake(store)
    return True


def cancel(store: JobStore, job_id: str) -> bool:
    """Cancel a job: no new request for it; ids never sent end `not_attempted` (batches a
    request may have reached are confirmed first). False if it had ended already."""
    if not store.stop(job_id, "cancelled", "CANCELLED: cancelled by an operator"):
        return False
    wake(store)  # a paused job's possibly sent batches need a run to confirm them
    return True


def recover(store: JobStore, *, margin: int) -> int:
    """What every worker's keeper does, on demand: see a Redis restart, publish the drain
    runs the fleet misses. Returns the drain messages published."""
    store.check_lost_writes(margin=margin)
    return wake(store)


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
