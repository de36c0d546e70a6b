"""Operating the fleet against real workers: a retention sweep run by two beats' messages,
the job controls through the CLI (dry run, jobs, retry-failed, report), priorities."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from ops.fake_api import RunningFakeApi
from producers.submit import Job
from tests.helpers import wait_until
from tests.services import ROOT, RunningBroker, WorkerProcess, worker_env
from worker.celery import CONTROL_QUEUE, SWEEP_TASK, app
from worker.store import JobStore
from worker.sweeps import history

pytestmark = pytest.mark.integration


def owned(n: int, first: int = 0) -> list[str]:
    return [f"vec-{i:07d}" for i in range(first, first + n)]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`wickson-purge ARGS` in a subprocess with `env`; fails the test on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stderr}"
    return done


def test_a_sweep_sent_by_two_beats_runs_once_as_an_ordinary_job(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    rclient: redis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    """Two run_sweep messages for one tick (two beats): one job, tagged with the sweep,
    deletes the source's ids exactly; the duplicate is logged, the run recorded."""
    fake = fake_api(items=1_000)
    (tmp_path / "ids.txt").write_text("\n".join(owned(500)) + "\n")
    sweeps_file = tmp_path / "sweeps.toml"
    sweeps_file.write_text(
        '[[sweep]]\nname = "nightly"\nschedule = "30 3 * * *"\nreason = "retention"\n'
        'file = "ids.txt"\nmax_ids = 1000\n'
    )
    worker = workers(fake.url, rate_limit=200, concurrency=4, sweeps_file=str(sweeps_file))
    tick = "20261128T0330Z"
    for _ in range(2):  # what two beat processes send for the same scheduled minute
        app.send_task(SWEEP_TASK, args=["nightly", tick], queue=CONTROL_QUEUE)
    store = JobStore(rclient)
    [run] = wait_until(lambda: history(rclient, store.keys, "nightly"), timeout=30,
                       what="the sweep's run recorded")  # fmt: skip
    assert (run.tick, run.outcome, run.ids) == (tick, "submitted", 500)
    final = Job(str(run.job_id), store).wait(timeout=30, poll_s=0.1)
    assert (final.state, final.deleted, final.sweep, final.priority) == (
        "completed", 500, "nightly", "low",
    )  # fmt: skip
    wait_until(lambda: "sweep.duplicate_tick" in worker.output(), timeout=15,
               what="the second message seen as a duplicate")  # fmt: skip
    assert store.recent_jobs() == [run.job_id]
    assert fake.api.ledger().deleted == 500
    env = worker_env(redis_url, fake.url, sweeps_file=str(sweeps_file))
    [row] = json.loads(cli(env, "sweeps", "--json").stdout)
    assert row["last_run"]["job_id"] == run.job_id
    assert row["last_run"]["job_state"] == "completed"


def test_dry_run_then_retry_failed_and_report_through_the_cli(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
    rclient: redis.Redis,
    redis_url: str,
    tmp_path: Path,
    broker: RunningBroker,
) -> None:
    """A dry run writes nothing; a job whose first 3 requests got 500s (max 1 attempt)
    fails 300 ids retryably; retry-failed deletes them in a linked job; `report` and
    `jobs` tell it all."""
    fake = fake_api(items=3_000)
    env = worker_env(redis_url, fake.url, broker_url=broker.worker_url(redis_url))
    foreign, unknown = [f"oth-{i:07d}" for i in range(50)], [f"vec-unknown-{i}" for i in range(50)]
    ids = [*owned(2_000), *foreign, *unknown, "bad id"]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")

    plan = json.loads(cli(env, "submit", str(ids_file), "--reason", "R", "--dry-run",
                          "--json").stdout)  # fmt: skip
    assert (plan["valid"], plan["invalid"], plan["batches"]) == (2_100, 1, 21)
    assert rclient.keys("*") == []

    fake.api.script(["500_before"] * 3)
    workers(fake.url, rate_limit=200, concurrency=1, max_attempts=1)
    job = submit_job(ids)
    first = job.wait(timeout=60, poll_s=0.1)
    gave_up = {r: n for r, n in first.failure_reasons.items() if "gave up after 1 attempts" in r}
    assert sum(gave_up.values()) == 300

    retry_id = json.loads(cli(env, "retry-failed", job.id, "--json").stdout)["job_id"]
    retry = Job(retry_id, job.store).wait(timeout=60, poll_s=0.1)
    assert (retry.retry_of, retry.total, retry.state) == (job.id, 300, "completed")
    assert job.status().retried_by == retry_id
    assert fake.api.ledger().deleted == 2_000

    report = list(csv.DictReader(io.StringIO(cli(env, "report", job.id, "--failed").stdout)))
    assert len(report) == first.failed
    assert sum("gave up" in row["reason"] for row in report) == 300
    lines = cli(env, "report", retry_id, "--format", "jsonl").stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 300
    assert all(r["operation_id"] for r in rows if r["outcome"] == "deleted")

    listed = json.loads(cli(env, "jobs", "--json").stdout)
    assert [j["job_id"] for j in listed] == [retry_id, job.id]
    assert listed[0]["retry_of"] == job.id


