"""worker/store.py and its Lua scripts on fakeredis: staging, claims, commits, the dispatch
window, stopping, and the retention of finished jobs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import redis

from worker.errors import InputError, JobNotFound
from worker.store import STAGING_TTL_S, BatchCommit, JobStore

LEASE_S = 60.0


def claim(store: JobStore, job_id: str, index: int, owner: str = "t1", max_deliveries: int = 5):
    return store.claim(job_id, index, owner, lease_s=LEASE_S, max_deliveries=max_deliveries)


def finish_batch(store: JobStore, job_id: str, index: int, size: int = 100, owner: str = "t1"):
    """Commit every position of batch `index` deleted, ending the run."""
    return store.commit(
        job_id, index, owner, BatchCommit(deleted=list(range(size)), tries=1, final=True)
    )


def events_of(store: JobStore, job_id: str) -> list[dict]:
    events = [json.loads(e) for e in store.redis.lrange(store.keys.events, 0, -1)]
    return [e for e in events if e["job_id"] == job_id]


# -- staging and sealing -----------------------------------------------------------------


def test_create_makes_a_staging_job_that_expires_unless_sealed(store: JobStore) -> None:
    """A new job is 'staging' and its record has the staging TTL."""
    job_id, created = store.create(reason="gdpr")
    assert created
    assert store.status(job_id).state == "staging"
    assert 0 < store.redis.ttl(store.keys.job(job_id)) <= STAGING_TTL_S


def test_staged_keys_have_a_ttl_and_seal_removes_it(store: JobStore, ids) -> None:
    """Record, batches and failed ids expire while staging; sealing makes them permanent."""
    job_id, _ = store.create(reason=None)
    store.stage(job_id, 0, [ids(100), ids(5, "w-")], {"bad/id": "invalid_id"})
    staged = [store.keys.job(job_id, s) for s in (None, "batches", "failed")]
    assert all(0 < store.redis.ttl(k) <= STAGING_TTL_S for k in staged)
    assert store.seal(job_id, batches=2, valid=105, invalid=1, submitted=107) == "queued"
    assert [store.redis.ttl(k) for k in staged] == [-1, -1, -1]


def test_seal_records_the_counts_and_lists_the_job(store: JobStore, ids) -> None:
    """A sealed job is queued with its totals; invalid ids count as failed 'invalid_id'."""
    job_id, _ = store.create(reason="gdpr")
    new_invalid = store.stage(job_id, 0, [ids(100), ids(20, "w-")], {"a b": "invalid_id"})
    assert new_invalid == 1
    store.seal(job_id, batches=2, valid=120, invalid=1, submitted=130)
    s = store.status(job_id)
    assert (s.state, s.total, s.submitted, s.invalid) == ("queued", 121, 130, 1)
    assert (s.batches_total, s.batches_done, s.failed) == (2, 0, 1)
    assert s.failure_reasons == {"invalid_id": 1}
    assert s.reason == "gdpr"
    assert store.recent_jobs() == [job_id]


def test_stage_counts_only_invalid_ids_it_has_not_seen(store: JobStore) -> None:
    """Staging the same invalid id twice records it once."""
    job_id, _ = store.create(reason=None)
    assert store.stage(job_id, 0, [], {"x y": "invalid_id", "a/b": "invalid_id"}) == 2
    assert store.stage(job_id, 0, [], {"x y": "invalid_id", "c%": "invalid_id"}) == 1


def test_seal_of_a_job_with_only_invalid_ids_completes_it_at_once(store: JobStore) -> None:
    """Nothing to delete: sealing finishes the job (completed, one event, retention TTL)."""
    job_id, _ = store.create(reason=None)
    store.stage(job_id, 0, [], {"x y": "invalid_id", "a/b": "invalid_id"})
    assert store.seal(job_id, batches=0, valid=0, invalid=2, submitted=2) == "completed"
    s = store.status(job_id)
    assert (s.state, s.total, s.failed, s.done) == ("completed", 2, 2, 2)
    assert s.finished_at is not None
    assert len(events_of(store, job_id)) == 1
    assert 0 < store.redis.ttl(store.keys.job(job_id)) <= store.retention_s


def test_seal_twice_changes_nothing(store: JobStore, ids) -> None:
    """A second seal returns the state and does not reset or double the counters."""
    job_id, _ = store.create(reason=None)
    store.stage(job_id, 0, [ids(10)])
    store.seal(job_id, batches=1, valid=10, invalid=0, submitted=10)
    store.start(job_id)
    store.commit(job_id, 0, "t", BatchCommit(deleted=[0, 1]))
    assert store.seal(job_id, batches=1, valid=10, invalid=0, submitted=10) == "running"
    assert store.status(job_id).deleted == 2


def test_seal_of_an_expired_staging_job_is_an_input_error(store: JobStore) -> None:
    """A staging job that expired cannot be sealed: InputError, nothing created."""
    job_id, _ = store.create(reason=None)
    store.redis.delete(store.keys.job(job_id))
    with pytest.raises(InputError, match="expired"):
        store.seal(job_id, batches=0, valid=0, invalid=0, submitted=0)
    assert not store.exists(job_id)


def test_an_idempotency_key_returns_the_job_it_created(store: JobStore) -> None:
    """The same idempotency key twice gives the same job, created only the first time."""
    first = store.create(reason="r", idempotency_key="nightly-2025-03-09")
    second = store.create(reason="r", idempotency_key="nightly-2025-03-09")
    other = store.create(reason="r", idempotency_key="nightly-2025-03-10")
    assert first[1] is True
    assert second == (first[0], False)
    assert other[0] != first[0]


def test_an_idempotency_key_whose_job_expired_creates_a_new_job(store: JobStore) -> None:
    """If the key's job is gone (died while staging), the key makes a fresh job."""
    old, _ = store.create(reason="r", idempotency_key="k")
    store.redis.delete(store.keys.job(old))
    new, created = store.create(reason="r", idempotency_key="k")
    assert created
    assert new != old


