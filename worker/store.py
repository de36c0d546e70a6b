"""The results store: jobs, their batches and every id's outcome, in Redis.

All accounting happens inside Lua scripts (``worker/lua``), one round trip each, so a
redelivered, re-run or concurrent batch can never count an id twice, and a job finishes
exactly once. This module knows nothing of HTTP or Celery.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, NamedTuple

import redis
from pydantic import BaseModel, ConfigDict

from worker.errors import InputError, JobNotFound, StoreUnavailable
from worker.keys import Keys

JobState = Literal[
    "staging", "queued", "running", "paused", "stopping", "completed", "failed", "cancelled"
]
TERMINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")
"""Highest first: workers take a job's batches from its priority's queue (worker/celery.py)."""
BATCH_SIZE = 100
"""The API's hard limit of ids per request."""

STAGING_TTL_S = 3_600
"""A staging job whose producer stops refreshing it for this long expires, never runs."""

ClaimVerdict = Literal["gone", "done", "parked", "busy", "poison", "ok"]


class JobStatus(BaseModel):
    """A job's record and counters, as `status --json` prints them."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    state: JobState
    reason: str | None = None
    key_alias: str = "default"
    priority: Priority = "normal"
    sweep: str | None = None
    """The retention sweep whose run created the job."""
    retry_of: str | None = None
    """The job whose retryable failures this job retries."""
    retried_by: str | None = None
    """The job retrying this job's retryable failures."""
    created_at: float | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    submitted: int = 0
    total: int = 0
    """Unique ids in the job (valid and invalid): the outcomes always add up to it."""
    invalid: int = 0
    batches_total: int = 0
    batches_done: int = 0
    deleted: int = 0
    already_absent: int = 0
    failed: int = 0
    not_attempted: int = 0
    hd_vectors: int = 0
    ld_vectors: int = 0
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    last_error: str | None = None
    failure_reasons: dict[str, int] = {}

    @property
    def done(self) -> int:
        """Ids that have their outcome."""
        return self.deleted + self.already_absent + self.failed + self.not_attempted

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class Claim:
    """What a run learns when it claims a batch."""

    verdict: ClaimVerdict
    state: str
    ids: list[str] = field(default_factory=list)
    resolved: str = ""
    """One character per id, '1' when the id already has its outcome."""
    attempts: int = 0
    uncertain: bool = False
    extra: str = ""
    """busy: the lease's ms left; done: unfinished successors 'i,j,..'; ok: the run count."""
    reason: str = ""
    """The job's reason, sent with every request."""
    job_error: str = ""
    """The job's last error (why it stopped, for a stopped job)."""
    key_alias: str = "default"
    """Which of the workers' API keys the job uses."""
    job_rate: str = ""
    """The job's own rate limit, requests/s ('' for none: the fleet's limit alone)."""

    def pending(self) -> list[tuple[int, str]]:
        """(position, id) of the ids that still need an outcome."""
        return [(pos, i) for pos, i in enumerate(self.ids) if self.resolved[pos : pos + 1] != "1"]


@dataclass
class BatchCommit:
    """Outcomes of one API answer (or of a run's end), by position in the batch."""

    deleted: list[int] = field(default_factory=list)
    absent: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    hd_vectors: int = 0
    ld_vectors: int = 0
    tries: int = 0
    """Failed attempts (what max_attempts bounds): retryable errors, answers that left
    ids unaccounted."""
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    operation_id: str = ""
    last_error: str = ""
    uncertain: bool = False
    later_s: float = 0.0
    """The run comes back by a countdown retry in this many seconds."""
    final: bool = False
    """The run ends with this commit: release the lease, reset the crash count."""

    def payload(self) -> str:
        return json.dumps(
            {
                "d": self.deleted,
                "a": self.absent,
                "f": self.failed,
                "s": self.skipped,
                "hd": self.hd_vectors,
                "ld": self.ld_vectors,
                "tries": self.tries,
                "reqs": self.requests,
                "r429": self.rate_limited,
                "retries": self.retries,
                "op": self.operation_id,
                "err": self.last_error,
                "unc": int(self.uncertain),
                "later": int(self.later_s * 1000),
                "fin": int(self.final),
            },
            separators=(",", ":"),
        )


class Outcome(NamedTuple):
    """One id's outcome in a job."""

    media_id: str
    outcome: str
    """deleted, already_absent, failed, not_attempted, or pending (not yet decided)."""
    reason: str


class ReportRow(NamedTuple):
    """One line of a completion report: an id's outcome and the API operation behind it."""

    media_id: str
    outcome: str
    reason: str
    operation_id: str
    """The last API operation of the id's batch (the store keeps one per batch); empty for
    an id never sent (invalid, not attempted, pending)."""


