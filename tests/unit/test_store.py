"""worker/store.py and its Lua scripts on fakeredis: staging, taking batches under fenced
leases, commits, handing back, crash loops, stopping, pausing, lost writes, and the
retention of finished jobs. Time is the fake clock behind Redis' TIME."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import redis

from tests.unit.conftest import take
from worker.errors import InputError, JobNotFound
from worker.store import RESUME_DURABLE_MS, STAGING_TTL_S, BatchCommit, JobStore, NoBatch, Taken

LEASE_S = 60.0


def take_any(store: JobStore, owner: str = "run-1", **kwargs) -> Taken | NoBatch:
    """What `store.take` answers a run (rate 1000/s, lease 60 s, unless given)."""
    options = {"lease_s": LEASE_S, "max_runs": 5, "max_wait_s": 5.0, "rate": 1_000.0}
    options.update(kwargs)
    return store.take(owner, **options)


def deleted_all(taken: Taken, **kwargs) -> BatchCommit:
    """A commit giving every pending id of `taken` the outcome deleted."""
    return BatchCommit(deleted=[pos for pos, _ in taken.pending()], requests=1, **kwargs)


def finish(store: JobStore, taken: Taken):
    """The run holding `taken` deletes every pending id."""
    return store.commit(taken.job_id, taken.index, taken.token, deleted_all(taken))


def events_of(store: JobStore, job_id: str) -> list[dict]:
    events = [json.loads(e) for e in store.redis.lrange(store.keys.events, 0, -1)]
    return [e for e in events if e["job_id"] == job_id]


def recount(store: JobStore, job_id: str) -> dict[str, int]:
    """Outcomes counted id by id (iter_outcomes), pending included."""
    counts = dict.fromkeys(("deleted", "not_found", "failed", "not_attempted", "pending"), 0)
    for row in store.iter_outcomes(job_id):
        counts[row.outcome] += 1
    return counts


def assert_counters_match_recount(store: JobStore, job_id: str) -> None:
    s = store.status(job_id)
    counted = recount(store, job_id)
    assert (s.deleted, s.not_found, s.failed, s.not_attempted) == (
        counted["deleted"], counted["not_found"], counted["failed"], counted["not_attempted"],
    )  # fmt: skip
    assert s.done + counted["pending"] == s.total


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


def test_seal_records_the_counts_and_makes_the_job_runnable(store: JobStore, ids) -> None:
    """A sealed job is queued with its totals, listed, active and in its run queue; invalid
    ids count as failed 'invalid_id'."""
    job_id, _ = store.create(reason="gdpr", priority="low")
    new_invalid = store.stage(job_id, 0, [ids(100), ids(20, "w-")], {"a b": "invalid_id"})
    assert new_invalid == 1
    store.seal(job_id, batches=2, valid=120, invalid=1, submitted=130)
    s = store.status(job_id)
    assert (s.state, s.total, s.submitted, s.invalid) == ("queued", 121, 130, 1)
    assert (s.batches_total, s.batches_done, s.failed) == (2, 0, 1)
    assert s.failure_reasons == {"invalid_id": 1}
    assert (s.reason, s.priority) == ("gdpr", "low")
    assert store.recent_jobs() == [job_id]
    assert store.active_jobs() == [job_id]
    assert store.redis.zrange(store.keys.run_queue("low"), 0, -1) == [job_id.encode()]


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
    assert store.active_jobs() == []
    assert isinstance(take_any(store), NoBatch)


def test_seal_twice_changes_nothing(store: JobStore, ids) -> None:
    """A second seal returns the state and does not reset or double the counters."""
    job_id, _ = store.create(reason=None)
    store.stage(job_id, 0, [ids(10)])
    store.seal(job_id, batches=1, valid=10, invalid=0, submitted=10)
    taken = take(store)
    store.commit(job_id, 0, taken.token, BatchCommit(deleted=[0, 1]))
    assert store.seal(job_id, batches=1, valid=10, invalid=0, submitted=10) == "running"
    s = store.status(job_id)
    assert (s.deleted, s.batches_total) == (2, 1)


def test_seal_of_an_expired_staging_job_is_an_input_error(store: JobStore) -> None:
    """A staging job that expired cannot be sealed: InputError, nothing created."""
    job_id, _ = store.create(reason=None)
    store.redis.delete(store.keys.job(job_id))
    with pytest.raises(InputError, match="expired"):
        store.seal(job_id, batches=0, valid=0, invalid=0, submitted=0)
    assert not store.exists(job_id)


def test_a_staging_job_is_never_taken(store: JobStore, ids) -> None:
    """Batches of a job not sealed yet are not runnable: a producer still streaming."""
    job_id, _ = store.create(reason=None)
    store.stage(job_id, 0, [ids(10)])
    assert take_any(store) == NoBatch("idle")


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


# -- take --------------------------------------------------------------------------------


def test_take_hands_over_the_next_batch_and_starts_the_job(make_job, store: JobStore, ids):
    """The first take runs the job and hands over batch 0: its ids, nothing resolved, no
    attempts, never sent, the job's reason and key alias, a slot for now."""
    job_id = make_job(ids(150), reason="cleanup")
    t = take(store, "a")
    assert (t.job_id, t.index, t.token, t.ids) == (job_id, 0, "a", ids(150)[:100])
    assert (t.resolved, t.attempts, t.sent_before, t.runs) == ("0" * 100, 0, False, 0)
    assert (t.state, t.reason, t.key_alias, t.wait_s) == ("running", "cleanup", "default", 0)
    assert t.pending() == list(enumerate(ids(150)[:100]))
    s = store.status(job_id)
    assert s.state == "running"
    assert s.started_at is not None
    second = take(store, "b")
    assert (second.index, second.ids) == (1, ids(150)[100:])


