"""The CLI at its edges (issue 9, "The CLI and its numbers"): each case as an operator
meets it, through `cli.main([...])` on fakeredis, with its message and exit code."""

from __future__ import annotations

import io
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

import worker.jobs
from producers import cli, demo, progress, report
from producers.progress import ProgressPrinter, progress_line, summary
from tests.unit.conftest import commit_next, take
from tests.unit.test_sweeps import ids_text, sweep
from worker.errors import StoreUnavailable
from worker.ratelimit import FleetLimiter
from worker.store import BatchCommit, JobStatus, JobStore

JOB = "7b9bdaec" + "0" * 24


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The stderr of an argparse refusal, which must exit 2."""
    with pytest.raises(SystemExit) as info:
        cli.main(list(argv))
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def submit_store(
    monkeypatch: pytest.MonkeyPatch, cli_store: JobStore, started: list[tuple[str, str]]
) -> JobStore:
    """`submit` and `--dry-run` write to the test's store too (start tasks recorded)."""
    monkeypatch.setattr(worker.jobs, "store_for", lambda _s, client=None: cli_store)
    return cli_store


@pytest.fixture
def finished(make_job, cli_store: JobStore, ids) -> str:
    """A completed job of 3 ids, all deleted."""
    job_id = make_job(ids(3))
    commit_next(cli_store, BatchCommit(deleted=[0, 1, 2]), job_id)
    return job_id


def status_of(**counts: object) -> JobStatus:
    """A job status with these fields (the job id is JOB)."""
    return JobStatus.model_validate({"job_id": JOB, **counts})


# -- no tracebacks -----------------------------------------------------------------------


@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "submit"])
def test_a_binary_file_is_a_clear_input_error(
    capsys, submit_store: JobStore, tmp_path: Path, dry: bool
) -> None:
    """`submit binary.bin`: exit 2 saying it is a binary file; no job, no traceback."""
    binary = tmp_path / "binary.bin"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00,\r\x00\x00\n" + bytes(range(256)))
    code, _, err = run(capsys, "submit", str(binary), "--reason", "x",
                       *(["--dry-run"] if dry else []))  # fmt: skip
    assert code == 2
    assert "binary file" in err
    assert "Traceback" not in err
    assert submit_store.recent_jobs() == []


def test_a_csv_line_csv_cannot_parse_is_a_clear_input_error(
    capsys, submit_store: JobStore, tmp_path: Path
) -> None:
    """A CSV whose line the csv module refuses: exit 2 naming the line, not `_csv.Error`."""
    bad = tmp_path / "ids.csv"
    bad.write_bytes(b"media_id,note\nvec-1,a\rb\n")
    code, _, err = run(capsys, "submit", str(bad), "--reason", "x", "--dry-run")
    assert code == 2
    assert "line 2 is not readable as CSV" in err


@pytest.mark.parametrize(
    "argv", [["report"], ["failures", "--format", "csv"], ["failures", "--format", "jsonl"]]
)
def test_a_reader_closing_the_pipe_ends_the_command_quietly(
    capsys, monkeypatch: pytest.MonkeyPatch, cli_store: JobStore, make_job, ids, argv
) -> None:
    """`report J | head`: the closed pipe ends the command with exit 0 and no traceback."""
    job_id = make_job(ids(100))
    commit_next(cli_store, BatchCommit(failed=[(k, "locked") for k in range(100)]), job_id)
    handled: list[int] = []
    quiet_exit = cli._reader_went_away
    monkeypatch.setattr(cli, "_reader_went_away", lambda: handled.append(1) or quiet_exit())
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone
    with open(write_end, "w", encoding="utf-8") as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)
        code = cli.main([argv[0], job_id, *argv[1:]])
        monkeypatch.setattr(sys, "stdout", sys.__stdout__)
    assert (code, handled) == (0, [1])
    assert "Traceback" not in capsys.readouterr().err


