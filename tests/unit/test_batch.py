"""worker/batch.py: one run of one taken batch, against the store on fakeredis, the real
fleet limiter, and the API contract behind MockTransport. Sleeps go to the fake clock."""

from __future__ import annotations

import httpx
import pytest

from tests.unit.conftest import take, unit_settings
from worker import batch as batch_module
from worker.batch import MAX_429_IN_RUN, Verdict
from worker.errors import ConfigError
from worker.store import RESUME_DURABLE_MS, BatchCommit, JobStore, NoBatch, Taken

LEASE_S = 60.0
"""unit_settings' lease."""


def sent_ids(api) -> list[list[str]]:
    """The media_ids of every request the API received."""
    return [body["media_ids"] for body in api.bodies()]


def take_any(store: JobStore, owner: str = "probe") -> Taken | NoBatch:
    s = unit_settings()
    return store.take(
        owner, lease_s=s.lease_s, max_runs=s.max_deliveries,
        max_wait_s=s.max_wait_in_task_s, rate=s.rate_limit,
    )  # fmt: skip


def outcomes(store: JobStore, job_id: str) -> dict[str, tuple[str, str]]:
    """media id -> (outcome, reason), id by id."""
    return {r.media_id: (r.outcome, r.reason) for r in store.iter_outcomes(job_id)}


def assert_exact(store: JobStore, job_id: str) -> None:
    """Counters equal a recount of the ids' outcomes, and add up to the total."""
    s = store.status(job_id)
    counted = {k: 0 for k in ("deleted", "not_found", "failed", "not_attempted", "pending")}
    for outcome, _ in outcomes(store, job_id).values():
        counted[outcome] += 1
    assert (s.deleted, s.not_found, s.failed, s.not_attempted) == (
        counted["deleted"], counted["not_found"], counted["failed"], counted["not_attempted"],
    )  # fmt: skip
    assert s.done + counted["pending"] == s.total
    assert sum(s.failure_reasons.values()) == s.failed