def test_a_batch_held_under_a_lease_is_not_taken_again(make_job, store: JobStore, ids) -> None:
    """While a run holds the only batch, another take waits for the lease's end."""
    make_job(ids(10))
    take(store, "a")
    busy = take_any(store, "b")
    assert isinstance(busy, NoBatch)
    assert busy.kind == "wait"
    assert 0 < busy.wait_s <= LEASE_S


def test_take_is_idle_when_no_job_is_runnable(make_job, store: JobStore, ids) -> None:
    """No job, or only finished ones: 'idle' (the drain run ends)."""
    assert take_any(store) == NoBatch("idle")
    make_job(ids(10))
    finish(store, take(store))
    assert take_any(store) == NoBatch("idle")


def test_take_serves_high_before_normal_before_low(make_job, store: JobStore, ids) -> None:
    """Whatever the order of submission, high jobs' batches go first, then normal, then low."""
    low = make_job(ids(200, "l-"), priority="low")
    normal = make_job(ids(200, "n-"), priority="normal")
    high = make_job(ids(200, "h-"), priority="high")
    order = [take(store, f"t{k}").job_id for k in range(6)]
    assert order == [high, high, normal, normal, low, low]


def test_take_can_be_limited_to_some_priorities(make_job, store: JobStore, ids) -> None:
    """A run asked for low work only takes low batches."""
    make_job(ids(10, "h-"), priority="high")
    low = make_job(ids(10, "l-"), priority="low")
    got = take_any(store, priorities=["low"])
    assert isinstance(got, Taken)
    assert got.job_id == low


def test_a_small_job_behind_a_big_one_of_the_same_priority_gets_every_other_batch(
    make_job, store: JobStore, ids
) -> None:
    """Round robin: a small job submitted while a big one runs is served at once and in
    turn, not after the big job's backlog."""
    big = make_job(ids(2_000, "b-"))
    for k in range(3):
        assert take(store, f"early-{k}").job_id == big
    small = make_job(ids(300, "s-"))
    order = [take(store, f"t{k}").job_id for k in range(6)]
    assert order == [small, big, small, big, small, big]
    assert isinstance(take(store, "after"), Taken)  # the big one goes on alone


def test_a_paused_job_is_skipped_and_resume_makes_it_takeable(make_job, store, ids) -> None:
    """Take skips a paused job (serving the others); resumed, its batches are taken again."""
    paused = make_job(ids(300, "p-"))
    other = make_job(ids(100, "o-"))
    assert store.pause(paused) is True
    assert take(store, "a").job_id == other
    assert take_any(store, "b").kind == "wait"  # other's batch is held; paused is skipped
    assert store.resume(paused) is True
    assert store.status(paused).state == "queued"
    t = take(store, "c")
    assert (t.job_id, t.index) == (paused, 0)


def test_take_of_a_lone_paused_job_is_idle(make_job, store: JobStore, ids) -> None:
    """Only a paused job: nothing is runnable (no drain run keeps spinning)."""
    job_id = make_job(ids(10))
    store.pause(job_id)
    assert take_any(store) == NoBatch("idle")


def test_take_reserves_send_slots_from_the_fleet_limiter(make_job, store: JobStore, ids):
    """At 2 requests/s the first batch may be sent now, the next ones 0.5 s apart."""
    make_job(ids(1_000))
    waits = [take_any(store, f"t{k}", rate=2.0).wait_s for k in range(3)]
    assert waits == pytest.approx([0.0, 0.5, 1.0], abs=0.01)


def test_a_slot_further_than_max_wait_is_refused_and_nothing_is_taken(
    make_job, store: JobStore, ids
) -> None:
    """At 1 request/s with max_wait 0.5 s, the second take waits (slot in ~1 s) and takes
    nothing: no batch is leased without a slot."""
    job_id = make_job(ids(300))
    assert isinstance(take_any(store, "a", rate=1.0, max_wait_s=0.5), Taken)
    refused = take_any(store, "b", rate=1.0, max_wait_s=0.5)
    assert refused.kind == "wait"
    assert 0.5 < refused.wait_s <= 1.0
    assert int(store.redis.hget(store.keys.job(job_id), "next")) == 1


