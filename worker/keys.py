"""Every Redis key wickson-purge writes, in one place.

Layout, for prefix ``wp`` and job ``J`` (a batch is identified by its index ``i``):

    wp:jobs                 zset   job id -> created (ms): the job list, newest last
    wp:active               zset   unfinished job id -> created (ms)
    wp:idem:<key>           string idempotency key -> job id (submit twice, one job)
    wp:idemdigest:<key>     string SHA-256 of the input first submitted with the key
                                   (the same key with another input is refused)
    wp:job:J                hash   the job record and its counters (schema: store.JobStatus)
    wp:job:J:batches        hash   i -> the batch's ids, newline-joined (at most 100)
    wp:job:J:resolved       bitmap bit i*128+k: id k of batch i has its outcome
    wp:job:J:failed         hash   media id -> failure reason
    wp:job:J:not_found      set    ids the API said it could not find
    wp:job:J:not_attempted  hash   media id -> 'i|why' it was not attempted (job stopped)
    wp:job:J:reasons        hash   reason -> count of failed ids
    wp:job:J:runs           hash   i -> runs of batch i whose lease lapsed (crash count)
    wp:job:J:attempts       hash   i -> failed API attempts spent on batch i
    wp:job:J:sent           set    batches a request may have been sent for
    wp:job:J:ops            hash   i -> last API operation id for batch i
    wp:job:J:done           string set once, when the job finished (completion guard)
    wp:job:J:pending        zset   i -> lease expiry (taken) or not-before (handed back), ms
    wp:job:J:owners         hash   i -> the token of the run that holds batch i's lease
    wp:run:<priority>       zset   runnable job id -> round-robin turn (lowest served next)
    wp:turn                 string the round-robin counter
    wp:drains               zset   drain ticket -> deadline (ms): drain runs alive or queued
    wp:drains:desired       string drain runs the fleet wants (its live worker slots)
    wp:workers              zset   worker id -> heartbeat deadline (ms)
    wp:workers:slots        hash   worker id -> its concurrency
    wp:store                hash   run_id: the Redis server run the store last saw
    wp:rl:<alias>           hash   the fleet rate limiter of one API key
    wp:rl:job:J             hash   the limiter of a job given its own rate
    wp:aliases              set    API key aliases the workers hold (never the keys)
    wp:events               list   job-finished events, newest first (capped)
    wp:sweep:<name>:<tick>  string the run that owns sweep <name>'s tick (SET NX, expires)
    wp:sweep:<name>:runs    list   the sweep's runs, newest first (JSON; capped)
    wp:webhooks             zset   job id -> when (ms) its completion webhook is next due
    wp:job:J:series         list   progress samples "t_ms,done,deleted,failed,429s" (capped)
    wp:series:tick:<n>      string the process that sampled progress in tick n (SET NX PX)
    wp:webhook:J:lock       string the process delivering job J's webhook now (SET NX PX)
    wp:svc:idem:<key>       string an HTTP Idempotency-Key -> sha256 of its request
    wp:svc:session:<id>     string a console session: token name and CSRF token (expires)

Ids are packed 100 to a hash field: a 10M-id job is 100k fields, near the raw bytes.
Scripts that pick a job (take, wake) build job keys from the prefix: wickson-purge
needs one Redis (or one primary), not a Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

BITS_PER_BATCH = 128
"""Stride of a batch in the resolved bitmap: 16 bytes, so BITCOUNT can range over bytes."""

JOB_SUFFIXES = (
    "batches",
    "resolved",
    "failed",
    "not_found",
    "not_attempted",
    "reasons",
    "runs",
    "attempts",
    "sent",
    "ops",
    "done",
    "pending",
    "owners",
)
"""The per-job structures, in the order of the scripts' KEYS after the record (the Lua
prelude is generated from this tuple: `store.lua_prelude`)."""


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

    @property
    def active(self) -> str:
        """Unfinished jobs (queued, running, paused, stopping): what recovery looks at."""
        return f"{self.prefix}:active"

    @property
    def drains(self) -> str:
        return f"{self.prefix}:drains"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def store(self) -> str:
        return f"{self.prefix}:store"

    def run_queue(self, priority: str) -> str:
        """Runnable jobs of one priority, in round-robin order."""
        return f"{self.prefix}:run:{priority}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def idempotency_digest(self, key: str) -> str:
        """Not under `idem:<key>:`, which a key ending in ':digest' could name."""
        return f"{self.prefix}:idemdigest:{key}"

    def job(self, job_id: str, suffix: str | None = None) -> str:
        base = f"{self.prefix}:job:{job_id}"
        return f"{base}:{suffix}" if suffix else base

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
