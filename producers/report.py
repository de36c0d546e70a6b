"""What operators read about jobs, besides progress: the job table, completion reports
and the dry-run summary. Pure formatting over the store's readers; no Redis here.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TextIO

from producers.submit import DryRun
from worker.ingest import Line, quoted
from worker.store import JobStatus, ReportRow

REPORT_COLUMNS = ("media_id", "outcome", "reason", "operation_id")
REASON_SHOWN = 40
"""Characters of a job's reason in the job table."""


def ids_per_s(status: JobStatus, now: float) -> float | None:
    """Ids answered (deleted, not found, failed) per second since the job started (until
    it finished); ids a stop left not attempted took no time and do not count."""
    if status.started_at is None:
        return None
    elapsed = (status.finished_at or now) - status.started_at
    return status.answered / elapsed if elapsed > 0 else None


def job_row(status: JobStatus, now: float) -> dict[str, Any]:
    """One job of `jobs --json`: its status, plus done, answered, ids_per_s and age_s."""
    data = status.model_dump(mode="json")
    rate = ids_per_s(status, now)
    data["done"] = status.done
    data["answered"] = status.answered
    data["ids_per_s"] = None if rate is None else round(rate, 1)
    data["age_s"] = None if status.created_at is None else round(now - status.created_at, 1)
    return data


def jobs_table(statuses: Sequence[JobStatus], now: float) -> str:
    """The `jobs` table: id, state, priority, progress (ids answered), not attempted,
    ids/s, age, reason."""
    head = ("JOB", "STATE", "PRIORITY", "PROGRESS", "NOT_ATTEMPTED", "IDS/S", "AGE", "REASON")
    lines = [head]
    for s in statuses:
        rate = ids_per_s(s, now)
        percent = 100 * s.answered / s.total if s.total else 100.0
        reason = s.reason or ""
        lines.append((
            s.job_id,
            s.state,
            s.priority,
            f"{s.answered:,}/{s.total:,} ({percent:.0f}%)",
            f"{s.not_attempted:,}",
            "-" if rate is None else f"{rate:,.0f}",
            "-" if s.created_at is None else duration(now - s.created_at),
            reason if len(reason) <= REASON_SHOWN else reason[: REASON_SHOWN - 3] + "...",
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)  # fmt: skip


def duration(seconds: float) -> str:
    """A duration the way people say it: '45s', '12m 5s', '3h 20m', '2d 4h'."""
    if math.isinf(seconds):
        return "forever"
    s = max(0, round(seconds))
    for unit, size, sub, sub_size in (("d", 86_400, "h", 3_600), ("h", 3_600, "m", 60)):
        if s >= size:
            return f"{s // size}{unit} {s % size // sub_size}{sub}"
    return f"{s // 60}m {s % 60}s" if s >= 60 else f"{s}s"


def write_report(
    rows: Iterable[ReportRow], out: TextIO, fmt: Literal["csv", "jsonl"] = "csv"
) -> int:
    """Write a completion report, row by row as `rows` yields them; returns the rows."""
    n = 0
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row._asdict()) + "\n")
            n += 1
        return n
    writer = csv.writer(out)
    writer.writerow(REPORT_COLUMNS)
    for row in rows:
        writer.writerow(row)
        n += 1
    return n


def dry_run_data(plan: DryRun) -> dict[str, Any]:
    """`submit --dry-run --json`."""
    r = plan.report
    return {
        "dry_run": True,
        "submitted": r.submitted,
        "unique": r.valid + r.invalid,
        "valid": r.valid,
        "invalid": r.invalid,
        "duplicates": r.duplicates,
        "batches": plan.batches,
        "key_alias": plan.key_alias,
        "priority": plan.priority,
        "rate_per_s": plan.rate_per_s,
        "estimate_s": None if math.isinf(plan.estimate_s) else round(plan.estimate_s, 3),
        "invalid_lines": [
            {"line": line.number, "text": line.text, "problem": line.problem}
            for line in r.invalid_lines
        ],
    }


def invalid_line(line: Line) -> str:
    """One invalid line for a message: its number, its text escaped once, the problem."""
    return f"line {line.number}: {quoted(line.text)}: {line.problem}"


def dry_run_text(plan: DryRun) -> str:
    """`submit --dry-run`: the counts, the first invalid lines, the estimate, and that
    nothing happened."""
    r = plan.report
    shown = [f"    {invalid_line(line)}" for line in r.invalid_lines]
    if r.invalid > len(r.invalid_lines):
        shown.append(f"    ... {r.invalid - len(r.invalid_lines):,} more")
    return "\n".join([
        "dry run: nothing was created, nothing was sent",
        f"  ids read:   {r.submitted:,}",
        f"  to delete:  {r.valid:,} unique valid ids, in {plan.batches:,} requests",
        f"  invalid:    {r.invalid:,} (would be recorded failed, invalid_id)",
        *shown,
        f"  duplicates: {r.duplicates:,} (dropped)",
        f"  estimate:   {duration(plan.estimate_s)} at the fleet's current"
        f" {plan.rate_per_s:g} requests/s (key alias {plan.key_alias!r}), if no other job"
        " shares it; 429 pauses and retries come on top",
    ])  # fmt: skip
