"""Retention sweeps for operators: the `sweeps` table (schedule, last run, next run, last
result) of the CLI and the service.

The sweeps themselves (the file, schedules, running one) are the fleet's:
`worker/sweeps.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from worker.errors import JobNotFound
from worker.store import JobStore
from worker.sweeps import Sweep, history, next_tick


def overview(sweeps: Sequence[Sweep], store: JobStore, now: datetime) -> list[dict[str, Any]]:
    """One row per sweep: its definition, last run (and that job's state now), next run."""
    rows = []
    for sweep in sweeps:
        runs = history(store.redis, store.keys, sweep.name, limit=1)
        last = runs[0] if runs else None
        row: dict[str, Any] = {
            "name": sweep.name,
            "schedule": sweep.schedule,
            "source": sweep.source,
            "max_ids": sweep.max_ids,
            "dry_run": sweep.dry_run,
            "priority": sweep.priority,
            "next_run": next_tick(sweep.crontab, now).isoformat(),
            "last_run": asdict(last) if last else None,
        }
        if last and last.job_id:
            row["last_run"]["job_state"] = _job_state(store, last.job_id)
        rows.append(row)
    return rows


def _job_state(store: JobStore, job_id: str) -> str | None:
    try:
        return store.status(job_id).state
    except JobNotFound:
        return None  # its results have expired


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The `sweeps` table: name, schedule, last run, next run, last result."""
    head = ("SWEEP", "SCHEDULE", "LAST RUN (UTC)", "NEXT RUN (UTC)", "LAST RESULT")
    lines = [head]
    for row in rows:
        last = row["last_run"]
        when = datetime.fromtimestamp(last["at"], UTC).strftime("%Y-%m-%d %H:%M") if last else "-"
        nxt = datetime.fromisoformat(row["next_run"]).strftime("%Y-%m-%d %H:%M")
        lines.append((row["name"], row["schedule"], when, nxt, _result(last, row["dry_run"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)) + "  " + line[-1]
        for line in lines
    )


def _result(last: dict[str, Any] | None, dry: bool) -> str:
    if last is None:
        return "never ran" + (" (dry run)" if dry else "")
    text = f"{last['outcome']}: {last['detail']}"
    if last.get("job_id"):
        text += f"; job {last['job_id']} {last.get('job_state') or 'expired'}"
    return text
