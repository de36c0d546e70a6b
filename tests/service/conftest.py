"""The service tier: `wickson-purge serve` in a subprocess over real HTTP, a real Redis
(TEST_REDIS_URL, flushed per test), real workers and the API stand-in."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import wait_until
from tests.services import *  # noqa: F403 (the real tier's fixtures)
from tests.services import ROOT, worker_env

WEBHOOK_SECRET = "whsec-test-secret"
MAX_JOB_IDS = 20_000
TOKENS = {
    # name: (token, scopes, key aliases)
    "ops": ("ops-token", ["read", "submit", "control"], ["*"]),
    "shop": ("shop-token", ["read", "submit", "control"], ["default"]),
    "viewer": ("viewer-token", ["read"], ["default"]),
    "tenant-b": ("b-token", ["read", "submit", "control"], ["tenant-b"]),
}
SWEEPS = """
[[sweep]]
name = "nightly-default"
schedule = "30 3 * * *"
reason = "retention"
file = "ids.txt"
max_ids = 1000

[[sweep]]
name = "nightly-b"
schedule = "0 4 * * *"
reason = "retention b"
file = "ids.txt"
max_ids = 1000
key_alias = "tenant-b"
"""


def token_table() -> str:
    return json.dumps({
        name: {"sha256": hashlib.sha256(token.encode()).hexdigest(), "scopes": scopes,
               "key_aliases": aliases}
        for name, (token, scopes, aliases) in TOKENS.items()
    })  # fmt: skip


@dataclass
class Service:
    """A running `wickson-purge serve`: its URL, log, and clients per token name."""

    url: str
    log_path: Path
    proc: subprocess.Popen[bytes]

    def client(self, token: str | None = "ops") -> httpx.Client:
        """An HTTP client sending the token named `token` (None: no Authorization)."""
        headers = {"Authorization": f"Bearer {TOKENS[token][0]}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def service(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`wickson-purge serve` on a free port, configured like production from its env."""
    home = tmp_path_factory.mktemp("service")
    (home / "sweeps.toml").write_text(SWEEPS)
    (home / "ids.txt").write_text("vec-0000001\n")
    env = worker_env(redis_url, "http://127.0.0.1:9")
    env.pop("WICKSON_API_KEY")  # the service never holds the API key
    env.update(
        WICKSON_SERVICE_TOKENS=token_table(),
        WICKSON_MAX_JOB_IDS=str(MAX_JOB_IDS),
        WICKSON_WEBHOOK_SECRET=WEBHOOK_SECRET,
        WICKSON_WEBHOOK_ALLOW_INSECURE="true",
        WICKSON_SWEEPS_FILE=str(home / "sweeps.toml"),
    )
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="wickson-serve-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "serve", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    running = Service(f"http://127.0.0.1:{port}", Path(log.name), proc)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}:\n{running.log()}")
        try:
            return httpx.get(f"{running.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=30, what="the service to answer")
    yield running
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    Path(log.name).unlink(missing_ok=True)


@pytest.fixture
def api(service: Service, rclient: Any) -> Iterator[Callable[..., httpx.Client]]:
    """HTTP clients of the service by token name, on a freshly flushed Redis."""
    opened: list[httpx.Client] = []

    def make(token: str | None = "ops") -> httpx.Client:
        client = service.client(token)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def owned(n: int, first: int = 0) -> list[str]:
    """Ids the stand-in's catalogue holds (owned by the test key)."""
    return [f"vec-{i:07d}" for i in range(first, first + n)]


def text_body(ids: list[str]) -> bytes:
    return ("\n".join(ids) + "\n").encode()


def wait_state(
    client: httpx.Client, job_id: str, *states: str, timeout: float = 60
) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until the job is in one of `states`; its view."""

    def reached() -> dict[str, Any] | None:
        view: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        return view if view["state"] in states else None

    return wait_until(reached, timeout=timeout, interval=0.1, what=f"job {job_id} {states}")
