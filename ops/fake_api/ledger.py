"""The ledger: what the stand-in really did, whatever its answers claimed.

`Books` is the mutable record (guarded by the `FakeApi` lock); `Ledger` is an immutable
snapshot of it for tests and the admin route. Recording a request is O(1): the busiest
1-second window is kept up to date with a sliding deque rather than recomputed.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import NamedTuple

from pydantic import BaseModel, PrivateAttr

# The status recorded for a request answered by dropping the connection (no HTTP status).
CONNECTION_DROPPED = 0


class TimelineEntry(NamedTuple):
    """One request: seconds since the start (or last reset), status sent, ids in the body."""

    t_s: float
    status: int
    n_ids: int


class Ledger(BaseModel):
    """A snapshot of the books; `deleted_ids` is filled only when asked for."""

    deleted: int
    hd_vectors: int
    ld_vectors: int
    requests: int
    status_counts: dict[int, int]
    max_batch_seen: int
    max_requests_in_any_1s_window: int
    deleted_ids: list[str] | None = None
    _ids: frozenset[str] = PrivateAttr(default_factory=frozenset)

    def is_deleted(self, media_id: str) -> bool:
        """Whether `media_id` had really been deleted when the snapshot was taken."""
        return media_id in self._ids

    def sorted_ids(self) -> list[str]:
        """Every really deleted id, sorted."""
        return sorted(self._ids)


class Books:
    """The running record. Not thread-safe: the owner holds a lock around every call."""

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self.deleted_ids: set[str] = set()
        self.hd_vectors = 0
        self.ld_vectors = 0
        self.status_counts: Counter[int] = Counter()
        self.max_batch_seen = 0
        self.max_in_window = 0
        self._window: deque[float] = deque()
        self._timeline: list[TimelineEntry] = []

    def record_request(self, now: float, status: int, n_ids: int) -> None:
        """Count one request received at monotonic time `now`, whatever its answer."""
        self.status_counts[status] += 1
        self.max_batch_seen = max(self.max_batch_seen, n_ids)
        self._timeline.append(TimelineEntry(now - self.origin, status, n_ids))
        self._slide_window(now)

    def _slide_window(self, now: float) -> None:
        """Track the most requests seen in any window (t - 1 s, t] ending at a request."""
        window = self._window
        window.append(now)
        while window[0] <= now - 1.0:
            window.popleft()
        self.max_in_window = max(self.max_in_window, len(window))

    def record_deletion(self, media_id: str, hd_vectors: int, ld_vectors: int) -> None:
        """Record that `media_id` is gone, with its vectors."""
        self.deleted_ids.add(media_id)
        self.hd_vectors += hd_vectors
        self.ld_vectors += ld_vectors

    def snapshot(self, include_ids: bool = False) -> Ledger:
        """An immutable copy; `include_ids` also lists the deleted ids, sorted."""
        ids = frozenset(self.deleted_ids)
        ledger = Ledger(
            deleted=len(ids),
            hd_vectors=self.hd_vectors,
            ld_vectors=self.ld_vectors,
            requests=len(self._timeline),
            status_counts=dict(self.status_counts),
            max_batch_seen=self.max_batch_seen,
            max_requests_in_any_1s_window=self.max_in_window,
            deleted_ids=sorted(ids) if include_ids else None,
        )
        ledger._ids = ids
        return ledger

    def timeline(self) -> list[TimelineEntry]:
        """Every request so far, in arrival order."""
        return list(self._timeline)
