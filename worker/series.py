"""A compact progress time series per job, for charts of ids/s and 429s over its life.

`record_progress(store)` samples every active job once per tick (SAMPLE_EVERY_S; any
number of processes may call it, one sample per tick by a SET NX lock). A job's samples
thin out as it ages (one per age / MAX_POINTS seconds at least), so a list holds its
whole life in at most about MAX_POINTS points; it expires with the job's results.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from worker.scripts import decoded
from worker.store import JobStatus, JobStore

SAMPLE_EVERY_S = 2.0
MAX_POINTS = 900
"""Samples kept per job at most (a capped list): a whole day at ~100 s resolution."""
ACTIVE = frozenset({"queued", "running", "paused", "stopping"})


class Sample(NamedTuple):
    """A job's counters at one moment."""

    t: float
    """Unix seconds."""
    done: int
    deleted: int
    failed: int
    rate_limited: int


def record_progress(store: JobStore, *, now: float | None = None, limit: int = 500) -> int:
    """Sample the `limit` newest active jobs, unless another process sampled this tick;
    returns how many samples were written."""
    now = time.time() if now is None else now
    tick = int(now / SAMPLE_EVERY_S)
    if not store.redis.set(store.keys.series_tick(tick), 1, nx=True, px=int(SAMPLE_EVERY_S * 2000)):
        return 0
    written = 0
    for status in store.list_jobs(ACTIVE, limit=limit):
        written += _sample(store, status, now)
    return written


def _sample(store: JobStore, status: JobStatus, now: float) -> int:
    key = store.keys.job_series(status.job_id)
    last = store.redis.lindex(key, -1)
    age = now - (status.started_at or status.created_at or now)
    # Thin out with age (10% slack: ticks are not exactly SAMPLE_EVERY_S apart).
    spacing = max(SAMPLE_EVERY_S, age / MAX_POINTS) * 0.9
    if last is not None and now - int(decoded(last).split(",", 1)[0]) / 1000 < spacing:
        return 0
    point = (
        f"{int(now * 1000)},{status.done},{status.deleted},{status.failed},{status.rate_limited}"
    )
    with store.redis.pipeline(transaction=False) as pipe:
        pipe.rpush(key, point)
        pipe.ltrim(key, -MAX_POINTS, -1)
        pipe.expire(key, store.retention_s)
        pipe.execute()
    return 1


def series(store: JobStore, job_id: str) -> list[Sample]:
    """A job's samples, oldest first (empty when none was taken)."""
    points = []
    for raw in store.redis.lrange(store.keys.job_series(job_id), 0, -1):
        t, done, deleted, failed, limited = decoded(raw).split(",")
        points.append(Sample(int(t) / 1000, int(done), int(deleted), int(failed), int(limited)))
    return points
