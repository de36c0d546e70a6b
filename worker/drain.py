"""A drain run: take batches from the store, one after another, for a bounded slice.

A Celery message no longer carries a batch: it wakes one drain run, which takes the
next batch of any runnable job (high priority first, jobs of a priority in turn), runs
it, and takes the next, for up to `WICKSON_SLICE_S` seconds. Then it ends, and its task
publishes its successor: messages are few (one per slice per worker slot), acks are
regular, and a warm shutdown lasts one request. A run killed mid-batch loses nothing:
its lease lapses and any live run takes the batch over. Knows nothing of Celery.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import structlog

from worker.batch import BatchRun, RunContext
from worker.errors import StoreUnavailable
from worker.logs import batch_context
from worker.store import NoBatch, Taken

log = structlog.get_logger("wickson_purge.drain")

IDLE_POLL_S = 1.0
"""Longest nap of a drain run waiting for a send slot or a handed-back batch: a pause, a
new job or a rethrottle is seen within it."""

STORE_RETRY_S = 0.5
"""Nap between tries while Redis does not answer."""


@dataclass
class DrainResult:
    """How a drain run ended: `more` if runnable work may remain (publish a successor)."""

    more: bool
    verdicts: dict[str, int] = field(default_factory=dict)


def drain(
    ctx: RunContext,
    ticket: str,
    *,
    slice_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> DrainResult:
    """Take and run batches for up to `slice_s` seconds (or until no job is runnable)."""
    settings, store = ctx.settings, ctx.store
    deadline = clock() + slice_s
    ctx = replace(ctx, slice_over=lambda: clock() >= deadline)
    result = DrainResult(more=True)
    while clock() < deadline and not ctx.shutting_down():
        try:
            taken = store.take(
                uuid.uuid4().hex,
                lease_s=settings.lease_s,
                max_runs=settings.max_deliveries,
                max_wait_s=settings.max_wait_in_task_s,
                rate=settings.rate_limit,
                burst=settings.rate_burst,
                ticket=ticket,
                ticket_ttl_s=slice_s + settings.lease_s,
            )
            if isinstance(taken, NoBatch):
                if taken.kind != "wait":
                    result.more = False
                    if taken.kind == "idle":
                        store.end_drain(ticket)
                    return result
                ctx.sleep(min(max(taken.wait_s, 0.01), IDLE_POLL_S, max(0.0, deadline - clock())))
                continue
            verdict = _run(taken, ctx)
        except StoreUnavailable as exc:
            # Whatever this run held lapses and is taken over; wait for Redis, go on.
            log.warning("drain.store_unavailable", error=str(exc))
            ctx.sleep(STORE_RETRY_S)
            continue
        except Exception:
            # A bug or an unforeseen answer: the batch's lease lapses and another run takes
            # it over, counted as a crash (a batch that keeps failing ends worker_crash_loop).
            log.exception("drain.run_crashed")
            ctx.sleep(STORE_RETRY_S)
            continue
        result.verdicts[verdict] = result.verdicts.get(verdict, 0) + 1
    return result


def _run(taken: Taken, ctx: RunContext) -> str:
    run = BatchRun(taken, ctx)
    with batch_context(run):  # every line of the run carries job, batch, attempt
        return str(run.run())
