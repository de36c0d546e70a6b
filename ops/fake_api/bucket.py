"""The fleet-wide token bucket that decides 429s.

Pure: the caller passes the monotonic time in, so tests drive it with a fake clock. Not
thread-safe on its own; `FakeApi` calls it under its lock.

The bucket holds up to `burst` tokens and refills at `rate` tokens per second; a request
takes one token or is refused. A refused request takes nothing, so a client that keeps
retrying on 429 is not punished beyond the wait. `rate=None` means unlimited.
"""

from __future__ import annotations

import math


class TokenBucket:
    """`rate` tokens/s up to `burst`, starting full."""

    def __init__(self, rate: float | None, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def _refill(self, now: float) -> None:
        """Add what accrued since the last look; time never runs backwards here."""
        if self.rate is not None and now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = max(self._updated, now)

    def try_take(self, now: float) -> bool:
        """Take one token if there is one; True when the request may proceed."""
        if self.rate is None:
            return True
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_s(self, now: float) -> float:
        """Seconds until one token is available (0 if one is, or if unlimited)."""
        if self.rate is None:
            return 0.0
        self._refill(now)
        return max(0.0, (1.0 - self._tokens) / self.rate)

    def remaining(self, now: float) -> int:
        """Whole requests that would pass right now (the capacity, when unlimited)."""
        self._refill(now)
        return math.floor(self._tokens)

    def full_in_s(self, now: float) -> float:
        """Seconds until the bucket is full again (0 if it is, or if unlimited)."""
        if self.rate is None:
            return 0.0
        self._refill(now)
        return (self.burst - self._tokens) / self.rate

    def reconfigure(self, rate: float | None, burst: float, now: float) -> None:
        """Switch to a new rate/burst; what accrued so far counts at the old rate."""
        self._refill(now)
        if self.rate is None:
            # Leaving "unlimited": start full rather than with a stale token count.
            self._tokens = burst
        self.rate = rate
        self.burst = burst
        self._tokens = min(self._tokens, burst)
