"""worker/sweeps.py and worker/beat.py: the sweeps file, schedules and ticks, one run per
tick, the beat schedule; and the `sweeps` command (producers/sweeps.py), on fakeredis."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from celery.beat import BeatLazyFunc
from celery.schedules import crontab

from producers import cli
from tests.unit.conftest import unit_settings
from worker.beat import beat_schedule
from worker.celery import CONTROL_QUEUE, SWEEP_TASK
from worker.errors import ConfigError
from worker.store import JobStore
from worker.sweeps import (
    current_tick,
    history,
    load_sweeps,
    next_tick,
    parse_crontab,
    previous_tick,
    run_scheduled,
    tick_label,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "ops" / "sweeps.example.toml"
TICK = "20261128T0330Z"


@pytest.fixture
def sweeps_toml(tmp_path: Path):
    """`sweeps_toml(body, **files)`: a sweeps file (and data files beside it); its path."""

    def write(body: str, **files: str) -> Path:
        for name, text in files.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
        path = tmp_path / "sweeps.toml"
        path.write_text(body)
        return path

    return write


def sweep(name: str = "s1", **fields: object) -> str:
    """One [[sweep]] table: a file source of ids.txt by default."""
    values: dict[str, object] = {"name": name, "schedule": "30 3 * * *", "reason": "retention",
                                 "file": "ids.txt", "max_ids": 1000}  # fmt: skip
    values.update(fields)
    body = "\n".join(f"{k} = {toml_value(v)}" for k, v in values.items() if v is not None)
    return f"[[sweep]]\n{body}\n"


def toml_value(value: object) -> str:
    """A TOML value: JSON's scalars and strings, inline tables for dicts."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def ids_text(n: int, prefix: str = "vec-") -> str:
    return "".join(f"{prefix}{k:06d}\n" for k in range(n))


# -- the beat schedule -------------------------------------------------------------------


def test_the_beat_schedule_is_built_from_the_example_sweeps_file() -> None:
    """ops/sweeps.example.toml: one beat entry per sweep, its crontab, name and tick."""
    schedule = beat_schedule(unit_settings(sweeps_file=EXAMPLE))
    assert set(schedule) == {"watchdog", "sweep:media-older-than-90-days", "sweep:takedown-lists"}
    entry = schedule["sweep:media-older-than-90-days"]
    assert entry["task"] == SWEEP_TASK
    assert isinstance(entry["schedule"], crontab)
    assert (entry["schedule"].minute, entry["schedule"].hour) == ({30}, {3})
    name, tick = entry["args"]
    assert name == "media-older-than-90-days"
    assert isinstance(tick, BeatLazyFunc)
    assert re.fullmatch(r"\d{8}T\d{4}Z", tick())
    assert tick() == tick_label(previous_tick(entry["schedule"], datetime.now(UTC)))
    assert entry["options"]["queue"] == CONTROL_QUEUE
    assert schedule["sweep:takedown-lists"]["schedule"].day_of_week == {1, 2, 3, 4, 5}


def test_without_a_sweeps_file_beat_runs_only_the_watchdog() -> None:
    """WICKSON_SWEEPS_FILE unset: the schedule is the watchdog alone."""
    assert set(beat_schedule(unit_settings())) == {"watchdog"}


def test_the_example_sweeps_resolve_paths_beside_the_file() -> None:
    """A relative glob is relative to the sweeps file, whatever the working directory."""
    takedowns = {s.name: s for s in load_sweeps(EXAMPLE)}["takedown-lists"]
    assert takedowns.glob == str(ROOT / "ops" / "examples" / "takedowns" / "*.txt")
    assert takedowns.dry_run
    assert takedowns.priority == "high"


# -- validation --------------------------------------------------------------------------


BAD_FILES = [
    pytest.param(sweep(schedule="61 * * * *"), "sweep 's1': schedule: schedule '61", id="minute"),
    pytest.param(sweep(schedule="* * * *"), "has 4 fields; a crontab has 5", id="four-fields"),
    pytest.param(sweep(schedule="0 0 30 2 *"), "never occurs", id="never"),
    pytest.param(sweep(schedule="0 0 29 2 1"), "does not fire within 8 years", id="rarely"),
    pytest.param(sweep(glob="*.txt"), "exactly one id source", id="two-sources"),
    pytest.param(sweep(file=None), "exactly one id source", id="no-source"),
    pytest.param(sweep(max_id=5), "max_id: Extra inputs are not permitted", id="typo"),
    pytest.param(sweep(max_ids=0), "max_ids", id="zero-max"),
    pytest.param(sweep() + sweep(), "sweep names must be unique: s1", id="duplicate"),
    pytest.param(
        sweep(file=None, callable="retention.older"),
        "is not 'package.module:function'",
        id="callable-format",
    ),
    pytest.param(sweep(params={"days": 3}), "params are the keyword arguments", id="params"),
    pytest.param(sweep(name="a:b"), "name", id="name"),
    pytest.param(sweep(priority="urgent"), "priority", id="priority"),
    pytest.param(sweep(reason=""), "reason", id="no-reason"),
    pytest.param("[[sweep]\n", "not valid TOML", id="toml-syntax"),
]


