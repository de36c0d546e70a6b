"""Job controls on fakeredis: `jobs`, `retry-failed`, `report`, `submit --dry-run`, the
confirmation of a big interactive submit, and priorities (queues, routing)."""

from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace
from typing import Any

import pytest

import producers.submit as submit_module
from producers import cli, control
from producers.retry import is_retryable, retry_failed
from producers.submit import dry_run, submit
from worker.celery import QUEUE, QUEUE_HIGH, QUEUE_LOW, celery_config
from worker.errors import InputError
from worker.ratelimit import FleetLimiter
from worker.store import BatchCommit, JobStore

# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def sent_tasks(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Messages sent through the Celery app (name, args, queue), recorded, never sent."""
    from worker.celery import app

    sent: list[dict[str, Any]] = []

    def record(name: str, args: list[Any], **options: Any) -> None:
        sent.append({"name": name, "args": args, "queue": options.get("queue")})

    monkeypatch.setattr(app, "send_task", record)
    return sent


@pytest.fixture
def use_cli(monkeypatch: pytest.MonkeyPatch, store: JobStore, settings, fake_redis, started):
    """The CLI's settings and store are the test's (fakeredis), for every command."""
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    monkeypatch.setattr(cli, "store_for", lambda _s, client=None: store)
    monkeypatch.setattr(submit_module, "store_for", lambda _s, client=None: store)
    return store


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


GAVE_UP = "PROCESSING_ERROR: gave up after 8 attempts (500 PROCESSING_ERROR: boom)"


@pytest.fixture
def mixed_job(make_job, store: JobStore, ids) -> str:
    """A completed job of 8 ids plus an invalid one: 3 deleted (operation op-1), 1 not
    found, 1 foreign, 1 given up on a 5xx, 1 crash loop, 1 INVALID_MEDIA_IDS."""
    job_id = make_job(ids(8), invalid={"bad id": "invalid_id"})
    store.commit(job_id, 0, "t", BatchCommit(
        deleted=[0, 1, 2],
        failed=[(3, "Media not found"), (4, "Access denied: media belongs to another user"),
                (5, GAVE_UP), (6, "worker_crash_loop: 6 runs ended without a verdict"),
                (7, "INVALID_MEDIA_IDS")],
        operation_id="op-1", final=True,
    ))  # fmt: skip
    return job_id


# -- the retry rule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "retryable"),
    [
        ("invalid_id", False),
        ("Media not found", False),
        ("media_not_found", False),
        ("Access denied: media belongs to another user", False),
        ("403 Forbidden", False),
        ("INVALID_MEDIA_IDS", False),
        ("HTTP_400", False),
        (GAVE_UP, True),
        ("OUTCOME_UNKNOWN: gave up after 3 attempts (no answer in time: ReadTimeout)", True),
        ("worker_crash_loop: 6 runs ended without a verdict", True),
        ("Internal error: deletion could not be confirmed", True),
        ("failed (no reason given)", True),
    ],
)
def test_the_retry_rule_keeps_transient_failures_only(reason: str, retryable: bool) -> None:
    """Permanent: invalid, not found, access denied, a bare 4xx code; the rest retryable."""
    assert is_retryable(reason) is retryable


# -- retry-failed ------------------------------------------------------------------------


def test_retry_failed_submits_the_retryable_ids_linked_both_ways(
    mixed_job: str, store: JobStore, settings, fake_redis, started
) -> None:
    """The new job holds the given-up and crash-loop ids, with the original's reason,
    alias and priority; each job names the other; retrying again returns the same job."""
    retry = retry_failed(mixed_job, settings=settings, client=fake_redis)
    assert retry is not None
    assert sorted(i for i, _, _ in store.iter_outcomes(retry.id)) == ["vec-000005", "vec-000006"]
    new, old = store.status(retry.id), store.status(mixed_job)
    assert (new.retry_of, old.retried_by) == (mixed_job, retry.id)
    assert (new.reason, new.key_alias, new.priority) == (old.reason, "default", "normal")
    assert started == [(retry.id, "normal")]
    again = retry_failed(mixed_job, settings=settings, client=fake_redis)
    assert again is not None
    assert again.id == retry.id
    assert len(store.recent_jobs()) == 2


