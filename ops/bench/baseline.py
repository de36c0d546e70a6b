"""The baseline: the idiomatic Celery approach a user writes in an afternoon.

    celery -A ops.bench.baseline worker --pool threads --concurrency 8

One task per 100-id batch, the ids in the message; the task sends one DELETE with httpx
and counts what the answer says with Redis INCRBY (no idempotency: a redelivered task
counts twice). Rate control is Celery's own: `rate_limit` set to each worker's share of
the API's limit (``BASELINE_RATE_LIMIT``, e.g. "50/s" for 100 req/s over 2 workers),
and 429s / 5xx / transport errors retried by `autoretry_for` with exponential backoff
and jitter, up to 8 times. Nothing is shared between workers.

Settings come from the environment: ``REDIS_URL`` (broker and counters),
``BASELINE_API_URL``, ``BASELINE_API_KEY``, ``BASELINE_RATE_LIMIT``. The benchmark also
sets ``BASELINE_TIMINGS``, a file where each run appends one JSON line of timings (our
instrumentation, the same numbers our workers log; a user's version would not have it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import Any

import httpx
import redis
from celery import Celery, Task

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
API_URL = os.environ.get("BASELINE_API_URL", "http://127.0.0.1:8080")
API_KEY = os.environ.get("BASELINE_API_KEY", "")
RATE_LIMIT = os.environ.get("BASELINE_RATE_LIMIT") or None
TIMINGS = os.environ.get("BASELINE_TIMINGS")
QUEUE = "baseline"
BATCH_SIZE = 100

DELETED, FAILED, GAVE_UP, BATCHES = (
    "baseline:deleted",
    "baseline:failed",
    "baseline:gave_up",
    "baseline:batches",
)
"""The counters: ids deleted, ids failed per the API, ids dropped after the last retry,
and batches finished (either way)."""

app = Celery("bench_baseline", broker=REDIS_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

http = httpx.Client(base_url=API_URL, headers={"X-Api-Key": API_KEY}, timeout=15.0)
counters = redis.Redis.from_url(REDIS_URL)


class ApiRefused(Exception):
    """A 429 or 5xx answer: worth another try later."""


class CountsGiveUps(Task):  # type: ignore[misc]  # Celery ships no type hints
    """A task that counts a batch as finished (its ids given up) once retries run out."""

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        counters.incrby(GAVE_UP, len(args[0]))
        counters.incr(BATCHES)


@app.task(
    base=CountsGiveUps,
    rate_limit=RATE_LIMIT,
    autoretry_for=(httpx.HTTPError, ApiRefused),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=8,
)
def delete_batch(ids: list[str], reason: str) -> None:
    """Delete up to 100 ids; count the answer."""
    started = time.perf_counter()
    api_s = 0.0
    try:
        response = http.request(
            "DELETE", "/v1/media/batch", json={"media_ids": ids, "reason": reason}
        )
        api_s = time.perf_counter() - started
        if response.status_code == 429 or response.status_code >= 500:
            raise ApiRefused(f"{response.status_code}: {response.text[:200]}")
        response.raise_for_status()
        data = response.json()["data"]
        counters.incrby(DELETED, data["deleted"]["count"])
        counters.incrby(FAILED, data["failed"]["count"])
        counters.incr(BATCHES)
    finally:
        _record_timings(started, api_s)


def _record_timings(started: float, api_s: float) -> None:
    """Benchmark instrumentation: one JSON line per run, appended atomically (O_APPEND)."""
    if not TIMINGS:
        return
    elapsed = time.perf_counter() - started
    line = json.dumps(
        {
            "event": "baseline.run",
            "ts": round(time.time(), 6),
            "elapsed_ms": round(elapsed * 1000, 2),
            "api_ms": round(api_s * 1000, 2),
            "overhead_ms": round((elapsed - api_s) * 1000, 2),
        }
    )
    fd = os.open(TIMINGS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def produce(lines: Iterable[bytes | str], reason: str) -> int:
    """Split ids (one per line) into 100-id lists and send one task per list; returns the
    number of tasks sent."""
    sent = 0
    batch: list[str] = []
    for line in lines:
        media_id = (line.decode() if isinstance(line, bytes) else line).strip()
        if not media_id:
            continue
        batch.append(media_id)
        if len(batch) == BATCH_SIZE:
            delete_batch.delay(batch, reason)
            sent, batch = sent + 1, []
    if batch:
        delete_batch.delay(batch, reason)
        sent += 1
    return sent
