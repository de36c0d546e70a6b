"""Retention sweeps: jobs Celery beat submits on a schedule, defined in a TOML file.

    [[sweep]]
    name = "media-older-than-90-days"
    schedule = "30 3 * * *"              # minute hour day-of-month month day-of-week, UTC
    reason = "retention: media older than 90 days"
    callable = "myapp.retention:expired_media_ids"   # or: file = "..." / glob = "..."
    max_ids = 500000                     # guard rail: a bigger run is refused, no job
    dry_run = false                      # true: count and record, create no job
    priority = "low"                     # the default: an operator's purge goes first
    key_alias = "default"

WICKSON_SWEEPS_FILE names the file; beat builds its schedule from it when it starts
(worker/beat.py) and sends `wickson_purge.run_sweep(name, tick)` at each scheduled
minute, `tick` being that minute (UTC, "20261128T0330Z"). A tick runs once however many
beats sent it: the first run takes ``<prefix>:sweep:<name>:<tick>`` with SET NX; only a
redelivery of that same message (same task id) may go on, and it submits with the
idempotency key ``sweep:<name>:<tick>``, so a crash after the submit makes no second job.
Every run is recorded in ``<prefix>:sweep:<name>:runs``: submitted (with its job id),
dry_run, refused (over max_ids, or bad input), empty, or failed (the id source raised).

Schedules are Celery crontabs: UTC (the app's timezone), and unlike cron a day must match
both day-of-month and day-of-week when both are given. Relative `file` and `glob` paths
are relative to the TOML file. A callable is imported when the file loads (a typo is a
ConfigError at start-up) and called when the sweep runs, on a worker: `params` are passed
to it as keyword arguments, and it yields ids (str or bytes).
"""

from __future__ import annotations

import glob as globbing
import importlib
import json
import re
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal

import redis
import structlog
from celery.beat import BeatLazyFunc
from celery.schedules import ParseException, crontab
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.errors import ConfigError, EmptyInput, InputError, StoreUnavailable, describe, dotted
from worker.ingest import read_lines
from worker.jobs import check_reason, dry_run, submit
from worker.keys import Keys
from worker.scripts import decoded
from worker.settings import ALIAS_PATTERN, DEFAULT_ALIAS, Settings
from worker.store import JobStore, Priority, store_errors

log = structlog.get_logger("wickson_purge.sweeps")

RunOutcome = Literal["submitted", "dry_run", "refused", "empty", "failed"]
HISTORY_KEPT = 100
"""Runs kept per sweep in its history list (newest first)."""
SEARCH_DAYS = 8 * 366 + 1
"""How far a schedule's previous or next run is looked for: Feb 29 recurs within 8 years."""
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_HEADER = "media_id"
"""First line of every spooled source: read as a header, so no id is taken for CSV."""


# -- schedules (pure) -------------------------------------------------------------------


