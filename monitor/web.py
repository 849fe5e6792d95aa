"""The daemon's HTTP endpoint (``http: {listen: HOST:PORT}``), served on its event loop:

* ``GET /metrics``: the Prometheus exposition of the daemon's registry
  (:mod:`monitor.exporter`; ``prometheus_client``'s ASGI app: text or OpenMetrics by the
  ``Accept`` header, gzip when asked); the fleet's figures are read from the database in a
  worker thread first, so a scrape never holds the event loop for a reading;
* ``GET /healthz``: 200 while the process lives (its event loop answers);
* ``GET /readyz``: 200 when the daemon's :data:`~monitor.health.ReadinessCheck` says ready,
  503 otherwise, with a short JSON reason either way.

starlette routes, uvicorn serves (both already run the simulator). uvicorn runs on the
daemon's loop with the signals left to the daemon (:class:`_LoopServer`), on a socket bound
here, so a taken port fails the start in one line and port 0 gives the bound address.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable, Generator

import uvicorn
from prometheus_client import CollectorRegistry, make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from monitor.errors import RuntimeFailure, UserError
from monitor.health import ReadinessCheck
from monitor.logs import get_logger

__all__ = ["HttpServer", "bind", "build_app"]

log = get_logger("monitor.web")

#: how long a stop waits for requests in flight (inside the daemon's stop grace)
SHUTDOWN_GRACE_S = 2.0


def build_app(
    registry: CollectorRegistry,
    readiness: ReadinessCheck,
    prepare: Callable[[], object] | None = None,
) -> Starlette:
    """The ASGI app: ``/metrics``, ``/healthz``, ``/readyz``. ``prepare`` runs in a worker
    thread before each scrape (the fleet collector's reading: the database is read off the
    event loop, and the exposition then finds it cached)."""

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> JSONResponse:
        try:
            state = readiness()
        except Exception as exc:  # the database failing: not ready, and why (no traceback)
            log.error("readiness_check_failed", error=repr(exc))
            return JSONResponse(
                {"ready": False, "reason": f"readiness check failed: {type(exc).__name__}"},
                status_code=503,
            )
        return JSONResponse(state.to_json(), status_code=200 if state.ready else 503)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", _Asgi(make_asgi_app(registry), prepare), methods=["GET", "HEAD"]),
        ]
    )


class _Asgi:
    """An ASGI app as a route's endpoint (starlette calls a plain function with a request),
    after ``prepare`` in a worker thread."""

    def __init__(self, app: ASGIApp, prepare: Callable[[], object] | None = None) -> None:
        self.app = app
        self.prepare = prepare

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.prepare is not None:
            await asyncio.to_thread(self.prepare)
        await self.app(scope, receive, send)


class _LoopServer(uvicorn.Server):
    """uvicorn on a loop it does not own: the daemon handles SIGTERM/SIGINT/SIGHUP itself
    (uvicorn would otherwise install its own handlers and re-raise the signal at its exit)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(
    host: str, port: int, where: str | None = None, *, or_else: str = "or pick another port"
) -> socket.socket:
    """A listening socket on ``host:port`` or one clear error (prefixed with ``where``): taken
    (:class:`RuntimeFailure`, exit 1: may pass on a retry) or impossible (:class:`UserError`,
    exit 2: the configuration must change). ``or_else``: what else to do about a taken port."""
    prefix = f"{where}: " if where else ""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise UserError(f"{prefix}cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise RuntimeFailure(
                f"{prefix}cannot listen on {host}:{port}: the port is in use (stop what uses it, "
                f"{or_else})"
            ) from None
        raise UserError(f"{prefix}cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class HttpServer:
    """The endpoint on the running loop: :meth:`start` binds and serves, :meth:`stop` ends it
    (requests in flight get :data:`SHUTDOWN_GRACE_S`)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.address: tuple[str, int] | None = None
        self._server: _LoopServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, where: str = "http.listen") -> tuple[str, int]:
        """Bind ``host:port`` (raises :class:`UserError`/:class:`RuntimeFailure` when it
        cannot), serve, and return the bound address (port 0: the port picked)."""
        sock = bind(host, port, where, or_else="pick another port, or set http: false")
        bound = sock.getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        config = uvicorn.Config(
            self.app,
            log_config=None,  # our logging pipeline (monitor.logs) keeps uvicorn's records
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
        )
        self._server = _LoopServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http")
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)  # uvicorn's startup: a few loop turns
        if self._task.done():
            self._task.result()  # its exception, if it failed
            raise RuntimeFailure(f"{where}: the HTTP server did not start on {host}:{port}")
        return self.address

    @property
    def url(self) -> str | None:
        if self.address is None:
            return None
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, timeout=SHUTDOWN_GRACE_S + 2)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
        except Exception as exc:
            log.error("http_stop_failed", error=repr(exc))
        self._server = self._task = None
