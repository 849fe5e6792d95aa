"""Shared fixtures: a manual clock, the demo simulator, its ASGI app and a real-socket server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Any]:
    """The simulator as a process at ``--speed 60`` and the daemon (``run --clock``) started on
    it by the test: :class:`tests.daemon_rig.Rig` (issue 9 §8's end-to-end tests)."""
    from tests.daemon_rig import Rig

    with Rig(tmp_path) as started:
        yield started
