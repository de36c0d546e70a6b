"""worker/ingest.py: id validation, line reading, batching and de-duplication."""

from __future__ import annotations

import os
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import worker.ingest as ingest
from worker.errors import InputError
from worker.ingest import Deduplicator, Line, batched, id_problem, read_id_runs, read_lines

VALID_CHARS = "".join(c for c in string.printable[:94] if c not in "%,/\\")
"""Printable ASCII without space, '%', ',', '/' and '\\': what an id may hold."""
valid_ids = st.text(alphabet=VALID_CHARS, min_size=1, max_size=128)


# -- id_problem --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "media_id", ["vec-123abc", "a", "x" * 128, "!#$&'()*+-.:;<=>?@[]^_`{|}~", "A-Z_0.9"]
)
def test_id_problem_accepts_valid_ids(media_id: str) -> None:
    """Printable ASCII ids of 1 to 128 characters without space, ',', '/', '\\', '%' are valid."""
    assert id_problem(media_id) is None


@given(valid_ids)
def test_id_problem_accepts_every_id_of_the_allowed_alphabet(media_id: str) -> None:
    """Any 1..128 characters of the allowed alphabet is a valid id."""
    assert id_problem(media_id) is None


@given(valid_ids, st.sampled_from(" \t,/\\%\x00\x7fé\u200b"), st.integers(0, 127))
def test_id_problem_rejects_any_id_with_one_forbidden_character(
    media_id: str, bad: str, at: int
) -> None:
    """One forbidden character anywhere makes an id invalid, whatever surrounds it."""
    media_id = media_id[:127]
    at = min(at, len(media_id))
    assert id_problem(media_id[:at] + bad + media_id[at:]) is not None


def test_id_problem_names_an_empty_id() -> None:
    """An empty id is reported as empty."""
    assert id_problem("") == "empty"


def test_id_problem_names_the_length_of_a_too_long_id() -> None:
    """An id over 128 characters is reported with its length and the limit."""
    problem = id_problem("x" * 129)
    assert problem is not None
    assert "129" in problem
    assert "128" in problem


@pytest.mark.parametrize("media_id", ["vec 1", "vec\t1", " vec1", "vec1\n", "vec\u00a01"])
def test_id_problem_names_whitespace(media_id: str) -> None:
    """An id holding whitespace (spaces, tabs, newlines, no-break space) says so."""
    assert id_problem(media_id) == "contains whitespace"


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\u200b"])
def test_id_problem_names_a_control_character(char: str) -> None:
    """An id holding a control (non-printable) character names it, escaped."""
    problem = id_problem(f"vec{char}1")
    assert problem is not None
    assert "control character" in problem
    assert repr(char) in problem


@pytest.mark.parametrize("char", ["é", "ß", "日", "\U0001f600"])
def test_id_problem_names_a_non_ascii_character(char: str) -> None:
    """An id holding a printable non-ASCII character names it."""
    problem = id_problem(f"vec{char}1")
    assert problem is not None
    assert "non-ASCII" in problem
    assert repr(char) in problem


@pytest.mark.parametrize("char", ["/", "\\", "%"])
def test_id_problem_names_a_forbidden_ascii_character(char: str) -> None:
    """'/', '\\' and '%' (path and URL escapes) are refused, and named."""
    assert id_problem(f"vec{char}1") == f"contains {char!r}"


# -- read_lines --------------------------------------------------------------------------


def test_read_lines_strips_surrounding_whitespace_of_bytes_and_text() -> None:
    """Ids come out without their surrounding spaces, tabs or line endings."""
    lines = list(read_lines([b"  vec-1  \n", "\tvec-2\r\n", b"vec-3\r\n"]))
    assert [line.text for line in lines] == ["vec-1", "vec-2", "vec-3"]
    assert all(line.problem is None for line in lines)


def test_read_lines_skips_blank_lines_and_keeps_line_numbers() -> None:
    """Blank lines yield nothing; every id keeps the number of its physical line."""
    lines = list(read_lines([b"vec-1\n", b"\n", b"   \n", b"vec-4\n", b"\t\r\n"]))
    assert [(line.number, line.text) for line in lines] == [(1, "vec-1"), (4, "vec-4")]


@pytest.mark.parametrize("header", ["media_id", "MEDIA_ID", "media_ids", "id", "ids"])
def test_read_lines_skips_a_header_on_the_first_line(header: str) -> None:
    """A header word as the first non-blank line is not an id."""
    lines = list(read_lines([f"{header}\n".encode(), b"vec-1\n"]))
    assert [line.text for line in lines] == ["vec-1"]


