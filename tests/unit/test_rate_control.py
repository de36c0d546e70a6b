"""The fleet's rate control, simulated on a virtual clock against the stand-in's limit.

ops/bench/rate_sim.py runs the real limiter script (fakeredis) and the real stand-in
(FakeApi) with N workers; minutes of fleet time take seconds.
"""

from __future__ import annotations

import pytest

from ops.bench.rate_sim import simulate


@pytest.mark.parametrize("limit", [20, 100])
def test_a_known_limit_is_held_without_a_single_429(limit: int) -> None:
    """Rate set to the API's limit L: >= 0.95 of L, no 429, at most L + 1 in any second."""
    summary = simulate(server_rate=limit, ours=limit, duration_s=60).summary(skip_s=5)
    assert summary["utilisation"] >= 0.95
    assert summary["r429_per_1000"] == 0
    assert summary["max_in_1s"] <= limit + 1


@pytest.mark.parametrize(
    ("limit", "headers"), [(20, "retry-after"), (100, "retry-after"), (100, "none")]
)
def test_auto_finds_an_unannounced_limit(limit: int, headers: str) -> None:
    """'auto' with only 429s to learn from: >= 0.88 of the limit, <= 10 429s per 1,000
    requests (each 429 pauses the whole fleet for a Retry-After of at least a second)."""
    summary = simulate(server_rate=limit, ours="auto", headers=headers, duration_s=120).summary()
    assert summary["utilisation"] >= 0.88
    assert summary["r429_per_1000"] <= 10


@pytest.mark.parametrize("headers", ["x-ratelimit", "ietf"])
def test_auto_takes_an_announced_limit_at_its_word(headers: str) -> None:
    """X-RateLimit-* or IETF RateLimit headers: the fleet settles at the limit, no 429."""
    summary = simulate(server_rate=100, ours="auto", headers=headers, duration_s=60).summary()
    assert summary["utilisation"] >= 0.97
    assert summary["r429_per_1000"] == 0


def test_a_rate_set_too_high_comes_down_to_the_limit() -> None:
    """Configured 150 against a limit of 100: the configured rate is a ceiling, not a target."""
    summary = simulate(server_rate=100, ours=150, duration_s=90).summary()
    assert summary["utilisation"] >= 0.85
    assert summary["r429_per_1000"] <= 10


def test_auto_follows_a_limit_that_changes_mid_job() -> None:
    """The API lowers its limit from 100 to 50, then raises it to 200: the fleet follows."""
    result = simulate(
        server_rate=100, ours="auto", slots=24, duration_s=200,
        changes=[(70.0, 50.0), (130.0, 200.0)],
    )  # fmt: skip
    assert result.summary()["r429_per_1000"] <= 10
    low = sum(result.ok_per_s[90:130]) / 40
    high = sum(result.ok_per_s[170:200]) / 30
    assert 0.75 * 50 <= low <= 50.5
    assert high >= 0.75 * 200


def test_no_request_is_sent_while_a_retry_after_pause_is_in_force() -> None:
    """From the moment a 429 reaches the fleet until its Retry-After has passed, no worker
    sends anything (requests already on the wire excepted: they were sent before)."""
    result = simulate(server_rate=20, ours="auto", headers="retry-after", duration_s=60)
    assert result.pauses, "the scenario must provoke 429s"
    assert max(until - start for start, until in result.pauses) >= 1.0
    for start, until in result.pauses:
        assert not [t for t in result.sent if start < t < until - 1e-6]  # Redis keeps µs
