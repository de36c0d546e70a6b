"""`FakeApi`: everything the stand-in decides, and the ledger of what it really deleted.

No HTTP here: `handle(api_key, body)` returns a `Reply` that app.py puts on the wire.
Thread-safe: one lock guards all state, held only for the O(ids) decision; parsing the
body and rendering the answer happen outside it.

A request stops at the first check that refuses it:

    1. auth         401 INVALID_API_KEY (missing, unknown or revoked key)
                    403 INSUFFICIENT_PERMISSIONS (the read-only key)
    2. rate limit   429 RATE_LIMIT_EXCEEDED; a refused request takes no token
    3. body         400 MISSING_MEDIA_IDS / INVALID_MEDIA_IDS / BATCH_TOO_LARGE
    4. fault        the next scripted fault, else a random one drawn from the p_* fields
    5. deletion     owned, live ids are deleted; the rest fail with a per-id reason

Scripted faults (`script()`) form a queue. Its head is taken by the first request that
reaches the head's stage: "401" and "403" at stage 1 (any request), "429" at stage 2 (a
request that passed auth), every other name at stage 4 (a request with a valid body);
"ok" there means "no fault for this request, not even a random one".
"""

from __future__ import annotations

import itertools
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ops.fake_api.bucket import TokenBucket
from ops.fake_api.catalogue import Catalogue, owned_id
from ops.fake_api.config import RANDOM_FAULTS, FakeApiConfig
from ops.fake_api.ledger import CONNECTION_DROPPED, Books, Ledger, TimelineEntry
from ops.fake_api.outcome import (
    FOREIGN,
    NOT_FOUND,
    Outcome,
    add_unrequested,
    hide_one,
    list_one_as_both,
    skew_counts,
)
from ops.fake_api.responses import (
    ERROR_MESSAGES,
    ERROR_STATUS,
    INSUFFICIENT_PERMISSIONS,
    INVALID_API_KEY,
    PROCESSING_ERROR,
    RATE_LIMIT_EXCEEDED,
    error_body,
    garble,
    rate_limit_headers,
    retry_after,
    success_body,
)
from ops.fake_api.validation import BatchRequest, Rejection, parse_body, validate_batch

_AUTH_FAULTS: Final = frozenset({"401", "403"})
_RATE_FAULTS: Final = frozenset({"429"})
_BODY_FAULTS: Final = frozenset({*RANDOM_FAULTS, "ok"})
SCRIPTABLE_FAULTS: Final = _AUTH_FAULTS | _RATE_FAULTS | _BODY_FAULTS

# Float noise must not turn a 1-second wait into "Retry-After: 2".
_EPSILON = 1e-9
# How many random picks to try for a live, unrequested id before settling for a phantom.
_UNREQUESTED_TRIES = 16


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer to put on the wire: wait `delay_s`, then send it, or drop the connection."""

    status: int
    headers: dict[str, str]
    body: bytes
    delay_s: float = 0.0
    drop: bool = False


@dataclass(slots=True)
class _Verdict:
    """What the locked decision settled; rendered into a `Reply` after the lock is released."""

    status: int
    code: str | None = None
    message: str | None = None
    details: dict[str, object] = field(default_factory=dict)
    outcome: Outcome | None = None
    fault: str | None = None
    retry_after_s: int | None = None
    request_no: int = 0
    delay_s: float = 0.0
    quota: tuple[int, int, int] | None = None  # (limit, remaining, reset_s) for the headers


def _error(code: str, message: str | None = None, **details: object) -> _Verdict:
    """A verdict for one of the contract's error codes."""
    return _Verdict(ERROR_STATUS[code], code=code, message=message, details=details)


def _whole_seconds(seconds: float) -> int:
    """`seconds` rounded up to whole seconds, ignoring float noise."""
    return max(0, math.ceil(seconds - _EPSILON))


