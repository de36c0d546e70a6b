"""worker/metrics.py: what a batch run counts, the fleet collector read from fakeredis, the
endpoint, prefork's multiprocess mode, and that no key reaches the exposition."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.conftest import commit_next
from worker import metrics
from worker.broker import BrokerReading, read_redis_broker
from worker.keys import Keys
from worker.metrics import FleetCollector, committed, reason_class
from worker.ratelimit import FleetLimiter
from worker.store import BatchCommit, JobStore

ROOT = Path(__file__).resolve().parents[2]


def value(name: str, **labels: str) -> float:
    """The current value of one sample of this process' registry (0 if absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """Samples read before and after: `delta(name, **labels)` is how much they moved."""

    def __init__(self, *samples: tuple[str, dict[str, str]]) -> None:
        self.before = {(n, tuple(sorted(lb.items()))): value(n, **lb) for n, lb in samples}

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return value(name, **labels) - self.before[key]


def watch(*names: str, **labels: str) -> Delta:
    return Delta(*[(n, labels) for n in names])


def exposition(*collectors: object) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Scrape a registry holding `collectors`: sample name -> labels -> value."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            found.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return found


# -- classification ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("Media not found", "not_found"),
        ("media does not exist", "not_found"),
        ("Access denied: media belongs to another user", "forbidden"),
        ("INSUFFICIENT_PERMISSIONS", "forbidden"),
        ("invalid_id", "invalid_id"),
        ("INVALID_MEDIA_IDS", "invalid_id"),
        ("PROCESSING_ERROR: gave up after 8 attempts (500 PROCESSING_ERROR: boom)", "gave_up"),
        ("worker_crash_loop: 5 runs ended without a verdict", "gave_up"),
        ("locked by legal hold", "other"),
        ("", "other"),
    ],
)
def test_free_text_reasons_map_to_a_few_classes(reason: str, expected: str) -> None:
    """Failure reasons become one of not_found, forbidden, invalid_id, gave_up, other."""
    assert reason_class(reason) == expected
    assert expected in metrics.REASON_CLASSES


def test_a_commit_counts_each_outcome_once() -> None:
    """A fresh commit counts every id by outcome; failed ones by reason class."""
    commit = BatchCommit(
        deleted=[0, 1, 2], not_found=[3], failed=[(4, "Media not found"), (5, "denied")]
    )
    assert committed(commit, 6) == [
        ("deleted", None, 3),
        ("not_found", None, 1),
        ("failed", "not_found", 1),
        ("failed", "forbidden", 1),
    ]


def test_a_replayed_commit_never_counts_more_than_the_store() -> None:
    """When the store took only some ids as new, the metrics count that many, no more."""
    commit = BatchCommit(deleted=[0, 1, 2], not_attempted=[(3, "stopped")])
    assert sum(c.n for c in committed(commit, 2)) == 2
    assert committed(commit, 0) == []


# -- a run moves the counters --------------------------------------------------------------


def test_a_committed_run_counts_ids_batches_requests_and_waits(
    make_job, make_run, wickson, ids
) -> None:
    """Deleted and failed ids (by reason class), the run's verdict, the request and its
    latency, and the limiter wait all move when a run commits."""
    make_job(ids(100))
    api = wickson(existing=ids(100)[:90])
    api.then(
        lambda request: api.success(
            ids(100)[:88], {ids(100)[88]: "Access denied", **dict.fromkeys(ids(100)[89:], "gone")}
        )
    )
    delta = Delta(
        ("wickson_purge_ids_total", {"outcome": "deleted"}),
        ("wickson_purge_ids_total", {"outcome": "failed"}),
        ("wickson_purge_ids_failed_total", {"reason": "forbidden"}),
        ("wickson_purge_ids_failed_total", {"reason": "other"}),
        ("wickson_purge_batch_runs_total", {"verdict": "done"}),
        ("wickson_purge_api_requests_total", {"result": "ok"}),
        ("wickson_purge_api_request_duration_seconds_count", {}),
        ("wickson_purge_limiter_wait_seconds_count", {}),
    )
    make_run(api).run()
    assert delta("wickson_purge_ids_total", outcome="deleted") == 88
    assert delta("wickson_purge_ids_total", outcome="failed") == 12
    assert delta("wickson_purge_ids_failed_total", reason="forbidden") == 1
    assert delta("wickson_purge_ids_failed_total", reason="other") == 11
    assert delta("wickson_purge_batch_runs_total", verdict="done") == 1
    assert delta("wickson_purge_api_requests_total", result="ok") == 1
    assert delta("wickson_purge_api_request_duration_seconds_count") == 1
    assert delta("wickson_purge_limiter_wait_seconds_count") == 1


