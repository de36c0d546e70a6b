"""producers/cli.py through `main([...])`, on fakeredis (settings and store monkeypatched)."""

from __future__ import annotations

import csv
import io
import json

import fakeredis
import pytest

from producers import cli
from tests.unit.conftest import commit_next, take
from worker.store import BatchCommit, JobStore

STATUS_KEYS = {
    "job_id", "state", "total", "deleted", "failed", "hd_vectors", "ld_vectors",
    "batches_total", "batches_done", "failure_reasons", "not_found",
}  # fmt: skip


@pytest.fixture
def finished_job(make_job, cli_store: JobStore, ids) -> str:
    """A completed job of 5 ids: 3 deleted, 2 failed (one reason with a comma and quotes),
    plus one invalid id."""
    job_id = make_job(ids(5), invalid={"bad id": "invalid_id"})
    commit_next(
        cli_store,
        BatchCommit(
            deleted=[0, 1, 2],
            failed=[(3, 'locked, by "legal"'), (4, "Media locked")],
            hd=6,
            ld=3,
        ),
    )
    return job_id


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_json_has_the_documented_keys(capsys, finished_job: str) -> None:
    """`status --json` prints one JSON object with the job's id, state and counters."""
    code, out, _ = run(capsys, "status", finished_job, "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) >= STATUS_KEYS
    assert (data["job_id"], data["state"], data["total"]) == (finished_job, "completed", 6)
    assert (data["deleted"], data["failed"], data["not_found"]) == (3, 3, 0)
    assert (data["hd_vectors"], data["ld_vectors"]) == (6, 3)
    assert (data["batches_total"], data["batches_done"]) == (1, 1)
    assert data["failure_reasons"] == {
        "invalid_id": 1, 'locked, by "legal"': 1, "Media locked": 1,
    }  # fmt: skip


def test_status_without_json_prints_a_summary(capsys, finished_job: str) -> None:
    """Plain `status` prints a human summary naming the job and its outcomes."""
    code, out, _ = run(capsys, "status", finished_job)
    assert code == 0
    assert finished_job in out
    assert "deleted: 3" in out


def test_failures_jsonl_streams_one_object_per_failed_id(capsys, finished_job: str) -> None:
    """`failures --format jsonl`: one {"media_id", "reason"} object per line."""
    code, out, _ = run(capsys, "failures", finished_job, "--format", "jsonl")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted((r["media_id"], r["reason"]) for r in rows) == [
        ("bad id", "invalid_id"),
        ("vec-000003", 'locked, by "legal"'),
        ("vec-000004", "Media locked"),
    ]


def test_failures_csv_has_a_header_and_quotes_properly(capsys, finished_job: str) -> None:
    """`failures --format csv` (the default) is valid CSV with a media_id,reason header."""
    code, out, _ = run(capsys, "failures", finished_job)
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["media_id", "reason"]
    assert sorted(map(tuple, rows[1:])) == [
        ("bad id", "invalid_id"),
        ("vec-000003", 'locked, by "legal"'),
        ("vec-000004", "Media locked"),
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "no-such-job"],
        ["status", "no-such-job", "--json"],
        ["failures", "no-such-job", "--format", "jsonl"],
        ["failures", "no-such-job", "--format", "csv"],
        ["wait", "no-such-job"],
        ["pause", "no-such-job"],
        ["resume", "no-such-job"],
        ["cancel", "no-such-job"],
    ],
)
def test_an_unknown_job_exits_2_with_a_clear_message(capsys, cli_store, argv) -> None:
    """An unknown job id: exit 2, a one-line message naming the id, no traceback."""
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "no-such-job" in err
    assert err.startswith("wickson-purge: ")
    assert "Traceback" not in err


def test_failures_of_an_unknown_job_prints_nothing_on_stdout(capsys, cli_store) -> None:
    """An unknown job writes nothing to stdout, whatever the format."""
    code, out, _ = run(capsys, "failures", "no-such-job", "--format", "csv")
    assert code == 2
    assert out == ""


