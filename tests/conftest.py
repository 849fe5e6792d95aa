"""Shared fixtures: a manual clock, the demo simulator, its ASGI app and a real-socket server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from starlette.applications import Starlette

from monitor.clock import ManualClock
from monitor.sim import FleetSim, SimServer, create_app

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    """A clock stopped at 2026-11-20 12:00 UTC; move it with ``clock.advance(seconds)``."""
    return ManualClock(T0)


@pytest.fixture
def demo_sim(clock: ManualClock) -> FleetSim:
    return FleetSim(clock, scenario="demo", seed=0)


@pytest.fixture
def sim_app(demo_sim: FleetSim) -> Starlette:
    """The simulated API over ``demo_sim``, accepting any non-empty Bearer key."""
    return create_app(demo_sim)


@pytest.fixture
def sim_server(sim_app: Starlette) -> Iterator[SimServer]:
    """``sim_app`` on a real socket at ``sim_server.url``; ``sim_server.sim`` is the model."""
    with SimServer(sim_app) as server:
        yield server
