"""worker/jobs.py through `producers.submit`: reading, counting, staging and sealing a job,
on fakeredis."""

from __future__ import annotations

import pytest

from producers.submit import submit
from worker.errors import InputError
from worker.store import JobStore


class StartRecorder:
    """Stands in for the fleet's wake-up: records the runnable jobs at each call."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def __call__(self, store: JobStore) -> None:
        known = set(self.started)
        self.started.extend(j for j in store.active_jobs() if j not in known)


@pytest.fixture
def start() -> StartRecorder:
    """A recording `start` callable."""
    return StartRecorder()


@pytest.fixture
def do_submit(fake_redis, settings, start):
    """`do_submit(lines, **kwargs)`: submit() on the fake Redis with the recording start."""

    def run(lines, **kwargs):
        kwargs.setdefault("reason", "test purge")
        kwargs.setdefault("settings", settings)
        return submit(lines, client=fake_redis, start=start, **kwargs)

    return run


def staged_ids(store: JobStore, job_id: str) -> list[str]:
    """Every id in the job's batches, in batch order."""
    batches = store.redis.hgetall(store.keys.job(job_id, "batches"))
    return [
        media_id
        for index in sorted(batches, key=int)
        for media_id in batches[index].decode().split("\n")
    ]


def test_submit_counts_submitted_valid_invalid_and_duplicate_ids(
    do_submit, store: JobStore, start
) -> None:
    """submit() counts lines, unique valid and invalid ids, duplicates; starts the job once."""
    lines = [b"media_id\n", b"vec-a\n", b"vec-b\n", b"vec-a\n", b"\n", b"bad id\n",
             b"c/d\n", b"vec-b\n", b"bad id\n"]  # fmt: skip
    job = do_submit(lines)
    r = job.report
    assert r is not None
    assert (r.submitted, r.valid, r.invalid, r.duplicates) == (7, 2, 2, 3)
    assert [(line.number, line.text) for line in r.invalid_lines] == [
        (6, "bad id"), (7, "c/d"), (9, "bad id"),
    ]  # fmt: skip
    s = store.status(job.id)
    assert (s.state, s.submitted, s.total, s.invalid, s.failed) == ("queued", 7, 4, 2, 2)
    assert s.failure_reasons == {"invalid_id": 2}
    assert start.started == [job.id]


def test_submit_stages_each_id_once_in_batches_of_100(do_submit, store: JobStore) -> None:
    """Duplicates are dropped before staging: 250 unique ids in 3 batches, each id once."""
    unique = [f"vec-{k}" for k in range(250)]
    job = do_submit(unique + unique[::-1] + unique[:10])
    assert staged_ids(store, job.id) == unique
    s = store.status(job.id)
    assert (s.total, s.batches_total) == (250, 3)
    assert job.report is not None
    assert job.report.duplicates == 260


def test_submit_records_invalid_ids_as_failed_never_staged(do_submit, store: JobStore) -> None:
    """Invalid ids go to the failed list as 'invalid_id' and never into a batch."""
    job = do_submit(["vec-1", "has space", "\xff-not-ascii", "x" * 129])
    assert staged_ids(store, job.id) == ["vec-1"]
    failures = dict(store.iter_failures(job.id))
    assert set(failures.values()) == {"invalid_id"}
    assert "has space" in failures
    assert len(failures) == 3


def test_submit_of_only_invalid_ids_completes_without_starting(
    do_submit, store: JobStore, start
) -> None:
    """Nothing to delete: the job completes at once and no start task is sent."""
    job = do_submit(["a b", "c/d"])
    assert store.status(job.id).state == "completed"
    assert start.started == []
    assert job.wait(timeout=0).state == "completed"


def test_max_job_ids_refuses_a_job_before_staging_anything(
    do_submit, make_settings, store: JobStore, start
) -> None:
    """Over WICKSON_MAX_JOB_IDS: InputError; nothing staged, sealed, listed or started."""
    with pytest.raises(InputError, match="WICKSON_MAX_JOB_IDS"):
        do_submit(
            [f"vec-{k}" for k in range(6)] + ["bad id"], settings=make_settings(max_job_ids=5)
        )
    r, k = store.redis, store.keys
    assert r.keys(k.job("*", "batches")) == []
    assert r.keys(k.job("*", "failed")) == []
    assert store.recent_jobs() == []
    assert start.started == []


