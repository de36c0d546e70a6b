"""The producer side: killed halfway, submitted twice, fed bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from ops.fake_api import RunningFakeApi
from tests.helpers import wait_until
from tests.services import ROOT, WorkerProcess, worker_env
from worker.celery import QUEUE
from worker.keys import Keys

pytestmark = pytest.mark.integration


def cli(
    env: dict[str, str], *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        cwd=ROOT, env=env, input=stdin, capture_output=True, timeout=120,
    )  # fmt: skip
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )  # fmt: skip


@pytest.mark.slow
def test_a_producer_killed_halfway_leaves_no_job_that_runs(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    rclient: redis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    """SIGKILL while 1M ids stream in: the staging job is never queued and expires."""
    fake = fake_api(items=10)
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"vec-{i:07d}\n" for i in range(1_000_000)))
    keys = Keys()
    producer = subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "submit", "--reason", "R", str(ids)],
        cwd=ROOT, env=worker_env(redis_url, fake.url), stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def staging_job() -> str | None:
        for key in rclient.scan_iter(keys.job("*", "batches")):
            if rclient.hlen(key) > 100:
                return key.decode().split(":")[2]
        return None

    job_id = wait_until(staging_job, timeout=60, interval=0.01, what="ids being staged")
    producer.send_signal(signal.SIGKILL)
    producer.wait(10)
    assert rclient.hget(keys.job(job_id), "state") == b"staging"
    assert 0 < rclient.ttl(keys.job(job_id)) <= 3_600
    assert 0 < rclient.ttl(keys.job(job_id, "batches")) <= 3_600
    assert rclient.zscore(keys.jobs, job_id) is None
    assert rclient.llen(QUEUE) == 0
    workers(fake.url)
    assert fake.api.ledger().requests == 0


def test_submitting_twice_with_one_idempotency_key_makes_one_job(
    fake_api: Callable[..., RunningFakeApi], rclient: redis.Redis, redis_url: str
) -> None:
    """`submit --idempotency-key K` run twice prints the same job id; one start task."""
    fake = fake_api(items=10)
    env = worker_env(redis_url, fake.url)
    data = b"vec-0000001\nvec-0000002\n"
    first = cli(env, "submit", "--reason", "R", "--idempotency-key", "k-1", "--json", stdin=data)
    second = cli(env, "submit", "--reason", "R", "--idempotency-key", "k-1", "--json", stdin=data)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert json.loads(first.stdout)["job_id"] == json.loads(second.stdout)["job_id"]
    assert rclient.llen(QUEUE) == 1
    assert "already exists" in second.stderr


BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("empty input", b"", "no ids"),
    ("only blank lines", b"\n  \n\t\n", "no ids"),
    ("a reason too long", b"vec-1\n", "at most 1000"),
]


@pytest.mark.parametrize(("case", "data", "message"), BAD_INPUTS, ids=[c for c, _, _ in BAD_INPUTS])
def test_bad_input_gets_a_clear_message_and_no_traceback(
    case: str, data: bytes, message: str, rclient: redis.Redis, redis_url: str
) -> None:
    """Each bad input: exit 2, a message saying what is wrong, nothing queued."""
    env = worker_env(redis_url, "http://127.0.0.1:9")
    reason = "x" * 1_001 if "reason" in case else "R"
    result = cli(env, "submit", "--reason", reason, stdin=data)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert rclient.llen(QUEUE) == 0


def test_invalid_ids_are_named_by_line_recorded_and_never_sent(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    redis_url: str,
) -> None:
    """Spaces, control chars, non-UTF-8, >128 chars, '../', '%2F', a CSV header: handled."""
    fake = fake_api(items=10)
    workers(fake.url)
    env = worker_env(redis_url, fake.url)
    data = b"".join(
        [b"media_id,note\n", b"vec-0000001,first\n", b"  vec-0000002  ,\n", b"\n",
         b"has space,x\n", b"ctl\x07x,x\n", b"\xff\xfe,x\n", b"y" * 129 + b",x\n",
         b"../etc/passwd,x\n", b"vec%2F1,x\n", b"vec-0000001,dup\n"]
    )  # fmt: skip
    result = cli(env, "submit", "--reason", "R", "--json", "--wait", stdin=data)
    assert result.returncode == 3, result.stderr  # completed, with failures
    for line in (5, 6, 7, 8, 9, 10):
        assert f"line {line}:" in result.stderr
    assert "Traceback" not in result.stderr
    job_id = json.loads(result.stdout.splitlines()[0])["job_id"]
    status = json.loads(cli(env, "status", job_id, "--json").stdout)
    assert status["deleted"] == 2
    assert status["invalid"] == status["failed"] == 6
    assert fake.api.ledger().requests == 1
    failures = cli(env, "failures", job_id, "--format", "jsonl").stdout.splitlines()
    assert {json.loads(f)["reason"] for f in failures} == {"invalid_id"}


@pytest.mark.parametrize(
    "command", [["status", "{}"], ["wait", "{}"], ["failures", "{}"], ["pause", "{}"],
                ["resume", "{}"], ["cancel", "{}"], ["recover", "{}"]],
)  # fmt: skip
def test_an_unknown_job_id_gets_a_clear_message_on_every_command(
    command: list[str], rclient: redis.Redis, redis_url: str
) -> None:
    """Every command that takes a job: exit 2, 'no job', no traceback."""
    env = worker_env(redis_url, "http://127.0.0.1:9")
    result = cli(env, *[part.format("nope-123") for part in command])
    assert result.returncode == 2, result.stderr
    assert "no job 'nope-123'" in result.stderr
    assert "Traceback" not in result.stderr