def test_a_redis_error_reply_is_a_message_not_a_traceback(
    capsys, monkeypatch: pytest.MonkeyPatch, cli_store: JobStore
) -> None:
    """REDIS_URL naming a database the server lacks: exit 1 with Redis' words, no traceback."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise redis.ResponseError("DB index is out of range")

    monkeypatch.setattr(cli_store.redis.connection_pool, "get_connection", refuse)
    code, _, err = run(capsys, "status", JOB)
    assert code == 1
    assert "DB index is out of range" in err
    assert "REDIS_URL" in err
    assert "Traceback" not in err


def test_a_bad_setting_is_one_line_naming_the_variable(
    capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WICKSON_RATE_LIMIT=abc: exit 2, one line for the variable with both allowed forms."""
    monkeypatch.setenv("WICKSON_RATE_LIMIT", "abc")
    code, _, err = run(capsys, "status", JOB)
    assert code == 2
    [line] = [line for line in err.splitlines() if "WICKSON_RATE_LIMIT" in line]
    assert "valid number" in line
    assert "'auto'" in line
    assert "(got 'abc')" in line
    assert "Traceback" not in err


# -- the numbers -------------------------------------------------------------------------


def test_a_cancelled_job_shows_what_was_answered_and_what_was_not_attempted() -> None:
    """A cancelled 1M-id job: 25% answered (not 100%), not attempted shown, true ids/s."""
    cancelled = status_of(state="cancelled", total=1_000_000, deleted=250_000,
                          not_attempted=750_000, started_at=1e9, finished_at=1e9 + 100)  # fmt: skip
    line = progress_line(cancelled, 2_500.0)
    assert "250,000/1,000,000 ids (25%)" in line
    assert "not attempted 750,000" in line
    text = summary(cancelled)
    assert "not attempted: 750,000" in text
    assert "ids/s: 2,500" in text
    assert report.ids_per_s(cancelled, now=2e9) == 2_500.0


def test_a_job_stopped_by_a_401_does_not_count_unsent_ids_in_its_rate() -> None:
    """The watcher's ids/s counts answered ids: a 401 leaving 99,000 unsent is no speed-up."""
    clock = iter([0.0, 1.0])
    printer = ProgressPrinter(io.StringIO(), clock=lambda: next(clock))
    printer.measure(status_of(state="running", total=100_000, deleted=0))
    stopped = status_of(state="failed", total=100_000, deleted=100, not_attempted=99_900)
    assert printer.measure(stopped).ids_per_s == 100.0