def test_a_jobs_own_rate_holds_it_below_the_fleets(make_job, store, ids, clock) -> None:
    """With its own rate of 4/s, a job's batches come 0.25 s apart at a fleet rate of 1000."""
    job_id = make_job(ids(1_000))
    store.set_job_rate(job_id, 4.0)
    waits = [take_any(store, f"t{k}").wait_s for k in range(3)]
    assert waits == pytest.approx([0.0, 0.25, 0.5], abs=0.01)
    store.set_job_rate(job_id, None)
    clock.advance(1.0)
    assert [take_any(store, f"u{k}").wait_s for k in range(2)] == pytest.approx([0, 0.001])


def test_a_ticket_beyond_the_fleets_drains_is_replaced(make_job, store, ids) -> None:
    """A drain run whose ticket lapsed, with the fleet's drains all alive, must end."""
    make_job(ids(300))
    assert isinstance(take_any(store, "a", ticket="t1"), Taken)
    assert take_any(store, "b", ticket="t2") == NoBatch("replaced")
    assert isinstance(take_any(store, "c", ticket="t1"), Taken)


def test_pending_excludes_resolved_positions(make_job, store: JobStore, ids) -> None:
    """A batch handed back after a partial commit hands over only the ids without an
    outcome; the resolved mask says which."""
    job_id = make_job(ids(12))
    t = take(store, "a")
    store.commit(job_id, 0, "a", BatchCommit(
        deleted=[0, 3], not_found=[5], failed=[(11, "x")], release="later",
    ))  # fmt: skip
    again = take(store, "b")
    assert again.resolved == "100101000001"
    assert [pos for pos, _ in again.pending()] == [1, 2, 4, 6, 7, 8, 9, 10]
    assert all(media_id == ids(12)[pos] for pos, media_id in again.pending())
    assert (again.sent_before, again.runs) == (True, 0)
    assert t.index == again.index


# -- fencing -----------------------------------------------------------------------------


def test_a_lapsed_lease_is_taken_over_as_a_possibly_sent_crash(
    make_job, store: JobStore, ids, clock
) -> None:
    """Past its lease a batch is taken by another run, which knows it may have been sent
    (sent_before) and counts the lapse as a crash (runs)."""
    make_job(ids(10))
    first = take(store, "a")
    clock.advance(LEASE_S + 0.1)
    second = take(store, "b")
    assert (second.index, second.sent_before, second.runs) == (first.index, True, 1)


def test_a_run_whose_lease_lapsed_commits_nothing(make_job, store, ids, clock) -> None:
    """After the take-over, the old run's commit is refused whole ('lost') and its renew
    fails; the new holder commits."""
    job_id = make_job(ids(10))
    take(store, "a")
    clock.advance(LEASE_S + 0.1)
    take(store, "b")
    lost = store.commit(job_id, 0, "a", BatchCommit(
        failed=[(0, "x")], not_found=[1], requests=1, attempts=1, release="later",
    ))  # fmt: skip
    assert (lost.lost, lost.counted, lost.batch_done) == (True, 0, False)
    assert store.renew(job_id, 0, "a", lease_s=LEASE_S, alias="default").held is False
    s = store.status(job_id)
    assert (s.failed, s.not_found, s.requests) == (0, 0, 0)
    assert store.redis.hget(store.keys.job(job_id, "attempts"), 0) is None
    ok = store.commit(job_id, 0, "b", BatchCommit(deleted=list(range(10))))
    assert (ok.lost, ok.counted, ok.batch_done, ok.job_finished) == (False, 10, True, True)


def test_a_lapsed_run_cannot_hand_back_the_batch_it_lost(make_job, store, ids, clock) -> None:
    """A lapsed run's release is refused: the new holder keeps its lease."""
    job_id = make_job(ids(10))
    take(store, "a")
    clock.advance(LEASE_S + 0.1)
    take(store, "b")
    store.commit(job_id, 0, "a", BatchCommit(release="later"))
    assert take_any(store, "c").kind == "wait"
    assert store.renew(job_id, 0, "b", lease_s=LEASE_S, alias="default").held is True


def test_a_commit_without_the_lease_is_lost(make_job, store: JobStore, ids) -> None:
    """A token that never took the batch (or one it handed back) commits nothing."""
    job_id = make_job(ids(10))
    t = take(store, "a")
    assert store.commit(job_id, 0, "stranger", BatchCommit(deleted=[0])).lost
    store.commit(job_id, 0, "a", BatchCommit(release="later"))
    assert store.commit(job_id, 0, t.token, BatchCommit(deleted=[0])).lost
    assert store.status(job_id).deleted == 0