def test_retry_failed_with_nothing_retryable_makes_no_job(
    make_job, store: JobStore, settings, fake_redis, ids, started
) -> None:
    """Only permanent failures: None, and no job."""
    job_id = make_job(ids(2))
    store.commit(job_id, 0, "t", BatchCommit(deleted=[0], failed=[(1, "Media not found")],
                                             final=True))  # fmt: skip
    assert retry_failed(job_id, settings=settings, client=fake_redis) is None
    assert store.recent_jobs() == [job_id]


def test_retry_failed_of_a_running_job_is_refused(
    make_job, settings, fake_redis, ids, started
) -> None:
    """A job still running may fail more ids: InputError until it ends."""
    job_id = make_job(ids(2))
    with pytest.raises(InputError, match="running"):
        retry_failed(job_id, settings=settings, client=fake_redis)


def test_the_retry_failed_command_prints_the_new_job_and_status_shows_the_links(
    capsys, use_cli, mixed_job: str
) -> None:
    """`retry-failed JOB --json` prints the new job; `status --json` of both shows the link."""
    code, out, err = run(capsys, "retry-failed", mixed_job, "--json")
    assert code == 0
    retry_id = json.loads(out)["job_id"]
    assert "retrying 2 ids" in err
    assert json.loads(run(capsys, "status", retry_id, "--json")[1])["retry_of"] == mixed_job
    assert json.loads(run(capsys, "status", mixed_job, "--json")[1])["retried_by"] == retry_id
    code, out, err = run(capsys, "retry-failed", mixed_job)
    assert (code, out.strip()) == (0, retry_id)
    assert "already retried" in err


def test_retry_failed_can_change_the_priority(capsys, use_cli, mixed_job, store, started):
    """`--priority high`: the retry job runs on the high queue."""
    code, out, _ = run(capsys, "retry-failed", mixed_job, "--priority", "high")
    assert code == 0
    assert store.status(out.strip()).priority == "high"
    assert started[-1] == (out.strip(), "high")


# -- report ------------------------------------------------------------------------------


def test_report_csv_lists_every_id_with_outcome_reason_and_operation(
    capsys, use_cli, mixed_job: str
) -> None:
    """`report JOB`: a header and one row per unique id; sent ids carry the operation id,
    the invalid one (never sent) none."""
    code, out, _ = run(capsys, "report", mixed_job)
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["media_id", "outcome", "reason", "operation_id"]
    by_id = {r[0]: r[1:] for r in rows[1:]}
    assert len(by_id) == 9
    assert by_id["vec-000000"] == ["deleted", "", "op-1"]
    assert by_id["vec-000003"] == ["failed", "Media not found", "op-1"]
    assert by_id["bad id"] == ["failed", "invalid_id", ""]


def test_report_failed_jsonl_lists_only_failed_ids(capsys, use_cli, mixed_job: str) -> None:
    """`report JOB --failed --format jsonl`: one object per failed id, nothing else."""
    code, out, _ = run(capsys, "report", mixed_job, "--failed", "--format", "jsonl")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["outcome"] for r in rows} == {"failed"}
    assert len(rows) == 6
    assert set(rows[0]) == {"media_id", "outcome", "reason", "operation_id"}


def test_report_all_and_failed_exclude_each_other(capsys, use_cli, mixed_job: str) -> None:
    """`--all --failed` is a usage error."""
    with pytest.raises(SystemExit) as info:
        cli.main(["report", mixed_job, "--all", "--failed"])
    assert info.value.code == 2


def test_report_of_an_unknown_job_prints_nothing_and_exits_2(capsys, use_cli) -> None:
    """An unknown job: exit 2 naming it, not even a header on stdout."""
    code, out, err = run(capsys, "report", "no-such-job")
    assert (code, out) == (2, "")
    assert "no-such-job" in err


