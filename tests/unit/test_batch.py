"""worker/batch.py: one run of one batch, against the fake store, the real fleet limiter on
fakeredis, and the API contract behind MockTransport. Sleeps go to the fake clock."""

from __future__ import annotations

import httpx
import pytest

from worker import batch as batch_module
from worker.errors import Deferred
from worker.store import BatchCommit, JobStore

LEASE_S = 60.0


def claim(store: JobStore, job_id: str, index: int, token: str):
    return store.claim(job_id, index, token, lease_s=LEASE_S, max_deliveries=5)


def sent_ids(api) -> list[list[str]]:
    """The media_ids of every request the API received."""
    return [body["media_ids"] for body in api.bodies()]


def test_happy_path_deletes_the_batch_in_one_request(
    make_job, make_run, wickson, store: JobStore, ids
) -> None:
    """Every id deleted by one request carrying the job's reason; vectors are summed."""
    job_id = make_job(ids(150), reason="retention")
    api = wickson(existing=ids(150))
    result = make_run(job_id, 0, api).run()
    assert result.verdict == "ok"
    assert api.bodies() == [{"media_ids": ids(150)[:100], "reason": "retention"}]
    s = store.status(job_id)
    assert (s.deleted, s.failed, s.hd_vectors, s.ld_vectors, s.requests) == (100, 0, 200, 100, 1)
    assert claim(store, job_id, 0, "later").verdict == "done"


def test_the_last_batch_completes_the_job(make_job, make_run, wickson, store, ids) -> None:
    """Running every batch completes the job with every id deleted."""
    job_id = make_job(ids(150))
    api = wickson(existing=ids(150))
    make_run(job_id, 0, api).run()
    make_run(job_id, 1, api).run()
    s = store.status(job_id)
    assert (s.state, s.deleted, s.done, s.total) == ("completed", 150, 150, 150)


def test_a_finished_batch_reserves_a_successor_to_publish(make_job, make_run, wickson, ids) -> None:
    """With the window full, a run returns the next batch for the task to publish."""
    job_id = make_job(ids(1_000))  # window 4: batches 0..3 dispatched
    assert make_run(job_id, 0, wickson(existing=ids(1_000))).run().successors == [4]


def test_partial_failures_are_recorded_with_the_apis_reasons(
    make_job, make_run, wickson, store, ids
) -> None:
    """Ids the API could not delete end failed with its reason; the rest deleted."""
    job_id = make_job(ids(100))
    make_run(job_id, 0, wickson(existing=ids(100)[:60])).run()
    s = store.status(job_id)
    assert (s.deleted, s.failed, s.already_absent) == (60, 40, 0)
    assert s.failure_reasons == {"Media not found": 40}
    assert dict(store.iter_failures(job_id)) == dict.fromkeys(ids(100)[60:], "Media not found")


def test_not_found_without_an_uncertain_attempt_is_a_failure(
    make_job, make_run, wickson, store, ids
) -> None:
    """'Not found' on a first, clean attempt means the id is wrong: failed, not absent."""
    job_id = make_job(ids(10))
    make_run(job_id, 0, wickson(existing=[])).run()
    s = store.status(job_id)
    assert (s.failed, s.already_absent) == (10, 0)


def test_not_found_after_a_500_counts_already_absent(
    make_job, make_run, wickson, store, ids
) -> None:
    """A 500 may have deleted: ids then 'not found' were deleted by it, already absent."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))

    def deletes_then_fails(request: httpx.Request) -> httpx.Response:
        api.answer(request)  # the server deleted them, then failed to say so
        return wickson.error(500, "PROCESSING_ERROR")

    api.then(deletes_then_fails)
    make_run(job_id, 0, api).run()
    s = store.status(job_id)
    assert (s.deleted, s.already_absent, s.failed, s.retries) == (0, 10, 0, 1)


def test_not_found_after_a_run_died_mid_request_counts_already_absent(
    make_job, make_run, wickson, store, ids
) -> None:
    """After a run died mid-request, its retry counts 'not found' as already absent."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))

    def deletes_then_crashes(request: httpx.Request) -> httpx.Response:
        api.answer(request)
        raise RuntimeError("worker killed")

    api.then(deletes_then_crashes)
    with pytest.raises(RuntimeError):
        make_run(job_id, 0, api, owner="first").run()
    store.release(job_id, 0, "first")  # what the task does on an unexpected error
    make_run(job_id, 0, api, owner="second").run()
    s = store.status(job_id)
    assert (s.deleted, s.already_absent, s.failed) == (0, 10, 0)