def test_a_429_and_a_500_count_as_requests_and_the_500_as_a_retry(
    make_job, make_run, wickson, ids
) -> None:
    """A 429 counts as result=rate_limited, a 500 as server_error and a retry."""
    make_job(ids(10))
    api = wickson(existing=ids(10))
    api.then(
        wickson.error(429, "RATE_LIMIT_EXCEEDED", headers={"Retry-After": "0.01"}),
        wickson.error(500, "PROCESSING_ERROR"),
    )
    delta = Delta(
        ("wickson_purge_api_requests_total", {"result": "rate_limited"}),
        ("wickson_purge_api_requests_total", {"result": "server_error"}),
        ("wickson_purge_retries_total", {"cause": "server_error"}),
        ("wickson_purge_api_request_duration_seconds_count", {}),
    )
    make_run(api).run()
    assert delta("wickson_purge_api_requests_total", result="rate_limited") == 1
    assert delta("wickson_purge_api_requests_total", result="server_error") == 1
    assert delta("wickson_purge_retries_total", cause="server_error") == 1
    assert delta("wickson_purge_api_request_duration_seconds_count") == 3


def test_a_refused_key_counts_a_stopped_job_by_code(
    make_job, make_run, wickson, ids, store: JobStore
) -> None:
    """A 401 stops the job once: jobs_stopped{code=INVALID_API_KEY}, ids not attempted."""
    job_id = make_job(ids(10))
    delta = Delta(
        ("wickson_purge_jobs_stopped_total", {"code": "INVALID_API_KEY"}),
        ("wickson_purge_ids_total", {"outcome": "not_attempted"}),
        ("wickson_purge_api_requests_total", {"result": "auth_failed"}),
    )
    make_run(wickson(existing=ids(10), key="another-key")).run()
    assert store.status(job_id).state == "failed"
    assert delta("wickson_purge_jobs_stopped_total", code="INVALID_API_KEY") == 1
    assert delta("wickson_purge_ids_total", outcome="not_attempted") == 10
    assert delta("wickson_purge_api_requests_total", result="auth_failed") == 1


def test_a_handed_back_run_counts_as_handed_back(make_job, make_run, wickson, ids) -> None:
    """A run that hands its batch back (a long Retry-After) counts verdict=handed_back."""
    make_job(ids(10))
    api = wickson(existing=ids(10))
    api.then(*[wickson.error(429, "RATE_LIMIT_EXCEEDED", headers={"Retry-After": "60"})])
    delta = watch("wickson_purge_batch_runs_total", verdict="handed_back")
    assert make_run(api).run() == "handed_back"
    assert delta("wickson_purge_batch_runs_total", verdict="handed_back") == 1


# -- the fleet collector ---------------------------------------------------------------------


@pytest.fixture
def collector(store: JobStore, fake_redis) -> FleetCollector:
    """A FleetCollector on the test store, the broker queue 'wickson-purge' and 'other'."""
    limiters: dict[str, FleetLimiter] = {}

    def limiter(alias: str) -> FleetLimiter:
        return limiters.setdefault(
            alias, FleetLimiter(fake_redis, Keys().limiter(alias), rate=25.0)
        )

    queues = ["wickson-purge", "other"]
    return FleetCollector(store, limiter, lambda: read_redis_broker(fake_redis, queues))


def test_the_collector_reports_jobs_by_state_and_running_progress(
    collector: FleetCollector, make_job, store: JobStore, ids
) -> None:
    """Jobs by state (every state present, 0 included); done/total of running jobs only."""
    running = make_job(ids(150))
    commit_next(store, BatchCommit(deleted=list(range(40))), running)
    finished = make_job(ids(3), priority="high")
    commit_next(store, BatchCommit(deleted=[0, 1, 2]), finished)
    make_job(ids(5), priority="low")  # queued: taken after the others
    found = exposition(collector)
    jobs = {dict(k)["state"]: v for k, v in found["wickson_purge_jobs"].items()}
    assert jobs == {**dict.fromkeys(metrics.JOB_STATES, 0), "running": 1, "queued": 1,
                    "completed": 1}  # fmt: skip
    assert found["wickson_purge_job_ids_done"] == {(("job_id", running),): 40}
    assert found["wickson_purge_job_ids"] == {(("job_id", running),): 150}
    assert found["wickson_purge_store_up"] == {(): 1}


def test_the_collector_reports_queue_depth_over_every_priority_list(
    collector: FleetCollector, fake_redis
) -> None:
    """Queue depth is the LLEN of the queue plus its kombu priority lists; unacked too."""
    fake_redis.lpush("wickson-purge", "m1", "m2")
    fake_redis.lpush("wickson-purge\x06\x169", "m3")
    fake_redis.hset("unacked", "tag", "m4")
    found = exposition(collector)
    assert found["wickson_purge_queue_messages"] == {
        (("queue", "wickson-purge"),): 3,
        (("queue", "other"),): 0,
    }
    assert found["wickson_purge_queue_unacked_messages"] == {(): 1}