def test_read_lines_skips_a_header_after_leading_blank_lines() -> None:
    """Blank lines before the header do not make it an id."""
    lines = list(read_lines([b"\n", b"media_id\n", b"vec-1\n"]))
    assert [line.text for line in lines] == ["vec-1"]


def test_read_lines_keeps_a_header_word_after_the_first_line() -> None:
    """Only the first line can be a header: later, 'media_id' is an id like any other."""
    lines = list(read_lines([b"vec-1\n", b"media_id\n"]))
    assert [line.text for line in lines] == ["vec-1", "media_id"]


def test_read_lines_reports_undecodable_bytes_as_invalid_with_their_line_number() -> None:
    """A line that is not UTF-8 is yielded as invalid ('not valid UTF-8'), escaped."""
    lines = list(read_lines([b"vec-1\n", b"vec-\xff\xfe2\n", b"vec-3\n"]))
    assert [(line.number, line.problem) for line in lines] == [
        (1, None),
        (2, "not valid UTF-8"),
        (3, None),
    ]
    assert lines[1].text == "vec-\\xff\\xfe2"


def test_read_lines_after_an_undecodable_first_line_treats_a_header_word_as_an_id() -> None:
    """An undecodable first line still counts as the first line."""
    lines = list(read_lines([b"\xff\n", b"media_id\n"]))
    assert [line.text for line in lines] == ["\\xff", "media_id"]


def test_read_lines_reports_each_invalid_id_with_its_problem() -> None:
    """A decodable but invalid id is yielded with `id_problem`'s message."""
    (line,) = read_lines([b"vec/1\n"])
    assert (line.number, line.text, line.problem) == (1, "vec/1", "contains '/'")


def test_read_lines_ignores_a_utf8_byte_order_mark() -> None:
    """A UTF-8 BOM (as spreadsheet exports write it) is not part of the first line."""
    with_header = list(read_lines([b"\xef\xbb\xbfmedia_id\n", b"vec-1\n"]))
    without_header = list(read_lines([b"\xef\xbb\xbfvec-1\n", b"vec-2\n"]))
    assert [(line.text, line.problem) for line in with_header] == [("vec-1", None)]
    assert [(line.text, line.problem) for line in without_header] == [
        ("vec-1", None),
        ("vec-2", None),
    ]


def test_read_lines_reads_the_id_column_of_a_csv_file() -> None:
    """A first line with commas is a CSV header: the column named like an id is read."""
    lines = list(read_lines([b"name,media_id,size\n", b'"a, b",vec-1,3\n', b"c, vec-2 ,4\n"]))
    assert [(line.number, line.text, line.problem) for line in lines] == [
        (2, "vec-1", None),
        (3, "vec-2", None),
    ]


def test_read_lines_refuses_a_csv_header_without_an_id_column() -> None:
    """A CSV header naming no id column is refused (InputError), not read as ids."""
    with pytest.raises(InputError, match="CSV header"):
        list(read_lines([b"name,size\n", b"a,1\n"]))


def test_a_comma_is_not_allowed_in_an_id() -> None:
    """A comma is a CSV column gone astray: the id is invalid, and says why."""
    assert id_problem("vec,1") == "contains ','"


# -- batched -----------------------------------------------------------------------------


