"""Every Redis key wickson-purge writes, in one place.

Layout, for prefix ``wp`` and job ``J`` (a batch is identified by its index ``i``):

    wp:jobs                 zset   job id -> created (ms): the job list, newest last
    wp:idem:<key>           string idempotency key -> job id (submit twice, one job)
    wp:job:J                hash   the job record and its counters (see store.JOB_FIELDS)
    wp:job:J:batches        hash   i -> the batch's ids, newline-joined (at most 100)
    wp:job:J:resolved       bitmap bit i*128+k: id k of batch i has its outcome
    wp:job:J:failed         hash   media id -> failure reason
    wp:job:J:absent         set    ids found already deleted after an uncertain attempt
    wp:job:J:skipped        hash   media id -> why it was not attempted (job stopped)
    wp:job:J:reasons        hash   reason -> count of failed ids
    wp:job:J:claims         hash   i -> runs of batch i that ended without a verdict
    wp:job:J:attempts       hash   i -> API attempts spent on batch i
    wp:job:J:uncertain      set    batches whose earlier attempt may have deleted ids
    wp:job:J:ops            hash   i -> last API operation id for batch i
    wp:job:J:lease:i        string the run that owns batch i now (expires)
    wp:job:J:done           string set once, when the job finished (completion guard)
    wp:job:J:inflight       zset   i -> when batch i was last queued (the watchdog's view)
    wp:job:J:parked         set    batches of a paused job, set aside until it resumes
    wp:rl:<alias>           hash   the fleet rate limiter of one API key: tat, paused_until, rate
    wp:aliases              set    API key aliases the workers hold (never the keys)
    wp:events               list   job-finished events, newest first (capped)
    wp:sweep:<name>:<tick>  string the run that owns sweep <name>'s tick (SET NX, expires):
                                   a tick runs once, however many beats sent it
    wp:sweep:<name>:runs    list   the sweep's runs, newest first (JSON; capped)
    wp:webhooks             zset   job id -> when (ms) its completion webhook is next due
    wp:job:J:series         list   progress samples "t_ms,done,deleted,failed,429s" (capped)
    wp:series:tick:<n>      string the process that sampled progress in tick n (SET NX PX)
    wp:webhook:J:lock       string the process delivering job J's webhook now (SET NX PX)
    wp:svc:idem:<key>       string an HTTP Idempotency-Key -> sha256 of its request
    wp:svc:session:<id>     string a console session: token name and CSRF token (expires)

Ids are packed 100 to a hash field: a 10M-id job is 100k fields, near the raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

BITS_PER_BATCH = 128
"""Stride of a batch in the resolved bitmap: 16 bytes, so BITCOUNT can range over bytes."""

JOB_SUFFIXES = (
    "batches",
    "resolved",
    "failed",
    "absent",
    "skipped",
    "reasons",
    "claims",
    "attempts",
    "uncertain",
    "ops",
    "done",
    "inflight",
    "parked",
)


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "wp"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def job(self, job_id: str, suffix: str | None = None) -> str:
        base = f"{self.prefix}:job:{job_id}"
        return f"{base}:{suffix}" if suffix else base

    def lease(self, job_id: str, index: int) -> str:
        return f"{self.prefix}:job:{job_id}:lease:{index}"

    def job_limiter(self, job_id: str) -> str:
        """The limiter of a job given its own rate (`rethrottle --job`)."""
        return f"{self.prefix}:rl:job:{job_id}"

    def limiter(self, alias: str = "default") -> str:
        return f"{self.prefix}:rl:{alias}"

    @property
    def aliases(self) -> str:
        return f"{self.prefix}:aliases"

    def sweep_tick(self, name: str, tick: str) -> str:
        return f"{self.prefix}:sweep:{name}:{tick}"

    def sweep_runs(self, name: str) -> str:
        return f"{self.prefix}:sweep:{name}:runs"

    @property
    def webhooks(self) -> str:
        return f"{self.prefix}:webhooks"

    def webhook_lock(self, job_id: str) -> str:
        return f"{self.prefix}:webhook:{job_id}:lock"

    def job_series(self, job_id: str) -> str:
        """A job's progress samples (worker/series.py), outside the scripts' job keys."""
        return f"{self.prefix}:job:{job_id}:series"

    def series_tick(self, tick: int) -> str:
        return f"{self.prefix}:series:tick:{tick}"

    def http_idempotency(self, key: str) -> str:
        """The request hash behind an HTTP Idempotency-Key (the service's, per tenant)."""
        return f"{self.prefix}:svc:idem:{key}"

    def console_session(self, session_id: str) -> str:
        return f"{self.prefix}:svc:session:{session_id}"

    def job_keys(self, job_id: str) -> list[str]:
        """The record and every per-job structure, in the order the Lua scripts expect."""
        return [self.job(job_id)] + [self.job(job_id, s) for s in JOB_SUFFIXES]
