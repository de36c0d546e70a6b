"""Progress and summaries of a job, for humans.

`ProgressPrinter` is called with each status a watcher polls (`wait`, `status --watch`,
`submit --wait`, `demo`). On a terminal it draws a live progress bar (rich): done/total,
ids/s, ETA, outcomes, 429s and time throttled. Anywhere else (a pipe, a log file, CI) it
prints one plain line every few seconds, and the final one.

The numbers come from the job's counters (`JobStatus`), except two measured by the
watcher: ids/s over the last `RATE_WINDOW_S` seconds of polls, and "throttled", the time
the fleet was seen paused by a 429 while watching (the job records no throttled time).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TextIO

import redis
from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.text import Text

from worker.ratelimit import FleetLimiter, limiter_for
from worker.settings import Settings
from worker.store import JobStatus, JobStore

RATE_WINDOW_S = 30.0
"""ids/s is measured over this much of the recent past: steady, yet it follows a change."""

MIN_RATE_SPAN_S = 0.5
"""No rate from polls closer together than this (it would be noise)."""

NO_WORKER_HINT_S = 5.0
"""A worker starts a queued job within a second: still queued after this long while
watched, the watcher says that no worker seems to be consuming."""


# -- measures (pure) -----------------------------------------------------------------------


class RateMeter:
    """Ids per second over the last `window_s` seconds of (time, done) samples."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> None:
        """Record that `done` ids had their outcome at `now` (seconds, monotonic)."""
        self._samples.append((now, done))
        # Keep one sample older than the window, so the window is always spanned.
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def reset(self) -> None:
        """Forget every sample (the job has not started: its waiting is not its rate)."""
        self._samples.clear()

    def rate(self) -> float | None:
        """Ids/s over the samples kept, or None before they span `MIN_RATE_SPAN_S`."""
        if len(self._samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 - t0 >= MIN_RATE_SPAN_S else None


class ThrottleMeter:
    """Seconds the fleet was paused by 429s, from the pause left seen at each poll: the
    union of the pauses seen, up to now. A pause that began and ended between two polls
    is not seen."""

    def __init__(self) -> None:
        self._total = 0.0
        self._mark: float | None = None
        self._until = 0.0

    def observe(self, now: float, pause_left_s: float) -> None:
        """At `now` the fleet had `pause_left_s` seconds of pause left (0: not paused)."""
        self._total = self.seconds(now)
        self._mark = now
        # A pause only ever grows, unless an operator lifts it: trust the latest answer.
        self._until = max(self._until, now + pause_left_s) if pause_left_s > 0 else now

    def seconds(self, now: float) -> float:
        """Paused seconds seen so far, up to `now`."""
        if self._mark is None:
            return 0.0
        return self._total + max(0.0, min(now, self._until) - self._mark)


def eta_s(status: JobStatus, ids_per_s: float | None) -> float | None:
    """Seconds until every id has its outcome at `ids_per_s`; 0 once finished; None
    without a rate to go by."""
    if status.finished:
        return 0.0
    if not ids_per_s or ids_per_s <= 0:
        return None
    return max(status.total - status.done, 0) / ids_per_s


def format_duration(seconds: float | None) -> str:
    """'42s', '4m05s', '2h03m'; '--' for None."""
    if seconds is None:
        return "--"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3_600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3_600}h{s % 3_600 // 60:02d}m"


# -- lines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """One moment of a job as the display shows it."""

    status: JobStatus
    ids_per_s: float | None = None
    eta_s: float | None = None
    throttled_s: float = 0.0


def outcome_parts(view: View) -> list[str]:
    """'deleted N', 'failed N', and the other counters worth showing."""
    status = view.status
    parts = [f"deleted {status.deleted:,}", f"failed {status.failed:,}"]
    if status.not_found:
        parts.append(f"not found {status.not_found:,}")
    if status.not_attempted:
        parts.append(f"not attempted {status.not_attempted:,}")
    if status.rate_limited:
        parts.append(f"429s {status.rate_limited:,}")
    if view.throttled_s >= 0.05 or status.rate_limited:
        parts.append(f"throttled {view.throttled_s:.1f}s")
    return parts


def progress_line(
    status: JobStatus,
    ids_per_s: float | None = None,
    *,
    eta: float | None = None,
    throttled_s: float = 0.0,
) -> str:
    """One plain line: answered/total, percent, ids/s, ETA, outcomes (not attempted
    apart), 429s, throttled time."""
    total = status.total or 1
    parts = [
        f"job {status.job_id[:8]} {status.state}:",
        f"{status.answered:,}/{status.total:,} ids ({100 * status.answered / total:.0f}%)",
    ]
    if ids_per_s is not None:
        parts.append(f"{ids_per_s:,.0f} ids/s")
    if eta is not None and not status.finished:
        parts.append(f"ETA {format_duration(eta)}")
    parts.extend(outcome_parts(View(status, ids_per_s, eta, throttled_s)))
    return "  ".join(parts)


# -- the display ---------------------------------------------------------------------------


class _JobProgress(Progress):
    """A rich Progress with a line of outcomes under the bar."""

    footer: RenderableType = Text("")

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        yield self.footer


def _columns() -> list[TextColumn | BarColumn]:
    field = "{task.fields[%s]}"
    return [
        TextColumn(field % "title"),
        BarColumn(bar_width=None),
        TextColumn(field % "counts"),
        TextColumn(field % "rate"),
        TextColumn(field % "eta"),
    ]


class ProgressPrinter:
    """Call with each new status. On a terminal (or with `console`): a live rich bar;
    elsewhere a plain line every `every_s` seconds and at the end. `throttle(status)`
    returns the fleet's pause left in seconds. Use it as a context manager, so an
    interrupted watch still restores the terminal; it closes itself once the job ends."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        every_s: float = 5.0,
        throttle: Callable[[JobStatus], float] | None = None,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.throttle = throttle
        self.clock = clock
        self.live = console is not None or self.stream.isatty()
        self._console = console
        self._progress: _JobProgress | None = None
        self._task = TaskID(0)
        self._last_print: float | None = None
        self._rate = RateMeter()
        self._throttled = ThrottleMeter()
        self._queued_since: float | None = None
        self._hinted = False

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __call__(self, status: JobStatus) -> None:
        view = self.measure(status)
        self._hint_if_unconsumed(status)
        if self.live:
            self._draw(view)
        elif self._due(status):
            self.stream.write(
                progress_line(status, view.ids_per_s, eta=view.eta_s, throttled_s=view.throttled_s)
                + "\n"
            )
            self.stream.flush()
        if status.finished:
            self.close()

    def measure(self, status: JobStatus) -> View:
        """Record `status` and return what to show of it."""
        now = self.clock()
        if status.state in ("queued", "staging"):
            self._rate.reset()
        self._rate.add(now, status.answered)
        if self.throttle is not None:
            self._throttled.observe(now, self.throttle(status))
        rate = self._rate.rate()
        return View(status, rate, eta_s(status, rate), self._throttled.seconds(now))

    def _hint_if_unconsumed(self, status: JobStatus) -> None:
        """Say once if the job stays queued: a job no worker consumes waits forever."""
        if status.state != "queued":
            self._queued_since = None
            return
        now = self.clock()
        if self._queued_since is None:
            self._queued_since = now
        waited = now - self._queued_since
        if self._hinted or waited < NO_WORKER_HINT_S:
            return
        self._hinted = True
        text = (
            f"job {status.job_id[:8]} still queued after {waited:.0f} s: no worker seems to be"
            f" consuming its queue (priority {status.priority}). Start one"
            " (`wickson-purge worker`) with the same REDIS_URL and WICKSON_KEY_PREFIX"
        )
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Stop the live display (it stays on screen as last drawn)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _due(self, status: JobStatus) -> bool:
        now = self.clock()
        if status.finished or self._last_print is None or now - self._last_print >= self.every_s:
            self._last_print = now
            return True
        return False

    def _draw(self, view: View) -> None:
        status = view.status
        if self._progress is None:
            console = self._console or Console(file=self.stream)
            self._progress = _JobProgress(*_columns(), console=console, auto_refresh=False)
            self._task = self._progress.add_task("", **_bar_fields(view))
            self._progress.start()
        self._progress.footer = Text("  ".join(outcome_parts(view)))
        self._progress.update(
            self._task,
            total=max(status.total, 1),
            completed=status.answered if status.total else 1,
            **_bar_fields(view),
        )
        self._progress.refresh()


def _bar_fields(view: View) -> dict[str, Any]:
    """The text columns of the bar's line."""
    status = view.status
    return {
        "title": f"job {status.job_id[:8]} {status.state}",
        "counts": f"{status.answered:,}/{status.total:,} ids",
        "rate": "--- ids/s" if view.ids_per_s is None else f"{view.ids_per_s:,.0f} ids/s",
        "eta": "" if status.finished else f"ETA {format_duration(view.eta_s)}",
    }


def fleet_pause(store: JobStore, settings: Settings) -> Callable[[JobStatus], float]:
    """`throttle` for ProgressPrinter: seconds left in the pause of the job's fleet limiter
    (one per key alias); 0 when Redis does not answer (the next status poll says so)."""
    limiters: dict[str, FleetLimiter] = {}

    def pause_left(status: JobStatus) -> float:
        alias = status.key_alias
        if alias not in limiters:
            limiters[alias] = limiter_for(store, settings, alias)
        try:
            return limiters[alias].paused_for()
        except redis.RedisError:
            return 0.0

    return pause_left


def summary(status: JobStatus) -> str:
    """A multi-line final summary of a job."""
    origin = f", sweep {status.sweep}" if status.sweep else ""
    lines = [
        f"job {status.job_id}: {status.state} (priority {status.priority}{origin})",
        f"  reason: {status.reason or '-'}",
        f"  ids: {status.total:,} unique of {status.submitted:,} submitted"
        f" ({status.invalid:,} invalid)",
        f"  deleted: {status.deleted:,}  (hd vectors {status.hd_vectors:,},"
        f" ld vectors {status.ld_vectors:,})",
        f"  not found: {status.not_found:,}  (already gone, or never there: not a failure)",
        f"  failed: {status.failed:,}",
    ]
    for reason, count in sorted(status.failure_reasons.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {count:>9,}  {reason}")
    if status.retry_of or status.retried_by:
        lines.append(
            f"  retry of: {status.retry_of or '-'}  retried by: {status.retried_by or '-'}"
        )
    # Always shown: a cancelled or stopped job's unsent ids are what `resume` would send.
    lines.append(f"  not attempted: {status.not_attempted:,}")
    lines.append(
        f"  requests: {status.requests:,}  429s: {status.rate_limited:,}"
        f"  retries: {status.retries:,}"
    )
    if status.started_at and status.finished_at:
        seconds = max(status.finished_at - status.started_at, 1e-3)
        lines.append(f"  seconds: {seconds:.1f}  ids/s: {status.answered / seconds:,.0f}")
    if status.last_error:
        lines.append(f"  last error: {status.last_error}")
    return "\n".join(lines)
