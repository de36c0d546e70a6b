"""Job controls for operators and apps: pause, resume, cancel, recover, rethrottle.

Each is one atomic store operation; resume and recover then wake the fleet (publish the
drain messages it misses), by task name: producers never import the tasks themselves.
"""

from __future__ import annotations

from worker.errors import InputError
from worker.jobs import wake
from worker.ratelimit import limiter_for
from worker.settings import DEFAULT_ALIAS, Settings, get_settings
from worker.store import JobStore


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
    key_alias: str = DEFAULT_ALIAS,
    settings: Settings | None = None,
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
    limiter = limiter_for(store, settings or get_settings(), key_alias)
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