def test_status_and_jobs_show_not_attempted_apart(
    capsys, cli_store: JobStore, make_job, ids
) -> None:
    """A cancelled job: `status` names its not-attempted ids; `jobs` progress is answered."""
    job_id = make_job(ids(1_000))
    for _ in range(4):
        take(cli_store, "a-run")  # 4 batches held by live runs; 6 never taken
    assert run(capsys, "cancel", job_id)[0] == 0
    _, out, _ = run(capsys, "status", job_id)
    assert "not attempted: 600" in out
    _, out, _ = run(capsys, "jobs")
    assert out.splitlines()[1].split()[3:6] == ["0/1,000", "(0%)", "600"]
    _, out, _ = run(capsys, "jobs", "--json")
    [row] = json.loads(out)
    assert (row["answered"], row["not_attempted"], row["done"]) == (0, 600, 600)


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "{ref}"],
        ["status", "{ref}", "--json"],
        ["wait", "{ref}", "--timeout", "0"],
        ["failures", "{ref}"],
        ["report", "{ref}"],
        ["recover", "{ref}"],
        ["rethrottle", "--rate", "5", "--job", "{ref}"],
        ["pause", "{ref}"],
        ["cancel", "{ref}"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_a_unique_prefix_names_the_job_in_every_command(
    capsys, cli_store: JobStore, make_job, ids, argv: list[str]
) -> None:
    """The 8 characters a progress bar shows are enough, as in git."""
    job_id = make_job(ids(5))
    code, _, err = run(capsys, *(a.format(ref=job_id[:8]) for a in argv))
    assert code in (0, 5)  # 5: `wait --timeout 0` of the running job
    assert "no job" not in err


def test_retry_failed_accepts_a_prefix(capsys, cli_store: JobStore, make_job, ids) -> None:
    """`retry-failed` resolves a prefix and names the full job it retries."""
    job_id = make_job(ids(2))
    commit_next(cli_store, BatchCommit(deleted=[0], failed=[(1, "locked")]), job_id)
    code, _, err = run(capsys, "retry-failed", job_id[:8])
    assert code == 0
    assert job_id in err


@pytest.fixture
def twin_jobs(monkeypatch: pytest.MonkeyPatch, make_job, ids) -> list[str]:
    """Two jobs whose ids share their first 8 characters."""
    fixed = iter([uuid.UUID("7b9bdaec" + "1" * 24), uuid.UUID("7b9bdaec" + "2" * 24)])
    monkeypatch.setattr("worker.store.uuid.uuid4", lambda: next(fixed))
    return [make_job(ids(2)), make_job(ids(2))]


def test_an_ambiguous_prefix_lists_the_candidates_and_exits_2(
    capsys, cli_store: JobStore, twin_jobs: list[str]
) -> None:
    """`status 7b9b` with two such jobs: exit 2, both ids named, nothing done."""
    code, out, err = run(capsys, "status", "7b9b")
    assert code == 2
    assert "ambiguous" in err
    assert all(job_id in err for job_id in twin_jobs)
    assert out == ""
    code, out, _ = run(capsys, "status", "7b9bdaec1")
    assert (code, twin_jobs[0] in out) == (0, True)


@pytest.mark.parametrize("ref", ["7b9", "7b9bdaec", "not-hex!"])
def test_a_short_or_unmatched_prefix_is_no_such_job(capsys, cli_store: JobStore, ref) -> None:
    """Under 4 characters, or matching no job: exit 2, "no job" naming what was typed."""
    code, _, err = run(capsys, "status", ref)
    assert code == 2
    assert f"no job {ref!r}" in err


# -- silent acceptance, refused ----------------------------------------------------------


def test_rethrottle_of_an_unknown_key_alias_exits_2(capsys, cli_store: JobStore) -> None:
    """`rethrottle --key-alias nosuch`: exit 2 naming the aliases the workers hold."""
    cli_store.register_aliases(["default", "tenant-a"])
    code, _, err = run(capsys, "rethrottle", "--rate", "5", "--key-alias", "nosuch")
    assert code == 2
    assert "unknown key alias 'nosuch'" in err
    assert "tenant-a" in err
    assert cli_store.redis.exists(cli_store.keys.limiter("nosuch")) == 0


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["jobs", "--limit", "0"], "--limit: must be a whole number >= 1"),
        (["jobs", "--limit", "-3"], "--limit: must be a whole number >= 1"),
        (["wait", JOB, "--timeout", "-1"], "--timeout: must be a number of seconds >= 0"),
        (["wait", JOB, "--timeout", "nan"], "--timeout: must be a number of seconds >= 0"),
        (["submit", "ids.txt", "--reason", ""], "--reason: must say why"),
        (["submit", "ids.txt", "--reason", "   "], "--reason: must say why"),
    ],
    ids=[
        "limit-0",
        "limit-negative",
        "timeout",
        "timeout-nan",
        "reason",
        "reason-blank",
    ],
)
def test_a_meaningless_number_or_empty_reason_is_refused(
    capsys, cli_store: JobStore, argv: list[str], words: str
) -> None:
    """Values that used to be accepted silently: exit 2 with the usage and the rule."""
    assert words in usage_error(capsys, *argv)


