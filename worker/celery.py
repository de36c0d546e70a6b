"""The Celery application: `celery -A worker worker` finds `app` here.

The broker (Redis or RabbitMQ: worker/broker.py) only wakes workers: drain messages (one
per worker slot, renewed every slice) on the queue ``wickson-purge``, beat's watchdog and
sweeps on ``wickson-purge.control`` (consumed first on Redis). Which batch runs next
(priorities, fairness, recovery) is the store's business, not the broker's. Delivery is
at least once: acks are late, a lost child requeues its task, and every task is written
to run twice safely. When the worker is ready, a keeper thread (worker/keeper.py) keeps
its slots busy.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterable
from typing import Any

import structlog
from celery import Celery, signals
from kombu.asynchronous import get_event_loop
from kombu.exceptions import KombuError

from worker.broker import amqp_config, declare_dead_letter_queue, read_broker, redis_config
from worker.errors import BrokerUnavailable, ConfigError
from worker.settings import Settings, get_settings, redact

QUEUE = "wickson-purge"
CONTROL_QUEUE = f"{QUEUE}.control"
QUEUES = (CONTROL_QUEUE, QUEUE)
"""The broker queues, in the order workers consume them (on Redis; RabbitMQ delivers
from both as messages come)."""
DEAD_QUEUE = f"{QUEUE}.dead"
"""RabbitMQ only: where a message goes after `WICKSON_BROKER_DELIVERY_LIMIT` returns unacked."""
DRAIN_TASK = "wickson_purge.drain"
WATCHDOG_TASK = "wickson_purge.watchdog"
SWEEP_TASK = "wickson_purge.run_sweep"
SWEEP_EXPIRES_S = 3_600
"""A sweep tick still queued after an hour is dropped: the next tick sweeps the same data."""


def send_drains(tickets: Iterable[str]) -> int:
    """Publish one drain message per ticket (the one way work is published); raises
    BrokerUnavailable when the broker does not take them."""
    n = 0
    try:
        for ticket in tickets:
            app.send_task(DRAIN_TASK, args=[ticket], queue=QUEUE)
            n += 1
    except (KombuError, OSError) as exc:
        raise BrokerUnavailable(f"the broker did not take a wake-up: {redact(str(exc))}") from None
    return n


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from ours (one place, so demo and tests share them)."""
    if settings.broker_is_amqp:
        broker = amqp_config(settings, QUEUES, DEAD_QUEUE)
    else:
        broker = redis_config(settings, QUEUES)
    return {
        "broker_url": settings.broker,
        "broker_connection_retry_on_startup": True,
        # JSON only: a pickle from the broker would be code execution.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_ignore_result": True,  # results live in our store, not Celery's backend
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,  # bounded by the store's crash count (poison)
        "worker_prefetch_multiplier": 1,
        "task_default_queue": QUEUE,
        "worker_soft_shutdown_timeout": settings.shutdown_grace_s,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        **broker,
        # Beat builds its schedule (watchdog, sweeps) when it starts: worker/beat.py.
        "beat_scheduler": "worker.beat:Scheduler",
    }


def configure(settings: Settings, **overrides: Any) -> None:
    """Point the app at `settings`' broker (the demo, the HTTP service and tests choose
    their settings after import), dropping connections made to another broker."""
    # The connection pool, queues, routes and producer pool are cached from the previous
    # configuration (kombu's own pools are keyed by broker URL: left open, never reused).
    app._pool = None
    app.__dict__.pop("amqp", None)
    # These settings replace the environment's: its configuration, if not read yet, never is.
    app._pending_defaults.clear()
    app.conf.update(celery_config(settings), **overrides)


def _run_by_celery() -> bool:
    """Whether this process is the `celery` command (worker, beat), not an app importing us."""
    prog = sys.argv[0] if sys.argv else ""
    return os.path.basename(prog) == "celery" or prog.endswith(
        os.path.join("celery", "__main__.py")
    )


