"""The stand-in over real HTTP: uvicorn in a thread, driven with httpx.Client."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ops.fake_api import FakeApiConfig, RunningFakeApi, run_in_thread
from ops.fake_api.catalogue import owned_id
from tests.helpers import wait_until

BATCH = "/v1/media/batch"
_DEFAULTS = FakeApiConfig(items=1000, foreign_items=10, seed=3)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningFakeApi]:
    """One server for the module; tests get it reset to the defaults."""
    with run_in_thread(_DEFAULTS) as running:
        yield running


@pytest.fixture
def fake(server: RunningFakeApi) -> RunningFakeApi:
    server.api.update_config(_DEFAULTS.model_dump())
    server.api.reset()
    return server


@pytest.fixture
def client(fake: RunningFakeApi) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, headers={"X-Api-Key": "test-key"}, timeout=5) as http:
        yield http


def delete(client: httpx.Client, ids: list[str], **kwargs: object) -> httpx.Response:
    """DELETE a batch of ids."""
    return client.request("DELETE", BATCH, json={"media_ids": ids}, **kwargs)  # type: ignore[arg-type]


def test_delete_over_http_is_recorded_in_the_ledger(fake, client):
    """A real DELETE deletes, answers JSON, and shows in both ledgers (object and route)."""
    response = delete(client, [owned_id(1), owned_id(2), "nope"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["data"]["deleted"]["media_ids"] == [owned_id(1), owned_id(2)]
    assert fake.api.ledger().deleted == 2
    summary = client.get("/_admin/ledger").json()
    assert (summary["deleted"], summary["status_counts"]) == (2, {"200": 1})
    assert "deleted_ids" not in summary
    assert client.get("/_admin/ledger?ids=1").json()["deleted_ids"] == [owned_id(1), owned_id(2)]


def test_missing_key_header_is_401_over_http(client):
    """Without X-Api-Key the answer is 401 INVALID_API_KEY."""
    del client.headers["X-Api-Key"]
    response = client.request("DELETE", BATCH, json={"media_ids": [owned_id(1)]})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_API_KEY"


def test_429_carries_retry_after_over_http(client):
    """A rate-limited answer carries the Retry-After header."""
    client.post("/_admin/config", json={"rate": 1, "burst": 1})
    assert delete(client, [owned_id(1)]).status_code == 200
    refused = delete(client, [owned_id(2)])
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"


def test_admin_routes_steer_the_server(fake, client):
    """Script, revoke, restore, config, timeline and reset work through /_admin."""
    assert client.post("/_admin/script", json={"faults": ["500_before"]}).json() == {
        "pending": ["500_before"]
    }
    assert delete(client, [owned_id(1)]).status_code == 500
    client.post("/_admin/revoke")
    assert delete(client, [owned_id(1)]).status_code == 401
    client.post("/_admin/restore")
    assert client.post("/_admin/config", json={"max_batch": 1}).json()["max_batch"] == 1
    assert client.get("/_admin/config").json()["max_batch"] == 1
    assert delete(client, [owned_id(1), owned_id(2)]).json()["error"]["code"] == "BATCH_TOO_LARGE"
    statuses = [entry["status"] for entry in client.get("/_admin/timeline").json()["timeline"]]
    assert statuses == [500, 401, 400]
    client.post("/_admin/reset")
    assert fake.api.ledger().requests == 0


def test_admin_routes_refuse_bad_input(client):
    """An invalid config change is 422; an unknown fault is 400."""
    assert client.post("/_admin/config", json={"rate": -1}).status_code == 422
    assert client.post("/_admin/script", json={"faults": ["explode"]}).status_code == 400
    assert client.post("/_admin/script", content=b"[]").status_code == 400


def test_reset_fault_drops_the_connection_after_deleting(fake, client):
    """The reset fault deletes, then the client reads a TCP reset, not a response."""
    fake.api.script(["reset"])
    with pytest.raises(httpx.ReadError):  # ECONNRESET; a plain close would be a FIN
        delete(client, [owned_id(5)])
    assert fake.api.is_deleted(owned_id(5))
    assert delete(client, [owned_id(6)]).status_code == 200  # the next request is served


def test_slow_after_times_the_client_out_after_deleting(fake, client):
    """slow_after deletes, then answers too late for a client with a short timeout."""
    client.post("/_admin/config", json={"slow_ms": 3000})
    fake.api.script(["slow_after"])
    with pytest.raises(httpx.ReadTimeout):
        delete(client, [owned_id(7)], timeout=0.2)
    assert fake.api.is_deleted(owned_id(7))


def test_garbage_is_a_200_whose_body_is_not_json(fake, client):
    """The garbage fault answers 200 with a body that does not parse."""
    fake.api.script(["garbage"])
    response = delete(client, [owned_id(8)])
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_only_delete_is_routed_on_the_batch_path(client):
    """Other methods on the endpoint are 405."""
    assert client.get(BATCH).status_code == 405


def test_run_in_thread_serves_on_a_free_port_and_stops():
    """Port 0 picks a free port; after stop() nothing listens there."""
    with run_in_thread(FakeApiConfig(items=10)) as running:
        assert not running.url.endswith(":0")
        with httpx.Client(base_url=running.url) as http:
            assert http.get("/_admin/ledger").json()["requests"] == 0
    with httpx.Client(base_url=running.url) as http, pytest.raises(httpx.ConnectError):
        http.get("/_admin/ledger")


def test_cli_serves_until_interrupted():
    """`python -m ops.fake_api --port 0` announces its URL, serves, and exits 0 on SIGINT."""
    command = [sys.executable, "-m", "ops.fake_api", "--port", "0", "--items", "10"]
    repo = Path(__file__).resolve().parents[2]
    with subprocess.Popen(command, cwd=repo, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            announced = re.search(r" on (http://\S+) ", process.stderr.readline())
            assert announced, "the server did not announce its URL"
            with httpx.Client(base_url=announced[1]) as http:
                assert http.get("/_admin/ledger").json()["requests"] == 0
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_stop_hangs_up_at_once_on_pending_answers(caplog):
    """stop() resets a connection whose answer is still delayed, quickly and quietly."""
    errors: list[Exception] = []

    def wait_for_answer(url: str) -> None:
        with httpx.Client(base_url=url, headers={"X-Api-Key": "test-key"}) as http:
            try:
                delete(http, [owned_id(1)])
            except httpx.TransportError as error:
                errors.append(error)

    running = run_in_thread(FakeApiConfig(items=10, slow_ms=30_000))
    running.api.script(["slow_after"])
    waiting = threading.Thread(target=wait_for_answer, args=(running.url,))
    waiting.start()
    wait_until(lambda: running.api.ledger().requests == 1)
    started = time.monotonic()
    running.stop()
    waiting.join(timeout=5)
    assert time.monotonic() - started < 2
    assert [type(error) for error in errors] == [httpx.ReadError]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
