"""One run of one batch: claim it, send its unresolved ids, commit every answer.

A run may be a redelivery, a duplicate, or the retry of a run that died mid-request:
everything it needs to know comes from the claim, and every outcome goes through the
store's per-id commit, so running it twice never counts twice. Knows nothing of Celery:
`tasks.py` turns `Deferred` into a countdown retry and publishes the successors.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

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
from worker.store import BatchCommit, Claim, CommitResult, JobStore

log = structlog.get_logger("wickson_purge.batch")

MAX_429_IN_RUN = 20
"""429s one run absorbs before it frees its worker slot and comes back later."""

SPLIT_CODES = frozenset({"BATCH_TOO_LARGE", "INVALID_MEDIA_IDS"})
"""400s answered by halving the request: a smaller server limit, or one bad id to isolate."""


@dataclass
class RunResult:
    """What the task must do after a run: publish these batches."""

    verdict: str
    successors: list[int] = field(default_factory=list)


class BatchRun:
    """The state of one run of batch `index` of job `job_id`."""

    def __init__(
        self,
        job_id: str,
        index: int,
        token: str,
        *,
        store: JobStore,
        settings: Settings,
        limiter: FleetLimiter | None = None,
        api: WicksonClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
        tenants: Callable[[str], tuple[WicksonClient, FleetLimiter]] | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.job_id, self.index, self.token = job_id, index, token
        self.store, self.settings = store, settings
        self._api, self._limiter = api, limiter
        self.sleep = sleep
        self.tenants = tenants
        self.job_limiter: FleetLimiter | None = None
        self.stopping = stopping
        """True once the worker shuts down: hand the batch back before the next request."""
        """Client and limiter of a key alias; without it, `api` and `limiter` serve all."""
        self.log = log.bind(job_id=job_id, batch=index)
        self.pending: dict[str, int] = {}
        self.uncertain = False
        self.attempts = 0
        self.unsent = BatchCommit()
        """Counters not yet committed (429s, retries, requests)."""
        self.last_error: ApiError | None = None
        self.successors: list[int] = []
        self.reason: str | None = None
        self.released = False
        self.rate_limited_in_run = 0
        self.api_s = 0.0
        self.wait_s = 0.0
        self.operation_id = ""
        self.counted = {"deleted": 0, "absent": 0, "failed": 0, "skipped": 0}
        """Outcomes this run committed (the store ignores ids it had counted already)."""
        """Whether the last commit ended the run (lease released, crash count reset)."""

    # -- the run -----------------------------------------------------------------------

    def run(self) -> RunResult:
        """Claim and process the batch. Raises Deferred to come back later."""
        started = time.perf_counter()
        try:
            result = self._run()
        except Deferred as exc:
            self.wait_s += exc.waited_s
            metrics.record_run("deferred")
            self._log_run("deferred", started, countdown_s=round(exc.countdown_s, 3), why=exc.why)
            raise
        metrics.record_run(result.verdict)
        if result.verdict != "done":
            self._log_run(result.verdict, started)
        return result

    def _log_run(self, verdict: str, started: float, **extra: object) -> None:
        """The one line per run: outcome, counts, and where the time went."""
        elapsed = time.perf_counter() - started
        self.log.info(
            "batch.run",
            verdict=verdict,
            attempt=self.attempts,
            **self.counted,
            elapsed_ms=round(elapsed * 1000, 2),
            api_ms=round(self.api_s * 1000, 2),
            wait_ms=round(self.wait_s * 1000, 2),
            overhead_ms=round((elapsed - self.api_s - self.wait_s) * 1000, 2),
            operation_id=self.operation_id or None,
            **extra,
        )

    def _run(self) -> RunResult:
        claim = self.store.claim(
            self.job_id,
            self.index,
            self.token,
            lease_s=self.settings.lease_s,
            max_deliveries=self.settings.max_deliveries,
        )
        if claim.verdict == "gone":
            self.log.warning("batch.gone", state=claim.state)
            return RunResult("gone")
        if claim.verdict == "done":
            return RunResult("done", [int(j) for j in claim.extra.split(",") if j])
        if claim.verdict == "parked":
            return RunResult("parked")
        if claim.verdict == "busy":
            raise Deferred(max(int(claim.extra), 100) / 1000, "batch owned by another run")
        self.pending = {media_id: pos for pos, media_id in claim.pending()}
        if claim.job_rate:
            self.job_limiter = FleetLimiter(
                self.store.redis,
                self.store.keys.job_limiter(self.job_id),
                rate=float(claim.job_rate),
                sleep=self.sleep,
            )
        self.reason = claim.reason or None
        self.attempts, self.uncertain = claim.attempts, claim.uncertain
        if claim.verdict == "poison":
            runs = claim.extra
            return self._finish_all(
                "failed", f"worker_crash_loop: {runs} runs ended without a verdict"
            )
        if claim.state in ("stopping", "failed", "cancelled"):
            return self._finish_all("skipped", self._stop_reason(claim))
        if self.tenants is not None:
            try:
                self._api, self._limiter = self.tenants(claim.key_alias)
            except ConfigError as exc:
                # Submit checks aliases against the fleet's: this worker lacks a key
                # others have. Stop the job (resume once every worker has the key).
                self.store.stop(self.job_id, "failed", f"UNKNOWN_KEY_ALIAS: {exc}")
                return self._finish_all("skipped", "UNKNOWN_KEY_ALIAS")
        try:
            self._send_all()
        except Deferred as exc:
            self._commit(BatchCommit(later_s=exc.countdown_s), final=True)
            raise
        if not self.released:
            self._commit(BatchCommit(), final=True)
        return RunResult("ok", self.successors)

    def _send_all(self) -> None:
        chunks: deque[list[str]] = deque([list(self.pending)])
        while chunks:
            if self.attempts >= self.settings.max_attempts:
                self._give_up(chunks)
                return
            if self.stopping():
                raise Deferred(0.0, "worker shutting down")
            waited = 0.0
            if self.job_limiter is not None:  # a job throttled below the fleet's rate
                waited += self.job_limiter.acquire(self.settings.max_wait_in_task_s)
            waited += self.limiter.acquire(self.settings.max_wait_in_task_s)
            self.wait_s += waited
            metrics.record_limiter_wait(waited)
            chunk = chunks[0]
            started = time.perf_counter()
            try:
                try:
                    outcome = self.api.delete_batch(chunk, self.reason)
                finally:
                    self.api_s += time.perf_counter() - started
                    metrics.record_request(time.perf_counter() - started, sys.exc_info()[1])
            except RateLimited as exc:
                self.limiter.observe_limit(exc.limit)
                self._on_rate_limited(exc)
            except JobStopping as exc:
                self._on_job_stopping(exc)
                return
            except BadRequest as exc:
                self._on_bad_request(exc, chunks)
            except Retryable as exc:
                self._on_retryable(exc)
            else:
                self.limiter.observe_limit(outcome.limit)
                chunks.popleft()
                retry = self._on_answer(outcome, last=not chunks)
                if retry:
                    chunks.append(retry)

    # -- answers -----------------------------------------------------------------------

    def _on_answer(self, outcome: BatchOutcome, *, last: bool) -> list[str]:
        """Commit a 200; return the ids it did not account for (to send again)."""
        # Only an answer that leaves ids unaccounted is a failed attempt: it is what the
        # retry budget bounds (a lying API must not loop forever).
        failed_attempt = int(bool(outcome.unaccounted))
        self.attempts += failed_attempt
        commit = BatchCommit(
            deleted=[self.pending[i] for i in outcome.deleted],
            hd_vectors=outcome.hd_vectors,
            ld_vectors=outcome.ld_vectors,
            operation_id=outcome.operation_id,
            tries=failed_attempt,
            requests=1,
        )
        for media_id, reason in outcome.failed.items():
            if self.uncertain and is_not_found(reason):
                commit.absent.append(self.pending[media_id])
            else:
                commit.failed.append((self.pending[media_id], reason))
        if outcome.unaccounted:
            # The answer does not say what became of them: they may be gone already.
            self.uncertain = commit.uncertain = True
        self._commit(commit, final=last and not outcome.unaccounted)
        self.operation_id = outcome.operation_id
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
            raise Deferred(paused, "rate limited again and again: freeing the worker slot")

    def _on_retryable(self, exc: Retryable) -> None:
        self.attempts += 1
        self.last_error = exc
        self.uncertain = self.uncertain or exc.maybe_deleted
        self.unsent.tries += 1
        self.unsent.requests += 1
        self.unsent.retries += 1
        self.unsent.uncertain = self.uncertain
        wait = self._backoff(exc, self.attempts)
        self.log.warning("batch.retry", attempt=self.attempts, error=str(exc), wait_s=wait)
        if self.attempts >= self.settings.max_attempts:
            return
        if wait > self.settings.max_wait_in_task_s:
            raise Deferred(wait, exc.code)
        self.sleep(wait)

    def _on_bad_request(self, exc: BadRequest, chunks: deque[list[str]]) -> None:
        # A split is progress, not a failed attempt: bisecting 100 ids takes ~15 requests.
        self.unsent.requests += 1
        self.last_error = exc
        chunk = chunks.popleft()
        if exc.code in SPLIT_CODES and len(chunk) > 1:
            half = len(chunk) // 2
            chunks.extendleft([chunk[half:], chunk[:half]])
            self.log.info("batch.split", code=exc.code, size=len(chunk))
            return
        self._commit(BatchCommit(failed=[(self.pending.pop(i), exc.code) for i in chunk]))

    def _on_job_stopping(self, exc: JobStopping) -> None:
        self.unsent.requests += 1
        self.last_error = exc
        if self.store.stop(self.job_id, "failed", f"{exc.code}: {exc}"):
            metrics.record_job_stopped(exc)
            self.log.error("job.stopped", error=str(exc))
        self._finish_all("skipped", exc.code)

    # -- endings -----------------------------------------------------------------------

    def _give_up(self, chunks: deque[list[str]]) -> None:
        error = self.last_error
        code = error.code if error else "UNKNOWN"
        reason = f"{code}: gave up after {self.attempts} attempts ({error})"
        self.log.error("batch.gave_up", attempts=self.attempts, error=str(error))
        self._finish_all("failed", reason[:500])

    def _finish_all(self, outcome: str, reason: str) -> RunResult:
        """End the run: every id still pending gets `outcome` ('failed' or 'skipped')."""
        entries = [(pos, reason) for pos in self.pending.values()]
        commit = (
            BatchCommit(failed=entries) if outcome == "failed" else BatchCommit(skipped=entries)
        )
        self.pending.clear()
        self._commit(commit, final=True)
        return RunResult(outcome, self.successors)

    def _commit(self, commit: BatchCommit, *, final: bool = False) -> CommitResult:
        """Commit `commit` plus the counters gathered since the last commit."""
        commit.rate_limited += self.unsent.rate_limited
        commit.retries += self.unsent.retries
        commit.tries += self.unsent.tries
        commit.requests += self.unsent.requests
        commit.uncertain = commit.uncertain or self.unsent.uncertain
        if self.last_error is not None:
            commit.last_error = str(self.last_error)[:300]
        commit.final = final
        result = self.store.commit(self.job_id, self.index, self.token, commit)
        metrics.record_commit(commit, result.counted)
        for name, entries in (
            ("deleted", commit.deleted),
            ("absent", commit.absent),
            ("failed", commit.failed),
            ("skipped", commit.skipped),
        ):
            self.counted[name] += len(entries)
        self.unsent = BatchCommit()
        self.released = final
        self.successors.extend(result.successors)
        return result

    def _backoff(self, exc: ApiError, attempt: int) -> float:
        s = self.settings
        return round(retry_wait(exc, attempt, base_s=s.backoff_base_s, cap_s=s.backoff_cap_s), 3)

    @property
    def api(self) -> WicksonClient:
        if self._api is None:
            raise ConfigError("BatchRun needs `api` or `tenants`")
        return self._api

    @property
    def limiter(self) -> FleetLimiter:
        if self._limiter is None:
            raise ConfigError("BatchRun needs `limiter` or `tenants`")
        return self._limiter

    def _stop_reason(self, claim: Claim) -> str:
        return f"job stopped: {claim.job_error}" if claim.job_error else "job stopped"
