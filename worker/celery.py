"""The Celery application: `celery -A worker worker` finds `app` here.

Celery on Redis delivers at least once (see the README's "Delivery" section): acks are
late, a lost child requeues its task, and every task is written to run twice safely.
"""

from __future__ import annotations

import sys
from typing import Any

import structlog
from celery import Celery, signals

from worker.errors import ConfigError
from worker.settings import Settings, get_settings

QUEUE = "wickson-purge"
START_TASK = "wickson_purge.start_job"
BATCH_TASK = "wickson_purge.delete_batch"
WATCHDOG_TASK = "wickson_purge.watchdog"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from ours (one place, so demo and tests share them)."""
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        # kombu sweeps for abandoned messages every interval x throttle seconds (10 x 10
        # by default): one cheap ZRANGEBYSCORE per interval keeps recovery near the
        # visibility timeout itself.
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 6)),
        "unacked_restore_throttle": 1,
    }
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "visibility_timeout": settings.visibility_timeout_s,
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
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "beat_schedule": {
            "watchdog": {
                "task": WATCHDOG_TASK,
                "schedule": settings.watchdog_interval_s,
                # A watchdog run that waited longer than its interval is stale: skip it.
                "options": {"expires": settings.watchdog_interval_s},
            }
        },
    }


app = Celery("wickson_purge", include=["worker.tasks"])
app.conf.update(celery_config(get_settings()))


@signals.worker_init.connect
def _preflight(**_: Any) -> None:
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


@signals.worker_shutting_down.connect
def _shutting_down(**_: Any) -> None:
    from worker.runtime import SHUTTING_DOWN

    # Runs in flight finish their request, then hand their batch back: the warm
    # shutdown lasts one request (WICKSON_REQUEST_TIMEOUT_S at most), not a whole retry loop.
    SHUTTING_DOWN.set()


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    from worker.runtime import set_runtime

    set_runtime(None)  # sockets of the parent must not be shared
