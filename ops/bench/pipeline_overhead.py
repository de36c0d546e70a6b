"""Is the pipeline cheap per batch? Our fleet against a stand-in that costs nothing.

    python -m ops.bench.pipeline_overhead [--workers 2] [--concurrency 8] [--ids 200000]
                                          [--profile-s 8] [--trace-batches 200]

The stand-in answers at once with no limit; our workers run with the highest rate
setting (WICKSON_RATE_LIMIT=10000), so nothing waits and what is measured is our own
cost per batch. Three jobs on one set of services:

1. warm-up (2,000 ids): first imports, connections and script loads, not measured;
2. the measured job: batches/s in steady state (target >= 500 on 2 cores), p50/p99
   overhead per batch (wall time minus API time, from the `batch.run` lines), script
   calls per batch from INFO commandstats; optionally py-spy on every worker;
3. a traced job (MONITOR on): Redis round trips per batch by kind: our scripts (target
   <= 3) and the broker's own commands.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import redis

from ops.bench import metrics, profile, redis_trace
from ops.bench.procs import (
    Proc,
    exit_on_signals,
    machine_busy_s,
    start_fake_api,
    start_redis,
    start_workers,
    stop_all,
    worker_env,
)
from ops.bench.run import DEFAULT_OUT
from ops.bench.scenario import Ours, Scenario, produce, write_ids

WARMUP_IDS = 2_000
TARGET_BATCHES_PER_S = 500
TARGET_SCRIPT_CALLS = 3


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ops.bench.pipeline_overhead")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--concurrency", type=int, default=8, help="slots per worker")
    p.add_argument("--pool", choices=("threads", "prefork"), default="threads")
    p.add_argument("--ids", type=int, default=200_000, help="ids in the measured job")
    p.add_argument("--trace-batches", type=int, default=200, help="batches in the traced job")
    p.add_argument("--profile-s", type=float, default=0, help="py-spy each worker this long")
    p.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


class Bench:
    """The services of one pipeline-overhead run and the jobs sent through them."""

    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args, self.out = args, out
        self.procs: list[Proc] = []
        self.next_id = 0
        self.ids_dir = out / "ids"
        self.ids_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        """Redis, the stand-in (0 ms, unlimited), our workers at the top rate."""
        args = self.args
        redis_proc, self.redis_url = start_redis(self.out)
        self.procs.append(redis_proc)
        items = WARMUP_IDS + args.ids + args.trace_batches * 100 + 1_000
        api, self.api_url = start_fake_api(self.out, items=items, rate=None, seed=1)
        self.procs.append(api)
        extra = dict(kv.split("=", 1) for kv in args.worker_env)
        sc = Scenario(rate=None, workers=args.workers, concurrency=args.concurrency, ids=0)
        self.env = worker_env(
            self.redis_url,
            **{**Ours().env(sc, self.api_url, self.out), "WICKSON_RATE_LIMIT": "10000", **extra},
        )
        self.workers = start_workers("worker", count=args.workers, concurrency=args.concurrency,
                                     pool=args.pool, env=self.env, log_dir=self.out,
                                     redis_url=self.redis_url)  # fmt: skip
        self.procs.extend(self.workers)
        self.redis = redis.Redis.from_url(self.redis_url)
        self.api_proc, self.redis_proc = api, redis_proc

    def job(self, count: int, name: str) -> float:
        """Submit `count` fresh ids and wait for the job; returns seconds from submit."""
        path = write_ids(self.ids_dir / f"{name}.txt", count, first=self.next_id)
        self.next_id += count
        started = time.monotonic()
        produced = produce("ours", path, self.env)
        ours = Ours()
        while not ours.done(self.redis, produced):
            for worker in self.workers:
                worker.check_alive()
            time.sleep(0.05)
        return time.monotonic() - started

    def stop(self) -> None:
        stop_all(self.procs, signal.SIGQUIT, timeout_s=3)


def measure(bench: Bench) -> dict[str, Any]:
    """The measured job: throughput, overhead, script calls, CPU, optional profile."""
    args = bench.args
    httpx.post(f"{bench.api_url}/_admin/reset", timeout=10).raise_for_status()
    bench.redis.config_resetstat()
    cpu0 = _cpu(bench)
    since = time.time()
    spies = _start_profiles(bench) if args.profile_s else []
    seconds = bench.job(args.ids, "measured")
    cpu1 = _cpu(bench)
    stats = redis_trace.commandstats(bench.redis)
    for spy in spies:
        spy.wait(args.profile_s + 30)
    requests = metrics.parse_timeline(
        httpx.get(f"{bench.api_url}/_admin/timeline", timeout=60).json()
    )
    batches = args.ids / 100
    overheads = metrics.overheads_ms([w.log_path for w in bench.workers], "batch.run", since=since)
    return {
        "batches_per_s": metrics.steady_ids_per_s(requests) / 100,
        "requests": len(requests),
        "e2e_s": seconds,
        "overhead_p50_ms": metrics.percentile(overheads, 50),
        "overhead_p99_ms": metrics.percentile(overheads, 99),
        "runs_logged": len(overheads),
        "evalsha_per_batch": (stats.get("evalsha", 0) + stats.get("eval", 0)) / batches,
        "commands_per_batch_incl_in_script": sum(stats.values()) / batches,
        "commandstats_per_batch": {k: round(v / batches, 3) for k, v in sorted(stats.items())},
        "cpu_cores": {k: round((cpu1[k] - cpu0[k]) / seconds, 2) for k in cpu0},
    }


def trace(bench: Bench) -> dict[str, float]:
    """The traced job: round trips per batch by kind, from a MONITOR capture."""
    path = bench.out / "monitor.log"
    port = bench.redis_url.rsplit(":", 1)[1].split("/")[0]
    monitor = Proc("monitor", ["redis-cli", "-p", port, "monitor"], path)
    try:
        time.sleep(0.3)
        bench.job(bench.args.trace_batches * 100, "traced")
        time.sleep(0.3)
    finally:
        monitor.stop(signal.SIGTERM, timeout_s=5)
    kinds = redis_trace.classify(redis_trace.read_trace(path), redis_trace.script_names())
    return {k: round(v / bench.args.trace_batches, 3) for k, v in sorted(kinds.items())}


def _start_profiles(bench: Bench) -> list[subprocess.Popen[bytes]]:
    """py-spy on every worker (and its pool children) from the start of the job."""
    pids = [p for w in bench.workers for p in [w.pid, *w.children()]]
    return [profile.record(pid, bench.args.profile_s, bench.out / f"py-spy-{pid}.txt")
            for pid in pids]  # fmt: skip


def _cpu(bench: Bench) -> dict[str, float]:
    return {
        "workers": sum(w.cpu_s() for w in bench.workers),
        "api": bench.api_proc.cpu_s(),
        "redis": bench.redis_proc.cpu_s(),
        "machine": machine_busy_s(),
    }


def render(args: argparse.Namespace, m: dict[str, Any], per_batch: dict[str, float]) -> str:
    """The report, as text."""
    scripts = {k: v for k, v in per_batch.items() if k.startswith("script:")}
    broker = {k: v for k, v in per_batch.items() if k.startswith("broker:")}
    store = {k: v for k, v in per_batch.items() if k.startswith("store:")}
    cpu = m["cpu_cores"]
    lines = [
        f"pipeline overhead: stand-in 0 ms, unlimited; ours at WICKSON_RATE_LIMIT=10000;"
        f" {args.workers} x {args.pool} worker(s) x {args.concurrency} slots; {args.ids:,} ids",
        f"  batches/s (steady)        {m['batches_per_s']:8.1f}   target >= {TARGET_BATCHES_PER_S}"
        f"  {'met' if m['batches_per_s'] >= TARGET_BATCHES_PER_S else 'MISSED'}",
        f"  ids/s                     {m['batches_per_s'] * 100:8,.0f}",
        f"  overhead p50 / p99 ms     {m['overhead_p50_ms']:8.2f} / {m['overhead_p99_ms']:.2f}"
        f"   ({m['runs_logged']:,} runs)",
        f"  end to end s              {m['e2e_s']:8.1f}",
        f"  cpu cores workers/api/redis/whole machine  {cpu['workers']:.2f} / {cpu['api']:.2f}"
        f" / {cpu['redis']:.2f} / {cpu['machine']:.2f}",
        f"  EVALSHA per batch (commandstats)   {m['evalsha_per_batch']:.2f}"
        f"   target <= {TARGET_SCRIPT_CALLS}",
        f"  all commands per batch, in-script included   "
        f"{m['commands_per_batch_incl_in_script']:.1f}",
        f"  round trips per batch, traced job ({args.trace_batches} batches, MONITOR):",
        f"    our scripts  {sum(scripts.values()):5.2f}   "
        + "  ".join(f"{k[7:]} {v:.2f}" for k, v in scripts.items()),
        f"    broker       {sum(broker.values()):5.2f}   "
        + "  ".join(f"{k[7:]} {v:.2f}" for k, v in broker.items()),
        f"    store, outside scripts (producer, status polls)  {sum(store.values()):5.2f}   "
        + "  ".join(f"{k[6:]} {v:.2f}" for k, v in store.items()),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_signals()
    out = args.out / ("pipeline-" + time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, out)
    try:
        bench.start()
        bench.job(WARMUP_IDS, "warmup")
        measured = measure(bench)
        per_batch = trace(bench)
    finally:
        bench.stop()
    text = render(args, measured, per_batch)
    if args.profile_s:
        text += "\n\nprofile (py-spy --gil, all workers):\n"
        text += profile.summarise(sorted(out.glob("py-spy-*.txt")))
    print(text)
    (out / "report.txt").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"measured": measured, "per_batch": per_batch,
                                                  "args": vars(args) | {"out": str(args.out)}},
                                                 indent=1, default=str))  # fmt: skip
    print(f"\nresults, logs, trace: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
