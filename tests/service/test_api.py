"""The HTTP API over real HTTP: submit (text, CSV, JSON, dry run), status, reports,
controls, idempotency, bad input, rate and sweeps, against a real Redis and real workers."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from ops.fake_api import RunningFakeApi
from tests.helpers import wait_until
from tests.service.conftest import MAX_JOB_IDS, Service, owned, text_body, wait_state
from tests.services import WorkerProcess
from worker.keys import Keys

pytestmark = pytest.mark.integration

Api = Callable[..., httpx.Client]
TEXT = {"Content-Type": "text/plain"}


def submit_text(client: httpx.Client, ids: list[str], **params: Any) -> httpx.Response:
    params.setdefault("reason", "http test")
    return client.post("/v1/jobs", content=text_body(ids), headers=TEXT, params=params)


def test_a_text_upload_runs_to_completion_and_reports_every_id(
    api: Api, fake_api: Callable[..., RunningFakeApi], workers: Callable[..., WorkerProcess]
) -> None:
    """text/plain ids: 202 with the counts; the job completes with exact counts; the
    report (CSV and JSONL, filtered by outcome) names every id once."""
    fake = fake_api(items=3_000)
    workers(fake.url, rate_limit=200, concurrency=4)
    client = api("shop")
    ids = [*owned(2_500), "vec-0000001", "bad id", "unknown-1"]
    answer = submit_text(client, ids)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["submitted"], body["valid"], body["invalid"], body["duplicates"]) == (
        2_503, 2_501, 1, 1,
    )  # fmt: skip
    assert body["invalid_lines"] == [
        {"line": 2_502, "text": "bad id", "problem": "contains whitespace"}
    ]
    final = wait_state(client, body["job_id"], "completed")
    assert (final["total"], final["deleted"], final["failed"], final["not_found"]) == (
        2_502,
        2_500,
        1,
        1,
    )  # fmt: skip  (the unknown id is not_found: nothing to delete, not a failure)
    assert "already_absent" not in final
    assert final["deleted"] + final["not_found"] + final["failed"] + final["not_attempted"] == 2_502
    assert fake.api.ledger().deleted == 2_500
    report = client.get(f"/v1/jobs/{body['job_id']}/report")
    assert report.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(report.text)))
    assert len(rows) == 2_502
    assert len({r["media_id"] for r in rows}) == 2_502
    assert {r["outcome"] for r in rows} == {"deleted", "failed", "not_found"}
    failed = client.get(
        f"/v1/jobs/{body['job_id']}/report", params={"outcome": "failed", "format": "jsonl"}
    )
    lines = [json.loads(line) for line in failed.text.splitlines()]
    assert sorted(r["media_id"] for r in lines) == ["bad id"]
    assert {r["reason"] for r in lines if r["media_id"] == "bad id"} == {"invalid_id"}


def test_a_csv_upload_reads_the_media_id_column(
    api: Api, fake_api: Callable[..., RunningFakeApi], workers: Callable[..., WorkerProcess]
) -> None:
    """text/csv with a media_id column among others: those ids are deleted."""
    fake = fake_api(items=500)
    workers(fake.url, rate_limit=200, concurrency=2)
    client = api("shop")
    rows = "title,media_id,owner\n" + "".join(f"t{i},{m},me\n" for i, m in enumerate(owned(300)))
    answer = client.post(
        "/v1/jobs", content=rows, headers={"Content-Type": "text/csv"}, params={"reason": "csv"}
    )
    assert answer.status_code == 202, answer.text
    final = wait_state(client, answer.json()["job_id"], "completed")
    assert (final["deleted"], final["reason"]) == (300, "csv")


def test_a_json_submit_takes_its_parameters_from_the_body(
    api: Api, fake_api: Callable[..., RunningFakeApi], workers: Callable[..., WorkerProcess]
) -> None:
    """application/json {"media_ids", "reason", "priority"}: the job has them."""
    fake = fake_api(items=500)
    workers(fake.url, rate_limit=200, concurrency=2)
    client = api("shop")
    answer = client.post(
        "/v1/jobs", json={"media_ids": owned(150), "reason": "json", "priority": "high"}
    )
    assert answer.status_code == 202, answer.text
    final = wait_state(client, answer.json()["job_id"], "completed")
    assert (final["deleted"], final["reason"], final["priority"]) == (150, "json", "high")


def test_a_dry_run_counts_and_estimates_and_creates_nothing(api: Api, rclient: redis.Redis) -> None:
    """dry_run=true: 200 with counts, invalid lines and an ETA; no job, no message."""
    answer = submit_text(api("shop"), [*owned(250), "a/b", "vec-0000000"], dry_run="true")
    assert answer.status_code == 200, answer.text
    plan = answer.json()
    assert plan["dry_run"] is True
    assert (plan["valid"], plan["invalid"], plan["duplicates"], plan["batches"]) == (250, 1, 1, 3)
    assert plan["invalid_lines"][0]["text"] == "a/b"
    assert plan["estimate_s"] == pytest.approx(3 / plan["rate_per_s"])
    assert rclient.zcard(Keys().jobs) == 0
    assert rclient.llen("wickson-purge") == 0


def test_an_idempotency_key_replays_the_same_request_and_refuses_another(
    api: Api, rclient: redis.Redis
) -> None:
    """The same key and body: the same job (replayed); the same key, another body: 409;
    another tenant's identical key is its own."""
    shop = api("shop")
    headers = {**TEXT, "Idempotency-Key": "order-4711"}
    first = shop.post(
        "/v1/jobs", content=text_body(owned(10)), headers=headers, params={"reason": "r"}
    )
    again = shop.post(
        "/v1/jobs", content=text_body(owned(10)), headers=headers, params={"reason": "r"}
    )
    assert first.status_code == again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.json()["replayed"] is True
    other = shop.post(
        "/v1/jobs", content=text_body(owned(11)), headers=headers, params={"reason": "r"}
    )
    assert other.status_code == 409
    assert "different request" in other.json()["detail"]
    reason = shop.post(
        "/v1/jobs", content=text_body(owned(10)), headers=headers, params={"reason": "x"}
    )
    assert reason.status_code == 409
    redis_ = redis.Redis(connection_pool=rclient.connection_pool)
    redis_.sadd(Keys().aliases, "default", "tenant-b")
    b = api("tenant-b").post(
        "/v1/jobs", content=text_body(owned(10)), headers=headers,
        params={"reason": "r", "key_alias": "tenant-b"},
    )  # fmt: skip
    assert b.status_code == 202
    assert b.json()["job_id"] != first.json()["job_id"]
    assert rclient.zcard(Keys().jobs) == 2


