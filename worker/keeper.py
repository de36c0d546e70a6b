"""The keeper: every worker's background loop that keeps the fleet's work moving.

Every `WICKSON_KEEPER_INTERVAL_S` seconds, in every worker process that consumes (its
main process under prefork), the keeper records the worker's heartbeat and slots, and
publishes a drain message for each drain run the fleet misses while a job is runnable
(`JobStore.wake`): a lost message, a killed worker or a Redis restart is made up for
within seconds, by whichever worker is alive, with no message to wait behind and no
beat process to depend on. It also notices a Redis restart (the store may have lost its
last writes) and marks the work that may have been sent in that window.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence

import structlog

from worker.errors import PurgeError, StoreUnavailable
from worker.store import JobStore

log = structlog.get_logger("wickson_purge.keeper")

TICKET_TTL_S = 10.0
"""A drain message not started within this long is taken for lost and replaced (an
extra drain run that starts late finds its place taken and ends at once)."""


def wake_fleet(
    store: JobStore,
    publish: Callable[[Sequence[str]], object],
    *,
    worker: str = "",
    slots: int = 0,
    heartbeat_s: float = 10.0,
) -> int:
    """Publish the drain runs the fleet misses (and this worker's heartbeat); returns how
    many messages were published."""
    tickets = store.wake(
        worker=worker, slots=slots, ticket_ttl_s=TICKET_TTL_S, heartbeat_s=heartbeat_s
    )
    if tickets:
        publish_or_give_back(store, publish, tickets)
    return len(tickets)


def publish_or_give_back(
    store: JobStore, publish: Callable[[Sequence[str]], object], tickets: Sequence[str]
) -> None:
    """Publish drain messages for `tickets`; if the broker refuses them, give the tickets
    back and raise: the first keeper tick after the broker returns publishes them again,
    instead of waiting for them to lapse."""
    try:
        publish(tickets)
    except Exception:
        with contextlib.suppress(StoreUnavailable):  # then they lapse, as they would have
            for ticket in tickets:
                store.end_drain(ticket)
        raise


class Keeper:
    """The loop of one worker process: `start()` it once the worker consumes."""

    def __init__(
        self,
        store: JobStore,
        publish: Callable[[Sequence[str]], object],
        *,
        worker: str,
        slots: int,
        interval_s: float,
        lost_writes_margin: int,
        extra: Sequence[Callable[[], object]] = (),
    ) -> None:
        self.store, self.publish = store, publish
        self.worker, self.slots = worker, slots
        self.interval_s = interval_s
        self.lost_writes_margin = lost_writes_margin
        self.extra = list(extra)
        """More periodic duties (webhook delivery, progress samples), in a thread of their
        own: a slow webhook receiver must never delay a wake-up."""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def tick(self) -> int:
        """One round: heartbeat, lost-writes check, wake; returns drain messages sent."""
        if self.store.check_lost_writes(margin=self.lost_writes_margin):
            log.warning("keeper.redis_restarted", hint="unfinished batches marked possibly sent")
        return wake_fleet(
            self.store,
            self.publish,
            worker=self.worker,
            slots=self.slots,
            heartbeat_s=3 * self.interval_s,
        )

    def _wake_once(self) -> None:
        sent = self.tick()
        if sent:
            log.info("keeper.woke", drains=sent)

    def _duties_once(self) -> None:
        for duty in self.extra:
            duty()

    def _loop(self, step: Callable[[], object], what: str) -> None:
        while not self._stop.is_set():
            try:
                step()
            except (PurgeError, OSError) as exc:
                log.warning("keeper.tick_failed", loop=what, error=str(exc))
            except Exception:
                log.exception("keeper.tick_crashed", loop=what)
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        """Run the wake-up loop, and the duties' loop, in daemon threads."""
        loops = [(self._wake_once, "wake")] + (
            [(self._duties_once, "duties")] if self.extra else []
        )
        for step, what in loops:
            thread = threading.Thread(
                target=self._loop, args=(step, what), name=f"wickson-keeper-{what}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """End the loops; the worker's slots stop counting at once."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        try:
            self.store.leave(self.worker)
        except PurgeError as exc:
            log.warning("keeper.leave_failed", error=str(exc))
