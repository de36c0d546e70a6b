"""The per-job progress series behind the console's chart, on a real Redis."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import redis

from producers.submit import store_for, submit
from tests.helpers import wait_until
from tests.service.conftest import owned, text_body
from worker.series import record_progress, series
from worker.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def store_settings(settings_for: Callable[..., Settings]) -> Settings:
    """A key prefix of its own: the running service samples only its own 'wp' jobs."""
    return settings_for(key_prefix="wpt")


def test_active_jobs_are_sampled_once_per_tick_however_many_processes_call(
    store_settings: Settings, rclient: redis.Redis
) -> None:
    """Two calls in one tick write one sample; the next tick another; ended jobs none."""
    store = store_for(store_settings, rclient)
    job = submit(
        owned(300), reason="r", settings=store_settings, client=rclient, start=lambda _: None
    )
    ended = submit(["bad id"], reason="r", settings=store_settings, client=rclient)
    now = float(store.status(job.id).created_at or 0) + 1
    assert record_progress(store, now=now) == 1
    assert record_progress(store, now=now + 0.1) == 0  # the same tick: another process took it
    assert record_progress(store, now=now + 2.1) == 1
    points = series(store, job.id)
    assert [p.t for p in points] == [pytest.approx(now), pytest.approx(now + 2.1)]
    assert {p.done for p in points} == {0}
    assert series(store, ended.id) == []
    assert rclient.ttl(store.keys.job_series(job.id)) > 0


def test_samples_thin_out_as_a_job_ages(store_settings: Settings, rclient: redis.Redis) -> None:
    """A job a day old is sampled about every 96 s, not every tick: its life fits the cap."""
    store = store_for(store_settings, rclient)
    job = submit(
        owned(10), reason="r", settings=store_settings, client=rclient, start=lambda _: None
    )
    day_later = float(store.status(job.id).created_at or 0) + 86_400
    written = sum(record_progress(store, now=day_later + 2 * n) for n in range(50))
    assert written == 2  # at day_later and ~96 s on (0.9 of it), over 100 s of ticks


def test_the_console_reads_the_series_the_service_records(
    api: Callable[..., httpx.Client], rclient: redis.Redis
) -> None:
    """The running service samples its jobs by itself (no worker needed for a queued job)."""
    job = (
        api("shop")
        .post("/v1/jobs", content=text_body(owned(5)), headers={"Content-Type": "text/plain"})
        .json()["job_id"]
    )
    store = store_for(Settings(), rclient)
    points = wait_until(lambda: len(series(store, job)) >= 2 and series(store, job), timeout=10)
    assert points[1].t - points[0].t >= 1.8