def deletes_then(api, answer: httpx.Response | Exception):
    """An answer for api.then(): the API deletes the ids, then answers `answer` (a 500, or
    raises a timeout): the run cannot know they are gone."""

    def handler(request: httpx.Request) -> httpx.Response:
        api.answer(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler


@pytest.fixture(autouse=True)
def _no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoffs are their full-jitter ceiling: which side of max_wait_in_task_s a wait
    falls is decided by the test, not by chance."""
    real_retry_wait = batch_module.retry_wait
    monkeypatch.setattr(
        batch_module, "retry_wait", lambda *a, **kw: real_retry_wait(*a, **kw, rand=lambda: 1.0)
    )


# -- outcomes ----------------------------------------------------------------------------


def test_happy_path_deletes_the_batch_in_one_request(
    make_job, make_run, wickson, store: JobStore, ids
) -> None:
    """Every id deleted by one request carrying the job's reason; vectors are summed."""
    job_id = make_job(ids(150), reason="retention")
    api = wickson(existing=ids(150))
    assert make_run(api).run() == Verdict.DONE
    assert api.bodies() == [{"media_ids": ids(150)[:100], "reason": "retention"}]
    s = store.status(job_id)
    assert (s.deleted, s.failed, s.hd_vectors, s.ld_vectors, s.requests) == (100, 0, 200, 100, 1)
    assert store.redis.hget(store.keys.job(job_id, "ops"), "0") == b"batch_delete_1"
    assert take(store, "next").index == 1  # batch 0 is done: never handed out again


def test_the_last_batch_completes_the_job(make_job, make_run, wickson, store, ids) -> None:
    """Running every batch completes the job with every id deleted."""
    job_id = make_job(ids(150))
    api = wickson(existing=ids(150))
    assert [make_run(api, owner=o).run() for o in ("a", "b")] == [Verdict.DONE] * 2
    s = store.status(job_id)
    assert (s.state, s.deleted, s.done, s.total) == ("completed", 150, 150, 150)
    assert take_any(store) == NoBatch("idle")
    assert_exact(store, job_id)


def test_not_found_is_counted_not_found_and_other_reasons_fail(
    make_job, make_run, wickson, store, ids
) -> None:
    """The API's 'not found' is the outcome not_found (no failure); any other per-id reason
    fails the id with that reason."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10)[:6])

    def answer(request: httpx.Request) -> httpx.Response:
        api.existing.difference_update(ids(10)[:6])
        return api.success(ids(10)[:6], {
            ids(10)[6]: "Media not found", ids(10)[7]: "Media not found",
            ids(10)[8]: "Access denied: media belongs to another user",
            ids(10)[9]: "Media is locked by a legal hold",
        })  # fmt: skip

    api.then(answer)
    assert make_run(api).run() == Verdict.DONE
    s = store.status(job_id)
    assert (s.deleted, s.not_found, s.failed) == (6, 2, 2)
    assert s.failure_reasons == {
        "Access denied: media belongs to another user": 1, "Media is locked by a legal hold": 1,
    }  # fmt: skip
    assert outcomes(store, job_id)[ids(10)[6]] == ("not_found", "")
    assert_exact(store, job_id)


def test_not_found_on_a_first_clean_attempt_is_not_found(
    make_job, make_run, wickson, store, ids
) -> None:
    """Ids already gone (a re-run, an overlapping sweep) are not_found, never failed."""
    job_id = make_job(ids(10))
    make_run(wickson(existing=[])).run()
    s = store.status(job_id)
    assert (s.state, s.not_found, s.failed, s.failure_reasons) == ("completed", 10, 0, {})


@pytest.mark.parametrize(
    "lost_answer",
    [
        httpx.Response(500, json={"success": False, "error": {"code": "PROCESSING_ERROR"}}),
        httpx.ReadTimeout("no answer in time"),
    ],
    ids=["500", "timeout"],
)
def test_not_found_after_an_uncertain_attempt_is_not_found(
    make_job, make_run, wickson, store, ids, lost_answer
) -> None:
    """A 500 or a timeout that deleted: the retry's 'not found' is not_found, never failed."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))
    api.then(deletes_then(api, lost_answer))
    assert make_run(api).run() == Verdict.DONE
    assert sent_ids(api) == [ids(10), ids(10)]
    s = store.status(job_id)
    assert (s.deleted, s.not_found, s.failed, s.retries, s.requests) == (0, 10, 0, 1, 2)
    assert api.deleted == ids(10)


def test_not_found_after_a_run_died_mid_request_is_not_found(
    make_job, make_run, wickson, store, ids, clock
) -> None:
    """A run killed after its request deleted: the run that takes the batch over when the
    lease lapses knows it may have been sent, and counts 'not found' not_found."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))
    api.then(deletes_then(api, RuntimeError("worker killed")))
    with pytest.raises(RuntimeError):
        make_run(api, owner="first").run()
    clock.advance(LEASE_S + 0.1)
    second = make_run(api, owner="second")
    assert (second.taken.sent_before, second.taken.runs) == (True, 1)
    assert second.run() == Verdict.DONE
    s = store.status(job_id)
    assert (s.deleted, s.not_found, s.failed) == (0, 10, 0)


def test_a_500_then_success_retries_after_a_backoff(
    make_job, make_run, wickson, store, clock, ids
) -> None:
    """A 500 is retried after the full-jitter backoff of attempt 1, slept on the clock."""
    job_id = make_job(ids(20))
    api = wickson(existing=ids(20))
    api.then(wickson.error(500, "PROCESSING_ERROR"))
    make_run(api, backoff_base_s=0.25, backoff_cap_s=1.0).run()
    assert sent_ids(api) == [ids(20), ids(20)]
    assert 0.25 in clock.sleeps  # attempt 1 of full jitter: at most base
    s = store.status(job_id)
    assert (s.deleted, s.requests, s.retries) == (20, 2, 1)
    assert "PROCESSING_ERROR" in (s.last_error or "")


def test_unaccounted_ids_are_sent_again(make_job, make_run, wickson, store, ids) -> None:
    """Ids a 200 does not mention are retried alone, never assumed deleted."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))

    def forgets_three(request: httpx.Request) -> httpx.Response:
        api.existing.difference_update(ids(10)[:7])
        return api.success(ids(10)[:7])

    api.then(forgets_three)
    make_run(api).run()
    assert sent_ids(api) == [ids(10), ids(10)[7:]]
    s = store.status(job_id)
    assert (s.deleted, s.failed, s.done) == (10, 0, 10)


def test_a_run_resumes_where_an_earlier_one_stopped(
    make_job, make_run, wickson, store, ids
) -> None:
    """Ids an earlier run of the batch already resolved are not sent again."""
    job_id = make_job(ids(10))
    earlier = take(store, "earlier")
    store.commit(job_id, 0, earlier.token, BatchCommit(deleted=[0, 1, 2], release="later"))
    api = wickson(existing=ids(10))
    make_run(api).run()
    assert sent_ids(api) == [ids(10)[3:]]
    assert store.status(job_id).deleted == 10


# -- fencing -----------------------------------------------------------------------------


def test_a_run_that_outlived_its_lease_commits_nothing(
    make_job, make_run, wickson, store, ids, clock
) -> None:
    """Issue 12 case 1: run A's request is slower than its lease; run B takes the batch over
    and deletes every id; A's late 'not found' is not committed (A is LOST): 5 deleted,
    none failed, none not_found."""
    job_id = make_job(ids(5))
    api = wickson(existing=ids(5))
    verdicts = {}

    def slow(request: httpx.Request) -> httpx.Response:
        clock.advance(LEASE_S + 1)  # A's request hangs past its lease...
        run_b = make_run(api, owner="B")  # ...B takes the batch over and deletes it
        assert (run_b.taken.sent_before, run_b.taken.runs) == (True, 1)
        verdicts["B"] = run_b.run()
        return api.answer(request)  # A's request arrives last: everything "not found"

    api.then(slow)
    run_a = make_run(api, owner="A")
    verdicts["A"] = run_a.run()
    assert verdicts == {"A": Verdict.LOST, "B": Verdict.DONE}
    assert len(api.requests) == 2
    s = store.status(job_id)
    assert (s.state, s.deleted, s.not_found, s.failed, s.not_attempted) == (
        "completed", 5, 0, 0, 0,
    )  # fmt: skip
    assert {o for o, _ in outcomes(store, job_id).values()} == {"deleted"}
    assert_exact(store, job_id)


def test_a_run_that_lost_its_lease_sends_nothing_more(
    make_job, make_run, wickson, store, ids, clock
) -> None:
    """After a 500, a run whose lease lapsed meanwhile finds it lost at its renewal and
    sends no retry; the new holder's run decides every id."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))
    taken_over = {}

    def fails_slowly(request: httpx.Request) -> httpx.Response:
        clock.advance(LEASE_S + 1)
        taken_over["B"] = take(store, "B")
        return wickson.error(500, "PROCESSING_ERROR")

    api.then(fails_slowly)
    assert make_run(api, owner="A").run() == Verdict.LOST
    assert len(api.requests) == 1
    assert store.renew(job_id, 0, "A", lease_s=LEASE_S, alias="default").held is False
    s = store.status(job_id)
    assert (s.done, s.requests, s.retries) == (0, 0, 0)  # A committed nothing
    assert make_run(api, taken=taken_over["B"]).run() == Verdict.DONE
    assert store.status(job_id).deleted == 10


def test_a_stopping_run_that_lost_its_lease_counts_nothing_not_attempted(
    make_job, make_run, wickson, store, ids, clock
) -> None:
    """In a stopping job the same race must not give not_attempted for deleted ids: the
    lapsed run commits nothing; the run that took over confirms them: not_found."""
    job_id = make_job(ids(5))
    api = wickson(existing=ids(5))
    taken_over = {}

    def slow(request: httpx.Request) -> httpx.Response:
        api.answer(request)  # deleted, but the answer comes too late
        clock.advance(LEASE_S + 1)
        store.stop(job_id, "cancelled", "CANCELLED: by a test")
        taken_over["B"] = take(store, "B")
        return wickson.error(500, "PROCESSING_ERROR")

    api.then(slow)
    assert make_run(api, owner="A").run() == Verdict.LOST
    assert store.status(job_id).not_attempted == 0
    run_b = make_run(api, taken=taken_over["B"])
    assert (run_b.taken.state, run_b.taken.sent_before) == ("stopping", True)
    assert run_b.run() == Verdict.STOPPED
    s = store.status(job_id)
    assert (s.state, s.not_found, s.not_attempted, s.failed) == ("cancelled", 5, 0, 0)
    assert_exact(store, job_id)


def test_a_run_past_its_lease_that_nobody_took_over_goes_on(
    make_job, make_run, wickson, store, ids, clock
) -> None:
    """A lease lapsed but not taken over is still the run's: its renewal holds (no second
    run can race it) and it finishes the batch."""
    job_id = make_job(ids(5))
    api = wickson(existing=ids(5))

    def slow(request: httpx.Request) -> httpx.Response:
        clock.advance(LEASE_S + 1)
        return wickson.error(500, "PROCESSING_ERROR")

    api.then(slow)
    assert make_run(api).run() == Verdict.DONE
    assert store.status(job_id).deleted == 5


# -- splitting ---------------------------------------------------------------------------


def test_batch_too_large_halves_the_request_until_it_fits(
    make_job, make_run, wickson, store, ids
) -> None:
    """An API that takes at most 30 ids: requests are halved until accepted; all deleted."""
    job_id = make_job(ids(100))
    api = wickson(existing=ids(100), max_ids=30)
    make_run(api).run()
    sizes = [len(b) for b in sent_ids(api)]
    assert sizes[:2] == [100, 50]
    assert sorted(i for b in sent_ids(api) if len(b) <= 30 for i in b) == ids(100)
    s = store.status(job_id)
    assert (s.deleted, s.failed) == (100, 0)


def test_invalid_media_ids_bisects_down_to_the_bad_id(
    make_job, make_run, wickson, store, ids
) -> None:
    """INVALID_MEDIA_IDS is bisected: the bad id fails with that code, the rest are deleted."""
    job_id = make_job(ids(8))
    bad = ids(8)[5]
    make_run(wickson(existing=ids(8), bad_ids=[bad])).run()
    s = store.status(job_id)
    assert (s.deleted, s.failed) == (7, 1)
    assert dict(store.iter_failures(job_id)) == {bad: "INVALID_MEDIA_IDS"}


@pytest.mark.parametrize(
    "api_kwargs", [{"bad_ids": ["vec-000042"]}, {"max_ids": 10}], ids=["one-bad-id", "limit-10"]
)
def test_splitting_a_full_batch_with_default_settings_deletes_every_good_id(
    make_job, make_run, wickson, store, ids, api_kwargs
) -> None:
    """With default settings a 100-id batch splits as far as needed; every good id is deleted."""
    job_id = make_job(ids(100))
    make_run(wickson(existing=ids(100), **api_kwargs)).run()
    s = store.status(job_id)
    bad = len(api_kwargs.get("bad_ids", []))
    assert (s.deleted, s.failed) == (100 - bad, bad)
    assert_exact(store, job_id)


def test_splits_do_not_spend_the_retry_budget(make_job, make_run, wickson, store, ids) -> None:
    """A server limit of 10 ids splits a batch into 16 requests, even with max_attempts=3."""
    job_id = make_job(ids(100))
    make_run(wickson(existing=ids(100), max_ids=10), max_attempts=3).run()
    s = store.status(job_id)
    assert (s.deleted, s.failed) == (100, 0)


def test_a_long_bisection_renews_its_lease(make_job, make_run, wickson, store, ids, clock):
    """Splitting while the clock runs past the first lease: the run renews before each
    request, so no other run takes the batch and every id is decided once."""
    job_id = make_job(ids(100))
    api = wickson(existing=ids(100), max_ids=10)
    real = api.answer

    def slow(request: httpx.Request) -> httpx.Response:
        clock.advance(LEASE_S / 4)
        assert isinstance(take_any(store, "intruder"), NoBatch)
        return real(request)

    api.answer = slow
    assert make_run(api, owner="A").run() == Verdict.DONE
    assert len(api.requests) > 4  # well past one lease of wall time
    s = store.status(job_id)
    assert (s.deleted, s.state) == (100, "completed")


# -- jobs that stop ----------------------------------------------------------------------


def test_a_401_stops_the_job(make_job, make_run, wickson, store, ids, api_key) -> None:
    """A 401 stops the job: every id never sent not_attempted, the error (never the key)
    recorded; the job ends failed."""
    job_id = make_job(ids(1_000))
    assert make_run(wickson(key="some-other-key")).run() == Verdict.STOPPED
    s = store.status(job_id)
    assert (s.state, s.deleted, s.not_attempted) == ("failed", 0, 1_000)
    assert "INVALID_API_KEY" in (s.last_error or "")
    assert api_key not in (s.last_error or "")
    assert outcomes(store, job_id)[ids(1_000)[0]] == ("not_attempted", "INVALID_API_KEY")
    assert take_any(store) == NoBatch("idle")
    assert_exact(store, job_id)


def test_after_a_401_the_batches_other_runs_hold_send_nothing(
    make_job, make_run, wickson, store, ids
) -> None:
    """A run holding a batch of a job another run's 401 stopped sees the stop at its next
    renewal: its ids no request reached end not attempted, nothing more is sent."""
    job_id = make_job(ids(300))
    good = wickson(existing=ids(300), max_ids=50)  # the first request is split: 400
    other = make_run(good, owner="other")
    assert make_run(wickson(key="revoked"), owner="first").run() == Verdict.STOPPED
    assert other.run() == Verdict.STOPPED
    assert sent_ids(good) == [ids(300)[:100]]
    s = store.status(job_id)
    assert (s.state, s.deleted, s.not_attempted) == ("failed", 0, 300)
    assert outcomes(store, job_id)[ids(300)[0]] == ("not_attempted", "job stopped")
    assert_exact(store, job_id)


def test_a_401_after_an_uncertain_attempt_says_the_ids_are_unconfirmed(
    make_job, make_run, wickson, store, ids, clock
) -> None:
    """Ids a 500 may have deleted, then a 401: not_attempted with a reason saying they are
    unconfirmed; resume (with a working key) confirms them: not_found."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))
    api.then(deletes_then(api, wickson.error(500, "PROCESSING_ERROR")))
    api.then(wickson.error(401, "INVALID_API_KEY", "Invalid or missing API key"))
    assert make_run(api).run() == Verdict.STOPPED
    s = store.status(job_id)
    assert (s.state, s.not_attempted) == ("failed", 10)
    _, reason = outcomes(store, job_id)[ids(10)[0]]
    assert reason == "INVALID_API_KEY: unconfirmed (an earlier request may have deleted it)"
    assert store.resume(job_id)
    clock.advance(RESUME_DURABLE_MS / 1000)  # a resumed finished job waits to be durable
    assert make_run(api, owner="after-resume").run() == Verdict.DONE
    s = store.status(job_id)
    assert (s.state, s.not_found, s.not_attempted, s.failed) == ("completed", 10, 0, 0)
    assert_exact(store, job_id)