def _configuration() -> dict[str, Any]:
    """`celery_config` of this process's settings, read when Celery first needs its
    configuration (a worker or beat starting, the first publish), never at import."""
    try:
        return celery_config(get_settings())
    except ConfigError as exc:
        if _run_by_celery():
            # Celery prints the whole traceback of an error: 40 lines before the message.
            print(f"wickson-purge: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        # An app publishing gets the exception, never SystemExit. Celery has dropped this
        # promise and kept its own defaults (an AMQP broker on localhost): leave the
        # configuration unread, so the next use reads it again (and raises again).
        app._conf, app.configured = None, False
        app._pending_defaults.append(_configuration)
        raise


app = Celery("wickson_purge", include=["worker.tasks"])
app.add_defaults(_configuration)


@signals.worker_init.connect
def _preflight(sender: Any = None, **_: Any) -> None:
    from worker.logs import configure_logging
    from worker.preflight import check_worker
    from worker.runtime import get_runtime

    if not structlog.is_configured():
        configure_logging()
    runtime = get_runtime()
    try:
        check_worker(runtime.settings, runtime.store)
    except ConfigError as exc:
        # Celery logs and swallows Exceptions raised by signal handlers: only SystemExit
        # stops a worker that must not start.
        print(f"wickson-purge worker: refusing to start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    _SLOTS[0] = int(getattr(sender, "concurrency", 0) or 1)


_SLOTS = [1]
"""This worker's concurrency (its pool's slots), read when it starts."""


@signals.worker_ready.connect
def _start_keeper(**_: Any) -> None:
    from worker.runtime import get_runtime, start_keeper

    runtime = get_runtime()
    if runtime.settings.broker_is_amqp:
        # Once the consumer is connected (the broker answers): without the queue,
        # RabbitMQ would drop what it dead-letters.
        try:
            with app.connection_for_write() as conn:
                declare_dead_letter_queue(conn, DEAD_QUEUE)
        except Exception as exc:
            structlog.get_logger("wickson_purge.broker").error(
                "broker.dead_letter_queue_undeclared", queue=DEAD_QUEUE, error=str(exc)
            )
    # The main process keeps the fleet busy: its prefork children run the drains.
    start_keeper(runtime, send_drains, slots=_SLOTS[0])


@signals.worker_shutting_down.connect
def _shutting_down(**_: Any) -> None:
    from worker.runtime import SHUTTING_DOWN, stop_keeper

    # Runs in flight finish their request, then hand their batch back: the warm
    # shutdown lasts one request (WICKSON_REQUEST_TIMEOUT_S at most), not a whole retry loop.
    SHUTTING_DOWN.set()
    stop_keeper()
    # This runs in a signal handler, while the consumer's event loop sleeps in epoll until
    # its next timer: ~10 s for an idle worker on RabbitMQ (on Redis it polls every
    # second). A call_soon from another thread wakes it, so the shutdown starts at once.
    hub = get_event_loop()
    if hub is not None:
        threading.Thread(target=hub.call_soon, args=(_nothing,), daemon=True).start()


def _nothing() -> None:
    """A callback that only wakes the event loop."""


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    from worker.runtime import set_runtime

    set_runtime(None)  # sockets of the parent must not be shared


@signals.setup_logging.connect
def _setup_logging(loglevel: int | None = None, **_: Any) -> None:
    from worker.logs import configure_logging

    # Connected, this receiver makes Celery install no handler of its own (its task
    # logger's would bypass `scrub_secrets`): its records render through ours.
    configure_logging(level=loglevel or logging.INFO)


@signals.worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    from worker.metrics import FleetCollector, serve
    from worker.runtime import get_runtime

    # Once per worker node, in the main process (prefork: it sums its children's files).
    runtime = get_runtime()
    port = runtime.settings.metrics_port
    if port is None:
        return
    settings = runtime.settings
    queues = [*app.amqp.queues, *([DEAD_QUEUE] if settings.broker_is_amqp else [])]
    log = structlog.get_logger("wickson_purge.metrics")
    try:
        broker = lambda: read_broker(settings, queues)  # noqa: E731 (read each scrape)
        serve(port, FleetCollector(runtime.store, runtime.limiter, broker))
    except OSError as exc:
        log.error("metrics.not_served", port=port, error=str(exc))
        return
    log.info("metrics.serving", port=port)


@signals.worker_process_shutdown.connect
def _child_exited(pid: int | None = None, **_: Any) -> None:
    from worker.metrics import mark_process_dead

    mark_process_dead(pid or os.getpid())