@dataclass(frozen=True)
class CommitResult:
    """What a commit did: new outcomes, whether the batch or job ended, what to publish."""

    counted: int
    batch_done: bool
    job_finished: bool
    successors: range


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
"""Delete a lease only if this run holds it (compare and delete, atomically)."""

_SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) + 1
"""
"""Set a field of a job record that still exists (never resurrect an expired job)."""

_SENT_OUTCOMES = frozenset({"deleted", "already_absent", "failed"})


def _load_script(name: str) -> str:
    lua = resources.files("worker") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / name).read_text()


_INT_FIELDS = {
    "submitted", "invalid", "batches_total", "batches_done", "deleted", "already_absent",
    "failed", "not_attempted", "hd_vectors", "ld_vectors", "requests", "rate_limited",
    "retries",
}  # fmt: skip


class JobStore:
    """Jobs and their results in one Redis; every method is one or a few round trips."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        keys: Keys | None = None,
        retention_s: int = 7 * 24 * 3_600,
        window: int = 256,
    ) -> None:
        self.redis = client
        self.keys = keys or Keys()
        self.retention_s = retention_s
        self.window = window
        self._claim = client.register_script(_load_script("claim.lua"))
        self._commit = client.register_script(_load_script("commit.lua"))
        self._seal = client.register_script(_load_script("seal.lua"))
        self._start = client.register_script(_load_script("start.lua"))
        self._stop = client.register_script(_load_script("stop.lua"))
        self._pause = client.register_script(_load_script("pause.lua"))
        self._resume = client.register_script(_load_script("resume.lua"))
        self._stalled = client.register_script(_load_script("stalled.lua"))
        self._release = client.register_script(_RELEASE)
        self._set_if_exists = client.register_script(_SET_IF_EXISTS)

    # -- producers ---------------------------------------------------------------------

    def create(
        self,
        *,
        reason: str | None,
        idempotency_key: str | None = None,
        key_alias: str = "default",
        priority: Priority = "normal",
        sweep: str | None = None,
        retry_of: str | None = None,
    ) -> tuple[str, bool]:
        """Create a staging job; return (job id, created). An idempotency key seen before
        returns the job it created, unless that job died while staging."""
        job_id = uuid.uuid4().hex
        record: dict[str, str | int] = {
            "job_id": job_id,
            "state": "staging",
            "reason": reason or "",
            "created_at": int(time.time() * 1000),
            "batch_size": BATCH_SIZE,
            "key_alias": key_alias,
            "priority": priority,
        }
        record.update({k: v for k, v in (("sweep", sweep), ("retry_of", retry_of)) if v})
        with _store_errors():
            if idempotency_key is None:
                self.redis.hset(self.keys.job(job_id), mapping=record)  # type: ignore[arg-type]
                self.redis.expire(self.keys.job(job_id), STAGING_TTL_S)
                return job_id, True
            idem = self.keys.idempotency(idempotency_key)
            with self.redis.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(idem)  # type: ignore[no-untyped-call]
                        existing = pipe.get(idem)
                        if existing and pipe.exists(self.keys.job(_text(existing))):
                            return _text(existing), False
                        pipe.multi()
                        pipe.set(idem, job_id, ex=self.retention_s)
                        pipe.hset(self.keys.job(job_id), mapping=record)  # type: ignore[arg-type]
                        pipe.expire(self.keys.job(job_id), STAGING_TTL_S)
                        pipe.execute()
                        return job_id, True
                    except redis.WatchError:
                        continue

    def stage(
        self,
        job_id: str,
        first_index: int,
        batches: Sequence[Sequence[str]],
        invalid: dict[str, str] | None = None,
    ) -> int:
        """Write batches (from `first_index` on) and invalid ids of a staging job in one
        round trip, refreshing its staging TTL. Returns how many invalid ids were new."""
        keys = self.keys
        with _store_errors(), self.redis.pipeline(transaction=False) as pipe:
            if batches:
                pipe.hset(
                    keys.job(job_id, "batches"),
                    mapping={first_index + n: "\n".join(b) for n, b in enumerate(batches)},
                )
            for media_id, why in (invalid or {}).items():
                pipe.hsetnx(keys.job(job_id, "failed"), media_id, why)
            for suffix in (None, "batches", "failed"):
                pipe.expire(keys.job(job_id, suffix), STAGING_TTL_S)
            replies = pipe.execute()
        first = 1 if batches else 0
        return sum(int(r) for r in replies[first : first + len(invalid or {})])

    def discard(self, job_id: str, idempotency_key: str | None = None) -> None:
        """Delete a staging job that will never be sealed, and free its idempotency key."""
        with _store_errors():
            self.redis.delete(*self.keys.job_keys(job_id))
            if idempotency_key is not None:
                idem = self.keys.idempotency(idempotency_key)
                if _text(self.redis.get(idem) or b"") == job_id:
                    self.redis.delete(idem)

    def seal(self, job_id: str, *, batches: int, valid: int, invalid: int, submitted: int) -> str:
        """Make a staged job runnable (atomically); return its state ('queued' or, with
        nothing valid to delete, 'completed')."""
        with _store_errors():
            try:
                state = self._seal(
                    keys=[*self.keys.job_keys(job_id), self.keys.jobs, self.keys.events],
                    args=[job_id, batches, valid, valid + invalid, invalid, submitted,
                          self.retention_s],
                )  # fmt: skip
            except redis.ResponseError as exc:
                if "NOJOB" in str(exc):
                    raise InputError(f"job {job_id} expired while staging") from None
                raise
        return _text(state)

    # -- workers -----------------------------------------------------------------------

    def start(self, job_id: str) -> range:
        """Mark a queued job running; return the first batches to publish."""
        with _store_errors():
            first, n = self._start(keys=self.keys.job_keys(job_id), args=[self.window])
        return range(int(first), int(first) + int(n))

    def claim(
        self, job_id: str, index: int, token: str, *, lease_s: float, max_deliveries: int
    ) -> Claim:
        """Take batch `index` for one run: its ids, which are resolved, and a lease."""
        with _store_errors():
            reply = self._claim(
                keys=[*self.keys.job_keys(job_id), self.keys.lease(job_id, index)],
                args=[index, token, int(lease_s * 1000), max_deliveries],
            )
        verdict, state = _text(reply[0]), _text(reply[1])
        if len(reply) == 2:
            return Claim(verdict, state)  # type: ignore[arg-type]
        packed = _text(reply[2])
        return Claim(
            verdict=verdict,  # type: ignore[arg-type]
            state=state,
            ids=packed.split("\n") if packed else [],
            resolved=_text(reply[3]),
            attempts=int(reply[4]),
            uncertain=bool(int(reply[5])),
            extra=_text(reply[6]),
            reason=_text(reply[7]) if len(reply) > 7 else "",
            job_error=_text(reply[8]) if len(reply) > 8 else "",
            key_alias=_text(reply[9]) if len(reply) > 9 else "default",
            job_rate=_text(reply[10]) if len(reply) > 10 else "",
        )

    def commit(self, job_id: str, index: int, token: str, outcome: BatchCommit) -> CommitResult:
        """Record outcomes of batch `index`; ids that already have one are not counted."""
        keys = [*self.keys.job_keys(job_id), self.keys.lease(job_id, index), self.keys.events]
        with _store_errors():
            counted, batch_done, finished, first, n = self._commit(
                keys=keys,
                args=[index, token, outcome.payload(), self.window, self.retention_s],
            )
        first, n = int(first), int(n)
        return CommitResult(int(counted), bool(batch_done), bool(finished), range(first, first + n))

    def release(self, job_id: str, index: int, token: str) -> None:
        """Give up the lease of batch `index` if `token` holds it (its crash count stays)."""
        with _store_errors():
            self._release(keys=[self.keys.lease(job_id, index)], args=[token])

    def stop(self, job_id: str, state: Literal["failed", "cancelled"], error: str) -> bool:
        """Stop an unfinished job; its ids not yet sent end `not_attempted`."""
        with _store_errors():
            stopped = self._stop(
                keys=[*self.keys.job_keys(job_id), self.keys.events],
                args=[state, error, self.retention_s],
            )
        return bool(stopped)

    # -- controls ----------------------------------------------------------------------

    def pause(self, job_id: str) -> bool:
        """Pause a queued or running job; False if it is in another state."""
        self.status(job_id)
        with _store_errors():
            return bool(self._pause(keys=self.keys.job_keys(job_id)))

    def resume(self, job_id: str) -> list[int] | Literal["start"]:
        """Resume a paused job, or re-attempt the not-attempted ids of a failed or
        cancelled one. Returns the batches to publish, or 'start' (send the start task)."""
        self.status(job_id)
        with _store_errors():
            reply = self._resume(keys=self.keys.job_keys(job_id), args=[self.window])
        if reply and _text(reply[0]) == "start":
            return "start"
        return [int(_text(j)) for j in reply]

    def stalled(self, job_id: str, *, stale_s: float) -> list[int] | Literal["start"]:
        """Batches of the job queued more than `stale_s` ago, unowned and unfinished (their
        message was lost): re-stamped and returned for publishing; 'start' for a queued
        job whose start task never ran."""
        with _store_errors():
            reply = self._stalled(
                keys=self.keys.job_keys(job_id),
                args=[int(stale_s * 1000), self.keys.lease(job_id, 0)[:-1]],
            )
        if reply and _text(reply[0]) == "start":
            return "start"
        return [int(_text(j)) for j in reply]

    def jobs_in_states(self, states: frozenset[str], limit: int = 1_000) -> list[str]:
        """Ids of the `limit` newest jobs whose state is in `states`."""
        ids = self.recent_jobs(limit)
        with _store_errors(), self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self.keys.job(job_id), "state")
            found = pipe.execute()
        return [j for j, st in zip(ids, found, strict=True) if st and _text(st) in states]

    # -- readers -----------------------------------------------------------------------

    def status(self, job_id: str) -> JobStatus:
        """The job's record and counters; raises JobNotFound."""
        with _store_errors(), self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.job(job_id))
            pipe.hgetall(self.keys.job(job_id, "reasons"))
            record, reasons = pipe.execute()
        if not record:
            raise JobNotFound(job_id)
        return _to_status(record, reasons)

    def exists(self, job_id: str) -> bool:
        with _store_errors():
            return bool(self.redis.exists(self.keys.job(job_id)))

    def priority(self, job_id: str) -> Priority:
        """The job's priority ('normal' for a job without one, or gone)."""
        with _store_errors():
            value = _text(self.redis.hget(self.keys.job(job_id), "priority") or b"normal")
        return value if value in PRIORITIES else "normal"

    def link_retry(self, job_id: str, retry_id: str) -> bool:
        """Record on job `job_id` that job `retry_id` retries its failures; False if the
        job has expired (it is not recreated)."""
        with _store_errors():
            return bool(
                self._set_if_exists(keys=[self.keys.job(job_id)], args=["retried_by", retry_id])
            )

    def list_jobs(
        self, states: frozenset[str] | None = None, limit: int = 50, *, scan_max: int = 10_000
    ) -> list[JobStatus]:
        """The `limit` newest jobs (in `states`, if given), newest first; looks at the
        `scan_max` newest jobs at most. Jobs whose record expired are left out."""
        found: list[JobStatus] = []
        for first in range(0, scan_max, 200):
            with _store_errors():
                ids = self.redis.zrevrange(self.keys.jobs, first, min(first + 200, scan_max) - 1)
                with self.redis.pipeline(transaction=False) as pipe:
                    for job_id in ids:
                        pipe.hgetall(self.keys.job(_text(job_id)))
                        pipe.hgetall(self.keys.job(_text(job_id), "reasons"))
                    replies = pipe.execute()
            for record, reasons in zip(replies[::2], replies[1::2], strict=True):
                status = _to_status(record, reasons) if record else None
                if status and (states is None or status.state in states):
                    found.append(status)
                    if len(found) >= limit:
                        return found
            if len(ids) < 200:
                break
        return found

    def iter_failures(self, job_id: str, *, count: int = 1_000) -> Iterator[tuple[str, str]]:
        """Stream (media id, reason) of every failed id, without loading them all."""
        self.status(job_id)
        with _store_errors():
            for media_id, reason in self.redis.hscan_iter(
                self.keys.job(job_id, "failed"), count=count
            ):
                yield _text(media_id), _text(reason)

    def set_job_rate(self, job_id: str, rate: float | None) -> None:
        """Give a job its own rate limit under the fleet's (None removes it)."""
        self.status(job_id)
        with _store_errors():
            if rate is None:
                self.redis.hdel(self.keys.job(job_id), "rate")
            else:
                self.redis.hset(self.keys.job(job_id), "rate", repr(float(rate)))

    def register_aliases(self, aliases: Sequence[str]) -> None:
        """Record which key aliases the fleet holds (submit checks jobs against them)."""
        if aliases:
            with _store_errors():
                self.redis.sadd(self.keys.aliases, *aliases)

    def known_aliases(self) -> set[str]:
        """Key aliases some worker has registered."""
        with _store_errors():
            return {_text(a) for a in self.redis.smembers(self.keys.aliases)}

    def iter_outcomes(self, job_id: str, *, batches_per_call: int = 50) -> Iterator[Outcome]:
        """Every unique id of the job with its outcome (deleted, already_absent, failed,
        not_attempted, or pending), batch by batch, in flat memory; invalid ids last."""
        for row in self.iter_report(job_id, batches_per_call=batches_per_call):
            yield Outcome(row.media_id, row.outcome, row.reason)

    def iter_report(self, job_id: str, *, batches_per_call: int = 50) -> Iterator[ReportRow]:
        """`iter_outcomes` with each id's API operation id: a completion report, streamed
        `batches_per_call` batches per round trip (a 10M-id job never sits in memory)."""
        status = self.status(job_id)
        keys = self.keys
        skipped_from = int(_text(self.redis.hget(keys.job(job_id), "skipped_from") or b"-1"))
        for first in range(0, status.batches_total, batches_per_call):
            indices = range(first, min(first + batches_per_call, status.batches_total))
            with _store_errors(), self.redis.pipeline(transaction=False) as pipe:
                pipe.hmget(keys.job(job_id, "batches"), list(indices))
                pipe.hmget(keys.job(job_id, "ops"), list(indices))
                for index in indices:
                    pipe.getrange(keys.job(job_id, "resolved"), index * 16, index * 16 + 15)
                packed, ops, *bits = pipe.execute()
            for index, ids_packed, op, mask in zip(indices, packed, ops, bits, strict=True):
                ids = _text(ids_packed).split("\n")
                if 0 <= skipped_from <= index:
                    skipped = status.last_error or ""
                    yield from (ReportRow(i, "not_attempted", skipped, "") for i in ids)
                    continue
                for outcome in self._batch_outcomes(job_id, ids, mask):
                    sent = outcome.outcome in _SENT_OUTCOMES
                    yield ReportRow(*outcome, _text(op) if op is not None and sent else "")
        with _store_errors():
            for media_id, reason in self.redis.hscan_iter(keys.job(job_id, "failed"), count=1_000):
                if _text(reason) == "invalid_id":
                    yield ReportRow(_text(media_id), "failed", "invalid_id", "")

    def _batch_outcomes(self, job_id: str, ids: list[str], mask: bytes) -> Iterator[Outcome]:
        keys = self.keys
        with _store_errors(), self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.job(job_id, "failed"), ids)
            pipe.smismember(keys.job(job_id, "absent"), ids)
            pipe.hmget(keys.job(job_id, "skipped"), ids)
            failed, absent, skipped = pipe.execute()
        for pos, media_id in enumerate(ids):
            resolved = pos // 8 < len(mask) and mask[pos // 8] >> (7 - pos % 8) & 1
            if not resolved:
                yield Outcome(media_id, "pending", "")
            elif failed[pos] is not None:
                yield Outcome(media_id, "failed", _text(failed[pos]))
            elif absent[pos]:
                yield Outcome(media_id, "already_absent", "")
            elif skipped[pos] is not None:
                yield Outcome(media_id, "not_attempted", _text(skipped[pos]).split("|", 1)[-1])
            else:
                yield Outcome(media_id, "deleted", "")

    def recent_jobs(self, limit: int = 50) -> list[str]:
        """Ids of the newest jobs, newest first."""
        with _store_errors():
            return [_text(j) for j in self.redis.zrevrange(self.keys.jobs, 0, limit - 1)]

    def recent_states(self, limit: int = 1_000) -> dict[str, str]:
        """State of each of the `limit` newest jobs (newest first), in two round trips."""
        ids = self.recent_jobs(limit)
        with _store_errors(), self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self.keys.job(job_id), "state")
            found = pipe.execute()
        return {j: _text(st) for j, st in zip(ids, found, strict=True) if st}


def _to_status(record: dict[Any, Any], reasons: dict[Any, Any]) -> JobStatus:
    fields = {_text(k): _text(v) for k, v in record.items()}
    data: dict[str, Any] = {k: v for k, v in fields.items() if k not in _INT_FIELDS}
    data.update({k: int(v) for k, v in fields.items() if k in _INT_FIELDS})
    for stamp in ("created_at", "queued_at", "started_at", "finished_at"):
        if stamp in fields:
            data[stamp] = int(fields[stamp]) / 1000
    data["total"] = int(fields.get("unique", 0))
    data["reason"] = fields.get("reason") or None
    data["last_error"] = fields.get("last_error") or None
    for link in ("sweep", "retry_of", "retried_by"):
        data[link] = fields.get(link) or None
    data["failure_reasons"] = {_text(k): int(v) for k, v in reasons.items()}
    return JobStatus.model_validate(data)


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


@contextmanager
def _store_errors() -> Iterator[None]:
    """Translate redis-py's connection errors into StoreUnavailable, in one place."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StoreUnavailable(f"Redis did not answer: {exc}") from exc
