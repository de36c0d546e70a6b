"""Enqueue fast, flat memory? The producer alone, at several job sizes, no workers.

    python -m ops.bench.enqueue [--ids 100000,1000000,10000000]

For each size: a fresh private Redis, a file of that many ids, our producer in its own
process (`ops.bench.produce`, the start task goes to a queue nobody reads). Prints ids/s
(target >= 1,000,000), the producer's peak RSS (target < 100 MB, the same at 1M and
10M), and Redis memory per queued id against the raw id bytes (target < 2x).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import redis

from ops.bench.procs import exit_on_signals, start_redis, worker_env
from ops.bench.scenario import produce, write_ids

ID_BYTES = len("vec-0000000")
"""Raw bytes of one benchmark id (without its newline)."""


def measure(count: int, tmp: Path) -> str:
    """One size: a table row."""
    proc, url = start_redis(tmp)
    try:
        client = redis.Redis.from_url(url)
        empty = int(client.info("memory")["used_memory"])
        ids = write_ids(tmp / f"ids-{count}.txt", count)
        report = produce("ours", ids, worker_env(url))
        ids.unlink()
        used = int(client.info("memory")["used_memory"]) - empty
        client.close()
    finally:
        proc.stop(signal.SIGTERM)
    per_id = used / count
    return (
        f"{count:>11,}  {count / report['seconds']:>11,.0f}  {report['maxrss_kb'] / 1024:>8.1f}"
        f"  {per_id:>10.1f}  {per_id / ID_BYTES:>6.2f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.enqueue")
    parser.add_argument("--ids", default="100000,1000000,10000000", help="job sizes")
    args = parser.parse_args(argv)
    exit_on_signals()
    print(f"{'ids':>11}  {'ids/s':>11}  {'RSS MB':>8}  {'Redis B/id':>10}  {'x raw':>6}")
    with tempfile.TemporaryDirectory(prefix="wickson-enqueue-") as tmp:
        for count in (int(x) for x in args.ids.split(",") if x):
            print(measure(count, Path(tmp)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
