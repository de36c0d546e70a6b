"""The real tier: a real Redis, real Celery worker processes, the API stand-in over HTTP.

Redis comes from TEST_REDIS_URL (default redis://127.0.0.1:6379/9; the database is
flushed before each test). Without it the tier is skipped on a laptop and fails in CI
(CI=true), like dramatiq's check_redis.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.connection import Connection
from kombu.entity import Queue
from pydantic import SecretStr

from ops.fake_api import FakeApiConfig, RunningFakeApi, run_in_thread
from producers.submit import Job, submit
from tests.helpers import wait_until
from tests.rabbit import PrivateRabbit, private_rabbit  # noqa: F401 (fixtures for conftests)
from worker.broker import (
    UNACKED_KEY,
    amqp_queue_depths,
    declare_dead_letter_queue,
    redis_queue_depths,
)
from worker.celery import QUEUES
from worker.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
API_KEY = "test-key"
BROKERS = ("redis", "amqp")
"""The brokers the integration tier and the fault tests marked `both_brokers` run on."""

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis; skip the tier without one, except in CI where it must be there."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs Redis at {REDIS_URL}")
        pytest.skip(f"no Redis at {REDIS_URL}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    """A client on a freshly flushed test database."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def fake_api() -> Iterator[Callable[..., RunningFakeApi]]:
    """Start the stand-in (in this process, over real HTTP) with the given config."""
    started: list[RunningFakeApi] = []

    def start(**config: Any) -> RunningFakeApi:
        config.setdefault("api_key", API_KEY)
        config.setdefault("seed", 1)
        running = run_in_thread(FakeApiConfig(**config))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def worker_env(
    redis_url: str, api_url: str, *, broker_url: str | None = None, **settings: Any
) -> dict[str, str]:
    """The environment of a worker process: our settings as env vars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WICKSON_")}
    env.update(
        REDIS_URL=redis_url,
        WICKSON_API_URL=api_url,
        WICKSON_API_KEY=API_KEY,
        WICKSON_BACKOFF_BASE_S="0.05",
        WICKSON_BACKOFF_CAP_S="1",
        PYTHONPATH=str(ROOT),
    )
    if broker_url is not None:
        env["WICKSON_BROKER_URL"] = broker_url
    env.update({f"WICKSON_{k.upper()}": str(v) for k, v in settings.items()})
    return env


_NODES = itertools.count(1)
"""Worker node names: unique on a host, as RabbitMQ's remote-control queues need."""


class WorkerProcess:
    """A `celery -A worker worker` subprocess, its output kept in a file."""

    def __init__(self, env: dict[str, str], *, concurrency: int, pool: str) -> None:
        self.node = f"wp{next(_NODES)}-{os.getpid()}@%h"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the worker)
            prefix="wickson-worker-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "worker", "--loglevel=INFO",
             f"--pool={pool}", f"--concurrency={concurrency}", "-n", self.node, "--without-gossip",
             "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.output()}")
            return " ready." in self.output()

        wait_until(ready, timeout=timeout, what="the worker to be ready")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL after `timeout`; the log stays readable."""
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def cleanup(self) -> None:
        self.stop()
        self.log.close()
        if os.environ.get("TEST_KEEP_WORKER_LOGS"):  # to read a failed run's workers
            print(f"worker log kept: {self.log.name}")
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log.name)


class RunningBroker:
    """The broker of a test: the store's own Redis, RabbitMQ, or a Redis of its own."""

    def __init__(self, kind: str, url: str, *, is_store: bool = False) -> None:
        self.kind, self.url = kind, url
        self.is_store = is_store
        """The store's own Redis (workers get no WICKSON_BROKER_URL: whatever their store)."""

    @property
    def amqp(self) -> bool:
        return self.kind == "amqp"

    def worker_url(self, store_url: str) -> str | None:
        """WICKSON_BROKER_URL of a worker whose store is `store_url` (None: the store)."""
        return None if self.is_store else self.url

    def depth(self, queue: str) -> int:
        """Messages waiting in `queue`."""
        if self.amqp:
            with Connection(self.url) as conn:
                return amqp_queue_depths(conn, [queue])[queue]
        client = redis.Redis.from_url(self.url)
        try:
            return redis_queue_depths(client, [queue])[queue]
        finally:
            client.close()

    def unacked(self) -> int | None:
        """Messages delivered and not acked (None: RabbitMQ does not say over AMQP)."""
        if self.amqp:
            return None
        client = redis.Redis.from_url(self.url)
        try:
            return int(client.hlen(UNACKED_KEY))
        finally:
            client.close()

    def lose_waiting_messages(self) -> None:
        """What a broker losing its messages does: every message waiting is gone."""
        if self.amqp:
            self.purge()
            return
        client = redis.Redis.from_url(self.url)
        try:
            client.delete(*QUEUES, UNACKED_KEY, "unacked_index")
        finally:
            client.close()

    def purge(self) -> None:
        """Declare our queues (as the workers do) and empty them, dead letters too."""
        from worker.celery import DEAD_QUEUE, app

        with app.connection_for_write() as conn:
            channel = conn.default_channel
            declare_dead_letter_queue(conn, DEAD_QUEUE)
            for queue in [*app.amqp.queues.values(), Queue(DEAD_QUEUE)]:
                bound = queue(channel)
                if queue.name != DEAD_QUEUE:
                    bound.declare()
                bound.purge()