def test_a_file_of_only_invalid_ids_makes_no_job(
    capsys, submit_store: JobStore, started, tmp_path: Path
) -> None:
    """Nothing valid to delete: exit 2 naming the first bad line; no job, nothing started."""
    bad = tmp_path / "ids.txt"
    bad.write_text("has space\nx/y\n")
    code, out, err = run(capsys, "submit", str(bad), "--reason", "x")
    assert code == 2
    assert "no valid media id" in err
    assert "line 1: 'has space': contains whitespace" in err
    assert out == ""
    assert submit_store.recent_jobs() == []
    assert started == []
    code, _, err = run(capsys, "submit", str(bad), "--reason", "x", "--dry-run")
    assert code == 2
    assert "submit would refuse this" in err


def test_an_idempotency_key_reused_with_other_ids_is_refused(
    capsys, submit_store: JobStore, started, tmp_path: Path
) -> None:
    """Same key, same file: the first job again; same key, another file: exit 2, no job."""
    first, other = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("vec-1\nvec-2\n")
    other.write_text("vec-1\nvec-3\n")
    argv = ("--reason", "x", "--idempotency-key", "t4711")
    code, job_id, _ = run(capsys, "submit", str(first), *argv)
    assert code == 0
    code, again, err = run(capsys, "submit", str(first), *argv)
    assert (code, again) == (0, job_id)
    assert "already exists" in err
    code, out, err = run(capsys, "submit", str(other), *argv)
    assert code == 2
    assert "'t4711' was used for job" in err
    assert "different input" in err
    assert out == ""
    assert len(submit_store.recent_jobs()) == 1
    assert len(started) == 1


@pytest.fixture
def sweeps_file(
    monkeypatch: pytest.MonkeyPatch, cli_store: JobStore, make_settings, tmp_path: Path
) -> Callable[[str], Path]:
    """`sweeps_file(body)`: write the sweeps TOML (and ids.txt of 2 ids) the CLI reads."""

    def write(body: str) -> Path:
        (tmp_path / "ids.txt").write_text(ids_text(2))
        path = tmp_path / "sweeps.toml"
        path.write_text(body)
        settings = make_settings(sweeps_file=path)
        monkeypatch.setattr(cli, "get_settings", lambda: settings)
        return path

    return write


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("ops.examples.retention:older_than_90_dayz", "has no callable 'older_than_90_dayz'"),
        ("ops.examples.retentoin:older_than_90_days", "cannot import 'ops.examples.retentoin'"),
    ],
    ids=["function-typo", "module-typo"],
)
def test_a_sweep_whose_callable_has_a_typo_fails_when_the_file_loads(
    capsys, sweeps_file, spec: str, words: str
) -> None:
    """The sweeps file refuses to load (exit 2), naming the sweep and the typo."""
    sweeps_file(sweep(file=None, callable=spec))
    code, _, err = run(capsys, "sweeps")
    assert code == 2
    assert "sweep 's1': callable:" in err
    assert words in err


def test_sweeps_run_runs_a_sweep_now_and_records_it(
    capsys, sweeps_file, submit_store: JobStore, started
) -> None:
    """`sweeps run NAME --dry-run` counts and records; without it, a job is submitted."""
    sweeps_file(sweep())
    code, out, _ = run(capsys, "sweeps", "run", "s1", "--dry-run")
    assert code == 0
    assert "sweep s1: dry_run: would delete 2 ids" in out
    assert submit_store.recent_jobs() == []
    code, out, _ = run(capsys, "sweeps", "run", "s1", "--json")
    assert code == 0
    ran = json.loads(out)
    assert ran["outcome"] == "submitted"
    assert started == [(ran["job_id"], "low")]
    code, out, _ = run(capsys, "sweeps")
    assert "submitted: 2 ids to delete" in out
    code, _, err = run(capsys, "sweeps", "run", "nosuch")
    assert code == 2
    assert "no sweep 'nosuch'" in err
    assert "defined: s1" in err


# -- exit codes --------------------------------------------------------------------------


