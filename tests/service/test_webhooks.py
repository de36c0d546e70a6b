"""Completion webhooks against a real Redis, real workers and a local receiver: signed,
retried with backoff, delivered once however many processes deliver, given up in time."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from ops.fake_api import RunningFakeApi
from producers.submit import store_for
from tests.helpers import wait_until
from tests.service.conftest import WEBHOOK_SECRET, owned, text_body, wait_state
from tests.services import WorkerProcess
from worker.settings import Settings, load_settings
from worker.store import JobStore
from worker.webhooks import SIGNATURE_HEADER, deliver_due, verify

pytestmark = pytest.mark.integration

Api = Callable[..., httpx.Client]


@dataclass
class Receiver:
    """A local HTTP endpoint answering scripted statuses (then 200), recording each POST."""

    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    url: str = ""

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        self.posts.append((headers, body))
        self.times.append(time.monotonic())
        time.sleep(self.delay_s)  # a slow receiver, on purpose (the race under test)
        return self.statuses.pop(0) if self.statuses else 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on a free local port (http: the service allows it in tests)."""
    target = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = target.answer(dict(self.headers.items()), body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    target.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/purge"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield target
    server.shutdown()
    server.server_close()


@pytest.fixture
def hook_settings(redis_url: str) -> Callable[..., Settings]:
    """The deliverer's settings: the service's secret, fast backoff for tests."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "webhook_secret": SecretStr(WEBHOOK_SECRET),
            "webhook_allow_insecure": True,
            "webhook_backoff_base_s": 0.05,
            "webhook_backoff_cap_s": 0.2,
            "webhook_timeout_s": 5,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


def deliver_until(store: JobStore, settings: Settings, done: Callable[[], bool]) -> None:
    """Call deliver_due as the fleet's loop does, until `done`."""

    def step() -> bool:
        deliver_due(store, settings)
        return done()

    wait_until(step, timeout=30, interval=0.05, what="the webhook's delivery")


def submit_with_callback(api: Api, url: str, ids: list[str]) -> str:
    answer = api("shop").post(
        "/v1/jobs",
        content=text_body(ids),
        headers={"Content-Type": "text/plain"},
        params={"reason": "hooked", "callback_url": url},
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["job_id"])


def test_a_finished_job_posts_its_signed_final_status_once(
    api: Api,
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    receiver: Receiver,
    hook_settings: Callable[..., Settings],
    rclient: redis.Redis,
) -> None:
    """The receiver gets one POST once the job ends: its final status, a signature that
    verifies with the secret; the job's status records one attempt, delivered."""
    fake = fake_api(items=1_000)
    workers(fake.url, rate_limit=200, concurrency=2)
    job_id = submit_with_callback(api, receiver.url, owned(500))
    settings = hook_settings()
    store = store_for(settings, rclient)
    assert deliver_due(store, settings) == 0  # still running: nothing is sent yet
    wait_state(api("shop"), job_id, "completed")
    deliver_until(store, settings, lambda: len(receiver.posts) == 1)
    headers, body = receiver.posts[0]
    assert verify(WEBHOOK_SECRET, headers[SIGNATURE_HEADER], body)
    assert not verify("another secret", headers[SIGNATURE_HEADER], body)
    assert not verify(WEBHOOK_SECRET, headers[SIGNATURE_HEADER], body + b" ")
    payload = json.loads(body)
    assert payload["event"] == "job.finished"
    assert (payload["job"]["job_id"], payload["job"]["state"]) == (job_id, "completed")
    assert (payload["job"]["deleted"], payload["job"]["not_found"]) == (500, 0)
    assert headers["Wickson-Delivery"] == job_id
    hook = api("shop").get(f"/v1/jobs/{job_id}").json()["webhook"]
    assert (hook["state"], hook["attempts"], hook["url"]) == ("delivered", 1, receiver.url)
    assert hook["delivered_at"] is not None
    assert deliver_due(store, settings) == 0
    assert len(receiver.posts) == 1


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(
    api: Api, receiver: Receiver, hook_settings: Callable[..., Settings], rclient: redis.Redis
) -> None:
    """500, 500, then 200: three attempts, each recorded, one delivery; the status shows
    the last error while it retries."""
    receiver.statuses = [500, 500]
    job_id = submit_with_callback(api, receiver.url, ["bad id"])  # ends at once: no valid id
    settings = hook_settings()
    store = store_for(settings, rclient)
    deliver_until(store, settings, lambda: len(receiver.posts) >= 1)
    hook = api("shop").get(f"/v1/jobs/{job_id}").json()["webhook"]
    assert (hook["state"], hook["attempts"], hook["last_error"]) == ("pending", 1, "HTTP 500")
    assert hook["next_at"] is not None
    deliver_until(store, settings, lambda: len(receiver.posts) == 3)
    hook = api("shop").get(f"/v1/jobs/{job_id}").json()["webhook"]
    assert (hook["state"], hook["attempts"]) == ("delivered", 3)
    gaps = [b - a for a, b in zip(receiver.times, receiver.times[1:], strict=False)]
    assert min(gaps) >= 0.025  # half the first backoff step at least: never back to back
    for _ in range(5):
        deliver_due(store, settings)
    assert len(receiver.posts) == 3


def test_many_deliverers_at_once_deliver_once(
    api: Api, receiver: Receiver, hook_settings: Callable[..., Settings], rclient: redis.Redis
) -> None:
    """Eight threads calling deliver_due in loops against a slow receiver: one POST."""
    receiver.delay_s = 0.3
    job_id = submit_with_callback(api, receiver.url, ["bad id"])
    settings = hook_settings()
    stop = threading.Event()

    def loop() -> None:
        store = store_for(settings, redis.Redis.from_url(settings.redis_url))
        while not stop.is_set():
            deliver_due(store, settings)

    threads = [threading.Thread(target=loop) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        wait_until(
            lambda: api("shop").get(f"/v1/jobs/{job_id}").json()["webhook"]["state"] == "delivered",
            timeout=30,
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert len(receiver.posts) == 1
    assert api("shop").get(f"/v1/jobs/{job_id}").json()["webhook"]["attempts"] == 1


def test_a_receiver_that_never_answers_is_given_up_after_the_retry_window(
    api: Api, receiver: Receiver, hook_settings: Callable[..., Settings], rclient: redis.Redis
) -> None:
    """Always 503: retried until webhook_retry_for_s after the job ended, then gave_up,
    and never tried again."""
    receiver.statuses = [503] * 1_000
    job_id = submit_with_callback(api, receiver.url, ["bad id"])
    settings = hook_settings(webhook_retry_for_s=1)
    store = store_for(settings, rclient)

    def gave_up() -> bool:
        return api("shop").get(f"/v1/jobs/{job_id}").json()["webhook"]["state"] == "gave_up"

    deliver_until(store, settings, gave_up)
    sent = len(receiver.posts)
    assert sent >= 2
    hook = api("shop").get(f"/v1/jobs/{job_id}").json()["webhook"]
    assert (hook["attempts"], hook["last_error"]) == (sent, "HTTP 503")
    deliver_due(store, settings)
    assert len(receiver.posts) == sent


def test_a_callback_into_the_fleets_network_is_refused_at_delivery(
    api: Api, receiver: Receiver, hook_settings: Callable[..., Settings], rclient: redis.Redis
) -> None:
    """A deliverer without WICKSON_WEBHOOK_ALLOW_INSECURE never posts to a loopback
    http URL: the webhook gives up at once, saying why."""
    job_id = submit_with_callback(api, receiver.url, ["bad id"])
    settings = hook_settings(webhook_allow_insecure=False)
    store = store_for(settings, rclient)
    deliver_until(
        store,
        settings,
        lambda: api("shop").get(f"/v1/jobs/{job_id}").json()["webhook"]["state"] == "gave_up",
    )
    assert receiver.posts == []
    error = api("shop").get(f"/v1/jobs/{job_id}").json()["webhook"]["last_error"]
    assert error.startswith("refused:")
    assert "https" in error
