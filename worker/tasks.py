"""The Celery tasks. Thin: the work is in `batch.py`, the accounting in `store.py`.

Messages carry a job id and a batch index, never ids or keys. Every task may run more
than once (redelivery, duplicates): the store makes that harmless.
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
from worker.celery import BATCH_TASK, START_TASK, WATCHDOG_TASK, app
from worker.errors import Deferred, StoreUnavailable
from worker.runtime import SHUTTING_DOWN, get_runtime
from worker.store import JobStore
from worker.watchdog import recover

log = structlog.get_logger("wickson_purge.tasks")

UNEXPECTED_RETRY_S = 5.0
"""A bug or an unforeseen error: try again soon; the store's crash count bounds the loop."""


def publish(job_id: str, indices: Iterable[int]) -> int:
    """Queue one delete_batch message per batch index; returns how many."""
    n = 0
    for index in indices:
        delete_batch.apply_async(args=(job_id, index))
        n += 1
    return n


@app.task(name=START_TASK, bind=True, max_retries=None)
def start_job(self: Task, job_id: str) -> None:
    """Mark the job running and publish its first window of batches."""
    try:
        first = get_runtime().store.start(job_id)
    except StoreUnavailable as exc:
        raise Reject(str(exc), requeue=True) from None  # see delete_batch
    log.info("job.started", job_id=job_id, published=publish(job_id, first))


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
        result = run.run()
    except Deferred as exc:
        raise self.retry(countdown=_jitter(exc.countdown_s), exc=exc) from None
    except StoreUnavailable as exc:
        # Redis (our store, and the broker) is away: a retry could not be published, and
        # Celery drops a message whose retry failed. Leave it unacked instead: requeued
        # when Redis answers again, or restored after the visibility timeout.
        log.warning("batch.store_unavailable", job_id=job_id, batch=index, error=str(exc))
        raise Reject(str(exc), requeue=True) from None
    except Exception as exc:
        log.exception("batch.crashed", job_id=job_id, batch=index)
        _release_quietly(rt.store, job_id, index, token)
        raise self.retry(countdown=_jitter(UNEXPECTED_RETRY_S), exc=exc) from None
    publish(job_id, result.successors)
    return result.verdict


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
        start=lambda job_id: start_job.apply_async(args=(job_id,)),
    )
