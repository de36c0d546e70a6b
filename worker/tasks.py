"""The Celery tasks. Thin: the work is in `drain.py` and `batch.py`, the accounting in
`store.py`.

A message never carries a batch, ids or keys: `drain(ticket)` wakes one drain run,
which takes batches from the store for a slice and then publishes its successor. Every
task may run more than once (redelivery, duplicates): the store's leases and per-id
commits make that harmless.
"""

from __future__ import annotations

import time

import redis
import structlog
from celery import Task
from celery.exceptions import Reject

from worker.celery import DRAIN_TASK, SWEEP_TASK, WATCHDOG_TASK, app, send_drains
from worker.drain import drain
from worker.errors import BrokerUnavailable, StoreUnavailable
from worker.keeper import publish_or_give_back, wake_fleet
from worker.runtime import get_runtime

log = structlog.get_logger("wickson_purge.tasks")

REQUEUE_AFTER_S = 30.0
"""A task that found Redis away requeues its message once Redis answers, or after this
long: RabbitMQ dead-letters a message after its delivery limit, so the deliveries of
one message must span minutes of outage, not a tight loop of milliseconds."""


@app.task(name=DRAIN_TASK, bind=True, ignore_result=True, max_retries=None)
def drain_task(self: Task, ticket: str) -> str:
    """Take and run batches for one slice; publish the successor while work remains."""
    rt = get_runtime()
    result = drain(rt.context(), ticket, slice_s=rt.settings.slice_s)
    if result.more:
        try:
            publish_or_give_back(rt.store, send_drains, [ticket])
        except BrokerUnavailable as exc:
            # The broker is away: a keeper publishes a new drain once it is back.
            log.warning("drain.successor_unpublished", error=str(exc))
    return ",".join(f"{k}={v}" for k, v in sorted(result.verdicts.items())) or "idle"


@app.task(name=WATCHDOG_TASK, ignore_result=True)
def watchdog() -> int:
    """What every worker's keeper does, once more from beat: publish missing drains."""
    rt = get_runtime()
    rt.store.check_lost_writes(margin=rt.settings.lost_writes_margin)
    return wake_fleet(rt.store, send_drains)


@app.task(name=SWEEP_TASK, bind=True, ignore_result=True, max_retries=None)
def run_sweep(self: Task, name: str, tick: str) -> str:
    """Run retention sweep `name` for its scheduled minute `tick` (sent by beat): once per
    tick, however many beats sent it. Returns the run's outcome."""
    # Scheduled work of the fleet: it reads ids and submits an ordinary job.
    from worker.sweeps import run_scheduled

    rt = get_runtime()
    try:
        outcome = run_scheduled(
            name, tick, settings=rt.settings, client=rt.redis, owner=self.request.id or ""
        )
    except StoreUnavailable as exc:
        wait_for_store(rt.redis, REQUEUE_AFTER_S)
        raise Reject(str(exc), requeue=True) from None
    log.info("sweep.ran", sweep=name, tick=tick, outcome=outcome)
    return outcome


def wait_for_store(client: redis.Redis, timeout_s: float) -> bool:
    """Wait (backing off) until Redis answers or `timeout_s` passes; True if it answered."""
    deadline = time.monotonic() + timeout_s
    nap = 0.25
    while True:
        try:
            client.ping()
            return True
        except redis.RedisError:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(nap, left))
            nap = min(nap * 2, 5.0)
