"""A deterministic simulation of the fleet's rate control against the stand-in's limit.

The real limiter script (worker/lua/ratelimit.lua, on fakeredis) and the real stand-in
(ops/fake_api FakeApi: token bucket, Retry-After, rate-limit headers) run on one virtual
clock; `slots` workers each acquire a slot, send, wait `latency_s` and react to the
answer exactly as worker/batch.py does (a 429 pauses the fleet for Retry-After; announced
limits feed the controller). No sleeping: a 10-minute run takes a few seconds.

    python -m ops.bench.rate_sim                       # the scenarios of issue 3
    python -m ops.bench.rate_sim --server 100 --ours auto --headers none
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import fakeredis
from fakeredis.commands_mixins import server_mixin

from ops.fake_api import FakeApi, FakeApiConfig
from worker.api import announced_limit, parse_retry_after
from worker.backoff import full_jitter
from worker.ratelimit import FleetLimiter

KEY = "test-key"


class VirtualClock:
    """Seconds since the epoch, moved by hand; stands in for time.time in fakeredis."""

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        return self.now


@contextmanager
def virtual_redis_time(clock: VirtualClock) -> Iterator[None]:
    """Make fakeredis' TIME (the limiter's only clock) read the virtual clock."""
    real = server_mixin.time
    server_mixin.time = clock
    try:
        yield
    finally:
        server_mixin.time = real


@dataclass
class SimResult:
    """What the API saw: per-second successes, 429s, and the request times."""

    server_rates: list[tuple[float, float]]
    ok_per_s: list[int] = field(default_factory=list)
    r429_per_s: list[int] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    pauses: list[tuple[float, float]] = field(default_factory=list)
    """(from, until) of every fleet pause a 429 set, in seconds since the start."""

    def summary(self, skip_s: float = 20.0) -> dict[str, float]:
        """Utilisation (200s/s over the server's limit) and 429s per 1,000 requests,
        after `skip_s` seconds of convergence; the busiest sliding one-second window."""
        start = int(skip_s)
        ok = sum(self.ok_per_s[start:])
        limited = sum(self.r429_per_s[start:])
        allowed = sum(self._limit_at(s) for s in range(start, len(self.ok_per_s)))
        return {
            "utilisation": round(ok / allowed, 3) if allowed else 0.0,
            "r429_per_1000": round(1000 * limited / max(ok + limited, 1), 2),
            "max_in_1s": float(_max_window(self.sent)),
        }

    def _limit_at(self, second: int) -> float:
        rate = self.server_rates[0][1]
        for at, value in self.server_rates:
            if at <= second:
                rate = value
        return rate


def _max_window(times: Sequence[float]) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def simulate(
    *,
    server_rate: float,
    ours: float | str,
    slots: int = 16,
    latency_s: float = 0.03,
    jitter_s: float = 0.02,
    duration_s: float = 120.0,
    headers: str = "retry-after",
    changes: Sequence[tuple[float, float]] = (),
    seed: int = 1,
) -> SimResult:
    """Run the fleet for `duration_s` virtual seconds; `changes` = (at_s, new server rate)."""
    rng = random.Random(seed)
    clock = VirtualClock(1_800_000_000.0)
    api = FakeApi(
        FakeApiConfig(items=100, api_key=KEY, rate=server_rate, rate_headers=headers, seed=seed),
        clock=lambda: clock.now,
        wall_clock=lambda: clock.now,
    )
    result = SimResult(server_rates=[(0.0, server_rate), *changes])
    pending_changes = sorted(changes)
    body = json.dumps({"media_ids": ["vec-0000001"]}).encode()
    t0 = clock.now
    seconds = math.ceil(duration_s)
    result.ok_per_s = [0] * seconds
    result.r429_per_s = [0] * seconds
    with virtual_redis_time(clock):
        limiter = FleetLimiter(fakeredis.FakeRedis(), "rl", rate=ours, sleep=lambda s: None)
        # Events in time order, so that every worker sees only what already happened:
        # (time, seq, kind, slot, reply); kinds: acquire -> send -> reply -> acquire.
        seq = itertools.count()
        events: list[tuple[float, int, str, int, Any]] = [
            (t0 + i * 0.001, next(seq), "acquire", i, None) for i in range(slots)
        ]
        heapq.heapify(events)
        limited_in_a_row = [0] * slots

        def push(at: float, kind: str, slot: int, reply: Any = None) -> None:
            heapq.heappush(events, (at, next(seq), kind, slot, reply))

        while events:
            at, _, kind, slot, reply = heapq.heappop(events)
            if at - t0 >= duration_s:
                continue
            clock.now = at
            while pending_changes and pending_changes[0][0] <= at - t0:
                api.set_rate(pending_changes.pop(0)[1])
            if kind == "acquire":
                wait_us = limiter._call("acquire", max_wait_s=5.0)
                if wait_us < 0:
                    push(at - wait_us / 1e6, "acquire", slot)
                else:
                    push(at + wait_us / 1e6, "send" if wait_us == 0 else "wake", slot)
            elif kind == "wake":
                # As FleetLimiter.acquire: after sleeping, a pause set meanwhile wins.
                paused_us = limiter._call("check")
                push(at + paused_us / 1e6, "acquire" if paused_us > 0 else "send", slot)
            elif kind == "send":
                answer = api.handle(KEY, body)
                result.sent.append(at - t0)
                second = int(at - t0)
                if second < seconds:
                    counts = result.r429_per_s if answer.status == 429 else result.ok_per_s
                    counts[second] += 1
                latency = max(0.0, latency_s + rng.uniform(-jitter_s, jitter_s))
                push(at + latency, "reply", slot, answer)
            else:
                _on_reply(limiter, reply, slot, limited_in_a_row, rng, result, at - t0)
                push(at, "acquire", slot)
    return result


def _on_reply(
    limiter: FleetLimiter,
    reply: Any,
    slot: int,
    limited_in_a_row: list[int],
    rng: random.Random,
    result: SimResult,
    now_s: float,
) -> None:
    """What worker/batch.py does with an answer: feed announced limits, pause on a 429."""
    limiter.observe_limit(announced_limit(reply.headers))
    if reply.status != 429:
        limited_in_a_row[slot] = 0
        return
    limited_in_a_row[slot] += 1
    headers = {k.lower(): v for k, v in reply.headers.items()}
    hint = parse_retry_after(headers.get("retry-after"), now=0.0)
    if hint is None:
        pause = full_jitter(limited_in_a_row[slot], base_s=0.5, cap_s=30.0, rand=rng.random)
    else:  # as worker.backoff.retry_wait: never shorter, up to 10% more
        pause = hint * (1 + 0.1 * rng.random())
    left = limiter.pause(pause)
    result.pauses.append((now_s, now_s + left))


SCENARIOS: list[tuple[str, dict[str, Any]]] = [
    ("known L=20", {"server_rate": 20, "ours": 20}),
    ("known L=100", {"server_rate": 100, "ours": 100}),
    ("known L=400", {"server_rate": 400, "ours": 400, "slots": 32}),
    ("auto L=20, Retry-After only", {"server_rate": 20, "ours": "auto"}),
    ("auto L=100, Retry-After only", {"server_rate": 100, "ours": "auto"}),
    ("auto L=400, Retry-After only", {"server_rate": 400, "ours": "auto", "slots": 32}),
    ("auto L=100, no hint at all", {"server_rate": 100, "ours": "auto", "headers": "none"}),
    ("auto L=100, X-RateLimit headers",
     {"server_rate": 100, "ours": "auto", "headers": "x-ratelimit"}),
    ("auto L=100, IETF RateLimit headers", {"server_rate": 100, "ours": "auto", "headers": "ietf"}),
    ("ours 150 > L=100 (too high)", {"server_rate": 100, "ours": 150}),
    ("auto, L 100 -> 50 -> 200", {"server_rate": 100, "ours": "auto", "slots": 24,
                                  "changes": [(120.0, 50.0), (240.0, 200.0)], "duration_s": 360.0}),
    ("auto L=100 cold 60 s, Retry-After", {"server_rate": 100, "ours": "auto",
                                           "duration_s": 60.0, "skip_s": 0.0}),
    ("auto L=100 cold 60 s, no hint", {"server_rate": 100, "ours": "auto", "headers": "none",
                                       "duration_s": 60.0, "skip_s": 0.0}),
]  # fmt: skip
"""Scenarios: name, simulate() arguments (`skip_s`: seconds of convergence not counted,
20 by default; the cold ones count the climb from 10 req/s too)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", type=float, help="the server's limit, requests/s")
    parser.add_argument("--ours", default="auto", help="our rate: a number or 'auto'")
    parser.add_argument("--headers", default="retry-after")
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--slots", type=int, default=16)
    args = parser.parse_args(argv)
    ours: float | str = args.ours if args.ours == "auto" else float(args.ours)
    scenarios = SCENARIOS
    if args.server:
        scenarios = [("custom", {"server_rate": args.server, "ours": ours, "headers": args.headers,
                                 "duration_s": args.duration, "slots": args.slots})]  # fmt: skip
    print(f"{'scenario':<38} {'util':>6} {'429/1k':>7} {'max/1s':>7} {'wall s':>7}")
    for name, kwargs in scenarios:
        started = time.perf_counter()
        args = dict(kwargs)
        skip_s = float(args.pop("skip_s", 20.0))
        summary = simulate(**args).summary(skip_s)
        print(
            f"{name:<38} {summary['utilisation']:>6.3f} {summary['r429_per_1000']:>7.2f}"
            f" {summary['max_in_1s']:>7.0f} {time.perf_counter() - started:>7.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
