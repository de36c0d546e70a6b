"""Prometheus metrics of the worker fleet: what each process did, and what Redis holds.

Two kinds, exposed together on ``WICKSON_METRICS_PORT`` (off by default):

- **Per process**, counted where it happens (``batch.py`` calls the functions below):
  ids given an outcome, failures by reason class, batch runs by verdict, API requests by
  result and their latency, retries, time waiting for the fleet limiter, jobs stopped.
  Counters and histograms only, so they add up across processes.
- **Fleet-wide**, read from Redis at scrape time by `FleetCollector`: jobs by state
  (the newest `RECENT_JOBS`), progress of running jobs, queue depth, the fleet's rate and
  pause, and the fleet as the store sees it (workers, slots, drain runs, unfinished jobs).
  Every worker reports the same values: aggregate them with ``max``, not ``sum``.

Label values are bounded: a failure reason (free text from the API) becomes one of
`REASON_CLASSES`, a request result one of `RESULTS`; no label ever carries an id, a key
or an error message. Job ids appear only on the progress gauges of running jobs.

**Prefork.** Celery's prefork children are separate processes: with
``PROMETHEUS_MULTIPROC_DIR`` set (to an empty directory writable by the worker, set
*before* the worker starts: prometheus-client reads it at import), every process writes
its counters to files there and the main process' endpoint sums them
(prometheus-client's multiprocess mode). Empty the directory when the worker restarts
(a tmpfs or an ``emptyDir`` does it). Without the variable (the threads pool, one
process) the default registry serves.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple
from wsgiref.simple_server import WSGIServer

import redis
import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from worker.api import is_not_found
from worker.broker import BrokerReading
from worker.errors import (
    ApiUnreachable,
    AuthFailed,
    BadRequest,
    JobNotFound,
    JobStopping,
    OutcomeUnknown,
    PurgeError,
    RateLimited,
    ServerError,
)
from worker.ratelimit import FleetLimiter
from worker.store import TERMINAL_STATES, BatchCommit, JobStore

PREFIX = "wickson_purge"

OUTCOMES = ("deleted", "not_found", "failed", "not_attempted")
REASON_CLASSES = ("not_found", "forbidden", "invalid_id", "gave_up", "other")
RESULTS = (
    "ok", "rate_limited", "bad_request", "auth_failed", "stopped", "server_error",
    "unreachable", "outcome_unknown", "error",
)  # fmt: skip
VERDICTS = ("done", "handed_back", "lost", "stopped")
STOP_CODES = ("INVALID_API_KEY", "INSUFFICIENT_PERMISSIONS", "other")
JOB_STATES = (
    "staging", "queued", "running", "paused", "stopping", "completed", "failed", "cancelled",
)  # fmt: skip

RECENT_JOBS = 1_000
"""Jobs the scrape looks at (newest first): bounded work per scrape, whatever the history."""

MAX_RUNNING_JOBS = 50
"""Running jobs whose progress is exported (one series each; the stuck-job alert)."""

IDS = Counter(f"{PREFIX}_ids", "Ids this worker gave their outcome, by outcome.", ["outcome"])
IDS_FAILED = Counter(
    f"{PREFIX}_ids_failed", "Ids that failed, by reason class (see REASON_CLASSES).", ["reason"]
)
BATCH_RUNS = Counter(f"{PREFIX}_batch_runs", "Runs of a batch, by how they ended.", ["verdict"])
API_REQUESTS = Counter(
    f"{PREFIX}_api_requests",
    "Requests to the Wickson API, by result (429: rate_limited).",
    ["result"],
)
API_LATENCY = Histogram(
    f"{PREFIX}_api_request_duration_seconds",
    "Time for one batch-delete request, answer or error.",
    buckets=(0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 15, 30),
)
RETRIES = Counter(
    f"{PREFIX}_retries",
    "Retryable API errors (5xx, timeouts, no connection), by result.",
    ["cause"],
)
LIMITER_WAIT = Histogram(
    f"{PREFIX}_limiter_wait_seconds",
    "Time a request waited for its fleet send slot (the rate limit, or a 429 pause).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
JOBS_STOPPED = Counter(
    f"{PREFIX}_jobs_stopped",
    "Jobs this worker stopped because no request could succeed, by API error code.",
    ["code"],
)

# Every label value exists from the start at 0, so rate() and increase() see the first event.
for _outcome in OUTCOMES:
    IDS.labels(_outcome)
for _reason in REASON_CLASSES:
    IDS_FAILED.labels(_reason)
for _verdict in VERDICTS:
    BATCH_RUNS.labels(_verdict)
for _result in RESULTS:
    API_REQUESTS.labels(_result)
for _code in STOP_CODES:
    JOBS_STOPPED.labels(_code)


# -- classification (pure) ---------------------------------------------------------------


_FORBIDDEN_WORDS = ("forbidden", "denied", "permission", "not allowed", "unauthori", "belongs to")
_INVALID_WORDS = ("invalid_id", "invalid_media_id", "invalid id", "invalid media")
_GAVE_UP_WORDS = ("gave up after", "worker_crash_loop")


def reason_class(reason: str) -> str:
    """The bounded class of a free-text failure reason: one of `REASON_CLASSES`."""
    text = reason.lower()
    if any(word in text for word in _GAVE_UP_WORDS):
        return "gave_up"
    if any(word in text for word in _INVALID_WORDS):
        return "invalid_id"
    if any(word in text for word in _FORBIDDEN_WORDS):
        return "forbidden"
    if is_not_found(reason):
        return "not_found"
    return "other"


def result_of(error: BaseException | None) -> str:
    """The `RESULTS` label of an API call that raised `error` (None: answered 200)."""
    if error is None:
        return "ok"
    for kind, label in (
        (RateLimited, "rate_limited"),
        (ServerError, "server_error"),
        (ApiUnreachable, "unreachable"),
        (OutcomeUnknown, "outcome_unknown"),
        (BadRequest, "bad_request"),
        (AuthFailed, "auth_failed"),
        (JobStopping, "stopped"),
    ):
        if isinstance(error, kind):
            return label
    return "error"


class Counted(NamedTuple):
    """Ids of one commit to count: `outcome`, the reason class of failed ones, how many."""

    outcome: str
    reason: str | None
    n: int


def committed(commit: BatchCommit, counted: int) -> list[Counted]:
    """What a commit gave ids, trimmed to the `counted` ids the store took as new.

    A commit repeating ids the store had counted (a replay) counts them once: the totals
    always match the store's; which outcome a rare replayed id is taken from is a guess
    (the last ones listed).
    """
    groups = [Counted("deleted", None, len(commit.deleted))]
    groups.append(Counted("not_found", None, len(commit.not_found)))
    for _, reason in commit.failed:
        groups.append(Counted("failed", reason_class(reason), 1))
    groups.append(Counted("not_attempted", None, len(commit.not_attempted)))
    out: list[Counted] = []
    left = max(counted, 0)
    for group in groups:
        take = min(group.n, left)
        left -= take
        if take:
            out.append(group._replace(n=take))
    return out


# -- what batch.py calls -------------------------------------------------------------------


def record_commit(commit: BatchCommit, counted: int) -> None:
    """Count the outcomes a commit gave (at most the `counted` new ids)."""
    for group in committed(commit, counted):
        IDS.labels(group.outcome).inc(group.n)
        if group.reason is not None:
            IDS_FAILED.labels(group.reason).inc(group.n)


def record_run(verdict: str) -> None:
    """Count one batch run that ended with `verdict` (an unknown one counts as 'done')."""
    BATCH_RUNS.labels(verdict if verdict in VERDICTS else "done").inc()


def record_request(seconds: float, error: BaseException | None) -> None:
    """Count one API request that took `seconds` and raised `error` (None: a 200)."""
    result = result_of(error)
    API_REQUESTS.labels(result).inc()
    API_LATENCY.observe(seconds)
    if result in ("server_error", "unreachable", "outcome_unknown"):
        RETRIES.labels(result).inc()


def record_limiter_wait(seconds: float) -> None:
    """Record the time one request waited for its fleet send slot."""
    LIMITER_WAIT.observe(seconds)


def record_job_stopped(error: PurgeError) -> None:
    """Count a job this worker stopped because of `error` (its code, if a known one)."""
    code = getattr(error, "code", "")
    JOBS_STOPPED.labels(code if code in STOP_CODES else "other").inc()


log = structlog.get_logger("wickson_purge.metrics")


# -- the fleet, read at scrape time ---------------------------------------------------------


class FleetCollector(Collector):
    """Gauges read from Redis when Prometheus scrapes: a few round trips, bounded work."""

    def __init__(
        self,
        store: JobStore,
        limiter: Callable[[str], FleetLimiter],
        broker: Callable[[], BrokerReading],
        *,
        recent: int = RECENT_JOBS,
    ) -> None:
        self.store = store
        self.limiter = limiter
        """The limiter of a key alias (the worker's `Runtime.limiter`)."""
        self.broker = broker
        """Reads the broker's queues (worker/broker.py), at each scrape."""
        self.recent = recent

    def describe(self) -> Iterator[Metric]:
        """The families, without touching Redis (called once, at registration)."""
        yield from fleet_families()

    def collect(self) -> Iterator[Metric]:
        """Every gauge, or only `store_up 0` when Redis does not answer."""
        families = fleet_families()
        up = families[-1]
        try:
            self._fill(*families[:-1])
        except (PurgeError, redis.RedisError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield from families

    def _fill(
        self,
        jobs: GaugeMetricFamily,
        done: GaugeMetricFamily,
        total: GaugeMetricFamily,
        queued: GaugeMetricFamily,
        unacked: GaugeMetricFamily,
        rate: GaugeMetricFamily,
        paused: GaugeMetricFamily,
        fleet: GaugeMetricFamily,
        broker_up: GaugeMetricFamily,
    ) -> None:
        for what, n in self.store.fleet_counts().items():
            fleet.add_metric([what], n)
        states = self.store.recent_states(self.recent)
        for state in JOB_STATES:
            jobs.add_metric([state], sum(1 for s in states.values() if s == state))
        running = [j for j, s in states.items() if s == "running"][:MAX_RUNNING_JOBS]
        for job_id in running:
            with contextlib.suppress(JobNotFound):  # expired since: nothing to report
                status = self.store.status(job_id)
                if status.state not in TERMINAL_STATES:
                    done.add_metric([job_id], status.done)
                    total.add_metric([job_id], status.total)
        try:
            reading = self.broker()
        except Exception as exc:  # kombu's and redis-py's errors alike: the scrape goes on
            log.warning("metrics.broker_unread", error=str(exc))
            broker_up.add_metric([], 0)
        else:
            broker_up.add_metric([], 1)
            for name, depth in reading.waiting.items():
                queued.add_metric([name], depth)
            if reading.unacked is not None:  # Redis only: RabbitMQ does not say over AMQP
                unacked.add_metric([], reading.unacked)
        for alias in sorted(self.store.known_aliases() or {"default"}):
            limiter = self.limiter(alias)
            paused.add_metric([alias], limiter.paused_for())
            rate.add_metric([alias], limiter.rate)


def fleet_families() -> list[GaugeMetricFamily]:
    """The gauges `FleetCollector` fills, empty (`wickson_purge_store_up` last)."""
    return [
        GaugeMetricFamily(
            f"{PREFIX}_jobs",
            f"Jobs by state, among the newest {RECENT_JOBS}.",
            labels=["state"],
        ),
        GaugeMetricFamily(
            f"{PREFIX}_job_ids_done",
            "Ids with their outcome, per running job.",
            labels=["job_id"],
        ),
        GaugeMetricFamily(f"{PREFIX}_job_ids", "Unique ids, per running job.", labels=["job_id"]),
        GaugeMetricFamily(
            f"{PREFIX}_queue_messages", "Messages waiting in a broker queue.", labels=["queue"]
        ),
        GaugeMetricFamily(
            f"{PREFIX}_queue_unacked_messages",
            "Messages taken by workers, not yet acked (Redis broker only).",
        ),
        GaugeMetricFamily(
            f"{PREFIX}_fleet_rate_per_second",
            "The fleet's request rate in force, per API key alias.",
            labels=["alias"],
        ),
        GaugeMetricFamily(
            f"{PREFIX}_fleet_paused_seconds",
            "Seconds left in the fleet's pause after a 429, per API key alias.",
            labels=["alias"],
        ),
        GaugeMetricFamily(
            f"{PREFIX}_fleet",
            "The fleet as the store sees it: workers alive, their slots, drain runs alive or"
            " queued, unfinished jobs.",
            labels=["what"],
        ),
        GaugeMetricFamily(f"{PREFIX}_broker_up", "1 if the broker answered this scrape, else 0."),
        GaugeMetricFamily(f"{PREFIX}_store_up", "1 if Redis answered this scrape, else 0."),
    ]


PROCESS_METRICS = (IDS, IDS_FAILED, BATCH_RUNS, API_REQUESTS, API_LATENCY, RETRIES, LIMITER_WAIT,
                   JOBS_STOPPED)  # fmt: skip


def sample_names() -> frozenset[str]:
    """Every sample name the endpoint can expose (with _total, _bucket, ... suffixes):
    what dashboards and alert rules may query."""
    names = {s.name for m in PROCESS_METRICS for f in m.collect() for s in f.samples}
    return frozenset(names | {f.name for f in fleet_families()})


# -- the endpoint ---------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR if set (prefork: per-process files), else None."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition_registry(*collectors: Collector) -> CollectorRegistry:
    """The registry to serve: this process' metrics, or every process' in multiprocess
    mode, plus `collectors`."""
    if multiprocess_dir() is None:
        registry = REGISTRY
    else:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    for collector in collectors:
        registry.register(collector)
    return registry


@dataclass
class _Server:
    port: int
    httpd: WSGIServer
    registry: CollectorRegistry
    collectors: tuple[Collector, ...]


_served: _Server | None = None
_serve_lock = threading.Lock()


def serve(port: int, *collectors: Collector, addr: str = "0.0.0.0") -> int:  # noqa: S104
    """Serve /metrics on `port` (0: any free one) once per process; returns the port.
    Later calls return the running server's port and start nothing. Raises OSError."""
    global _served
    with _serve_lock:
        if _served is None:
            registry = exposition_registry(*collectors)
            try:
                httpd, _thread = start_http_server(port, addr=addr, registry=registry)
            except BaseException:
                _unregister(registry, collectors)
                raise
            _served = _Server(httpd.server_port, httpd, registry, collectors)
        return _served.port


def stop_serving() -> None:
    """Stop the server `serve` started (tests; a worker's ends with its process)."""
    global _served
    with _serve_lock:
        if _served is not None:
            _served.httpd.shutdown()
            _served.httpd.server_close()
            _unregister(_served.registry, _served.collectors)
            _served = None


def _unregister(registry: CollectorRegistry, collectors: Iterable[Collector]) -> None:
    for collector in collectors:
        registry.unregister(collector)


def mark_process_dead(pid: int) -> None:
    """A prefork child exited: drop its live-gauge files (its counters stay summed)."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