def test_a_403_stops_the_job_too(make_job, make_run, wickson, store, ids) -> None:
    """A key without the delete capability stops the job like a 401."""
    job_id = make_job(ids(100))
    api = wickson()
    api.then(wickson.error(403, "INSUFFICIENT_PERMISSIONS"))
    make_run(api).run()
    s = store.status(job_id)
    assert (s.state, s.not_attempted) == ("failed", 100)
    assert "INSUFFICIENT_PERMISSIONS" in (s.last_error or "")


def test_a_run_of_a_stopping_job_closes_its_never_sent_ids_without_sending(
    make_job, make_run, wickson, store, ids
) -> None:
    """A run that takes a batch of a stopping job whose ids no request reached sends
    nothing: they end not_attempted with the stop reason."""
    job_id = make_job(ids(100))
    t = take(store, "a")
    store.stop(job_id, "cancelled", "CANCELLED: by a test")
    taken = Taken(**{**t.__dict__, "state": "stopping", "stop_reason": "job stopped: x"})
    api = wickson(existing=ids(100))
    assert make_run(api, taken=taken).run() == Verdict.STOPPED
    assert api.requests == []
    s = store.status(job_id)
    assert (s.state, s.not_attempted) == ("cancelled", 100)
    assert outcomes(store, job_id)[ids(100)[0]] == ("not_attempted", "job stopped: x")


