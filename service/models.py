"""The pydantic models at the HTTP edge: what the API accepts and answers (OpenAPI)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.errors import describe, dotted
from worker.settings import ALIAS_PATTERN
from worker.store import JobState, Priority
from worker.webhooks import MAX_URL_LENGTH, WebhookStatus

Outcome = Literal["deleted", "not_found", "failed", "not_attempted", "pending"]
"""An id's outcome in a report; `pending` until it has one."""


class JobRequest(BaseModel):
    """A JSON submit: the ids, and optionally the parameters (else from the query)."""

    model_config = ConfigDict(extra="forbid")

    media_ids: list[str] = Field(min_length=1)
    reason: str | None = Field(None, max_length=1_000)
    priority: Priority | None = None
    dry_run: bool | None = None
    callback_url: str | None = Field(None, max_length=MAX_URL_LENGTH)
    key_alias: str | None = Field(None, pattern=ALIAS_PATTERN)


class InvalidLine(BaseModel):
    """An input line that is no valid id (recorded failed `invalid_id`, never sent)."""

    line: int
    text: str
    problem: str


class Submitted(BaseModel):
    """202: the job is queued (or, for a repeated Idempotency-Key, was queued before)."""

    job_id: str
    replayed: bool = False
    """True when an earlier request with this Idempotency-Key created the job: no counts."""
    submitted: int | None = None
    valid: int | None = None
    invalid: int | None = None
    duplicates: int | None = None
    invalid_lines: list[InvalidLine] = []
    status_url: str


class DryRunResult(BaseModel):
    """200: what a submit would do; nothing was created, nothing sent."""

    dry_run: Literal[True] = True
    submitted: int
    unique: int
    valid: int
    invalid: int
    duplicates: int
    batches: int
    key_alias: str
    priority: Priority
    rate_per_s: float
    estimate_s: float | None
    """Seconds at the fleet's current rate if no other job shares it; None at rate 0."""
    invalid_lines: list[InvalidLine] = []


class JobView(BaseModel):
    """A job's state and counters: `status --json`'s fields, plus its webhook.

    deleted + not_found + failed + not_attempted == total once the job has ended."""

    model_config = ConfigDict(extra="allow")

    job_id: str
    state: JobState
    reason: str | None = None
    key_alias: str = "default"
    priority: Priority = "normal"
    total: int = 0
    done: int = 0
    deleted: int = 0
    not_found: int = 0
    failed: int = 0
    not_attempted: int = 0
    failure_reasons: dict[str, int] = {}
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    ids_per_s: float | None = None
    webhook: WebhookStatus | None = None


class JobList(BaseModel):
    """A page of jobs, newest first; `next_offset` is None on the last page."""

    jobs: list[JobView]
    next_offset: int | None


class RetryStarted(BaseModel):
    """retry-failed: the new job (None when no failure was retryable)."""

    job_id: str | None
    retry_of: str


class RateChange(BaseModel):
    """PUT /v1/rate: the fleet's rate for a key alias (a number or 'auto'), or one job's
    own limit (`job_id`; a number, or null to lift it)."""

    model_config = ConfigDict(extra="forbid")

    rate: Annotated[float, Field(gt=0, le=10_000)] | Literal["auto"] | None = Field(
        ..., description="requests/s, 'auto' (the fleet finds the API's limit) or null"
    )
    key_alias: str = Field("default", pattern=ALIAS_PATTERN)
    job_id: str | None = Field(None, max_length=64)


class RateChanged(BaseModel):
    message: str


class Problem(BaseModel):
    """Every 4xx and 5xx: what is wrong, naming the field or line."""

    detail: str


def explain(errors: Sequence[Any]) -> str:
    """Validation errors as one part per field: 'query.priority: Input should be ...'."""
    return "; ".join(describe(errors, place=lambda loc: dotted(loc) or "body"))


class Health(BaseModel):
    status: Literal["ok"] = "ok"