@pytest.mark.parametrize(("body", "message"), BAD_FILES)
def test_a_bad_sweeps_file_is_refused_saying_where_and_why(sweeps_toml, body, message) -> None:
    """Each mistake: ConfigError naming the file, the sweep and the problem."""
    path = sweeps_toml(body)
    with pytest.raises(ConfigError) as info:
        load_sweeps(path)
    assert "WICKSON_SWEEPS_FILE" in str(info.value)
    assert message in str(info.value)


def test_a_missing_sweeps_file_is_a_config_error(tmp_path: Path) -> None:
    """A sweeps file that does not exist: ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_sweeps(tmp_path / "nope.toml")


# -- schedules and ticks -----------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "now", "previous", "following"),
    [
        ("30 3 * * *", "2026-11-28 21:15:42", "2026-11-28 03:30", "2026-11-29 03:30"),
        ("30 3 * * *", "2026-11-28 03:30:00", "2026-11-28 03:30", "2026-11-29 03:30"),
        ("30 3 * * *", "2026-11-28 03:29:59", "2026-11-27 03:30", "2026-11-28 03:30"),
        ("*/15 * * * 1-5", "2026-11-28 10:00", "2026-11-27 23:45", "2026-11-30 00:00"),
        ("0 0 29 2 *", "2026-11-28 10:00", "2024-02-29 00:00", "2028-02-29 00:00"),
        ("0 0 1-7 * 1", "2026-11-28 10:00", "2026-11-02 00:00", "2026-12-07 00:00"),
        ("59 23 31 12 *", "2027-01-01 00:00", "2026-12-31 23:59", "2027-12-31 23:59"),
    ],
)
def test_previous_and_next_runs_follow_celerys_crontab(schedule, now, previous, following):
    """The latest run at or before now, the first after it (Celery: dom AND dow)."""
    cron = parse_crontab(schedule)
    assert previous_tick(cron, at(now)) == at(previous)
    assert next_tick(cron, at(now)) == at(following)
    minute, hour, dom, month, dow = schedule.split()
    fixed = at(now)
    celerys = crontab(minute=minute, hour=hour, day_of_month=dom, month_of_year=month,
                      day_of_week=dow, nowfun=lambda: fixed)  # fmt: skip
    assert fixed + celerys.remaining_estimate(fixed) == at(following)


def test_a_tick_names_the_scheduled_minute_whenever_beat_sends_it() -> None:
    """Two beats sending the 03:30 run, one of them late: the same tick."""
    cron = parse_crontab("30 3 * * *")
    on_time = tick_label(previous_tick(cron, at("2026-11-28 03:30:00.2")))
    late = tick_label(previous_tick(cron, at("2026-11-28 03:32:10")))
    assert on_time == late == TICK
    assert re.fullmatch(r"\d{8}T\d{4}Z", current_tick("*/5 * * * *"))


# -- running -----------------------------------------------------------------------------


def test_a_sweep_run_submits_a_job_linked_to_its_sweep(
    sweeps_toml, fake_redis, started, store: JobStore
) -> None:
    """A run makes an ordinary job: its reason, the sweep's name and priority; recorded."""
    settings = unit_settings(sweeps_file=sweeps_toml(sweep(), **{"ids.txt": ids_text(250)}))
    assert run_scheduled("s1", TICK, settings=settings, client=fake_redis, owner="t1") == (
        "submitted"
    )
    [(job_id, priority)] = started
    status = store.status(job_id)
    assert (status.sweep, status.priority, status.reason, status.total) == (
        "s1", "low", "retention", 250,
    )  # fmt: skip
    [run] = history(fake_redis, store.keys, "s1")
    assert (run.tick, run.outcome, run.job_id, run.ids) == (TICK, "submitted", job_id, 250)
    assert priority == "low"


