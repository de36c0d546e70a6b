"""What one batch did, as its 200 body will tell it, and how a lying server distorts that.

The ledger always records the truth; the lies below change only the `Outcome` that is
rendered into the body. The hd/ld vector sums are never distorted: they stay the true
sums over the ids the request really deleted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Free text, like the real API's: the contract documents no reason strings.
NOT_FOUND = "Media not found"
FOREIGN = "Access denied: media belongs to another user"
LIED_FAILURE = "Internal error: deletion could not be confirmed"


@dataclass(slots=True)
class Outcome:
    """Ids deleted and ids failed (id -> reason), each in request order, plus vector sums."""

    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    hd_vectors: int = 0
    ld_vectors: int = 0
    count_skew: int = 0  # added to both counts by the lie_counts fault

    @property
    def deleted_count(self) -> int:
        """`data.deleted.count` as the body will say it."""
        return len(self.deleted) + self.count_skew

    @property
    def failed_count(self) -> int:
        """`data.failed.count` as the body will say it."""
        return len(self.failed) + self.count_skew


def hide_one(outcome: Outcome, rng: random.Random) -> None:
    """lie_missing: drop one deleted id from both lists (a failed one if none was deleted)."""
    if outcome.deleted:
        outcome.deleted.pop(rng.randrange(len(outcome.deleted)))
    elif outcome.failed:
        del outcome.failed[rng.choice(list(outcome.failed))]


def list_one_as_both(outcome: Outcome, rng: random.Random) -> None:
    """lie_both: one deleted id also appears as failed; no-op if nothing was deleted."""
    if outcome.deleted:
        outcome.failed[rng.choice(outcome.deleted)] = LIED_FAILURE


def add_unrequested(outcome: Outcome, media_id: str) -> None:
    """lie_unrequested: claim `media_id`, which was not requested, as deleted."""
    outcome.deleted.append(media_id)


def skew_counts(outcome: Outcome) -> None:
    """lie_counts: both counts claim one more item than their lists hold."""
    outcome.count_skew = 1