@given(st.lists(st.integers()), st.integers(1, 12))
def test_batched_splits_into_full_batches_and_one_short_last(items: list[int], size: int) -> None:
    """Batches concatenate back to the input; each holds `size` items except a shorter last."""
    batches = list(batched(iter(items), size))
    assert [x for b in batches for x in b] == items
    assert all(1 <= len(b) <= size for b in batches)
    assert all(len(b) == size for b in batches[:-1])
    assert len(batches) == -(-len(items) // size)


def test_batched_of_nothing_is_nothing() -> None:
    """An empty input gives no batch at all (not one empty batch)."""
    assert list(batched([], 100)) == []


# -- Deduplicator ------------------------------------------------------------------------

dup_heavy_ids = st.lists(st.text(alphabet="abc-1", min_size=1, max_size=3), max_size=120)


@given(dup_heavy_ids)
def test_deduplicator_in_memory_yields_each_id_once_in_first_seen_order(ids: list[str]) -> None:
    """Below the memory limit, each distinct id comes out once, in first-occurrence order."""
    dedup = Deduplicator()
    for media_id in ids:
        dedup.add(media_id)
    assert list(dedup) == list(dict.fromkeys(ids))
    assert dedup.added == len(ids)


@settings(max_examples=50)
@given(dup_heavy_ids, st.integers(1, 5), st.integers(1, 4))
def test_deduplicator_spilled_to_disk_yields_each_id_exactly_once(
    ids: list[str], memory_limit: int, partitions: int
) -> None:
    """Spilled to partition files, the de-duplicator still yields each distinct id once."""
    dedup = Deduplicator(memory_limit=memory_limit, partitions=partitions)
    for media_id in ids:
        dedup.add(media_id)
    out = list(dedup)
    assert sorted(out) == sorted(set(ids))
    assert dedup._dir is None  # iterated: its temporary files are gone


def _spilled(ids: list[str]) -> tuple[Deduplicator, str]:
    dedup = Deduplicator(memory_limit=2, partitions=3)
    for media_id in ids:
        dedup.add(media_id)
    assert dedup._dir is not None, "expected the de-duplicator to have spilled"
    return dedup, dedup._dir.name


def test_deduplicator_removes_its_temporary_files_after_iteration() -> None:
    """Once iterated, a spilled de-duplicator leaves no temporary directory behind."""
    dedup, directory = _spilled(["a", "b", "c", "a", "d"])
    assert os.path.isdir(directory)
    assert sorted(dedup) == ["a", "b", "c", "d"]
    assert not os.path.exists(directory)


def test_deduplicator_removes_its_temporary_files_on_close() -> None:
    """Closing a spilled de-duplicator without iterating removes its files too."""
    dedup, directory = _spilled(["a", "b", "c"])
    dedup.close()
    assert not os.path.exists(directory)


def test_deduplicator_removes_its_temporary_files_when_iteration_is_abandoned() -> None:
    """A consumer that stops early and closes the iterator leaves nothing on disk."""
    dedup, directory = _spilled(["a", "b", "c", "d", "e"])
    iterator = iter(dedup)
    next(iterator)
    iterator.close()  # type: ignore[attr-defined]
    assert not os.path.exists(directory)


def test_deduplicator_below_the_limit_writes_no_file() -> None:
    """Ids that fit in memory never touch the disk."""
    dedup = Deduplicator(memory_limit=10)
    for media_id in ["a", "b", "a"]:
        dedup.add(media_id)
    assert dedup._dir is None
    assert list(dedup) == ["a", "b"]


def _flat(items: list[Line | list[str]]) -> list[tuple[str, str | None]]:
    """(text, problem) of every id `read_id_runs` gave, runs flattened."""
    out: list[tuple[str, str | None]] = []
    for item in items:
        if isinstance(item, list):
            out.extend((media_id, None) for media_id in item)
        else:
            out.append((item.text, item.problem))
    return out


_LINE_PARTS = st.sampled_from(
    [b"vec-1", b"vec-2", b"a,b", b"bad id", b"x/y", b" vec-3 ", b"", b"vec-4\r", b"\xff",
     b"media_id", b"\xef\xbb\xbfvec-5", b"o" * 129]
)  # fmt: skip


@given(st.lists(_LINE_PARTS, max_size=40), st.integers(1, 5))
def test_read_id_runs_reads_exactly_what_read_lines_reads(parts: list[bytes], run: int) -> None:
    """The fast path gives the same ids, problems and order as the line-by-line reader,
    whatever the lines (plain ids, CSV, headers, blanks, BOM, bad bytes), whatever the run
    size."""
    lines = [p + b"\n" for p in parts]
    try:
        expected = [(line.text, line.problem) for line in read_lines(lines)]
    except InputError:
        with pytest.raises(InputError):
            list(read_id_runs(lines))
        return
    saved = ingest.RUN_LINES
    ingest.RUN_LINES = run
    try:
        assert _flat(list(read_id_runs(lines))) == expected
    finally:
        ingest.RUN_LINES = saved


def test_a_plain_list_comes_in_runs_after_its_first_line() -> None:
    """After the first line, 4,096 plain ids come as one list (the fast path is taken)."""
    lines = [f"vec-{i:07d}\n".encode() for i in range(10_000)]
    items = list(read_id_runs(lines))
    assert isinstance(items[0], Line)  # the first line settles header and CSV
    assert any(isinstance(item, list) and len(item) == 4_096 for item in items)
    assert _flat(items) == [(f"vec-{i:07d}", None) for i in range(10_000)]


@given(st.lists(st.lists(st.sampled_from([f"v{i}" for i in range(30)]), max_size=12), max_size=8))
def test_add_many_keeps_each_id_once_in_memory_or_spilled(runs: list[list[str]]) -> None:
    """Runs added in bulk de-duplicate like ids added one by one, spilled or not."""
    one, bulk = (
        Deduplicator(memory_limit=10, partitions=4),
        Deduplicator(memory_limit=10, partitions=4),
    )
    for run in runs:
        for media_id in run:
            one.add(media_id)
        bulk.add_many(run)
    assert sorted(bulk) == sorted(one) == sorted({i for run in runs for i in run})
