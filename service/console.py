"""The web console (placeholder until its pages land)."""

from __future__ import annotations

from fastapi import FastAPI


def mount(app: FastAPI) -> None:
    """Add the console's routes to `app`."""
