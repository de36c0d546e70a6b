"""worker/ratelimit.py on fakeredis: the fleet's GCRA limiter, its pauses and its rate.

Redis' TIME is the fake clock's; the limiter sleeps on it, so the clock only moves when
the limiter waits, and every wait is exact.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from worker.errors import Deferred
from worker.keys import Keys
from worker.ratelimit import FleetLimiter

KEY = Keys().limiter()
US = 1e-6  # Redis' clock has microsecond resolution


@pytest.fixture
def make_limiter(fake_redis, clock) -> Callable[..., FleetLimiter]:
    """`make_limiter(rate, burst=1, sleep=clock.sleep)` on the fleet key."""

    def make(rate: float, burst: int = 1, sleep=None) -> FleetLimiter:
        return FleetLimiter(fake_redis, KEY, rate=rate, burst=burst, sleep=sleep or clock.sleep)

    return make


def send_times(limiter: FleetLimiter, clock, n: int, max_wait_s: float = 60.0) -> list[float]:
    """Acquire `n` slots one after the other; return the clock at each send."""
    times = []
    for _ in range(n):
        limiter.acquire(max_wait_s)
        times.append(clock.now)
    return times


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_first_acquire_does_not_wait(make_limiter, clock) -> None:
    """An idle limiter gives a slot at once, without sleeping."""
    assert make_limiter(rate=10).acquire(1.0) == 0.0
    assert clock.sleeps == []


def test_reservations_are_spaced_one_interval_apart(make_limiter, clock) -> None:
    """Back-to-back callers are sent 1/rate apart (10/s: 0.1 s)."""
    limiter = make_limiter(rate=10)
    assert gaps(send_times(limiter, clock, 6)) == pytest.approx([0.1] * 5, abs=2 * US)
    assert clock.sleeps == pytest.approx([0.1] * 5, abs=2 * US)


def test_callers_that_do_not_sleep_get_slots_further_and_further_away(
    make_limiter, fake_redis, clock
) -> None:
    """Reservations stack up: N callers at the same instant get N distinct slots."""
    waits: list[float] = []
    limiter = make_limiter(rate=4, sleep=waits.append)  # sleeps nothing: the clock stands
    for _ in range(4):
        limiter.acquire(10.0)
    assert [0.0, *waits] == pytest.approx([0.0, 0.25, 0.5, 0.75], abs=2 * US)


def test_a_slot_further_than_max_wait_defers_and_reserves_nothing(make_limiter, clock) -> None:
    """Too far a slot raises Deferred (with the wait) and takes no slot from others."""
    limiter = make_limiter(rate=1)
    limiter.acquire(5.0)
    with pytest.raises(Deferred) as info:
        limiter.acquire(0.5)
    assert info.value.countdown_s == pytest.approx(1.0, abs=2 * US)
    assert limiter.acquire(5.0) == pytest.approx(1.0, abs=2 * US)  # not 2.0


def test_burst_lets_n_requests_go_back_to_back(make_limiter, clock) -> None:
    """With burst N, N requests are sent at once, then the steady spacing resumes."""
    limiter = make_limiter(rate=10, burst=3)
    times = send_times(limiter, clock, 5)
    assert gaps(times) == pytest.approx([0, 0, 0.1, 0.1], abs=2 * US)


def test_set_rate_changes_the_spacing(make_limiter, clock) -> None:
    """After set_rate(2), sends are 0.5 s apart; `rate` reports the rate in force."""
    limiter = make_limiter(rate=10)
    assert limiter.rate == 10.0
    limiter.set_rate(2.0)
    assert limiter.rate == 2.0
    times = send_times(limiter, clock, 4)
    assert gaps(times) == pytest.approx([0.5] * 3, abs=2 * US)


def test_set_rate_reaches_every_worker(make_limiter, clock) -> None:
    """A rate set through one limiter object governs another on the same key."""
    make_limiter(rate=10).set_rate(1.0)
    other = make_limiter(rate=10)
    assert other.rate == 1.0
    assert gaps(send_times(other, clock, 3)) == pytest.approx([1.0, 1.0], abs=2 * US)


@pytest.mark.parametrize("rate", [0, -1.0, float("nan")])
def test_set_rate_refuses_a_rate_that_is_not_positive(make_limiter, rate: float) -> None:
    """A rate of zero, below zero or NaN is refused with ValueError."""
    with pytest.raises(ValueError, match="rate"):
        make_limiter(rate=10).set_rate(rate)


def test_pause_defers_an_acquire_that_cannot_wait_that_long(make_limiter, clock) -> None:
    """During a pause, an acquire with a shorter max wait raises Deferred for the pause."""
    limiter = make_limiter(rate=10)
    assert limiter.pause(3.0) == pytest.approx(3.0, abs=2 * US)
    with pytest.raises(Deferred) as info:
        limiter.acquire(1.0)
    assert info.value.countdown_s >= 3.0 - 2 * US
    assert clock.sleeps == []


def test_pause_makes_an_acquire_wait_it_out(make_limiter, clock) -> None:
    """During a pause, an acquire that may wait long enough sleeps until it ends."""
    limiter = make_limiter(rate=10)
    limiter.pause(2.0)
    assert limiter.acquire(5.0) == pytest.approx(2.0, abs=2 * US)
    assert sum(clock.sleeps) >= 2.0 - 2 * US


def test_after_a_pause_sends_resume_one_interval_apart(make_limiter, clock) -> None:
    """When a pause ends, waiting callers go one at a time (a 429 is congestion: the
    fleet resumes at 0.85 x 0.97 of its rate, then grows back), not as a herd."""
    limiter = make_limiter(rate=10)
    limiter.pause(1.0)
    start = clock.now
    times = send_times(limiter, clock, 4)
    assert times[0] - start == pytest.approx(1.0, abs=2 * US)
    assert gaps(times) == pytest.approx([1 / (10 * 0.97 * 0.85)] * 3, abs=0.005)


def test_a_fixed_rate_grows_back_to_its_ceiling_after_a_429(make_limiter, clock) -> None:
    """After the decrease, a configured rate is regained within about ten seconds."""
    limiter = make_limiter(rate=10)
    limiter.pause(1.0)
    assert limiter.rate == pytest.approx(10 * 0.97 * 0.85, rel=0.01)
    clock.advance(12.0)
    assert limiter.rate == pytest.approx(10.0)


def test_a_later_shorter_pause_never_shortens_a_pause(make_limiter, clock) -> None:
    """pause(10) then pause(1): the fleet stays paused for 10 s."""
    limiter = make_limiter(rate=10)
    limiter.pause(10.0)
    assert limiter.pause(1.0) == pytest.approx(10.0, abs=2 * US)
    clock.advance(5.0)
    assert limiter.paused_for() == pytest.approx(5.0, abs=2 * US)


def test_a_later_longer_pause_extends_the_pause(make_limiter, clock) -> None:
    """pause(1) then pause(10): the fleet is paused for 10 s."""
    limiter = make_limiter(rate=10)
    limiter.pause(1.0)
    assert limiter.pause(10.0) == pytest.approx(10.0, abs=2 * US)


def test_paused_for_counts_down_to_zero(make_limiter, clock) -> None:
    """`paused_for` is the pause left: it shrinks with time and ends at 0."""
    limiter = make_limiter(rate=10)
    assert limiter.paused_for() == 0.0
    limiter.pause(3.0)
    clock.advance(1.0)
    assert limiter.paused_for() == pytest.approx(2.0, abs=2 * US)
    clock.advance(5.0)
    assert limiter.paused_for() == 0.0
    assert limiter.acquire(0.0) == 0.0


def test_a_pause_that_starts_while_a_caller_sleeps_defers_it(make_limiter, clock) -> None:
    """A 429 elsewhere while we wait for our slot: we do not send, we are deferred."""
    limiter: FleetLimiter

    def sleep_then_someone_pauses(seconds: float) -> None:
        clock.sleep(seconds)
        limiter.pause(4.0)

    limiter = make_limiter(rate=10, sleep=sleep_then_someone_pauses)
    limiter.acquire(1.0)
    with pytest.raises(Deferred) as info:
        limiter.acquire(1.0)
    assert info.value.countdown_s == pytest.approx(4.0, abs=2 * US)


def test_limiters_with_different_keys_are_independent(fake_redis, clock) -> None:
    """Two scopes do not share slots or pauses."""
    a = FleetLimiter(fake_redis, Keys().limiter("a"), rate=1, sleep=clock.sleep)
    b = FleetLimiter(fake_redis, Keys().limiter("b"), rate=1, sleep=clock.sleep)
    a.acquire(5.0)
    a.pause(30.0)
    assert b.acquire(0.0) == 0.0


def test_a_pause_longer_than_an_hour_outlives_the_limiter_key(make_limiter, fake_redis) -> None:
    """The limiter's state lives at least as long as the pause it holds."""
    limiter = make_limiter(rate=10)
    limiter.pause(7_200.0)
    assert fake_redis.pttl(KEY) >= 7_200_000 - 1_000