def test_status_of_an_unknown_job_raises_job_not_found(store: JobStore) -> None:
    """An unknown job id raises JobNotFound (an InputError) naming the id."""
    with pytest.raises(JobNotFound, match="nope"):
        store.status("nope")
    assert not store.exists("nope")


# -- start and the dispatch window -------------------------------------------------------


def test_start_runs_the_job_and_returns_the_first_window(make_job, store: JobStore, ids) -> None:
    """start() moves the job to running and returns the first `window` (4) batches."""
    job_id = make_job(ids(1_000), start=False)
    assert store.start(job_id) == range(0, 4)
    s = store.status(job_id)
    assert s.state == "running"
    assert s.started_at is not None


def test_start_of_a_job_smaller_than_the_window_returns_all_batches(
    make_job, store: JobStore, ids
) -> None:
    """A 2-batch job starts both."""
    job_id = make_job(ids(150), start=False)
    assert store.start(job_id) == range(0, 2)


def test_start_redelivered_before_any_progress_returns_the_same_batches(
    make_job, store: JobStore, ids
) -> None:
    """A start run twice (first publish maybe lost) republishes the same window, no more."""
    job_id = make_job(ids(1_000), start=False)
    assert store.start(job_id) == store.start(job_id) == range(0, 4)
    finish_batch(store, job_id, 0)
    assert store.start(job_id) == range(0, 0)


def test_each_finished_batch_reserves_one_successor(make_job, store: JobStore, ids) -> None:
    """With the window full, completing a batch frees exactly one slot: the next batch."""
    job_id = make_job(ids(1_000))  # 10 batches, window 4: 0..3 in flight
    assert finish_batch(store, job_id, 2).successors == range(4, 5)
    assert finish_batch(store, job_id, 0).successors == range(5, 6)
    assert store.commit(job_id, 0, "t2", BatchCommit(deleted=[0])).successors == range(0, 0)


