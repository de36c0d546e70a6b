"""What a run measured, computed from the stand-in's timeline and the workers' logs. Pure.

The timeline is every request the stand-in received: (seconds since it started, status,
ids in the body). Steady state is the run less its first and last 10 % (ramp-up, tail).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

TRIM = 0.10
"""Fraction of the run cut at each end before measuring the steady rate."""


class Request(NamedTuple):
    """One request as the stand-in saw it."""

    t_s: float
    status: int
    n_ids: int


def steady_window(requests: Sequence[Request], trim: float = TRIM) -> tuple[float, float]:
    """(start, end) seconds of the steady state: first to last request, less `trim` of it
    at each end."""
    if not requests:
        return 0.0, 0.0
    first, last = requests[0].t_s, requests[-1].t_s
    cut = (last - first) * trim
    return first + cut, last - cut


def steady_ids_per_s(requests: Sequence[Request], trim: float = TRIM) -> float:
    """Ids answered with 200 per second during the steady state."""
    start, end = steady_window(requests, trim)
    if end <= start:
        return 0.0
    ids = sum(r.n_ids for r in requests if r.status == 200 and start <= r.t_s < end)
    return ids / (end - start)


def max_in_window(times: Iterable[float], width_s: float = 1.0) -> int:
    """Most events in any window (t - width, t] (the stand-in's own definition)."""
    window: deque[float] = deque()
    best = 0
    for t in times:
        window.append(t)
        while window[0] <= t - width_s:
            window.popleft()
        best = max(best, len(window))
    return best


def per_second(requests: Sequence[Request], status: int | None = None) -> list[int]:
    """Requests (of `status`, or all) in each whole second since the first request."""
    if not requests:
        return []
    first = requests[0].t_s
    bins = [0] * (int(requests[-1].t_s - first) + 1)
    for r in requests:
        if status is None or r.status == status:
            bins[int(r.t_s - first)] += 1
    return bins


def per_thousand(requests: Sequence[Request], status: int = 429) -> float:
    """Requests answered `status` per 1,000 requests."""
    if not requests:
        return 0.0
    return 1000.0 * sum(1 for r in requests if r.status == status) / len(requests)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def overheads_ms(
    log_paths: Iterable[Path], event: str, trim: float = TRIM, since: float = 0.0
) -> list[float]:
    """`overhead_ms` of the JSON log lines whose event is `event`, steady state only: runs
    logged before `since` (epoch s) or in the first or last `trim` of the logged time span
    (warm-up: first imports, connections, script loads; tail) are left out."""
    records = [r for path in log_paths for r in _json_lines(path, event) if _stamp(r) >= since]
    stamps = [_stamp(r) for r in records]
    if not records:
        return []
    first, last = min(stamps), max(stamps)
    cut = (last - first) * trim
    return [
        float(r["overhead_ms"])
        for r, t in zip(records, stamps, strict=True)
        if first + cut <= t <= last - cut or last - first == 0
    ]


def _json_lines(path: Path, event: str) -> Iterator[dict[str, Any]]:
    """The JSON records of `event` in a log file that also holds other lines."""
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            start = line.find("{")
            if start < 0 or event not in line:
                continue
            try:
                record = json.loads(line[start:])
            except ValueError:
                continue
            if record.get("event") == event and "overhead_ms" in record:
                yield record


def _stamp(record: dict[str, Any]) -> float:
    """A log record's time in epoch seconds (`timestamp` ISO 8601 or `ts` seconds)."""
    if "ts" in record:
        return float(record["ts"])
    text = str(record.get("timestamp", "")).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp() if text else 0.0


def parse_timeline(document: dict[str, list[dict[str, float]]]) -> list[Request]:
    """The stand-in's GET /_admin/timeline answer as Requests, in arrival order."""
    entries = document["timeline"]
    return sorted(
        (Request(float(e["t_s"]), int(e["status"]), int(e["n_ids"])) for e in entries),
        key=lambda r: r.t_s,
    )
