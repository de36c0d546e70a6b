"""What every route needs, built once by `create_app`: settings, the store, the tokens."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.auth import TokenTable
from service.settings import ServiceSettings
from worker.store import JobStore


@dataclass(frozen=True)
class ServiceContext:
    """The app's shared state (one per app; the store's client is thread-safe)."""

    settings: ServiceSettings
    store: JobStore
    tokens: TokenTable


def get_context(request: Request) -> ServiceContext:
    """The context of the app serving `request` (a FastAPI dependency)."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx
