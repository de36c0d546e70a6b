"""The monitoring files, checked without Prometheus or Grafana: ops/prometheus/alerts.yml,
ops/prometheus/prometheus.yml and ops/grafana/wickson-purge.json.

promtool is not available and PyPI has no pure-Python PromQL parser, so the queries are
checked for what mistakes they would show: every metric they name is one worker/metrics.py
exposes (with its _total/_bucket/... suffix), every label value they match literally is
one the worker can emit, and their brackets balance.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_compose import env_example_vars
from worker import metrics

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
PROMETHEUS = ROOT / "ops" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "wickson-purge.json"
COMPOSE = ROOT / "docker-compose.yml"

WORKER_JOB = "wickson-purge-worker"
REQUIRED_ALERTS = {
    "WicksonPurgeJobStuck",
    "WicksonPurge429Storm",
    "WicksonPurgeAuthFailure",
    "WicksonPurgeQueueGrowing",
    "WicksonPurgeNoWorkerUp",
}
REQUIRED_PANELS = {
    "Ids per second by outcome",
    "Failures by reason",
    "Fleet rate vs 429s",
    "API latency",
    "Limiter wait",
    "Queue depth",
    "Jobs by state",
}
PROMETHEUS_BUILTINS = {"up"}
LABEL_VALUES: dict[str, tuple[str, ...]] = {
    "outcome": metrics.OUTCOMES,
    "reason": metrics.REASON_CLASSES,
    "result": metrics.RESULTS,
    "cause": metrics.RESULTS,
    "verdict": metrics.VERDICTS,
    "code": metrics.STOP_CODES,
    "state": metrics.JOB_STATES,
}
"""Labels with a bounded set of values; others (job_id, queue, alias, le) are free."""

SELECTOR = re.compile(r"\b(wickson_purge_[a-z0-9_]+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
DURATION = re.compile(r"^\d+[smhd]$")


def check_query(expr: str) -> set[str]:
    """Fail on an unknown metric, label value or unbalanced bracket; return the metrics."""
    for opening, closing in ("()", "{}", "[]"):
        assert expr.count(opening) == expr.count(closing), f"unbalanced {opening}: {expr}"
    known = metrics.sample_names()
    used = set()
    for name, matchers in SELECTOR.findall(expr):
        assert name in known, f"{name} is not exposed by worker/metrics.py: {expr}"
        used.add(name)
        for label, op, value in MATCHER.findall(matchers):
            allowed = LABEL_VALUES.get(label)
            if allowed is None or (op in ("!=", "!~") and not value):
                continue
            values = value.split("|") if op in ("=~", "!~") else [value]
            assert set(values) <= set(allowed), f"{label}={value!r} never emitted: {expr}"
    return used


# --- alerts.yml --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    assert set(data) == {"groups"}
    found: list[dict[str, Any]] = []
    for group in data["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        assert group["name"]
        assert group["rules"]
        found.extend(group["rules"])
    return found


def test_alerts_file_has_every_required_alert_once(rules: list[dict[str, Any]]) -> None:
    """Stuck job, 429 storm, auth failure, queue growing, no worker up: each one rule."""
    names = [rule["alert"] for rule in rules]
    assert sorted(names) == sorted(set(names))
    assert set(names) >= REQUIRED_ALERTS


def test_every_alert_rule_is_well_formed(rules: list[dict[str, Any]]) -> None:
    """Each rule: only Prometheus' keys, an expression, a duration, a severity, a summary."""
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
        assert isinstance(rule["expr"], str)
        assert rule["expr"].strip()
        assert DURATION.match(rule.get("for", "0s")), rule
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_alert_expressions_query_only_what_the_workers_expose(
    rules: list[dict[str, Any]],
) -> None:
    """Every metric and label value in the rules exists in worker/metrics.py."""
    for rule in rules:
        names = check_query(rule["expr"])
        builtins = set(re.findall(r"\b(\w+)\{job=", rule["expr"])) - names
        assert builtins <= PROMETHEUS_BUILTINS
        assert names or builtins, rule["alert"]


def test_the_no_worker_alert_watches_the_scrape_job_of_the_workers(
    rules: list[dict[str, Any]],
) -> None:
    """`up{job=...}` names the job prometheus.yml scrapes the workers under."""
    rule = next(r for r in rules if r["alert"] == "WicksonPurgeNoWorkerUp")
    assert f'up{{job="{WORKER_JOB}"}}' in rule["expr"]


# --- prometheus.yml ----------------------------------------------------------------------


def test_prometheus_scrapes_every_worker_replica_on_the_metrics_port() -> None:
    """The worker job resolves the compose service `worker` by DNS, on the port that
    env.example and docker-compose.yml give WICKSON_METRICS_PORT."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == WORKER_JOB)
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"]
    value, is_set = env_example_vars()["WICKSON_METRICS_PORT"]
    assert is_set
    assert sd["port"] == int(value)
    worker = yaml.safe_load(COMPOSE.read_text())["services"]["worker"]
    assert worker["environment"]["WICKSON_METRICS_PORT"] == f"${{WICKSON_METRICS_PORT:-{value}}}"
    assert value in worker["expose"]


def test_prometheus_loads_the_alerts_file_compose_mounts() -> None:
    """rule_files names the path where docker-compose.yml mounts ops/prometheus/alerts.yml."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    volumes = yaml.safe_load(COMPOSE.read_text())["services"]["prometheus"]["volumes"]
    mounts = dict(v.split(":")[:2] for v in volumes if v.startswith("./"))
    assert mounts["./ops/prometheus/alerts.yml"] in config["rule_files"]


# --- the Grafana dashboard ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested ones included."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_dashboard_has_the_panels_an_operator_needs(dashboard: dict[str, Any]) -> None:
    """ids/s, failures by reason, rate vs 429s, latency, limiter wait, queues, jobs."""
    assert dashboard["uid"]
    assert dashboard["title"]
    titles = [p["title"] for p in panels_of(dashboard)]
    assert len(titles) == len(set(titles))
    assert set(titles) >= REQUIRED_PANELS
    ids = [p["id"] for p in panels_of(dashboard)]
    assert len(ids) == len(set(ids))


def test_dashboard_queries_use_only_metrics_the_workers_define(dashboard: dict[str, Any]) -> None:
    """Every query names metrics and label values of worker/metrics.py, on the chosen
    Prometheus data source."""
    used: set[str] = set()
    for panel in panels_of(dashboard):
        if panel.get("type") == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= check_query(target["expr"])
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    assert families >= {
        "wickson_purge_ids",
        "wickson_purge_ids_failed",
        "wickson_purge_fleet_rate_per_second",
        "wickson_purge_api_requests",
        "wickson_purge_api_request_duration_seconds",
        "wickson_purge_limiter_wait_seconds",
        "wickson_purge_queue_messages",
        "wickson_purge_jobs",
    }


def test_the_query_check_catches_a_misspelt_metric_or_label_value() -> None:
    """The checks above would fail on a typo: they are not vacuous."""
    with pytest.raises(AssertionError, match="not exposed"):
        check_query("rate(wickson_purge_id_total[5m])")
    with pytest.raises(AssertionError, match="never emitted"):
        check_query('rate(wickson_purge_api_requests_total{result="ratelimited"}[5m])')
    with pytest.raises(AssertionError, match="unbalanced"):
        check_query("sum(rate(wickson_purge_ids_total[5m])")
