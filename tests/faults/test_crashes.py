"""Crashes and restarts: killed workers, warm shutdown, Redis restarts, evicting Redis."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery import Celery
from pydantic import SecretStr

from ops.fake_api import RunningFakeApi
from producers.submit import Job, submit
from tests.helpers import wait_until
from tests.integration.test_pipeline import assert_exact
from tests.services import API_KEY, PrivateRedis, WorkerProcess
from worker.celery import BATCH_TASK, QUEUE, START_TASK
from worker.settings import load_settings
from worker.store import JobStatus
from worker.watchdog import recover

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST_RECOVERY = {"visibility_timeout_s": 12, "lease_s": 4, "backoff_cap_s": 1}
"""Redelivery after a lost worker in seconds, not the production hour."""


def owned(n: int) -> list[str]:
    return [f"vec-{i:07d}" for i in range(n)]


def submit_to(url: str, ids: list[str], **kw: Any) -> Job:
    """Submit through the producer to the Redis at `url` (start task included)."""
    settings = load_settings(redis_url=url, api_key=SecretStr(API_KEY), **kw)
    broker = Celery(broker=url)

    def start(job_id: str) -> None:
        broker.send_task(START_TASK, args=[job_id], queue=QUEUE)

    return submit(
        ids, reason="fault test", settings=settings, client=redis.Redis.from_url(url), start=start
    )


def broker_watchdog(job: Job, url: str) -> Callable[[], dict[str, int]]:
    """The watchdog as beat runs it in production, publishing to the Redis at `url`:
    batches stamped more than 20 s ago that nobody holds are requeued."""
    broker = Celery(broker=url)

    def publish(job_id: str, indices: list[int]) -> int:
        for index in indices:
            broker.send_task(BATCH_TASK, args=[job_id, index], queue=QUEUE)
        return len(indices)

    return lambda: recover(job.store, stale_s=20, publish=publish, start=print, job_ids=[job.id])


def wait_with_watchdog(job: Job, url: str, *, timeout: float) -> JobStatus:
    """Wait for the job with the watchdog running: a Redis outage can lose Celery messages
    (a known Celery-on-Redis window), and requeueing them is the watchdog's job."""
    watchdog = broker_watchdog(job, url)

    def finished() -> bool:
        watchdog()
        return job.status().finished

    wait_until(finished, timeout=timeout, interval=1.0, what="the job, with the watchdog")
    return job.status()


def test_a_worker_killed_with_requests_in_flight_loses_nothing(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
) -> None:
    """SIGKILL mid-request: its batches come back after the visibility timeout, counted once."""
    fake = fake_api(items=4_000, latency_ms=300)
    victim = workers(fake.url, rate_limit=200, concurrency=8, **FAST_RECOVERY)
    job = submit_job(owned(4_000))
    wait_until(lambda: job.status().deleted >= 800, timeout=30, what="progress")
    victim.signal(signal.SIGKILL)
    victim.proc.wait(5)
    workers(fake.url, rate_limit=200, concurrency=8, **FAST_RECOVERY)
    final = job.wait(timeout=90, poll_s=0.2)
    assert_exact(job, fake)
    assert final.failed == 0
    assert final.deleted + final.already_absent == 4_000


def test_a_crash_after_the_api_deleted_but_before_the_commit_counts_already_absent(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
) -> None:
    """The API deletes, the worker dies before answering; the retry's not-found is no failure."""
    fake = fake_api(items=1_000, slow_ms=3_000)
    fake.api.script(["ok", "slow_after"])
    victim = workers(fake.url, rate_limit=50, concurrency=1, **FAST_RECOVERY)
    job = submit_job(owned(1_000))
    wait_until(lambda: fake.api.ledger().deleted >= 200, timeout=20, what="the slow delete")
    victim.signal(signal.SIGKILL)
    victim.proc.wait(5)
    workers(fake.url, rate_limit=50, concurrency=4, **FAST_RECOVERY)
    final = job.wait(timeout=90, poll_s=0.2)
    assert_exact(job, fake)
    assert final.failed == 0
    assert final.already_absent == 100  # the batch whose answer never came back


def test_warm_shutdown_finishes_the_batch_in_flight(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
) -> None:
    """SIGTERM during slow requests: they finish and are committed before the worker exits."""
    fake = fake_api(items=2_000, latency_ms=1_500)
    worker = workers(fake.url, rate_limit=100, concurrency=4)
    job = submit_job(owned(2_000))
    wait_until(lambda: fake.api.ledger().requests >= 4, timeout=20, what="requests in flight")
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(30) == 0
    status = job.status()
    assert status.deleted == fake.api.ledger().deleted  # nothing deleted and left uncounted
    workers(fake.url, rate_limit=100, concurrency=4)
    job.wait(timeout=60, poll_s=0.2)
    assert_exact(job, fake)


def test_a_redis_restart_with_aof_mid_job_ends_with_exact_counts(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    private_redis: Callable[..., PrivateRedis],
) -> None:
    """Redis killed and restarted from its append-only file: the job still ends exact."""
    server = private_redis("--appendonly", "yes", "--appendfsync", "always")
    fake = fake_api(items=6_000, latency_ms=20)
    workers(fake.url, rate_limit=100, concurrency=4, broker=server.url, **FAST_RECOVERY)
    job = submit_to(server.url, owned(6_000))
    wait_until(lambda: job.status().deleted >= 1_500, timeout=30, what="progress")
    server.kill()
    server.start()
    final = wait_with_watchdog(job, server.url, timeout=100)
    assert final.state == "completed"
    assert_exact(job, fake)


def test_a_worker_refuses_to_start_on_an_evicting_redis(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    private_redis: Callable[..., PrivateRedis],
) -> None:
    """maxmemory-policy allkeys-lru could evict queues and jobs: the worker exits, saying so."""
    server = private_redis("--maxmemory-policy", "allkeys-lru")
    fake = fake_api(items=10)
    worker = workers(fake.url, broker=server.url, wait=False)
    assert worker.proc.wait(30) != 0
    assert "noeviction" in worker.output()


def test_redis_down_at_commit_time_loses_nothing_and_counts_nothing_twice(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    private_redis: Callable[..., PrivateRedis],
) -> None:
    """The API answers while Redis is down: the commit fails, the message stays unacked,
    and once Redis is back the batch is redelivered and counted exactly once."""
    server = private_redis("--appendonly", "yes", "--appendfsync", "always")
    fake = fake_api(items=3_000, latency_ms=1_000)
    worker = workers(fake.url, rate_limit=50, concurrency=4, broker=server.url, **FAST_RECOVERY)
    job = submit_to(server.url, owned(3_000))
    wait_until(lambda: fake.api.ledger().deleted >= 300, timeout=30, what="deletes in flight")
    server.kill()
    wait_until(
        lambda: "Redis did not answer" in worker.output(), timeout=30, what="a failed commit"
    )
    server.start()
    final = wait_with_watchdog(job, server.url, timeout=100)
    assert final.state == "completed"
    assert_exact(job, fake)
    assert final.failed == 0
    assert final.already_absent > 0  # the batches the API deleted while Redis was away