def test_an_input_refused_frees_its_idempotency_key(api: Api) -> None:
    """A refused body (no id) does not hold its key: the corrected request succeeds."""
    shop = api("shop")
    headers = {**TEXT, "Idempotency-Key": "k-empty"}
    refused = shop.post("/v1/jobs", content=b"\n\n", headers=headers, params={"reason": "r"})
    assert refused.status_code == 422
    assert "no ids" in refused.json()["detail"]
    fixed = shop.post(
        "/v1/jobs", content=text_body(owned(3)), headers=headers, params={"reason": "r"}
    )
    assert fixed.status_code == 202, fixed.text


@pytest.mark.parametrize(
    ("headers", "content", "params", "status", "says"),
    [
        ({"Content-Type": "application/xml"}, b"<ids/>", {}, 415, "text/plain"),
        ({}, b"vec-1\n", {}, 415, "text/plain"),
        (TEXT, text_body(owned(MAX_JOB_IDS + 1)), {}, 413, "WICKSON_MAX_JOB_IDS"),
        (TEXT, b"vec-1\n", {"priority": "urgent"}, 422, "priority"),
        (TEXT, b"vec-1\n", {"reason": "x" * 1_001}, 422, "reason"),
        (TEXT, b"vec-1\n", {"callback_url": "ftp://example.com/x"}, 422, "https"),
        (TEXT, b"vec-1\n", {"key_alias": "no such alias"}, 422, "key_alias"),
        (TEXT, b"", {}, 422, "no ids"),
        ({"Content-Type": "text/csv"}, b"title,owner\nx,y\n", {}, 422, "media_id"),
        ({"Content-Type": "text/csv"}, b"vec-1\nvec-2\n", {}, 422, "header"),
        ({"Content-Type": "application/json"}, b"[1, 2", {}, 422, "not JSON"),
        ({"Content-Type": "application/json"}, b'{"media_ids": [1]}', {}, 422, "media_ids"),
        ({"Content-Type": "application/json"}, b'{"ids": ["a"]}', {}, 422, "media_ids"),
        ({"Content-Type": "application/json"}, b'{"media_ids": []}', {}, 422, "media_ids"),
        (TEXT, b"vec-1\n", {}, 422, "Idempotency"),
    ],
)
def test_bad_input_gets_a_clear_4xx_naming_what_is_wrong(
    api: Api,
    rclient: redis.Redis,
    headers: dict[str, str],
    content: bytes,
    params: dict[str, str],
    status: int,
    says: str,
) -> None:
    """415 for an unknown content type, 413 over WICKSON_MAX_JOB_IDS, 422 for bad fields
    and bodies, each naming the problem; nothing is queued."""
    if says == "Idempotency":
        headers = {**headers, "Idempotency-Key": "has space"}
    answer = api("shop").post("/v1/jobs", content=content, headers=headers, params=params)
    assert answer.status_code == status, answer.text
    assert says.lower() in answer.text.lower()
    assert rclient.zcard(Keys().jobs) == 0