def test_max_job_ids_counts_lines_not_unique_ids(do_submit, make_settings) -> None:
    """The guard is on ids read (the cost of reading), duplicates included."""
    with pytest.raises(InputError):
        do_submit(["vec-1"] * 6, settings=make_settings(max_job_ids=5))
    assert do_submit(["vec-1"] * 5, settings=make_settings(max_job_ids=5)).report.valid == 1


def test_an_empty_input_is_refused_and_starts_nothing(do_submit, store: JobStore, start) -> None:
    """An input with no ids (empty, blank lines, a header only) is refused: nothing runs."""
    for lines in ([], [b"\n", b"  \n"], [b"media_id\n"]):
        with pytest.raises(InputError, match="no ids"):
            do_submit(lines)
    assert store.recent_jobs() == []
    assert start.started == []


@pytest.mark.parametrize("refused", ["too-large", "empty"])
def test_a_refused_submit_does_not_poison_its_idempotency_key(
    do_submit, make_settings, store: JobStore, start, refused: str
) -> None:
    """After a submit is refused, the same key with a fixed input makes a job that runs."""
    lines, limit = ([], 10) if refused == "empty" else (["vec-1", "vec-2", "vec-3"], 2)
    with pytest.raises(InputError):
        do_submit(lines, idempotency_key="nightly", settings=make_settings(max_job_ids=limit))
    job = do_submit(["vec-1", "vec-2"], idempotency_key="nightly")
    assert store.status(job.id).state == "queued"
    assert start.started == [job.id]


def test_a_reason_over_1000_characters_is_refused_before_anything(
    do_submit, fake_redis, start
) -> None:
    """A reason longer than 1000 characters: InputError, and Redis is left untouched."""
    with pytest.raises(InputError, match="1000"):
        do_submit(["vec-1"], reason="r" * 1_001)
    assert fake_redis.keys("*") == []
    assert start.started == []


def test_a_reason_of_1000_characters_is_accepted(do_submit, store: JobStore) -> None:
    """Exactly 1000 characters is allowed, and the reason is kept on the job."""
    job = do_submit(["vec-1"], reason="r" * 1_000)
    assert store.status(job.id).reason == "r" * 1_000


def test_a_reason_with_control_characters_is_refused(do_submit) -> None:
    """A reason holding control characters (a pasted escape sequence) is refused."""
    with pytest.raises(InputError, match="control characters"):
        do_submit(["vec-1"], reason="gdpr\x1b[31m")


def test_the_same_idempotency_key_twice_makes_one_job_started_once(
    do_submit, store: JobStore, start
) -> None:
    """The same ids twice with one idempotency key: the first job again; start runs once."""
    first = do_submit(["vec-1", "vec-2"], idempotency_key="nightly-2025-03-09")
    second = do_submit(["vec-1", "vec-2"], idempotency_key="nightly-2025-03-09")
    assert second.id == first.id
    assert second.report is None
    assert start.started == [first.id]
    assert store.status(first.id).total == 2
    assert store.recent_jobs() == [first.id]


def test_different_idempotency_keys_make_different_jobs(do_submit, start) -> None:
    """Two keys, two jobs."""
    a = do_submit(["vec-1"], idempotency_key="a")
    b = do_submit(["vec-1"], idempotency_key="b")
    assert a.id != b.id
    assert start.started == [a.id, b.id]


def test_an_unknown_key_alias_is_refused_before_anything(do_submit, store: JobStore, start) -> None:
    """A job for a key alias no worker holds is refused, naming the aliases that exist."""
    store.register_aliases(["tenant-a"])
    with pytest.raises(InputError, match="tenant-a"):
        do_submit(["vec-1"], key_alias="tenant-b")
    assert store.recent_jobs() == []
    assert start.started == []
