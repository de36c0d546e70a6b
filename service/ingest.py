"""Taking ids from an HTTP request into the producer path, in flat memory.

The body is streamed into a spooled temporary file (memory up to SPOOL_MEMORY_BYTES, disk
beyond), hashed on the way for Idempotency-Key checks, then `producers.submit.submit` (or
`dry_run`) reads it line by line in a worker thread, exactly as the CLI reads a file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from fastapi import HTTPException, Request

from worker.errors import InputError
from worker.ingest import HEADER_WORDS
from worker.store import JobStore

SPOOL_MEMORY_BYTES = 4 * 1024 * 1024
"""Bodies up to 4 MB (~300k ids) stay in memory; bigger ones go to a temporary file."""
BYTES_PER_LINE = 1_024
"""Guard rail while streaming: a body over max_job_ids lines of this size is refused early."""
TEXT_TYPES = ("text/plain", "text/csv")
JSON_TYPE = "application/json"


@dataclass
class Body:
    """A request body on disk (or in memory), its size and SHA-256."""

    file: IO[bytes]
    size: int
    sha256: str

    def lines(self) -> Iterator[bytes]:
        """The body's lines, streamed from the start."""
        self.file.seek(0)
        # A loop, not `yield from`: closing this generator early must not close the file.
        for line in self.file:  # noqa: UP028 (see above)
            yield line

    def close(self) -> None:
        self.file.close()


def media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters ('' if none)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def spool(request: Request, *, max_bytes: int) -> Body:
    """Stream the body into a spooled temporary file; 413 once it exceeds `max_bytes`."""
    file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, prefix="wickson-http-")  # noqa: SIM115 (Body.close)
    digest, size = hashlib.sha256(), 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise HTTPException(413, f"request body over {max_bytes:,} bytes")
            digest.update(chunk)
            file.write(chunk)
    except BaseException:
        file.close()
        raise
    return Body(file, size, digest.hexdigest())


def parse_json(body: Body) -> dict[str, Any]:
    """The JSON object of a body (422 if it is not one)."""
    body.file.seek(0)
    try:
        data = json.load(body.file)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(422, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPException(422, 'the body must be a JSON object {"media_ids": [...]}')
    return data


def check_csv_header(body: Body) -> None:
    """A text/csv body must start with a header naming the id column (422 otherwise)."""
    body.file.seek(0)
    for raw in iter(body.file.readline, b""):
        line = raw.decode("utf-8", "replace").removeprefix("\ufeff").strip()
        if not line:
            continue
        try:
            names = [n.strip().lower() for n in next(csv.reader([line]))]
        except csv.Error as exc:
            raise HTTPException(422, f"the CSV header line could not be read: {exc}") from None
        if not HEADER_WORDS.intersection(names):
            raise HTTPException(
                422,
                f"text/csv needs a header line naming the id column (media_id); got {line[:80]!r}",
            )
        return


def request_hash(media: str, body_sha256: str, params: dict[str, Any]) -> str:
    """What an Idempotency-Key is bound to: the content type, body and parameters."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{media}\n{canonical}\n{body_sha256}".encode()).hexdigest()


def bind_idempotency_key(store: JobStore, key: str, digest: str, ttl_s: int) -> bool:
    """Bind `key` to the request hash `digest`; True if this request bound it now, False
    for a repeat of the same request; 409 if the key was used for another request."""
    name = store.keys.http_idempotency(key)
    if store.redis.set(name, digest, nx=True, ex=ttl_s):
        return True
    bound = store.redis.get(name)
    if bound is not None and bound != digest.encode():
        raise HTTPException(
            409, "this Idempotency-Key was used with a different request body or parameters"
        )
    return False


def unbind_idempotency_key(store: JobStore, key: str) -> None:
    """Free a key whose request was refused, so a corrected request may use it."""
    store.redis.delete(store.keys.http_idempotency(key))


def too_large(exc: InputError) -> bool:
    """Whether submit refused the input for its size (413 rather than 422)."""
    return "WICKSON_MAX_JOB_IDS" in str(exc)
