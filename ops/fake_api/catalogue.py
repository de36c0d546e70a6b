"""The catalogue: which media ids exist, who owns them, how many vectors each carries.

Ids are computed from their number (``vec-0000042`` is owned item 42, ``oth-0000042`` a
foreign one), so a catalogue of millions costs no memory and a lookup is a string parse.
"""

from __future__ import annotations

from dataclasses import dataclass

OWNED_PREFIX = "vec-"
FOREIGN_PREFIX = "oth-"


def owned_id(index: int) -> str:
    """The id of owned item `index`."""
    return f"{OWNED_PREFIX}{index:07d}"


def foreign_id(index: int) -> str:
    """The id of foreign item `index` (owned by another user)."""
    return f"{FOREIGN_PREFIX}{index:07d}"


def _index(media_id: str, prefix: str, count: int) -> int | None:
    """The number in `media_id` if it is the canonical id of one of `count` items."""
    if not media_id.startswith(prefix):
        return None
    digits = media_id[len(prefix) :]
    # isascii: str.isdigit() also accepts other scripts' digits, which int() would parse.
    if not (digits.isascii() and digits.isdigit()):
        return None
    index = int(digits)
    # Only the canonical spelling exists: "vec-42" and "vec-00000042" are unknown ids.
    if index >= count or f"{index:07d}" != digits:
        return None
    return index


@dataclass(frozen=True, slots=True)
class Catalogue:
    """`items` media owned by the main key and `foreign_items` owned by someone else."""

    items: int
    foreign_items: int

    def owned_index(self, media_id: str) -> int | None:
        """The item number if `media_id` is owned by the main key (deleted or not), else None."""
        return _index(media_id, OWNED_PREFIX, self.items)

    def is_foreign(self, media_id: str) -> bool:
        """Whether `media_id` exists but belongs to another user."""
        return _index(media_id, FOREIGN_PREFIX, self.foreign_items) is not None

    @staticmethod
    def vectors(index: int) -> tuple[int, int]:
        """(hd_vectors, ld_vectors) of owned item `index`: 1 to 3 high-dim, always 1 low-dim."""
        return 1 + index % 3, 1
