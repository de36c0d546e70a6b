"""The results store: jobs, their batches and every id's outcome, in Redis.

The store owns the work: a run *takes* a batch under a lease (with its send slot from
the fleet limiter), renews the lease before each request and *commits* each answer;
every write of a run checks its token inside the script, so a run whose lease lapsed
commits nothing. A batch whose run died is taken over when its lease lapses. Accounting
happens inside Lua scripts (``worker/lua``), one round trip each, so a re-run or
concurrent batch can never count an id twice, and a job finishes exactly once. This
module knows nothing of HTTP or Celery.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple

import redis
from pydantic import BaseModel, ConfigDict

from worker.errors import InputError, JobNotFound, StoreUnavailable
from worker.keys import Keys
from worker.scripts import decoded, load_scripts, reply_fields
from worker.settings import Settings

JobState = Literal[
    "staging", "queued", "running", "paused", "stopping", "completed", "failed", "cancelled"
]
TERMINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
ACTIVE_STATES: frozenset[str] = frozenset({"queued", "running", "paused", "stopping"})
Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")
"""Highest first: a run takes a batch of a high job before any normal or low one."""
Outcome = Literal["deleted", "not_found", "failed", "not_attempted"]
OUTCOMES: tuple[Outcome, ...] = ("deleted", "not_found", "failed", "not_attempted")
"""Every unique id of a job ends with exactly one of these."""
BATCH_SIZE = 100
"""The API's hard limit of ids per request."""

STAGING_TTL_S = 3_600
"""A staging job whose producer stops refreshing it for this long expires, never runs."""

RESUME_DURABLE_MS = 1_500
"""A resumed finished job waits this long before its first take: an AOF fsynced every
second holds the resume by then (a lost resume would leave deleted ids not_attempted)."""

JOBS_SCANNED = 32
"""Runnable jobs of one priority a take looks at (round robin: the least served first)."""


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
    """Ids the API answered it deleted."""
    not_found: int = 0
    """Ids the API answered it could not find: already gone (by us or anyone) or never there."""
    failed: int = 0
    """Ids that need a person's attention; `failure_reasons` says why."""
    not_attempted: int = 0
    """Ids never sent because the job stopped (`resume` sends them)."""
    hd_vectors: int = 0
    ld_vectors: int = 0
    requests: int = 0
    """API requests sent for the job: answered or not, 429s and 400 splits included."""
    rate_limited: int = 0
    """Requests answered 429 (sent again after the fleet's pause; no attempt spent)."""
    retries: int = 0
    """Requests that failed retryably (5xx, timeout, reset): each spends an attempt."""
    last_error: str | None = None
    failure_reasons: dict[str, int] = {}

    @property
    def done(self) -> int:
        """Ids that have their outcome."""
        return self.deleted + self.not_found + self.failed + self.not_attempted

    @property
    def answered(self) -> int:
        """Ids the API answered for (or refused as invalid): every outcome but not_attempted."""
        return self.deleted + self.not_found + self.failed

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


INT_FIELDS = frozenset(
    name for name, info in JobStatus.model_fields.items() if info.annotation is int
)
"""Record fields held as integers (counters): one schema, read from `JobStatus`."""


@dataclass(frozen=True)
class Taken:
    """A batch a run took: its ids, what is known of them, and its send slot."""

    job_id: str
    index: int
    token: str
    ids: list[str]
    resolved: str
    """One character per id, '1' when the id already has its outcome."""
    attempts: int
    """Failed API attempts spent on the batch by earlier runs."""
    sent_before: bool
    """An earlier run may have sent a request for this batch."""
    runs: int
    """Runs of the batch whose lease lapsed (crashes), this take's included."""
    state: str
    reason: str
    """The job's reason, sent with every request."""
    stop_reason: str
    """Why a stopping job stopped (given to the ids it will not attempt)."""
    key_alias: str
    wait_s: float
    """The send slot reserved for the first request is this far in the future."""
    rate: float
    """The fleet's rate for the job's key when the slot was reserved, requests/s."""

    def pending(self) -> list[tuple[int, str]]:
        """(position, id) of the ids that still need an outcome."""
        return [(pos, i) for pos, i in enumerate(self.ids) if self.resolved[pos : pos + 1] != "1"]