def test_a_high_priority_job_submitted_later_finishes_first(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
    rclient: redis.Redis,
) -> None:
    """One worker busy on a low-priority job: a high-priority job submitted after it is
    taken first and ends while the low one still runs; both end exact."""
    fake = fake_api(items=5_000)
    workers(fake.url, rate_limit=20, concurrency=2)
    low = submit_job(owned(4_000), priority="low")
    wait_until(lambda: low.status().deleted >= 200, timeout=30, what="the low job under way")
    high = submit_job(owned(300, first=4_000), priority="high")
    done_high = high.wait(timeout=30, poll_s=0.05)
    at_that_time = low.status()
    assert done_high.state == "completed"
    assert not at_that_time.finished, "the low-priority job finished first"
    assert at_that_time.done < 4_000
    done_low = low.wait(timeout=120, poll_s=0.1)
    assert (done_low.deleted, done_high.deleted) == (4_000, 300)
    assert done_high.finished_at is not None
    assert done_low.finished_at is not None
    assert done_high.finished_at < done_low.finished_at
    assert fake.api.ledger().deleted == 4_300


def test_a_small_job_behind_a_huge_one_of_the_same_priority_is_served_at_once(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
) -> None:
    """Jobs of one priority share the fleet batch by batch: 1,000 ids submitted behind a
    running 60,000-id job at 20 req/s finish within a few seconds (they get every other
    batch), long before the big one."""
    fake = fake_api(items=61_000, rate=20)
    workers(fake.url, rate_limit=20, concurrency=4)
    big = submit_job(owned(60_000))
    wait_until(lambda: big.status().deleted >= 300, timeout=30, what="the big job under way")
    small = submit_job(owned(1_000, first=60_000))
    done = small.wait(timeout=30, poll_s=0.05)
    assert done.state == "completed"
    assert done.deleted == 1_000
    assert done.finished_at is not None
    assert done.queued_at is not None
    # 10 batches, alternating with the big job's at 20 req/s: about 1 s, not 26.9 s.
    assert done.finished_at - done.queued_at < 5.0
    assert not big.status().finished


def test_a_normal_job_behind_a_low_one_is_served_first(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
) -> None:
    """A normal-priority job submitted behind a running low one takes every batch until
    it ends: within a couple of seconds at 20 req/s."""
    fake = fake_api(items=11_000, rate=20)
    workers(fake.url, rate_limit=20, concurrency=4)
    low = submit_job(owned(10_000), priority="low")
    wait_until(lambda: low.status().deleted >= 200, timeout=30, what="the low job under way")
    normal = submit_job(owned(1_000, first=10_000))
    done = normal.wait(timeout=30, poll_s=0.05)
    assert done.finished_at is not None
    assert done.queued_at is not None
    assert done.finished_at - done.queued_at < 2.5
    assert done.deleted == 1_000