def test_the_window_never_reserves_past_the_last_batch(make_job, store: JobStore, ids) -> None:
    """Near the end, completions reserve nothing once every batch was dispatched."""
    job_id = make_job(ids(500))  # 5 batches: 0..3, then 4
    assert finish_batch(store, job_id, 0).successors == range(4, 5)
    for index in (1, 2, 3):
        assert finish_batch(store, job_id, index).successors == range(0, 0)


def test_a_redelivered_done_batch_returns_only_its_unfinished_successors(
    make_job, store: JobStore, ids
) -> None:
    """Claiming a done batch gives 'done' and the successor it reserved while unfinished."""
    job_id = make_job(ids(1_000))
    finish_batch(store, job_id, 0)  # reserved batch 4
    again = claim(store, job_id, 0, "redelivered")
    assert (again.verdict, again.extra) == ("done", "4")
    finish_batch(store, job_id, 4)
    assert claim(store, job_id, 0, "redelivered-2").extra == ""


# -- claims ------------------------------------------------------------------------------


def test_claim_ok_hands_over_the_batch(make_job, store: JobStore, ids) -> None:
    """An ok claim returns the ids, nothing resolved, no attempts, the job's reason."""
    job_id = make_job(ids(150), reason="cleanup")
    c = claim(store, job_id, 1)
    assert c.verdict == "ok"
    assert c.state == "running"
    assert c.ids == ids(150)[100:]
    assert c.resolved == "0" * 50
    assert (c.attempts, c.uncertain, c.extra, c.reason) == (0, False, "1", "cleanup")
    assert c.pending() == list(enumerate(ids(150)[100:]))


def test_claim_is_busy_for_another_token_while_the_lease_is_held(
    make_job, store: JobStore, ids
) -> None:
    """A second run gets 'busy' with the lease's milliseconds left; the holder gets 'ok'."""
    job_id = make_job(ids(10))
    claim(store, job_id, 0, "a")
    busy = claim(store, job_id, 0, "b")
    assert busy.verdict == "busy"
    assert 0 < int(busy.extra) <= LEASE_S * 1000
    assert claim(store, job_id, 0, "a").verdict == "ok"


def test_claim_after_the_lease_is_released_is_ok(make_job, store: JobStore, ids) -> None:
    """Releasing the lease (or a final commit) lets another run claim the batch."""
    job_id = make_job(ids(10))
    claim(store, job_id, 0, "a")
    store.release(job_id, 0, "b")  # not the holder: no effect
    assert claim(store, job_id, 0, "b").verdict == "busy"
    store.release(job_id, 0, "a")
    assert claim(store, job_id, 0, "b").verdict == "ok"
    store.commit(job_id, 0, "b", BatchCommit(deleted=[0], final=True))
    assert claim(store, job_id, 0, "c").verdict == "ok"


def test_claim_is_done_once_every_id_has_its_outcome(make_job, store: JobStore, ids) -> None:
    """When all ids are resolved, a claim says 'done' and hands over no ids."""
    job_id = make_job(ids(10))
    store.commit(job_id, 0, "x", BatchCommit(deleted=list(range(9))))
    assert claim(store, job_id, 0, "a").verdict == "ok"
    store.commit(job_id, 0, "a", BatchCommit(failed=[(9, "locked")], final=True))
    done = claim(store, job_id, 0, "b")
    assert done.verdict == "done"
    assert done.ids == []


def test_claim_is_poison_after_max_deliveries_runs_without_a_verdict(
    make_job, store: JobStore, ids
) -> None:
    """Runs that die (no final commit) are counted; past max_deliveries the batch is poison."""
    job_id = make_job(ids(10))
    for run in range(1, 4):
        c = claim(store, job_id, 0, f"run-{run}", max_deliveries=3)
        assert (c.verdict, c.extra) == ("ok", str(run))
        store.release(job_id, 0, f"run-{run}")  # the run crashed; its lease went away
    poison = claim(store, job_id, 0, "run-4", max_deliveries=3)
    assert (poison.verdict, poison.extra) == ("poison", "4")
    assert len(poison.ids) == 10


