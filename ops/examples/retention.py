"""An EXAMPLE id source for a retention sweep: how an app plugs in its own query.

A deployment points a sweep's `callable` at a function of its own, for instance
"myapp.retention:expired_media_ids", a generator over the app's database. This one reads
a CSV export (media_id,uploaded_at) instead, so the example runs anywhere.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

EXPORT = Path(__file__).with_name("media-uploads.csv")
"""The example's data: media ids and their upload dates."""


def older_than_90_days(path: str | None = None, today: str | None = None) -> Iterator[str]:
    """Yield the ids of media uploaded more than 90 days before `today` (YYYY-MM-DD,
    default: today, UTC), read from the CSV at `path` (default: the example export)."""
    cutoff = (date.fromisoformat(today) if today else datetime.now(UTC).date()) - timedelta(90)
    with open(path or EXPORT, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if date.fromisoformat(row["uploaded_at"]) < cutoff:
                yield row["media_id"]