def test_a_run_of_a_stopping_job_confirms_a_possibly_sent_batch(
    make_job, make_run, wickson, store, ids, clock
) -> None:
    """A batch a request may have reached is confirmed by another request when the job
    stops, never guessed not_attempted: deleted ids end not_found, the rest deleted."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))

    def deletes_half_then_times_out(request: httpx.Request) -> httpx.Response:
        api.existing.difference_update(ids(10)[:5])
        raise httpx.ReadTimeout("no answer")

    api.then(deletes_half_then_times_out)
    run = make_run(api, owner="A", backoff_base_s=30.0, backoff_cap_s=60.0)
    assert run.run() == Verdict.HANDED_BACK
    assert len(api.requests) == 1
    store.stop(job_id, "cancelled", "CANCELLED: by a test")
    assert store.status(job_id).not_attempted == 0
    clock.advance(61)
    confirm = make_run(api, owner="B")
    assert (confirm.taken.state, confirm.taken.sent_before) == ("stopping", True)
    assert confirm.run() == Verdict.STOPPED
    s = store.status(job_id)
    assert (s.state, s.not_found, s.deleted, s.not_attempted) == ("cancelled", 5, 5, 0)


def test_a_job_stopped_after_a_500_in_this_run_is_confirmed_not_guessed(
    make_job, make_run, wickson, store, ids
) -> None:
    """A 500 that deleted, then the job is cancelled: the run's retry renews, sees the
    stop, and still sends the ids (they may be gone) to confirm them: not_found, never
    not_attempted."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))

    def deletes_fails_and_is_cancelled(request: httpx.Request) -> httpx.Response:
        api.answer(request)
        store.stop(job_id, "cancelled", "CANCELLED: by a test")
        return wickson.error(500, "PROCESSING_ERROR")

    api.then(deletes_fails_and_is_cancelled)
    assert make_run(api).run() == Verdict.STOPPED
    assert sent_ids(api) == [ids(10), ids(10)]
    s = store.status(job_id)
    assert (s.state, s.not_found, s.not_attempted, s.failed) == ("cancelled", 10, 0, 0)
    assert_exact(store, job_id)