def test_a_final_commit_resets_the_crash_count(make_job, store: JobStore, ids) -> None:
    """A run that ends with a final commit is not a crash: the next claim counts from 1."""
    job_id = make_job(ids(10))
    claim(store, job_id, 0, "a")
    store.release(job_id, 0, "a")
    claim(store, job_id, 0, "b")
    store.commit(job_id, 0, "b", BatchCommit(final=True))
    assert claim(store, job_id, 0, "c", max_deliveries=1).verdict == "ok"


@pytest.mark.parametrize(("index", "job"), [(0, "no-such-job"), (7, None)])
def test_claim_is_gone_for_an_unknown_job_or_batch(
    make_job, store: JobStore, ids, index: int, job: str | None
) -> None:
    """An unknown job, or a batch index the job does not have, is 'gone'."""
    job_id = job or make_job(ids(10))
    assert claim(store, job_id, index).verdict == "gone"


def test_pending_excludes_resolved_positions(make_job, store: JobStore, ids) -> None:
    """A claim after a partial commit hands over only the ids without an outcome."""
    job_id = make_job(ids(12))
    store.commit(job_id, 0, "a", BatchCommit(deleted=[0, 3], absent=[5], failed=[(11, "x")]))
    c = claim(store, job_id, 0, "b")
    assert c.resolved == "100101000001"
    assert [pos for pos, _ in c.pending()] == [1, 2, 4, 6, 7, 8, 9, 10]
    assert all(media_id == ids(12)[pos] for pos, media_id in c.pending())


def test_a_second_claim_marks_the_batch_uncertain(make_job, store: JobStore, ids) -> None:
    """A batch claimed again after a run ended without a verdict may have been deleted."""
    job_id = make_job(ids(10))
    assert claim(store, job_id, 0, "a").uncertain is False
    store.release(job_id, 0, "a")
    assert claim(store, job_id, 0, "b").uncertain is True


def test_a_commit_can_mark_the_batch_uncertain(make_job, store: JobStore, ids) -> None:
    """A commit flagged uncertain (a 5xx or timeout was seen) is remembered for later runs."""
    job_id = make_job(ids(10))
    store.commit(job_id, 0, "a", BatchCommit(uncertain=True, tries=2, final=True))
    c = claim(store, job_id, 0, "b")
    assert (c.uncertain, c.attempts) == (True, 2)


def test_claim_carries_the_jobs_last_error(make_job, store: JobStore, ids) -> None:
    """The job's last error reaches later claims (why a stopped job stopped)."""
    job_id = make_job(ids(150))
    store.stop(job_id, "failed", "INVALID_API_KEY: 401")
    c = claim(store, job_id, 1)
    assert (c.verdict, c.state, c.job_error) == ("ok", "stopping", "INVALID_API_KEY: 401")


# -- commits -----------------------------------------------------------------------------


def test_commit_counts_each_outcome_and_records_the_details(make_job, store: JobStore, ids):
    """Deleted, absent, failed and skipped ids are counted and recorded where they belong."""
    job_id = make_job(ids(5))
    result = store.commit(
        job_id,
        0,
        "a",
        BatchCommit(
            deleted=[0],
            absent=[1],
            failed=[(2, "locked")],
            skipped=[(3, "job cancelled")],
            hd_vectors=2,
            ld_vectors=1,
            tries=3,
            requests=4,
            rate_limited=1,
            retries=2,
            operation_id="op-1",
            last_error="500 PROCESSING_ERROR",
        ),
    )
    assert (result.counted, result.batch_done, result.job_finished) == (4, False, False)
    s = store.status(job_id)
    assert (s.deleted, s.already_absent, s.failed, s.not_attempted) == (1, 1, 1, 1)
    assert (s.hd_vectors, s.ld_vectors) == (2, 1)
    assert (s.requests, s.rate_limited, s.retries) == (4, 1, 2)
    assert s.last_error == "500 PROCESSING_ERROR"
    assert s.failure_reasons == {"locked": 1}
    r, k = store.redis, store.keys
    assert r.smembers(k.job(job_id, "absent")) == {ids(5)[1].encode()}
    assert r.hget(k.job(job_id, "failed"), ids(5)[2]) == b"locked"
    assert r.hget(k.job(job_id, "skipped"), ids(5)[3]) == b"0|job cancelled"
    assert r.hget(k.job(job_id, "ops"), "0") == b"op-1"
    assert claim(store, job_id, 0).attempts == 3
    assert list(store.iter_failures(job_id)) == [(ids(5)[2], "locked")]


