"""One run of one system (ours or the baseline) in one scenario, from start-up to metrics.

Each run gets fresh services, so the two systems see the same conditions: a private
Redis, the stand-in with the scenario's limit and latency, N Celery worker processes.
The producer runs in a subprocess (its time and peak RSS are measured there); the run
ends when the job is done or at its deadline (then it is marked truncated), and the
services are stopped by pid.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import redis

from ops.bench import metrics, profile, redis_trace
from ops.bench.procs import (
    API_KEY,
    ROOT,
    Proc,
    machine_busy_s,
    start_fake_api,
    start_redis,
    start_workers,
    stop_all,
    worker_env,
)

EXTRA_ITEMS = 1_000
"""Catalogue items beyond the ids submitted (the stand-in owns vec-0000000 .. vec-N)."""
IN_FLIGHT_S = 0.06
"""Seconds one request holds a worker slot (30 ms +- 20 ms latency plus our own time,
rounded up): L x this many requests must be in flight to send L per second."""


def default_concurrency(rate: float, workers: int) -> int:
    """Slots per worker process: Little's law for L x 60 ms in flight, spread over the
    processes, plus 2 spare (a slot sleeping on the limiter holds no request); at least 4."""
    return max(4, math.ceil(rate * IN_FLIGHT_S / workers) + 2)


@dataclass(frozen=True)
class Scenario:
    """The conditions of a run; both systems run each scenario."""

    rate: float | None
    """The stand-in's limit L, requests/s (None: unlimited)."""
    workers: int
    concurrency: int
    ids: int
    latency_ms: float = 30.0
    jitter_ms: float = 20.0
    ours_rate: str = "L"
    """WICKSON_RATE_LIMIT: "L" (the server's limit), a number, "xF" (F times L), "auto"."""
    rate_headers: str = "retry-after"
    server_burst: float | None = None
    pool: str = "threads"
    worker_env: tuple[tuple[str, str], ...] = ()
    """Extra environment of every worker, e.g. (("WICKSON_RATE_BURST", "4"),)."""

    @property
    def name(self) -> str:
        limit = "nolimit" if self.rate is None else f"L{self.rate:g}"
        mode = "" if self.ours_rate == "L" else f"-ours{self.ours_rate}"
        return f"{limit}-N{self.workers}{mode}"

    def our_rate_setting(self) -> str:
        """The value of WICKSON_RATE_LIMIT for our workers (an unlimited stand-in: the
        highest value allowed)."""
        if self.ours_rate == "L":
            return f"{self.rate or 10_000:g}"
        if self.ours_rate.startswith("x"):
            return f"{float(self.ours_rate[1:]) * (self.rate or 0):g}"
        return self.ours_rate

    def baseline_rate(self) -> float | None:
        """The fleet rate the baseline's user configures: ours when it is a number, else L
        (None for an unlimited stand-in: no `rate_limit` at all)."""
        if self.rate is None:
            return None
        try:
            return float(self.our_rate_setting())
        except ValueError:
            return self.rate

    def our_burst(self) -> int:
        """Our fleet's WICKSON_RATE_BURST (1 unless the scenario sets it)."""
        return int(dict(self.worker_env).get("WICKSON_RATE_BURST", "1"))


@dataclass
class RunResult:
    """Everything measured in one run of one system."""

    system: str
    scenario: Scenario
    ids: int = 0
    deleted: int = 0
    requests: int = 0
    rate_limited: int = 0
    ids_per_s: float = 0.0
    utilisation: float = math.nan
    per_1k_429: float = 0.0
    max_1s: int = 0
    overhead_p50_ms: float = math.nan
    overhead_p99_ms: float = math.nan
    runs_logged: int = 0
    e2e_s: float = 0.0
    truncated: bool = False
    producer_s: float = 0.0
    producer_rss_mb: float = 0.0
    enqueue_ids_per_s: float = 0.0
    cpu_cores: dict[str, float] = field(default_factory=dict)
    """CPU used during the run, in cores (1.0 = one core busy): workers, api, redis, and
    the whole machine (the rest of it is the producer, the benchmark, and other work)."""
    scripts_per_batch: float = math.nan
    """EVALSHA calls per 100-id batch (INFO commandstats; our Lua round trips)."""
    redis_commands: dict[str, int] = field(default_factory=dict)
    """INFO commandstats calls during the run (in-script commands included)."""
    load_avg_1m: float = 0.0
    requests_per_s: list[int] = field(default_factory=list)
    rate_limited_per_s: list[int] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["scenario"] = asdict(self.scenario) | {"name": self.scenario.name}
        return data


class System(Protocol):
    """What differs between ours and the baseline."""

    name: str
    app: str
    event: str

    def env(self, sc: Scenario, api_url: str, run_dir: Path) -> dict[str, str]: ...

    def done(self, client: redis.Redis, produced: dict[str, Any]) -> bool: ...

    def logs(self, run_dir: Path, workers: list[Proc]) -> list[Path]: ...