def test_a_worker_without_the_jobs_key_stops_it(make_job, store, wickson, ids, clock) -> None:
    """A key alias this worker lacks (ConfigError) stops the job: nothing is sent."""
    from worker.batch import BatchRun, RunContext

    job_id = make_job(ids(10), key_alias="tenant-b")

    def tenant(alias: str):
        raise ConfigError(f"no key for alias {alias}")

    ctx = RunContext(store=store, settings=unit_settings(), tenant=tenant, sleep=clock.sleep)
    assert BatchRun(take(store), ctx).run() == Verdict.STOPPED
    s = store.status(job_id)
    assert (s.state, s.not_attempted) == ("failed", 10)
    assert "UNKNOWN_KEY_ALIAS" in (s.last_error or "")


# -- giving up ---------------------------------------------------------------------------


def test_exhausted_attempts_fail_the_ids_with_the_error_and_the_count(
    make_job, make_run, wickson, store, ids
) -> None:
    """8 attempts of 500s: the ids fail with a reason naming the error and the count, and
    saying the API may have deleted them (a 500 may delete)."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))
    api.then(*[wickson.error(500, "PROCESSING_ERROR")] * 8)
    assert make_run(api).run() == Verdict.DONE
    assert len(api.requests) == 8
    s = store.status(job_id)
    assert (s.deleted, s.failed, s.requests) == (0, 10, 8)
    ((reason, count),) = s.failure_reasons.items()
    assert count == 10
    assert reason.startswith("PROCESSING_ERROR: gave up after 8 attempts")
    assert reason.endswith("; the API may have deleted it")
    assert take_any(store) == NoBatch("idle")


def test_exhausted_attempts_that_never_reached_the_api_do_not_say_it_may_have_deleted(
    make_job, make_run, wickson, store, ids
) -> None:
    """Connection refused every time (nothing sent): 'gave up after N attempts', without
    the claim that the API may have deleted the ids."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))
    api.then(*[httpx.ConnectError("connection refused")] * 3)
    make_run(api, max_attempts=3).run()
    ((reason, count),) = store.status(job_id).failure_reasons.items()
    assert count == 10
    assert "gave up after 3 attempts" in reason
    assert "may have deleted" not in reason