@pytest.mark.parametrize(
    "argv",
    [[], ["bogus"], ["status"], ["status", "j", "--nope"], ["failures", "j", "--format", "xml"]],
    ids=["nothing", "unknown-command", "missing-job", "unknown-option", "bad-choice"],
)
def test_a_usage_error_exits_2_with_the_usage(capsys, cli_store, argv) -> None:
    """Bad usage exits 2 with argparse's usage message on stderr."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("outcome", "code"),
    [("clean", 0), ("with_failures", 3), ("failed", 4)],
)
def test_wait_exit_code_tells_how_the_job_ended(
    capsys, make_job, cli_store: JobStore, ids, outcome: str, code: int
) -> None:
    """`wait` on a finished job: 0 all done, 3 completed with failures, 4 failed."""
    job_id = make_job(ids(2))
    if outcome == "failed":
        cli_store.stop(job_id, "failed", "INVALID_API_KEY")
    elif outcome == "with_failures":
        commit_next(cli_store, BatchCommit(deleted=[0], failed=[(1, "locked")]))
    else:
        commit_next(cli_store, BatchCommit(deleted=[0, 1]))
    exit_code, out, _ = run(capsys, "wait", job_id, "--json")
    assert exit_code == code
    assert json.loads(out)["job_id"] == job_id


def test_cancel_stops_a_running_job_and_a_second_cancel_is_a_no_op(
    capsys, make_job, cli_store: JobStore, ids
) -> None:
    """`cancel` stops a running job (exit 0); cancelling it again exits 0, "already"."""
    job_id = make_job(ids(1_000))
    for _ in range(4):
        take(cli_store, "a-run")  # 4 batches held by live runs; 6 never taken
    code, out, _ = run(capsys, "cancel", job_id)
    assert code == 0
    assert "stopping" in out
    assert cli_store.status(job_id).not_attempted == 600
    code, out, _ = run(capsys, "cancel", job_id)
    assert code == 0
    assert "already cancelled" in out


def test_an_unreachable_redis_exits_1(capsys, monkeypatch: pytest.MonkeyPatch, settings) -> None:
    """When Redis does not answer: exit 1 and a hint about REDIS_URL, no traceback."""
    server = fakeredis.FakeServer()
    server.connected = False
    down = JobStore(fakeredis.FakeRedis(server=server))
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    monkeypatch.setattr(cli, "store_for", lambda _settings, client=None: down)
    code, _, err = run(capsys, "status", "any-job")
    assert code == 1
    assert "REDIS_URL" in err
    assert "Traceback" not in err


def test_submit_prints_the_job_id_and_reports_the_input(
    capsys, monkeypatch: pytest.MonkeyPatch, fake_redis, settings, tmp_path, store: JobStore
) -> None:
    """`submit FILE --json` prints {"job_id"}, reports invalid lines on stderr, starts it."""
    from worker import jobs

    started: list[str] = []
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    monkeypatch.setattr(jobs, "store_for", lambda s, client=None: JobStore(fake_redis))
    monkeypatch.setattr(jobs, "wake", lambda store: started.append("woken"))
    ids_file = tmp_path / "ids.txt"
    ids_file.write_bytes(b"media_id\nvec-1\nvec-2\nvec-1\nbad/id\n")
    code, out, err = run(capsys, "submit", str(ids_file), "--reason", "cleanup", "--json")
    assert code == 0
    job_id = json.loads(out)["job_id"]
    assert started == ["woken"]
    assert store.status(job_id).state == "queued"
    assert "line 5" in err
    assert "2 to delete" in err
    assert store.status(job_id).total == 3


def test_submit_of_a_missing_file_exits_2(capsys, cli_store, tmp_path) -> None:
    """A file that cannot be read: exit 2 naming it."""
    missing = tmp_path / "nope.txt"
    code, _, err = run(capsys, "submit", str(missing), "--reason", "x")
    assert code == 2
    assert "nope.txt" in err