def test_tokens_are_required_and_scoped(api: Api, service: Service) -> None:
    """No token or an unknown one: 401; a read-only token cannot submit or control: 403;
    refusals are logged with the token's name, never its value."""
    assert api(None).get("/v1/jobs").status_code == 401
    bad = httpx.get(f"{service.url}/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == "Bearer"
    viewer = api("viewer")
    assert viewer.get("/v1/jobs").status_code == 200
    assert submit_text(viewer, owned(3)).status_code == 403
    job_id = submit_text(api("shop"), owned(3)).json()["job_id"]
    assert viewer.post(f"/v1/jobs/{job_id}/pause").status_code == 403
    assert viewer.put("/v1/rate", json={"rate": 5}).status_code == 403
    wait_until(lambda: '"token": "viewer"' in service.log(), timeout=5, what="the refusal logged")
    assert "viewer-token" not in service.log()
    assert "nope" not in service.log()


def test_a_token_sees_and_acts_on_its_own_tenants_jobs_only(api: Api, rclient: redis.Redis) -> None:
    """Another tenant's job answers 404 like an unknown one (status, report, controls);
    listings hold only the token's jobs; another tenant's alias cannot be used: 403."""
    rclient.sadd(Keys().aliases, "default", "tenant-b")
    shop, b, ops = api("shop"), api("tenant-b"), api("ops")
    mine = submit_text(shop, owned(3)).json()["job_id"]
    theirs = submit_text(b, owned(3), key_alias="tenant-b").json()["job_id"]
    for path in ("", "/report"):
        assert shop.get(f"/v1/jobs/{theirs}{path}").status_code == 404
        assert b.get(f"/v1/jobs/{mine}{path}").status_code == 404
    assert shop.get("/v1/jobs/0123456789abcdef0123456789abcdef").status_code == 404
    assert shop.post(f"/v1/jobs/{theirs}/cancel").status_code == 404
    assert shop.put("/v1/rate", json={"rate": 5, "job_id": theirs}).status_code == 404
    assert [j["job_id"] for j in shop.get("/v1/jobs").json()["jobs"]] == [mine]
    assert [j["job_id"] for j in b.get("/v1/jobs").json()["jobs"]] == [theirs]
    assert {j["job_id"] for j in ops.get("/v1/jobs").json()["jobs"]} == {mine, theirs}
    assert submit_text(shop, owned(3), key_alias="tenant-b").status_code == 403
    assert shop.put("/v1/rate", json={"rate": 5, "key_alias": "tenant-b"}).status_code == 403


def test_the_job_list_filters_by_state_and_pages(api: Api) -> None:
    """GET /v1/jobs?state=...&limit=&offset=: newest first, next_offset until the end."""
    shop = api("shop")
    made = [submit_text(shop, owned(2, first=i * 2)).json()["job_id"] for i in range(5)]
    done = submit_text(shop, ["bad id"]).json()["job_id"]  # nothing valid: completed at once
    page = shop.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["job_id"] for j in page["jobs"]] == [done, made[4]]
    assert page["next_offset"] == 2
    rest = shop.get("/v1/jobs", params={"limit": 10, "offset": 2}).json()
    assert [j["job_id"] for j in rest["jobs"]] == made[3::-1]
    assert rest["next_offset"] is None
    queued = shop.get("/v1/jobs", params={"state": "queued"}).json()["jobs"]
    assert {j["job_id"] for j in queued} == set(made)
    completed = shop.get("/v1/jobs", params=[("state", "completed"), ("state", "failed")])
    assert [j["job_id"] for j in completed.json()["jobs"]] == [done]