def test_wait_timing_out_exits_5(capsys, cli_store: JobStore, make_job, ids) -> None:
    """`wait --timeout` passing first: exit 5 (not 1, which says Redis is down)."""
    job_id = make_job(ids(2))
    code, _, err = run(capsys, "wait", job_id, "--timeout", "0")
    assert code == cli.EXIT_TIMEOUT == 5
    assert "still queued after 0 s" in err


def test_pause_and_cancel_are_idempotent(capsys, cli_store: JobStore, make_job, ids) -> None:
    """Pausing a paused job, cancelling a cancelled one: exit 0, "already"; no state change."""
    job_id = make_job(ids(5))
    assert run(capsys, "pause", job_id)[:2] == (0, f"job {job_id}: paused\n")
    assert run(capsys, "pause", job_id)[:2] == (0, f"job {job_id}: already paused\n")
    assert run(capsys, "cancel", job_id)[0] == 0
    code, out, _ = run(capsys, "cancel", job_id)
    assert (code, "already cancelled" in out) == (0, True)
    code, _, err = run(capsys, "pause", job_id)
    assert (code, "cannot pause" in err) == (2, True)


def test_resume_of_a_running_job_is_a_no_op(capsys, cli_store: JobStore, make_job, ids) -> None:
    """`resume` of a job that is not paused: exit 0 saying so."""
    job_id = make_job(ids(5))
    take(cli_store, "a-run")
    assert run(capsys, "resume", job_id)[:2] == (0, f"job {job_id}: already running: not paused\n")


def test_wait_keeps_polling_through_a_redis_blip(
    capsys, monkeypatch: pytest.MonkeyPatch, cli_store: JobStore, finished: str
) -> None:
    """Redis away for two polls: `wait` says it keeps trying, then ends as the job did."""
    real_status, failures = cli_store.status, iter([True, True])

    def blip(job_id: str) -> JobStatus:
        if next(failures, False):
            raise StoreUnavailable("Redis did not answer: Connection refused")
        return real_status(job_id)

    monkeypatch.setattr(cli_store, "status", blip)
    monkeypatch.setattr(worker.jobs.time, "sleep", lambda _s: None)
    code, out, err = run(capsys, "wait", finished)
    assert code == 0
    assert err.count("still trying for up to 60 s") == 1
    assert "deleted: 3" in out


def test_wait_gives_up_after_a_long_outage(
    capsys, monkeypatch: pytest.MonkeyPatch, cli_store: JobStore, finished: str
) -> None:
    """Redis away longer than the outage allowance: exit 1 with the REDIS_URL hint."""

    def down(_job_id: str) -> JobStatus:
        raise StoreUnavailable("Redis did not answer: Connection refused")

    monkeypatch.setattr(cli_store, "status", down)
    monkeypatch.setattr(worker.jobs, "OUTAGE_S", 0.0)
    monkeypatch.setattr(cli, "wait_for", _with_defaults(worker.jobs.wait_for, outage_s=0))
    code, _, err = run(capsys, "wait", finished)
    assert code == 1
    assert "REDIS_URL" in err


def _with_defaults(
    function: Callable[..., JobStatus], **defaults: object
) -> Callable[..., JobStatus]:
    return lambda *args, **kwargs: function(*args, **{**defaults, **kwargs})


@contextmanager
def answering(answer: str, prompts: io.StringIO) -> Iterator[tuple[io.StringIO, io.StringIO]]:
    yield io.StringIO(answer), prompts


