"""Security: the key stays in worker memory; JSON only; keys chosen by alias."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from kombu import Connection, Producer

from ops.fake_api import RunningFakeApi
from producers.submit import Job
from tests.helpers import wait_until
from tests.integration.test_pipeline import assert_exact
from tests.services import RunningBroker, WorkerProcess
from worker.celery import DRAIN_TASK, QUEUE
from worker.errors import InputError

pytestmark = pytest.mark.integration

SECRET = "wk-live-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def everything_in_redis(client: redis.Redis) -> bytes:
    """Every key and every value of the test database, as one byte string."""
    out = []
    for key in client.scan_iter(count=1000):
        out.append(key)
        kind = client.type(key)
        if kind == b"string":
            out.append(client.get(key) or b"")
        elif kind == b"hash":
            out.extend(b"%s=%s" % kv for kv in client.hgetall(key).items())
        elif kind == b"list":
            out.extend(client.lrange(key, 0, -1))
        elif kind == b"set":
            out.extend(client.smembers(key))
        elif kind == b"zset":
            out.extend(client.zrange(key, 0, -1))
    return b"\n".join(out)


def test_the_api_key_appears_in_no_redis_key_value_message_or_log_line(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
    rclient: redis.Redis,
) -> None:
    """A job with faults (500s, garbage, a 429) runs; the key is found nowhere, ever."""
    fake = fake_api(items=3_000, api_key=SECRET)
    fake.api.script(["500_after", "garbage", "429", "lie_missing"])
    worker = workers(fake.url, rate_limit=200, concurrency=4, api_key=SECRET)
    job = submit_job([f"vec-{i:07d}" for i in range(3_000)] + ["bad id"])
    snapshots: list[bytes] = []

    def finished() -> bool:
        snapshots.append(everything_in_redis(rclient))  # queues and unacked messages too
        return job.status().finished

    wait_until(finished, timeout=60, interval=0.02, what="the job")
    assert_exact(job, fake)
    assert len(snapshots) > 3
    snapshots.append(everything_in_redis(rclient))
    assert not [s for s in snapshots if SECRET.encode() in s]
    worker.stop()
    log = worker.output()
    assert "batch.run" in log  # the log was captured
    assert SECRET not in log


def test_a_pickled_message_is_refused_without_a_redelivery_loop(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
    broker: RunningBroker,
) -> None:
    """A pickle on the queue is dropped (never run); the next real job still completes."""
    fake = fake_api(items=1_000)
    with Connection(broker.url) as conn:
        Producer(conn).publish(
            {"args": ["x", 0]},
            exchange="",  # the default exchange routes straight to the queue of that name
            routing_key=QUEUE,
            serializer="pickle",
            headers={"task": DRAIN_TASK, "id": "evil-1"},
            declare=[],
        )
    assert broker.depth(QUEUE) == 1
    worker = workers(fake.url, rate_limit=200)
    job = submit_job([f"vec-{i:07d}" for i in range(1_000)])
    job.wait(timeout=30, poll_s=0.1)
    assert_exact(job, fake)
    wait_until(lambda: "ContentDisallowed" in worker.output() or "refused" in worker.output(),
               timeout=10, what="the worker to report the refused message")  # fmt: skip
    assert broker.depth(QUEUE) == 0
    # The drains end within a second of the job (no runnable job left) and are acked.
    wait_until(lambda: not broker.unacked(), timeout=15, what="every message acked")
    assert worker.output().count("evil-1") <= 2  # refused once, not looping


def test_jobs_use_the_key_their_alias_names_and_unknown_aliases_are_refused(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
) -> None:
    """Alias 'readonly' maps to a key without delete rights: its job fails with 403."""
    fake = fake_api(items=2_000)
    workers(fake.url, rate_limit=200, api_keys='{"readonly": "readonly-key"}')
    ok = submit_job([f"vec-{i:07d}" for i in range(1_000)])
    denied = submit_job([f"vec-{i:07d}" for i in range(1_000, 2_000)], key_alias="readonly")
    assert ok.wait(timeout=30, poll_s=0.1).state == "completed"
    final = denied.wait(timeout=30, poll_s=0.1)
    assert final.state == "failed"
    assert "INSUFFICIENT_PERMISSIONS" in (final.last_error or "")
    assert fake.api.ledger().deleted == 1_000
    with pytest.raises(InputError, match="unknown key alias 'nope'"):
        submit_job(["vec-0000001"], key_alias="nope")
