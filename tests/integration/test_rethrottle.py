"""rethrottle: the fleet's rate, or one job's, changes for every worker within a second."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ops.fake_api import RunningFakeApi
from producers import control
from producers.submit import Job
from tests.helpers import wait_until
from tests.services import WorkerProcess

pytestmark = pytest.mark.integration


def requests_between(fake: RunningFakeApi, start: float, end: float) -> int:
    """Requests the stand-in received in [start, end) seconds of its own clock."""
    return sum(1 for e in fake.api.timeline() if start <= e.t_s < end)


def stand_in_now(fake: RunningFakeApi) -> float:
    """The stand-in's clock (seconds since it started), read from its last request."""
    return fake.api.timeline()[-1].t_s


def test_rethrottling_the_fleet_takes_effect_within_a_second(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
) -> None:
    """From 20 to 80 requests/s: one second later the API sees the new rate, from every worker."""
    fake = fake_api(items=30_000)
    workers(fake.url, rate_limit=20, concurrency=6)
    workers(fake.url, rate_limit=20, concurrency=6)
    job = submit_job([f"vec-{i:07d}" for i in range(30_000)])
    wait_until(lambda: len(fake.api.timeline()) >= 70, timeout=20, what="the job at 20 req/s")
    before = stand_in_now(fake)
    # Past the workers' warm-up (first connections make early sends late, then bunched):
    # two seconds at 20 req/s, give or take a request at each edge.
    assert requests_between(fake, before - 2.5, before - 0.5) <= 2 * 20 + 2
    print(control.rethrottle(job.store, 80))
    changed = stand_in_now(fake)
    wait_until(lambda: stand_in_now(fake) >= changed + 3, timeout=10, what="3 s at the new rate")
    assert requests_between(fake, changed + 1, changed + 3) >= 2 * 60  # 3x what it was
    control.cancel(job.store, job.id)


def test_rethrottling_one_job_holds_it_under_the_fleet_rate(
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    submit_job: Callable[..., Job],
) -> None:
    """A job given 10 requests/s sends at most that, while the fleet allows 100."""
    fake = fake_api(items=30_000)
    workers(fake.url, rate_limit=100, concurrency=8)
    job = submit_job([f"vec-{i:07d}" for i in range(30_000)])
    wait_until(lambda: len(fake.api.timeline()) >= 100, timeout=20, what="the job at full rate")
    control.rethrottle(job.store, 10, job_id=job.id)
    changed = stand_in_now(fake)
    wait_until(lambda: stand_in_now(fake) >= changed + 3.5, timeout=10, what="3.5 s throttled")
    assert requests_between(fake, changed + 1.5, changed + 3.5) <= 2 * 10 + 2
    control.cancel(job.store, job.id)
