"""The HTTP face of `FakeApi`: the contract's endpoint plus admin routes for tests.

    DELETE /v1/media/batch      X-Api-Key + JSON body, as the contract says
    GET    /_admin/ledger       what was really done (?ids=1 adds deleted_ids)
    GET    /_admin/timeline     every request: {t_s, status, n_ids}
    GET    /_admin/config       the configuration in force
    POST   /_admin/config       partial update, e.g. {"rate": 20} or {"p_500_after": 0.1}
    POST   /_admin/script       {"faults": ["429", "500_after", ...]}
    POST   /_admin/revoke | /_admin/restore | /_admin/reset

The admin routes need no key: this is a test double, bound to loopback.

The endpoint is a raw ASGI app, not a Request/Response handler: it is the hot path of
benchmarks, and it needs the connection itself for the "reset" fault. To drop a
connection it calls the `abort` callable that server.py's protocol puts in
``scope["extensions"][ABORT_EXTENSION]``; under a server without it (httpx's
ASGITransport, another ASGI server) it raises `ConnectionDropped` instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Literal

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from ops.fake_api.state import FakeApi

ABORT_EXTENSION = "wickson.fake_api.abort"
_JSON = b"application/json"

_AfterWait = Literal["answer", "client_gone", "stopping"]


class ConnectionDropped(Exception):
    """The "reset" fault under a server that cannot drop a connection from the app."""


class _BatchDelete:
    """ASGI endpoint for DELETE /v1/media/batch."""

    def __init__(self, api: FakeApi) -> None:
        self._api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body, let FakeApi decide, wait the simulated latency, answer."""
        body = await _read_body(receive)
        if body is None:
            return  # the client left before sending its body: nothing was decided
        reply = self._api.handle(_api_key(scope), body)
        after_wait = await _wait(reply.delay_s, receive)
        if after_wait == "client_gone":
            return  # it timed out: the deletion stands, the answer has no one to go to
        if after_wait == "stopping" or reply.drop:
            await _drop_connection(scope, receive)
            return
        headers = [(b"content-type", _JSON), (b"content-length", str(len(reply.body)).encode())]
        headers += [
            (name.lower().encode(), value.encode()) for name, value in reply.headers.items()
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})


async def _wait(delay_s: float, receive: Receive) -> _AfterWait:
    """Sleep the simulated latency, unless the client leaves or the server stops first."""
    if delay_s <= 0:
        return "answer"
    # The body is read, so the next message can only be http.disconnect: a client that
    # timed out frees this task at once instead of holding up a shutdown.
    disconnect = asyncio.ensure_future(receive())
    try:
        done, _ = await asyncio.wait({disconnect}, timeout=delay_s)
    except asyncio.CancelledError:
        # A stopping server cancels pending answers (and logs any CancelledError raised):
        # hanging up is what a dying server does, and this task ends right after.
        return "stopping"
    finally:
        disconnect.cancel()
    return "client_gone" if done else "answer"


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _api_key(scope: Scope) -> str | None:
    """The X-Api-Key header, if sent."""
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            return bytes(value).decode("latin-1")
    return None


async def _drop_connection(scope: Scope, receive: Receive) -> None:
    """Reset the TCP connection without answering (see the module docstring)."""
    abort: Callable[[], None] | None = scope.get("extensions", {}).get(ABORT_EXTENSION)
    if abort is None:
        raise ConnectionDropped("this server cannot drop connections from the app")
    abort()
    # Wait for the server to notice, so it does not report "returned without a response".
    await receive()


class _Admin:
    """Admin endpoints: read the ledger, steer the stand-in."""

    def __init__(self, api: FakeApi) -> None:
        self._api = api

    async def ledger(self, request: Request) -> Response:
        """The ledger summary; ?ids=1 adds the sorted deleted ids."""
        include_ids = request.query_params.get("ids", "") not in ("", "0", "false")
        ledger = self._api.ledger(include_ids=include_ids)
        return Response(ledger.model_dump_json(exclude_none=True), media_type="application/json")

    async def timeline(self, request: Request) -> Response:
        """Every request so far, for plots."""
        entries = [entry._asdict() for entry in self._api.timeline()]
        return JSONResponse({"timeline": entries})

    async def get_config(self, request: Request) -> Response:
        """The configuration in force."""
        return Response(self._api.config.model_dump_json(), media_type="application/json")

    async def set_config(self, request: Request) -> Response:
        """Apply a partial config change; 422 with the errors if it does not validate."""
        changes = await _json_object(request)
        if changes is None:
            return _admin_error(400, "body must be a JSON object of config fields")
        try:
            config = self._api.update_config(changes)
        except ValidationError as error:
            return JSONResponse({"errors": json.loads(error.json(include_url=False))}, 422)
        return Response(config.model_dump_json(), media_type="application/json")

    async def script(self, request: Request) -> Response:
        """Queue faults for the next requests."""
        document = await _json_object(request)
        faults = (document or {}).get("faults")
        if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
            return _admin_error(400, 'body must be {"faults": [names]}')
        try:
            self._api.script(faults)
        except ValueError as error:
            return _admin_error(400, str(error))
        return JSONResponse({"pending": self._api.pending_script()})

    def action(self, method: Callable[[], None]) -> Callable[[Request], Any]:
        """An endpoint that calls `method` and says ok."""

        async def endpoint(request: Request) -> Response:
            method()
            return JSONResponse({"ok": True})

        return endpoint


async def _json_object(request: Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or None."""
    try:
        document = json.loads(await request.body())
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _admin_error(status: int, message: str) -> Response:
    """A plain error for misuse of the admin routes."""
    return JSONResponse({"error": message}, status)


def _admin_routes(api: FakeApi) -> list[Route]:
    """The /_admin routes."""
    admin = _Admin(api)
    return [
        Route("/ledger", admin.ledger, methods=["GET"]),
        Route("/timeline", admin.timeline, methods=["GET"]),
        Route("/config", admin.get_config, methods=["GET"]),
        Route("/config", admin.set_config, methods=["POST"]),
        Route("/script", admin.script, methods=["POST"]),
        Route("/revoke", admin.action(api.revoke_key), methods=["POST"]),
        Route("/restore", admin.action(api.restore_key), methods=["POST"]),
        Route("/reset", admin.action(api.reset), methods=["POST"]),
    ]


def create_app(api: FakeApi) -> Starlette:
    """A Starlette app serving `api` over HTTP."""
    return Starlette(
        routes=[
            Route("/v1/media/batch", _BatchDelete(api), methods=["DELETE"]),
            Mount("/_admin", routes=_admin_routes(api)),
        ]
    )