def test_a_replayed_commit_counts_nothing(make_job, store: JobStore, ids) -> None:
    """The same answer committed twice (redelivery) counts its ids and vectors once."""
    job_id = make_job(ids(10))
    commit = BatchCommit(deleted=[0, 1, 2], hd_vectors=6, ld_vectors=3)
    assert store.commit(job_id, 0, "a", commit).counted == 3
    assert store.commit(job_id, 0, "b", commit).counted == 0
    s = store.status(job_id)
    assert (s.deleted, s.hd_vectors, s.ld_vectors) == (3, 6, 3)


def test_an_id_keeps_its_first_outcome(make_job, store: JobStore, ids) -> None:
    """An id deleted once cannot later be counted failed (nor the reverse)."""
    job_id = make_job(ids(3))
    store.commit(job_id, 0, "a", BatchCommit(deleted=[0], failed=[(1, "x")]))
    store.commit(job_id, 0, "b", BatchCommit(deleted=[1], failed=[(0, "y")], absent=[0, 1]))
    s = store.status(job_id)
    assert (s.deleted, s.failed, s.already_absent) == (1, 1, 0)
    assert s.failure_reasons == {"x": 1}


def test_a_commit_with_a_position_out_of_range_is_refused_whole(
    make_job, store: JobStore, ids
) -> None:
    """A bad position raises and writes nothing, not even the valid positions."""
    job_id = make_job(ids(10))
    with pytest.raises(redis.ResponseError, match="position out of range"):
        store.commit(job_id, 0, "a", BatchCommit(deleted=[0, 1, 10]))
    assert store.status(job_id).deleted == 0
    assert claim(store, job_id, 0).resolved == "0" * 10


def test_a_commit_for_an_unknown_job_counts_nothing(store: JobStore) -> None:
    """Committing to a job that does not exist (expired) is a no-op."""
    result = store.commit("gone", 0, "a", BatchCommit(deleted=[0], final=True))
    assert (result.counted, result.batch_done, result.job_finished) == (0, False, False)


def test_the_last_batch_finishes_the_job_once(make_job, store: JobStore, ids) -> None:
    """Completing every batch completes the job exactly once, with one event."""
    job_id = make_job(ids(150))
    assert finish_batch(store, job_id, 0).job_finished is False
    assert finish_batch(store, job_id, 1, size=50).job_finished is True
    assert finish_batch(store, job_id, 1, size=50).job_finished is False
    s = store.status(job_id)
    assert (s.state, s.deleted, s.batches_done, s.batches_total) == ("completed", 150, 2, 2)
    assert s.finished_at is not None
    (event,) = events_of(store, job_id)
    assert event["state"] == "completed"


def test_a_finished_job_keeps_its_results_for_the_retention_period(
    make_job, store: JobStore, ids
) -> None:
    """When the job finishes, every one of its keys gets the retention TTL."""
    job_id = make_job(ids(3))
    store.commit(
        job_id,
        0,
        "a",
        BatchCommit(deleted=[0], absent=[1], failed=[(2, "x")], tries=1, operation_id="o",
                    uncertain=True),
    )  # fmt: skip
    keys = [k for k in store.keys.job_keys(job_id) if store.redis.exists(k)]
    assert len(keys) >= 8
    for key in keys:
        assert 0 < store.redis.ttl(key) <= store.retention_s, key


