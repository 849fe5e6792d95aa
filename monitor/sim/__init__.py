"""A fake Novita API (same paths, JSON and quirks as the real one) over a seeded fleet model.

See :mod:`monitor.sim.fleet` (the model and the ``demo`` ids), :mod:`monitor.sim.app` (the HTTP
surface and the list of quirks), :mod:`monitor.sim.server` (serving on a socket).
"""

from monitor.sim.app import create_app
from monitor.sim.faults import Faults
from monitor.sim.fleet import FleetSim, SimError
from monitor.sim.server import SimServer, run_simulator

__all__ = ["Faults", "FleetSim", "SimError", "SimServer", "create_app", "run_simulator"]
