"""``backtest --from-db``: a candidate rule replayed over a stored history (the demo scenario's,
collected by the pipeline on a manual clock for 3 simulated hours)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from monitor.cli import cli
from monitor.clock import ManualClock
from monitor.pipeline import Pipeline
from tests.helpers import ENV, open_app

RULE = """\
rules:
  - name: stop-idle-gpus
    resource: instance
    when: {idle_gpu: {window: 45m, threshold: 5, cpu_threshold: 10}}
    actions:
      - stop: {grace: 15m}
"""


async def test_replay_counts_fires_stops_and_savings_of_a_candidate_rule(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    app = open_app(tmp_path, sim_app, clock)
    run = Pipeline(app, clock)
    try:
        await run.step()
        await run.advance(minutes=180, every=5)
    finally:
        await app.aclose()
    rules = tmp_path / "candidate.yaml"
    rules.write_text(RULE)
    result = CliRunner(env=ENV).invoke(
        cli,
        [
            "backtest", "--from-db", "--config", str(tmp_path / "novita-monitor.yaml"),
            "--rules", str(rules), "--cycle", "300", "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    out = json.loads(lines[-1])
    tally = out["rules"]["stop-idle-gpus"]
    # the forgotten notebook and the idle instance in error (both on demand, idle all along)
    # fire once and would be stopped once, after the grace; the idle subscription fires but a
    # stop saves nothing on it; the trainer never fires
    assert (tally["fired"], tally["stopped"], tally["instances_stopped"]) == (3, 2, 2), tally
    assert any(
        "stop-idle-gpus would have fired 3 times and stopped 2 instances" in x for x in lines
    )
    # saving: each at its hourly price ($0.35) for the steps after its would-be stop in which it
    # still ran: the notebook ran 5 h before the start, the other 2 h, both 3 h after; each
    # stop comes an hour (window and grace) after its first sample
    assert tally["saving_usd"] == pytest.approx(0.35 * (5 + 3 - 1 + 2 + 3 - 1), abs=0.1)
    assert out["evaluations"] > 24
    # without --rules it says what is missing
    bare = CliRunner(env=ENV).invoke(
        cli, ["backtest", "--from-db", "--config", str(tmp_path / "novita-monitor.yaml")]
    )
    assert bare.exit_code != 0 and "--from-db needs --rules PATH" in bare.output
