"""Configuration, read once from the environment (prefix ``WICKSON_``, plus ``REDIS_URL``).

Every field names its unit and says why its default is what it is. A bad value fails at
start-up with pydantic's message, which names the variable and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from worker.errors import ConfigError, describe

REAL_API_URL = "https://api.wickson.ai"
DEFAULT_ALIAS = "default"
ALIAS_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class Settings(BaseSettings):
    """Settings of producers and workers; every worker of a fleet must share them."""

    model_config = SettingsConfigDict(
        env_prefix="WICKSON_", extra="ignore", frozen=True, populate_by_name=True
    )

    api_url: str = Field(REAL_API_URL, pattern=r"^https?://\S+$")
    """Base URL of the Wickson API; tests and the demo point it at the local stand-in."""

    api_key: SecretStr | None = None
    """The caller's key (alias 'default'). Required to run a worker, never to submit."""

    api_key_file: Path | None = None
    """A file holding the key instead (a mounted secret); wins over WICKSON_API_KEY."""

    api_keys: dict[str, SecretStr] = {}
    """More keys, for several tenants: a JSON object alias -> key. Jobs name an alias."""

    redis_url: str = Field(
        "redis://localhost:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "WICKSON_REDIS_URL"),
        pattern=r"^(redis|rediss|unix)://",
    )
    """The results store and the limiter (and the broker, unless WICKSON_BROKER_URL)."""

    broker_url: str | None = Field(None, pattern=r"^(redis|rediss|unix|amqp|amqps|pyamqp)://")
    """The Celery broker; unset: REDIS_URL (one Redis: one thing to run, back up and
    secure). `amqp://` for RabbitMQ: the broker only wakes workers, the work is in Redis."""

    broker_delivery_limit: int = Field(20, ge=2, le=10_000)
    """RabbitMQ: times one message may come back unacked (a worker killed while holding
    it) before the broker dead-letters it to `wickson-purge.dead` instead of delivering it
    again (a quorum queue's x-delivery-limit; 20 is RabbitMQ 4's default, 3.x has none)."""

    broker_consumer_timeout_s: int = Field(1_800, ge=60)
    """RabbitMQ's consumer_timeout (its default: 30 min): a delivery held unacked longer
    closes the channel. Set it to the broker's value; a drain holds one far less."""

    rate_limit: Annotated[float, Field(gt=0, le=10_000)] | Literal["auto"] = 10.0
    """Fleet-wide API requests per second, shared by every worker and job; 'auto' finds
    the API's limit from its 429s and rate-limit headers."""

    rate_burst: int = Field(1, ge=1, le=1_000)
    """Requests allowed back to back above the steady rate (1: perfectly smooth)."""

    request_timeout_s: float = Field(15.0, gt=0, le=300)
    """One API call (the API answers in ~0.2 s); must fit inside the shutdown grace."""

    shutdown_grace_s: float = Field(25.0, gt=0, le=3_600)
    """Celery's soft-shutdown window (prefork); Kubernetes gives 30 s before SIGKILL."""

    max_attempts: int = Field(8, ge=1, le=100)
    """Failed attempts (5xx, timeouts, resets, lying 200s) per batch before its unresolved
    ids are failed with the last error; 429s and 400 splits do not count."""

    backoff_base_s: float = Field(0.5, gt=0, le=60)
    """First backoff step; doubles per attempt, full jitter."""

    backoff_cap_s: float = Field(30.0, gt=0, le=3_600)
    """Longest single backoff (botocore caps at 20 s; a little more for 5xx storms)."""

    max_wait_in_task_s: float = Field(5.0, ge=0, le=60)
    """Longer waits (a backoff, a 429 pause) hand the batch back to the store, takeable
    again when the wait is over, and free the run for other batches."""

    visibility_timeout_s: int = Field(3_600, ge=10)
    """Redis transport redelivery delay for unacked messages (a drain message is held for
    one slice); recovery does not wait for it: leases do."""

    lease_s: float = Field(20.0, gt=0, le=600)
    """How long a run holds a batch without renewing (it renews before every request):
    a killed worker's batches are taken over this long after its last request started."""

    max_deliveries: int = Field(5, ge=1, le=100)
    """Runs of a batch whose lease lapsed (crashes) before its ids fail worker_crash_loop."""

    slice_s: float = Field(10.0, gt=0, le=600)
    """How long one drain run takes batches before it hands over to its successor message."""

    keeper_interval_s: float = Field(2.0, gt=0, le=60)
    """How often every worker's keeper checks that the fleet's drain runs are all alive."""

    lost_writes_margin: int = Field(512, ge=0)
    """After a Redis restart, batches past each job's frontier marked possibly sent (the
    store's lost last second: at least the fleet's batches per second, with room)."""

    watchdog_interval_s: float = Field(60.0, ge=1)
    """How often beat runs the keeper's wake-up once more (belt and braces)."""

    job_retention_s: int = Field(7 * 24 * 3_600, ge=60)
    """How long a finished job's results stay readable (no TTL while it runs)."""

    max_job_ids: int = Field(50_000_000, ge=1)
    """Guard rail: a larger job is refused before anything is sent."""

    sweeps_file: Path | None = None
    """TOML file of retention sweeps run by beat (worker/sweeps.py); none: no sweeps.
    Beat and the workers must read the same file."""

    key_prefix: str = Field("wp", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    """Prefix of every Redis key, so several deployments can share one Redis."""

    metrics_port: int | None = Field(None, ge=1, le=65_535)
    """Serve Prometheus metrics on this port, one endpoint per worker node (prefork: set
    PROMETHEUS_MULTIPROC_DIR too, see worker/metrics.py). None: no endpoint, no port opened."""

    webhook_secret: SecretStr | None = None
    """Signs completion webhooks (HMAC-SHA256); without it no callback_url is accepted."""

    webhook_allow_insecure: bool = False
    """Allow http:// and loopback or private callback URLs (tests, a trusted network only):
    by default a callback cannot reach into the fleet's own network (SSRF)."""

    webhook_timeout_s: float = Field(10.0, gt=0, le=60)
    """One delivery attempt; receivers should answer at once and work later."""

    webhook_retry_for_s: float = Field(86_400.0, ge=1, le=7 * 86_400)
    """How long after the job ended a failing callback is retried (then given up)."""

    webhook_backoff_base_s: float = Field(5.0, gt=0, le=3_600)
    """First retry delay; doubles per attempt up to `webhook_backoff_cap_s`, full jitter."""

    webhook_backoff_cap_s: float = Field(900.0, gt=0, le=86_400)
    """Longest wait between two attempts (15 min: a receiver back up is told soon)."""

    @field_validator("broker_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # docker-compose passes `WICKSON_BROKER_URL: ${WICKSON_BROKER_URL:-}` as "".
        return None if value == "" else value

    @model_validator(mode="after")
    def _aliases_are_names(self) -> Settings:
        for alias in self.api_keys:
            if not re.fullmatch(ALIAS_PATTERN, alias):
                raise ValueError(
                    f"WICKSON_API_KEYS: alias {alias!r} must be 1-64 letters, digits, '_.-'"
                )
        return self

    @model_validator(mode="after")
    def _waits_fit(self) -> Settings:
        if self.request_timeout_s >= self.shutdown_grace_s:
            raise ValueError(
                f"WICKSON_REQUEST_TIMEOUT_S={self.request_timeout_s:g} must be shorter than"
                f" WICKSON_SHUTDOWN_GRACE_S={self.shutdown_grace_s:g}: a warm shutdown must"
                " let the request in flight finish"
            )
        if self.lease_s < self.request_timeout_s + 5:
            raise ValueError(
                f"WICKSON_LEASE_S={self.lease_s:g} must be at least WICKSON_REQUEST_TIMEOUT_S"
                f"={self.request_timeout_s:g} + 5: a request must end before its lease can"
                " lapse, or another run could send the same ids at the same time"
            )
        # A drain's run hands its batch back before any request after the slice: a drain
        # holds its delivery for the slice plus one wait for a send slot and one request.
        held = self.slice_s + self.max_wait_in_task_s + self.request_timeout_s
        if self.broker_is_amqp:
            if held * 2 > self.broker_consumer_timeout_s:
                raise ValueError(
                    f"WICKSON_BROKER_CONSUMER_TIMEOUT_S={self.broker_consumer_timeout_s} must be"
                    " at least twice a drain message's longest hold (slice + a wait + a"
                    f" request: {held:g} s), or RabbitMQ closes the channel of a drain that"
                    " still runs"
                )
        elif held * 2 > self.visibility_timeout_s:
            raise ValueError(
                f"WICKSON_VISIBILITY_TIMEOUT_S={self.visibility_timeout_s} must be at least twice"
                " a drain message's longest hold (slice + a wait + a request:"
                f" {held:g} s), or the broker redelivers it while it still runs"
            )
        return self

    @property
    def broker(self) -> str:
        """The Celery broker's URL: WICKSON_BROKER_URL, else REDIS_URL."""
        return self.broker_url or self.redis_url

    @property
    def broker_is_amqp(self) -> bool:
        """Whether the broker is RabbitMQ (AMQP 0-9-1), not Redis."""
        return self.broker.split("://", 1)[0] in {"amqp", "amqps", "pyamqp"}

    def keys_by_alias(self) -> dict[str, SecretStr]:
        """Every configured key by alias ('default': WICKSON_API_KEY or its file)."""
        keys = dict(self.api_keys)
        if self.api_key_file is not None:
            try:
                text = self.api_key_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"WICKSON_API_KEY_FILE={str(self.api_key_file)!r}: {exc.strerror}"
                ) from None
            keys[DEFAULT_ALIAS] = SecretStr(text)
        elif self.api_key is not None:
            keys[DEFAULT_ALIAS] = self.api_key
        return {a: k for a, k in keys.items() if k.get_secret_value().strip()}

    def require_api_key(self, alias: str = DEFAULT_ALIAS) -> SecretStr:
        """The key for `alias`, or ConfigError naming the variable to set."""
        key = self.keys_by_alias().get(alias)
        if key is None:
            where = "WICKSON_API_KEY (or WICKSON_API_KEY_FILE)"
            if alias != DEFAULT_ALIAS:
                where = f"an entry {alias!r} in WICKSON_API_KEYS"
            raise ConfigError(f"no API key for alias {alias!r}: set {where}")
        return key


S = TypeVar("S", bound=Settings)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise ConfigError with pydantic's explanation."""
    return read_settings(Settings, **overrides)


def read_settings(kind: type[S], /, **overrides: object) -> S:
    """Read settings of `kind` (the service's have more) from the environment; raise
    ConfigError with pydantic's explanation."""
    try:
        return kind(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration:\n{explain(exc)}") from None
    except SettingsError as exc:
        # e.g. WICKSON_API_KEYS is not JSON; the message names the field, not the value.
        raise ConfigError(f"invalid configuration: {exc}") from None


_USERINFO = re.compile(r"(?<=[a-z/])[^\s/@'\"]*@", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the user and password of any URL in it masked (a REDIS_URL's
    password must never reach a message, a log line or a traceback)."""
    return _USERINFO.sub("****@", text)


def explain(exc: ValidationError) -> str:
    """One line per variable pydantic refused: its name (and the place inside its value),
    what is allowed (a union's alternatives joined by 'or'), the value given (never a
    key's, a secret's or a token's; a URL's user and password masked)."""
    return "\n".join(f"  {line}" for line in describe(exc.errors(), place=_variable, shown=_given))


def _variable(loc: Sequence[Any]) -> str:
    """The variable of a settings error, then the place inside its value ('' for a rule
    across fields); the alternative of a union field that failed is left out."""
    if not loc:
        return ""
    field = str(loc[0])
    name = "REDIS_URL" if field.lower() == "redis_url" else f"WICKSON_{field.upper()}"
    inner = loc[2:] if field in _UNION_FIELDS else loc[1:]
    return ".".join([name, *map(str, inner)])


def _is_union(annotation: Any) -> bool:
    """A union of two kinds of value at least (`X | None` is not one: no alternative)."""
    if get_origin(annotation) not in (Union, UnionType):
        return False
    return len([a for a in get_args(annotation) if a is not type(None)]) > 1


_UNION_FIELDS = frozenset(n for n, f in Settings.model_fields.items() if _is_union(f.annotation))
"""Fields whose errors pydantic places under the name of the alternative that failed."""


def _given(error: Mapping[str, Any]) -> str:
    """' (got <value>)', unless the field holds a secret or the rule spans fields (its
    input is every value, the key included)."""
    loc = error.get("loc", ())
    if not loc or any(word in str(loc[0]) for word in ("api_key", "secret", "token")):
        return ""
    return f" (got {redact(repr(error.get('input')))})"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    return load_settings()
