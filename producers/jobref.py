"""Job references as operators type them: a full job id, or a unique prefix of one (the
progress bar shows 8 characters), accepted as git accepts a commit's prefix.
"""

from __future__ import annotations

import re

from worker.errors import InputError, JobNotFound
from worker.scripts import decoded
from worker.store import JobStore, store_errors

MIN_PREFIX = 4
"""Shorter prefixes are refused: they would match too much to be meant."""
CANDIDATES_SHOWN = 10
"""Jobs named in the message of an ambiguous prefix."""
_HEX = re.compile(r"[0-9a-f]+")
"""Job ids are uuid4 hex: anything else cannot be a prefix (and is no glob pattern)."""


def resolve(store: JobStore, ref: str) -> str:
    """The id of the one job `ref` names: a job's full id, or a prefix of only one job's.
    Raises JobNotFound, or InputError listing the candidates of an ambiguous prefix."""
    if store.exists(ref):
        return ref
    prefix = ref.lower()
    if len(prefix) < MIN_PREFIX or not _HEX.fullmatch(prefix):
        raise JobNotFound(ref)
    matches = _live_jobs(store, sorted(_indexed(store, prefix)))
    if not matches:
        raise JobNotFound(ref)
    if len(matches) > 1:
        shown = "\n".join(f"  {job_id}" for job_id in matches[:CANDIDATES_SHOWN])
        more = len(matches) - CANDIDATES_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise InputError(
            f"job prefix {ref!r} is ambiguous: {len(matches)} jobs start with it:\n"
            f"{shown}{tail}\ngive more characters of the id"
        )
    return matches[0]


def _indexed(store: JobStore, prefix: str) -> set[str]:
    """Ids in the job index (`<prefix>:jobs`) starting with `prefix`, scanned in Redis."""
    with store_errors():
        return {
            decoded(member)
            for member, _ in store.redis.zscan_iter(
                store.keys.jobs, match=f"{prefix}*", count=1_000
            )
        }


def _live_jobs(store: JobStore, job_ids: list[str]) -> list[str]:
    """The ids among `job_ids` whose record still exists (the index outlives records)."""
    return [job_id for job_id in job_ids if store.exists(job_id)]