def test_renewing_pushes_the_lease_back(make_job, store: JobStore, ids, clock) -> None:
    """A run that renews before each request keeps its batch past the first lease."""
    job_id = make_job(ids(10))
    take(store, "a")
    for _ in range(3):
        clock.advance(LEASE_S - 1)
        renewal = store.renew(job_id, 0, "a", lease_s=LEASE_S, alias="default")
        assert (renewal.held, renewal.state, renewal.pause_s) == (True, "running", 0)
    assert take_any(store, "b").kind == "wait"
    assert not store.commit(job_id, 0, "a", BatchCommit(deleted=list(range(10)))).lost


def test_renew_reports_a_pause_a_stop_and_the_fleets_429_pause(
    make_job, store, ids, limiter
) -> None:
    """The renewal carries the job's state and what is left of the fleet's 429 pause."""
    job_id = make_job(ids(10))
    take(store, "a")
    limiter.pause(3.0)
    renewal = store.renew(job_id, 0, "a", lease_s=LEASE_S, alias="default")
    assert renewal.pause_s == pytest.approx(3.0, abs=0.01)
    store.pause(job_id)
    assert store.renew(job_id, 0, "a", lease_s=LEASE_S, alias="default").state == "paused"
    store.stop(job_id, "cancelled", "CANCELLED: test")
    assert store.renew(job_id, 0, "a", lease_s=LEASE_S, alias="default").state == "stopping"


# -- commits -----------------------------------------------------------------------------


def test_commit_counts_each_outcome_and_records_the_details(make_job, store, ids) -> None:
    """Deleted, not_found, failed and not_attempted ids are counted and recorded where they
    belong, with the request counters and the last error."""
    job_id = make_job(ids(5))
    take(store, "a")
    result = store.commit(job_id, 0, "a", BatchCommit(
        deleted=[0], not_found=[1], failed=[(2, "locked")], not_attempted=[(3, "job cancelled")],
        hd=2, ld=1, attempts=3, requests=4, rate_limited=1, retries=2, operation_id="op-1",
        last_error="500 PROCESSING_ERROR",
    ))  # fmt: skip
    assert (result.lost, result.counted, result.batch_done, result.job_finished) == (
        False, 4, False, False,
    )  # fmt: skip
    s = store.status(job_id)
    assert (s.deleted, s.not_found, s.failed, s.not_attempted) == (1, 1, 1, 1)
    assert (s.hd_vectors, s.ld_vectors) == (2, 1)
    assert (s.requests, s.rate_limited, s.retries) == (4, 1, 2)
    assert s.last_error == "500 PROCESSING_ERROR"
    assert s.failure_reasons == {"locked": 1}
    r, k = store.redis, store.keys
    assert r.smembers(k.job(job_id, "not_found")) == {ids(5)[1].encode()}
    assert r.hget(k.job(job_id, "failed"), ids(5)[2]) == b"locked"
    assert r.hget(k.job(job_id, "not_attempted"), ids(5)[3]) == b"0|job cancelled"
    assert r.hget(k.job(job_id, "ops"), "0") == b"op-1"
    assert r.hget(k.job(job_id, "attempts"), "0") == b"3"
    assert list(store.iter_failures(job_id)) == [(ids(5)[2], "locked")]
    assert [row.outcome for row in store.iter_outcomes(job_id)] == [
        "deleted", "not_found", "failed", "not_attempted", "pending",
    ]  # fmt: skip
    assert_counters_match_recount(store, job_id)


def test_not_found_is_its_own_outcome_never_a_failure(make_job, store, ids) -> None:
    """Ids the API could not find count not_found: not failed, no failure reason."""
    job_id = make_job(ids(3))
    take(store, "a")
    store.commit(job_id, 0, "a", BatchCommit(not_found=[0, 1, 2]))
    s = store.status(job_id)
    assert (s.state, s.not_found, s.failed, s.failure_reasons) == ("completed", 3, 0, {})
    assert list(store.iter_failures(job_id)) == []


def test_a_replayed_commit_counts_nothing(make_job, store: JobStore, ids) -> None:
    """The same answer committed twice (a retried round trip) counts its ids and vectors
    once."""
    job_id = make_job(ids(10))
    take(store, "a")
    commit = BatchCommit(deleted=[0, 1, 2], hd=6, ld=3)
    assert store.commit(job_id, 0, "a", commit).counted == 3
    assert store.commit(job_id, 0, "a", commit).counted == 0
    s = store.status(job_id)
    assert (s.deleted, s.hd_vectors, s.ld_vectors) == (3, 6, 3)


def test_an_id_keeps_its_first_outcome(make_job, store: JobStore, ids) -> None:
    """An id deleted once cannot later be counted failed or not found (nor the reverse)."""
    job_id = make_job(ids(3))
    take(store, "a")
    store.commit(job_id, 0, "a", BatchCommit(deleted=[0], failed=[(1, "x")]))
    store.commit(job_id, 0, "a", BatchCommit(deleted=[1], failed=[(0, "y")], not_found=[0, 1]))
    s = store.status(job_id)
    assert (s.deleted, s.failed, s.not_found) == (1, 1, 0)
    assert s.failure_reasons == {"x": 1}
    assert_counters_match_recount(store, job_id)