def test_a_report_streams_the_pending_and_not_attempted_without_an_operation(
    make_job, store: JobStore, ids
) -> None:
    """Ids of a cancelled job never sent: not_attempted with the stop reason, no operation."""
    job_id = make_job(ids(600))  # window 4: batches 4 and 5 are never dispatched
    store.commit(job_id, 0, "t", BatchCommit(deleted=list(range(100)), operation_id="op-0",
                                             final=True))  # fmt: skip
    store.stop(job_id, "cancelled", "CANCELLED: by a test")
    rows = list(store.iter_report(job_id, batches_per_call=2))
    assert len(rows) == 600
    assert rows[0] == ("vec-000000", "deleted", "", "op-0")
    assert rows[150] == ("vec-000150", "pending", "", "")
    assert rows[599] == ("vec-000599", "not_attempted", "CANCELLED: by a test", "")


# -- jobs --------------------------------------------------------------------------------


def test_the_jobs_table_lists_recent_jobs_newest_first(
    capsys, use_cli, make_job, store: JobStore, ids, mixed_job: str
) -> None:
    """`jobs`: id, state, priority, progress, not attempted, ids/s, age, reason; newest first."""
    running = make_job(ids(300), reason="gdpr erasure of account 42")
    store.commit(running, 0, "t", BatchCommit(deleted=list(range(100)), final=True))
    code, out, _ = run(capsys, "jobs")
    assert code == 0
    header, first, second = out.splitlines()
    assert header.split() == [
        "JOB", "STATE", "PRIORITY", "PROGRESS", "NOT_ATTEMPTED", "IDS/S", "AGE", "REASON"
    ]  # fmt: skip
    assert first.split()[:5] == [running, "running", "normal", "100/300", "(33%)"]
    assert first.endswith("gdpr erasure of account 42")
    assert second.split()[:4] == [mixed_job, "completed", "normal", "9/9"]


def test_jobs_filters_by_state_and_limits(capsys, use_cli, make_job, ids, mixed_job) -> None:
    """`--state completed` shows the completed jobs only; `--limit 1` the newest one."""
    make_job(ids(5))
    code, out, _ = run(capsys, "jobs", "--state", "completed")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [mixed_job]
    code, out, _ = run(capsys, "jobs", "--limit", "1", "--state", "running", "--state", "queued")
    assert len(out.splitlines()) == 2
    code, out, _ = run(capsys, "jobs", "--state", "failed")
    assert (code, out.strip()) == (0, "no jobs")


def test_jobs_json_has_the_status_fields_rate_and_age(capsys, use_cli, mixed_job) -> None:
    """`jobs --json`: a list of status objects with done, ids_per_s and age_s."""
    _, out, _ = run(capsys, "jobs", "--json")
    [job] = json.loads(out)
    assert (job["job_id"], job["state"], job["done"]) == (mixed_job, "completed", 9)
    assert job["age_s"] >= 0
    assert "ids_per_s" in job
    assert job["priority"] == "normal"


def test_list_jobs_skips_jobs_whose_record_expired(make_job, store: JobStore, ids) -> None:
    """A job id left in the index after its record expired is not listed."""
    gone, kept = make_job(ids(1)), make_job(ids(1))
    store.redis.delete(store.keys.job(gone))
    assert [s.job_id for s in store.list_jobs()] == [kept]


# -- submit --dry-run --------------------------------------------------------------------


def test_a_dry_run_counts_and_writes_no_redis_key(fake_redis, settings, started) -> None:
    """dry_run(): unique, invalid and duplicate counts; Redis is left untouched."""
    lines = ["media_id", "vec-1", "vec-2", "vec-1", "bad id", "bad id", "a/b"]
    plan = dry_run(lines, reason="check", settings=settings, client=fake_redis)
    r = plan.report
    assert (r.submitted, r.valid, r.invalid, r.duplicates) == (6, 2, 2, 2)
    assert plan.batches == 1
    assert fake_redis.keys("*") == []
    assert started == []


