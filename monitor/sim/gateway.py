"""Several simulated accounts behind one gateway: one process, one port, the bearer key picks the
account (``novita-monitor bench collect --accounts K``, ``python -m monitor.sim --accounts K``).

Each account is a whole simulator app (:func:`monitor.sim.app.create_app`: its own
:class:`~monitor.sim.fleet.FleetSim` and fault switches); all the fleets share one clock, so
``POST /_sim/clock/advance`` moves every account at once. The gateway, not the accounts, models
the network and the API's capacity: at most ``max_concurrency`` requests are served at once over
*all* accounts (the others wait in one queue), each after ``latency_ms`` of latency, as
:class:`monitor.sim.app.Gate` does for a single account. So K clients at concurrency C each,
against a gateway of C, finish a cycle of R requests in no less than
``(1 + ceil((R - 1) / C)) * L``.

Auth: ``Authorization: Bearer <key>``; a missing key or one no account has -> 401
``UNAUTHORIZED`` (nothing reaches a fleet). Control endpoints (``/_sim/...``) are not
authenticated: with an account's key they reach that account's, without one the first
account's (the clock is shared). ``GET /_sim/gateway`` -> ``{"accounts", "requests",
"in_flight", "max_in_flight"}``, the gateway's own counts (``max_in_flight`` never exceeds
``max_concurrency``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Sequence
from typing import Any, cast

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from monitor.clock import Clock, ScaledClock
from monitor.sim.accounts import SimAccount
from monitor.sim.app import create_app
from monitor.sim.faults import Faults
from monitor.sim.fleet import FleetSim, error_body


def _bearer(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            return key.strip() if scheme.lower() == "bearer" else ""
    return ""


async def _send_json(send: Send, status: int, body: Any) -> None:
    raw = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


class Gateway:
    """An ASGI app routing each request to the account its bearer key names (module docstring)."""

    def __init__(
        self,
        apps: Sequence[tuple[str, Starlette]],
        latency_ms: float = 0.0,
        max_concurrency: int = 0,
    ) -> None:
        if not apps:
            raise ValueError("a gateway needs at least one account")
        keys = [k for k, _ in apps]
        if len(set(keys)) != len(keys) or not all(keys):
            raise ValueError("account keys must be non-empty and distinct")
        self.apps = list(apps)
        self.latency_ms = latency_ms
        self.max_concurrency = max_concurrency
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # what SimServer reads (``.state.sim``, ``.state.faults``): the first account's
        self.state = apps[0][1].state

    def account(self, key: str) -> Starlette | None:
        for known, app in self.apps:
            if hmac.compare_digest(known, key):
                return app
        return None

    def _semaphore(self) -> asyncio.Semaphore | None:
        if self.max_concurrency <= 0:
            return None
        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:
            self._sem, self._loop = asyncio.Semaphore(self.max_concurrency), loop
        return self._sem

    def counts(self) -> dict[str, int]:
        return {
            "accounts": len(self.apps),
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan and websockets: the first account's app
            await self.apps[0][1](scope, receive, send)
            return
        key = _bearer(scope)
        app = self.account(key) if key else None
        path: str = scope.get("path", "")
        if path.startswith("/_sim/"):
            if path == "/_sim/gateway":
                await _send_json(send, 200, self.counts())
                return
            await (app or self.apps[0][1])(scope, receive, send)
            return
        if app is None:
            reason = "unknown API key" if key else "missing or malformed API key"
            await _send_json(send, 401, error_body(401, "UNAUTHORIZED", reason))
            return
        self.requests += 1
        sem = self._semaphore()
        if sem is None:
            await self._serve(app, scope, receive, send)
            return
        async with sem:
            await self._serve(app, scope, receive, send)

    async def _serve(self, app: Starlette, scope: Scope, receive: Receive, send: Send) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency_ms > 0:
                await asyncio.sleep(self.latency_ms / 1000)
            await app(scope, receive, send)
        finally:
            self.in_flight -= 1


def build_gateway(
    accounts: Sequence[SimAccount],
    scenario: str = "fleet",
    latency_ms: float = 0.0,
    max_concurrency: int = 0,
    speed: float = 1.0,
    clock: Clock | None = None,
    history_hours: int = 24,
) -> Gateway:
    """One fleet per account on one shared clock (``ScaledClock(speed)`` unless given), behind
    a gateway of ``max_concurrency`` requests at once with ``latency_ms`` each."""
    shared = clock or ScaledClock(speed)
    apps = []
    for account in accounts:
        sim = FleetSim(
            shared,
            scenario=scenario,
            instances=account.instances,
            seed=account.seed,
            history_hours=history_hours,
        )
        # the account's own fault switches stay at rest: latency and the queue are the gateway's
        apps.append((account.key, create_app(sim, Faults(seed=account.seed), api_key=account.key)))
    return Gateway(apps, latency_ms=latency_ms, max_concurrency=max_concurrency)


def run_gateway(
    port: int,
    accounts: Sequence[SimAccount],
    scenario: str = "fleet",
    latency_ms: float = 0.0,
    max_concurrency: int = 0,
    speed: float = 1.0,
    host: str = "127.0.0.1",
) -> None:
    """Serve a gateway until interrupted; prints ``listening on http://HOST:PORT`` once ready
    (as :func:`monitor.sim.server.run_simulator`)."""
    from monitor.sim.server import SimServer, serve_until_interrupted

    gateway = build_gateway(accounts, scenario, latency_ms, max_concurrency, speed)
    server = SimServer(cast(Starlette, gateway), host=host, port=port)
    serve_until_interrupted(server, f" ({len(accounts)} accounts)")
