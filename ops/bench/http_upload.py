"""An HTTP upload against the CLI's path, same ids, same Redis: how much does HTTP cost?

    python -m ops.bench.http_upload [--ids 1000000]

For each size: a fresh private Redis; first the producer alone (`ops.bench.produce ours`,
what `wickson-purge submit FILE` runs); then `wickson-purge serve` and one
`POST /v1/jobs` (text/plain) of the same file, streamed from disk. Prints both times,
their ratio (target <= 1.5) and the service's peak RSS (VmHWM) before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from ops.bench.procs import (
    LOOPBACK,
    Proc,
    exit_on_signals,
    free_port,
    start_redis,
    wait_for,
    worker_env,
)
from ops.bench.scenario import produce, write_ids

TOKEN = "bench-token"  # noqa: S105 (a throwaway token of a private benchmark service)


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident set (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_service(url: str, log_dir: Path, max_ids: int) -> tuple[Proc, str]:
    """`wickson-purge serve` with one all-scopes token; returns (proc, base URL)."""
    port = free_port()
    tokens = {"bench": {"sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
                        "scopes": ["submit", "read"], "key_aliases": ["*"]}}  # fmt: skip
    env = worker_env(
        url, WICKSON_SERVICE_TOKENS=json.dumps(tokens), WICKSON_MAX_JOB_IDS=str(max_ids)
    )
    argv = [sys.executable, "-m", "producers.cli", "serve", "--host", LOOPBACK, "--port", str(port)]
    proc = Proc("serve", argv, log_dir / "serve.log", env=env)
    base = f"http://{LOOPBACK}:{port}"

    def up() -> bool:
        proc.check_alive()
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout_s=30, what="the service to answer")
    return proc, base


def measure(count: int, tmp: Path) -> str:
    """One size: a table row."""
    ids = write_ids(tmp / f"ids-{count}.txt", count)
    redis_proc, url = start_redis(tmp)
    try:
        cli = produce("ours", ids, worker_env(url))
        service, base = start_service(url, tmp, max(count, 1_000))
        try:
            idle = peak_rss_mb(service.pid)
            started = time.perf_counter()
            with open(ids, "rb") as body:
                answer = httpx.post(
                    f"{base}/v1/jobs",
                    params={"reason": "benchmark"},
                    content=body,
                    headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"},
                    timeout=600,
                )
            http_s = time.perf_counter() - started
            answer.raise_for_status()
            peak = peak_rss_mb(service.pid)
        finally:
            service.stop()
    finally:
        redis_proc.stop(signal.SIGTERM)
        ids.unlink()
    return (
        f"{count:>11,}  {cli['seconds']:>7.2f}  {http_s:>7.2f}  {http_s / cli['seconds']:>5.2f}"
        f"  {count / http_s:>10,.0f}  {idle:>7.1f}  {peak:>7.1f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.http_upload")
    parser.add_argument("--ids", default="1000000", help="job sizes, comma-separated")
    args = parser.parse_args(argv)
    exit_on_signals()
    print(f"{'ids':>11}  {'CLI s':>7}  {'HTTP s':>7}  {'ratio':>5}  {'HTTP ids/s':>10}"
          f"  {'RSS0 MB':>7}  {'RSS MB':>7}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="wickson-http-upload-") as tmp:
        for count in (int(x) for x in args.ids.split(",") if x):
            print(measure(count, Path(tmp)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