def parametrize_brokers(metafunc: pytest.Metafunc) -> None:
    """Run every test of a tier that starts workers once per broker (pytest_generate_tests)."""
    if "broker_kind" in metafunc.fixturenames:
        metafunc.parametrize("broker_kind", BROKERS, indirect=True, scope="session")


@pytest.fixture(scope="session")
def broker_kind(request: pytest.FixtureRequest) -> str:
    """'redis' unless the test is parametrized over BROKERS (see `parametrize_brokers`)."""
    return str(getattr(request, "param", "redis"))


@pytest.fixture
def broker(broker_kind: str, redis_url: str) -> Iterator[RunningBroker]:
    """The test's broker, empty, with this process' Celery app publishing to it."""
    from worker.celery import configure

    if broker_kind == "amqp":
        try:
            with Connection(AMQP_URL, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1)
        except Exception as exc:
            if os.environ.get("CI"):
                pytest.fail(f"CI needs RabbitMQ at {AMQP_URL}: {exc}")
            pytest.skip(f"no RabbitMQ at {AMQP_URL}")
        test_broker = RunningBroker("amqp", AMQP_URL)
    else:
        test_broker = RunningBroker("redis", redis_url, is_store=True)
    configure(producer_settings(redis_url, test_broker))
    if test_broker.amqp:
        test_broker.purge()
    yield test_broker
    configure(producer_settings(redis_url, RunningBroker("redis", redis_url, is_store=True)))


def producer_settings(store_url: str, broker: RunningBroker, **overrides: Any) -> Settings:
    """Settings of this process (the producer side) for a store and a broker."""
    return load_settings(
        redis_url=store_url,
        broker_url=broker.worker_url(store_url),
        api_key=SecretStr(API_KEY),
        **overrides,
    )


@pytest.fixture
def workers(redis_url: str, broker: RunningBroker) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes against the test Redis (or `store`), the test's broker (or
    `via`) and a stand-in URL; stops them all."""
    started: list[WorkerProcess] = []

    def start(
        api_url: str,
        *,
        concurrency: int = 8,
        pool: str = "threads",
        wait: bool = True,
        store: str | None = None,
        via: RunningBroker | None = None,
        **settings: Any,
    ) -> WorkerProcess:
        store_url = store or redis_url
        broker_url = (via or broker).worker_url(store_url)
        proc = WorkerProcess(
            worker_env(store_url, api_url, broker_url=broker_url, **settings),
            concurrency=concurrency,
            pool=pool,
        )
        started.append(proc)
        if wait:
            proc.wait_ready()
        return proc

    yield start
    for proc in started:
        proc.cleanup()


@pytest.fixture
def settings_for(redis_url: str, broker: RunningBroker) -> Callable[..., Settings]:
    """Settings for this test process (the producer side): the test Redis and broker."""

    def make(api_url: str = "http://127.0.0.1:9", **overrides: Any) -> Settings:
        return producer_settings(redis_url, broker, api_url=api_url, **overrides)

    return make


@pytest.fixture
def submit_job(rclient: redis.Redis, settings_for: Callable[..., Settings]) -> Callable[..., Job]:
    """Submit ids through the real producer path; the wake-ups go to the test broker."""

    def do(ids: list[str], *, reason: str = "test", **kw: Any) -> Job:
        return submit(ids, reason=reason, settings=settings_for(), client=rclient, **kw)

    return do


class PrivateRedis:
    """A redis-server of this test's own on a free port (restartable, killable), by pid."""

    def __init__(self, directory: Path, *extra: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = directory
        self.extra = extra
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.dir), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, timeout=10, what=f"redis-server on port {self.port}")
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL: whatever was not on disk is gone."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., PrivateRedis]]:
    """Start private redis-servers with extra arguments; stopped (by pid) at the end."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs redis-server on PATH")
        pytest.skip("no redis-server on PATH")
    started: list[PrivateRedis] = []

    def start(*extra: str) -> PrivateRedis:
        server = PrivateRedis(tmp_path, *extra).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
