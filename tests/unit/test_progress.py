"""producers/progress.py and the watching commands: the measures (ids/s, ETA, throttled
time), the live bar on a terminal, plain lines elsewhere, `status --watch` and `wait`."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest
from rich.console import Console

from producers import cli
from producers.progress import (
    ProgressPrinter,
    RateMeter,
    ThrottleMeter,
    eta_s,
    fleet_pause,
    format_duration,
    progress_line,
)
from tests.unit.conftest import commit_next
from worker import jobs
from worker.keys import Keys
from worker.ratelimit import FleetLimiter
from worker.store import BatchCommit, JobStatus, JobStore


class Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def status(done: int = 0, total: int = 1_000, state: str = "running", **counters) -> JobStatus:
    """A job status with `done` ids deleted (unless counters say otherwise)."""
    counters.setdefault("deleted", done)
    return JobStatus(job_id="0123456789abcdef", state=state, total=total, **counters)


# -- measures ------------------------------------------------------------------------------


def test_rate_is_ids_per_second_over_the_recent_window() -> None:
    """ids/s is measured over the last window only, so it follows a change of pace."""
    meter = RateMeter(window_s=10)
    for t, done in [(0, 0), (5, 500), (10, 1_000), (15, 1_100), (20, 1_200)]:
        meter.add(t, done)
    assert meter.rate() == pytest.approx(20.0)  # (1200 - 1000) / (20 - 10)


def test_no_rate_before_the_polls_span_half_a_second() -> None:
    """Two polls 0.1 s apart give no rate (noise), and a reset forgets everything."""
    meter = RateMeter()
    meter.add(0.0, 0)
    assert meter.rate() is None
    meter.add(0.1, 50)
    assert meter.rate() is None
    meter.add(1.0, 100)
    assert meter.rate() == pytest.approx(100.0)
    meter.reset()
    assert meter.rate() is None


def test_throttled_time_is_the_union_of_the_pauses_seen() -> None:
    """Overlapping pauses count once, time unpaused not at all, an ongoing pause up to now."""
    meter = ThrottleMeter()
    meter.observe(0.0, 2.0)  # paused until 2
    meter.observe(1.0, 2.0)  # extended until 3
    meter.observe(5.0, 0.0)  # not paused since
    assert meter.seconds(5.0) == pytest.approx(3.0)
    meter.observe(6.0, 10.0)
    assert meter.seconds(8.0) == pytest.approx(5.0)


def test_eta_is_what_is_left_at_the_current_rate() -> None:
    """ETA: ids left / ids per second; none without a rate; zero once finished."""
    assert eta_s(status(done=400), 100.0) == pytest.approx(6.0)
    assert eta_s(status(done=400), None) is None
    assert eta_s(status(done=1_000, state="completed"), None) == 0.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "--"), (0.4, "0s"), (42, "42s"), (245, "4m05s"), (7_380, "2h03m")],
)
def test_durations_read_like_a_clock(seconds: float | None, text: str) -> None:
    """Durations print as 42s, 4m05s, 2h03m; an unknown one as --."""
    assert format_duration(seconds) == text


def test_a_plain_line_has_every_number() -> None:
    """done/total, ids/s, ETA, deleted, failed, not found, 429s and throttled time."""
    line = progress_line(
        status(done=500, deleted=480, failed=10, not_found=10, rate_limited=7),
        250.0,
        eta=2.0,
        throttled_s=1.5,
    )
    for part in (
        "500/1,000 ids (50%)",
        "250 ids/s",
        "ETA 2s",
        "deleted 480",
        "failed 10",
        "not found 10",
        "429s 7",
        "throttled 1.5s",
    ):
        assert part in line


# -- the display ---------------------------------------------------------------------------


def test_off_a_terminal_a_plain_line_is_printed_every_few_seconds() -> None:
    """Not a terminal: the first status, then one line per `every_s`, and the final one."""
    out, clock = io.StringIO(), Clock()
    show = ProgressPrinter(out, every_s=5.0, clock=clock)
    for t, done in [(0, 0), (1, 100), (4, 400), (5, 500), (6, 600)]:
        clock.now = 100.0 + t
        show(status(done))
    clock.now += 0.5
    show(status(1_000, state="completed"))
    printed = out.getvalue().splitlines()
    assert [line.split("  ")[1] for line in printed] == [
        "0/1,000 ids (0%)",
        "500/1,000 ids (50%)",
        "1,000/1,000 ids (100%)",
    ]
    assert "completed" in printed[-1]


def test_on_a_terminal_a_live_bar_shows_progress_rate_eta_and_throttling() -> None:
    """A live rich bar: done/total, ids/s, ETA, outcomes, 429s and time throttled; it ends
    (cursor restored) when the job finishes."""
    screen, clock = io.StringIO(), Clock()
    console = Console(file=screen, force_terminal=True, width=140)
    show = ProgressPrinter(console=console, clock=clock, throttle=lambda s: 1.0)
    with show:
        for t in range(4):
            clock.now = 100.0 + t
            show(status(done=200 * t, failed=0, rate_limited=3))
        drawn = screen.getvalue()
        clock.now += 1
        show(status(done=1_000, state="completed", rate_limited=3))
    assert show._progress is None
    for part in ("600/1,000 ids", "200 ids/s", "ETA 2s", "deleted 600", "429s 3", "throttled"):
        assert part in drawn
    assert "1,000/1,000 ids" in screen.getvalue()


def test_the_fleet_pause_is_read_from_the_jobs_limiter(
    store: JobStore, fake_redis, settings
) -> None:
    """`fleet_pause` reports the pause left of the limiter of the job's key alias."""
    FleetLimiter(fake_redis, Keys().limiter("default"), rate=10.0).pause(2.5)
    probe = fleet_pause(store, settings)
    assert probe(status()) == pytest.approx(2.5)
    assert probe(status(key_alias="tenant-b")) == 0.0