def test_a_running_job_has_no_ttl(make_job, store: JobStore, ids) -> None:
    """Until it finishes, a job's keys never expire (however long it runs)."""
    job_id = make_job(ids(150))
    finish_batch(store, job_id, 0)
    for key in store.keys.job_keys(job_id):
        assert store.redis.ttl(key) in (-1, -2), key


# -- stop --------------------------------------------------------------------------------


def test_stop_counts_undispatched_batches_not_attempted_at_once(
    make_job, store: JobStore, ids
) -> None:
    """Cancelling: batches never dispatched are not_attempted now; in-flight ones finish."""
    job_id = make_job(ids(950))  # 10 batches (the last of 50); 0..3 dispatched
    assert store.stop(job_id, "cancelled", "operator said stop") is True
    s = store.status(job_id)
    assert (s.state, s.not_attempted, s.batches_done) == ("stopping", 550, 6)
    assert s.finished_at is None
    assert s.last_error == "operator said stop"
    assert events_of(store, job_id) == []


def test_a_stopped_job_finishes_when_its_in_flight_batches_commit(
    make_job, store: JobStore, ids
) -> None:
    """The in-flight batches, skipped at claim, finish the job: it ends cancelled."""
    job_id = make_job(ids(950))
    finish_batch(store, job_id, 0)  # dispatches 4
    store.stop(job_id, "cancelled", "stop")
    finished = []
    for index in (1, 2, 3, 4):
        c = claim(store, job_id, index)
        assert c.state == "stopping"
        skipped = [(pos, "job cancelled") for pos, _ in c.pending()]
        result = store.commit(job_id, index, "t1", BatchCommit(skipped=skipped, final=True))
        finished.append(result.job_finished)
    assert finished == [False, False, False, True]
    s = store.status(job_id)
    assert (s.state, s.deleted, s.not_attempted, s.total, s.done) == (
        "cancelled", 100, 850, 950, 950,
    )  # fmt: skip
    assert (s.batches_done, s.batches_total) == (10, 10)
    assert len(events_of(store, job_id)) == 1


def test_stop_of_a_queued_job_finishes_it_with_nothing_attempted(
    make_job, store: JobStore, ids
) -> None:
    """A job stopped before it started: every id not attempted, finished now, start a no-op."""
    job_id = make_job(ids(250), start=False)
    assert store.stop(job_id, "failed", "bad key") is True
    s = store.status(job_id)
    assert (s.state, s.not_attempted, s.done, s.total) == ("failed", 250, 250, 250)
    assert s.finished_at is not None
    assert store.start(job_id) == range(0, 0)


@pytest.mark.parametrize("when", ["finished", "stopped", "staging", "unknown"])
def test_stop_does_nothing_to_a_finished_staging_or_unknown_job(
    make_job, store: JobStore, ids, when: str
) -> None:
    """stop() returns False for a job that already ended, is still staging, or is unknown."""
    if when == "staging":
        job_id, _ = store.create(reason=None)
    elif when == "unknown":
        job_id = "unknown"
    else:
        job_id = make_job(ids(10))
        if when == "finished":
            finish_batch(store, job_id, 0, size=10)
        else:
            store.stop(job_id, "cancelled", "first")
    before = store.status(job_id).state if when != "unknown" else None
    assert store.stop(job_id, "failed", "second") is False
    if before:
        assert store.status(job_id).state == before


def test_recent_jobs_lists_newest_first(
    make_job, store: JobStore, ids, monkeypatch: pytest.MonkeyPatch
) -> None:
    """recent_jobs() is ordered by creation time, newest first, and honours its limit."""
    now = [1_700_000_000.0]
    monkeypatch.setattr("worker.store.time", SimpleNamespace(time=lambda: now[0]))
    made = []
    for _ in range(3):
        made.append(make_job(ids(1)))
        now[0] += 1
    assert store.recent_jobs() == made[::-1]
    assert store.recent_jobs(limit=2) == made[:0:-1]


