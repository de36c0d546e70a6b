"""Files uploaded on the console's new-purge page, kept between the dry run and the
confirmation (one file per upload, for the token that uploaded it, for an hour)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Any

KEEP_S = 3_600
"""An upload not confirmed within an hour is deleted."""


class Uploads:
    """A private directory of pending uploads."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="wickson-console-"))

    def save(self, source: IO[bytes], meta: dict[str, Any]) -> str:
        """Copy `source` to a new upload with `meta`; returns its id."""
        self._expire()
        upload_id = secrets.token_hex(16)
        with open(self.dir / upload_id, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        (self.dir / f"{upload_id}.json").write_text(json.dumps(meta))
        return upload_id

    def path(self, upload_id: str, token: str) -> tuple[Path, dict[str, Any]] | None:
        """The upload's file and meta, if it exists and belongs to `token`."""
        if not upload_id.isalnum() or len(upload_id) != 32:
            return None
        try:
            meta: dict[str, Any] = json.loads((self.dir / f"{upload_id}.json").read_text())
        except OSError:
            return None
        return (self.dir / upload_id, meta) if meta.get("token") == token else None

    def discard(self, upload_id: str) -> None:
        for name in (upload_id, f"{upload_id}.json"):
            (self.dir / name).unlink(missing_ok=True)

    def _expire(self) -> None:
        limit = time.time() - KEEP_S
        for entry in self.dir.iterdir():
            if entry.stat().st_mtime < limit:
                entry.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def size_of(path: Path) -> int:
    return os.stat(path).st_size
