"""Automatic idle shutdown end to end (issue 9 §8): the real daemon process, on the real
simulator's clock (``run --clock``, ``--speed 60``: a simulated minute is a wall second), with the
README's canonical rule, through :class:`tests.daemon_rig.Rig`. The forgotten notebook is
announced, then stopped after its 15-minute grace; the busy trainer never is; the ledger explains
the stop (rule, figures, the API's answer) and the simulator received exactly one stop.

The other remedies end to end (protection, breakers, dry run, plan, crashes, shutdown, renewals,
busy during the grace): ``tests/test_remedies_e2e.py``."""

from __future__ import annotations

from monitor.actions import STOP_IDLE_GPUS
from tests.daemon_rig import Rig

RULE = STOP_IDLE_GPUS


def test_the_daemon_stops_the_forgotten_notebook_after_its_grace_and_never_the_trainer(
    rig: Rig,
) -> None:
    rig.configure(RULE)
    rig.start()

    # announced at the first evaluation (idle for hours), due 15 simulated minutes later
    rig.wait_for("the announced stop", lambda: rig.rows(instance_id="demo-notebook"), 60)
    first = rig.rows(instance_id="demo-notebook")[0]
    assert (first["action"], first["rule"]) == ("stop", "stop-idle-gpus")
    assert first["state"] in ("announced", "executing", "succeeded")
    # 15 simulated minutes of grace are ~15 wall seconds
    rig.wait_for("the stop", lambda: rig.rows(instance_id="demo-notebook", state="succeeded"), 90)
    (done,) = rig.rows(instance_id="demo-notebook", state="succeeded")
    assert "GPU" in done["reason"] and "idle" in done["reason"]  # why, with the figures
    assert done["facts"]["instance"]["billing_mode"] == "onDemand"
    assert done["answer"]["response"] == {}  # what the API answered
    assert done["due_at"] > done["planned_at"]
    # exactly one call, after the grace; the busy trainer: never
    assert rig.sim.performed("stop").count("demo-notebook") == 1
    assert "demo-trainer" not in [(a["body"] or {}).get("instanceId") for a in rig.sim.actions()]
    assert rig.rows(instance_id="demo-trainer") == []
    assert rig.daemon.stop() == 0
