"""Fixtures for the API stand-in's tests: a fake clock and FakeApi factories."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from ops.fake_api import FakeApi, FakeApiConfig, Reply

# The contract's example timestamp, as the wall clock of every unit test.
WALL_NOW = datetime(2025, 3, 9, 12, 34, 56, tzinfo=UTC).timestamp()


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Answer:
    """A Reply with its body parsed (None if it is not JSON)."""

    reply: Reply

    @property
    def status(self) -> int:
        return self.reply.status

    @property
    def headers(self) -> dict[str, str]:
        return self.reply.headers

    @property
    def body(self) -> Any:
        try:
            return json.loads(self.reply.body)
        except ValueError:
            return None

    @property
    def code(self) -> str | None:
        return (self.body or {}).get("error", {}).get("code")

    @property
    def deleted(self) -> list[str]:
        return self.body["data"]["deleted"]["media_ids"]

    @property
    def failed(self) -> dict[str, str]:
        return self.body["data"]["failed"]["reasons"]


Send = Callable[..., Answer]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_api(clock: FakeClock) -> Callable[..., FakeApi]:
    """FakeApi factory: 1,000 owned and 10 foreign items, seeded, on the fake clocks."""

    def make(**config: Any) -> FakeApi:
        settings = FakeApiConfig(**{"items": 1000, "foreign_items": 10, "seed": 7, **config})
        return FakeApi(settings, clock=clock, wall_clock=lambda: WALL_NOW)

    return make


@pytest.fixture
def api(make_api: Callable[..., FakeApi]) -> FakeApi:
    return make_api()


@pytest.fixture
def send() -> Send:
    """send(api, ids, key=..., reason=..., body=...) -> Answer; `body` overrides the JSON."""

    def call(
        api: FakeApi,
        ids: Any = None,
        *,
        key: str | None = "test-key",
        reason: str | None = None,
        body: bytes | None = None,
    ) -> Answer:
        if body is None:
            document: dict[str, Any] = {"media_ids": ids}
            if reason is not None:
                document["reason"] = reason
            body = json.dumps(document).encode()
        return Answer(api.handle(key, body))

    return call