@dataclass(frozen=True)
class NoBatch:
    """What a take found instead of a batch: `wait` (retry in `wait_s`), `idle` (no
    runnable job) or `replaced` (this drain ticket lapsed and was replaced)."""

    kind: Literal["wait", "idle", "replaced"]
    wait_s: float = 0.0


@dataclass
class BatchCommit:
    """Outcomes of one API answer (or of a run's end), by position in the batch."""

    deleted: list[int] = field(default_factory=list)
    not_found: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    not_attempted: list[tuple[int, str]] = field(default_factory=list)
    hd: int = 0
    ld: int = 0
    attempts: int = 0
    """Failed attempts (what max_attempts bounds): retryable errors, answers that left
    ids unaccounted."""
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    """requests, rate_limited, retries: added to the job's counters (`JobStatus`)."""
    operation_id: str = ""
    last_error: str = ""
    release: Literal["keep", "later"] = "keep"
    """keep: the run goes on with the batch; later: it hands the batch back."""
    later_ms: int = 0
    """With release 'later': the batch is takeable again this many ms from now."""
    unsent: bool = False
    """With release 'later': no request was ever sent for the batch, so a stop counts its
    ids not_attempted at once instead of sending one to confirm them."""

    def payload(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def outcomes(self) -> dict[str, int]:
        """How many ids this commit gives each outcome."""
        return {
            "deleted": len(self.deleted),
            "not_found": len(self.not_found),
            "failed": len(self.failed),
            "not_attempted": len(self.not_attempted),
        }


class OutcomeRow(NamedTuple):
    """One id's outcome in a job."""

    media_id: str
    outcome: str
    """deleted, not_found, failed, not_attempted, or pending (not yet decided)."""
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
    """What a commit did: `lost` (the run no longer holds the lease: nothing written), new
    outcomes, whether the batch or job ended, and the job's state after it."""

    lost: bool
    counted: int
    batch_done: bool
    job_finished: bool
    state: str


@dataclass(frozen=True)
class Renewal:
    """A lease renewed before a request (`held`), the job's state and the fleet's pause."""

    held: bool
    state: str
    pause_s: float


_SENT_OUTCOMES = frozenset({"deleted", "not_found", "failed"})


class JobStore:
    """Jobs and their results in one Redis; every method is one or a few round trips."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        keys: Keys | None = None,
        retention_s: int = 7 * 24 * 3_600,
    ) -> None:
        self.redis = client
        self.keys = keys or Keys()
        self.retention_s = retention_s
        self.scripts = load_scripts(client)

    def _job(self, name: str, job_id: str, args: Sequence[Any], extra: Sequence[str] = ()) -> Any:
        with store_errors():
            return self.scripts[name](keys=[*self.keys.job_keys(job_id), *extra], args=list(args))

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
        with store_errors():
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
                        if existing and pipe.exists(self.keys.job(decoded(existing))):
                            return decoded(existing), False
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
        with store_errors(), self.redis.pipeline(transaction=False) as pipe:
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
        with store_errors():
            self.redis.delete(*self.keys.job_keys(job_id))
            if idempotency_key is not None:
                idem = self.keys.idempotency(idempotency_key)
                if decoded(self.redis.get(idem) or b"") == job_id:
                    self.redis.delete(idem)

    def input_digest(self, idempotency_key: str) -> str | None:
        """The digest of the input first submitted with `idempotency_key`, if kept."""
        with store_errors():
            digest = self.redis.get(self.keys.idempotency_digest(idempotency_key))
        return None if digest is None else decoded(digest)

    def keep_input_digest(self, idempotency_key: str, digest: str) -> None:
        """Keep the digest of the input first submitted with `idempotency_key`, as long as
        the key itself (the store's retention)."""
        key = self.keys.idempotency_digest(idempotency_key)
        with store_errors():
            self.redis.set(key, digest, ex=self.retention_s)

    def seal(self, job_id: str, *, batches: int, valid: int, invalid: int, submitted: int) -> str:
        """Make a staged job runnable (atomically); return its state ('queued' or, with
        nothing valid to delete, 'completed')."""
        try:
            state = self._job(
                "seal", job_id, [job_id, batches, valid, valid + invalid, invalid, submitted,
                                 self.retention_s],
            )  # fmt: skip
        except redis.ResponseError as exc:
            if "NOJOB" in str(exc):
                raise InputError(f"job {job_id} expired while staging") from None
            raise
        return decoded(state)

    # -- workers -----------------------------------------------------------------------

    def take(
        self,
        token: str,
        *,
        lease_s: float,
        max_runs: int,
        max_wait_s: float,
        rate: float | str,
        burst: int = 1,
        ticket: str = "",
        ticket_ttl_s: float = 30.0,
        priorities: Sequence[str] = PRIORITIES,
    ) -> Taken | NoBatch:
        """Take the next batch of any runnable job (priority first, then round robin)
        under a lease held by `token`, with a send slot from its key's fleet limiter."""
        with store_errors():
            reply = self.scripts["take"](
                args=[self.keys.prefix, token, ticket, int(lease_s * 1000), max_runs,
                      int(max_wait_s * 1e6), _rate_text(rate), burst, JOBS_SCANNED,
                      int(ticket_ttl_s * 1000), ",".join(priorities)],
            )  # fmt: skip
        r = reply_fields(reply)
        if r["kind"] != "batch":
            return NoBatch(r["kind"], int(r.get("wait_ms", 0)) / 1000)  # type: ignore[arg-type]
        return Taken(
            job_id=r["job_id"],
            index=int(r["index"]),
            token=token,
            ids=r["ids"].split("\n"),
            resolved=r["resolved"],
            attempts=int(r["attempts"]),
            sent_before=r["sent_before"] == "1",
            runs=int(r["runs"]),
            state=r["state"],
            reason=r["reason"],
            stop_reason=r["stop_reason"],
            key_alias=r["key_alias"],
            wait_s=int(r["wait_us"]) / 1e6,
            rate=float(r["rate"] or 0),
        )

    def renew(self, job_id: str, index: int, token: str, *, lease_s: float, alias: str) -> Renewal:
        """Extend the lease of batch `index` before a request, if `token` holds it."""
        r = reply_fields(
            self._job("renew", job_id, [index, token, int(lease_s * 1000)],
                      [self.keys.limiter(alias)])
        )  # fmt: skip
        return Renewal(r["status"] == "ok", r["state"], int(r["pause_us"]) / 1e6)

    def commit(self, job_id: str, index: int, token: str, outcome: BatchCommit) -> CommitResult:
        """Record outcomes of batch `index` if `token` still holds its lease; ids that
        already have one are not counted."""
        r = reply_fields(self._job("commit", job_id, [index, token, outcome.payload()]))
        if r["status"] != "ok":
            return CommitResult(True, 0, False, False, r["state"])
        return CommitResult(
            False, int(r["counted"]), r["batch_done"] == "1", r["job_finished"] == "1", r["state"]
        )

    def stop(
        self, job_id: str, state: Literal["failed", "cancelled"], error: str, reason: str = ""
    ) -> bool:
        """Stop an unfinished job; its ids never sent end `not_attempted` with `reason`
        (default: 'job stopped: <error>')."""
        why = reason or f"job stopped: {error}"
        return bool(self._job("stop", job_id, [state, error, why]))

    def wake(
        self,
        *,
        worker: str = "",
        slots: int = 0,
        ticket_ttl_s: float = 30.0,
        heartbeat_s: float = 10.0,
        most: int = 256,
    ) -> list[str]:
        """Heartbeat of `worker` (with its `slots`), then the tickets of the drain runs the
        fleet misses while some job is runnable: publish one drain message per ticket."""
        with store_errors():
            reply = self.scripts["wake"](
                args=[self.keys.prefix, worker, int(ticket_ttl_s * 1000), slots,
                      int(heartbeat_s * 1000), most],
            )  # fmt: skip
        return [decoded(t) for t in reply]

    def end_drain(self, ticket: str) -> None:
        """A drain run ends for good (no runnable job): its ticket goes."""
        with store_errors():
            self.redis.zrem(self.keys.drains, ticket)

    def leave(self, worker: str) -> None:
        """A worker shuts down: its slots no longer count."""
        with store_errors(), self.redis.pipeline() as pipe:
            pipe.zrem(self.keys.workers, worker)
            pipe.hdel(f"{self.keys.workers}:slots", worker)
            pipe.execute()

    def check_lost_writes(self, *, margin: int) -> bool:
        """Whether Redis restarted since the store last looked (its run_id changed): then
        it may have lost its last writes, and every unfinished job's next `margin` batches
        are marked possibly sent. The first look only records the run_id."""
        with store_errors():
            try:
                run_id = str(self.redis.info("server").get("run_id", ""))
            except redis.ResponseError:
                return False  # INFO disabled (some managed Redis, fakeredis): cannot tell
            seen = self.redis.hget(self.keys.store, "run_id")
            if seen is not None and decoded(seen) == run_id:
                return False
            if seen is not None:
                self.scripts["lost_writes"](args=[self.keys.prefix, margin])
            self.redis.hset(self.keys.store, "run_id", run_id)
        return seen is not None

    # -- controls ----------------------------------------------------------------------

    def pause(self, job_id: str) -> bool:
        """Pause a queued or running job; False if it is in another state."""
        self.status(job_id)
        return bool(self._job("pause", job_id, []))

    def resume(self, job_id: str) -> bool:
        """Resume a paused job, or re-attempt the not-attempted ids of a failed or
        cancelled one; False if the job is in no state to resume."""
        self.status(job_id)
        return bool(self._job("resume", job_id, [RESUME_DURABLE_MS]))

    def fleet_counts(self) -> dict[str, int]:
        """Workers alive, their slots, drain runs alive (or queued), unfinished jobs."""
        with store_errors(), self.redis.pipeline(transaction=False) as pipe:
            now_ms = int(time.time() * 1000)
            pipe.zcount(self.keys.workers, now_ms, "+inf")
            pipe.hvals(f"{self.keys.workers}:slots")
            pipe.zcount(self.keys.drains, now_ms, "+inf")
            pipe.zcard(self.keys.active)
            workers, slots, drains, active = pipe.execute()
        return {
            "workers": int(workers),
            "slots": sum(int(n) for n in slots),
            "drains": int(drains),
            "unfinished_jobs": int(active),
        }

    def active_jobs(self) -> list[str]:
        """Every unfinished job (queued, running, paused, stopping), oldest first."""
        with store_errors():
            return [decoded(j) for j in self.redis.zrange(self.keys.active, 0, -1)]

    # -- readers -----------------------------------------------------------------------

    def status(self, job_id: str) -> JobStatus:
        """The job's record and counters; raises JobNotFound."""
        with store_errors(), self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.job(job_id))
            pipe.hgetall(self.keys.job(job_id, "reasons"))
            record, reasons = pipe.execute()
        if not record:
            raise JobNotFound(job_id)
        return _to_status(record, reasons)

    def exists(self, job_id: str) -> bool:
        with store_errors():
            return bool(self.redis.exists(self.keys.job(job_id)))

    def priority(self, job_id: str) -> Priority:
        """The job's priority ('normal' for a job without one, or gone)."""
        with store_errors():
            value = decoded(self.redis.hget(self.keys.job(job_id), "priority") or b"normal")
        return value if value in PRIORITIES else "normal"

    def link_retry(self, job_id: str, retry_id: str) -> bool:
        """Record on job `job_id` that job `retry_id` retries its failures; False if the
        job has expired (it is not recreated)."""
        with store_errors():
            return bool(
                self.scripts["set_if_exists"](
                    keys=[self.keys.job(job_id)], args=["retried_by", retry_id]
                )
            )

    def list_jobs(
        self, states: frozenset[str] | None = None, limit: int = 50, *, scan_max: int = 10_000
    ) -> list[JobStatus]:
        """The `limit` newest jobs (in `states`, if given), newest first; looks at the
        `scan_max` newest jobs at most. Jobs whose record expired are left out."""
        found: list[JobStatus] = []
        for first in range(0, scan_max, 200):
            with store_errors():
                ids = self.redis.zrevrange(self.keys.jobs, first, min(first + 200, scan_max) - 1)
                with self.redis.pipeline(transaction=False) as pipe:
                    for job_id in ids:
                        pipe.hgetall(self.keys.job(decoded(job_id)))
                        pipe.hgetall(self.keys.job(decoded(job_id), "reasons"))
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
        with store_errors():
            for media_id, reason in self.redis.hscan_iter(
                self.keys.job(job_id, "failed"), count=count
            ):
                yield decoded(media_id), decoded(reason)

    def set_job_rate(self, job_id: str, rate: float | None) -> None:
        """Give a job its own rate limit under the fleet's (None removes it)."""
        self.status(job_id)
        with store_errors():
            if rate is None:
                self.redis.hdel(self.keys.job(job_id), "rate")
            else:
                self.redis.hset(self.keys.job(job_id), "rate", repr(float(rate)))

    def register_aliases(self, aliases: Sequence[str]) -> None:
        """Record which key aliases the fleet holds (submit checks jobs against them)."""
        if aliases:
            with store_errors():
                self.redis.sadd(self.keys.aliases, *aliases)

    def known_aliases(self) -> set[str]:
        """Key aliases some worker has registered."""
        with store_errors():
            return {decoded(a) for a in self.redis.smembers(self.keys.aliases)}

    def iter_outcomes(self, job_id: str, *, batches_per_call: int = 50) -> Iterator[OutcomeRow]:
        """Every unique id of the job with its outcome (deleted, not_found, failed,
        not_attempted, or pending), batch by batch, in flat memory; invalid ids last."""
        for row in self.iter_report(job_id, batches_per_call=batches_per_call):
            yield OutcomeRow(row.media_id, row.outcome, row.reason)

    def iter_report(self, job_id: str, *, batches_per_call: int = 50) -> Iterator[ReportRow]:
        """`iter_outcomes` with each id's API operation id: a completion report, streamed
        `batches_per_call` batches per round trip (a 10M-id job never sits in memory)."""
        status = self.status(job_id)
        keys = self.keys
        with store_errors():
            bulk_from, stop_reason = self.redis.hmget(
                keys.job(job_id), "not_attempted_from", "stop_reason"
            )
        not_attempted_from = int(decoded(bulk_from or b"-1"))
        for first in range(0, status.batches_total, batches_per_call):
            indices = range(first, min(first + batches_per_call, status.batches_total))
            with store_errors(), self.redis.pipeline(transaction=False) as pipe:
                pipe.hmget(keys.job(job_id, "batches"), list(indices))
                pipe.hmget(keys.job(job_id, "ops"), list(indices))
                for index in indices:
                    pipe.getrange(keys.job(job_id, "resolved"), index * 16, index * 16 + 15)
                packed, ops, *bits = pipe.execute()
            for index, ids_packed, op, mask in zip(indices, packed, ops, bits, strict=True):
                ids = decoded(ids_packed).split("\n")
                if 0 <= not_attempted_from <= index:
                    why = decoded(stop_reason or b"")
                    yield from (ReportRow(i, "not_attempted", why, "") for i in ids)
                    continue
                for outcome in self._batch_outcomes(job_id, ids, mask):
                    sent = outcome.outcome in _SENT_OUTCOMES
                    yield ReportRow(*outcome, decoded(op) if op is not None and sent else "")
        with store_errors():
            for media_id, reason in self.redis.hscan_iter(keys.job(job_id, "failed"), count=1_000):
                if decoded(reason) == "invalid_id":
                    yield ReportRow(decoded(media_id), "failed", "invalid_id", "")

    def _batch_outcomes(self, job_id: str, ids: list[str], mask: bytes) -> Iterator[OutcomeRow]:
        keys = self.keys
        with store_errors(), self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.job(job_id, "failed"), ids)
            pipe.smismember(keys.job(job_id, "not_found"), ids)
            pipe.hmget(keys.job(job_id, "not_attempted"), ids)
            failed, not_found, not_attempted = pipe.execute()
        for pos, media_id in enumerate(ids):
            resolved = pos // 8 < len(mask) and mask[pos // 8] >> (7 - pos % 8) & 1
            if not resolved:
                yield OutcomeRow(media_id, "pending", "")
            elif failed[pos] is not None:
                yield OutcomeRow(media_id, "failed", decoded(failed[pos]))
            elif not_found[pos]:
                yield OutcomeRow(media_id, "not_found", "")
            elif not_attempted[pos] is not None:
                why = decoded(not_attempted[pos]).split("|", 1)[-1]
                yield OutcomeRow(media_id, "not_attempted", why)
            else:
                yield OutcomeRow(media_id, "deleted", "")

    def recent_jobs(self, limit: int = 50) -> list[str]:
        """Ids of the newest jobs, newest first."""
        with store_errors():
            return [decoded(j) for j in self.redis.zrevrange(self.keys.jobs, 0, limit - 1)]

    def recent_states(self, limit: int = 1_000) -> dict[str, str]:
        """State of each of the `limit` newest jobs (newest first), in two round trips."""
        ids = self.recent_jobs(limit)
        with store_errors(), self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self.keys.job(job_id), "state")
            found = pipe.execute()
        return {j: decoded(st) for j, st in zip(ids, found, strict=True) if st}


