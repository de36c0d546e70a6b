"""Completion webhooks: one signed POST of a job's final status to its `callback_url`.

A job submitted with a callback is registered in the zset ``<prefix>:webhooks`` (job id ->
when it is next due, ms). `deliver_due`, which any number of processes may call at once
(the worker fleet every couple of seconds), takes each due job under a lock (SET NX PX),
posts once it has finished, and retries a failing receiver with backoff for
`webhook_retry_for_s` after the job ended. Delivery is at least once: a crash between
the receiver's 2xx and our record sends it again, so receivers dedupe on
``Wickson-Delivery`` (the job id). Attempts are recorded in the job record:

    callback_url, webhook_state (pending|delivered|gave_up), webhook_attempts,
    webhook_last_error, webhook_last_attempt_at, webhook_next_at, webhook_delivered_at (ms)

Signature: ``Wickson-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import random
import socket
import time
import uuid
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import BaseModel

from worker.errors import InputError, JobNotFound
from worker.scripts import decoded
from worker.settings import Settings
from worker.store import JobStatus, JobStore

log = structlog.get_logger("wickson_purge.webhooks")

SIGNATURE_HEADER = "Wickson-Signature"
MAX_URL_LENGTH = 2_048
POLL_UNFINISHED_MS = 2_000
"""A registered job still running is looked at again this much later."""
SIGNATURE_TOLERANCE_S = 300
"""Receivers refuse a signature older than this (replays of a captured delivery)."""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'webhook_attempts', ARGV[1])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""
"""Record an attempt on a job record that still exists (never resurrect an expired job)."""


class WebhookStatus(BaseModel):
    """A job's completion webhook, as its status shows it."""

    url: str
    state: Literal["pending", "delivered", "gave_up"] = "pending"
    attempts: int = 0
    last_error: str | None = None
    last_attempt_at: float | None = None
    next_at: float | None = None
    delivered_at: float | None = None


def status_payload(status: JobStatus) -> dict[str, Any]:
    """A job's status as the HTTP API and webhooks publish it (`status --json`'s fields)."""
    data = status.model_dump(mode="json")
    data["done"] = status.done
    return data


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The Wickson-Signature header value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None) -> bool:
    """Whether `header` signs `body` with `secret`, made within SIGNATURE_TOLERANCE_S."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > SIGNATURE_TOLERANCE_S:
        return False
    expected = sign(secret, timestamp, body).split(",", 1)[1].removeprefix("v1=")
    return hmac.compare_digest(expected, parts.get("v1", ""))


def check_callback_url(url: str, *, allow_insecure: bool) -> str:
    """`url` if a callback may go there (https, not loopback or private), else InputError.
    Names are resolved only at delivery (`destination_problem`)."""
    problem = _url_problem(url, allow_insecure=allow_insecure)
    if problem:
        raise InputError(f"callback_url {url[:200]!r}: {problem}")
    return url


def destination_problem(url: str, *, allow_insecure: bool) -> str | None:
    """Why a delivery to `url` is refused now (its host resolves into a private network),
    or None; checked before every attempt, as DNS can change after submit."""
    problem = _url_problem(url, allow_insecure=allow_insecure)
    if problem or allow_insecure:
        return problem
    parts = urlsplit(url)
    try:
        infos = socket.getaddrinfo(parts.hostname or "", parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None  # unresolvable now: the attempt fails and is retried
    for info in infos:
        if not _public(ipaddress.ip_address(info[4][0])):
            return f"{parts.hostname} resolves to {info[4][0]}, not a public address"
    return None


def _url_problem(url: str, *, allow_insecure: bool) -> str | None:
    if len(url) > MAX_URL_LENGTH or any(c.isspace() or not c.isprintable() for c in url):
        return f"must be a URL of at most {MAX_URL_LENGTH:,} printable characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("https", "http") or not host:
        return "must be an https:// URL with a host"
    if allow_insecure:
        return None
    if parts.scheme != "https":
        return "must use https:// (WICKSON_WEBHOOK_ALLOW_INSECURE allows http)"
    host = host.rstrip(".")  # "localhost." is localhost
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return "must not name a local host"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if _public(address) else "must not be a loopback, private or reserved address"


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.is_global and not address.is_multicast


def register(store: JobStore, job_id: str, url: str) -> None:
    """Record `url` on the (staging) job and make its webhook due (looked at once it ends)."""
    with store.redis.pipeline() as pipe:
        pipe.hset(
            store.keys.job(job_id),
            mapping={"callback_url": url, "webhook_state": "pending", "webhook_attempts": 0},
        )
        pipe.zadd(store.keys.webhooks, {job_id: int(time.time() * 1000)})
        pipe.execute()


def webhook_status(store: JobStore, job_id: str) -> WebhookStatus | None:
    """The job's webhook and its delivery attempts; None for a job without a callback."""
    fields = ("callback_url", "webhook_state", "webhook_attempts", "webhook_last_error",
              "webhook_last_attempt_at", "webhook_next_at", "webhook_delivered_at")  # fmt: skip
    values = [_text(v) for v in store.redis.hmget(store.keys.job(job_id), fields)]
    url, state, attempts, error, last, nxt, delivered = values
    if not url:
        return None
    return WebhookStatus(
        url=url,
        state=state or "pending",  # type: ignore[arg-type]
        attempts=int(attempts or 0),
        last_error=error or None,
        last_attempt_at=_seconds(last),
        next_at=_seconds(nxt),
        delivered_at=_seconds(delivered),
    )