class Ours:
    """The project's fleet: `celery -A worker worker`, its producer, its store."""

    name = "ours"
    app = "worker"
    event = "batch.run"

    def env(self, sc: Scenario, api_url: str, run_dir: Path) -> dict[str, str]:
        return {
            "WICKSON_API_URL": api_url,
            "WICKSON_API_KEY": API_KEY,
            "WICKSON_RATE_LIMIT": sc.our_rate_setting(),
            **dict(sc.worker_env),
        }

    def done(self, client: redis.Redis, produced: dict[str, Any]) -> bool:
        from worker.store import JobStore

        return JobStore(client).status(produced["job_id"]).finished

    def logs(self, run_dir: Path, workers: list[Proc]) -> list[Path]:
        return [w.log_path for w in workers]


class Baseline:
    """The idiomatic Celery approach (`ops/bench/baseline.py`)."""

    name = "baseline"
    app = "ops.bench.baseline"
    event = "baseline.run"

    def env(self, sc: Scenario, api_url: str, run_dir: Path) -> dict[str, str]:
        rate = sc.baseline_rate()
        return {
            "BASELINE_API_URL": api_url,
            "BASELINE_API_KEY": API_KEY,
            "BASELINE_RATE_LIMIT": "" if rate is None else f"{rate / sc.workers:g}/s",
            "BASELINE_TIMINGS": str(run_dir / "timings.jsonl"),
        }

    def done(self, client: redis.Redis, produced: dict[str, Any]) -> bool:
        from ops.bench.baseline import BATCHES

        return int(client.get(BATCHES) or 0) >= int(produced["tasks"])

    def logs(self, run_dir: Path, workers: list[Proc]) -> list[Path]:
        return [run_dir / "timings.jsonl"]


class OursOnRabbitMQ(Ours):
    """The same fleet with RabbitMQ as its broker (BENCH_AMQP_URL; the store stays the
    run's own Redis). Its queues are emptied before each run."""

    name = "ours-amqp"

    def env(self, sc: Scenario, api_url: str, run_dir: Path) -> dict[str, str]:
        url = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
        _purge_amqp(url)
        return {**super().env(sc, api_url, run_dir), "WICKSON_BROKER_URL": url}


def _purge_amqp(url: str) -> None:
    """Empty our queues on RabbitMQ: a previous run's wake-ups would only be noise."""
    from kombu.connection import Connection

    from worker.celery import QUEUES

    with Connection(url, connect_timeout=5) as conn:
        for name in QUEUES:
            channel = conn.channel()  # an error (no such queue yet) closes its channel
            try:
                channel.queue_purge(name)
            except conn.channel_errors:
                pass
            finally:
                channel.close()


SYSTEMS: dict[str, System] = {
    "ours": Ours(),
    "ours-amqp": OursOnRabbitMQ(),
    "baseline": Baseline(),
}


def write_ids(path: Path, count: int, first: int = 0) -> Path:
    """A file of `count` ids the stand-in owns, from item `first` on, one per line."""
    end = first + count
    with open(path, "w", encoding="ascii") as out:
        for start in range(first, end, 100_000):
            out.write("".join(f"vec-{i:07d}\n" for i in range(start, min(end, start + 100_000))))
    return path


def run(
    system: System,
    sc: Scenario,
    ids_file: Path,
    run_dir: Path,
    *,
    deadline_s: float,
    profile_s: float = 0.0,
) -> RunResult:
    """Run `system` in scenario `sc` on fresh services; never raises (see `error`). With
    `profile_s`, py-spy samples every worker that long once the job is submitted."""
    run_dir.mkdir(parents=True, exist_ok=True)
    result = RunResult(system.name, sc, ids=sc.ids)
    procs: list[Proc] = []
    try:
        _run(system, sc, ids_file, run_dir, deadline_s, profile_s, result, procs)
    except Exception as exc:  # a failed run is a row in the table, not a crash
        result.error = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        # Measured already: no need to sit out our workers' 25 s soft shutdown.
        stop_all(procs, signal.SIGQUIT, timeout_s=3)
    return result