def test_a_commit_with_a_position_out_of_range_is_refused_whole(make_job, store, ids) -> None:
    """A bad position raises and writes nothing, not even the valid positions."""
    job_id = make_job(ids(10))
    take(store, "a")
    with pytest.raises(redis.ResponseError, match="position out of range"):
        store.commit(job_id, 0, "a", BatchCommit(deleted=[0, 1, 10]))
    assert store.status(job_id).deleted == 0
    store.commit(job_id, 0, "a", BatchCommit(release="later"))
    assert take(store, "b").resolved == "0" * 10


def test_a_commit_for_an_unknown_job_is_lost(store: JobStore) -> None:
    """Committing to a job that does not exist (expired) writes nothing."""
    result = store.commit("gone", 0, "a", BatchCommit(deleted=[0]))
    assert (result.lost, result.counted, result.state) == (True, 0, "gone")
    assert store.redis.keys("*") == []


def test_the_last_batch_finishes_the_job_once(make_job, store: JobStore, ids) -> None:
    """Completing every batch completes the job exactly once, with one event; it leaves the
    run queue and the active jobs."""
    job_id = make_job(ids(150))
    first, second = take(store, "a"), take(store, "b")
    assert finish(store, first).job_finished is False
    done = finish(store, second)
    assert (done.batch_done, done.job_finished, done.state) == (True, True, "completed")
    assert finish(store, second).lost  # the batch is done: its lease went with it
    s = store.status(job_id)
    assert (s.state, s.deleted, s.batches_done, s.batches_total) == ("completed", 150, 2, 2)
    assert s.finished_at is not None
    (event,) = events_of(store, job_id)
    assert event["state"] == "completed"
    assert store.active_jobs() == []
    assert store.redis.zcard(store.keys.run_queue("normal")) == 0


def test_a_finished_job_keeps_its_results_for_the_retention_period(make_job, store, ids):
    """When the job finishes, every one of its keys gets the retention TTL."""
    job_id = make_job(ids(3))
    take(store, "a")
    store.commit(job_id, 0, "a", BatchCommit(
        deleted=[0], not_found=[1], failed=[(2, "x")], attempts=1, operation_id="o",
    ))  # fmt: skip
    keys = [k for k in store.keys.job_keys(job_id) if store.redis.exists(k)]
    assert len(keys) >= 8
    for key in keys:
        assert 0 < store.redis.ttl(key) <= store.retention_s, key


def test_a_running_job_has_no_ttl(make_job, store: JobStore, ids) -> None:
    """Until it finishes, a job's keys never expire (however long it runs)."""
    job_id = make_job(ids(150))
    finish(store, take(store))
    take(store, "b")
    for key in store.keys.job_keys(job_id):
        assert store.redis.ttl(key) in (-1, -2), key


# -- handing back ------------------------------------------------------------------------


def test_a_handed_back_batch_is_takeable_only_after_its_not_before_time(
    make_job, store, ids, clock
) -> None:
    """Handed back for 30 s: not takeable before (take says when), takeable after, with
    the attempts spent and the knowledge that it may have been sent."""
    job_id = make_job(ids(10))
    take(store, "a")
    store.commit(job_id, 0, "a", BatchCommit(attempts=2, release="later", later_ms=30_000))
    waiting = take_any(store, "b")
    assert waiting.kind == "wait"
    assert waiting.wait_s == pytest.approx(30.0, abs=0.01)
    clock.advance(30.01)
    again = take(store, "c")
    assert (again.index, again.attempts, again.sent_before, again.runs) == (0, 2, True, 0)


def test_a_handed_back_batch_is_not_a_crash(make_job, store, ids, clock) -> None:
    """Hand-backs do not count toward the crash loop, however many."""
    job_id = make_job(ids(10))
    for k in range(8):
        take(store, f"r{k}")
        store.commit(job_id, 0, f"r{k}", BatchCommit(release="later"))
    t = take(store, "last")
    assert t.runs == 0
    assert store.status(job_id).failed == 0


# -- crash loops -------------------------------------------------------------------------


def test_a_batch_whose_runs_keep_dying_fails_as_a_crash_loop(make_job, store, ids, clock):
    """Each lapse is counted; past max_runs lapses the batch's ids fail worker_crash_loop
    (they may be deleted: never sent again), without being handed to a run."""
    job_id = make_job(ids(10))
    for run in range(6):
        t = take_any(store, f"run-{run}", max_runs=5)
        assert isinstance(t, Taken)
        assert t.runs == run
        clock.advance(LEASE_S + 0.1)
    assert isinstance(take_any(store, "run-6", max_runs=5), NoBatch)
    assert take_any(store, "run-7", max_runs=5) == NoBatch("idle")
    s = store.status(job_id)
    assert (s.state, s.failed, s.done) == ("completed", 10, 10)
    assert s.failure_reasons == {
        "worker_crash_loop: 6 runs ended without a verdict (the API may have deleted some)": 10
    }
    assert_counters_match_recount(store, job_id)


