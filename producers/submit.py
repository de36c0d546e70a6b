"""The Python producer API: `submit(ids, reason=...)` returns a `Job` to watch.

    job = submit(open("ids.txt", "rb"), reason="retention: older than 90 days")
    job.wait(timeout=3600)

Ids are validated, de-duplicated and staged into Redis in pipelined chunks; the job
becomes runnable only once every id is staged (a producer killed halfway leaves nothing
that runs), then one start task fans it out to the workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis

from producers.control import send_start
from producers.ingest import INVALID_REASON, Deduplicator, Line, batched, printable, read_lines
from worker.errors import InputError
from worker.keys import Keys
from worker.settings import DEFAULT_ALIAS, Settings, get_settings
from worker.store import BATCH_SIZE, JobStatus, JobStore

MAX_REASON_LENGTH = 1_000
BATCHES_PER_ROUND_TRIP = 100
"""10,000 ids per pipelined write: few round trips, small pipelines."""
INVALID_SHOWN = 20
"""Invalid lines kept for the producer's message (all of them are recorded in the job)."""


@dataclass
class IngestReport:
    """What reading the input found."""

    submitted: int = 0
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    invalid_lines: list[Line] = field(default_factory=list)


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
) -> JobStatus:
    """Poll job `job_id` until it finishes (or `timeout` seconds pass: TimeoutError)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = store.status(job_id)
        if on_progress:
            on_progress(status)
        if status.finished:
            return status
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} still {status.state} after {timeout:g} s")
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
        raise InputError(f"reason {printable(reason)!r} contains control characters")
    return reason.strip() or None


def check_alias(store: JobStore, alias: str) -> None:
    """Refuse a key alias no worker holds (the default one is fine before any worker ran)."""
    known = store.known_aliases()
    if alias in known or (alias == DEFAULT_ALIAS and not known):
        return
    allowed = ", ".join(sorted(known)) or DEFAULT_ALIAS
    raise InputError(f"unknown key alias {alias!r}: the workers hold {allowed}")


def store_for(settings: Settings, client: redis.Redis | None = None) -> JobStore:
    """The job store the settings point at."""
    return JobStore(
        client or redis.Redis.from_url(settings.redis_url),
        keys=Keys(settings.key_prefix),
        retention_s=settings.job_retention_s,
        window=settings.dispatch_window,
    )


def submit(
    ids: Iterable[bytes | str],
    *,
    reason: str | None = None,
    idempotency_key: str | None = None,
    settings: Settings | None = None,
    client: redis.Redis | None = None,
    start: Callable[[str], None] | None = None,
    key_alias: str = DEFAULT_ALIAS,
) -> Job:
    """Enqueue a job deleting `ids` (lines of text or bytes; blanks and duplicates are
    dropped, invalid ids recorded as failed `invalid_id`). Raises InputError."""
    settings = settings or get_settings()
    reason = check_reason(reason)
    store = store_for(settings, client)
    check_alias(store, key_alias)
    job_id, created = store.create(
        reason=reason, idempotency_key=idempotency_key, key_alias=key_alias
    )
    if not created:
        return Job(job_id, store)
    try:
        report, unique = _scan(store, job_id, ids, max_ids=settings.max_job_ids)
        if report.submitted == 0:
            raise InputError("no ids in the input (it is empty or blank): nothing to delete")
    except BaseException:
        # A refused input must not leave a staging job (or hold its idempotency key).
        store.discard(job_id, idempotency_key)
        raise
    batches = 0
    for chunk in batched(batched(unique, BATCH_SIZE), BATCHES_PER_ROUND_TRIP):
        store.stage(job_id, batches, chunk)
        batches += len(chunk)
        report.valid += sum(len(b) for b in chunk)
    report.duplicates = report.submitted - report.valid - report.invalid
    state = store.seal(
        job_id,
        batches=batches,
        valid=report.valid,
        invalid=report.invalid,
        submitted=report.submitted,
    )
    if state == "queued":
        (start or send_start)(job_id)
    return Job(job_id, store, report)


def _scan(
    store: JobStore, job_id: str, source: Iterable[bytes | str], *, max_ids: int
) -> tuple[IngestReport, Deduplicator]:
    """Read every line: valid ids into a de-duplicator, invalid ones staged as failures."""
    report, unique, invalid = IngestReport(), Deduplicator(), {}
    try:
        for line in read_lines(source):
            report.submitted += 1
            if report.submitted > max_ids:
                raise InputError(
                    f"more than {max_ids:,} ids: larger than WICKSON_MAX_JOB_IDS allows;"
                    " split the input into several jobs"
                )
            if line.problem is None:
                unique.add(line.text)
                continue
            invalid[printable(line.text, 200)] = INVALID_REASON
            if len(report.invalid_lines) < INVALID_SHOWN:
                report.invalid_lines.append(line)
            if len(invalid) >= BATCH_SIZE * BATCHES_PER_ROUND_TRIP:
                report.invalid += store.stage(job_id, 0, [], invalid)
                invalid = {}
        report.invalid += store.stage(job_id, 0, [], invalid) if invalid else 0
    except BaseException:
        unique.close()
        raise
    return report, unique