def test_piped_ids_at_a_terminal_are_confirmed_on_the_terminal(
    capsys, monkeypatch: pytest.MonkeyPatch, submit_store: JobStore, started
) -> None:
    """`cat ids | submit` over --confirm-over at a terminal: asked there; "n": exit 0."""
    ids = "".join(f"vec-{k}\n" for k in range(20)).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(ids)))
    prompts = io.StringIO()
    asked: list[bool] = []

    def terminal(*, ids_on_stdin: bool):  # type: ignore[no-untyped-def]
        asked.append(ids_on_stdin)
        return answering("n\n", prompts)

    monkeypatch.setattr(cli, "_terminal", terminal)
    code, out, err = run(capsys, "submit", "--reason", "r", "--confirm-over", "10")
    assert (code, out) == (0, "")
    assert asked == [True]
    assert "delete 20 media ids" in prompts.getvalue()
    assert "nothing submitted" in err
    assert submit_store.recent_jobs() == []
    assert started == []


def test_the_terminal_is_stdin_unless_it_carries_the_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids from a file at a terminal: ask on stdin; ids on stdin, no terminal: nobody."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty("y\n")
    monkeypatch.setattr(sys, "stdin", tty)
    with cli._terminal(ids_on_stdin=False) as where:
        assert where is not None
        assert where[0] is tty
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: a script's log
    with cli._terminal(ids_on_stdin=True) as where:
        assert where is None


# -- what was missing --------------------------------------------------------------------


def test_version(capsys) -> None:
    """`--version` prints the installed version."""
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("wickson-purge 0.")