# -- pause and resume --------------------------------------------------------------------


def test_a_paused_job_parks_its_batches_and_resume_republishes_them(
    make_job, store: JobStore, ids
) -> None:
    """Claims of a paused job's batches park them (nothing is sent); resume returns them."""
    job_id = make_job(ids(1_000))
    assert store.pause(job_id) is True
    assert [claim(store, job_id, i).verdict for i in range(4)] == ["parked"] * 4
    assert sorted(store.resume(job_id)) == [0, 1, 2, 3]
    assert store.status(job_id).state == "running"
    assert claim(store, job_id, 0).verdict == "ok"


def test_resume_of_a_job_paused_before_it_started_asks_for_a_start(
    make_job, store: JobStore, ids
) -> None:
    """A job paused while queued resumes as queued: the caller sends the start task."""
    job_id = make_job(ids(10), start=False)
    store.pause(job_id)
    assert store.resume(job_id) == "start"
    assert store.start(job_id) == range(0, 1)


def test_resume_of_a_cancelled_job_reattempts_exactly_its_not_attempted_ids(
    make_job, store: JobStore, ids
) -> None:
    """Resuming a cancelled job re-attempts exactly its not-attempted ids, then completes."""
    job_id = make_job(ids(650))  # 7 batches (the last of 50), 0..3 dispatched
    finish_batch(store, job_id, 0)  # dispatches 4
    store.stop(job_id, "cancelled", "stop")
    store.commit(job_id, 1, "t", BatchCommit(deleted=list(range(40)), final=True))
    for index in (1, 2, 3, 4):
        pending = claim(store, job_id, index).pending()
        store.commit(job_id, index, "t", BatchCommit(skipped=[(p, "stop") for p, _ in pending]))
    assert store.status(job_id).state == "cancelled"
    todo = store.resume(job_id)
    assert sorted(todo) == [1, 2, 3, 4]  # window 4: batches 5 and 6 come as successors
    queue = list(todo)
    while queue:
        index = queue.pop(0)
        size = 50 if index == 6 else 100
        queue += finish_batch(store, job_id, index, size=size).successors
    s = store.status(job_id)
    assert (s.state, s.deleted, s.not_attempted, s.done, s.total) == (
        "completed", 650, 0, 650, 650,
    )  # fmt: skip


def test_resume_of_a_stopped_job_with_nothing_left_to_attempt_leaves_it_finished(
    make_job, store: JobStore, ids
) -> None:
    """Resuming a stopped job with nothing left to attempt leaves it finished."""
    job_id = make_job(ids(150))  # both batches dispatched at start
    store.stop(job_id, "cancelled", "stop")
    finish_batch(store, job_id, 0)
    finish_batch(store, job_id, 1, size=50)
    assert store.status(job_id).state == "cancelled"
    todo = store.resume(job_id)
    assert todo == []
    assert store.status(job_id).finished


def test_cancelling_a_paused_job_with_parked_batches_finishes_it(
    make_job, store: JobStore, ids
) -> None:
    """A paused job with parked batches, cancelled, finishes with every id not attempted."""
    job_id = make_job(ids(1_000))
    store.pause(job_id)
    for index in range(4):
        assert claim(store, job_id, index).verdict == "parked"
    assert store.stop(job_id, "cancelled", "operator cancel") is True
    for index in store.stalled(job_id, stale_s=0):  # the watchdog republishes lost batches
        pending = claim(store, job_id, index, f"recovered-{index}").pending()
        skipped = [(pos, "job stopped") for pos, _ in pending]
        store.commit(job_id, index, f"recovered-{index}", BatchCommit(skipped=skipped, final=True))
    s = store.status(job_id)
    assert (s.state, s.not_attempted, s.done) == ("cancelled", 1_000, 1_000)