def _run(
    system: System,
    sc: Scenario,
    ids_file: Path,
    run_dir: Path,
    deadline_s: float,
    profile_s: float,
    result: RunResult,
    procs: list[Proc],
) -> None:
    redis_proc, redis_url = start_redis(run_dir)
    procs.append(redis_proc)
    api_proc, api_url = start_fake_api(run_dir, **_api_config(sc))
    procs.append(api_proc)
    env = worker_env(redis_url, **system.env(sc, api_url, run_dir))
    workers = start_workers(
        system.app,
        count=sc.workers,
        concurrency=sc.concurrency,
        pool=sc.pool,
        env=env,
        log_dir=run_dir,
        redis_url=redis_url,
    )
    procs.extend(workers)
    client = redis.Redis.from_url(redis_url)
    client.config_resetstat()
    cpu_before = _cpu(workers, api_proc, redis_proc)
    started = time.monotonic()
    produced = produce("baseline" if system.name == "baseline" else "ours", ids_file, env)
    result.producer_s = produced["seconds"]
    result.producer_rss_mb = produced["maxrss_kb"] / 1024
    result.enqueue_ids_per_s = sc.ids / max(produced["seconds"], 1e-9)
    spies = [profile.record(w.pid, profile_s, run_dir / f"py-spy-{w.pid}.txt")
             for w in workers if profile_s]  # fmt: skip
    result.truncated = not _wait_done(system, client, produced, started + deadline_s, workers)
    result.e2e_s = time.monotonic() - started
    result.cpu_cores = _cpu_cores(cpu_before, _cpu(workers, api_proc, redis_proc), result.e2e_s)
    result.load_avg_1m = os.getloadavg()[0]
    result.redis_commands = redis_trace.commandstats(client)
    calls = result.redis_commands
    result.scripts_per_batch = (calls.get("evalsha", 0) + calls.get("eval", 0)) / (sc.ids / 100)
    _collect(result, system, sc, api_url, run_dir, workers)
    client.close()
    for spy in spies:
        spy.wait(profile_s + 30)
    if spies:
        summary = profile.summarise(sorted(run_dir.glob("py-spy-*.txt")), top=60)
        (run_dir / "profile.txt").write_text(summary + "\n")


def _api_config(sc: Scenario) -> dict[str, object]:
    """The stand-in's flags for this scenario."""
    config: dict[str, object] = {
        "items": sc.ids + EXTRA_ITEMS,
        "rate": sc.rate,
        "latency_ms": sc.latency_ms,
        "latency_jitter_ms": sc.jitter_ms,
        "rate_headers": sc.rate_headers,
        "seed": 1,
    }
    if sc.server_burst is not None:
        config["burst"] = sc.server_burst
    return config


def produce(system: str, ids_file: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run the producer in its own process; returns its JSON report."""
    done = subprocess.run(
        [sys.executable, "-m", "ops.bench.produce", system, str(ids_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"producer exited {done.returncode}: {done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _wait_done(
    system: System,
    client: redis.Redis,
    produced: dict[str, Any],
    deadline: float,
    workers: list[Proc],
) -> bool:
    """Poll until the job is done (True) or the deadline passes (False)."""
    while time.monotonic() < deadline:
        if system.done(client, produced):
            return True
        for worker in workers:
            worker.check_alive()
        time.sleep(0.1)
    return False


def _cpu(workers: list[Proc], api: Proc, redis_proc: Proc) -> dict[str, float]:
    """CPU seconds so far: the workers, the stand-in, Redis, and the whole machine."""
    return {
        "workers": sum(w.cpu_s() for w in workers),
        "api": api.cpu_s(),
        "redis": redis_proc.cpu_s(),
        "machine": machine_busy_s(),
    }


def _cpu_cores(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    return {k: round((after[k] - before[k]) / max(seconds, 1e-9), 2) for k in before}


def _collect(
    result: RunResult,
    system: System,
    sc: Scenario,
    api_url: str,
    run_dir: Path,
    workers: list[Proc],
) -> None:
    """Read the stand-in's timeline and ledger, and the workers' timing lines."""
    response = httpx.get(f"{api_url}/_admin/timeline", timeout=60)
    (run_dir / "timeline.json").write_bytes(response.content)
    requests = metrics.parse_timeline(response.json())
    ledger = httpx.get(f"{api_url}/_admin/ledger", timeout=60).json()
    (run_dir / "ledger.json").write_text(json.dumps(ledger, indent=1))
    result.deleted = int(ledger["deleted"])
    result.requests = len(requests)
    result.rate_limited = sum(1 for r in requests if r.status == 429)
    result.ids_per_s = metrics.steady_ids_per_s(requests)
    if sc.rate:
        result.utilisation = result.ids_per_s / (100.0 * sc.rate)
    result.per_1k_429 = metrics.per_thousand(requests, 429)
    result.max_1s = metrics.max_in_window(r.t_s for r in requests)
    result.requests_per_s = metrics.per_second(requests)
    result.rate_limited_per_s = metrics.per_second(requests, 429)
    overheads = metrics.overheads_ms(system.logs(run_dir, workers), system.event)
    result.runs_logged = len(overheads)
    result.overhead_p50_ms = metrics.percentile(overheads, 50)
    result.overhead_p99_ms = metrics.percentile(overheads, 99)