def test_attempts_are_counted_across_runs(make_job, make_run, wickson, store, ids) -> None:
    """A batch's attempt budget spans its runs: a run after 7 spent attempts has one left;
    the batch was handed back after a request, so the reason says it may be deleted."""
    job_id = make_job(ids(10))
    earlier = take(store, "earlier")
    store.commit(job_id, 0, earlier.token, BatchCommit(attempts=7, release="later"))
    api = wickson(existing=ids(10))
    api.then(wickson.error(500, "PROCESSING_ERROR"), wickson.error(500, "PROCESSING_ERROR"))
    run = make_run(api)
    assert (run.taken.attempts, run.taken.sent_before) == (7, True)
    run.run()
    assert len(api.requests) == 1
    s = store.status(job_id)
    assert s.failed == 10
    ((reason, _),) = s.failure_reasons.items()
    assert "gave up after 8 attempts" in reason


def test_only_ids_an_uncertain_attempt_may_have_reached_say_so(
    make_job, make_run, wickson, store, ids
) -> None:
    """Split by BATCH_TOO_LARGE, the half that met 500s says 'may have deleted it'; the
    half never sent (refused by connection errors) does not."""
    job_id = make_job(ids(4))
    api = wickson(existing=ids(4))
    api.then(
        wickson.error(400, "BATCH_TOO_LARGE"),
        wickson.error(500, "PROCESSING_ERROR"),
        httpx.ConnectError("refused"),
    )
    make_run(api, max_attempts=2).run()
    reasons = {i: why for i, (_, why) in outcomes(store, job_id).items()}
    assert sent_ids(api)[:2] == [ids(4), ids(4)[:2]]
    assert all(reasons[i].endswith("; the API may have deleted it") for i in ids(4)[:2])
    assert all("may have deleted" not in reasons[i] for i in ids(4)[2:])
    assert all("gave up after 2 attempts" in reasons[i] for i in ids(4))


# -- rate limits and handing back --------------------------------------------------------


def test_a_429_pauses_the_fleet_limiter_then_the_batch_goes_through(
    make_job, make_run, wickson, limiter, store, clock, ids
) -> None:
    """A 429 pauses the fleet limiter for Retry-After; the run waits it out; not an attempt."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))
    api.then(wickson.error(429, "RATE_LIMIT_EXCEEDED", headers={"Retry-After": "2"}))
    paused_at = clock.now
    assert make_run(api, max_attempts=1).run() == Verdict.DONE
    paused_until = int(store.redis.hget(limiter.key, "paused_until")) / 1e6
    assert paused_until - paused_at >= 2.0
    assert sum(clock.sleeps) >= 2.0
    s = store.status(job_id)
    assert (s.deleted, s.rate_limited, s.requests) == (10, 1, 2)


def test_a_long_retry_after_hands_the_batch_back_until_then(
    make_job, make_run, wickson, store, ids, clock
) -> None:
    """A Retry-After longer than max_wait_in_task_s: the batch is handed back, not
    takeable before the pause ends, takeable after; the 429 is counted."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))
    api.then(wickson.error(429, "RATE_LIMIT_EXCEEDED", headers={"Retry-After": "60"}))
    assert make_run(api, owner="first").run() == Verdict.HANDED_BACK
    assert len(api.requests) == 1
    assert store.status(job_id).rate_limited == 1
    early = take_any(store)
    assert early.kind == "wait"
    assert early.wait_s >= 60.0
    clock.advance(early.wait_s + 0.01)
    again = make_run(api, owner="second")
    assert (again.taken.index, again.taken.sent_before) == (0, True)
    assert again.run() == Verdict.DONE
    assert store.status(job_id).deleted == 10


