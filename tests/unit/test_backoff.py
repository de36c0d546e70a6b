"""worker/backoff.py: full jitter, and the server's Retry-After as the law."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.backoff import full_jitter, retry_wait
from worker.errors import OutcomeUnknown, RateLimited, ServerError

unit = st.floats(0.0, 1.0, exclude_max=True)
bases = st.floats(0.001, 60.0)
caps = st.floats(0.001, 3_600.0)


@given(st.integers(-5, 10_000), bases, caps, unit)
def test_full_jitter_stays_within_zero_and_the_capped_exponential(
    attempt: int, base: float, cap: float, r: float
) -> None:
    """Attempt n waits within [0, min(cap, base * 2 ** (n - 1))], for any n (even huge)."""
    wait = full_jitter(attempt, base_s=base, cap_s=cap, rand=lambda: r)
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 1) - 1, 1_000))
    assert 0.0 <= wait <= ceiling * (1 + 1e-12)


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)])
def test_full_jitter_doubles_per_attempt(attempt: int, ceiling: float) -> None:
    """The ceiling doubles with each attempt: base, 2 base, 4 base, ..."""
    assert full_jitter(attempt, base_s=0.5, cap_s=100.0, rand=lambda: 1.0) == ceiling


def test_full_jitter_is_capped() -> None:
    """A late attempt waits at most the cap."""
    assert full_jitter(40, base_s=0.5, cap_s=30.0, rand=lambda: 1.0) == 30.0


def test_full_jitter_uses_the_whole_range() -> None:
    """The wait is the random draw times the ceiling (full jitter, not equal jitter)."""
    assert full_jitter(3, base_s=1.0, cap_s=100.0, rand=lambda: 0.0) == 0.0
    assert full_jitter(3, base_s=1.0, cap_s=100.0, rand=lambda: 0.25) == 1.0


@given(st.floats(0.0, 86_400.0), unit, st.integers(1, 50), bases, caps)
def test_retry_after_is_honoured_and_never_shortened(
    retry_after: float, r: float, attempt: int, base: float, cap: float
) -> None:
    """A 429's Retry-After is waited in full, plus at most 10% jitter, whatever the cap."""
    exc = RateLimited("429", retry_after_s=retry_after)
    wait = retry_wait(exc, attempt, base_s=base, cap_s=cap, rand=lambda: r)
    assert retry_after <= wait <= retry_after * 1.1


def test_retry_after_longer_than_the_cap_is_not_capped() -> None:
    """The cap bounds our own backoff, never the server's Retry-After."""
    exc = RateLimited("429", retry_after_s=120.0)
    assert retry_wait(exc, 1, base_s=0.5, cap_s=30.0, rand=lambda: 0.0) == 120.0


@pytest.mark.parametrize(
    "exc",
    [RateLimited("429", retry_after_s=None), ServerError("500"), OutcomeUnknown("timeout")],
)
def test_without_retry_after_the_wait_is_full_jitter(exc: Exception) -> None:
    """A 429 without Retry-After, a 5xx or an unknown outcome back off by full jitter."""
    wait = retry_wait(exc, 3, base_s=1.0, cap_s=30.0, rand=lambda: 0.5)  # type: ignore[arg-type]
    assert wait == full_jitter(3, base_s=1.0, cap_s=30.0, rand=lambda: 0.5) == 2.0
