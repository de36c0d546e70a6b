"""The broker dies mid-job and comes back, the store (the test Redis) staying up: the
work, its leases and its outcomes never leave the store, so a broker restart only costs
the wake-ups in flight. Run on RabbitMQ (a private node: quorum queues on disk) and on a
Redis used only as the broker (nothing on disk: every message is lost with it).

With Redis as both broker and store, a broker restart is a Redis restart:
tests/faults/test_crashes.py::test_a_redis_sigkilled_for_three_seconds_... covers it."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from ops.fake_api import RunningFakeApi
from producers.submit import submit
from tests.faults.test_crashes import ended_within, owned
from tests.helpers import wait_until
from tests.integration.test_pipeline import assert_exact
from tests.rabbit import PrivateRabbit
from tests.services import PrivateRedis, RunningBroker, WorkerProcess, producer_settings
from worker.celery import configure

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("kind", ["redis", "amqp"])
def test_a_broker_sigkilled_for_three_seconds_is_made_up_for_within_a_minute(
    kind: str,
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    private_redis: Callable[..., PrivateRedis],
    private_rabbit: Callable[..., PrivateRabbit],
    rclient: redis.Redis,
    redis_url: str,
) -> None:
    """Two workers at 200 req/s; the broker SIGKILLed 8 s into a 15 s job and down 3 s,
    across the end of the first drain slices (10 s), whose successors cannot be
    published: the job ends exact within a minute of the broker's return, no command."""
    node: PrivateRabbit | PrivateRedis
    node = private_rabbit() if kind == "amqp" else private_redis("--appendonly", "no")
    via = RunningBroker(kind, node.url)
    fake = fake_api(items=300_000, rate=200, latency_ms=20)
    workers(fake.url, rate_limit=200, concurrency=4, via=via)
    workers(fake.url, rate_limit=200, concurrency=4, via=via)
    settings = producer_settings(redis_url, via)
    configure(settings)
    job = submit(owned(300_000), reason="fault test", settings=settings, client=rclient)
    wait_until(lambda: job.status().deleted >= 160_000, timeout=30, what="the job under way")
    node.kill()
    time.sleep(3)  # the outage itself: the broker is down for three seconds
    node.start()
    back_at = time.time()
    final = ended_within(job, back_at)
    assert final.state == "completed"
    assert_exact(job, fake)
    assert final.failed == 0
