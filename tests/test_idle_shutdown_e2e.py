"""Automatic idle shutdown end to end (issue 9 §8): the real daemon process, on the real
simulator's clock (``run --clock``, ``--speed 60``: a simulated minute is a wall second), with the
README's canonical rule. The forgotten notebook is announced, then stopped after its 15-minute
grace; the busy trainer never is; the ledger explains the stop (rule, figures, the API's answer)
and the simulator received exactly one stop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx

from tests.helpers import API_KEY, Process, query

RULE = """\
rules:
  - name: stop-idle-gpus
    resource: instance
    when: {idle_gpu: {window: 45m, threshold: 5}}
    actions:
      - stop: {grace: 15m}
"""


def test_the_daemon_stops_the_forgotten_notebook_after_its_grace_and_never_the_trainer(
    tmp_path: Path,
) -> None:
    sim = Process(["simulator", "--port", "0", "--speed", "60", "--scenario", "demo"])
    daemon = None
    try:
        sim.wait_for("the simulator", lambda: any("listening on" in x for x in sim.lines), 30)
        url = next(x for x in sim.lines if "listening on" in x).split("listening on ")[1]
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULE)
        db = tmp_path / "monitor.db"
        config = tmp_path / "config.yaml"
        config.write_text(
            "accounts:\n  - name: main\n    api_key_env: NOVITA_API_KEY\n"
            f"    base_url: {url}\n"
            f"database: sqlite:///{db}\nlog: {{format: json}}\nrules: [{rules}]\n"
        )
        daemon = Process(
            ["run", "--config", str(config), "--clock", f"{url}/_sim/clock"],
            {**os.environ, "NOVITA_API_KEY": API_KEY},
        )

        def rows(instance: str) -> list[tuple[str, ...]]:
            return query(
                db,
                "SELECT state, action, rule, reason, answer, facts, planned_at, due_at "
                f"FROM actions WHERE instance_id = '{instance}' ORDER BY id",
            )

        # announced at the first evaluation (idle for hours), due 15 simulated minutes later
        daemon.wait_for("the announced stop", lambda: bool(rows("demo-notebook")), 60)
        first = rows("demo-notebook")[0]
        assert first[1:3] == ("stop", "stop-idle-gpus")
        assert first[0] in ("announced", "executing", "succeeded")
        # 15 simulated minutes of grace are ~15 wall seconds
        daemon.wait_for(
            "the stop", lambda: any(r[0] == "succeeded" for r in rows("demo-notebook")), 90
        )
        (done,) = [r for r in rows("demo-notebook") if r[0] == "succeeded"]
        _state, _action, _rule, reason, answer, facts, planned_at, due_at = done
        assert "GPU" in reason and "idle" in reason  # why, with the figures
        assert json.loads(facts)["instance"]["billing_mode"] == "onDemand"
        assert json.loads(answer) is not None  # what the API answered
        assert due_at > planned_at
        log = httpx.get(f"{url}/_sim/actions").json()["actions"]
        stops = [a for a in log if "stop" in str(a.get("path", ""))]
        stopped = [a for a in stops if a.get("performed") and "demo-notebook" in json.dumps(a)]
        assert len(stopped) == 1  # exactly one call, after the grace
        assert not any("demo-trainer" in json.dumps(a) for a in stops)  # busy: never
        assert rows("demo-trainer") == []
        assert daemon.stop() == 0
    finally:
        if daemon is not None:
            daemon.stop()
        sim.stop()
