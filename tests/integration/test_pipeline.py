"""End to end: producer -> Redis -> real Celery workers -> the stand-in over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from ops.fake_api import RunningFakeApi
from producers.submit import Job
from tests.helpers import wait_until
from tests.services import ROOT, RunningBroker, WorkerProcess, worker_env
from worker.celery import send_drains
from worker.keys import Keys

pytestmark = pytest.mark.integration


def mixed_ids(n_owned: int) -> list[str]:
    """Owned ids, then foreign, unknown, duplicate and invalid ones."""
    owned = [f"vec-{i:07d}" for i in range(n_owned)]
    foreign = [f"oth-{i:07d}" for i in range(150)]
    unknown = [f"vec-unknown-{i}" for i in range(120)]
    duplicates = owned[:200] + foreign[:10]
    invalid = ["has space", "a/b", "x" * 129, "ctl\x01char", "%2F"]
    return owned + foreign + unknown + duplicates + invalid


def assert_exact(job: Job, fake: RunningFakeApi) -> dict[str, Any]:
    """Recount every id's outcome from the store and hold it against the stand-in's ledger:
    counters equal the recount; an id counted deleted was deleted; an id the API deleted
    is never failed or not attempted (unless its reason says the outcome is unknown: gave
    up after an attempt that may have deleted it, a crash loop); outcomes add up."""
    status = job.status()
    ledger = fake.api.ledger(include_ids=True)
    assert status.state in ("completed", "failed", "cancelled")
    recount: Counter[str] = Counter()
    for media_id, outcome, reason in job.store.iter_outcomes(job.id):
        recount[outcome] += 1
        really_deleted = ledger.is_deleted(media_id)
        if outcome == "deleted":
            assert really_deleted, f"{media_id} counted deleted, but the API never deleted it"
        elif outcome in ("failed", "not_attempted"):
            unknown = "may have deleted" in reason
            assert unknown or not really_deleted, f"{media_id} {outcome} ({reason}), deleted"
        elif outcome == "not_found":
            # deleted by an unanswered request of ours, or never there: both are gone now
            assert really_deleted or not media_id.startswith("vec-0"), media_id
        else:
            raise AssertionError(f"{media_id} has no outcome")
    assert recount["deleted"] == status.deleted
    assert recount["not_found"] == status.not_found
    assert recount["failed"] == status.failed
    assert recount["not_attempted"] == status.not_attempted
    assert sum(recount.values()) == status.total == status.done
    assert status.deleted <= ledger.deleted <= status.deleted + status.not_found + status.failed
    if status.not_found == 0:
        assert status.hd_vectors == ledger.hd_vectors
        assert status.ld_vectors == ledger.ld_vectors
    else:  # the vectors of ids deleted by an unanswered request are unknowable
        assert status.hd_vectors <= ledger.hd_vectors
        assert status.ld_vectors <= ledger.ld_vectors
    assert ledger.max_batch_seen <= 100
    return status.model_dump()


def test_a_10k_job_with_bad_ids_ends_with_counts_equal_to_the_ledger(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
) -> None:
    """Foreign, unknown, duplicate and invalid ids: every unique id gets exactly one outcome."""
    fake = fake_api(items=10_000, rate=400)
    workers(fake.url, rate_limit=400)
    job = submit_job(mixed_ids(9_700))
    job.wait(timeout=60, poll_s=0.1)
    status = assert_exact(job, fake)
    assert status["total"] == 9_700 + 150 + 120 + 5
    assert status["deleted"] == 9_700
    assert status["invalid"] == 5
    assert status["failure_reasons"]["invalid_id"] == 5
    assert sum(status["failure_reasons"].values()) == status["failed"] == 150 + 5
    assert status["not_found"] == 120  # unknown ids: nothing to delete, not a failure
    assert status["submitted"] == len(mixed_ids(9_700))


def test_a_429_with_retry_after_pauses_every_worker(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
) -> None:
    """After a 429 with Retry-After: 1, no worker process sends anything for a second."""
    fake = fake_api(items=3_000)
    workers(fake.url, rate_limit=100, concurrency=4)
    workers(fake.url, rate_limit=100, concurrency=4)
    fake.api.script(["ok"] * 5 + ["429"])
    job = submit_job([f"vec-{i:07d}" for i in range(3_000)])
    job.wait(timeout=60, poll_s=0.1)
    assert_exact(job, fake)
    timeline = fake.api.timeline()
    limited = [e for e in timeline if e.status == 429]
    assert len(limited) == 1
    after = [round(e.t_s - limited[0].t_s, 3) for e in timeline if e.t_s > limited[0].t_s]
    # Only requests already under way when the 429 came back may arrive inside the
    # pause: at most one per slot (8), within moments (a loaded CI machine delays their
    # send by tens of ms). Without the pause, ~100 would arrive in that second.
    assert after, "the job went on after the 429"
    inside = [t for t in after if t < 1.0]
    assert len(inside) <= 8, after[:10]
    assert all(t < 0.25 for t in inside), after[:10]
    assert job.status().rate_limited == 1


def test_a_revoked_key_fails_the_job_fast_and_counts_the_rest_not_attempted(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
) -> None:
    """401 mid-job: the job ends failed with the API's code within seconds; nothing is lost."""
    fake = fake_api(items=20_000)
    workers(fake.url, rate_limit=50, concurrency=4)
    job = submit_job([f"vec-{i:07d}" for i in range(20_000)])
    wait_until(lambda: job.status().deleted >= 500, timeout=30, what="some progress")
    fake.api.revoke_key()
    final = job.wait(timeout=15, poll_s=0.1)
    assert final.state == "failed"
    assert "INVALID_API_KEY" in (final.last_error or "")
    assert final.not_attempted > 0
    assert final.deleted == fake.api.ledger().deleted
    assert final.deleted + final.failed + final.not_attempted + final.not_found == 20_000
    unauthorized = [e for e in fake.api.timeline() if e.status == 401]
    assert len(unauthorized) <= 8  # the requests already in flight, no more


