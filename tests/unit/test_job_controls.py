"""Job controls on fakeredis: pause, resume, cancel, recover and rethrottle as operators
call them, `jobs`, `retry-failed`, `report`, `submit --dry-run`, the confirmation of a
big interactive submit, and priorities (what the store serves first, the queues)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from producers import cli, control
from producers.retry import is_retryable, retry_failed
from producers.submit import dry_run, submit
from tests.unit.conftest import commit_next, take
from worker import jobs
from worker.batch import Verdict
from worker.beat import beat_schedule
from worker.celery import CONTROL_QUEUE, DRAIN_TASK, QUEUE, WATCHDOG_TASK, celery_config
from worker.errors import InputError, JobNotFound
from worker.ratelimit import FleetLimiter
from worker.store import RESUME_DURABLE_MS, BatchCommit, JobStore, NoBatch

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
    monkeypatch.setattr(jobs, "store_for", lambda _s, client=None: store)
    return store


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def probe(store: JobStore):
    """What a drain run would take now."""
    return store.take("probe", lease_s=60, max_runs=5, max_wait_s=5.0, rate=1_000.0)


GAVE_UP = "PROCESSING_ERROR: gave up after 8 attempts (500 PROCESSING_ERROR: boom)"
MAYBE = "; the API may have deleted it"


@pytest.fixture
def mixed_job(make_job, store: JobStore, ids) -> str:
    """A completed job of 8 ids plus an invalid one: 3 deleted (operation op-1), 1 not
    found, 1 foreign, 1 given up on 5xx, 1 crash loop, 1 INVALID_MEDIA_IDS."""
    job_id = make_job(ids(8), invalid={"bad id": "invalid_id"})
    commit_next(store, BatchCommit(
        deleted=[0, 1, 2], not_found=[3],
        failed=[(4, "Access denied: media belongs to another user"), (5, GAVE_UP + MAYBE),
                (6, "worker_crash_loop: 6 runs ended without a verdict (the API may have "
                    "deleted some)"),
                (7, "INVALID_MEDIA_IDS")],
        operation_id="op-1",
    ), job_id)  # fmt: skip
    assert store.status(job_id).state == "completed"
    return job_id


# -- pause, resume, cancel, recover ------------------------------------------------------


def test_pause_stops_new_work_and_resume_wakes_the_fleet(
    make_job, store: JobStore, ids, sent_tasks
) -> None:
    """A paused job is not taken; resume makes it runnable and publishes a drain message."""
    job_id = make_job(ids(200))
    take(store, "a")
    assert control.pause(store, job_id) is True
    assert probe(store) == NoBatch("idle")
    assert control.pause(store, job_id) is False
    assert control.resume(store, job_id) is True
    assert sent_tasks == [{"name": DRAIN_TASK, "args": ["1"], "queue": QUEUE}]
    assert probe(store).index == 1


def test_resume_of_a_job_in_no_state_to_resume_sends_nothing(
    make_job, store: JobStore, ids, sent_tasks
) -> None:
    """Resume of a running job, or of an unknown one: False or JobNotFound, no message."""
    job_id = make_job(ids(10))
    assert control.resume(store, job_id) is False
    with pytest.raises(JobNotFound):
        control.resume(store, "no-such-job")
    assert sent_tasks == []


def test_cancel_counts_never_taken_ids_at_once_and_wakes_runs_to_confirm_the_rest(
    make_job, store: JobStore, ids, sent_tasks, clock
) -> None:
    """Cancel: batches never taken are not_attempted now; a paused job's batch that may
    have been sent goes back to the run queue and a drain is woken to confirm it."""
    job_id = make_job(ids(300))
    take(store, "a")
    control.pause(store, job_id)
    assert control.cancel(store, job_id) is True
    s = store.status(job_id)
    assert (s.state, s.not_attempted) == ("stopping", 200)
    assert [t["name"] for t in sent_tasks] == [DRAIN_TASK]
    clock.advance(61)
    confirm = probe(store)
    assert (confirm.index, confirm.state, confirm.sent_before) == (0, "stopping", True)
    assert control.cancel(store, job_id) is False


def test_cancel_then_resume_reattempts_what_was_not_attempted(
    make_job, store: JobStore, ids, sent_tasks, clock
) -> None:
    """A job cancelled before any take resumes with every id to attempt again."""
    job_id = make_job(ids(250))
    assert control.cancel(store, job_id) is True
    assert store.status(job_id).state == "cancelled"
    assert sent_tasks == []  # nothing runnable: no drain to wake
    assert control.resume(store, job_id) is True
    s = store.status(job_id)
    assert (s.state, s.not_attempted, s.done) == ("running", 0, 0)
    assert len(sent_tasks) == 1
    clock.advance(RESUME_DURABLE_MS / 1000)  # a resumed finished job waits to be durable
    assert [probe(store).index for _ in range(3)] == [0, 1, 2]


def test_recover_publishes_the_drains_the_fleet_misses(
    make_job, store: JobStore, ids, sent_tasks
) -> None:
    """recover: one drain message per missing drain while a job is runnable, none after."""
    assert control.recover(store, margin=10) == 0
    make_job(ids(10))
    assert control.recover(store, margin=10) == 1
    assert control.recover(store, margin=10) == 0  # its ticket is alive
    assert sent_tasks == [{"name": DRAIN_TASK, "args": ["1"], "queue": QUEUE}]


def test_the_keeper_publishes_drains_for_its_slots(make_job, store: JobStore, ids) -> None:
    """A keeper tick: heartbeat with the worker's slots, one drain per missing slot while a
    job is runnable; stopping it withdraws its slots."""
    from worker.keeper import Keeper

    published: list[list[str]] = []
    keeper = Keeper(
        store, lambda tickets: published.append(list(tickets)), worker="w1", slots=4,
        interval_s=2.0, lost_writes_margin=10,
    )  # fmt: skip
    assert keeper.tick() == 0  # nothing runnable
    make_job(ids(10))
    assert keeper.tick() == 4
    assert keeper.tick() == 0  # the four drains are alive
    assert [len(p) for p in published] == [4]
    keeper.stop()
    assert store.redis.hget(store.keys.workers + ":slots", "w1") is None


def test_a_keeper_that_cannot_publish_gives_its_tickets_back(
    make_job, store: JobStore, ids
) -> None:
    """The broker is away: the tickets of the drains the keeper could not publish go at
    once, so its first tick after the broker's return publishes them (without this they
    would block new drains until they lapse)."""
    from worker.errors import BrokerUnavailable
    from worker.keeper import Keeper

    broker_up = False
    published: list[list[str]] = []

    def publish(tickets: object) -> None:
        if not broker_up:
            raise BrokerUnavailable("the broker did not take a wake-up: refused")
        published.append(list(tickets))  # type: ignore[call-overload]

    keeper = Keeper(store, publish, worker="w1", slots=4, interval_s=2.0, lost_writes_margin=10)
    make_job(ids(10))
    with pytest.raises(BrokerUnavailable):
        keeper.tick()
    assert store.fleet_counts()["drains"] == 0
    broker_up = True
    assert keeper.tick() == 4
    assert [len(p) for p in published] == [4]


def test_a_drain_whose_successor_the_broker_refuses_gives_its_ticket_back(
    make_job, store: JobStore, settings, ids, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drain's slice ends with work left and the broker refuses its successor: its
    ticket goes at once, so the next keeper tick publishes a new drain (without this it
    would block one for its whole lifetime, slice + lease)."""
    from types import SimpleNamespace

    from worker import tasks
    from worker.drain import DrainResult
    from worker.errors import BrokerUnavailable

    make_job(ids(10))
    [ticket] = store.wake(worker="w1", slots=1, ticket_ttl_s=10, heartbeat_s=6)
    runtime = SimpleNamespace(store=store, settings=settings, context=lambda: None)
    monkeypatch.setattr(tasks, "get_runtime", lambda: runtime)
    monkeypatch.setattr(tasks, "drain", lambda *_, **__: DrainResult(more=True))

    def refuse(_tickets: object) -> None:
        raise BrokerUnavailable("the broker did not take a wake-up: refused")

    monkeypatch.setattr(tasks, "send_drains", refuse)
    assert store.fleet_counts()["drains"] == 1
    tasks.drain_task(ticket)
    assert store.fleet_counts()["drains"] == 0
    assert store.wake(worker="w1", slots=1, ticket_ttl_s=10, heartbeat_s=6) != []


