"""Fixtures of the fast tier: an in-memory Redis running the real Lua scripts, a fake clock
for it, the API contract behind `httpx.MockTransport`, and factories of jobs and runs.

Nothing here sleeps: every `sleep` is the fake clock's, which moves Redis' TIME forward.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import fakeredis
import httpx
import pytest
from fakeredis.commands_mixins import server_mixin
from pydantic import SecretStr

import producers.cli
import worker.jobs
from worker import settings as settings_module
from worker.api import WicksonClient
from worker.batch import BatchRun, RunContext
from worker.keys import Keys
from worker.ratelimit import FleetLimiter
from worker.settings import Settings
from worker.store import BATCH_SIZE, BatchCommit, JobStore, Priority, Taken


def pytest_configure(config: pytest.Config) -> None:
    # Hypothesis' report of a failing example imports mypy_extensions, whose deprecation
    # warning `filterwarnings = error` turns into an INTERNALERROR hiding the failure.
    config.addinivalue_line(
        "filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
    )


API_URL = "https://api.wickson.test"
API_KEY = "wk-live-7Q2xZp9LmR4sT8vN"
"""Long and unusual, so finding it in a string cannot be a coincidence."""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No WICKSON_* / REDIS_URL from the developer's shell, no cached settings."""
    for name in list(os.environ):
        if name.startswith("WICKSON_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    settings_module.get_settings.cache_clear()
    yield
    settings_module.get_settings.cache_clear()


# -- Redis and its clock -----------------------------------------------------------------


class FakeClock:
    """Redis' TIME for the fakeredis server, moved only by `sleep` (which records)."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"negative sleep {seconds}"
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A fake clock behind fakeredis' TIME (the limiter's and the store's only clock)."""
    import time

    fake = FakeClock(time.time())
    monkeypatch.setattr(server_mixin, "time", fake)
    return fake


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    """A fresh in-memory Redis per test (its own server: no state shared between tests)."""
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    yield client
    client.close()


@pytest.fixture
def store(fake_redis: fakeredis.FakeRedis, clock: FakeClock) -> JobStore:
    """A JobStore on the fake Redis, retention one day."""
    return JobStore(fake_redis, retention_s=86_400)


def stage_and_seal(
    store: JobStore,
    ids: Sequence[str],
    *,
    invalid: dict[str, str] | None = None,
    reason: str | None = "test purge",
    priority: Priority = "normal",
    key_alias: str = "default",
) -> str:
    """A job of `ids` (already unique and valid) staged in batches of 100 and sealed (so
    runnable). Returns the job id."""
    job_id, created = store.create(reason=reason, priority=priority, key_alias=key_alias)
    assert created
    batches = [list(ids[i : i + BATCH_SIZE]) for i in range(0, len(ids), BATCH_SIZE)]
    new_invalid = store.stage(job_id, 0, batches, invalid or {})
    store.seal(
        job_id,
        batches=len(batches),
        valid=len(ids),
        invalid=new_invalid,
        submitted=len(ids) + len(invalid or {}),
    )
    return job_id


@pytest.fixture(scope="session")
def seal_job() -> Callable[..., str]:
    """`seal_job(store, ids, invalid=None, reason=..., priority=...)` (session-scoped, so
    hypothesis tests may use it): stage and seal a job on any store."""
    return stage_and_seal


@pytest.fixture
def make_job(store: JobStore) -> Callable[..., str]:
    """`make_job(ids, invalid=None, reason=..., priority=...)`: stage and seal a job."""

    def make(ids: Sequence[str], **kwargs: Any) -> str:
        return stage_and_seal(store, ids, **kwargs)

    return make


def media_ids(n: int, prefix: str = "vec-") -> list[str]:
    """`n` distinct valid ids."""
    return [f"{prefix}{k:06d}" for k in range(n)]


@pytest.fixture
def ids() -> Callable[..., list[str]]:
    """`ids(n, prefix='vec-')`: n distinct valid media ids."""
    return media_ids


# -- the API -----------------------------------------------------------------------------


class FakeWickson:
    """A MockTransport handler answering like the contract (wickson-api.md).

    It owns `existing` ids: a delete removes them; an id it does not own fails "not found".
    Requests over `max_ids` get 400 BATCH_TOO_LARGE; a request holding one of `bad_ids`
    gets 400 INVALID_MEDIA_IDS. `script` answers (responses or exceptions to raise) are
    served first, one per request.
    """

    def __init__(
        self,
        existing: Iterable[str] = (),
        *,
        key: str = API_KEY,
        max_ids: int = 100,
        bad_ids: Iterable[str] = (),
        hd_per_id: int = 2,
        ld_per_id: int = 1,
    ) -> None:
        self.existing = set(existing)
        self.key = key
        self.max_ids = max_ids
        self.bad_ids = set(bad_ids)
        self.hd_per_id, self.ld_per_id = hd_per_id, ld_per_id
        self.script: deque[httpx.Response | Exception | Callable[..., httpx.Response]] = deque()
        self.requests: list[httpx.Request] = []
        self.deleted: list[str] = []
        self.ops = 0

    def then(self, *answers: httpx.Response | Exception | Callable[..., httpx.Response]) -> None:
        """Serve these answers (in order) before answering by the contract again."""
        self.script.extend(answers)

    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of the requests received."""
        return [json.loads(r.content) for r in self.requests]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.script:
            answer = self.script.popleft()
            if isinstance(answer, Exception):
                raise answer
            if callable(answer) and not isinstance(answer, httpx.Response):
                return answer(request)
            return answer
        return self.answer(request)

    def answer(self, request: httpx.Request) -> httpx.Response:
        """The contract's answer to `request`."""
        if request.headers.get("x-api-key") != self.key:
            return self.error(401, "INVALID_API_KEY", "Invalid or missing API key")
        body = json.loads(request.content)
        media = body.get("media_ids")
        if media is None:
            return self.error(400, "MISSING_MEDIA_IDS")
        if not isinstance(media, list) or not media:
            return self.error(400, "INVALID_MEDIA_IDS")
        if len(media) > self.max_ids:
            return self.error(400, "BATCH_TOO_LARGE", f"at most {self.max_ids} ids")
        if self.bad_ids & set(media):
            return self.error(400, "INVALID_MEDIA_IDS", "media_ids holds an invalid id")
        deleted = [m for m in media if m in self.existing]
        self.existing.difference_update(deleted)
        self.deleted.extend(deleted)
        failed = {m: "Media not found" for m in media if m not in deleted}
        return self.success(deleted, failed, reason=body.get("reason"))

    def success(
        self,
        deleted: Sequence[str],
        failed: dict[str, str] | None = None,
        *,
        reason: str | None = None,
        deleted_count: int | None = None,
        failed_count: int | None = None,
    ) -> httpx.Response:
        """A 200 with these per-id outcomes."""
        failed = failed or {}
        self.ops += 1
        return httpx.Response(
            200,
            json={
                "success": True,
                "message": f"{len(deleted)} deleted, {len(failed)} failed",
                "data": {
                    "deleted": {
                        "count": len(deleted) if deleted_count is None else deleted_count,
                        "media_ids": list(deleted),
                        "hd_vectors": self.hd_per_id * len(deleted),
                        "ld_vectors": self.ld_per_id * len(deleted),
                    },
                    "failed": {
                        "count": len(failed) if failed_count is None else failed_count,
                        "media_ids": list(failed),
                        "reasons": failed,
                    },
                },
                "metadata": {
                    "operation_id": f"batch_delete_{self.ops}",
                    "timestamp": "2025-03-09T12:34:56Z",
                    "processing_time_ms": 12,
                    "reason": reason,
                },
            },
        )

    @staticmethod
    def error(
        status: int,
        code: str,
        message: str = "it went wrong",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """An error answer in the contract's envelope."""
        return httpx.Response(
            status,
            headers=headers,
            json={
                "success": False,
                "message": message,
                "error": {"code": code, "details": {"request_id": "req_12345"}},
            },
        )


@pytest.fixture
def api_key() -> str:
    """The API key every test client sends (and that must never leak)."""
    return API_KEY


@pytest.fixture
def wickson() -> type[FakeWickson]:
    """The FakeWickson class: `wickson(existing=ids, max_ids=..., bad_ids=...)`, and its
    static `wickson.error(status, code, ...)`."""
    return FakeWickson


@pytest.fixture
def make_client() -> Iterator[Callable[..., WicksonClient]]:
    """`make_client(handler, key=API_KEY)`: a WicksonClient whose transport is `handler`."""
    clients: list[WicksonClient] = []

    def make(handler: Callable[[httpx.Request], httpx.Response], key: str = API_KEY):
        client = WicksonClient(
            API_URL, SecretStr(key), timeout_s=5.0, transport=httpx.MockTransport(handler)
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# -- runs --------------------------------------------------------------------------------


def unit_settings(**overrides: Any) -> Settings:
    """Settings for unit tests: fast backoff (never longer than max_wait_in_task_s)."""
    values: dict[str, Any] = {
        "api_url": API_URL,
        "api_key": SecretStr(API_KEY),
        "rate_limit": 1_000.0,
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.1,
        "max_wait_in_task_s": 5.0,
        "max_attempts": 8,
        "lease_s": 60.0,
        "max_deliveries": 5,
        "job_retention_s": 86_400,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings() -> Settings:
    """Test settings (see `unit_settings`)."""
    return unit_settings()


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """`make_settings(**overrides)`: test settings with these fields changed."""
    return unit_settings


@pytest.fixture
def limiter(fake_redis: fakeredis.FakeRedis, clock: FakeClock) -> FleetLimiter:
    """The real fleet limiter on the fake Redis, 1000 requests/s, sleeping on the clock."""
    return FleetLimiter(fake_redis, Keys().limiter(), rate=1_000.0, sleep=clock.sleep)


def take(store: JobStore, owner: str = "run-1", settings: Settings | None = None) -> Taken:
    """The next batch any run would take (fails the test if there is none)."""
    settings = settings or unit_settings()
    taken = store.take(
        owner,
        lease_s=settings.lease_s,
        max_runs=settings.max_deliveries,
        max_wait_s=settings.max_wait_in_task_s,
        rate=settings.rate_limit,
    )
    assert isinstance(taken, Taken), f"no batch to take: {taken}"
    return taken


def commit_next(store: JobStore, commit: BatchCommit, job_id: str | None = None) -> Taken:
    """Take the next batch (of `job_id`, if given: it must be the one taken) and commit
    `commit` to it, as a run would. Returns what was taken."""
    taken = take(store, f"t-{uuid.uuid4().hex[:6]}")
    assert job_id is None or taken.job_id == job_id, (taken.job_id, job_id)
    assert not store.commit(taken.job_id, taken.index, taken.token, commit).lost
    return taken


@pytest.fixture
def make_run(
    store: JobStore, limiter: FleetLimiter, clock: FakeClock, make_client: Callable[..., Any]
) -> Callable[..., BatchRun]:
    """`make_run(api, owner='run-1', taken=None, **settings_overrides)`: a BatchRun of the
    next batch any run would take (or of `taken`), with the fake store, the real limiter,
    and `api` (a FakeWickson) behind MockTransport."""

    def make(
        api: FakeWickson, owner: str = "run-1", taken: Taken | None = None, **overrides: Any
    ) -> BatchRun:
        settings = unit_settings(**overrides)
        client = make_client(api)
        ctx = RunContext(
            store=store,
            settings=settings,
            tenant=lambda _alias: (client, limiter),
            sleep=clock.sleep,
        )
        return BatchRun(taken or take(store, owner, settings), ctx)

    return make


@pytest.fixture
def cli_store(monkeypatch: pytest.MonkeyPatch, store: JobStore, settings) -> JobStore:
    """The CLI's settings and store are the test's (fakeredis); returns the store."""
    monkeypatch.setattr(producers.cli, "get_settings", lambda: settings)
    monkeypatch.setattr(producers.cli, "store_for", lambda _settings, client=None: store)
    return store


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Jobs made runnable by a submit that woke the fleet: (job id, priority), recorded;
    no message is sent."""
    sent: list[tuple[str, str]] = []

    def wake(store: JobStore) -> None:
        known = {job for job, _ in sent}
        for job in store.active_jobs():
            if job not in known:
                sent.append((job, store.status(job).priority))

    monkeypatch.setattr(worker.jobs, "wake", wake)
    return sent
