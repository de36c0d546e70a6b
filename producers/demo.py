"""`wickson-purge demo`: the whole pipeline in one process, with no services running.

The API stand-in serves on a free localhost port; Celery uses its in-memory broker and
the store an in-memory Redis (fakeredis, running the same Lua scripts); a real Celery
worker runs the production tasks in threads. With `redis_url`, a real Redis is used
for both instead.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Iterator

import fakeredis
import redis
from celery.contrib.testing.worker import start_worker
from pydantic import SecretStr

from ops.fake_api import FakeApiConfig, run_in_thread
from producers.progress import ProgressPrinter, fleet_pause, summary
from producers.submit import submit
from worker.celery import app, configure, send_drains
from worker.logs import configure_logging
from worker.runtime import build_runtime, set_runtime, start_keeper, stop_keeper
from worker.settings import load_settings

FOREIGN_ITEMS = 1_000
FAULTS_NOTICE = (
    "demo: the stand-in injects faults on purpose (500s after deleting, garbage bodies) and"
    " the input holds foreign, unknown, duplicate and invalid ids: failures and a"
    ' "last error: 500" below are the demo working, not a bug'
)
DEMO_KEY = "demo-key"
"""The stand-in's key for the demo: a test double's, never a real one."""


def demo_ids(n: int, seed: int = 7) -> Iterator[str]:
    """`n` lines: mostly ids the key owns, plus foreign, unknown, duplicate and invalid ones."""
    rng = random.Random(seed)
    owned = int(n * 0.95)
    for i in range(n):
        if i < owned:
            yield f"vec-{i:07d}"
        else:
            kind = rng.choice(("foreign", "unknown", "duplicate", "duplicate", "invalid"))
            yield {
                "foreign": f"oth-{rng.randrange(FOREIGN_ITEMS):07d}",
                "unknown": f"vec-x{i:06d}",
                "duplicate": f"vec-{rng.randrange(owned):07d}",
                "invalid": f"bad id {i}",
            }[kind]


def run_demo(*, ids: int, rate: float, workers: int, redis_url: str | None) -> int:
    """Run a demo job end to end; print progress, a summary, and the ledger check."""
    configure_logging(level=logging.ERROR)  # the summary says what happened; logs would drown it
    print(FAULTS_NOTICE, file=sys.stderr)
    fake_config = FakeApiConfig(
        items=ids,
        foreign_items=FOREIGN_ITEMS,
        api_key=DEMO_KEY,
        rate=rate,
        p_500_after=0.01,
        p_garbage=0.005,
        seed=7,
    )
    with run_in_thread(fake_config) as fake:
        settings = load_settings(
            api_url=fake.url,
            api_key=SecretStr(DEMO_KEY),
            rate_limit=rate,
            redis_url=redis_url or "redis://in-memory",
            key_prefix="wp-demo",
            backoff_base_s=0.05,
            backoff_cap_s=1.0,
        )
        client = redis.Redis.from_url(redis_url) if redis_url else fakeredis.FakeRedis()
        if redis_url:
            configure(settings)
        else:
            # kombu's memory transport polls; its default second would dominate the demo.
            configure(
                settings,
                broker_url="memory://",
                broker_transport_options={"polling_interval": 0.01},
            )
        runtime = build_runtime(settings, client)
        set_runtime(runtime)
        print(
            f"demo: {ids:,} ids, API stand-in at {fake.url} limited to {rate:g} req/s,"
            f" {workers} worker threads, {'Redis ' + redis_url if redis_url else 'in-memory'}"
            " broker and store",
            file=sys.stderr,
        )
        started = time.monotonic()
        with start_worker(
            app, pool="threads", concurrency=workers, perform_ping_check=False, loglevel="ERROR"
        ):
            # A `celery worker` starts its keeper when ready; this embedded one is told to.
            start_keeper(runtime, send_drains, slots=workers)
            job = submit(
                demo_ids(ids), reason="wickson-purge demo", settings=settings, client=client
            )
            with ProgressPrinter(every_s=1.0, throttle=fleet_pause(job.store, settings)) as show:
                final = job.wait(poll_s=0.2, on_progress=show)
            stop_keeper()
        elapsed = time.monotonic() - started
        ledger = fake.api.ledger()
    set_runtime(None)
    print(summary(final))
    print(f"  wall clock: {elapsed:.1f} s, {final.answered / elapsed:,.0f} ids/s end to end")
    print(
        f"stand-in ledger: {ledger.deleted:,} deleted, {ledger.requests:,} requests,"
        f" largest request {ledger.max_batch_seen} ids"
    )
    # Ids deleted by a request whose answer the demo's faults lost are found gone by the
    # retry: counted not_found, like the unknown ids; nothing else is.
    exact = final.deleted <= ledger.deleted <= final.deleted + final.not_found
    print(
        "check: job's deleted <= ledger's deleted <= deleted + not found:"
        f" {'yes' if exact else 'NO'}; outcomes add up to unique ids:"
        f" {'yes' if final.done == final.total else 'NO'}"
    )
    return 0 if exact and final.done == final.total else 1