def test_a_submit_while_the_broker_is_away_queues_the_job_for_the_keepers(
    settings, fake_redis, monkeypatch: pytest.MonkeyPatch, ids
) -> None:
    """submit() does not fail on a broker that does not answer: the job is sealed in
    the store, no ticket is held, and the keepers wake it once the broker is back."""
    from worker import celery
    from worker.errors import BrokerUnavailable

    def refuse(*_: object, **__: object) -> None:
        raise OSError("Connection refused")

    monkeypatch.setattr(celery.app, "send_task", refuse)
    job = submit(ids(10), reason="r", settings=settings, client=fake_redis)
    assert job.status().state == "queued"
    assert job.store.fleet_counts()["drains"] == 0
    with pytest.raises(BrokerUnavailable, match="did not take a wake-up: Connection refused"):
        celery.send_drains(["t"])


def test_rethrottle_of_one_job_sets_its_own_rate(make_job, store: JobStore, ids) -> None:
    """`rethrottle --job J 4`: J's batches come 0.25 s apart; None lifts it; 'auto' and
    non-positive rates are refused."""
    job_id = make_job(ids(500))
    assert control.rethrottle(store, 4, job_id=job_id) == f"job {job_id}: 4 requests/s"
    waits = [probe(store).wait_s for _ in range(2)]
    assert waits == pytest.approx([0.0, 0.25], abs=0.01)
    with pytest.raises(InputError, match="number"):
        control.rethrottle(store, "auto", job_id=job_id)
    with pytest.raises(InputError, match="> 0"):
        control.rethrottle(store, 0, job_id=job_id)
    assert "fleet rate only" in control.rethrottle(store, None, job_id=job_id)
    assert store.redis.hget(store.keys.job(job_id), "rate") is None


