"""The Celery tasks. Thin: the work is in `batch.py`, the accounting in `store.py`.

Messages carry a job id and a batch index, never ids or keys. Every task may run more
than once (redelivery, duplicates): the store makes that harmless.

Routing: a job's start task goes to the queue of its priority (`celery.QUEUES`); every
batch message is published to the queue its publisher came from, so a job keeps its
priority from start to end. Publishers outside a task (resume, the watchdog) read the
job's priority from its record.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Iterable

import structlog
from celery import Task
from celery.exceptions import Reject

from worker.batch import BatchRun
from worker.celery import (
    BATCH_TASK,
    QUEUES,
    START_TASK,
    SWEEP_TASK,
    WATCHDOG_TASK,
    app,
    queue_for,
)
from worker.errors import Deferred, StoreUnavailable
from worker.logs import batch_context
from worker.runtime import SHUTTING_DOWN, get_runtime
from worker.store import JobStore
from worker.watchdog import recover

log = structlog.get_logger("wickson_purge.tasks")

UNEXPECTED_RETRY_S = 5.0
"""A bug or an unforeseen error: try again soon; the store's crash count bounds the loop."""


def publish(job_id: str, indices: Iterable[int], queue: str | None = None) -> int:
    """Queue one delete_batch message per batch index on `queue` (default: the queue of
    the job's priority); returns how many."""
    n = 0
    for index in indices:
        queue = queue or job_queue(job_id)
        delete_batch.apply_async(args=(job_id, index), queue=queue)
        n += 1
    return n


def job_queue(job_id: str) -> str:
    """The broker queue of the job's priority."""
    return queue_for(get_runtime().store.priority(job_id))


def arrival_queue(task: Task, job_id: str) -> str:
    """The queue the running message came from (its successors go there too), else the
    queue of the job's priority."""
    routing_key = str((task.request.delivery_info or {}).get("routing_key"))
    return routing_key if routing_key in QUEUES.values() else job_queue(job_id)


@app.task(name=START_TASK, bind=True, max_retries=None)
def start_job(self: Task, job_id: str) -> None:
    """Mark the job running and publish its first window of batches."""
    try:
        first = get_runtime().store.start(job_id)
    except StoreUnavailable as exc:
        raise Reject(str(exc), requeue=True) from None  # see delete_batch
    try:
        published = publish(job_id, first, queue=arrival_queue(self, job_id)) if first else 0
    except Exception as exc:
        # Redelivered, the start hands back its first window (nothing is done yet).
        raise Reject(str(exc), requeue=True) from None
    log.info("job.started", job_id=job_id, published=published)


@app.task(name=BATCH_TASK, bind=True, max_retries=None)
def delete_batch(self: Task, job_id: str, index: int) -> str:
    """Delete batch `index` of job `job_id`; publish the batches it makes room for."""
    rt = get_runtime()
    token = uuid.uuid4().hex
    run = BatchRun(
        job_id,
        index,
        token,
        store=rt.store,
        settings=rt.settings,
        sleep=rt.sleep,
        tenants=lambda alias: (rt.api(alias), rt.limiter(alias)),
        stopping=SHUTTING_DOWN.is_set,
    )
    try:
        with batch_context(run):  # every line of the run carries job, batch, attempt
            result = run.run()
    except Deferred as exc:
        raise _retry_later(self, exc.countdown_s, exc) from None
    except StoreUnavailable as exc:
        # Redis (our store, and the broker) is away: a retry could not be published, and
        # Celery drops a message whose retry failed. Leave it unacked instead: requeued
        # when Redis answers again, or restored after the visibility timeout.
        log.warning(
            "batch.store_unavailable",
            job_id=job_id,
            batch=index,
            attempt=run.attempts,
            error=str(exc),
        )
        raise Reject(str(exc), requeue=True) from None
    except Exception as exc:
        log.exception("batch.crashed", job_id=job_id, batch=index, attempt=run.attempts)
        _release_quietly(rt.store, job_id, index, token)
        raise _retry_later(self, UNEXPECTED_RETRY_S, exc) from None
    if result.successors:
        try:
            publish(job_id, result.successors, queue=arrival_queue(self, job_id))
        except Exception as exc:
            # The successors are reserved in the store but not queued: keep this message
            # (redelivered, its 'done' claim hands back the unfinished successors).
            log.warning("batch.publish_failed", job_id=job_id, batch=index, error=str(exc))
            raise Reject(str(exc), requeue=True) from None
    return result.verdict


def _retry_later(task: Task, countdown_s: float, exc: Exception) -> Exception:
    """The countdown retry of `task`, or, when the retry cannot be published (the broker
    is away), a requeue of this very message: Celery would drop it (Reject, no requeue)."""
    try:
        retry: Exception = task.retry(countdown=_jitter(countdown_s), exc=exc)  # raises Retry
    except Reject as failed:
        log.warning("task.retry_unpublished", error=str(failed))
        requeue: Exception = Reject(str(failed), requeue=True)
        return requeue
    return retry


def _release_quietly(store: JobStore, job_id: str, index: int, token: str) -> None:
    # The lease also expires on its own: the retry matters more than this release.
    with contextlib.suppress(Exception):
        store.release(job_id, index, token)


def _jitter(seconds: float) -> float:
    """A countdown with up to 10% added, so retries of a paused fleet do not align."""
    return round(seconds * (1.0 + 0.1 * random.random()), 3)


@app.task(name=WATCHDOG_TASK, ignore_result=True)
def watchdog() -> dict[str, int]:
    """Requeue batches (and start tasks) whose message was lost; run by beat."""
    rt = get_runtime()
    return recover(
        rt.store,
        stale_s=rt.settings.stale_after_s,
        publish=publish,
        start=lambda job_id: start_job.apply_async(args=(job_id,), queue=job_queue(job_id)),
    )


@app.task(name=SWEEP_TASK, bind=True, ignore_result=True, max_retries=None)
def run_sweep(self: Task, name: str, tick: str) -> str:
    """Run retention sweep `name` for its scheduled minute `tick` (sent by beat): once per
    tick, however many beats sent it. Returns the run's outcome."""
    # A sweep is a producer run on the fleet: it reads ids and submits an ordinary job.
    from producers.sweeps import run_scheduled

    rt = get_runtime()
    try:
        outcome = run_scheduled(
            name, tick, settings=rt.settings, client=rt.redis, owner=self.request.id or ""
        )
    except StoreUnavailable as exc:
        raise Reject(str(exc), requeue=True) from None  # see delete_batch
    log.info("sweep.ran", sweep=name, tick=tick, outcome=outcome)
    return outcome