def test_a_500_then_success_retries_after_a_backoff(
    make_job, make_run, wickson, store, clock, ids, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 500 is retried after the full-jitter backoff of attempt 1, slept on the clock."""
    real_retry_wait = batch_module.retry_wait
    monkeypatch.setattr(
        batch_module,
        "retry_wait",
        lambda *a, **kw: real_retry_wait(*a, **kw, rand=lambda: 1.0),  # the ceiling
    )
    job_id = make_job(ids(20))
    api = wickson(existing=ids(20))
    api.then(wickson.error(500, "PROCESSING_ERROR"))
    make_run(job_id, 0, api, backoff_base_s=0.25, backoff_cap_s=1.0).run()
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
    make_run(job_id, 0, api).run()
    assert sent_ids(api) == [ids(10), ids(10)[7:]]
    s = store.status(job_id)
    assert (s.deleted, s.failed, s.done) == (10, 0, 10)


def test_batch_too_large_halves_the_request_until_it_fits(
    make_job, make_run, wickson, store, ids
) -> None:
    """An API that takes at most 30 ids: requests are halved until accepted; all deleted."""
    job_id = make_job(ids(100))
    api = wickson(existing=ids(100), max_ids=30)
    make_run(job_id, 0, api).run()
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
    make_run(job_id, 0, wickson(existing=ids(8), bad_ids=[bad])).run()
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
    make_run(job_id, 0, wickson(existing=ids(100), **api_kwargs)).run()
    s = store.status(job_id)
    bad = len(api_kwargs.get("bad_ids", []))
    assert (s.deleted, s.failed) == (100 - bad, bad)


def test_splits_do_not_spend_the_retry_budget(make_job, make_run, wickson, store, ids) -> None:
    """A server limit of 10 ids splits a batch into 16 requests, even with max_attempts=3."""
    job_id = make_job(ids(100))
    make_run(job_id, 0, wickson(existing=ids(100), max_ids=10), max_attempts=3).run()
    s = store.status(job_id)
    assert (s.deleted, s.failed) == (100, 0)


def test_a_401_stops_the_job(make_job, make_run, wickson, store, ids, api_key) -> None:
    """A 401 stops the job: unsent ids not attempted, the error (never the key) recorded."""
    job_id = make_job(ids(1_000))  # 10 batches, 0..3 dispatched
    result = make_run(job_id, 0, wickson(key="some-other-key")).run()
    assert result.verdict == "ok"
    s = store.status(job_id)
    assert s.state == "stopping"  # batches 1..3 are still in flight
    assert (s.deleted, s.not_attempted) == (0, 100 + 600)
    assert "INVALID_API_KEY" in (s.last_error or "")
    assert api_key not in (s.last_error or "")


def test_after_a_401_the_other_batches_are_skipped_at_claim(
    make_job, make_run, wickson, store, ids
) -> None:
    """Batches of a stopped job send nothing: their ids end not attempted, the job failed."""
    job_id = make_job(ids(1_000))
    make_run(job_id, 0, wickson(key="revoked")).run()
    good = wickson(existing=ids(1_000))
    verdicts = [make_run(job_id, i, good).run().verdict for i in (1, 2, 3)]
    assert verdicts == ["skipped"] * 3
    assert good.requests == []
    s = store.status(job_id)
    assert (s.state, s.not_attempted, s.done, s.total) == ("failed", 1_000, 1_000, 1_000)


def test_a_403_stops_the_job_too(make_job, make_run, wickson, store, ids) -> None:
    """A key without the delete capability stops the job like a 401."""
    job_id = make_job(ids(100))
    api = wickson()
    api.then(wickson.error(403, "INSUFFICIENT_PERMISSIONS"))
    make_run(job_id, 0, api).run()
    s = store.status(job_id)
    assert (s.state, s.not_attempted) == ("failed", 100)
    assert "INSUFFICIENT_PERMISSIONS" in (s.last_error or "")


def test_exhausted_attempts_fail_the_ids_with_the_error_and_the_count(
    make_job, make_run, wickson, store, ids
) -> None:
    """Exhausted attempts fail the ids with a reason naming the error and the attempt count."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))
    api.then(*[wickson.error(500, "PROCESSING_ERROR")] * 8)
    make_run(job_id, 0, api).run()
    assert len(api.requests) == 8
    s = store.status(job_id)
    assert (s.deleted, s.failed, s.requests) == (0, 10, 8)
    ((reason, count),) = s.failure_reasons.items()
    assert count == 10
    assert "PROCESSING_ERROR" in reason
    assert "8 attempts" in reason
    assert claim(store, job_id, 0, "later").verdict == "done"


def test_attempts_are_counted_across_runs(make_job, make_run, wickson, store, ids) -> None:
    """A batch's attempt budget spans its runs: a run after 7 spent attempts has one left."""
    job_id = make_job(ids(10))
    store.commit(job_id, 0, "earlier", BatchCommit(tries=7, final=True))
    api = wickson(existing=ids(10))
    api.then(wickson.error(500, "PROCESSING_ERROR"), wickson.error(500, "PROCESSING_ERROR"))
    make_run(job_id, 0, api).run()
    assert len(api.requests) == 1
    assert store.status(job_id).failed == 10


def test_a_429_pauses_the_fleet_limiter_then_the_batch_goes_through(
    make_job, make_run, wickson, limiter, store, clock, ids
) -> None:
    """A 429 pauses the fleet limiter for Retry-After; the run waits it out; not an attempt."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))
    api.then(wickson.error(429, "RATE_LIMIT_EXCEEDED", headers={"Retry-After": "2"}))
    paused_at = clock.now
    make_run(job_id, 0, api, max_attempts=1).run()
    paused_until = int(store.redis.hget(limiter.key, "paused_until")) / 1e6
    assert paused_until - paused_at >= 2.0
    assert sum(clock.sleeps) >= 2.0
    s = store.status(job_id)
    assert (s.deleted, s.rate_limited, s.requests) == (10, 1, 2)


def test_a_long_wait_defers_the_run_and_releases_the_lease(
    make_job, make_run, wickson, store, ids
) -> None:
    """A long wait raises Deferred and releases the lease: a new run's claim is 'ok'."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))
    api.then(wickson.error(429, "RATE_LIMIT_EXCEEDED", headers={"Retry-After": "60"}))
    with pytest.raises(Deferred) as info:
        make_run(job_id, 0, api, owner="first").run()
    assert info.value.countdown_s >= 60.0
    assert claim(store, job_id, 0, "second").verdict == "ok"
    assert store.status(job_id).rate_limited == 1


def test_a_long_backoff_after_a_500_defers_and_remembers_the_uncertainty(
    make_job, make_run, wickson, store, ids
) -> None:
    """A 5xx backoff too long to sleep defers; the next claim knows the batch is uncertain."""
    job_id = make_job(ids(10))
    api = wickson()
    api.then(wickson.error(500, "PROCESSING_ERROR"))
    run = make_run(
        job_id, 0, api, owner="first", backoff_base_s=10.0, backoff_cap_s=30.0,
        max_wait_in_task_s=0.0,
    )  # fmt: skip
    with pytest.raises(Deferred):
        run.run()
    again = claim(store, job_id, 0, "second")
    assert (again.verdict, again.uncertain, again.attempts) == ("ok", True, 1)


def test_a_batch_owned_by_another_run_is_deferred_without_sending(
    make_job, make_run, wickson, store, ids
) -> None:
    """While another run holds the lease, a duplicate defers for the lease's remainder."""
    job_id = make_job(ids(10))
    claim(store, job_id, 0, "owner")
    api = wickson(existing=ids(10))
    with pytest.raises(Deferred) as info:
        make_run(job_id, 0, api, owner="duplicate").run()
    assert 0 < info.value.countdown_s <= LEASE_S
    assert api.requests == []


def test_a_redelivered_finished_batch_sends_nothing(make_job, make_run, wickson, ids) -> None:
    """Running a batch that is done is a no-op that returns its unfinished successors."""
    job_id = make_job(ids(1_000))
    api = wickson(existing=ids(1_000))
    make_run(job_id, 0, api, owner="first").run()
    again = make_run(job_id, 0, api, owner="second").run()
    assert (again.verdict, again.successors) == ("done", [4])
    assert len(api.requests) == 1


def test_a_poison_batch_fails_its_ids_without_sending(
    make_job, make_run, wickson, store, ids
) -> None:
    """After max_deliveries runs that died, the batch's ids fail 'worker_crash_loop'."""
    job_id = make_job(ids(10))
    for n in range(5):
        claim(store, job_id, 0, f"crashed-{n}")
        store.release(job_id, 0, f"crashed-{n}")
    api = wickson(existing=ids(10))
    assert make_run(job_id, 0, api).run().verdict == "failed"
    assert api.requests == []
    ((reason, count),) = store.status(job_id).failure_reasons.items()
    assert count == 10
    assert reason.startswith("worker_crash_loop")


def test_a_batch_of_a_paused_job_parks_without_sending(
    make_job, make_run, wickson, store, ids
) -> None:
    """A paused job's batch is parked: nothing sent, nothing counted."""
    job_id = make_job(ids(10))
    store.pause(job_id)
    api = wickson(existing=ids(10))
    assert make_run(job_id, 0, api).run().verdict == "parked"
    assert api.requests == []
    assert store.status(job_id).done == 0


def test_a_batch_of_an_unknown_job_is_gone(make_run, wickson) -> None:
    """A message for a job that no longer exists does nothing."""
    api = wickson()
    assert make_run("expired-job", 0, api).run().verdict == "gone"
    assert api.requests == []


def test_a_run_resumes_where_an_earlier_one_stopped(
    make_job, make_run, wickson, store, ids
) -> None:
    """Ids an earlier run already resolved are not sent again."""
    job_id = make_job(ids(10))
    store.commit(job_id, 0, "earlier", BatchCommit(deleted=[0, 1, 2], final=True))
    api = wickson(existing=ids(10))
    make_run(job_id, 0, api).run()
    assert sent_ids(api) == [ids(10)[3:]]
    assert store.status(job_id).deleted == 10
