"""Properties of the accounting core (store.py, its Lua scripts, and batch.py's runs):
whatever the order, repetition or origin of takes and commits, whatever runs lose their
lease, crash or are answered late, each id gets exactly one outcome, the counters equal
a recount, a job finishes exactly once, and nothing the API deleted is reported failed
or not attempted (unless its reason says the API may have deleted it).

tests/unit/test_store_model.py drives a model of the run protocol through the scripts;
here the real `BatchRun` runs against a scripted API, and the scripts are driven with
raw commits by holders and by runs whose lease lapsed."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable

import fakeredis
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.conftest import FakeClock, FakeWickson, unit_settings
from worker.api import WicksonClient
from worker.batch import BatchRun, RunContext
from worker.keys import Keys
from worker.ratelimit import FleetLimiter
from worker.store import BATCH_SIZE, RESUME_DURABLE_MS, BatchCommit, JobStore, NoBatch, Taken

LEASE_S = 60.0
KINDS = ("deleted", "not_found", "failed", "not_attempted")
REASONS = ("locked by legal hold", "Access denied: media belongs to another user")
MAYBE_DELETED = "may have deleted"
"""What a reason says when the API may have deleted the id the store could not confirm."""


def examples(n: int) -> settings:
    """`n` examples, no deadline; the clock fixture is shared between examples, which is
    harmless (it only moves forward, and each example has its own Redis)."""
    return settings(
        max_examples=n, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )


class Model:
    """What the store should have counted: the first outcome of each (batch, position)
    committed by the run holding the batch's lease."""

    def __init__(self, n: int, n_invalid: int) -> None:
        self.sizes = [min(BATCH_SIZE, n - BATCH_SIZE * i) for i in range(-(-n // BATCH_SIZE))]
        self.n_invalid = n_invalid
        self.outcome: dict[tuple[int, int], str] = {}

    def apply(self, index: int, commit: BatchCommit) -> int:
        """Record `commit` the way commit.lua orders it; return how many ids are new."""
        new = 0
        groups = (
            ("deleted", commit.deleted),
            ("not_found", commit.not_found),
            ("failed", [pos for pos, _ in commit.failed]),
            ("not_attempted", [pos for pos, _ in commit.not_attempted]),
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


def new_store() -> JobStore:
    return JobStore(fakeredis.FakeRedis(server=fakeredis.FakeServer()), retention_s=3_600)


def new_job(
    seal_job: Callable[..., str], store: JobStore, n: int, n_invalid: int = 0
) -> tuple[str, Model]:
    ids = [f"vec-{k:05d}" for k in range(n)]
    invalid = {f"bad id {k}": "invalid_id" for k in range(n_invalid)}
    return seal_job(store, ids, invalid=invalid), Model(n, n_invalid)


def take(store: JobStore, token: str) -> Taken | NoBatch:
    return store.take(token, lease_s=LEASE_S, max_runs=1_000, max_wait_s=5.0, rate=1e6)


def random_commit(data: st.DataObject, size: int) -> BatchCommit:
    """Outcomes for random positions (repeats and clashes included), random counters, and
    maybe a hand-back."""
    pos = st.integers(0, size - 1)
    with_reason = st.lists(st.tuples(pos, st.sampled_from(REASONS)), max_size=6)
    return data.draw(
        st.builds(
            BatchCommit,
            deleted=st.lists(pos, max_size=15),
            not_found=st.lists(pos, max_size=5),
            failed=with_reason,
            not_attempted=st.lists(st.tuples(pos, st.just("job stopped")), max_size=3),
            hd=st.integers(0, 3),
            attempts=st.integers(0, 2),
            requests=st.integers(0, 2),
            release=st.sampled_from(["keep", "later"]),
        )
    )


def sweep_commit(data: st.DataObject, taken: Taken, kinds=KINDS) -> BatchCommit:
    """Every pending position of `taken`, each with a random outcome."""
    rnd = data.draw(st.randoms(use_true_random=False), label="sweep")
    commit = BatchCommit()
    for pos, _ in taken.pending():
        kind = rnd.choice(kinds)
        if kind == "deleted":
            commit.deleted.append(pos)
        elif kind == "not_found":
            commit.not_found.append(pos)
        elif kind == "failed":
            commit.failed.append((pos, rnd.choice(REASONS)))
        else:
            commit.not_attempted.append((pos, "job stopped"))
    return commit


def check_counts(store: JobStore, job_id: str, model: Model, extra_skipped: int = 0) -> None:
    """The store's counters, records and recount agree with the model."""
    s = store.status(job_id)
    want = model.counts()
    got = (s.deleted, s.not_found, s.failed, s.not_attempted)
    assert got == (
        want["deleted"], want["not_found"], want["failed"], want["not_attempted"] + extra_skipped,
    )  # fmt: skip
    r, k = store.redis, store.keys
    assert r.hlen(k.job(job_id, "failed")) == s.failed
    assert r.scard(k.job(job_id, "not_found")) == s.not_found
    assert r.hlen(k.job(job_id, "not_attempted")) == s.not_attempted - extra_skipped
    assert sum(s.failure_reasons.values()) == s.failed
    recount = Counter(row.outcome for row in store.iter_outcomes(job_id))
    assert [recount[kind] for kind in KINDS] == list(got)
    assert s.done + recount["pending"] == s.total


def events_of(store: JobStore, job_id: str) -> list[dict]:
    events = [json.loads(e) for e in store.redis.lrange(store.keys.events, 0, -1)]
    return [e for e in events if e["job_id"] == job_id]


# -- raw takes and commits ---------------------------------------------------------------


@examples(40)
@given(n=st.integers(1, 350), n_invalid=st.integers(0, 3), data=st.data())
def test_any_takes_and_commits_count_each_id_once_and_finish_the_job_once(
    seal_job, clock: FakeClock, n: int, n_invalid: int, data: st.DataObject
) -> None:
    """Takes, lease lapses, commits by holders and by runs that lost their lease, replays
    and hand-backs, in any order: only holders count, each id once; the job completes
    once."""
    store = new_store()
    job_id, model = new_job(seal_job, store, n, n_invalid)
    holders: dict[int, str] = {}  # batch -> the token holding its lease (the model's)
    tokens: list[tuple[int, str]] = []  # every (batch, token) ever taken
    finished, done_flags = 0, Counter[int]()

    def commit(index: int, token: str, c: BatchCommit) -> None:
        nonlocal finished
        was_complete = model.complete(index)
        holder = holders.get(index) == token
        result = store.commit(job_id, index, token, c)
        assert result.lost == (not holder)
        if result.lost:
            assert result.counted == 0
        else:
            assert result.counted == model.apply(index, c)
            assert result.batch_done == (not was_complete and model.complete(index))
            done_flags[index] += result.batch_done
            finished += result.job_finished
            if result.batch_done or c.release == "later":
                del holders[index]
        check_counts(store, job_id, model)

    for step in range(data.draw(st.integers(0, 15), label="steps")):
        action = data.draw(st.sampled_from(["take", "commit", "lapse"]), label="action")
        if action == "take":
            t = take(store, f"run-{step}")
            if isinstance(t, Taken):
                assert not model.complete(t.index)
                holders[t.index] = t.token
                tokens.append((t.index, t.token))
        elif action == "lapse":
            clock.advance(LEASE_S + 1)
        elif tokens:
            index, token = data.draw(st.sampled_from(tokens), label="committer")
            commit(index, token, random_commit(data, model.sizes[index]))
        s = store.status(job_id)
        assert s.state == ("completed" if finished else "running" if tokens else "queued")

    for _ in range(3 * len(model.sizes) + 3):  # the fleet drains what is left
        t = take(store, "sweeper")
        if isinstance(t, NoBatch):
            if t.kind == "idle":
                break
            clock.advance(t.wait_s + 0.01)
            continue
        holders[t.index] = t.token
        commit(t.index, t.token, sweep_commit(data, t))

    s = store.status(job_id)
    assert s.deleted + s.not_found + s.failed + s.not_attempted == s.total == n + n_invalid
    assert (s.batches_done, s.batches_total, s.state) == (len(model.sizes),) * 2 + ("completed",)
    assert finished == 1
    assert all(done_flags[i] == 1 for i in range(len(model.sizes)))
    (event,) = events_of(store, job_id)
    assert event["state"] == "completed"
    for index, token in tokens[-5:]:  # late commits of runs of a finished job
        assert store.commit(job_id, index, token, BatchCommit(deleted=[0])).lost
    after = store.status(job_id)
    assert (after.finished_at, after.deleted, after.state) == (s.finished_at, s.deleted, s.state)
    assert len(events_of(store, job_id)) == 1


@examples(40)
@given(n=st.integers(1, 450), resume=st.booleans(), data=st.data())
def test_a_stopped_job_counts_each_id_once_and_a_resumed_one_finishes_the_rest(
    seal_job, clock: FakeClock, n: int, resume: bool, data: st.DataObject
) -> None:
    """A job stopped with batches taken, handed back or never taken counts each id once:
    never-taken batches at once, the others through runs that confirm them; resumed, it
    re-attempts exactly what was not attempted."""
    store = new_store()
    job_id, model = new_job(seal_job, store, n)
    finished = 0

    def commit(t: Taken, c: BatchCommit) -> None:
        nonlocal finished
        result = store.commit(job_id, t.index, t.token, c)
        assert not result.lost
        assert result.counted == model.apply(t.index, c)
        finished += result.job_finished

    held: list[Taken] = []
    for k in range(data.draw(st.integers(0, 6), label="takes before the stop")):
        t = take(store, f"run-{k}")
        if not isinstance(t, Taken):
            break
        what = data.draw(st.sampled_from(["hold", "finish", "hand back"]), label="run")
        if what == "finish":
            commit(t, sweep_commit(data, t, kinds=("deleted", "not_found", "failed")))
        elif what == "hand back":
            commit(t, BatchCommit(deleted=[0], release="later"))
        else:
            held.append(t)

    if finished:  # every batch was done before the stop: nothing left to stop
        assert not store.stop(job_id, "cancelled", "CANCELLED: test")
        assert store.status(job_id).state == "completed"
        return
    never_taken = int(store.redis.hget(store.keys.job(job_id), "next"))
    bulk = sum(model.sizes[never_taken:])
    assert store.stop(job_id, "cancelled", "CANCELLED: test")
    assert store.status(job_id).not_attempted == bulk
    finished += store.status(job_id).finished  # nothing taken: the stop finished it
    for t in held:  # the runs holding batches see 'stopping' and confirm them
        commit(t, sweep_commit(data, t, kinds=("deleted", "not_found")))
    clock.advance(1)
    while isinstance(t := take(store, "confirmer"), Taken):  # handed-back batches
        assert (t.state, t.sent_before) == ("stopping", True)
        commit(t, sweep_commit(data, t, kinds=("deleted", "not_found")))

    s = store.status(job_id)
    assert (s.state, s.done, s.total, s.batches_done) == ("cancelled", n, n, len(model.sizes))
    assert finished == 1
    check_counts(store, job_id, model, extra_skipped=bulk)
    assert len(events_of(store, job_id)) == 1
    if not resume or not s.not_attempted:
        return

    assert store.resume(job_id)
    assert store.status(job_id).not_attempted == 0
    clock.advance(RESUME_DURABLE_MS / 1000)  # a resumed finished job waits to be durable
    model.outcome = {k: v for k, v in model.outcome.items() if v != "not_attempted"}
    seen: set[int] = set()
    while isinstance(t := take(store, "after-resume"), Taken):
        assert t.index not in seen, f"batch {t.index} handed out twice"
        seen.add(t.index)
        assert [p for p, _ in t.pending()] == [
            p for p in range(model.sizes[t.index]) if (t.index, p) not in model.outcome
        ]
        commit(t, BatchCommit(deleted=[p for p, _ in t.pending()]))
    s = store.status(job_id)
    assert (s.state, s.done, s.total, s.not_attempted) == ("completed", n, n, 0)
    check_counts(store, job_id, model)
    assert finished == 2
    assert [e["state"] for e in events_of(store, job_id)] == ["completed", "cancelled"]


# -- real runs, any interleaving ---------------------------------------------------------

BEHAVIOURS = (
    "ok", "ok", "deletes then 500", "deletes then timeout", "503", "connect error",
    "partial answer", "too large", "slow: taken over", "deletes then the worker dies",
    "cancel", "pause", "429 for a minute", "401",
)  # fmt: skip


class ScriptedApi(FakeWickson):
    """The contract, with a misbehaviour chosen for each request (`choose()`, or the
    contract once it returns None), and a ledger: which job (the request's reason)
    deleted which id."""

    def __init__(self, existing, choose: Callable[[], str | None], fleet: Fleet) -> None:
        super().__init__(existing, max_ids=100)
        self.choose, self.fleet = choose, fleet
        self.deleted_by: dict[str, str] = {}

    def answer(self, request: httpx.Request) -> httpx.Response:
        before = set(self.existing)
        response = super().answer(request)
        job = json.loads(request.content).get("reason") or ""
        for media_id in before - self.existing:
            self.deleted_by[media_id] = job
        return response

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request, self.choose() or "ok")

    def respond(self, request: httpx.Request, behaviour: str) -> httpx.Response:
        media = json.loads(request.content)["media_ids"]
        job = self.fleet.job_of(media[0])
        if behaviour == "slow: taken over":
            # The request hangs past its lease; another run takes the batch over (and
            # may finish it, or die); then this request is answered, late.
            self.fleet.clock.advance(LEASE_S + 1)
            self.fleet.run_next()
            late = self.choose() or "ok"
            return self.respond(request, "ok" if late == behaviour else late)
        if behaviour == "deletes then 500":
            self.answer(request)
            return self.error(500, "PROCESSING_ERROR")
        if behaviour == "deletes then timeout":
            self.answer(request)
            raise httpx.ReadTimeout("no answer in time")
        if behaviour == "503":
            return self.error(503, "SERVICE_UNAVAILABLE")
        if behaviour == "connect error":
            raise httpx.ConnectError("connection refused")  # nothing reached the API
        if behaviour == "partial answer" and len(media) > 1:
            before = set(self.existing)
            self.answer(request)  # the answer tells of half the ids it deleted, no more
            half = media[: len(media) // 2]
            return self.success([m for m in half if m in before - self.existing], {})
        if behaviour == "too large" and len(media) > 1:
            return self.error(400, "BATCH_TOO_LARGE")
        if behaviour == "deletes then the worker dies":
            self.answer(request)
            raise WorkerDied
        if behaviour == "cancel":
            self.fleet.store.stop(job, "cancelled", "CANCELLED: by the test")
        if behaviour == "pause":
            self.fleet.store.pause(job)
        if behaviour == "429 for a minute":
            return self.error(429, "RATE_LIMIT_EXCEEDED", headers={"Retry-After": "60"})
        if behaviour == "401":
            return self.error(401, "INVALID_API_KEY")
        return self.answer(request)


def drawn(data: st.DataObject, budget: int) -> Callable[[], str | None]:
    """Behaviours drawn by hypothesis, for the first `budget` requests."""
    left = [budget]

    def choose() -> str | None:
        if left[0] <= 0:
            return None
        left[0] -= 1
        return data.draw(st.sampled_from(BEHAVIOURS), label="answer")

    return choose


def scripted(*behaviours: str) -> Callable[[], str | None]:
    """These behaviours, in order, for the first requests; then the contract."""
    queue = list(behaviours)
    return lambda: queue.pop(0) if queue else None


class WorkerDied(Exception):
    """The worker process was killed mid-request."""


class Fleet:
    """Real runs of the real BatchRun on one store, taking batches as drain runs do."""

    def __init__(self, store: JobStore, clock: FakeClock, jobs: dict[str, list[str]]) -> None:
        self.store, self.clock = store, clock
        self.owner = {media_id: job for job, ids in jobs.items() for media_id in ids}
        self.runs = 0
        self.api: ScriptedApi | None = None
        self.client: WicksonClient | None = None

    def job_of(self, media_id: str) -> str:
        return self.owner[media_id]

    def context(self) -> RunContext:
        assert self.client is not None
        limiter = FleetLimiter(
            self.store.redis, Keys().limiter(), rate=1_000.0, sleep=self.clock.sleep
        )
        client = self.client
        return RunContext(
            store=self.store,
            settings=unit_settings(max_attempts=4, max_deliveries=3),
            tenant=lambda _alias: (client, limiter),
            sleep=self.clock.sleep,
        )

    def run_next(self) -> Taken | NoBatch:
        """Take the next batch and run it (a crash ends the run: its lease lapses)."""
        s = unit_settings(max_deliveries=3)
        self.runs += 1
        taken = self.store.take(
            f"run-{self.runs}", lease_s=s.lease_s, max_runs=s.max_deliveries,
            max_wait_s=s.max_wait_in_task_s, rate=s.rate_limit,
        )  # fmt: skip
        if isinstance(taken, Taken):
            with contextlib.suppress(WorkerDied):  # its lease lapses; another run takes over
                BatchRun(taken, self.context()).run()
        return taken

    def drain(self) -> None:
        """Run until no job is runnable, resuming paused jobs, waiting out hand-backs."""
        for _ in range(400):
            got = self.run_next()
            if isinstance(got, Taken):
                continue
            if got.kind == "wait":
                self.clock.advance(max(got.wait_s, 0.001) + 0.001)
                continue
            paused = [j for j in self.store.active_jobs() if self.state(j) == "paused"]
            if not paused:
                return
            for job in paused:
                self.store.resume(job)
        raise AssertionError("the fleet did not drain the jobs")

    def state(self, job: str) -> str:
        return self.store.status(job).state


@examples(50)
@given(
    sizes=st.lists(st.integers(1, 230), min_size=1, max_size=2),
    gone=st.integers(0, 100),
    budget=st.integers(0, 12),
    data=st.data(),
)
def test_real_runs_report_exactly_what_the_api_did_under_any_interleaving(
    seal_job, clock: FakeClock, make_client, sizes, gone: int, budget: int, data: st.DataObject
) -> None:
    """Real BatchRuns against an API that answers late, loses answers after deleting,
    splits, rate limits, refuses the key, while runs crash, lose their lease to another
    run mid-request, and jobs are paused and cancelled: every id of every job ends with
    exactly one outcome, counters equal the recount, an id reported deleted was deleted
    by that job's request, and no id the job's request deleted is reported failed or
    not attempted unless the reason says the API may have deleted it."""
    store = new_store()
    jobs: dict[str, list[str]] = {}
    all_ids: list[str] = []
    for j, n in enumerate(sizes):
        ids = [f"j{j}-{k:04d}" for k in range(n)]
        job_id = seal_job(store, ids, reason=f"job-{j}")
        jobs[job_id] = ids
        all_ids += ids
    fleet = Fleet(store, clock, jobs)
    existing = all_ids[gone:]  # some ids are gone before the jobs start
    fleet.api = ScriptedApi(existing, drawn(data, budget), fleet)
    fleet.client = make_client(fleet.api)
    fleet.drain()

    check_truth(store, jobs, fleet.api)


def check_truth(store: JobStore, jobs: dict[str, list[str]], api: ScriptedApi) -> None:
    """Every id of every job has exactly one outcome; counters equal the recount; an id
    reported deleted was deleted by that job's request; an id the job's request deleted
    is not failed or not attempted unless the reason says the API may have deleted it."""
    for job, ids in jobs.items():
        s = store.status(job)
        assert s.finished, (job, s.state)
        rows = {r.media_id: r for r in store.iter_outcomes(job)}
        assert sorted(rows) == sorted(ids)
        counted = Counter(r.outcome for r in rows.values())
        assert counted["pending"] == 0
        assert [counted[k] for k in KINDS] == [s.deleted, s.not_found, s.failed, s.not_attempted]
        assert s.done == s.total == len(ids)
        assert sum(s.failure_reasons.values()) == s.failed
        assert len(events_of(store, job)) == 1
        for media_id, row in rows.items():
            deleted_by = api.deleted_by.get(media_id)
            if row.outcome == "deleted":
                assert deleted_by == s.reason, (media_id, deleted_by)
            if deleted_by == s.reason and row.outcome in ("failed", "not_attempted"):
                assert MAYBE_DELETED in row.reason, (media_id, row)


TAKEOVERS = ("ok", "deletes then the worker dies", "deletes then timeout", "401", "cancel")
"""What the run that takes the batch over meets."""
LATE = (
    "ok", "deletes then 500", "503", "connect error", "401", "429 for a minute", "cancel",
    "deletes then the worker dies",
)  # fmt: skip
"""What the run that outlived its lease meets when its request is answered at last."""


@pytest.mark.parametrize("late", LATE)
@pytest.mark.parametrize("takeover", TAKEOVERS)
@examples(3)
@given(
    n=st.integers(1, 8), gone=st.integers(0, 8), then=st.lists(st.sampled_from(LATE), max_size=4)
)
def test_a_run_that_outlives_its_lease_never_changes_the_truth(
    seal_job, clock: FakeClock, make_client, takeover: str, late: str, n: int, gone: int,
    then: list[str],
) -> None:  # fmt: skip
    """Issue 12 case 1, in every combination: run A's request hangs past its lease, run B
    takes the batch over and meets `takeover`; A's request is answered `late`, and A's
    later requests meet `then`: whatever A commits or sends after, the outcomes are the
    truth of the ledger."""
    store = new_store()
    ids = [f"v{k}" for k in range(n)]
    job = seal_job(store, ids, reason="job-0")
    fleet = Fleet(store, clock, {job: ids})
    fleet.api = ScriptedApi(ids[gone:], scripted("slow: taken over", takeover, late, *then), fleet)
    fleet.client = make_client(fleet.api)
    fleet.drain()
    check_truth(store, {job: ids}, fleet.api)


def test_the_scripted_api_misbehaves_as_labelled(make_client, clock) -> None:
    """The property's API: a lost 500 deletes (the ledger says so) and answers 500."""
    store = new_store()
    fleet = Fleet(store, clock, {"j": ["a", "b"]})
    api = ScriptedApi(["a", "b"], scripted("deletes then 500"), fleet)
    client = make_client(api)
    with pytest.raises(Exception, match=r"PROCESSING_ERROR|500"):
        client.delete_batch(["a", "b"], "job-x")
    assert api.deleted_by == {"a": "job-x", "b": "job-x"}