def test_a_dry_run_estimates_the_duration_at_the_fleets_current_rate(
    fake_redis, make_settings
) -> None:
    """25,000 ids = 250 requests; at the limiter's 50/s (set by an operator) that is 5 s."""
    settings = make_settings(rate_limit=10.0)
    limiter = FleetLimiter(fake_redis, "wp:rl:default", rate=10.0)
    limiter.set_rate(50.0)
    plan = dry_run((f"vec-{k}" for k in range(25_000)), settings=settings, client=fake_redis)
    assert plan.batches == 250
    assert plan.rate_per_s == pytest.approx(50.0)
    assert plan.estimate_s == pytest.approx(5.0)


def test_submit_dry_run_prints_the_plan_and_creates_nothing(
    capsys, use_cli, fake_redis, tmp_path, started
) -> None:
    """`submit --dry-run --json`: counts and estimate; no key written, no start task."""
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("".join(f"vec-{k}\n" for k in range(1_050)) + "vec-1\nbad id\n")
    code, out, err = run(capsys, "submit", str(ids_file), "--reason", "r", "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert (plan["valid"], plan["invalid"], plan["duplicates"], plan["batches"]) == (1050, 1, 1, 11)
    assert plan["estimate_s"] == pytest.approx(11 / plan["rate_per_s"], abs=1e-3)
    assert fake_redis.keys("*") == []
    assert started == []
    code, out, _ = run(capsys, "submit", str(ids_file), "--reason", "r", "--dry-run")
    assert "nothing was created, nothing was sent" in out
    assert "1,050 unique valid ids, in 11 requests" in out


def test_a_dry_run_refuses_what_submit_refuses(fake_redis, settings) -> None:
    """An empty input, a bad reason or an unknown priority: InputError, as submit."""
    with pytest.raises(InputError, match="no ids"):
        dry_run([], settings=settings, client=fake_redis)
    with pytest.raises(InputError, match="control characters"):
        dry_run(["vec-1"], reason="x\x1b", settings=settings, client=fake_redis)
    with pytest.raises(InputError, match="priority"):
        dry_run(["vec-1"], priority="urgent", settings=settings, client=fake_redis)  # type: ignore[arg-type]


# -- confirmation ------------------------------------------------------------------------


class Terminal(io.StringIO):
    """A stdin that is a terminal, holding the user's answer."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("answer", "argv", "asked", "submitted"),
    [
        ("n\n", [], True, False),
        ("y\n", [], True, True),
        ("", ["--yes"], False, True),
        ("", ["--confirm-over", "20"], False, True),
    ],
    ids=["declined", "accepted", "yes-flag", "under-threshold"],
)
def test_a_big_interactive_submit_asks_first(
    capsys, monkeypatch, use_cli, store: JobStore, tmp_path, started, answer, argv, asked, submitted
) -> None:
    """Over --confirm-over ids at a terminal: asked; 'n' exits 0 with no job, 'y' submits."""
    monkeypatch.setattr("sys.stdin", Terminal(answer))
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("".join(f"vec-{k}\n" for k in range(20)))
    code, _, err = run(capsys, "submit", str(ids_file), "--reason", "r", "--confirm-over", "10",
                       *argv)  # fmt: skip
    assert ("delete 20 media ids" in err) is asked
    assert code == 0
    assert len(store.recent_jobs()) == (1 if submitted else 0)
    assert len(started) == (1 if submitted else 0)
    if not submitted:
        assert "nothing submitted" in err
        assert store.redis.keys(store.keys.job("*")) == []  # the staged ids are gone too


def test_a_piped_submit_is_never_asked(capsys, monkeypatch, use_cli, store, tmp_path) -> None:
    """stdin not a terminal (a script, a pipe): no question, whatever the size."""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("".join(f"vec-{k}\n" for k in range(20)))
    code, _, err = run(capsys, "submit", str(ids_file), "--reason", "r", "--confirm-over", "1")
    assert code == 0
    assert "[y/N]" not in err


# -- priorities --------------------------------------------------------------------------


def test_a_job_keeps_its_priority_and_starts_on_its_queue(
    fake_redis, settings, store: JobStore, sent_tasks
) -> None:
    """submit(priority=...): the record keeps it; the start task goes to its queue."""
    for priority, queue in (("high", QUEUE_HIGH), ("normal", QUEUE), ("low", QUEUE_LOW)):
        job = submit(["vec-1"], reason="r", settings=settings, client=fake_redis,
                     priority=priority)  # fmt: skip
        assert store.status(job.id).priority == priority
        assert sent_tasks[-1] == {"name": "wickson_purge.start_job", "args": [job.id],
                                  "queue": queue}  # fmt: skip


def test_an_unknown_priority_is_refused_before_anything(fake_redis, settings) -> None:
    """submit(priority='urgent'): InputError naming the allowed ones; Redis untouched."""
    with pytest.raises(InputError, match="high, normal, low"):
        submit(["vec-1"], settings=settings, client=fake_redis, priority="urgent")  # type: ignore[arg-type]
    assert fake_redis.keys("*") == []


def test_resume_and_recover_publish_on_the_jobs_queue(
    make_job, store: JobStore, ids, sent_tasks
) -> None:
    """A paused low-priority job resumes on the low queue; its lost batches too."""
    job_id, _ = store.create(reason="r", priority="low")
    store.stage(job_id, 0, [ids(100)])
    store.seal(job_id, batches=1, valid=100, invalid=0, submitted=100)
    assert control.resume(store, job_id) is None  # queued: nothing to resume
    store.start(job_id)
    control.recover_lost(store, stale_s=0, job_ids=[job_id])
    assert {t["queue"] for t in sent_tasks} == {QUEUE_LOW}
    store.pause(job_id)
    store.claim(job_id, 0, "t", lease_s=60, max_deliveries=5)  # parks the batch
    control.resume(store, job_id)
    assert sent_tasks[-1] == {"name": "wickson_purge.delete_batch", "args": [job_id, 0],
                              "queue": QUEUE_LOW}  # fmt: skip


def test_workers_consume_the_three_queues_high_first(settings) -> None:
    """task_queues lists high, normal, low; the Redis transport BRPOPs them in that order."""
    config = celery_config(settings)
    assert [q.name for q in config["task_queues"]] == [QUEUE_HIGH, QUEUE, QUEUE_LOW]
    assert [q.routing_key for q in config["task_queues"]] == [QUEUE_HIGH, QUEUE, QUEUE_LOW]
    assert config["broker_transport_options"]["queue_order_strategy"] == "priority"
    assert config["task_default_queue"] == QUEUE


def test_successors_stay_on_the_queue_their_batch_came_from(
    monkeypatch, store: JobStore, settings, fake_redis
) -> None:
    """A batch delivered from the high queue publishes its successors there; without
    delivery info (or from a foreign queue), the job's priority decides."""
    from worker import tasks
    from worker.runtime import build_runtime, set_runtime

    set_runtime(build_runtime(settings, fake_redis))
    try:
        job_id, _ = store.create(reason="r", priority="low")
        request = lambda info: SimpleNamespace(request=SimpleNamespace(delivery_info=info))  # noqa: E731
        assert tasks.arrival_queue(request({"routing_key": QUEUE_HIGH}), job_id) == QUEUE_HIGH
        assert tasks.arrival_queue(request(None), job_id) == QUEUE_LOW
        assert tasks.arrival_queue(request({"routing_key": "celery"}), job_id) == QUEUE_LOW
        sent: list[str] = []
        monkeypatch.setattr(tasks.delete_batch, "apply_async",
                            lambda args, queue: sent.append(queue))  # fmt: skip
        assert tasks.publish(job_id, [0, 1]) == 2
        assert sent == [QUEUE_LOW, QUEUE_LOW]
    finally:
        set_runtime(None)