def test_a_tick_runs_once_however_many_beats_sent_it(
    sweeps_toml, fake_redis, started, store: JobStore
) -> None:
    """Two messages for one tick: one job; the second message is a duplicate; a
    redelivery of the first gives back the recorded outcome and makes no second job."""
    settings = unit_settings(sweeps_file=sweeps_toml(sweep(), **{"ids.txt": ids_text(10)}))
    run = lambda owner: run_scheduled("s1", TICK, settings=settings, client=fake_redis,  # noqa: E731
                                      owner=owner)  # fmt: skip
    assert run("beat-a") == "submitted"
    assert run("beat-b") == "duplicate"
    assert run("beat-a") == "submitted"
    assert len(started) == 1
    assert len(store.recent_jobs()) == 1
    assert len(history(fake_redis, store.keys, "s1")) == 1
    assert 0 < fake_redis.ttl(store.keys.sweep_tick("s1", TICK)) <= 86_400
    assert run_scheduled("s1", "20261129T0330Z", settings=settings, client=fake_redis,
                         owner="beat-b") == "submitted"  # fmt: skip


def test_a_redelivered_sweep_that_crashed_after_submitting_makes_no_second_job(
    sweeps_toml, fake_redis, started, store: JobStore
) -> None:
    """The tick's job exists but the run was not recorded: the same job comes back."""
    settings = unit_settings(sweeps_file=sweeps_toml(sweep(), **{"ids.txt": ids_text(10)}))
    assert run_scheduled("s1", TICK, settings=settings, client=fake_redis, owner="m1")
    fake_redis.delete(store.keys.sweep_runs("s1"))  # as if it died before recording
    assert run_scheduled("s1", TICK, settings=settings, client=fake_redis, owner="m1")
    assert len(store.recent_jobs()) == 1
    assert history(fake_redis, store.keys, "s1")[0].job_id == store.recent_jobs()[0]


def test_a_sweep_over_max_ids_is_refused_and_creates_no_job(
    sweeps_toml, fake_redis, started, store: JobStore
) -> None:
    """More unique ids than max_ids: no job, no staging, a refused run saying why."""
    body = sweep(max_ids=100)
    settings = unit_settings(sweeps_file=sweeps_toml(body, **{"ids.txt": ids_text(101)}))
    assert run_scheduled("s1", TICK, settings=settings, client=fake_redis, owner="t") == "refused"
    [run] = history(fake_redis, store.keys, "s1")
    assert "101 ids to delete, more than max_ids=100" in run.detail
    assert run.job_id is None
    assert fake_redis.keys(store.keys.job("*")) == []
    assert started == []


def test_duplicates_do_not_count_against_max_ids(
    sweeps_toml, fake_redis, started, store: JobStore
) -> None:
    """The guard counts unique ids: 100 ids listed twice fit max_ids=100."""
    text = ids_text(100) * 2
    settings = unit_settings(sweeps_file=sweeps_toml(sweep(max_ids=100), **{"ids.txt": text}))
    assert run_scheduled("s1", TICK, settings=settings, client=fake_redis, owner="t") == (
        "submitted"
    )


def test_a_dry_run_sweep_counts_and_creates_nothing(
    sweeps_toml, fake_redis, started, store: JobStore
) -> None:
    """dry_run: the run records what it would delete; no job key, no start task."""
    path = sweeps_toml(sweep(dry_run=True), **{"ids.txt": ids_text(42) + "bad id\n"})
    settings = unit_settings(sweeps_file=path)
    assert run_scheduled("s1", TICK, settings=settings, client=fake_redis, owner="t") == "dry_run"
    [run] = history(fake_redis, store.keys, "s1")
    assert (run.ids, run.invalid) == (42, 1)
    assert "would delete 42 ids" in run.detail
    assert fake_redis.keys(store.keys.job("*")) == []
    assert started == []


def test_a_callable_source_is_called_with_its_params(
    sweeps_toml, fake_redis, started, store: JobStore
) -> None:
    """The example callable, given `today`, yields the ids uploaded over 90 days before."""
    body = sweep(file=None, callable="ops.examples.retention:older_than_90_days",
                 params={"today": "2026-11-28"})  # fmt: skip
    settings = unit_settings(sweeps_file=sweeps_toml(body))
    assert run_scheduled("s1", TICK, settings=settings, client=fake_redis, owner="t") == (
        "submitted"
    )
    [(job_id, _)] = started
    assert sorted(i for i, _, _ in store.iter_outcomes(job_id)) == [
        "vec-0000001", "vec-0000002", "vec-0000003", "vec-0000004",
    ]  # fmt: skip


