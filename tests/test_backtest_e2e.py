"""A short backtest end to end: the ``backtest`` command over the ``hard`` scenario (4 instances,
1 day, 5-minute cycles), the simulator in-process, the daemon's pipeline on a manual clock."""

from __future__ import annotations

import json

from click.testing import CliRunner

from monitor.cli import cli
from monitor.sim import scenarios


def test_a_short_hard_backtest_stops_idle_instances_and_breaks_nothing() -> None:
    plan = scenarios.build("hard", days=1, instances=4)
    # the first two resume work within the grace twice a day, and are idle at the start
    assert [p.kind for p in plan.instances[:2]] == ["grace", "grace"]
    result = CliRunner().invoke(
        cli,
        ["backtest", "--scenario", "hard", "--days", "1", "--instances", "4", "--json"],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    out = json.loads(lines[-1])
    # the printed report names every figure and the schedules
    text = "\n".join(lines[:-1])
    for key in ("oracle_capture", "net_savings_usd", "runway_alert_lead_h", "schedules"):
        assert key in text
    assert out["schedules"]["evaluate_s"] == 300 and out["schedules"]["metric_resolution_s"] == 60
    assert out["schedules"]["act_s"] == 60  # due actions run between steps, as the daemon's
    assert out["instances"] == 4 and out["steps"] == 288
    # what it must never do
    assert out["false_stops"] == 0
    assert out["prepaid_stops"] == 0
    assert out["actions_on_missing_data"] == 0
    assert out["duplicate_renewals"] == 0
    assert out["missed_expiries"] == 0
    # what it must do: stop the idle ones (the owner starts them again), let the busy ones be
    assert out["stops"] >= 2 and out["restarts"] >= 1
    assert out["ledger"].get("stop:succeeded", 0) == out["stops"]
    # work resumed within the grace: the re-check on fresh data aborted those stops
    assert out["ledger"].get("stop:aborted", 0) >= 1
    assert out["oracle_capture"] is not None and 0 < out["oracle_capture"] <= 1
    assert out["rules_avoided_gpu_h"] <= out["oracle_avoided_gpu_h"]
    assert out["detection_latency_p50_min"] is not None
    assert out["net_savings_usd"] is not None and out["net_savings_usd"] > 0
    # one day: the balance never drops, so no runway lead and that target is not met
    assert out["runway_alert_lead_h"] is None
    assert out["targets_met"]["runway_alert_lead_h"] is False
    assert out["targets_met"]["false_stops"] is True


def test_the_act_schedule_is_the_scenarios_unless_told() -> None:
    """``standard`` acts at its 20-minute steps by default; ``--act`` runs due actions between
    steps (at most every step), and the output names the schedule used."""
    assert scenarios.DEFAULT_ACT_S == {"standard": 1200, "hard": 60}
    args = ["backtest", "--scenario", "standard", "--days", "1", "--instances", "4", "--json"]
    result = CliRunner().invoke(cli, [*args, "--act", "300"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["schedules"]["step_s"] == 1200 and out["schedules"]["act_s"] == 300
    assert out["false_stops"] == 0 and out["prepaid_stops"] == 0
