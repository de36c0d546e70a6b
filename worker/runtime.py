"""The per-process runtime: settings, Redis, store, limiter and API client, built lazily.

A prefork child gets its own after fork (sockets must not be shared across processes);
the demo and the tests install theirs with `set_runtime`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from worker.api import WicksonClient
from worker.keys import Keys
from worker.logs import register_secret
from worker.ratelimit import FleetLimiter
from worker.settings import Settings, get_settings
from worker.store import JobStore


@dataclass
class Runtime:
    """Everything a task needs, for one process."""

    settings: Settings
    redis: redis.Redis
    store: JobStore
    limiter: FleetLimiter
    api_factory: Callable[[], WicksonClient]
    sleep: Callable[[float], None] = time.sleep
    _api: WicksonClient | None = field(default=None, repr=False)

    @property
    def api(self) -> WicksonClient:
        """The process's API client, created on first use and reused."""
        if self._api is None:
            self._api = self.api_factory()
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None


def build_runtime(
    settings: Settings,
    client: redis.Redis | None = None,
    *,
    api_factory: Callable[[], WicksonClient] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Runtime:
    """A runtime from settings; `client` and `api_factory` replace the real ones."""
    client = client or redis.Redis.from_url(settings.redis_url, health_check_interval=30)
    keys = Keys(settings.key_prefix)

    def make_api() -> WicksonClient:
        key = settings.require_api_key()
        register_secret(key.get_secret_value())
        return WicksonClient(settings.api_url, key, timeout_s=settings.request_timeout_s)

    return Runtime(
        settings=settings,
        redis=client,
        store=JobStore(
            client,
            keys=keys,
            retention_s=settings.job_retention_s,
            window=settings.dispatch_window,
        ),
        limiter=FleetLimiter(
            client,
            keys.limiter(),
            rate=settings.rate_limit,
            burst=settings.rate_burst,
            sleep=sleep,
        ),
        api_factory=api_factory or make_api,
        sleep=sleep,
    )


_current: Runtime | None = None
_owner_pid: int | None = None


def get_runtime() -> Runtime:
    """This process's runtime (built from the environment on first use, again after fork)."""
    global _current, _owner_pid
    if _current is None or _owner_pid != os.getpid():
        _current, _owner_pid = build_runtime(get_settings()), os.getpid()
    return _current


def set_runtime(runtime: Runtime | None) -> None:
    """Install `runtime` for this process (None: rebuild from the environment next time)."""
    global _current, _owner_pid
    if _current is not None and _current is not runtime:
        _current.close()
    _current, _owner_pid = runtime, os.getpid()