def store_for(settings: Settings, client: redis.Redis | None = None) -> JobStore:
    """The job store the settings point at (a new client unless `client` is given): the
    one way to build a `JobStore` from settings."""
    return JobStore(
        client or redis.Redis.from_url(settings.redis_url),
        keys=Keys(settings.key_prefix),
        retention_s=settings.job_retention_s,
    )


def _to_status(record: dict[Any, Any], reasons: dict[Any, Any]) -> JobStatus:
    fields = {decoded(k): decoded(v) for k, v in record.items()}
    data: dict[str, Any] = {k: v for k, v in fields.items() if k not in INT_FIELDS}
    data.update({k: int(v) for k, v in fields.items() if k in INT_FIELDS})
    for stamp in ("created_at", "queued_at", "started_at", "finished_at"):
        if stamp in fields:
            data[stamp] = int(fields[stamp]) / 1000
    data["reason"] = fields.get("reason") or None
    data["last_error"] = fields.get("last_error") or None
    for link in ("sweep", "retry_of", "retried_by"):
        data[link] = fields.get(link) or None
    data["failure_reasons"] = {decoded(k): int(v) for k, v in reasons.items()}
    return JobStatus.model_validate(data)


def _rate_text(rate: float | str) -> str:
    return "auto" if rate == "auto" else repr(float(rate))


@contextmanager
def store_errors() -> Iterator[None]:
    """Translate redis-py's connection errors into StoreUnavailable: the one translation,
    for every module that talks to Redis (the store, sweeps' history, job prefixes)."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StoreUnavailable(f"Redis did not answer: {exc}") from exc