def test_a_batch_that_lapsed_then_finished_forgets_its_crash_count(
    make_job, store, ids, clock
) -> None:
    """A batch that lapsed then finished is done: its crash count goes with it."""
    job_id = make_job(ids(10))
    take(store, "a")
    clock.advance(LEASE_S + 0.1)
    finish(store, take(store, "b"))
    assert store.redis.hget(store.keys.job(job_id, "runs"), 0) is None
    assert store.status(job_id).state == "completed"


# -- stop --------------------------------------------------------------------------------


def test_stop_counts_batches_never_taken_not_attempted_at_once(make_job, store, ids) -> None:
    """Cancelling: batches never taken are not_attempted now; taken ones are still open."""
    job_id = make_job(ids(950))  # 10 batches, the last of 50
    take(store, "a")
    take(store, "b")
    assert store.stop(job_id, "cancelled", "operator said stop") is True
    s = store.status(job_id)
    assert (s.state, s.not_attempted, s.batches_done) == ("stopping", 750, 8)
    assert s.finished_at is None
    assert s.last_error == "operator said stop"
    assert events_of(store, job_id) == []
    rows = {row.media_id: row for row in store.iter_outcomes(job_id)}
    assert rows[ids(950)[949]].outcome == "not_attempted"
    assert rows[ids(950)[949]].reason == "job stopped: operator said stop"
    assert rows[ids(950)[0]].outcome == "pending"
    assert_counters_match_recount(store, job_id)


def test_a_stopped_job_finishes_when_its_taken_batches_commit(make_job, store, ids) -> None:
    """The runs holding batches of a stopped job commit; the last one finishes it cancelled."""
    job_id = make_job(ids(950))
    finish(store, take(store, "a"))
    held = [take(store, f"r{k}") for k in range(3)]
    store.stop(job_id, "cancelled", "stop")
    finished = []
    for t in held:
        skipped = [(pos, "job stopped") for pos, _ in t.pending()]
        result = store.commit(job_id, t.index, t.token, BatchCommit(not_attempted=skipped))
        finished.append(result.job_finished)
    assert finished == [False, False, True]
    s = store.status(job_id)
    assert (s.state, s.deleted, s.not_attempted, s.total, s.done) == (
        "cancelled", 100, 850, 950, 950,
    )  # fmt: skip
    assert (s.batches_done, s.batches_total) == (10, 10)
    assert len(events_of(store, job_id)) == 1
    assert_counters_match_recount(store, job_id)


def test_stop_of_a_queued_job_finishes_it_with_nothing_attempted(make_job, store, ids) -> None:
    """A job stopped before any take: every id not attempted, finished now, never taken."""
    job_id = make_job(ids(250))
    assert store.stop(job_id, "failed", "bad key") is True
    s = store.status(job_id)
    assert (s.state, s.not_attempted, s.done, s.total) == ("failed", 250, 250, 250)
    assert s.finished_at is not None
    assert take_any(store) == NoBatch("idle")


def test_a_stopping_job_takes_a_possibly_sent_batch_to_confirm_it(
    make_job, store, ids, clock
) -> None:
    """A batch handed back after a request may have been sent: the stop does not guess it
    not_attempted; a run takes it (state 'stopping') to confirm what became of its ids."""
    job_id = make_job(ids(150))
    t = take(store, "a")
    store.commit(job_id, 0, "a", BatchCommit(attempts=1, release="later", later_ms=1_000))
    store.stop(job_id, "cancelled", "CANCELLED: test")
    s = store.status(job_id)
    assert (s.state, s.not_attempted) == ("stopping", 50)
    clock.advance(1.1)
    again = take(store, "b")
    assert (again.index, again.state, again.sent_before) == (t.index, "stopping", True)
    assert again.stop_reason == "job stopped: CANCELLED: test"
    store.commit(job_id, 0, "b", BatchCommit(not_found=list(range(100))))
    s = store.status(job_id)
    assert (s.state, s.not_found, s.not_attempted) == ("cancelled", 100, 50)


def test_a_stopping_job_takes_over_a_lapsed_batch_to_confirm_it(
    make_job, store, ids, clock
) -> None:
    """A run that died holding a batch of a stopped job: the batch is taken over to
    confirm (never counted not_attempted unseen)."""
    job_id = make_job(ids(100))
    take(store, "a")
    store.stop(job_id, "cancelled", "CANCELLED: test")
    clock.advance(LEASE_S + 0.1)
    again = take(store, "b")
    assert (again.state, again.sent_before, again.runs) == ("stopping", True, 1)
    assert store.status(job_id).not_attempted == 0


def test_a_reopened_batch_never_sent_is_closed_not_attempted_by_a_stop(
    make_job, store, ids
) -> None:
    """A batch waiting to be taken that no request was ever sent for (reopened by resume)
    ends not_attempted at the stop, without a run."""
    job_id = make_job(ids(100))
    store.stop(job_id, "cancelled", "first")
    assert store.resume(job_id)
    assert store.stop(job_id, "cancelled", "second") is True
    s = store.status(job_id)
    assert (s.state, s.not_attempted) == ("cancelled", 100)
    assert take_any(store) == NoBatch("idle")


