"""The producer step of a run, in its own process so its peak RSS is its own.

    python -m ops.bench.produce ours|baseline IDS_FILE

Submits the ids in IDS_FILE (one per line) the way the system under test does, then
prints one JSON line: seconds spent submitting (imports excluded), peak RSS in KiB
(imports included), and the job id (ours) or tasks sent (baseline).

Peak RSS is VmHWM from /proc/self/status, not ``ru_maxrss``: Linux carries ru_maxrss
across exec, so a process spawned by a large parent (the benchmark, holding timelines)
would report the parent's size. VmHWM belongs to this process's own address space.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Any

REASON = "benchmark"


def submit_ours(path: str) -> dict[str, Any]:
    """Our producer: `producers.submit.submit` on the file, as `wickson-purge submit` does."""
    from producers.submit import submit
    from worker.settings import get_settings

    settings = get_settings()
    started = time.perf_counter()
    with open(path, "rb") as source:
        job = submit(source, reason=REASON, settings=settings)
    return {"seconds": time.perf_counter() - started, "job_id": job.id}


def submit_baseline(path: str) -> dict[str, Any]:
    """The baseline's producer: one Celery task per 100 ids."""
    from ops.bench.baseline import produce

    started = time.perf_counter()
    with open(path, "rb") as source:
        sent = produce(source, REASON)
    return {"seconds": time.perf_counter() - started, "tasks": sent}


def peak_rss_kb() -> int:
    """This process's peak resident set size in KiB (VmHWM)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(argv: list[str] | None = None) -> int:
    """Submit, then print the JSON report line."""
    parser = argparse.ArgumentParser(prog="python -m ops.bench.produce")
    parser.add_argument("system", choices=("ours", "baseline"))
    parser.add_argument("ids_file")
    args = parser.parse_args(argv)
    submit = submit_ours if args.system == "ours" else submit_baseline
    report = submit(args.ids_file)
    report["maxrss_kb"] = peak_rss_kb()
    report["ru_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