def test_rethrottle_of_the_fleet_changes_the_limiter(store: JobStore) -> None:
    """`rethrottle 50`: the fleet limiter of the alias runs at 50 requests/s."""
    assert control.rethrottle(store, 50.0).startswith("fleet (default): 50.0 requests/s")
    limiter = FleetLimiter(store.redis, store.keys.limiter(), rate=10.0)
    assert limiter.rate == pytest.approx(50.0)
    with pytest.raises(InputError):
        control.rethrottle(store, None)


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
        (GAVE_UP + MAYBE, True),
        ("OUTCOME_UNKNOWN: gave up after 3 attempts (no answer in time: ReadTimeout)", True),
        ("worker_crash_loop: 6 runs ended without a verdict (the API may have deleted some)",
         True),
        ("Internal error: deletion could not be confirmed", True),
        ("failed (no reason given)", True),
    ],
)  # fmt: skip
def test_the_retry_rule_keeps_transient_failures_only(reason: str, retryable: bool) -> None:
    """Permanent: invalid, not found, access denied, a bare 4xx code; the rest retryable."""
    assert is_retryable(reason) is retryable


# -- retry-failed ------------------------------------------------------------------------


def test_retry_failed_submits_the_retryable_ids_linked_both_ways(
    mixed_job: str, store: JobStore, settings, fake_redis, started
) -> None:
    """The new job holds the given-up and crash-loop ids (never the not_found one), with
    the original's reason, alias and priority; each job names the other; retrying again
    returns the same job."""
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


def test_a_retried_id_the_api_no_longer_finds_is_not_found(
    mixed_job: str, store: JobStore, settings, fake_redis, started, make_run, wickson
) -> None:
    """Issue 12 case 3: ids given up on after 5xx that the first job did delete are
    not_found in the retry job, never a new failure."""
    retry = retry_failed(mixed_job, settings=settings, client=fake_redis)
    assert retry is not None
    assert make_run(wickson(existing=[])).run() == Verdict.DONE
    s = store.status(retry.id)
    assert (s.state, s.not_found, s.failed) == ("completed", 2, 0)


def test_retry_failed_with_nothing_retryable_makes_no_job(
    make_job, store: JobStore, settings, fake_redis, ids, started
) -> None:
    """Only permanent failures (and not_found ids, which are no failure): None, no job."""
    job_id = make_job(ids(3))
    commit_next(store, BatchCommit(
        deleted=[0], not_found=[1], failed=[(2, "Access denied: media belongs to another user")],
    ), job_id)  # fmt: skip
    assert retry_failed(job_id, settings=settings, client=fake_redis) is None
    assert store.recent_jobs() == [job_id]
    assert started == []


def test_retry_failed_of_a_running_job_is_refused(
    make_job, settings, fake_redis, ids, started
) -> None:
    """A job still running may fail more ids: InputError until it ends."""
    job_id = make_job(ids(2))
    with pytest.raises(InputError, match=r"queued|running"):
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


def test_retry_failed_can_change_the_priority(
    capsys, use_cli, mixed_job, make_job, store, ids, started
) -> None:
    """`--priority high`: the retry job is high priority, taken before normal work."""
    normal = make_job(ids(300, "n-"))
    code, out, _ = run(capsys, "retry-failed", mixed_job, "--priority", "high")
    assert code == 0
    retry_id = out.strip()
    assert store.status(retry_id).priority == "high"
    assert started[-1] == (retry_id, "high")
    assert [probe(store).job_id for _ in range(2)] == [retry_id, normal]


# -- report ------------------------------------------------------------------------------


