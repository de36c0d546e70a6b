"""Settings of the fake Wickson API: catalogue, keys, rate limit, latency and faults.

Every field has a default, so ``FakeApiConfig()`` is a well-behaved server: 100,000 owned
items, no rate limit, no latency, no faults. The field descriptions double as the CLI help.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RateHeaders = Literal["retry-after", "none", "x-ratelimit", "ietf"]
RetryAfterFormat = Literal["seconds", "http-date"]

# The fault a random draw can pick, in draw order; field `p_<name>` holds its probability.
RANDOM_FAULTS = (
    "500_before",
    "500_after",
    "slow_after",
    "garbage",
    "reset",
    "lie_missing",
    "lie_both",
    "lie_unrequested",
    "lie_counts",
)


def _probability(what: str) -> Any:
    """A fault probability field, 0 by default (a fault-free server)."""
    return Field(default=0.0, ge=0.0, le=1.0, description=f"probability per request of {what}")


class FakeApiConfig(BaseModel):
    """How the stand-in behaves; immutable, change it with `updated()` (validated)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    items: int = Field(
        default=100_000,
        ge=0,
        description="media owned by the main key: vec-0000000 .. vec-<items-1>",
    )
    foreign_items: int = Field(
        default=1_000,
        ge=0,
        description="media owned by another user: oth-0000000 .. (never deletable)",
    )
    api_key: str = Field(default="test-key", min_length=1, description="key with delete capability")
    readonly_key: str = Field(
        default="readonly-key",
        min_length=1,
        description="valid key without delete capability (403)",
    )
    rate: float | None = Field(
        default=None, gt=0, description="fleet-wide token bucket in requests/s; none = unlimited"
    )
    burst: float | None = Field(
        default=None,
        ge=1,
        description="bucket capacity in requests; none = max(1, rate/10), 100 ms",
    )
    rate_headers: RateHeaders = Field(
        default="retry-after",
        description="Retry-After on 429s (retry-after), no hints (none), or also quota "
        "headers on every answer while a rate is set (x-ratelimit, ietf)",
    )
    retry_after_format: RetryAfterFormat = Field(
        default="seconds", description="Retry-After as integer delta-seconds or as an HTTP-date"
    )
    max_batch: int = Field(default=100, ge=1, description="more ids than this: 400 BATCH_TOO_LARGE")
    latency_ms: float = Field(default=0.0, ge=0, description="added before every answer, in ms")
    latency_jitter_ms: float = Field(
        default=0.0, ge=0, description="uniform +- jitter on latency, ms"
    )
    slow_ms: float = Field(
        default=5000.0, ge=0, description="extra delay of the slow_after fault, ms"
    )
    p_500_before: float = _probability("500 PROCESSING_ERROR with nothing deleted")
    p_500_after: float = _probability("deleting, then answering 500 PROCESSING_ERROR")
    p_slow_after: float = _probability("deleting, then answering only after slow_ms")
    p_garbage: float = _probability("deleting, then answering 200 with a body that is not JSON")
    p_reset: float = _probability("deleting, then resetting the connection unanswered")
    p_lie_missing: float = _probability("a 200 where one deleted id is in neither list")
    p_lie_both: float = _probability("a 200 where one deleted id is in both lists")
    p_lie_unrequested: float = _probability(
        "a 200 listing an unrequested (undeleted) id as deleted"
    )
    p_lie_counts: float = _probability("a 200 whose counts disagree with its lists")
    invalid_id_pattern: str | None = Field(
        default=None,
        description="regex (re.search): a batch with a matching id gets 400 INVALID_MEDIA_IDS",
    )
    seed: int | None = Field(default=None, description="seed of the fault/latency generator")

    @field_validator("invalid_id_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        """A pattern that does not compile fails at configuration time, not per request."""
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:  # not a ValueError: pydantic would let it escape
                raise ValueError(f"invalid regex: {error}") from error
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FakeApiConfig:
        """Faults are drawn from one uniform sample, so their probabilities must fit in 1."""
        if sum(p for _, p in self.fault_probabilities()) > 1.0 + 1e-9:
            raise ValueError("the fault probabilities p_* add up to more than 1")
        if self.api_key == self.readonly_key:
            raise ValueError("api_key and readonly_key must differ")
        return self

    @property
    def effective_burst(self) -> float:
        """Bucket capacity: `burst`, or 100 ms worth of `rate` (at least 1 request)."""
        if self.burst is not None:
            return self.burst
        return max(1.0, (self.rate or 0.0) / 10.0)

    def fault_probabilities(self) -> list[tuple[str, float]]:
        """(fault name, probability) for every random fault, in draw order."""
        return [(name, float(getattr(self, f"p_{name}"))) for name in RANDOM_FAULTS]

    def updated(self, changes: Mapping[str, Any]) -> FakeApiConfig:
        """A copy with `changes` applied and validated; raises pydantic.ValidationError."""
        return FakeApiConfig.model_validate({**self.model_dump(), **changes})
