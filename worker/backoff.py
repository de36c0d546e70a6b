"""How long to wait before retrying: pure functions, no I/O.

Full jitter (AWS Architecture blog, "Exponential Backoff and Jitter"): attempt n waits a
uniformly random time in ``[0, min(cap, base * 2 ** (n - 1))]``. A server's Retry-After
overrides it: it is the law, and it is never shortened.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from worker.errors import ApiError, RateLimited


def full_jitter(
    attempt: int, *, base_s: float, cap_s: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number `attempt` (1-based), full jitter, capped."""
    exponent = min(max(attempt, 1) - 1, 62)  # 2 ** 62 already dwarfs any cap
    return rand() * min(cap_s, base_s * 2.0**exponent)


def retry_wait(
    error: ApiError,
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after `error`: the server's Retry-After when it gave one (plus up to
    10% jitter, so a paused fleet does not resume in step), else full jitter."""
    if isinstance(error, RateLimited) and error.retry_after_s is not None:
        return error.retry_after_s * (1.0 + 0.1 * rand())
    return full_jitter(attempt, base_s=base_s, cap_s=cap_s, rand=rand)