def test_report_csv_lists_every_id_with_outcome_reason_and_operation(
    capsys, use_cli, mixed_job: str
) -> None:
    """`report JOB`: a header and one row per unique id; sent ids carry the operation id,
    the invalid one (never sent) none; 'not found' is its own outcome."""
    code, out, _ = run(capsys, "report", mixed_job)
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["media_id", "outcome", "reason", "operation_id"]
    by_id = {r[0]: r[1:] for r in rows[1:]}
    assert len(by_id) == 9
    assert by_id["vec-000000"] == ["deleted", "", "op-1"]
    assert by_id["vec-000003"] == ["not_found", "", "op-1"]
    assert by_id["vec-000004"] == ["failed", "Access denied: media belongs to another user",
                                   "op-1"]  # fmt: skip
    assert by_id["bad id"] == ["failed", "invalid_id", ""]
    assert {r[0] for r in by_id.values()} == {"deleted", "not_found", "failed"}


def test_report_failed_jsonl_lists_only_failed_ids(capsys, use_cli, mixed_job: str) -> None:
    """`report JOB --failed --format jsonl`: one object per failed id, not_found excluded."""
    code, out, _ = run(capsys, "report", mixed_job, "--failed", "--format", "jsonl")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["outcome"] for r in rows} == {"failed"}
    assert sorted(r["media_id"] for r in rows) == [
        "bad id", "vec-000004", "vec-000005", "vec-000006", "vec-000007",
    ]  # fmt: skip
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
    """Ids of a cancelled job never sent: not_attempted with the stop reason, no operation;
    a batch still held is pending."""
    job_id = make_job(ids(600))
    commit_next(store, BatchCommit(deleted=list(range(100)), operation_id="op-0"), job_id)
    take(store, "holder")
    store.stop(job_id, "cancelled", "CANCELLED: by a test")
    rows = list(store.iter_report(job_id, batches_per_call=2))
    assert len(rows) == 600
    assert rows[0] == ("vec-000000", "deleted", "", "op-0")
    assert rows[150] == ("vec-000150", "pending", "", "")
    assert rows[599] == ("vec-000599", "not_attempted", "job stopped: CANCELLED: by a test", "")


# -- jobs --------------------------------------------------------------------------------


def test_the_jobs_table_lists_recent_jobs_newest_first(
    capsys, use_cli, make_job, store: JobStore, ids, mixed_job: str
) -> None:
    """`jobs`: id, state, priority, progress, not attempted, ids/s, age, reason; newest first."""
    running = make_job(ids(300), reason="gdpr erasure of account 42")
    commit_next(store, BatchCommit(deleted=list(range(100))), running)
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


def test_a_job_keeps_its_priority_and_its_submit_wakes_the_fleet(
    fake_redis, settings, store: JobStore, sent_tasks
) -> None:
    """submit(priority=...): the record keeps it, the job is in its priority's run queue,
    and one drain message goes to the work queue (the store, not the queue, orders work)."""
    for priority in ("low", "normal", "high"):
        job = submit([f"vec-{priority}"], reason="r", settings=settings, client=fake_redis,
                     priority=priority)  # fmt: skip
        assert store.status(job.id).priority == priority
        assert store.redis.zscore(store.keys.run_queue(priority), job.id) is not None
    assert sent_tasks == [{"name": DRAIN_TASK, "args": ["1"], "queue": QUEUE}]
    order = [store.status(probe(store).job_id).priority for _ in range(3)]
    assert order == ["high", "normal", "low"]


def test_an_unknown_priority_is_refused_before_anything(fake_redis, settings) -> None:
    """submit(priority='urgent'): InputError naming the allowed ones; Redis untouched."""
    with pytest.raises(InputError, match="high, normal, low"):
        submit(["vec-1"], settings=settings, client=fake_redis, priority="urgent")  # type: ignore[arg-type]
    assert fake_redis.keys("*") == []


def test_workers_consume_the_control_queue_before_drains(settings) -> None:
    """task_queues lists the control queue first; the Redis transport BRPOPs them in that
    order, and beat's watchdog goes to the control queue (never behind drains)."""
    config = celery_config(settings)
    assert [q.name for q in config["task_queues"]] == [CONTROL_QUEUE, QUEUE]
    assert [q.routing_key for q in config["task_queues"]] == [CONTROL_QUEUE, QUEUE]
    assert config["broker_transport_options"]["queue_order_strategy"] == "priority"
    assert config["task_default_queue"] == QUEUE
    watchdog = beat_schedule(settings)["watchdog"]
    assert (watchdog["task"], watchdog["options"]["queue"]) == (WATCHDOG_TASK, CONTROL_QUEUE)
