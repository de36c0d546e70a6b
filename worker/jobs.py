"""Jobs: `submit(ids, reason=...)` checks, stages and seals a job, wakes the fleet and
returns a `Job` to watch.

    job = submit(open("ids.txt", "rb"), reason="retention: older than 90 days")
    job.wait(timeout=3600)

Ids are validated, de-duplicated and staged into Redis in pipelined chunks; the job
becomes runnable only once every id is staged (a producer killed halfway leaves nothing
that runs), then the fleet is woken: drain runs take its batches from the store.

    plan = dry_run(open("ids.txt", "rb"))   # counts and an estimate; writes nothing

This is the worker side's, because the fleet submits jobs itself (retention sweeps,
`worker/sweeps.py`); producers reach it as `producers.submit`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import redis
import structlog

from worker import webhooks
from worker.celery import send_drains
from worker.errors import BrokerUnavailable, EmptyInput, InputError, StoreUnavailable
from worker.ingest import (
    INVALID_REASON,
    Deduplicator,
    Line,
    batched,
    quoted,
    read_id_runs,
    stored,
)
from worker.keeper import wake_fleet
from worker.ratelimit import limiter_for
from worker.settings import DEFAULT_ALIAS, Settings, get_settings
from worker.store import BATCH_SIZE, PRIORITIES, JobStatus, JobStore, Priority, store_for

log = structlog.get_logger("wickson_purge.jobs")

MAX_REASON_LENGTH = 1_000
BATCHES_PER_ROUND_TRIP = 100
"""10,000 ids per pipelined write: few round trips, small pipelines."""
INVALID_SHOWN = 20
"""Invalid lines kept for the producer's message (all of them are recorded in the job)."""
OUTAGE_S = 60.0
"""How long `wait_for` keeps polling through a Redis that does not answer (a restart,
a failover) before it gives up."""


@dataclass
class IngestReport:
    """What reading the input found."""

    submitted: int = 0
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    invalid_lines: list[Line] = field(default_factory=list)


@dataclass
class DryRun:
    """What `submit` would do with the same input, found without writing anything."""

    report: IngestReport
    key_alias: str
    priority: Priority
    rate_per_s: float
    """The fleet's request rate for the key alias now (the limiter's)."""

    @property
    def batches(self) -> int:
        """Requests the job needs at least: one per 100 unique valid ids."""
        return math.ceil(self.report.valid / BATCH_SIZE)

    @property
    def estimate_s(self) -> float:
        """Seconds to send every batch at the fleet's rate, if no other job shares it
        (429 pauses and retries come on top)."""
        return self.batches / self.rate_per_s if self.rate_per_s > 0 else math.inf


class Job:
    """A submitted job: read its status, wait for it to finish."""

    def __init__(self, job_id: str, store: JobStore, report: IngestReport | None = None):
        self.id = job_id
        self.store = store
        self.report = report

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> JobStatus:
        """The job's counters now; raises JobNotFound once its results have expired."""
        return self.store.status(self.id)

    def wait(
        self,
        timeout: float | None = None,
        *,
        poll_s: float = 0.5,
        on_progress: Callable[[JobStatus], None] | None = None,
    ) -> JobStatus:
        """Block until the job is finished; return its final status. Raises TimeoutError."""
        return wait_for(
            self.store, self.id, timeout=timeout, poll_s=poll_s, on_progress=on_progress
        )


def wait_for(
    store: JobStore,
    job_id: str,
    *,
    timeout: float | None = None,
    poll_s: float = 0.5,
    on_progress: Callable[[JobStatus], None] | None = None,
    outage_s: float = OUTAGE_S,
    on_outage: Callable[[StoreUnavailable], None] | None = None,
) -> JobStatus:
    """Poll job `job_id` until it finishes (or `timeout` seconds pass: TimeoutError).
    Keeps polling through a Redis outage of up to `outage_s` seconds (`on_outage` is told
    of each failed poll); raises StoreUnavailable after that."""
    deadline = None if timeout is None else time.monotonic() + timeout
    state = "unknown"
    down_since: float | None = None
    while True:
        try:
            status = store.status(job_id)
        except StoreUnavailable as exc:
            now = time.monotonic()
            down_since = now if down_since is None else down_since
            if now - down_since >= outage_s:
                raise
            if on_outage:
                on_outage(exc)
        else:
            down_since, state = None, status.state
            if on_progress:
                on_progress(status)
            if status.finished:
                return status
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} still {state} after {timeout:g} s")
        time.sleep(poll_s)


