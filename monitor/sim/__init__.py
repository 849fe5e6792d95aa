"""A fake Novita API (same paths, JSON and quirks as the real one) over a seeded fleet model.

See :mod:`monitor.sim.fleet` (the model and the ``demo`` ids), :mod:`monitor.sim.app` (the HTTP
surface and the list of quirks), :mod:`monitor.sim.quirks` (the switches for what the docs leave
open), :mod:`monitor.sim.truth` (the ground truth), :mod:`monitor.sim.server` (serving on a
socket).

The names below are imported on first use, so ``monitor.sim.quirks`` (which the command line
reads for ``simulator --help``) does not pull in the web stack.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.sim.app import create_app
    from monitor.sim.faults import Faults
    from monitor.sim.fleet import FleetSim, SimError
    from monitor.sim.quirks import QuirkError, Quirks
    from monitor.sim.server import SimServer, run_simulator

_WHERE = {
    "create_app": "monitor.sim.app",
    "Faults": "monitor.sim.faults",
    "FleetSim": "monitor.sim.fleet",
    "SimError": "monitor.sim.fleet",
    "QuirkError": "monitor.sim.quirks",
    "Quirks": "monitor.sim.quirks",
    "SimServer": "monitor.sim.server",
    "run_simulator": "monitor.sim.server",
}

__all__ = [
    "Faults",
    "FleetSim",
    "QuirkError",
    "Quirks",
    "SimError",
    "SimServer",
    "create_app",
    "run_simulator",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'monitor.sim' has no attribute {name!r}")
    value = getattr(import_module(where), name)
    globals()[name] = value
    return value