def test_a_batch_handed_back_unsent_is_closed_not_attempted_by_a_stop(make_job, store, ids) -> None:
    """A run that hands its batch back before any request says so (unsent): the stop
    counts its ids not_attempted at once; handed back after a request, it is confirmed."""
    job_id = make_job(ids(200))
    first, second = take(store, "a"), take(store, "b")
    store.commit(job_id, first.index, "a", BatchCommit(release="later", unsent=True))
    store.commit(job_id, second.index, "b", BatchCommit(release="later", requests=1))
    store.stop(job_id, "cancelled", "CANCELLED: test")
    s = store.status(job_id)
    assert (s.state, s.not_attempted) == ("stopping", 100)
    rows = {r.media_id: r.outcome for r in store.iter_outcomes(job_id)}
    assert (rows[ids(200)[0]], rows[ids(200)[100]]) == ("not_attempted", "pending")
    again = take(store, "c")
    assert (again.index, again.sent_before) == (second.index, True)


def test_a_batch_handed_back_unsent_is_taken_again_as_never_sent(make_job, store, ids) -> None:
    """Handed back unsent, the batch's next take does not say it may have been sent."""
    job_id = make_job(ids(10))
    take(store, "a")
    store.commit(job_id, 0, "a", BatchCommit(release="later", unsent=True))
    assert take(store, "b").sent_before is False


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
            finish(store, take(store))
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


def test_pause_only_pauses_a_queued_or_running_job(make_job, store, ids) -> None:
    """Pause of a finished or already paused job is refused."""
    job_id = make_job(ids(10))
    assert store.pause(job_id) is True
    assert store.pause(job_id) is False
    store.resume(job_id)
    finish(store, take(store))
    assert store.pause(job_id) is False


def test_resume_of_a_job_paused_while_running_makes_it_running(make_job, store, ids) -> None:
    """A running job paused and resumed is running again, and runnable."""
    job_id = make_job(ids(300))
    take(store, "a")
    store.pause(job_id)
    assert store.resume(job_id) is True
    assert store.status(job_id).state == "running"
    assert take(store, "b").index == 1


def test_resume_of_a_cancelled_job_reattempts_exactly_its_not_attempted_ids(
    make_job, store, ids, clock
) -> None:
    """Resuming a cancelled job re-attempts exactly its not-attempted ids, then completes."""
    job_id = make_job(ids(650))  # 7 batches, the last of 50
    finish(store, take(store, "a"))
    partial = take(store, "b")
    store.stop(job_id, "cancelled", "stop")
    store.commit(job_id, 1, "b", BatchCommit(
        deleted=list(range(40)), not_attempted=[(p, "stop") for p in range(40, 100)],
    ))  # fmt: skip
    assert store.status(job_id).state == "cancelled"
    assert store.status(job_id).not_attempted == 510
    assert store.resume(job_id) is True
    s = store.status(job_id)
    assert (s.state, s.not_attempted, s.deleted, s.finished_at) == ("running", 0, 140, None)
    clock.advance(RESUME_DURABLE_MS / 1000)  # a resumed finished job waits to be durable
    seen = []
    while isinstance(t := take_any(store, f"r{len(seen)}"), Taken):
        seen.append((t.index, len(t.pending())))
        finish(store, t)
    assert sorted(seen) == [(1, 60), (2, 100), (3, 100), (4, 100), (5, 100), (6, 50)]
    assert partial.index == 1
    s = store.status(job_id)
    assert (s.state, s.deleted, s.not_attempted, s.done, s.total) == (
        "completed", 650, 0, 650, 650,
    )  # fmt: skip
    assert [e["state"] for e in events_of(store, job_id)] == ["completed", "cancelled"]


def test_resume_of_a_stopped_job_with_nothing_left_to_attempt_is_refused(
    make_job, store, ids
) -> None:
    """A stopped job whose ids all got an answer stays finished: nothing to resume."""
    job_id = make_job(ids(150))
    held = [take(store, "a"), take(store, "b")]
    store.stop(job_id, "cancelled", "stop")
    for t in held:
        finish(store, t)
    assert store.status(job_id).state == "cancelled"
    assert store.resume(job_id) is False
    assert store.status(job_id).finished


def test_cancelling_a_paused_job_counts_never_taken_batches_at_once(
    make_job, store, ids, clock
) -> None:
    """A paused job with a batch taken, cancelled: the rest are not_attempted at once; the
    taken batch is confirmed by a run (the stop puts the job back in its run queue)."""
    job_id = make_job(ids(1_000))
    take(store, "a")
    store.pause(job_id)
    assert store.stop(job_id, "cancelled", "operator cancel") is True
    assert store.status(job_id).not_attempted == 900
    clock.advance(LEASE_S + 0.1)
    t = take(store, "b")
    assert (t.state, t.index, t.sent_before) == ("stopping", 0, True)
    store.commit(job_id, 0, "b", BatchCommit(deleted=list(range(100))))
    s = store.status(job_id)
    assert (s.state, s.deleted, s.not_attempted, s.done) == ("cancelled", 100, 900, 1_000)


