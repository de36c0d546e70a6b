"""The Python producer API: `submit(ids, reason=...)` returns a `Job` to watch.

    from producers.submit import submit

    job = submit(open("ids.txt", "rb"), reason="retention: older than 90 days")
    status = job.wait(timeout=3600)     # or job.status() at any time

    plan = dry_run(open("ids.txt", "rb"))   # counts and an estimate; writes nothing

Jobs are made by `worker/jobs.py` (the fleet submits some itself: retention sweeps);
this is the import path producers and apps use.
"""

from __future__ import annotations

from worker.jobs import DryRun, IngestReport, Job, dry_run, submit, wait_for
from worker.store import store_for

__all__ = ["DryRun", "IngestReport", "Job", "dry_run", "store_for", "submit", "wait_for"]
