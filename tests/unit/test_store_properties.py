"""Properties of the accounting core (store.py and its Lua scripts): whatever the order,
repetition or origin of commits, each id is counted once, the outcomes add up to the
job's total, and a job finishes exactly once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import fakeredis
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.store import BATCH_SIZE, BatchCommit, JobStore

KINDS = ("deleted", "absent", "failed", "skipped")
REASONS = ("Media not found", "locked by legal hold", "PROCESSING_ERROR: gave up")
TOKENS = ("run-a", "run-b", "run-c")


class Model:
    """What the store should have counted: the first outcome of each (batch, position)."""

    def __init__(self, n: int, n_invalid: int) -> None:
        self.sizes = [min(BATCH_SIZE, n - BATCH_SIZE * i) for i in range(-(-n // BATCH_SIZE))]
        self.n_invalid = n_invalid
        self.outcome: dict[tuple[int, int], str] = {}

    def apply(self, index: int, commit: BatchCommit) -> int:
        """Record `commit` the way commit.lua orders it; return how many ids are new."""
        new = 0
        groups = (
            ("deleted", commit.deleted),
            ("absent", commit.absent),
            ("failed", [pos for pos, _ in commit.failed]),
            ("skipped", [pos for pos, _ in commit.skipped]),
        )
        for kind, positions in groups:
            for pos in positions:
                if (index, pos) not in self.outcome:
                    self.outcome[(index, pos)] = kind
                    new += 1
        return new

    def complete(self, index: int) -> bool:
        return all((index, pos) in self.outcome for pos in range(self.sizes[index]))

    def counts(self) -> Counter[str]:
        counts = Counter(self.outcome.values())
        counts["failed"] += self.n_invalid
        return counts


def new_store(window: int) -> JobStore:
    return JobStore(
        fakeredis.FakeRedis(server=fakeredis.FakeServer()), retention_s=3_600, window=window
    )


def new_job(
    seal_job: Callable[..., str], store: JobStore, n: int, n_invalid: int
) -> tuple[str, Model]:
    ids = [f"vec-{k:05d}" for k in range(n)]
    invalid = {f"bad id {k}": "invalid_id" for k in range(n_invalid)}
    return seal_job(store, ids, invalid=invalid), Model(n, n_invalid)


def random_commit(data: st.DataObject, size: int) -> BatchCommit:
    """Outcomes for random positions (repeats and clashes included) and random counters."""
    pos = st.integers(0, size - 1)
    with_reason = st.lists(st.tuples(pos, st.sampled_from(REASONS)), max_size=6)
    return data.draw(
        st.builds(
            BatchCommit,
            deleted=st.lists(pos, max_size=15),
            absent=st.lists(pos, max_size=5),
            failed=with_reason,
            skipped=with_reason,
            hd_vectors=st.integers(0, 3),
            tries=st.integers(0, 2),
            uncertain=st.booleans(),
            final=st.booleans(),
        )
    )


def sweep_commits(data: st.DataObject, size: int) -> list[BatchCommit]:
    """Every position of a batch, each with a random outcome, in a random order, split
    between two runs."""
    rnd = data.draw(st.randoms(use_true_random=False), label="sweep")
    order = list(range(size))
    rnd.shuffle(order)
    cut = rnd.randint(0, size)
    commits = []
    for part in (order[:cut], order[cut:]):
        c = BatchCommit(final=True)
        for p in part:
            kind = rnd.choice(KINDS)
            if kind == "deleted":
                c.deleted.append(p)
            elif kind == "absent":
                c.absent.append(p)
            elif kind == "failed":
                c.failed.append((p, rnd.choice(REASONS)))
            else:
                c.skipped.append((p, "job stopped"))
        commits.append(c)
    return commits


def check_counts(store: JobStore, job_id: str, model: Model, extra_skipped: int = 0) -> None:
    """The store's counters and records agree with the model, id by id."""
    s = store.status(job_id)
    want = model.counts()
    got = (s.deleted, s.already_absent, s.failed, s.not_attempted)
    assert got == (want["deleted"], want["absent"], want["failed"], want["skipped"] + extra_skipped)
    assert s.done <= s.total
    r, k = store.redis, store.keys
    assert r.hlen(k.job(job_id, "failed")) == s.failed
    assert r.scard(k.job(job_id, "absent")) == s.already_absent
    assert r.hlen(k.job(job_id, "skipped")) == s.not_attempted - extra_skipped
    assert sum(s.failure_reasons.values()) == s.failed