def test_a_configured_rate_is_not_held_to_twice_the_measured_rate_before_any_429(
    make_limiter, clock
) -> None:
    """A fleet that sent 2 req/s for a second may send at its configured 1000/s at once:
    the 2x-measured cap is for the controller after a 429, not for a stated limit (a
    short job would spend its life climbing out of it)."""
    limiter = make_limiter(rate=1_000)
    for _ in range(3):  # a slow start: about 2 requests a second, measured
        limiter.acquire(1.0)
        clock.advance(0.5)
    assert gaps(send_times(limiter, clock, 5)) == pytest.approx([0.001] * 4, abs=2 * US)


def test_auto_climbs_from_its_start_by_the_measured_rate_until_the_first_429(
    make_limiter, clock
) -> None:
    """'auto' before any 429 starts at 10 req/s and doubles with what the fleet really
    sends (slow start), instead of creeping up a cubic curve for 15 s."""
    limiter = make_limiter(rate="auto")
    assert limiter.rate == pytest.approx(10)
    start = clock.now
    while clock.now - start < 3.0:  # a fleet that sends whenever it may, for 3 s
        limiter.acquire(1.0)
    # CUBIC from 10 would be at 10.7 req/s after 3 s (10 x (1 + 0.0025 x 3^3)).
    assert limiter.rate > 40
