"""One run of one batch: send its unresolved ids, commit every answer, under its lease.

The batch comes from `JobStore.take` with a lease and a send slot. Before every later
request the run renews its lease (and reads the job's state and the fleet's 429 pause);
every commit is fenced by the run's token, so a run whose lease lapsed commits nothing
and sends nothing more. Whatever the run cannot finish now (a long backoff, a shutdown,
a pause) it hands back to the store with the time it may be taken again. Knows nothing
of Celery.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import structlog

from worker import metrics
from worker.api import BatchOutcome, WicksonClient, is_not_found
from worker.backoff import retry_wait
from worker.errors import (
    ApiError,
    BadRequest,
    ConfigError,
    Deferred,
    JobStopping,
    RateLimited,
    Retryable,
)
from worker.ratelimit import FleetLimiter
from worker.settings import Settings
from worker.store import BatchCommit, JobStore, Taken

log = structlog.get_logger("wickson_purge.batch")

MAX_429_IN_RUN = 20
"""429s one run absorbs before it hands its batch back for later."""

SPLIT_CODES = frozenset({"BATCH_TOO_LARGE", "INVALID_MEDIA_IDS"})
"""400s answered by halving the request: a smaller server limit, or one bad id to isolate."""


class Verdict(StrEnum):
    """How a run ended."""

    DONE = "done"
    """Every id of the batch has its outcome."""
    HANDED_BACK = "handed_back"
    """The batch goes back to the store, takeable again later (backoff, pause, shutdown)."""
    LOST = "lost"
    """The run's lease lapsed and another run holds the batch: it committed nothing more."""
    STOPPED = "stopped"
    """The job stopped: ids never sent ended not_attempted."""


class _HandBack(Exception):
    def __init__(self, later_s: float, why: str) -> None:
        self.later_s, self.why = later_s, why


class _LeaseLost(Exception):
    pass


@dataclass
class RunContext:
    """What every run of a process shares: the store, settings, and per key alias the
    API client and the fleet limiter."""

    store: JobStore
    settings: Settings
    tenant: Callable[[str], tuple[WicksonClient, FleetLimiter]]
    """The client and fleet limiter of a key alias; ConfigError for one this worker lacks."""
    sleep: Callable[[float], None] = time.sleep
    shutting_down: Callable[[], bool] = lambda: False
    """True once the worker shuts down: hand the batch back before the next request."""
    slice_over: Callable[[], bool] = lambda: False
    """True once the drain's slice is over: hand the batch back before a later request,
    so a drain holds its broker delivery for a slice plus one request and one wait, never
    a whole retry loop (RabbitMQ's consumer_timeout, Redis' visibility timeout)."""


@dataclass
class RunStats:
    """What one run did, for its log line."""

    counted: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("deleted", "not_found", "failed", "not_attempted"), 0
        )
    )
    requests: int = 0
    api_s: float = 0.0
    wait_s: float = 0.0
    operation_id: str = ""