def events_of(store: JobStore, job_id: str) -> list[dict]:
    events = [json.loads(e) for e in store.redis.lrange(store.keys.events, 0, -1)]
    return [e for e in events if e["job_id"] == job_id]


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 350),
    n_invalid=st.integers(0, 3),
    window=st.integers(1, 4),
    data=st.data(),
)
def test_any_sequence_of_commits_counts_each_id_once_and_finishes_the_job_once(
    seal_job, n: int, n_invalid: int, window: int, data: st.DataObject
) -> None:
    """Any commits, in any order, repeated: each id counted once, the job completes once."""
    store = new_store(window)
    job_id, model = new_job(seal_job, store, n, n_invalid)
    batches = len(model.sizes)
    dispatched = list(store.start(job_id))
    finished, done_flags = 0, Counter[int]()
    history: list[tuple[int, str, BatchCommit]] = []

    def commit(index: int, token: str, c: BatchCommit) -> None:
        nonlocal finished
        was_complete = model.complete(index)
        result = store.commit(job_id, index, token, c)
        assert result.counted == model.apply(index, c)
        assert result.batch_done == (not was_complete and model.complete(index))
        done_flags[index] += result.batch_done
        dispatched.extend(result.successors)
        finished += result.job_finished
        history.append((index, token, c))
        check_counts(store, job_id, model)

    for _ in range(data.draw(st.integers(0, 12), label="random commits")):
        if history and data.draw(st.booleans(), label="replay"):
            index, _, c = data.draw(st.sampled_from(history), label="replayed")
            commit(index, data.draw(st.sampled_from(TOKENS)), c)
        else:
            index = data.draw(st.integers(0, batches - 1), label="batch")
            commit(
                index, data.draw(st.sampled_from(TOKENS)), random_commit(data, model.sizes[index])
            )
        s = store.status(job_id)
        assert s.state == ("completed" if finished else "running")

    for index in data.draw(st.permutations(range(batches)), label="sweep order"):
        for token, c in zip(TOKENS, sweep_commits(data, model.sizes[index]), strict=False):
            commit(index, token, c)

    s = store.status(job_id)
    assert s.deleted + s.already_absent + s.failed + s.not_attempted == s.total == n + n_invalid
    assert (s.batches_done, s.batches_total, s.state) == (batches, batches, "completed")
    assert finished == 1
    assert all(done_flags[i] == 1 for i in range(batches))
    assert sorted(dispatched) == list(range(batches))
    (event,) = events_of(store, job_id)
    assert event["state"] == "completed"
    finished_at = s.finished_at
    assert finished_at is not None

    for index, token, c in history[-5:]:  # late redeliveries of a finished job
        commit(index, token, c)
    after = store.status(job_id)
    assert after.finished_at == finished_at
    assert (after.deleted, after.failed, after.state) == (s.deleted, s.failed, "completed")
    assert len(events_of(store, job_id)) == 1
    assert finished == 1


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 350),
    window=st.integers(1, 4),
    resume=st.booleans(),
    data=st.data(),
)
def test_a_stopped_job_counts_each_id_once_and_a_resumed_one_finishes_the_rest(
    seal_job, n: int, window: int, resume: bool, data: st.DataObject
) -> None:
    """A stopped job counts each id once; resumed, it re-attempts only what was not attempted."""
    store = new_store(window)
    job_id, model = new_job(seal_job, store, n, 0)
    finished = 0

    def commit(index: int, c: BatchCommit) -> list[int]:
        nonlocal finished
        result = store.commit(job_id, index, data.draw(st.sampled_from(TOKENS)), c)
        assert result.counted == model.apply(index, c)
        finished += result.job_finished
        return list(result.successors)

    store.start(job_id)
    for _ in range(data.draw(st.integers(0, 8), label="commits before the stop")):
        dispatched = int(store.redis.hget(store.keys.job(job_id), "dispatched"))
        index = data.draw(st.integers(0, dispatched - 1), label="batch")
        if data.draw(st.booleans(), label="whole batch"):
            for c in sweep_commits(data, model.sizes[index]):
                commit(index, c)
        else:
            commit(index, random_commit(data, model.sizes[index]))

    if finished:  # every batch was done before the stop: nothing left to stop
        assert not store.stop(job_id, "cancelled", "CANCELLED: test")
        assert store.status(job_id).state == "completed"
        return
    skipped_from = int(store.redis.hget(store.keys.job(job_id), "dispatched"))
    bulk = sum(model.sizes[skipped_from:])
    assert store.stop(job_id, "cancelled", "CANCELLED: test")
    assert finished == 0
    for index in range(skipped_from):  # the runs in flight see 'stopping' and commit
        for c in sweep_commits(data, model.sizes[index]):
            commit(index, c)

    s = store.status(job_id)
    assert (s.state, s.done, s.total, s.batches_done) == ("cancelled", n, n, len(model.sizes))
    assert finished == 1
    check_counts(store, job_id, model, extra_skipped=bulk)
    assert len(events_of(store, job_id)) == 1
    if not resume or not s.not_attempted:  # nothing to re-attempt: see test_store.py
        return

    todo = store.resume(job_id)
    assert todo != "start"
    assert store.status(job_id).state == "running"
    assert store.status(job_id).not_attempted == 0
    model.outcome = {k: v for k, v in model.outcome.items() if v != "skipped"}
    queue, seen = list(todo), set()
    while queue:  # the fleet: every published batch runs and deletes what is left
        index = queue.pop(0)
        assert index not in seen, f"batch {index} published twice"
        seen.add(index)
        queue += commit(index, BatchCommit(deleted=list(range(model.sizes[index])), final=True))

    s = store.status(job_id)
    assert (s.state, s.done, s.total, s.not_attempted) == ("completed", n, n, 0)
    assert s.deleted == Counter(model.outcome.values())["deleted"]
    check_counts(store, job_id, model)
    assert finished == 2
    assert [e["state"] for e in events_of(store, job_id)] == ["completed", "cancelled"]