def test_help_documents_exit_codes_environment_and_arguments(
    capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--help` lists the exit codes and variables; JOB, --json and --format are explained."""
    monkeypatch.setenv("COLUMNS", "200")  # no line wrapped inside the words looked for
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for words in ("exit codes:", "5  wait: --timeout passed", "REDIS_URL", "WICKSON_RATE_LIMIT"):
        assert words in out
    with pytest.raises(SystemExit):
        cli.main(["report", "--help"])
    out = capsys.readouterr().out
    assert "unique prefix" in out
    assert "jsonl (one JSON object per line)" in out
    with pytest.raises(SystemExit):
        cli.main(["jobs", "--help"])
    assert "print JSON instead of text" in capsys.readouterr().out


def test_fake_api_help_names_the_command_it_was_run_as(capsys) -> None:
    """`wickson-purge fake-api --help` shows `wickson-purge fake-api`, not `python -m`."""
    with pytest.raises(SystemExit):
        cli.main(["fake-api", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: wickson-purge fake-api")


def test_rate_shows_the_fleet_rate_and_its_source(capsys, cli_store: JobStore) -> None:
    """`rate`: the limiter's rate, who set it, a 429 pause; an unknown alias exits 2."""
    code, out, _ = run(capsys, "rate")
    assert (code, out) == (0, "fleet (default): 1000 requests/s (set by WICKSON_RATE_LIMIT)\n")
    assert run(capsys, "rethrottle", "--rate", "5")[0] == 0
    code, out, _ = run(capsys, "rate", "--json")
    data = json.loads(out)
    assert (data["rate_per_s"], data["configured"], data["set_by"]) == (5.0, 5.0, "rethrottle")
    assert data["paused_s"] == 0
    FleetLimiter(cli_store.redis, cli_store.keys.limiter(), rate=5.0).pause(30)
    code, out, _ = run(capsys, "rate")
    assert "paused by a 429 for 30.0 s more" in out
    code, _, err = run(capsys, "rate", "--key-alias", "nosuch")
    assert (code, "unknown key alias 'nosuch'" in err) == (2, True)


def test_a_dry_run_shows_the_first_invalid_lines(
    capsys, submit_store: JobStore, tmp_path: Path
) -> None:
    """`submit --dry-run` names each invalid line with its number, in text and JSON."""
    ids = tmp_path / "ids.txt"
    ids.write_text("vec-1\nbad id\nvec-2\nx/y\n")
    code, out, _ = run(capsys, "submit", str(ids), "--reason", "x", "--dry-run")
    assert code == 0
    assert "line 2: 'bad id': contains whitespace" in out
    assert "line 4: 'x/y': contains '/'" in out
    code, out, _ = run(capsys, "submit", str(ids), "--reason", "x", "--dry-run", "--json")
    assert json.loads(out)["invalid_lines"] == [
        {"line": 2, "text": "bad id", "problem": "contains whitespace"},
        {"line": 4, "text": "x/y", "problem": "contains '/'"},
    ]
    assert submit_store.recent_jobs() == []


def test_submit_wait_prints_the_summary_wait_prints(
    capsys, monkeypatch: pytest.MonkeyPatch, submit_store: JobStore, tmp_path: Path
) -> None:
    """`submit --wait`: the id, then `wait`'s summary and exit code (--json: two JSON lines)."""

    def run_at_once(store: JobStore) -> None:
        commit_next(store, BatchCommit(deleted=[0], failed=[(1, "x")]))

    monkeypatch.setattr(worker.jobs, "wake", run_at_once)
    ids = tmp_path / "ids.txt"
    ids.write_text("vec-1\nvec-2\n")
    code, out, _ = run(capsys, "submit", str(ids), "--reason", "x", "--wait")
    job_id, *rest = out.splitlines()
    assert code == 3
    assert run(capsys, "wait", job_id)[:2] == (3, "\n".join(rest) + "\n")
    code, out, _ = run(capsys, "submit", str(ids), "--reason", "y", "--wait", "--json")
    started, final = map(json.loads, out.splitlines())  # JSON lines: the id, then the end
    assert (code, final["job_id"], final["state"]) == (3, started["job_id"], "completed")


def test_a_job_no_worker_consumes_gets_a_hint(
    capsys, monkeypatch: pytest.MonkeyPatch, cli_store: JobStore, make_job, ids
) -> None:
    """Still queued after NO_WORKER_HINT_S while watched: say no worker seems to consume."""
    now = [0.0]
    stream = io.StringIO()
    printer = ProgressPrinter(stream, every_s=60, clock=lambda: now[0])
    queued = status_of(state="queued", total=10)
    printer(queued)
    now[0] = 4.0
    printer(queued)
    assert "no worker" not in stream.getvalue()
    now[0] = 6.0
    printer(queued)
    now[0] = 7.0
    printer(queued)
    assert stream.getvalue().count("no worker seems to be consuming") == 1
    monkeypatch.setattr(progress, "NO_WORKER_HINT_S", 0.0)
    job_id = make_job(ids(2))
    code, _, err = run(capsys, "wait", job_id[:8], "--timeout", "0")
    assert code == 5
    assert "still queued after 0 s: no worker seems to be consuming" in err


def test_the_demo_says_it_injects_faults_on_purpose(
    capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before anything runs, the demo says its 500s and failures are on purpose."""

    def stop_here(_config: object) -> None:
        raise RuntimeError("stop before serving")

    monkeypatch.setattr(demo, "run_in_thread", stop_here)
    # Logging configured on pytest's capture stream would outlive it (closed) in later tests.
    monkeypatch.setattr(demo, "configure_logging", lambda **_kwargs: None)
    with pytest.raises(RuntimeError, match="stop before serving"):
        demo.run_demo(ids=10, rate=10.0, workers=1, redis_url=None)
    assert "injects faults on purpose" in capsys.readouterr().err


def test_invalid_ids_are_escaped_once_on_stderr_and_stored_as_read(
    capsys, submit_store: JobStore, tmp_path: Path
) -> None:
    """An id with a tab: stderr shows `bad\\tid` (one backslash); the report, the id itself."""
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"vec-1\nbad\tid\n")
    code, out, err = run(capsys, "submit", str(ids), "--reason", "x", "--json")
    assert code == 0
    assert "line 2: 'bad\\tid': contains whitespace" in err
    assert "\\\\" not in err
    job_id = json.loads(out)["job_id"]
    code, out, _ = run(capsys, "failures", job_id, "--format", "jsonl")
    assert json.loads(out) == {"media_id": "bad\tid", "reason": "invalid_id"}
