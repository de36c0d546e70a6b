"""The per-process runtime: settings, Redis, store, limiter and API client, built lazily.

A prefork child gets its own after fork (sockets must not be shared across processes);
the demo and the tests install theirs with `set_runtime`.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis

from worker import series, webhooks
from worker.api import WicksonClient
from worker.batch import RunContext
from worker.keeper import Keeper
from worker.logs import register_secret
from worker.ratelimit import FleetLimiter, limiter_for
from worker.settings import DEFAULT_ALIAS, Settings, get_settings
from worker.store import JobStore, store_for

SHUTTING_DOWN = threading.Event()
"""Set when the worker starts a warm shutdown: runs stop before their next request."""


def sleep_unless_shutting_down(seconds: float) -> None:
    """Sleep, or less once the worker starts a warm shutdown (the run then hands back)."""
    SHUTTING_DOWN.wait(seconds)


@dataclass
class Runtime:
    """Everything a task needs, for one process."""

    settings: Settings
    redis: redis.Redis
    store: JobStore
    api_factory: Callable[[str], WicksonClient]
    """Builds the client of one key alias."""
    sleep: Callable[[float], None] = sleep_unless_shutting_down
    _clients: dict[str, WicksonClient] = field(default_factory=dict, repr=False)
    _limiters: dict[str, FleetLimiter] = field(default_factory=dict, repr=False)

    def api(self, alias: str = DEFAULT_ALIAS) -> WicksonClient:
        """The process's client for key `alias`, created on first use and reused.
        Raises ConfigError for an alias this worker has no key for."""
        if alias not in self._clients:
            self._clients[alias] = self.api_factory(alias)
        return self._clients[alias]

    def limiter(self, alias: str = DEFAULT_ALIAS) -> FleetLimiter:
        """The fleet limiter of key `alias` (rate limits belong to a key)."""
        if alias not in self._limiters:
            self._limiters[alias] = limiter_for(self.store, self.settings, alias, sleep=self.sleep)
        return self._limiters[alias]

    def tenant(self, alias: str) -> tuple[WicksonClient, FleetLimiter]:
        """The client and the fleet limiter of key `alias`."""
        return self.api(alias), self.limiter(alias)

    def context(self) -> RunContext:
        """What the batch runs of this process share."""
        return RunContext(
            store=self.store,
            settings=self.settings,
            tenant=self.tenant,
            sleep=self.sleep,
            shutting_down=SHUTTING_DOWN.is_set,
        )

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def build_runtime(
    settings: Settings,
    client: redis.Redis | None = None,
    *,
    api_factory: Callable[[str], WicksonClient] | None = None,
    sleep: Callable[[float], None] = sleep_unless_shutting_down,
) -> Runtime:
    """A runtime from settings; `client` and `api_factory` replace the real ones."""
    client = client or redis.Redis.from_url(settings.redis_url, health_check_interval=30)

    def make_api(alias: str) -> WicksonClient:
        key = settings.require_api_key(alias)
        register_secret(key.get_secret_value())
        return WicksonClient(settings.api_url, key, timeout_s=settings.request_timeout_s)

    return Runtime(
        settings=settings,
        redis=client,
        store=store_for(settings, client),
        api_factory=api_factory or make_api,
        sleep=sleep,
    )


_current: Runtime | None = None
_owner_pid: int | None = None


_keeper: Keeper | None = None


def start_keeper(
    runtime: Runtime, publish: Callable[[Sequence[str]], object], *, slots: int
) -> Keeper:
    """Start this process's keeper (once): heartbeat, lost-writes check, wake-ups."""
    global _keeper
    if _keeper is None:
        _keeper = Keeper(
            runtime.store,
            publish,
            worker=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            slots=slots,
            interval_s=runtime.settings.keeper_interval_s,
            lost_writes_margin=runtime.settings.lost_writes_margin,
            extra=[
                lambda: webhooks.deliver_due(runtime.store, runtime.settings),
                lambda: series.record_progress(runtime.store),
            ],
        )
        _keeper.start()
    return _keeper


def stop_keeper() -> None:
    """Stop this process's keeper, if it runs (its slots stop counting at once)."""
    global _keeper
    if _keeper is not None:
        _keeper.stop()
        _keeper = None


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
