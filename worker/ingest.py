"""Reading ids: validation, de-duplication and batching, streamed, in flat memory.

Pure, no Redis: `jobs.py` feeds what these yield into the store.
"""

from __future__ import annotations

import csv
import itertools
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TypeVar

from worker.errors import InputError

T = TypeVar("T")

MAX_ID_LENGTH = 128
ID_RULE = "1 to 128 printable ASCII characters, none of space , / \\ %"
# 0x21-0x7E less '%', ',', '/' and '\': a comma in an id is a CSV column gone astray,
# the others belong to paths and URL escapes, never to a media id.
_VALID_ID = re.compile(r"[!-$&-+\--.0-\[\]-~]{1,128}")
HEADER_WORDS = frozenset({"media_id", "media_ids", "id", "ids", "mediaid"})
INVALID_REASON = "invalid_id"


def id_problem(media_id: str) -> str | None:
    """Why `media_id` cannot be sent to the API, or None if it can."""
    if _VALID_ID.fullmatch(media_id):
        return None
    if not media_id:
        return "empty"
    if len(media_id) > MAX_ID_LENGTH:
        return f"{len(media_id)} characters long (at most {MAX_ID_LENGTH})"
    bad = next(c for c in media_id if not _VALID_ID.fullmatch(c))
    if bad.isspace():
        return "contains whitespace"
    if not bad.isprintable():
        return f"contains the control character {bad!r}"
    if not bad.isascii():
        return f"contains the non-ASCII character {bad!r}"
    return f"contains {bad!r}"


@dataclass
class Line:
    """One id as read: its line number, its text, and why it is invalid (None if valid)."""

    number: int
    text: str
    problem: str | None = None


def read_lines(source: Iterable[bytes | str]) -> Iterator[Line]:
    """Ids from lines (bytes or text): surrounding whitespace stripped, blank lines and a
    header line skipped, undecodable bytes reported as invalid. A first line with commas
    makes it CSV: the column named like an id (media_id, id, ...) is read. Raises
    InputError for a binary input (a NUL byte) or a line CSV cannot parse."""
    reader = _LineReader()
    for number, raw in enumerate(source, start=1):
        line = reader.read(number, raw)
        if line is not None:
            yield line


RUN_LINES = 4_096
"""Lines `read_id_runs` looks at together: small next to the de-duplicator's memory."""
_PLAIN_RUN = re.compile(rb"(?:[!-$&-+\--.0-\[\]-~]{1,128}\n)*")
"""Lines that are each one valid id and nothing else (no space, no CR, no comma)."""


def read_id_runs(source: Iterable[bytes | str]) -> Iterator[Line | list[str]]:
    """`read_lines`, faster for plain lists: once the first line has settled header and
    CSV, a run of `RUN_LINES` bytes lines that are each one valid id comes as one list of
    ids (one regex and one split for the run); any other run goes line by line."""
    reader = _LineReader()
    lines = iter(source)
    number = 0
    while run := list(itertools.islice(lines, RUN_LINES)):
        if reader.settled and isinstance(run[0], bytes):
            block = b"".join(run)  # type: ignore[arg-type]
            if _PLAIN_RUN.fullmatch(block):
                number += len(run)
                yield block.decode("ascii").split("\n")[:-1]
                continue
        for raw in run:
            number += 1
            line = reader.read(number, raw)
            if line is not None:
                yield line


class _LineReader:
    """One line at a time, with what the first line decided (header, CSV column)."""

    def __init__(self) -> None:
        self.first = True
        self.column: int | None = None

    @property
    def settled(self) -> bool:
        """The first line has been read and the input is not CSV: a line is one id."""
        return not self.first and self.column is None

    def read(self, number: int, raw: bytes | str) -> Line | None:
        """The id of line `number`, or None for a blank or header line."""
        if (b"\0" in raw) if isinstance(raw, bytes) else ("\0" in raw):
            # No text list of ids holds a NUL: a binary file given by mistake would
            # otherwise become thousands of "invalid ids" recorded as failures.
            raise InputError(
                f"line {number} holds a NUL byte: this is a binary file, not media ids"
                " (one per line, or a CSV with a media_id column)"
            )
        undecodable = False
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text, undecodable = raw.decode("utf-8", "surrogateescape"), True
        else:
            text = raw
        if not text.strip():
            return None
        if self.first:
            self.first = False
            text = text.removeprefix("\ufeff")  # the byte-order mark of "UTF-8 with BOM"
            self.column = _csv_column(text, number)
            if self.column is not None or text.strip().lower() in HEADER_WORDS:
                return None
        if self.column is not None:
            fields = _csv_fields(text, number)
            text = fields[self.column] if self.column < len(fields) else ""
        text = text.strip()
        if undecodable and any("\udc80" <= c <= "\udcff" for c in text):
            return Line(
                number,
                text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
                "not valid UTF-8",
            )
        return Line(number, text, id_problem(text))