def test_pause_resume_and_cancel_over_http(
    api: Api, fake_api: Callable[..., RunningFakeApi], workers: Callable[..., WorkerProcess]
) -> None:
    """Pause holds a running job, resume finishes it exactly; cancel ends another with
    the rest not_attempted; a control its state forbids is 409; retry-failed of a job
    whose failures cannot be retried makes no job."""
    fake = fake_api(items=10_000)
    workers(fake.url, rate_limit=40, concurrency=4)
    shop = api("shop")
    job = submit_text(shop, owned(4_000)).json()["job_id"]
    wait_until(lambda: shop.get(f"/v1/jobs/{job}").json()["deleted"] >= 300, timeout=30)
    paused = shop.post(f"/v1/jobs/{job}/pause")
    assert paused.status_code == 200
    assert paused.json()["state"] == "paused"
    assert shop.post(f"/v1/jobs/{job}/pause").status_code == 409
    assert shop.post(f"/v1/jobs/{job}/retry-failed").status_code == 409
    assert shop.post(f"/v1/jobs/{job}/resume").json()["state"] in ("running", "queued")
    shop.put("/v1/rate", json={"rate": 400}).raise_for_status()
    final = wait_state(shop, job, "completed")
    assert final["deleted"] == 4_000
    other = submit_text(shop, owned(4_000, first=4_000)).json()["job_id"]
    cancelled = shop.post(f"/v1/jobs/{other}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    end = wait_state(shop, other, "cancelled")
    assert end["deleted"] + end["not_attempted"] == 4_000
    assert end["not_attempted"] > 0
    assert shop.post(f"/v1/jobs/{other}/cancel").status_code == 409
    retry = shop.post(f"/v1/jobs/{other}/retry-failed")
    assert retry.status_code == 200
    assert retry.json() == {"job_id": None, "retry_of": other}


def test_rate_changes_are_validated_and_applied(api: Api, rclient: redis.Redis) -> None:
    """PUT /v1/rate sets the fleet's rate or a job's own limit; bad rates are 422."""
    ops = api("ops")
    answer = ops.put("/v1/rate", json={"rate": 25})
    assert answer.status_code == 200, answer.text
    assert "25" in answer.json()["message"]
    assert ops.put("/v1/rate", json={"rate": "auto"}).status_code == 200
    for bad in ({"rate": -1}, {"rate": 0}, {"rate": "fast"}, {"rate": None}, {}):
        assert ops.put("/v1/rate", json=bad).status_code == 422, bad
    job = submit_text(ops, owned(3)).json()["job_id"]
    assert ops.put("/v1/rate", json={"rate": 2, "job_id": job}).status_code == 200
    assert rclient.hget(Keys().job(job), "rate") == b"2.0"
    assert ops.put("/v1/rate", json={"rate": "auto", "job_id": job}).status_code == 422


def test_sweeps_show_the_tokens_key_aliases_only(api: Api) -> None:
    """GET /v1/sweeps: an operator sees every sweep, a tenant only its own."""
    everything = api("ops").get("/v1/sweeps").json()["sweeps"]
    assert [s["name"] for s in everything] == ["nightly-default", "nightly-b"]
    assert everything[0]["last_run"] is None
    assert everything[0]["next_run"]
    assert [s["name"] for s in api("tenant-b").get("/v1/sweeps").json()["sweeps"]] == ["nightly-b"]


def test_health_and_readiness_answer_without_a_token(api: Api) -> None:
    """/healthz (the process) and /readyz (Redis answers) need no token."""
    anonymous = api(None)
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    assert anonymous.get("/readyz").json() == {"status": "ok"}


def test_a_csv_line_with_a_bare_carriage_return_is_refused_not_a_crash(api: Api) -> None:
    """A CSV header or row the csv module cannot read (a lone CR) is a 422, not a 500
    (found by schemathesis)."""
    shop, csv_type = api("shop"), {"Content-Type": "text/csv"}
    header = shop.post("/v1/jobs", content=b"media_\rid,x\nvec-1,a\n", headers=csv_type)
    row = shop.post("/v1/jobs", content=b"media_id,x\nvec\r-1,a\n", headers=csv_type)
    plain = shop.post("/v1/jobs", content=b"a,b\rc\n", headers=TEXT, params={"dry_run": "true"})
    assert (header.status_code, row.status_code, plain.status_code) == (422, 422, 422)
    assert "CSV" in row.json()["detail"]


def test_retry_failed_over_http_deletes_the_retryable_failures_in_a_linked_job(
    api: Api, fake_api: Callable[..., RunningFakeApi], workers: Callable[..., WorkerProcess]
) -> None:
    """500s with one attempt allowed fail 300 ids retryably; retry-failed makes one linked
    job (the same one when asked twice) that deletes them."""
    fake = fake_api(items=2_000)
    fake.api.script(["500_before"] * 3)
    workers(fake.url, rate_limit=200, concurrency=1, max_attempts=1)
    shop = api("shop")
    job = submit_text(shop, owned(1_000)).json()["job_id"]
    first = wait_state(shop, job, "completed")
    assert first["failed"] == 300
    retry = shop.post(f"/v1/jobs/{job}/retry-failed")
    assert retry.status_code == 200, retry.text
    retry_id = retry.json()["job_id"]
    assert shop.post(f"/v1/jobs/{job}/retry-failed").json()["job_id"] == retry_id
    final = wait_state(shop, retry_id, "completed")
    assert (final["retry_of"], final["total"], final["deleted"]) == (job, 300, 300)
    assert shop.get(f"/v1/jobs/{job}").json()["retried_by"] == retry_id
    assert fake.api.ledger().deleted == 1_000
