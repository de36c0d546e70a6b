"""Serving the stand-in with uvicorn: blocking (`serve`) or in a daemon thread (`run_in_thread`).

Both use uvicorn's h11 protocol with one addition: each request's scope carries an
`abort` callable (``scope["extensions"][ABORT_EXTENSION]``) that resets the TCP
connection (SO_LINGER 0, then abort: the client reads ECONNRESET, no HTTP response).
That is how the "reset" fault drops a connection after deleting.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ops.fake_api.app import ABORT_EXTENSION, create_app
from ops.fake_api.config import FakeApiConfig
from ops.fake_api.state import FakeApi

# Pending answers are reset at shutdown (see `shutdown`); this only bounds the unexpected.
_GRACEFUL_SHUTDOWN_S = 1


class _AbortableH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the `abort` scope extension for this connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})[ABORT_EXTENSION] = self._reset_connection
            await inner(scope, receive, send)

        self.app = app

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Set TCP_NODELAY whatever socket we were given (see `_listening_socket`)."""
        super().connection_made(transport)  # type: ignore[arg-type]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def shutdown(self) -> None:
        """On server stop, hang up at once on a request still pending (a delayed answer).

        uvicorn would wait for it, then cancel it after the grace period and log the
        CancelledError; a reset ends the app's wait cleanly, as a client timeout does."""
        if self.cycle is not None and not self.cycle.response_complete:
            self._reset_connection()
        else:
            super().shutdown()

    def _reset_connection(self) -> None:
        """Close with a TCP RST instead of a FIN, without flushing anything."""
        if self.transport.is_closing():
            return  # the client hung up already (e.g. it timed out): nothing to reset
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


def _as_api(config_or_api: FakeApiConfig | FakeApi | None) -> FakeApi:
    """A FakeApi, built from a config if need be."""
    if isinstance(config_or_api, FakeApi):
        return config_or_api
    return FakeApi(config_or_api)


def _uvicorn_config(api: FakeApi, host: str, port: int, embedded: bool) -> uvicorn.Config:
    """Quiet, fast uvicorn settings; `embedded` leaves the host process's logging alone."""
    extra: dict[str, Any] = {"log_config": None} if embedded else {}
    return uvicorn.Config(
        create_app(api),
        host=host,
        port=port,
        http=_AbortableH11Protocol,
        ws="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
        **extra,
    )


def serve(
    config: FakeApiConfig | FakeApi | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted (Ctrl+C / SIGTERM). Blocks.

    `announce` is called with the URL once the port is bound (port 0 picks a free one)."""
    sock = _listening_socket(host, port)
    if announce is not None:
        announce(_url(sock))
    server = uvicorn.Server(_uvicorn_config(_as_api(config), host, port, embedded=False))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class _SignallingServer(uvicorn.Server):
    """A uvicorn server that says when it is accepting requests."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as usual, then signal."""
        await super().startup(sockets)
        self.ready.set()


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket; port 0 picks a free port."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets whose proto is
    # IPPROTO_TCP, and without it every answer waits ~40 ms on the client's delayed ACK.
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    return sock


def _url(sock: socket.socket) -> str:
    """The http:// URL of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class RunningFakeApi:
    """A stand-in served from a daemon thread; `stop()` it, or use it as a context manager."""

    def __init__(self, api: FakeApi, server: _SignallingServer, sock: socket.socket) -> None:
        self.api = api
        self.url = _url(sock)
        port = sock.getsockname()[1]
        self._server = server
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name=f"fake-api-{port}", daemon=True)

    def _run(self) -> None:
        """Thread body: serve on our socket; signal even on failure so start() never hangs."""
        try:
            self._server.run(sockets=[self._sock])
        finally:
            self._server.ready.set()

    def start(self, timeout_s: float) -> None:
        """Start serving; raises RuntimeError if not serving within `timeout_s`."""
        self._thread.start()
        if not self._server.ready.wait(timeout_s) or not self._server.started:
            self.stop()
            raise RuntimeError(f"fake API did not start serving within {timeout_s} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Shut down (in-flight requests get a grace period) and join the thread."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._sock.close()

    def __enter__(self) -> RunningFakeApi:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def run_in_thread(
    config_or_api: FakeApiConfig | FakeApi | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 10.0,
) -> RunningFakeApi:
    """Serve in a daemon thread and return once it accepts requests (port 0: a free one)."""
    api = _as_api(config_or_api)
    sock = _listening_socket(host, port)
    server = _SignallingServer(_uvicorn_config(api, host, port, embedded=True))
    running = RunningFakeApi(api, server, sock)
    running.start(startup_timeout_s)
    return running