def _csv_fields(text: str, number: int) -> list[str]:
    """The fields of one CSV line; InputError naming the line if CSV cannot parse it."""
    try:
        return next(csv.reader([text]))
    except csv.Error as exc:
        raise InputError(f"line {number} is not readable as CSV: {exc}") from None


def _csv_column(header: str, number: int) -> int | None:
    """The id column of a CSV header line, None if the line is no CSV header."""
    if "," not in header:
        return None
    names = [n.strip().lower() for n in _csv_fields(header, number)]
    for index, name in enumerate(names):
        if name in HEADER_WORDS:
            return index
    raise InputError(
        f"line {number} looks like a CSV header ({quoted(header.strip())}) but names no id"
        f" column: name one of {', '.join(sorted(HEADER_WORDS))}, or give one id per line"
    )


def printable(text: str, limit: int = 80) -> str:
    """`text` as it can be shown in a message: escaped, truncated."""
    shown = text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def quoted(text: str, limit: int = 80) -> str:
    """`text` for a message, in quotes, escaped once (`repr` of it would escape twice)."""
    return f"'{printable(text, limit)}'"


def stored(text: str, limit: int = 200) -> str:
    """An invalid id as the job records it: as read (escaped only for display), truncated
    so that a runaway line cannot make a huge key."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` items (the last may be shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class Deduplicator:
    """Keeps the first occurrence of each id, in memory up to `memory_limit` ids, then
    spilled to `partitions` temporary files by hash, so memory stays flat at any size."""

    memory_limit: int = 200_000
    partitions: int = 256
    added: int = 0
    _seen: dict[str, None] = field(default_factory=dict)
    _files: list[IO[str]] = field(default_factory=list)
    _dir: tempfile.TemporaryDirectory[str] | None = None

    def add(self, media_id: str) -> None:
        self.added += 1
        if self._files:
            self._files[hash(media_id) % self.partitions].write(media_id + "\n")
            return
        self._seen[media_id] = None
        if len(self._seen) > self.memory_limit:
            self._spill()

    def add_many(self, media_ids: list[str]) -> None:
        """`add` each of `media_ids`, in bulk."""
        self.added += len(media_ids)
        if not self._files:
            self._seen.update(dict.fromkeys(media_ids))
            if len(self._seen) > self.memory_limit:
                self._spill()
            return
        parts: dict[int, list[str]] = {}
        for media_id in media_ids:
            parts.setdefault(hash(media_id) % self.partitions, []).append(media_id)
        for n, part in parts.items():
            self._files[n].write("\n".join(part) + "\n")

    def _spill(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="wickson-purge-")
        self._files = [
            open(os.path.join(self._dir.name, f"{n:03d}"), "w+", encoding="utf-8")  # noqa: SIM115
            for n in range(self.partitions)
        ]
        seen, self._seen = self._seen, {}
        for media_id in seen:
            self._files[hash(media_id) % self.partitions].write(media_id + "\n")

    def __iter__(self) -> Iterator[str]:
        """Each distinct id once (insertion order in memory; partition order once spilled)."""
        if not self._files:
            yield from self._seen
            return
        try:
            for handle in self._files:
                handle.seek(0)
                yield from dict.fromkeys(line.rstrip("\n") for line in handle)
        finally:
            self.close()

    def close(self) -> None:
        for handle in self._files:
            handle.close()
        self._files = []
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