# -- lost writes -------------------------------------------------------------------------


def test_lost_writes_mark_the_batches_past_the_frontier_possibly_sent(
    make_job, store, ids, clock
) -> None:
    """After Redis lost its last writes, batches past a job's frontier may have been sent
    and every lease may be stale: a stop confirms them all (runs take them) instead of
    counting them not_attempted, and no old lease holder commits."""
    job_id = make_job(ids(1_000))
    take(store, "a")
    assert store.scripts["lost_writes"](args=[store.keys.prefix, 3]) == 1
    sent = store.redis.smembers(store.keys.job(job_id, "sent"))
    assert sent == {b"0", b"1", b"2", b"3"}
    store.stop(job_id, "cancelled", "CANCELLED: test")
    s = store.status(job_id)
    assert (s.state, s.not_attempted) == ("stopping", 600)  # batches 4..9 never taken
    confirmed = []
    while isinstance(t := take_any(store, f"r{len(confirmed)}"), Taken):
        assert (t.state, t.sent_before) == ("stopping", True)
        confirmed.append(t.index)
        store.commit(job_id, t.index, t.token, BatchCommit(not_found=list(range(100))))
    # Batch 0's lease was void too (the loss may have restored a replaced run's lease):
    # it is confirmed at once, and its old holder commits nothing.
    assert confirmed == [0, 1, 2, 3]
    assert store.commit(job_id, 0, "a", BatchCommit(deleted=list(range(100)))).lost
    s = store.status(job_id)
    assert (s.state, s.deleted, s.not_found, s.not_attempted) == ("cancelled", 0, 400, 600)
    assert_counters_match_recount(store, job_id)


def test_lost_writes_leave_finished_jobs_and_jobs_fully_taken_alone(make_job, store, ids) -> None:
    """Only unfinished jobs with batches never taken are marked."""
    done = make_job(ids(10, "d-"))
    finish(store, take(store, "a"))
    make_job(ids(10, "r-"))
    take(store, "b")
    assert store.scripts["lost_writes"](args=[store.keys.prefix, 5]) == 0
    assert store.redis.scard(store.keys.job(done, "sent")) == 1


def test_check_lost_writes_marks_unfinished_work_when_the_redis_run_changes(
    make_job, store, ids, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first look records Redis' run_id; the same run_id again is no restart; a new one
    (Redis restarted: its last writes may be lost) marks the batches past each unfinished
    job's frontier possibly sent."""
    job_id = make_job(ids(500))
    take(store, "a")
    server = {"run_id": "run-1"}
    monkeypatch.setattr(store.redis, "info", lambda section=None: dict(server))
    assert store.check_lost_writes(margin=2) is False
    assert store.check_lost_writes(margin=2) is False
    assert store.redis.smembers(store.keys.job(job_id, "sent")) == {b"0"}
    server["run_id"] = "run-2"
    assert store.check_lost_writes(margin=2) is True
    assert store.redis.smembers(store.keys.job(job_id, "sent")) == {b"0", b"1", b"2"}
    assert store.check_lost_writes(margin=2) is False


def test_check_lost_writes_without_info_cannot_tell(store: JobStore) -> None:
    """A Redis without INFO (fakeredis, some managed ones): no restart can be seen."""
    assert store.check_lost_writes(margin=10) is False
    assert store.redis.hget(store.keys.store, "run_id") is None


# -- wake --------------------------------------------------------------------------------


def test_wake_creates_tickets_for_the_missing_drains_only_while_work_is_runnable(
    make_job, store, ids, clock
) -> None:
    """No runnable job: no ticket. Then one per missing slot of live workers; lapsed tickets
    are replaced."""
    assert store.wake(worker="w1", slots=3) == []
    make_job(ids(10))
    tickets = store.wake(worker="w1", slots=3, ticket_ttl_s=5)
    assert len(tickets) == 3
    assert store.wake(worker="w1", slots=3, ticket_ttl_s=5) == []
    clock.advance(5.1)
    assert len(store.wake(worker="w1", slots=3, ticket_ttl_s=5)) == 3
    store.leave("w1")
    assert store.redis.get(store.keys.drains + ":desired") == b"3"
    store.wake()
    assert store.redis.get(store.keys.drains + ":desired") == b"1"


def test_ending_a_drain_frees_its_place(make_job, store, ids) -> None:
    """A drain run that ends (idle) removes its ticket: a new one may take its place."""
    make_job(ids(10))
    (ticket,) = store.wake()
    store.end_drain(ticket)
    assert len(store.wake()) == 1
