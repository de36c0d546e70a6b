"""Celery beat's schedule: the watchdog and the retention sweeps, built when beat starts.

`celery -A worker beat` (or a worker's `-B`) creates the app's `beat_scheduler`,
`Scheduler` below, which builds `beat_schedule` from the settings and WICKSON_SWEEPS_FILE
before Celery's persistent scheduler reads it (its `setup_schedule`, in the scheduler's
constructor; `signals.beat_init` comes after that, too late). Only beat builds it: a
process that imports the app, or publishes, never parses the sweeps file. A file that
does not load stops beat with one line naming the file, the sweep and the field (exit 2).
"""

from __future__ import annotations

import sys
from typing import Any

from celery.beat import PersistentScheduler

from worker.celery import CONTROL_QUEUE, SWEEP_EXPIRES_S, SWEEP_TASK, WATCHDOG_TASK
from worker.errors import ConfigError
from worker.settings import Settings, get_settings
from worker.sweeps import beat_entries, load_sweeps

WATCHDOG = "watchdog"
"""The schedule entry of the watchdog (the keeper's wake-up, once more from beat)."""


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Beat's entries: the watchdog, and one per sweep of WICKSON_SWEEPS_FILE (if set).
    Raises ConfigError for a sweeps file that does not load."""
    schedule: dict[str, dict[str, Any]] = {
        WATCHDOG: {
            "task": WATCHDOG_TASK,
            "schedule": settings.watchdog_interval_s,
            # A watchdog run that waited longer than its interval is stale: skip it.
            "options": {"queue": CONTROL_QUEUE, "expires": settings.watchdog_interval_s},
        }
    }
    if settings.sweeps_file is not None:
        # The sweep task itself is short (read ids, submit a job): the control queue keeps
        # it from waiting behind drains; the job it submits runs at the sweep's priority.
        options = {"queue": CONTROL_QUEUE, "expires": SWEEP_EXPIRES_S}
        sweeps = load_sweeps(settings.sweeps_file)
        schedule.update(beat_entries(sweeps, task=SWEEP_TASK, options=options))
    return schedule


class Scheduler(PersistentScheduler):  # type: ignore[misc]  # Celery ships no types
    """Celery's persistent scheduler (the schedule file keeps each entry's last run),
    with the app's `beat_schedule` built first."""

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        if WATCHDOG not in app.conf.beat_schedule:
            try:
                app.conf.beat_schedule = beat_schedule(get_settings())
            except ConfigError as exc:
                # Celery would log the traceback and go on without a schedule.
                print(f"wickson-purge beat: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None
        super().__init__(app, *args, **kwargs)