# -- the commands --------------------------------------------------------------------------


@pytest.fixture
def finish_on_poll(monkeypatch: pytest.MonkeyPatch, cli_store: JobStore) -> Callable[[str], None]:
    """`finish_on_poll(job_id)`: the watcher's first sleep between polls is when the
    workers finish the job (every id of its one batch deleted): no real waiting."""

    def arm(job_id: str) -> None:
        def sleep(_seconds: float) -> None:
            n = cli_store.status(job_id).total
            commit_next(cli_store, BatchCommit(deleted=list(range(n))), job_id)

        monkeypatch.setattr(jobs.time, "sleep", sleep)

    return arm


def test_status_watch_follows_the_job_and_exits_when_it_finishes(
    capsys, make_job, cli_store: JobStore, finish_on_poll, ids
) -> None:
    """`status --watch` shows progress (plain lines off a terminal) until the job ends,
    then prints its summary and exits 0."""
    job_id = make_job(ids(50))
    finish_on_poll(job_id)
    code = cli.main(["status", job_id, "--watch"])
    out, err = capsys.readouterr()
    assert code == 0
    assert f"job {job_id}: completed" in out
    assert "0/50 ids" in err
    assert "50/50 ids (100%)" in err.splitlines()[-1]


def test_status_json_is_the_same_with_or_without_watch(
    capsys, make_job, cli_store: JobStore, finish_on_poll, ids
) -> None:
    """`status --json --watch` prints exactly what `status --json` prints, once finished."""
    job_id = make_job(ids(20))
    finish_on_poll(job_id)
    assert cli.main(["status", job_id, "--json", "--watch"]) == 0
    watched = capsys.readouterr().out
    assert cli.main(["status", job_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(watched)


def test_wait_shows_progress_lines_on_stderr(
    capsys, make_job, cli_store: JobStore, finish_on_poll, ids
) -> None:
    """`wait` off a terminal prints progress lines on stderr, the summary on stdout."""
    job_id = make_job(ids(30))
    finish_on_poll(job_id)
    assert cli.main(["wait", job_id]) == 0
    out, err = capsys.readouterr()
    assert "30/30 ids (100%)" in err
    assert "deleted: 30" in out
