"""Serving the simulator on a real socket: in a background thread (tests) or blocking (the CLI)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from monitor.clock import ScaledClock
from monitor.sim.app import create_app
from monitor.sim.faults import Faults
from monitor.sim.fleet import FleetSim
from monitor.sim.quirks import Quirks

STARTUP_TIMEOUT = 15.0


class SimServer:
    """Run ``app`` with uvicorn in a daemon thread; ``.url`` is e.g. ``http://127.0.0.1:54321``.

    Use as a context manager (or call :meth:`start` / :meth:`stop`). ``port=0`` picks a free port.
    """

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def sim(self) -> FleetSim:
        sim: FleetSim = self.app.state.sim
        return sim

    @property
    def faults(self) -> Faults:
        faults: Faults = self.app.state.faults
        return faults

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SimServer:
        self._thread = threading.Thread(target=self._server.run, name="novita-sim", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"simulator failed to start on {self.host}:{self.port}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("simulator did not start in time")
            time.sleep(0.005)  # polling server.started, nothing else
        sockets = [s for server in self._server.servers for s in server.sockets]
        self.port = sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def build(
    scenario: str = "demo",
    instances: int = 20,
    seed: int = 0,
    api_key: str | None = None,
    latency_ms: float = 0,
    max_concurrency: int = 0,
    rate_limit: float = 0.0,
    error_rate: float = 0.0,
    speed: float = 1.0,
    quirks: Quirks | Mapping[str, str] | Iterable[str] | None = None,
) -> Starlette:
    """The standalone app: wall-clock time (``speed`` times faster), 24 h of history."""
    clock = ScaledClock(speed)
    sim = FleetSim(
        clock, scenario=scenario, instances=instances, seed=seed, history_hours=24, quirks=quirks
    )
    faults = Faults(
        latency_ms=latency_ms,
        max_concurrency=max_concurrency,
        rate_limit_rps=rate_limit,
        error_rate=error_rate,
        seed=seed,
    )
    return create_app(sim, faults, api_key=api_key)


def run_simulator(
    port: int,
    scenario: str = "demo",
    instances: int = 20,
    seed: int = 0,
    api_key: str | None = None,
    latency_ms: float = 0,
    max_concurrency: int = 0,
    rate_limit: float = 0.0,
    error_rate: float = 0.0,
    speed: float = 1.0,
    host: str = "127.0.0.1",
    quirks: Quirks | Mapping[str, str] | Iterable[str] | None = None,
) -> None:
    """Serve the simulator until interrupted (``novita-monitor simulator``).

    Prints ``listening on http://HOST:PORT`` once the socket accepts connections.
    """
    app = build(
        scenario,
        instances,
        seed,
        api_key,
        latency_ms,
        max_concurrency,
        rate_limit,
        error_rate,
        speed,
        quirks,
    )
    serve_until_interrupted(SimServer(app, host=host, port=port))


def serve_until_interrupted(server: SimServer, note: str = "") -> None:
    """Start ``server``, print ``listening on http://HOST:PORT`` (what tests and scripts wait
    for; ``note`` after it), serve until Ctrl-C or the server ends, then stop it."""
    server.start()
    print(f"listening on {server.url}{note}", flush=True)
    try:
        while server._thread is not None and server._thread.is_alive():
            server._thread.join(timeout=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