def explode() -> list[str]:
    """A source whose query fails."""
    raise RuntimeError("database is down")


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"file": None, "callable": "tests.unit.test_sweeps:explode"}, "database is down"),
        ({"file": "missing.txt"}, "FileNotFoundError"),
    ],
    ids=["raises", "missing-file"],
)
def test_a_source_that_fails_is_a_failed_run(
    sweeps_toml, fake_redis, started, store: JobStore, fields, detail
) -> None:
    """The source raising is the run's outcome, recorded with the error; no job."""
    settings = unit_settings(sweeps_file=sweeps_toml(sweep(**fields)))
    assert run_scheduled("s1", TICK, settings=settings, client=fake_redis, owner="t") == "failed"
    [run] = history(fake_redis, store.keys, "s1")
    assert detail in run.detail
    assert store.recent_jobs() == []


def test_an_empty_source_is_an_empty_run(sweeps_toml, fake_redis, started, store) -> None:
    """A source with no ids: recorded 'empty', nothing submitted."""
    settings = unit_settings(sweeps_file=sweeps_toml(sweep(), **{"ids.txt": "media_id\n\n"}))
    assert run_scheduled("s1", TICK, settings=settings, client=fake_redis, owner="t") == "empty"
    assert store.recent_jobs() == []


def test_a_glob_reads_every_file_with_its_own_csv_header(
    sweeps_toml, fake_redis, started, store: JobStore
) -> None:
    """Each matching file is read on its own: CSV headers and columns per file."""
    files = {
        "lists/a.csv": "uploaded,media_id\n2025-01-01,vec-a1\n2025-01-02,vec-a2\n",
        "lists/b.csv": "media_id,note\nvec-b1,x\n",
        "lists/c.txt": "vec-c1\n",
    }
    body = sweep(file=None, glob="lists/*.csv")
    settings = unit_settings(sweeps_file=sweeps_toml(body, **files))
    assert run_scheduled("s1", TICK, settings=settings, client=fake_redis, owner="t") == (
        "submitted"
    )
    [(job_id, _)] = started
    assert sorted(i for i, _, _ in store.iter_outcomes(job_id)) == [
        "vec-a1", "vec-a2", "vec-b1",
    ]  # fmt: skip


def test_an_unknown_sweep_name_runs_nothing(sweeps_toml, fake_redis, started, store) -> None:
    """A tick for a sweep no longer in the file: 'unknown', nothing recorded."""
    settings = unit_settings(sweeps_file=sweeps_toml(sweep(), **{"ids.txt": ids_text(1)}))
    assert run_scheduled("gone", TICK, settings=settings, client=fake_redis, owner="t") == (
        "unknown"
    )
    assert fake_redis.keys("*") == []


# -- the sweeps command ------------------------------------------------------------------


@pytest.fixture
def sweeps_cli(monkeypatch: pytest.MonkeyPatch, sweeps_toml, store: JobStore):
    """`sweeps_cli(settings)`: the CLI runs with these settings and the fakeredis store."""

    def use(settings):
        monkeypatch.setattr(cli, "get_settings", lambda: settings)
        monkeypatch.setattr(cli, "store_for", lambda _s, client=None: store)
        return settings

    return use


def test_the_sweeps_command_lists_last_run_next_run_and_result(
    capsys, sweeps_toml, sweeps_cli, fake_redis, started, store: JobStore
) -> None:
    """`sweeps`: a line per sweep with its last result; `--json`: next run, last job."""
    body = sweep() + sweep("s2", schedule="0 * * * *", dry_run=True)
    settings = sweeps_cli(unit_settings(sweeps_file=sweeps_toml(body, **{"ids.txt": "vec-1\n"})))
    run_scheduled("s1", TICK, settings=settings, client=fake_redis, owner="t")
    assert cli.main(["sweeps"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^s1 +30 3 \* \* \* .*submitted: 1 ids to delete; job \w+ queued$", out, re.M)
    assert re.search(r"^s2 +0 \* \* \* \* +- +\S+ \S+ +never ran \(dry run\)$", out, re.M)
    assert cli.main(["sweeps", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["s1"]["last_run"]["outcome"] == "submitted"
    assert rows["s1"]["last_run"]["job_state"] == "queued"
    assert rows["s1"]["last_run"]["job_id"] == started[0][0]
    assert datetime.fromisoformat(rows["s2"]["next_run"]) > datetime.now(UTC)
    assert rows["s2"]["last_run"] is None


def test_the_sweeps_command_without_a_file_says_how_to_set_one(capsys, sweeps_cli) -> None:
    """No WICKSON_SWEEPS_FILE: exit 2 naming the variable."""
    sweeps_cli(unit_settings())
    assert cli.main(["sweeps"]) == 2
    assert "WICKSON_SWEEPS_FILE" in capsys.readouterr().err