def test_the_collector_reports_the_fleet_rate_and_pause(
    collector: FleetCollector, fake_redis
) -> None:
    """The fleet's rate in force and the pause left, per key alias."""
    limiter = FleetLimiter(fake_redis, Keys().limiter("default"), rate=25.0)
    limiter.pause(3.0)
    found = exposition(collector)
    assert found["wickson_purge_fleet_rate_per_second"] == {(("alias", "default"),): limiter.rate}
    assert found["wickson_purge_fleet_paused_seconds"][(("alias", "default"),)] == pytest.approx(3)


def test_the_collector_says_store_down_instead_of_failing_the_scrape() -> None:
    """Redis not answering: the scrape succeeds with store_up 0 and no fleet gauges."""
    server = fakeredis.FakeServer()
    server.connected = False
    down = JobStore(fakeredis.FakeRedis(server=server))
    collector = FleetCollector(down, lambda alias: None, lambda: BrokerReading({"q": 0}, 0))  # type: ignore[arg-type,return-value]
    found = exposition(collector)
    assert found == {"wickson_purge_store_up": {(): 0}}


# -- what is exposed -------------------------------------------------------------------------


def test_the_api_key_never_appears_in_the_exposition(
    make_job, make_run, wickson, ids, api_key: str, collector: FleetCollector
) -> None:
    """Reasons and errors that echo the key are counted by class: the text never has it."""
    make_job(ids(20))
    api = wickson(existing=ids(20)[:10])
    api.then(
        wickson.error(500, "PROCESSING_ERROR", f"bad key {api_key}"),
        lambda request: api.success(ids(20)[:10], dict.fromkeys(ids(20)[10:], f"no {api_key}")),
    )
    make_run(api).run()
    text = generate_latest(REGISTRY).decode() + generate_latest(_registry(collector)).decode()
    assert "wickson_purge_ids_failed_total" in text
    assert api_key not in text


def _registry(*collectors: FleetCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return registry


def test_every_label_value_is_from_a_bounded_set() -> None:
    """No sample of the process metrics carries a label value outside the known classes."""
    allowed = {
        "outcome": metrics.OUTCOMES,
        "reason": metrics.REASON_CLASSES,
        "verdict": metrics.VERDICTS,
        "result": metrics.RESULTS,
        "cause": metrics.RESULTS,
        "code": metrics.STOP_CODES,
        "le": None,
    }
    for metric in metrics.PROCESS_METRICS:
        for family in metric.collect():
            for s in family.samples:
                for label, val in s.labels.items():
                    assert allowed[label] is None or val in allowed[label], (s.name, label, val)


# -- the endpoint ----------------------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[None]:
    """Whatever `metrics.serve` starts is stopped after the test."""
    yield
    metrics.stop_serving()


def test_serve_exposes_metrics_over_http_once_per_process(
    served: None, collector: FleetCollector
) -> None:
    """/metrics answers with the process metrics and the fleet gauges; a second call
    starts nothing new."""
    port = metrics.serve(0, collector, addr="127.0.0.1")
    assert metrics.serve(0, collector, addr="127.0.0.1") == port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "wickson_purge_ids_total" in text
    assert "wickson_purge_store_up 1.0" in text


def test_the_worker_serves_metrics_when_the_port_is_set(
    served: None, fake_redis, make_settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker_ready handler serves /metrics on WICKSON_METRICS_PORT, and not without."""
    import socket

    from worker import celery as celery_module
    from worker.runtime import build_runtime, set_runtime

    set_runtime(build_runtime(make_settings(), fake_redis))
    celery_module._serve_metrics()
    assert metrics._served is None  # no port: no endpoint
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    set_runtime(build_runtime(make_settings(metrics_port=port), fake_redis))
    try:
        celery_module._serve_metrics()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"wickson_purge_queue_messages" in response.read()
    finally:
        set_runtime(None)


def test_prefork_children_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, counts made in forked children are summed by the
    parent's exposition (what Celery's prefork pool needs)."""
    script = textwrap.dedent(
        """
        import multiprocessing
        from prometheus_client import generate_latest
        from worker import metrics

        def child():
            metrics.record_run("done")
            metrics.record_request(0.2, None)

        procs = [multiprocessing.get_context("fork").Process(target=child) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        print(generate_latest(metrics.exposition_registry()).decode())
        """
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    ).stdout  # fmt: skip
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(out)
        for s in family.samples
    }
    assert samples[("wickson_purge_batch_runs_total", (("verdict", "done"),))] == 3
    assert samples[("wickson_purge_api_request_duration_seconds_count", ())] == 3
    assert len(list(tmp_path.glob("counter_*.db"))) >= 3