def check_reason(reason: str | None) -> str | None:
    """A reason the API will log, or InputError naming what is wrong."""
    if reason is None:
        return None
    if len(reason) > MAX_REASON_LENGTH:
        raise InputError(
            f"reason is {len(reason)} characters long; at most {MAX_REASON_LENGTH} are allowed"
        )
    if any(not c.isprintable() for c in reason):
        raise InputError(f"reason {quoted(reason)} contains control characters")
    return reason.strip() or None


def check_alias(store: JobStore, alias: str) -> None:
    """Refuse a key alias no worker holds (the default one is fine before any worker ran)."""
    known = store.known_aliases()
    if alias in known or (alias == DEFAULT_ALIAS and not known):
        return
    allowed = ", ".join(sorted(known)) or DEFAULT_ALIAS
    raise InputError(f"unknown key alias {alias!r}: the workers hold {allowed}")


def check_priority(priority: str) -> Priority:
    """A job priority, or InputError naming the allowed ones."""
    if priority not in PRIORITIES:
        raise InputError(f"unknown priority {priority!r}: use one of {', '.join(PRIORITIES)}")
    return priority


class InputDigest:
    """A SHA-256 of an input's lines as read: tells a reused idempotency key's input
    from a different one without keeping the input."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def feed(self, lines: Iterable[bytes | str]) -> Iterator[bytes | str]:
        """Yield `lines` unchanged, hashing each on the way."""
        for line in lines:
            self._hash.update(
                line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")
            )
            self._hash.update(b"\0")  # ["ab", "c"] is not ["a", "bc"]; no id holds a NUL
            yield line

    def of(self, lines: Iterable[bytes | str]) -> str:
        """The digest of every line of `lines` (read to the end)."""
        for _ in self.feed(lines):
            pass
        return self.hexdigest()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def check_same_input(store: JobStore, idempotency_key: str, job_id: str, digest: str) -> None:
    """Refuse an idempotency key reused with an input other than its first one (whose
    digest the store kept); a key without a recorded digest is accepted."""
    first = store.input_digest(idempotency_key)
    if first is not None and first != digest:
        raise InputError(
            f"idempotency key {quoted(idempotency_key)} was used for job {job_id} with a"
            " different input: nothing submitted (use a new key, or the same input)"
        )


def wake(store: JobStore) -> int:
    """Publish the drain runs the fleet misses while a job is runnable; returns how many.
    A broker that does not answer is no error: the job waits in the store, and the
    workers' keepers wake it once the broker is back."""
    try:
        return wake_fleet(store, send_drains)
    except BrokerUnavailable as exc:
        log.warning("wake.broker_unavailable", error=str(exc), hint="keepers will wake the job")
        return 0


def submit(
    ids: Iterable[bytes | str],
    *,
    reason: str | None = None,
    idempotency_key: str | None = None,
    settings: Settings | None = None,
    client: redis.Redis | None = None,
    start: Callable[[JobStore], object] | None = None,
    key_alias: str = DEFAULT_ALIAS,
    priority: Priority = "normal",
    sweep: str | None = None,
    retry_of: str | None = None,
    confirm: Callable[[IngestReport], bool] | None = None,
    verify_input: bool = True,
    callback_url: str | None = None,
) -> Job:
    """Enqueue a job deleting `ids` (lines of text or bytes; blanks and duplicates are
    dropped, invalid ids recorded as failed `invalid_id`) at `priority`. `start` replaces
    the fleet's wake-up (tests, the demo).
    `confirm`, given the counts once every id is staged, may still refuse (nothing runs).
    With `verify_input`, an idempotency key reused with a different input is refused.
    `callback_url` gets the final status once the job ends (worker/webhooks.py).
    Raises InputError."""
    settings = settings or get_settings()
    reason = check_reason(reason)
    check_priority(priority)
    if callback_url is not None:
        webhooks.check_callback_url(callback_url, allow_insecure=settings.webhook_allow_insecure)
    store = store_for(settings, client)
    check_alias(store, key_alias)
    job_id, created = store.create(
        reason=reason,
        idempotency_key=idempotency_key,
        key_alias=key_alias,
        priority=priority,
        sweep=sweep,
        retry_of=retry_of,
    )
    digest = InputDigest()
    if not created:
        if idempotency_key is not None and verify_input:
            check_same_input(store, idempotency_key, job_id, digest.of(ids))
        return Job(job_id, store)
    try:
        if callback_url is not None:
            webhooks.register(store, job_id, callback_url)
        # Only a keyed submit pays for the digest (two hash updates a line).
        keyed = idempotency_key is not None
        source = digest.feed(ids) if keyed else ids
        report, batches = _stage(store, job_id, source, max_ids=settings.max_job_ids)
        if confirm is not None and not confirm(report):
            raise InputError("not confirmed: nothing was submitted")
        if idempotency_key is not None:
            store.keep_input_digest(idempotency_key, digest.hexdigest())
    except BaseException:
        # A refused input must not leave a staging job (or hold its idempotency key).
        store.discard(job_id, idempotency_key)
        raise
    state = store.seal(
        job_id,
        batches=batches,
        valid=report.valid,
        invalid=report.invalid,
        submitted=report.submitted,
    )
    if state == "queued":
        # The job is in its run queue: any drain run takes it; wake the fleet if idle.
        (start or wake)(store)
    return Job(job_id, store, report)