class FakeApi:
    """The Wickson batch-delete API, in memory. See the module docstring for its rules."""

    def __init__(
        self,
        config: FakeApiConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock` (monotonic seconds) drives the rate limit and the ledger's timeline;
        `wall_clock` (epoch seconds) only stamps answers. Inject fakes in tests."""
        self._lock = threading.Lock()
        self._clock = clock
        self._wall_clock = wall_clock
        # Never reset: operation and request ids stay unique for the object's lifetime.
        self._serial = itertools.count(1)
        self._config = config or FakeApiConfig()
        self._apply_config()
        self._start_afresh()

    # --- configuration --------------------------------------------------------------

    @property
    def config(self) -> FakeApiConfig:
        """The configuration in force."""
        return self._config

    def _apply_config(self) -> None:
        """Derive what is cached from the config (catalogue, id pattern, fault table)."""
        config = self._config
        self._catalogue = Catalogue(config.items, config.foreign_items)
        pattern = config.invalid_id_pattern
        self._invalid_id = re.compile(pattern) if pattern is not None else None
        self._faults = [(name, p) for name, p in config.fault_probabilities() if p > 0]

    def update_config(self, changes: Mapping[str, Any]) -> FakeApiConfig:
        """Apply a partial config change mid-run; raises pydantic.ValidationError."""
        with self._lock:
            old = self._config
            self._config = old.updated(changes)
            self._apply_config()
            if (old.rate, old.effective_burst) != (self._config.rate, self._config.effective_burst):
                self._bucket.reconfigure(
                    self._config.rate, self._config.effective_burst, self._clock()
                )
            if old.seed != self._config.seed:
                self._rng.seed(self._config.seed)
            return self._config

    def set_rate(self, rate: float | None) -> None:
        """Change the fleet-wide limit (requests/s, None = unlimited) mid-run."""
        self.update_config({"rate": rate})

    def revoke_key(self) -> None:
        """From now on the main key answers 401 INVALID_API_KEY."""
        with self._lock:
            self._revoked = True

    def restore_key(self) -> None:
        """Undo `revoke_key()`."""
        with self._lock:
            self._revoked = False

    def script(self, faults: Iterable[str]) -> None:
        """Queue faults for the next requests, in order; raises ValueError on unknown names."""
        names = list(faults)
        unknown = sorted(set(names) - SCRIPTABLE_FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {sorted(SCRIPTABLE_FAULTS)}")
        with self._lock:
            self._script.extend(names)

    def pending_script(self) -> list[str]:
        """Scripted faults not yet taken by a request."""
        with self._lock:
            return list(self._script)

    def reset(self) -> None:
        """Forget every deletion, request, scripted fault and revocation; keep the config."""
        with self._lock:
            self._start_afresh()

    def _start_afresh(self) -> None:
        """The state of a just-started server: full bucket, empty books, seeded generator."""
        now = self._clock()
        self._books = Books(origin=now)
        self._bucket = TokenBucket(self._config.rate, self._config.effective_burst, now)
        self._script: deque[str] = deque()
        self._revoked = False
        self._rng = random.Random(self._config.seed)

    # --- what it did ----------------------------------------------------------------

    def ledger(self, include_ids: bool = False) -> Ledger:
        """A snapshot of what was really done; `include_ids` lists the deleted ids too."""
        with self._lock:
            return self._books.snapshot(include_ids)

    def timeline(self) -> list[TimelineEntry]:
        """(seconds since start or reset, status, ids in body) for every request, in order."""
        with self._lock:
            return self._books.timeline()

    def is_deleted(self, media_id: str) -> bool:
        """Whether `media_id` has really been deleted."""
        with self._lock:
            return media_id in self._books.deleted_ids

    def deleted_ids(self) -> list[str]:
        """Every really deleted id, sorted."""
        with self._lock:
            return sorted(self._books.deleted_ids)

    # --- one request ----------------------------------------------------------------

    def handle(self, api_key: str | None, body: bytes) -> Reply:
        """Answer one DELETE /v1/media/batch with key `api_key` and raw JSON `body`."""
        started = time.perf_counter()
        request = parse_body(body)
        with self._lock:
            now = self._clock()
            config = self._config
            verdict = self._decide(api_key, request, now)
            self._books.record_request(now, verdict.status, request.size)
        return self._render(verdict, config, request.reason, started)

    def _decide(self, api_key: str | None, request: BatchRequest, now: float) -> _Verdict:
        """Run the checks in order, then the fault and the deletion."""
        verdict = self._check_auth(api_key) or self._check_rate(now)
        if verdict is None:
            ids = validate_batch(request, self._config.max_batch, self._invalid_id)
            if isinstance(ids, Rejection):
                verdict = _error(ids.code, ids.message, **ids.details)
            else:
                verdict = self._execute(ids, self._next_fault())
        verdict.request_no = next(self._serial)
        verdict.delay_s = self._delay_s(verdict.fault)
        verdict.quota = self._quota(now)
        return verdict

    def _pop_script(self, stage: frozenset[str]) -> str | None:
        """Take the head of the fault queue if it belongs to this stage."""
        if self._script and self._script[0] in stage:
            return self._script.popleft()
        return None

    def _check_auth(self, api_key: str | None) -> _Verdict | None:
        """401 for a missing, unknown or revoked key; 403 for the read-only key."""
        scripted = self._pop_script(_AUTH_FAULTS)
        config = self._config
        main_key_ok = api_key == config.api_key and not self._revoked
        if scripted == "401" or not (main_key_ok or api_key == config.readonly_key):
            return _error(INVALID_API_KEY)
        if scripted == "403" or not main_key_ok:
            return _error(INSUFFICIENT_PERMISSIONS)
        return None

    def _check_rate(self, now: float) -> _Verdict | None:
        """429 when the bucket is empty (or scripted), with the wait until the next token."""
        scripted = self._pop_script(_RATE_FAULTS)
        if scripted is None and self._bucket.try_take(now):
            return None
        wait_s = max(1, _whole_seconds(self._bucket.wait_s(now)))
        verdict = _error(RATE_LIMIT_EXCEEDED, retry_after_s=wait_s)
        verdict.retry_after_s = wait_s
        return verdict

    def _next_fault(self) -> str | None:
        """The scripted fault for this request, else a random draw (None: behave)."""
        scripted = self._pop_script(_BODY_FAULTS)
        if scripted is not None:
            return None if scripted == "ok" else scripted
        if not self._faults:
            return None
        draw = self._rng.random()
        for name, probability in self._faults:
            if draw < probability:
                return name
            draw -= probability
        return None

    def _execute(self, ids: list[str], fault: str | None) -> _Verdict:
        """Delete (unless the fault strikes first) and shape the answer the fault calls for."""
        if fault == "500_before":
            return _error(PROCESSING_ERROR)
        outcome = self._delete(ids)
        if fault == "500_after":
            return _error(PROCESSING_ERROR)
        self._lie(fault, outcome, ids)
        status = CONNECTION_DROPPED if fault == "reset" else 200
        return _Verdict(status, outcome=outcome, fault=fault)

    def _delete(self, ids: list[str]) -> Outcome:
        """Delete every owned live id once; the others fail with a per-id reason."""
        outcome = Outcome()
        books, catalogue = self._books, self._catalogue
        for media_id in dict.fromkeys(ids):  # a duplicate is deleted once and listed once
            index = catalogue.owned_index(media_id)
            if index is not None and media_id not in books.deleted_ids:
                hd_vectors, ld_vectors = catalogue.vectors(index)
                books.record_deletion(media_id, hd_vectors, ld_vectors)
                outcome.deleted.append(media_id)
                outcome.hd_vectors += hd_vectors
                outcome.ld_vectors += ld_vectors
            elif catalogue.is_foreign(media_id):
                outcome.failed[media_id] = FOREIGN
            else:  # unknown, or owned but already deleted
                outcome.failed[media_id] = NOT_FOUND
        return outcome

    def _lie(self, fault: str | None, outcome: Outcome, ids: list[str]) -> None:
        """Distort the body (never the ledger) as a lying fault says."""
        if fault == "lie_missing":
            hide_one(outcome, self._rng)
        elif fault == "lie_both":
            list_one_as_both(outcome, self._rng)
        elif fault == "lie_unrequested":
            add_unrequested(outcome, self._unrequested_id(ids))
        elif fault == "lie_counts":
            skew_counts(outcome)

    def _unrequested_id(self, ids: list[str]) -> str:
        """An id not in this request, preferably a live owned one: the most harmful lie."""
        requested = set(ids)
        items = self._catalogue.items
        for _ in range(_UNREQUESTED_TRIES if items else 0):
            candidate = owned_id(self._rng.randrange(items))
            if candidate not in requested and candidate not in self._books.deleted_ids:
                return candidate
        return owned_id(items)  # one past the catalogue: an id that never existed

    def _delay_s(self, fault: str | None) -> float:
        """Latency with jitter (clamped at 0), plus slow_ms for the slow_after fault."""
        config = self._config
        latency_ms = config.latency_ms
        if config.latency_jitter_ms:
            jitter = config.latency_jitter_ms
            latency_ms += self._rng.uniform(-jitter, jitter)
        if fault == "slow_after":
            latency_ms += config.slow_ms
        return max(0.0, latency_ms) / 1000.0

    def _quota(self, now: float) -> tuple[int, int, int] | None:
        """(limit, remaining, reset_s) when every answer carries quota headers."""
        config = self._config
        if config.rate is None or config.rate_headers not in ("x-ratelimit", "ietf"):
            return None
        limit = max(1, round(config.rate))
        reset_s = _whole_seconds(self._bucket.full_in_s(now))
        return limit, self._bucket.remaining(now), reset_s

    # --- the answer -----------------------------------------------------------------

    def _render(
        self, verdict: _Verdict, config: FakeApiConfig, reason: str | None, started: float
    ) -> Reply:
        """Turn a verdict into status, headers and body bytes."""
        headers = self._headers(verdict, config)
        if verdict.fault == "reset":
            return Reply(CONNECTION_DROPPED, headers, b"", verdict.delay_s, drop=True)
        if verdict.code is not None:
            message = verdict.message or ERROR_MESSAGES[verdict.code]
            request_id = f"req_{verdict.request_no}"
            body = error_body(verdict.code, message, request_id, verdict.details)
            return Reply(verdict.status, headers, body, verdict.delay_s)
        assert verdict.outcome is not None  # a verdict without an error code has an outcome
        processing_ms = round((time.perf_counter() - started + verdict.delay_s) * 1000)
        operation_id = f"batch_delete_{verdict.request_no}"
        wall_now = self._wall_clock()
        body = success_body(verdict.outcome, operation_id, reason, processing_ms, wall_now)
        if verdict.fault == "garbage":
            body = garble(body)
        return Reply(verdict.status, headers, body, verdict.delay_s)

    def _headers(self, verdict: _Verdict, config: FakeApiConfig) -> dict[str, str]:
        """Retry-After on a 429 (unless rate_headers is "none"), quota headers if configured."""
        headers: dict[str, str] = {}
        if verdict.retry_after_s is not None and config.rate_headers != "none":
            headers["Retry-After"] = retry_after(
                verdict.retry_after_s, config.retry_after_format, self._wall_clock()
            )
        if verdict.quota is not None:
            headers.update(rate_limit_headers(config.rate_headers, *verdict.quota))
        return headers
