"""One request rate for the whole fleet, kept in Redis.

Every worker process of every job asks the same GCRA limiter (``lua/ratelimit.lua``) for a
send slot, on Redis' clock, in one round trip. Slots are reservations: a caller learns
when to send and sleeps until then, so N workers interleave at the set rate instead of
polling. A 429 pauses the limiter itself, so one 429 is not followed by N more; after a
pause, reservations resume one interval apart (no thundering herd).

With the rate 'auto' the same script is the fleet's one adaptive controller: CUBIC growth,
a multiplicative decrease on a 429 (once per congestion epoch, however many workers saw
it), and a ceiling at any limit the API announces in its rate-limit headers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis

from worker.errors import Deferred
from worker.scripts import SCRIPTS, reply_fields
from worker.settings import DEFAULT_ALIAS, Settings

if TYPE_CHECKING:
    from worker.store import JobStore


class FleetLimiter:
    """The fleet-wide request limiter: `acquire` before each API request."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        *,
        rate: float | str,
        burst: int = 1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.redis = client
        self.key = key
        self.default_rate = _rate_arg(rate)
        self.burst = burst
        self.sleep = sleep
        self._script = client.register_script(SCRIPTS["ratelimit"])
        self.last_rate = 0.0
        """The rate the script reported on the last call."""
        self.announced: float | None = None
        """The last limit the API announced that this process passed on."""

    def _call(
        self, op: str, max_wait_s: float = 0.0, pause_s: float = 0.0, limit: float = 0.0
    ) -> int:
        reply = reply_fields(self._script(
            keys=[self.key],
            args=[op, self.default_rate, self.burst, int(max_wait_s * 1e6), int(pause_s * 1e6),
                  limit],
        ))  # fmt: skip
        self.last_rate = float(reply["rate"])
        return int(reply["wait_us"])

    def acquire(self, max_wait_s: float) -> float:
        """Wait for a send slot; return the seconds waited. Raises Deferred when the slot
        (or a pause) is further away than `max_wait_s`."""
        wait_us = self._call("acquire", max_wait_s)
        if wait_us < 0:
            raise Deferred(-wait_us / 1e6, "next fleet send slot (rate limit or 429 pause)")
        if wait_us == 0:
            return 0.0
        waited = 0.0
        while wait_us > 0:
            self.sleep(wait_us / 1e6)
            waited += wait_us / 1e6
            # A 429 may have paused the fleet while we slept: Retry-After is law.
            wait_us = self._call("check")
            if waited + wait_us / 1e6 > max_wait_s:
                raise Deferred(wait_us / 1e6, "fleet paused by a 429", waited_s=waited)
        return waited

    def pause(self, seconds: float) -> float:
        """Pause the whole fleet for `seconds` (extends, never shortens, a pause); returns
        the pause left."""
        return self._call("pause", pause_s=seconds) / 1e6

    def paused_for(self) -> float:
        """Seconds left in the current fleet pause (0 if none)."""
        return self._call("check") / 1e6

    def observe_limit(self, limit: float | None) -> None:
        """The API announced its limit (requests/s): the fleet never goes above it. One
        round trip only when the announced limit changes (per process)."""
        if limit and limit != self.announced:
            self._call("limit", limit=limit)
            self.announced = limit

    def set_rate(self, rate: float | str) -> None:
        """Change the rate now, for every worker ('auto' to let the fleet find it); the
        controller starts afresh from it."""
        with self.redis.pipeline() as pipe:
            pipe.hset(self.key, "rate", _rate_arg(rate))
            pipe.hdel(self.key, "wmax", "t0", "c", "m_t", "m_n", "m_rate")
            pipe.execute()

    @property
    def rate(self) -> float:
        """The rate in force now, requests/s (in auto mode, where the controller is)."""
        self._call("check")
        return self.last_rate


def limiter_for(
    store: JobStore,
    settings: Settings,
    alias: str = DEFAULT_ALIAS,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> FleetLimiter:
    """The fleet limiter of key `alias` in `store`'s Redis, at the configured rate and burst
    (a rate set by `rethrottle` wins): the one way to build a limiter from settings."""
    return FleetLimiter(
        store.redis,
        store.keys.limiter(alias),
        rate=settings.rate_limit,
        burst=settings.rate_burst,
        sleep=sleep,
    )


def _rate_arg(rate: float | str) -> str:
    """A rate for the script: 'auto' or a positive number; ValueError otherwise."""
    if rate == "auto":
        return "auto"
    try:
        value = float(rate)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0:
        raise ValueError(f"rate must be 'auto' or > 0 requests/s, got {rate!r}")
    return repr(value)