def dry_run(
    ids: Iterable[bytes | str],
    *,
    reason: str | None = None,
    settings: Settings | None = None,
    client: redis.Redis | None = None,
    key_alias: str = DEFAULT_ALIAS,
    priority: Priority = "normal",
) -> DryRun:
    """Validate and count `ids` as `submit` would, and read the fleet's rate for an
    estimate; writes no Redis key and sends nothing. Raises InputError as `submit` does."""
    settings = settings or get_settings()
    check_reason(reason)
    check_priority(priority)
    store = store_for(settings, client)
    check_alias(store, key_alias)
    invalid = Deduplicator()

    def keep_invalid(chunk: dict[str, str]) -> int:
        for text in chunk:
            invalid.add(text)
        return 0  # counted once, de-duplicated, below

    report, unique = _scan(ids, max_ids=settings.max_job_ids, stage_invalid=keep_invalid)
    report.valid = sum(1 for _ in unique)
    report.invalid = sum(1 for _ in invalid)
    report.duplicates = report.submitted - report.valid - report.invalid
    return DryRun(report, key_alias, priority, limiter_for(store, settings, key_alias).rate)


def _stage(
    store: JobStore, job_id: str, ids: Iterable[bytes | str], *, max_ids: int
) -> tuple[IngestReport, int]:
    """Scan `ids` into staging job `job_id`: invalid ids as failures, then the unique valid
    ones in batches. Returns the counts and the number of batches."""
    report, unique = _scan(
        ids, max_ids=max_ids, stage_invalid=lambda chunk: store.stage(job_id, 0, [], chunk)
    )
    batches = 0
    for chunk in batched(batched(unique, BATCH_SIZE), BATCHES_PER_ROUND_TRIP):
        store.stage(job_id, batches, chunk)
        batches += len(chunk)
        report.valid += sum(len(b) for b in chunk)
    report.duplicates = report.submitted - report.valid - report.invalid
    return report, batches


def _check_size(submitted: int, max_ids: int) -> None:
    if submitted > max_ids:
        raise InputError(
            f"more than {max_ids:,} ids: larger than WICKSON_MAX_JOB_IDS allows;"
            " split the input into several jobs"
        )


def _scan(
    source: Iterable[bytes | str],
    *,
    max_ids: int,
    stage_invalid: Callable[[dict[str, str]], int],
) -> tuple[IngestReport, Deduplicator]:
    """Read every line: valid ids into a de-duplicator, invalid ones handed to
    `stage_invalid` in chunks (it returns how many were new). Raises InputError for an
    input over `max_ids` lines or without any id."""
    report, unique, invalid = IngestReport(), Deduplicator(), {}
    try:
        for line in read_id_runs(source):
            if isinstance(line, list):  # a run of plain valid ids
                report.submitted += len(line)
                _check_size(report.submitted, max_ids)
                unique.add_many(line)
                continue
            report.submitted += 1
            _check_size(report.submitted, max_ids)
            if line.problem is None:
                unique.add(line.text)
                continue
            invalid[stored(line.text)] = INVALID_REASON
            if len(report.invalid_lines) < INVALID_SHOWN:
                report.invalid_lines.append(line)
            if len(invalid) >= BATCH_SIZE * BATCHES_PER_ROUND_TRIP:
                report.invalid += stage_invalid(invalid)
                invalid = {}
        report.invalid += stage_invalid(invalid) if invalid else 0
        if report.submitted == 0:
            raise EmptyInput("no ids in the input (it is empty or blank): nothing to delete")
    except BaseException:
        unique.close()
        raise
    return report, unique