def test_a_429_storm_hands_the_batch_back(make_job, make_run, wickson, store, ids, clock):
    """MAX_429_IN_RUN 429s in one run: the run hands the batch back for later."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))
    storm = wickson.error(429, "RATE_LIMIT_EXCEEDED", headers={"Retry-After": "1"})
    api.then(*[storm] * MAX_429_IN_RUN)
    assert make_run(api, owner="first").run() == Verdict.HANDED_BACK
    assert len(api.requests) == MAX_429_IN_RUN
    s = store.status(job_id)
    assert (s.rate_limited, s.done) == (MAX_429_IN_RUN, 0)
    assert take_any(store).kind == "wait"
    clock.advance(1.1)
    assert make_run(api, owner="second").run() == Verdict.DONE


def test_a_long_backoff_after_a_500_hands_back_and_remembers_the_attempt(
    make_job, make_run, wickson, store, ids, clock
) -> None:
    """A 5xx backoff too long to sleep hands the batch back; the next take knows the
    batch may have been sent and the attempt it spent."""
    job_id = make_job(ids(10))
    api = wickson()
    api.then(wickson.error(500, "PROCESSING_ERROR"))
    run = make_run(
        api, owner="first", backoff_base_s=10.0, backoff_cap_s=30.0, max_wait_in_task_s=0.0,
    )  # fmt: skip
    assert run.run() == Verdict.HANDED_BACK
    assert clock.sleeps == []
    assert take_any(store).kind == "wait"
    clock.advance(30.1)
    again = take(store, "second")
    assert (again.index, again.sent_before, again.attempts) == (0, True, 1)
    assert store.status(job_id).retries == 1


def test_a_worker_shutting_down_hands_its_batch_back_before_sending(
    make_job, store, wickson, make_client, limiter, clock, ids
) -> None:
    """A warm shutdown: the run hands its batch back at once; it is takeable right away."""
    from worker.batch import BatchRun, RunContext

    make_job(ids(10))
    api = wickson(existing=ids(10))
    client = make_client(api)
    ctx = RunContext(
        store=store, settings=unit_settings(), tenant=lambda _a: (client, limiter),
        sleep=clock.sleep, shutting_down=lambda: True,
    )  # fmt: skip
    assert BatchRun(take(store), ctx).run() == Verdict.HANDED_BACK
    assert api.requests == []
    assert take(store, "next").index == 0


def test_a_run_whose_wait_a_shutdown_cut_short_hands_back_without_sending(
    make_job, store, wickson, make_client, limiter, clock, ids
) -> None:
    """The worker's sleeps end early when it shuts down (runtime.sleep_unless_shutting_down):
    a run waiting for its send slot then hands its batch back instead of sending before
    the slot, and the batch is takeable at once."""
    import threading

    from worker.batch import BatchRun, RunContext

    make_job(ids(10))
    store.redis.hset(store.keys.limiter(), "tat", int((clock.now + 2) * 1e6))  # slot in 2 s
    api = wickson(existing=ids(10))
    client = make_client(api)
    shutdown = threading.Event()
    ctx = RunContext(
        store=store, settings=unit_settings(), tenant=lambda _a: (client, limiter),
        sleep=lambda _s: shutdown.set(), shutting_down=shutdown.is_set,
    )  # fmt: skip
    run = BatchRun(take(store), ctx)
    assert run.taken.wait_s > 1
    assert run.run() == Verdict.HANDED_BACK
    assert api.requests == []
    assert take(store, "next").index == 0


def test_a_run_hands_its_batch_back_before_a_later_request_once_the_slice_is_over(
    make_job, store, wickson, make_client, limiter, clock, ids
) -> None:
    """A batch in a 5xx storm would keep its run (and the drain's broker delivery) for
    every retry: once the slice is over the run sends nothing more, hands the batch back
    takeable at once, and the next run finishes it."""
    from worker.batch import BatchRun, RunContext

    make_job(ids(10))
    api = wickson(existing=ids(10))
    api.then(wickson.error(500, "PROCESSING_ERROR", "busy"))
    client = make_client(api)
    ctx = RunContext(
        store=store, settings=unit_settings(), tenant=lambda _a: (client, limiter),
        sleep=clock.sleep, slice_over=lambda: True,
    )  # fmt: skip
    assert BatchRun(take(store), ctx).run() == Verdict.HANDED_BACK
    assert len(api.requests) == 1  # the first request only: no retry after the slice
    again = take(store, "next")
    assert (again.index, again.sent_before) == (0, True)


# -- pause and crash loops ---------------------------------------------------------------


def test_a_run_that_renews_on_a_paused_job_hands_back_without_sending(
    make_job, make_run, wickson, store, ids, clock
) -> None:
    """The job is paused while the run waits for its send slot: at its renewal the run
    hands the batch back without sending; after resume the batch is taken and deleted."""
    job_id = make_job(ids(10))
    store.redis.hset(store.keys.limiter(), "tat", int((clock.now + 2) * 1e6))  # slot in 2 s
    api = wickson(existing=ids(10))
    run = make_run(api, owner="first")
    assert run.taken.wait_s == pytest.approx(2.0, abs=0.01)
    store.pause(job_id)
    assert run.run() == Verdict.HANDED_BACK
    assert api.requests == []
    assert take_any(store) == NoBatch("idle")
    assert store.resume(job_id)
    assert make_run(api, owner="second").run() == Verdict.DONE
    assert store.status(job_id).deleted == 10


def test_a_batch_handed_back_before_its_first_request_is_not_attempted_at_a_stop(
    make_job, make_run, wickson, store, ids, clock
) -> None:
    """Handed back while waiting for its send slot (the job paused), the batch was never
    sent: cancelling the job counts its ids not_attempted at once; no request is sent."""
    job_id = make_job(ids(10))
    store.redis.hset(store.keys.limiter(), "tat", int((clock.now + 2) * 1e6))  # slot in 2 s
    api = wickson(existing=ids(10))
    run = make_run(api, owner="first")
    store.pause(job_id)
    assert run.run() == Verdict.HANDED_BACK
    assert store.stop(job_id, "cancelled", "CANCELLED: by a test")
    s = store.status(job_id)
    assert (s.state, s.not_attempted) == ("cancelled", 10)
    assert take_any(store) == NoBatch("idle")
    assert api.requests == []


def test_a_job_paused_between_requests_stops_sending(
    make_job, make_run, wickson, store, ids
) -> None:
    """Paused while a 500 is being retried: the retry is not sent; the batch is handed
    back and the job is not runnable until resumed."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))

    def fails_and_pauses(request: httpx.Request) -> httpx.Response:
        store.pause(job_id)
        return wickson.error(500, "PROCESSING_ERROR")

    api.then(fails_and_pauses)
    assert make_run(api).run() == Verdict.HANDED_BACK
    assert len(api.requests) == 1
    assert store.status(job_id).state == "paused"
    assert take_any(store) == NoBatch("idle")


def test_a_crash_looping_batch_fails_without_being_sent(
    make_job, make_run, wickson, store, ids, clock
) -> None:
    """After more than max_deliveries runs died holding it, the batch's ids fail
    worker_crash_loop (they may be deleted), and no run sends it again."""
    job_id = make_job(ids(10))
    for n in range(6):  # max_deliveries 5: the sixth lapse is one too many
        take(store, f"crashed-{n}")
        clock.advance(LEASE_S + 0.1)
    api = wickson(existing=ids(10))
    assert isinstance(take_any(store, "next"), NoBatch)
    assert api.requests == []
    s = store.status(job_id)
    assert (s.state, s.failed) == ("completed", 10)
    ((reason, count),) = s.failure_reasons.items()
    assert count == 10
    assert reason.startswith("worker_crash_loop: ")
    assert "(the API may have deleted some)" in reason


# -- drain runs --------------------------------------------------------------------------


@pytest.fixture
def run_context(store, wickson, make_client, limiter, clock):
    """`run_context(api, **settings)`: the RunContext a drain run would get."""
    from worker.batch import RunContext

    def make(api, **overrides) -> RunContext:
        client = make_client(api)
        return RunContext(
            store=store, settings=unit_settings(**overrides),
            tenant=lambda _alias: (client, limiter), sleep=clock.sleep,
        )  # fmt: skip

    return make


def test_a_drain_run_takes_batches_until_no_job_is_runnable(
    make_job, store, wickson, run_context, clock, ids
) -> None:
    """One drain run deletes every batch of every job, then ends (idle) and frees its
    ticket."""
    from worker.drain import drain

    jobs = [make_job(ids(250, "a-")), make_job(ids(120, "b-"))]
    api = wickson(existing=ids(250, "a-") + ids(120, "b-"))
    (ticket,) = store.wake()
    result = drain(run_context(api), ticket, slice_s=60, clock=clock.time)
    assert result.more is False
    assert result.verdicts == {"done": 5}
    assert [store.status(j).state for j in jobs] == ["completed", "completed"]
    assert store.redis.zscore(store.keys.drains, ticket) is None


def test_a_drain_run_ends_after_its_slice_with_more_to_do(
    make_job, store, wickson, run_context, clock, ids
) -> None:
    """Past its slice a drain run stops taking batches and says more work remains."""
    from worker.drain import drain

    make_job(ids(1_000))
    api = wickson(existing=ids(1_000))
    real = api.answer

    def two_seconds_each(request: httpx.Request) -> httpx.Response:
        clock.advance(2.0)
        return real(request)

    api.answer = two_seconds_each
    (ticket,) = store.wake()
    result = drain(run_context(api), ticket, slice_s=5, clock=clock.time)
    assert result.more is True
    assert result.verdicts == {"done": 3}


def test_a_drain_run_whose_ticket_was_replaced_ends_at_once(
    make_job, store, wickson, run_context, clock, ids
) -> None:
    """A late drain message whose place the fleet already filled takes nothing."""
    from worker.drain import drain

    make_job(ids(100))
    store.wake()  # the fleet's one drain run is alive
    api = wickson(existing=ids(100))
    result = drain(run_context(api), "stale-ticket", slice_s=60, clock=clock.time)
    assert (result.more, result.verdicts, api.requests) == (False, {}, [])


def test_a_run_that_crashes_in_a_drain_is_taken_over_after_its_lease(
    make_job, store, wickson, run_context, clock, ids
) -> None:
    """An unforeseen error in a run does not end the drain: the batch's lease lapses and
    the drain itself takes it over (a crash counted), finishing the job exactly."""
    from worker.drain import drain

    job_id = make_job(ids(100))
    api = wickson(existing=ids(100))
    api.then(deletes_then(api, RuntimeError("a bug")))
    (ticket,) = store.wake()
    result = drain(run_context(api), ticket, slice_s=300, clock=clock.time)
    assert result.verdicts == {"done": 1}
    s = store.status(job_id)
    assert (s.state, s.not_found, s.deleted, s.failed) == ("completed", 100, 0, 0)
