"""Progress and summaries of a job, for humans: one line, updated in place on a terminal,
printed every few seconds elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from worker.store import JobStatus


def progress_line(status: JobStatus, ids_per_s: float | None = None) -> str:
    """One line: done/total, percent, outcomes, rate."""
    total = status.total or 1
    parts = [
        f"job {status.job_id[:8]} {status.state}:",
        f"{status.done:,}/{status.total:,} ids ({100 * status.done / total:.0f}%)",
        f"deleted {status.deleted:,}",
        f"failed {status.failed:,}",
    ]
    if status.already_absent:
        parts.append(f"already absent {status.already_absent:,}")
    if status.not_attempted:
        parts.append(f"not attempted {status.not_attempted:,}")
    if ids_per_s is not None:
        parts.append(f"{ids_per_s:,.0f} ids/s")
    if status.rate_limited:
        parts.append(f"429s {status.rate_limited:,}")
    return "  ".join(parts)


class ProgressPrinter:
    """Call with each new status; prints a live line (tty) or a line every `every_s`."""

    def __init__(self, stream: TextIO = sys.stderr, *, every_s: float = 5.0) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.every_s = every_s
        self._last_print = 0.0
        self._first: tuple[float, int] | None = None

    def __call__(self, status: JobStatus) -> None:
        now = time.monotonic()
        if self._first is None or status.state in ("queued", "staging"):
            self._first = (now, status.done)
        elapsed = now - self._first[0]
        rate = (status.done - self._first[1]) / elapsed if elapsed > 0.5 else None
        line = progress_line(status, rate)
        if self.live:
            self.stream.write("\r\033[K" + line + ("\n" if status.finished else ""))
            self.stream.flush()
        elif status.finished or now - self._last_print >= self.every_s:
            self.stream.write(line + "\n")
            self._last_print = now


def summary(status: JobStatus) -> str:
    """A multi-line final summary of a job."""
    lines = [
        f"job {status.job_id}: {status.state}",
        f"  ids: {status.total:,} unique of {status.submitted:,} submitted"
        f" ({status.invalid:,} invalid)",
        f"  deleted: {status.deleted:,}  (hd vectors {status.hd_vectors:,},"
        f" ld vectors {status.ld_vectors:,})",
        f"  already absent: {status.already_absent:,}",
        f"  failed: {status.failed:,}",
    ]
    for reason, count in sorted(status.failure_reasons.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {count:>9,}  {reason}")
    if status.not_attempted:
        lines.append(f"  not attempted: {status.not_attempted:,}")
    lines.append(
        f"  requests: {status.requests:,}  429s: {status.rate_limited:,}"
        f"  retries: {status.retries:,}"
    )
    if status.started_at and status.finished_at:
        seconds = max(status.finished_at - status.started_at, 1e-3)
        lines.append(f"  seconds: {seconds:.1f}  ids/s: {status.done / seconds:,.0f}")
    if status.last_error:
        lines.append(f"  last error: {status.last_error}")
    return "\n".join(lines)