class BatchRun:
    """One run of a taken batch: `run()` sends, commits, and says how it ended."""

    def __init__(self, taken: Taken, ctx: RunContext) -> None:
        self.taken, self.ctx = taken, ctx
        self.job_id, self.index = taken.job_id, taken.index
        self.log = log.bind(job_id=taken.job_id, batch=taken.index)
        self.pending: dict[str, int] = {media_id: pos for pos, media_id in taken.pending()}
        self.maybe_sent: set[str] = set(self.pending) if taken.sent_before else set()
        """Ids a request may have deleted without our hearing the answer: never guessed
        not_attempted, confirmed by another request even when the job stops."""
        self.attempts = taken.attempts
        """Failed API attempts on the batch (what WICKSON_MAX_ATTEMPTS bounds)."""
        self.stopping = taken.state == "stopping"
        self.unsent = BatchCommit()
        """Counters not yet committed (429s, retries, requests)."""
        self.last_error: ApiError | None = None
        self.rate_limited_in_run = 0
        self.stats = RunStats()
        self._tenant: tuple[WicksonClient, FleetLimiter] | None = None
        self.operation_id = ""

    # -- the run -----------------------------------------------------------------------

    def run(self) -> Verdict:
        """Send and commit until every id has its outcome, or the batch is handed back."""
        started = time.perf_counter()
        try:
            verdict = self._run()
        except _LeaseLost:
            verdict = Verdict.LOST
            self.log.warning("batch.lease_lost")
        metrics.record_run(verdict)
        self._log_run(verdict, started)
        return verdict

    def _run(self) -> Verdict:
        try:
            self._tenant = self.ctx.tenant(self.taken.key_alias)
        except ConfigError as exc:
            # Submit checks aliases against the fleet's: this worker lacks a key others
            # have. Stop the job (resume once every worker has the key).
            self.ctx.store.stop(self.job_id, "failed", f"UNKNOWN_KEY_ALIAS: {exc}")
            self.stopping = True
        if self.stopping:
            self._close_unsent(self.taken.stop_reason or "job stopped")
            if not self.pending:
                return Verdict.STOPPED
        try:
            self._send_all()
        except _HandBack as back:
            if not self.pending:  # the stop closed every id left: nothing to hand back
                return Verdict.STOPPED
            never_sent = not self.taken.sent_before and self.stats.requests == 0
            later_ms = int(back.later_s * 1000)
            self._commit(BatchCommit(release="later", later_ms=later_ms, unsent=never_sent))
            self.log.info("batch.handed_back", later_s=round(back.later_s, 3), why=back.why)
            return Verdict.HANDED_BACK
        if self.pending:  # the last request's answer left ids for another run
            self._commit(BatchCommit(release="later"))
            return Verdict.HANDED_BACK
        return Verdict.STOPPED if self.stopping else Verdict.DONE

    def _send_all(self) -> None:
        chunks: deque[list[str]] = deque([list(self.pending)])
        first = True
        while chunks:
            chunk = [i for i in chunks[0] if i in self.pending]
            if not chunk:
                chunks.popleft()
                continue
            if self.attempts >= self.ctx.settings.max_attempts:
                self._give_up()
                return
            self._before_request(first)
            first = False
            # The renewal may have seen a stop and closed ids never sent: never send those.
            chunk = [i for i in chunk if i in self.pending]
            if chunk:
                self._request(chunk, chunks)

    def _request(self, chunk: list[str], chunks: deque[list[str]]) -> None:
        started = time.perf_counter()
        try:
            try:
                outcome = self.api.delete_batch(chunk, self.taken.reason or None)
            finally:
                elapsed = time.perf_counter() - started
                self.stats.api_s += elapsed
                self.stats.requests += 1
                metrics.record_request(elapsed, sys.exc_info()[1])
        except RateLimited as exc:
            self.limiter.observe_limit(exc.limit)
            self._on_rate_limited(exc)
        except JobStopping as exc:
            self._on_job_stopping(exc)
        except BadRequest as exc:
            self._on_bad_request(exc, chunk, chunks)
        except Retryable as exc:
            self._on_retryable(exc, chunk)
        else:
            self.limiter.observe_limit(outcome.limit)
            chunks.popleft()
            retry = self._on_answer(outcome)
            if retry:
                chunks.append(retry)

    def _before_request(self, first: bool) -> None:
        """Hold a send slot and a live lease, or raise: _HandBack, _LeaseLost."""
        ctx = self.ctx
        if ctx.shutting_down():
            raise _HandBack(0.0, "worker shutting down")
        if not first and ctx.slice_over():
            raise _HandBack(0.0, "the drain's slice is over")
        self._hold_slot(first)
        # A worker's waits end early when it shuts down: hand back rather than send
        # before the slot, and a warm shutdown never waits out a backoff.
        if ctx.shutting_down():
            raise _HandBack(0.0, "worker shutting down")

    def _hold_slot(self, first: bool) -> None:
        """Wait for this request's send slot (the take's, or a fresh one) and renew."""
        ctx, settings = self.ctx, self.ctx.settings
        if first:
            wait = self.taken.wait_s
            metrics.record_limiter_wait(wait)
            if wait <= 0:
                return  # the take reserved this slot and leased the batch a moment ago
            ctx.sleep(wait)
            self.stats.wait_s += wait
            # Renewing after the wait also sees a 429 pause set meanwhile: Retry-After is
            # law, even for a slot a few milliseconds away.
            if self._renew() <= 0:
                return
        else:
            self._renew()
        # A later request, or a 429 pause set while the run waited: a fresh slot from the
        # limiter, after the pause and spaced from the others' (never all at its end).
        try:
            waited = self.limiter.acquire(settings.max_wait_in_task_s)
        except Deferred as exc:
            raise _HandBack(exc.countdown_s, exc.why) from None
        self.stats.wait_s += waited
        metrics.record_limiter_wait(waited)
        if waited > 0:
            self._renew()

    def _renew(self) -> float:
        """Renew the lease before a request; see a pause, a stop or a fleet 429 pause.
        Returns the fleet's pause left, seconds (0: none)."""
        settings = self.ctx.settings
        renewal = self.ctx.store.renew(
            self.job_id, self.index, self.taken.token,
            lease_s=settings.lease_s, alias=self.taken.key_alias,
        )  # fmt: skip
        if not renewal.held:
            raise _LeaseLost
        if renewal.state == "paused":
            raise _HandBack(0.0, "job paused")
        if renewal.state == "stopping" and not self.stopping:
            self.stopping = True
            self._close_unsent("job stopped")
            if not self.pending:
                raise _HandBack(0.0, "job stopped")
        if renewal.pause_s > settings.max_wait_in_task_s:
            raise _HandBack(renewal.pause_s, "fleet paused by a 429")
        return renewal.pause_s

    # -- answers -----------------------------------------------------------------------

    def _on_answer(self, outcome: BatchOutcome) -> list[str]:
        """Commit a 200; return the ids it did not account for (to send again)."""
        # Only an answer that leaves ids unaccounted is a failed attempt: it is what the
        # retry budget bounds (a lying API must not loop forever).
        failed_attempt = int(bool(outcome.unaccounted))
        self.attempts += failed_attempt
        commit = BatchCommit(
            deleted=[self.pending[i] for i in outcome.deleted],
            hd=outcome.hd_vectors,
            ld=outcome.ld_vectors,
            operation_id=outcome.operation_id,
            attempts=failed_attempt,
            requests=1,
        )
        for media_id, reason in outcome.failed.items():
            if is_not_found(reason):
                commit.not_found.append(self.pending[media_id])
            else:
                commit.failed.append((self.pending[media_id], reason))
        # The answer does not say what became of them: they may be gone already.
        self.maybe_sent.update(outcome.unaccounted)
        self._commit(commit)
        self.operation_id = self.stats.operation_id = outcome.operation_id
        if outcome.anomalies:
            self.log.warning(
                "batch.answer_anomalies",
                operation_id=outcome.operation_id,
                anomalies=outcome.anomalies,
                unaccounted=len(outcome.unaccounted),
            )
        for media_id in outcome.deleted + list(outcome.failed):
            self.pending.pop(media_id, None)
        return outcome.unaccounted

    def _on_rate_limited(self, exc: RateLimited) -> None:
        self.unsent.rate_limited += 1
        self.unsent.requests += 1
        self.rate_limited_in_run += 1
        wait = self._backoff(exc, self.rate_limited_in_run)
        paused = self.limiter.pause(wait)
        self.log.info("batch.rate_limited", retry_after_s=exc.retry_after_s, fleet_paused_s=paused)
        if self.rate_limited_in_run >= MAX_429_IN_RUN:
            raise _HandBack(paused, "rate limited again and again")

    def _on_retryable(self, exc: Retryable, chunk: list[str]) -> None:
        self.attempts += 1
        self.last_error = exc
        if exc.maybe_deleted:
            self.maybe_sent.update(chunk)
        self.unsent.attempts += 1
        self.unsent.requests += 1
        self.unsent.retries += 1
        wait = self._backoff(exc, self.attempts)
        self.log.warning("batch.retry", attempt=self.attempts, error=str(exc), wait_s=wait)
        if self.attempts >= self.ctx.settings.max_attempts:
            return
        if wait > self.ctx.settings.max_wait_in_task_s:
            raise _HandBack(wait, exc.code)
        self.ctx.sleep(wait)

    def _on_bad_request(self, exc: BadRequest, chunk: list[str], chunks: deque[list[str]]) -> None:
        # A split is progress, not a failed attempt: bisecting 100 ids takes ~15 requests.
        self.unsent.requests += 1
        self.last_error = exc
        chunks.popleft()
        if exc.code in SPLIT_CODES and len(chunk) > 1:
            half = len(chunk) // 2
            chunks.extendleft([chunk[half:], chunk[:half]])
            self.log.info("batch.split", code=exc.code, size=len(chunk))
            return
        self._commit(BatchCommit(failed=[(self.pending.pop(i), exc.code) for i in chunk]))

    def _on_job_stopping(self, exc: JobStopping) -> None:
        self.unsent.requests += 1
        self.last_error = exc
        if self.ctx.store.stop(self.job_id, "failed", f"{exc.code}: {exc}", exc.code):
            metrics.record_job_stopped(exc)
            self.log.error("job.stopped", error=str(exc))
        # Nothing more can be sent: ids an earlier request may have deleted cannot be
        # confirmed now; `resume` (with a working key) confirms them.
        unconfirmed = f"{exc.code}: unconfirmed (an earlier request may have deleted it)"
        self._close({i: unconfirmed if i in self.maybe_sent else exc.code for i in self.pending})
        self.stopping = True

    # -- endings -----------------------------------------------------------------------

    def _give_up(self) -> None:
        error = self.last_error
        code = error.code if error else "UNKNOWN"
        reason = f"{code}: gave up after {self.attempts} attempts ({error})"[:400]
        unknown = reason + "; the API may have deleted it"
        self.log.error("batch.gave_up", attempts=self.attempts, error=str(error))
        commit = BatchCommit(
            failed=[
                (pos, unknown if media_id in self.maybe_sent else reason)
                for media_id, pos in self.pending.items()
            ]
        )
        self.pending.clear()
        self._commit(commit)

    def _close_unsent(self, reason: str) -> None:
        """The job stopped: ids no request may have reached end not_attempted."""
        self._close({i: reason for i in self.pending if i not in self.maybe_sent})

    def _close(self, reasons: dict[str, str]) -> None:
        commit = BatchCommit(
            not_attempted=[(self.pending.pop(i), why) for i, why in reasons.items()]
        )
        if commit.not_attempted or self.unsent.requests:
            self._commit(commit)

    def _commit(self, commit: BatchCommit) -> None:
        """Commit `commit` plus the counters gathered since the last commit; raise
        _LeaseLost if the run no longer holds the batch."""
        commit.rate_limited += self.unsent.rate_limited
        commit.retries += self.unsent.retries
        commit.attempts += self.unsent.attempts
        commit.requests += self.unsent.requests
        if self.last_error is not None:
            commit.last_error = str(self.last_error)[:300]
        result = self.ctx.store.commit(self.job_id, self.index, self.taken.token, commit)
        if result.lost:
            raise _LeaseLost
        self.unsent = BatchCommit()
        metrics.record_commit(commit, result.counted)
        for name, n in commit.outcomes().items():
            self.stats.counted[name] += n

    def _backoff(self, exc: ApiError, attempt: int) -> float:
        s = self.ctx.settings
        return round(retry_wait(exc, attempt, base_s=s.backoff_base_s, cap_s=s.backoff_cap_s), 3)

    @property
    def api(self) -> WicksonClient:
        if self._tenant is None:
            raise ConfigError("no API client: the run has not resolved its key alias")
        return self._tenant[0]

    @property
    def limiter(self) -> FleetLimiter:
        if self._tenant is None:
            raise ConfigError("no limiter: the run has not resolved its key alias")
        return self._tenant[1]

    def _log_run(self, verdict: Verdict, started: float) -> None:
        """The one line per run: outcome, counts, and where the time went."""
        elapsed = time.perf_counter() - started
        s = self.stats
        self.log.info(
            "batch.run",
            verdict=str(verdict),
            attempt=self.attempts,
            **s.counted,
            requests=s.requests,
            elapsed_ms=round(elapsed * 1000, 2),
            api_ms=round(s.api_s * 1000, 2),
            wait_ms=round(s.wait_s * 1000, 2),
            overhead_ms=round((elapsed - s.api_s - s.wait_s) * 1000, 2),
            operation_id=s.operation_id or None,
        )