def test_duplicate_drain_messages_count_each_id_once_and_finish_the_job_once(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
    rclient: redis.Redis,
) -> None:
    """40 extra drain messages (redeliveries, duplicates): counts exact, one completion."""
    fake = fake_api(items=2_000)
    job = submit_job([f"vec-{i:07d}" for i in range(2_000)])
    for n in range(40):
        send_drains([f"dup-{n % 3}"])
    workers(fake.url, rate_limit=400, concurrency=8)
    final = job.wait(timeout=60, poll_s=0.1)
    assert final.deleted == 2_000 == fake.api.ledger().deleted
    events = [json.loads(e) for e in rclient.lrange(Keys().events, 0, -1)]
    assert [e["job_id"] for e in events].count(job.id) == 1


@pytest.mark.slow
def test_the_cli_runs_a_20k_job_on_two_workers_at_50_requests_per_second(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    rclient: redis.Redis,
    redis_url: str,
    tmp_path: Any,
    broker: RunningBroker,
) -> None:
    """`submit --json` then `wait` then `status --json`: exact counts, no request over 100."""
    fake = fake_api(items=20_000, rate=50)
    workers(fake.url, rate_limit=50, concurrency=4)
    workers(fake.url, rate_limit=50, concurrency=4)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"vec-{i:07d}" for i in range(20_000)) + "\n")
    env = worker_env(redis_url, fake.url, broker_url=broker.worker_url(redis_url))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producers.cli", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    submitted = cli("submit", "--reason", "R", str(ids), "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    waited = cli("wait", job_id)
    assert waited.returncode == 0, waited.stderr
    status = json.loads(cli("status", job_id, "--json").stdout)
    assert status["state"] == "completed"
    assert status["deleted"] == 20_000 == fake.api.ledger().deleted
    assert status["batches_done"] == status["batches_total"] == 200
    assert fake.api.ledger().max_batch_seen <= 100