def deliver_due(store: JobStore, settings: Settings, *, limit: int = 100) -> int:
    """Deliver the webhooks that are due (at most `limit` looked at); returns how many were
    delivered. Safe to call from many processes at once: one job, one deliverer at a time."""
    now_ms = int(time.time() * 1000)
    due = store.redis.zrangebyscore(store.keys.webhooks, "-inf", now_ms, start=0, num=limit)
    if not due:
        return 0
    if settings.webhook_secret is None:
        log.warning("webhook.no_secret", due=len(due), hint="set WICKSON_WEBHOOK_SECRET")
        return 0
    delivered = 0
    timeout = httpx.Timeout(settings.webhook_timeout_s)
    with httpx.Client(timeout=timeout, follow_redirects=False) as http:
        for job_id in due:
            delivered += _deliver_locked(store, settings, http, _text(job_id))
    return delivered


def _deliver_locked(store: JobStore, settings: Settings, http: httpx.Client, job_id: str) -> int:
    """One job's delivery under its lock; 1 if it was delivered now."""
    token = uuid.uuid4().hex
    lock = store.keys.webhook_lock(job_id)
    # The lock outlives one attempt (timeout plus margin): no second process posts meanwhile.
    lock_ms = int((settings.webhook_timeout_s + 10) * 1000)
    if not store.redis.set(lock, token, nx=True, px=lock_ms):
        return 0
    try:
        return _deliver(store, settings, http, job_id)
    finally:
        store.redis.eval(_RELEASE, 1, lock, token)


def _deliver(store: JobStore, settings: Settings, http: httpx.Client, job_id: str) -> int:
    keys = store.keys
    try:
        status = store.status(job_id)
    except JobNotFound:
        store.redis.zrem(keys.webhooks, job_id)  # expired, or discarded while staging
        return 0
    hook = webhook_status(store, job_id)
    if hook is None or hook.state != "pending":
        store.redis.zrem(keys.webhooks, job_id)
        return 0
    now = time.time()
    if not status.finished:
        store.redis.zadd(keys.webhooks, {job_id: int(now * 1000) + POLL_UNFINISHED_MS}, xx=True)
        return 0
    error, permanent = _post(settings, http, hook.url, job_id, status)
    if error is None:
        _record(store, job_id, webhook_state="delivered", webhook_delivered_at=_ms(now))
        store.redis.zrem(keys.webhooks, job_id)
        log.info("webhook.delivered", job_id=job_id, attempts=hook.attempts + 1)
        return 1
    ended = status.finished_at or now
    wait_s = _next_wait(hook.attempts + 1, settings)
    if permanent or now + wait_s - ended > settings.webhook_retry_for_s:
        _record(store, job_id, webhook_state="gave_up", webhook_last_error=error)
        store.redis.zrem(keys.webhooks, job_id)
        log.warning("webhook.gave_up", job_id=job_id, attempts=hook.attempts + 1, error=error)
        return 0
    _record(store, job_id, webhook_last_error=error, webhook_next_at=_ms(now + wait_s))
    store.redis.zadd(keys.webhooks, {job_id: _ms(now + wait_s)}, xx=True)
    log.info("webhook.retry", job_id=job_id, attempts=hook.attempts + 1, error=error)
    return 0


def _post(
    settings: Settings, http: httpx.Client, url: str, job_id: str, status: JobStatus
) -> tuple[str | None, bool]:
    """POST the signed final status; (None, _) on a 2xx, else (error, permanent)."""
    refused = destination_problem(url, allow_insecure=settings.webhook_allow_insecure)
    if refused:
        return f"refused: {refused}", True
    assert settings.webhook_secret is not None  # deliver_due checked it
    body = json.dumps({"event": "job.finished", "job": status_payload(status)}).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "wickson-purge-webhooks",
        "Wickson-Event": "job.finished",
        "Wickson-Delivery": job_id,
        SIGNATURE_HEADER: sign(settings.webhook_secret.get_secret_value(), int(time.time()), body),
    }
    try:
        answer = http.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {str(exc)[:200]}", False
    if 200 <= answer.status_code < 300:
        return None, False
    return f"HTTP {answer.status_code}", False


def _record(store: JobStore, job_id: str, **fields: str | int) -> None:
    """Count one attempt and set `fields` on the job record, if it still exists."""
    fields["webhook_last_attempt_at"] = _ms(time.time())
    args: list[str | int] = [1]
    for name, value in fields.items():
        args += [name, value]
    store.redis.eval(_RECORD, 1, store.keys.job(job_id), *args)


def _next_wait(attempt: int, settings: Settings) -> float:
    """Seconds before retry `attempt`: doubling from the base, capped, half of it jittered
    (never ~0: a receiver that is down is not hammered)."""
    step = min(
        settings.webhook_backoff_cap_s,
        settings.webhook_backoff_base_s * 2.0 ** min(attempt - 1, 30),
    )
    return step * (0.5 + 0.5 * random.random())


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _seconds(value: str) -> float | None:
    return int(value) / 1000 if value else None


def _text(value: Any) -> str:
    return "" if value is None else decoded(value)
