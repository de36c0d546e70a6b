"""Job controls and recovery against real workers: pause, resume, cancel, lost messages."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from ops.fake_api import RunningFakeApi
from producers import control
from producers.submit import Job
from tests.helpers import wait_until
from tests.integration.test_pipeline import assert_exact
from tests.services import RunningBroker, WorkerProcess

pytestmark = pytest.mark.integration


def owned(n: int) -> list[str]:
    return [f"vec-{i:07d}" for i in range(n)]


def test_a_paused_job_sends_nothing_and_resumes_where_it_stopped(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
) -> None:
    """Pause: no request reaches the API; resume: the job completes with exact counts."""
    fake = fake_api(items=6_000)
    workers(fake.url, rate_limit=100, concurrency=4)
    job = submit_job(owned(6_000))
    wait_until(lambda: job.status().deleted >= 500, timeout=30, what="progress")
    assert control.pause(job.store, job.id)
    keys, redis_ = job.store.keys, job.store.redis

    def all_handed_back() -> bool:
        """No run holds a batch of the job: every one it took is done or handed back."""
        return redis_.hlen(keys.job(job.id, "owners")) == 0

    wait_until(all_handed_back, timeout=15, what="every batch handed back")
    quiet = fake.api.ledger().requests
    assert job.status().state == "paused"
    assert job.status().done < 6_000
    assert fake.api.ledger().requests == quiet
    assert control.resume(job.store, job.id)
    job.wait(timeout=60, poll_s=0.1)
    assert_exact(job, fake)
    assert job.status().deleted == 6_000


def test_a_cancelled_job_stops_within_a_second_and_counts_the_rest_not_attempted(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
) -> None:
    """Cancel: state cancelled, every unique id has an outcome, the ledger agrees."""
    fake = fake_api(items=10_000)
    workers(fake.url, rate_limit=50, concurrency=4)
    job = submit_job(owned(10_000))
    wait_until(lambda: job.status().deleted >= 300, timeout=30, what="progress")
    assert control.cancel(job.store, job.id)
    final = job.wait(timeout=5, poll_s=0.05)  # a run sees the stop at its next request
    assert final.state == "cancelled"
    assert final.not_attempted > 0
    assert final.deleted == fake.api.ledger().deleted
    assert final.done == final.total == 10_000


def test_resume_after_a_revoked_key_is_restored_finishes_the_job(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
) -> None:
    """401 fails the job; once the key works again, resume completes it exactly."""
    fake = fake_api(items=8_000)
    workers(fake.url, rate_limit=100, concurrency=4)
    job = submit_job(owned(8_000))
    wait_until(lambda: job.status().deleted >= 500, timeout=30, what="progress")
    fake.api.revoke_key()
    assert job.wait(timeout=15, poll_s=0.1).state == "failed"
    fake.api.restore_key()
    assert control.resume(job.store, job.id)
    final = job.wait(timeout=60, poll_s=0.1)
    assert final.state == "completed"
    assert final.not_attempted == 0
    assert_exact(job, fake)
    assert final.deleted == 8_000


def test_a_job_whose_every_message_was_lost_completes_without_any_command(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
    broker: RunningBroker,
) -> None:
    """Every drain message deleted from the broker, and the tickets with them: the
    workers' keepers publish new ones within seconds; the job ends exact."""
    fake = fake_api(items=3_000, rate=100)
    workers(fake.url, rate_limit=100, concurrency=4)
    job = submit_job(owned(3_000))
    wait_until(lambda: job.status().deleted >= 300, timeout=30, what="progress")
    broker.lose_waiting_messages()
    job.store.redis.delete(job.store.keys.drains)
    job.wait(timeout=60, poll_s=0.1)
    assert_exact(job, fake)


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_an_idle_worker_stops_at_once_on_sigterm(
    fake_api: Callable[..., RunningFakeApi], workers: Callable[..., WorkerProcess], pool: str
) -> None:
    """A warm shutdown of an idle worker takes well under a second on either broker (on
    RabbitMQ the consumer's event loop slept ~10 s in epoll before seeing it)."""
    fake = fake_api(items=10)
    worker = workers(fake.url, concurrency=2, pool=pool)
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(20) == 0
    took = time.monotonic() - started
    assert took < 3.0, f"the worker took {took:.1f} s to stop"