def parse_crontab(expression: str) -> crontab:
    """A Celery crontab from "m h dom mon dow"; ValueError saying what is wrong."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"schedule {expression!r} has {len(fields)} fields; a crontab has 5:"
            " minute hour day-of-month month day-of-week"
        )
    minute, hour, dom, month, dow = fields
    try:
        cron = crontab(
            minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow
        )
    except (ValueError, ParseException) as exc:
        raise ValueError(f"schedule {expression!r}: {exc}") from None
    previous_tick(cron, datetime.now(UTC))  # a schedule that (almost) never fires is refused
    return cron


def _fire_times(cron: crontab, day: date) -> list[tuple[int, int]]:
    """(hour, minute) of every run of `cron` on `day`, in order (Celery: dom AND dow)."""
    if (
        day.month not in cron.month_of_year
        or day.day not in cron.day_of_month
        or day.isoweekday() % 7 not in cron.day_of_week  # Celery counts Sunday as 0
    ):
        return []
    return [(h, m) for h in sorted(cron.hour) for m in sorted(cron.minute)]


def previous_tick(cron: crontab, now: datetime) -> datetime:
    """The latest run of `cron` at or before `now` (UTC, to the minute); ValueError if it
    did not run in the last 8 years (say, Feb 29 on a Monday: refused)."""
    t = now.astimezone(UTC).replace(second=0, microsecond=0)
    for days in range(SEARCH_DAYS):
        day = t.date() - timedelta(days=days)
        times = _fire_times(cron, day)
        if days == 0:
            times = [hm for hm in times if hm <= (t.hour, t.minute)]
        if times:
            return datetime(day.year, day.month, day.day, *times[-1], tzinfo=UTC)
    raise ValueError("the schedule does not fire within 8 years")


def next_tick(cron: crontab, now: datetime) -> datetime:
    """The first run of `cron` after `now` (UTC, to the minute)."""
    t = now.astimezone(UTC).replace(second=0, microsecond=0)
    for days in range(SEARCH_DAYS):
        day = t.date() + timedelta(days=days)
        times = _fire_times(cron, day)
        if days == 0:
            times = [hm for hm in times if hm > (t.hour, t.minute)]
        if times:
            return datetime(day.year, day.month, day.day, *times[0], tzinfo=UTC)
    raise ValueError("the schedule does not fire within 8 years")


def tick_label(when: datetime) -> str:
    """A scheduled minute as a tick: '20261128T0330Z' (UTC)."""
    return when.astimezone(UTC).strftime("%Y%m%dT%H%MZ")


def parse_tick(tick: str) -> datetime:
    """The minute a tick names; ValueError for anything else."""
    return datetime.strptime(tick, "%Y%m%dT%H%MZ").replace(tzinfo=UTC)


def current_tick(schedule: str) -> str:
    """The tick of the latest scheduled minute of `schedule`: what beat sends. Two beats
    sending the same run compute the same tick, even a minute or more apart."""
    return tick_label(previous_tick(parse_crontab(schedule), datetime.now(UTC)))


# -- definitions -------------------------------------------------------------------------


def load_callable(spec: str) -> Callable[..., Any]:
    """The function 'package.module:function' names; ValueError saying why it cannot be
    had (the module does not import, or has no such callable)."""
    module_name, _, name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error of the user's module at import is the answer
        raise ValueError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"module {module_name!r} has no callable {name!r}")
    return function  # type: ignore[no-any-return]


class Sweep(BaseModel):
    """One sweep of the TOML file (`[[sweep]]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    schedule: str
    reason: str = Field(min_length=1)
    max_ids: int = Field(ge=1)
    """Guard rail: a run that would delete more unique ids is refused (no job)."""
    callable_: str | None = Field(None, alias="callable")
    """'module:function' yielding ids; `params` are its keyword arguments."""
    params: dict[str, Any] = {}
    file: Path | None = None
    glob: str | None = None
    dry_run: bool = False
    priority: Priority = "low"
    key_alias: str = Field(DEFAULT_ALIAS, pattern=ALIAS_PATTERN)

    @field_validator("schedule")
    @classmethod
    def _schedule_parses(cls, value: str) -> str:
        parse_crontab(value)
        return " ".join(value.split())

    @field_validator("reason")
    @classmethod
    def _reason_is_sendable(cls, value: str) -> str:
        checked = check_reason(value)
        if checked is None:
            raise ValueError("a sweep needs a reason (the API logs it)")
        return checked

    @field_validator("callable_")
    @classmethod
    def _callable_names_a_function(cls, value: str | None) -> str | None:
        if value is not None and not _CALLABLE.fullmatch(value):
            raise ValueError(f"{value!r} is not 'package.module:function'")
        if value is not None:
            load_callable(value)  # a typo fails when the file loads, not at 3 am
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Sweep:
        given = [n for n in ("callable_", "file", "glob") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one id source: callable, file or glob")
        if self.params and self.callable_ is None:
            raise ValueError("params are the keyword arguments of a callable source")
        return self

    @property
    def crontab(self) -> crontab:
        return parse_crontab(self.schedule)

    @property
    def source(self) -> str:
        """The id source, as the sweeps table shows it."""
        if self.callable_ is not None:
            return f"callable {self.callable_}"
        return f"file {self.file}" if self.file is not None else f"glob {self.glob}"


class SweepsFile(BaseModel):
    """The whole TOML file: `[[sweep]]` tables."""

    model_config = ConfigDict(extra="forbid")

    sweep: list[Sweep] = []

    @model_validator(mode="after")
    def _unique_names(self) -> SweepsFile:
        names = [s.name for s in self.sweep]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"sweep names must be unique: {', '.join(twice)}")
        return self


def load_sweeps(path: Path) -> list[Sweep]:
    """The sweeps of a TOML file, validated; ConfigError naming the file and the problem."""
    where = f"WICKSON_SWEEPS_FILE={str(path)!r}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    for entry in data.get("sweep", []) if isinstance(data.get("sweep"), list) else []:
        if isinstance(entry, dict):
            _anchor_paths(entry, path.resolve().parent)
    try:
        return SweepsFile.model_validate(data).sweep
    except ValidationError as exc:
        raise ConfigError(f"{where}:\n{_explain(exc, data)}") from None


def _anchor_paths(entry: dict[str, Any], base: Path) -> None:
    """Relative `file` and `glob` paths are relative to the sweeps file."""
    for key in ("file", "glob"):
        value = entry.get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            entry[key] = str(base / value)


def _explain(exc: ValidationError, data: dict[str, Any]) -> str:
    """One line per place: the sweep (by name, or number) and its field, or the file."""

    def place(loc: Sequence[Any]) -> str:
        where = "file"
        if loc[:1] == ("sweep",) and len(loc) > 1 and isinstance(loc[1], int):
            entry = data["sweep"][loc[1]]
            name = entry.get("name") if isinstance(entry, dict) else None
            where = f"sweep {name!r}" if name else f"sweep #{loc[1] + 1}"
            loc = loc[2:]
        field = dotted(loc).replace("callable_", "callable")
        return f"{where}: {field}" if field else where

    return "\n".join(f"  {line}" for line in describe(exc.errors(), place=place))


def beat_entries(
    sweeps: Sequence[Sweep], *, task: str, options: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Beat schedule entries (`beat_schedule`) running `task(name, tick)` for each sweep;
    the tick is computed when beat sends the task."""
    return {
        f"sweep:{s.name}": {
            "task": task,
            "schedule": s.crontab,
            "args": (s.name, BeatLazyFunc(current_tick, s.schedule)),
            "options": dict(options),
        }
        for s in sweeps
    }


# -- running -----------------------------------------------------------------------------


@dataclass
class SweepRun:
    """One run of a sweep, as its history records it."""

    sweep: str
    tick: str
    at: float
    """When it ran (epoch seconds)."""
    outcome: RunOutcome = "failed"
    detail: str = ""
    job_id: str | None = None
    ids: int = 0
    """Unique valid ids the source yielded (what the job deletes)."""
    invalid: int = 0

    def ended(self, outcome: RunOutcome, detail: str, job_id: str | None = None) -> SweepRun:
        self.outcome, self.detail, self.job_id = outcome, detail[:500], job_id
        return self


def sweep_lines(sweep: Sweep) -> Iterator[str]:
    """The ids of the sweep's source, one per item, after a header line."""
    yield _HEADER
    if sweep.callable_ is not None:
        function = load_callable(sweep.callable_)
        for item in function(**sweep.params):
            yield item.decode("utf-8", "backslashreplace") if isinstance(item, bytes) else str(item)
        return
    paths = [sweep.file] if sweep.file is not None else sorted(map(Path, _glob(sweep)))
    for path in paths:
        with open(path, "rb") as handle:  # every file may have its own header or CSV columns
            yield from (line.text for line in read_lines(handle))


def _glob(sweep: Sweep) -> list[str]:
    return globbing.glob(sweep.glob or "", recursive=True)


def _spool(lines: Iterator[str], spool: IO[bytes]) -> None:
    """Write one id per line: the same bytes feed the dry run and the job."""
    for text in lines:
        one_line = text.replace("\r", "\\r").replace("\n", "\\n")
        spool.write(one_line.encode("utf-8", "backslashreplace") + b"\n")
    spool.seek(0)


def run_sweep(
    sweep: Sweep,
    tick: str,
    *,
    settings: Settings,
    client: redis.Redis | None = None,
    start: Callable[[JobStore], object] | None = None,
) -> SweepRun:
    """Run `sweep` once for `tick`: read its ids, count them, then submit a job unless
    the count is over `max_ids` (refused) or the sweep is a dry run. Source errors are
    the run's outcome ('failed'), not exceptions; StoreUnavailable is raised."""
    run = SweepRun(sweep.name, tick, time.time())
    with tempfile.TemporaryFile(prefix="wickson-sweep-") as spool:
        try:
            _spool(sweep_lines(sweep), spool)
            plan = dry_run(spool, reason=sweep.reason, settings=settings, client=client,
                           key_alias=sweep.key_alias, priority=sweep.priority)  # fmt: skip
            run.ids, run.invalid = plan.report.valid, plan.report.invalid
            if run.ids > sweep.max_ids:
                why = f"{run.ids:,} ids to delete, more than max_ids={sweep.max_ids:,}: not run"
                return run.ended("refused", why)
            if sweep.dry_run:
                return run.ended("dry_run", f"would delete {run.ids:,} ids ({run.invalid} invalid)")
            spool.seek(0)
            # No input check on the idempotency key: a redelivered run may read a source
            # that changed since (new uploads past 90 days); it still makes one job.
            job = submit(spool, reason=sweep.reason, idempotency_key=f"sweep:{sweep.name}:{tick}",
                         settings=settings, client=client, start=start, key_alias=sweep.key_alias,
                         priority=sweep.priority, sweep=sweep.name, verify_input=False)  # fmt: skip
            return run.ended("submitted", f"{run.ids:,} ids to delete", job.id)
        except EmptyInput:
            return run.ended("empty", "the source yielded no ids")
        except InputError as exc:
            return run.ended("refused", str(exc))
        except StoreUnavailable:
            raise
        except Exception as exc:
            log.exception("sweep.source_failed", sweep=sweep.name, tick=tick)
            return run.ended("failed", f"{type(exc).__name__}: {exc}")


def claim_tick(
    client: redis.Redis, keys: Keys, name: str, tick: str, owner: str, ttl_s: int
) -> bool:
    """Take sweep `name`'s `tick` for the run `owner` (a task id), atomically: True for the
    first taker, and for `owner` again (a redelivery of its message); False otherwise."""
    key = keys.sweep_tick(name, tick)
    with store_errors():
        if client.set(key, owner, nx=True, ex=ttl_s):
            return True
        held = client.get(key)
    return bool(owner) and held is not None and decoded(held) == owner


def record_run(client: redis.Redis, keys: Keys, run: SweepRun) -> None:
    """Add `run` to its sweep's history (newest first, capped)."""
    key = keys.sweep_runs(run.sweep)
    with store_errors(), client.pipeline(transaction=True) as pipe:
        pipe.lpush(key, json.dumps(asdict(run), separators=(",", ":")))
        pipe.ltrim(key, 0, HISTORY_KEPT - 1)
        pipe.execute()


def history(client: redis.Redis, keys: Keys, name: str, limit: int = 10) -> list[SweepRun]:
    """The sweep's latest runs, newest first."""
    with store_errors():
        entries = client.lrange(keys.sweep_runs(name), 0, limit - 1)
    return [SweepRun(**json.loads(entry)) for entry in entries]


def run_scheduled(
    name: str, tick: str, *, settings: Settings, client: redis.Redis, owner: str
) -> str:
    """What `wickson_purge.run_sweep` does: run sweep `name` for `tick` unless another run
    took that tick; record the run. Returns its outcome, 'duplicate' or 'unknown'."""
    sweeps = {s.name: s for s in load_sweeps(settings.sweeps_file)} if settings.sweeps_file else {}
    sweep = sweeps.get(name)
    if sweep is None:
        log.warning("sweep.unknown", sweep=name, tick=tick, file=str(settings.sweeps_file))
        return "unknown"
    keys = Keys(settings.key_prefix)
    if not claim_tick(client, keys, name, tick, owner, settings.job_retention_s):
        log.info("sweep.duplicate_tick", sweep=name, tick=tick)
        return "duplicate"
    latest = history(client, keys, name, limit=1)
    if latest and latest[0].tick == tick:
        return latest[0].outcome  # a redelivery after the run was recorded
    run = run_sweep(sweep, tick, settings=settings, client=client)
    record_run(client, keys, run)
    return run.outcome
