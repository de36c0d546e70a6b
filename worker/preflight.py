"""Checks a worker makes before it takes any task: refuse to start rather than lose data."""

from __future__ import annotations

import sys

import redis
import structlog

from worker.errors import ConfigError, StoreUnavailable
from worker.logs import register_secret
from worker.scripts import decoded
from worker.settings import Settings
from worker.store import JobStore
from worker.sweeps import load_sweeps

log = structlog.get_logger("wickson_purge.preflight")

SAFE_POLICIES = frozenset({"noeviction"})


def check_eviction_policy(client: redis.Redis) -> None:
    """Refuse a Redis that may evict keys: queues and job state would silently vanish."""
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.ResponseError:
        # CONFIG is often disabled on managed Redis: say so, do not guess.
        log.warning("preflight.policy_unknown", hint="make sure maxmemory-policy is noeviction")
        return
    if isinstance(policy, bytes):
        policy = policy.decode()
    if policy not in SAFE_POLICIES:
        raise ConfigError(
            f"Redis maxmemory-policy is {policy!r}: it may evict queues and job state."
            " Set `maxmemory-policy noeviction` (CONFIG SET maxmemory-policy noeviction)."
        )


def check_persistence(client: redis.Redis) -> bool:
    """Warn, loudly, when Redis keeps nothing on disk: a restart would lose every job and
    queue (ids the API deleted could not be told apart from ids never sent). Returns
    whether Redis persists (AOF or snapshots)."""
    try:
        config = client.config_get("appendonly") | client.config_get("save")
    except redis.ResponseError:
        return True  # CONFIG disabled: check_eviction_policy already said to check by hand
    values = {decoded(k): decoded(v) for k, v in config.items()}
    if values.get("appendonly") == "yes" or values.get("save", "").strip():
        return True
    log.warning(
        "preflight.redis_not_persistent",
        hint="Redis keeps nothing on disk (appendonly no, save ''): a restart loses every"
        " job. Run it with `appendonly yes` and `appendfsync everysec` (README: Redis).",
    )
    print(
        "wickson-purge worker: WARNING: Redis keeps nothing on disk (appendonly no, no"
        " snapshots): a Redis restart would lose every job. Set `appendonly yes`.",
        file=sys.stderr,
        flush=True,
    )
    return False


def check_worker(settings: Settings, store: JobStore) -> None:
    """Everything a worker needs: an API key, a sweeps file that loads (if set), a
    reachable non-evicting Redis. Registers the key aliases it holds (names only) so that
    submit can check jobs against them."""
    keys = settings.keys_by_alias()
    if not keys:
        settings.require_api_key()  # raises, naming the variable
    if settings.sweeps_file is not None:
        load_sweeps(settings.sweeps_file)  # a typo fails now, not at 3 am
    for key in keys.values():
        register_secret(key.get_secret_value())
    try:
        check_eviction_policy(store.redis)
        check_persistence(store.redis)
        store.register_aliases(sorted(keys))
    except (redis.ConnectionError, StoreUnavailable) as exc:
        raise ConfigError(f"cannot reach Redis at REDIS_URL: {exc}") from None
    log.info(
        "preflight.ok", api_url=settings.api_url, rate_limit=settings.rate_limit, keys=sorted(keys)
    )
