"""A real process killed with SIGKILL between an action's intent and its outcome, then a second
process: the simulator (on a real socket) receives the renewal once, or not at all, and never
twice; the ledger row is reconciled by reading the instance.

The crash comes from the test-only hook ``NOVITA_MONITOR_TEST_CRASH_AFTER`` (``claim``: after the
claim is committed, before the POST; ``call``: after the POST was answered, before the outcome is
recorded). The processes run one act step each (``App.act``), as the daemon's act job does;
the same crash of the daemon itself (``run --clock``, killed, restarted) is
``tests/test_remedies_e2e.py::test_the_daemon_killed_between_intent_and_outcome_of_a_renew_pays_at_most_once``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from monitor.app import App
from monitor.clock import ManualClock
from monitor.config import Config
from monitor.sim import SimServer
from tests.helpers import ENV, write_config
from tests.test_act import RICH, SUBSCRIPTION, plan, posts, row, rules_extra

CHILD = """
import json, sys
from monitor.app import App, run_async
from monitor.config import Config
import os

async def main():
    app = App.open(Config.load(sys.argv[1], env=os.environ), env=os.environ)
    try:
        report = await app.act()
    finally:
        await app.aclose()
    print(json.dumps([[o.action_id, o.state] for o in report.outcomes]))

run_async(main())
"""


def act_process(config: Path, crash_after: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NOVITA_MONITOR_TEST_CRASH_AFTER"}
    env.update(ENV)
    if crash_after:
        env["NOVITA_MONITOR_TEST_CRASH_AFTER"] = crash_after
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("crash_after, renewals", [("call", 1), ("claim", 0)])
async def test_sigkill_between_intent_and_outcome_of_a_renew_pays_at_most_once(
    tmp_path: Path,
    sim_server: SimServer,
    clock: ManualClock,
    crash_after: str,
    renewals: int,
) -> None:
    sim = sim_server.sim
    sim.top_up(RICH)
    path = write_config(tmp_path, base_url=sim_server.url, extra=rules_extra(tmp_path))
    app = App.open(Config.load(path, env=ENV), clock, env=ENV)
    try:
        await app.collect()
        row_id = await plan(app, "renew", SUBSCRIPTION, clock.now(), rule="renew-subscriptions")

        crashed = act_process(path, crash_after)
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
        assert row(app, row_id).state == "executing"  # the intent, no outcome
        assert len(posts(sim, "renewInstance")) == renewals

        again = act_process(path)
        assert again.returncode == 0, again.stderr[-2000:]
        moved = dict(json.loads(again.stdout.strip().splitlines()[-1]))
        final = row(app, row_id)
        # the restart reconciled it by reading (the dead claimant is seen at once)
        expected = "succeeded" if renewals else "outcome_unknown"
        assert moved == {row_id: expected} and final.state == expected
        if renewals:
            assert final.answer["reconciled"] is True
        async with httpx.AsyncClient(base_url=sim_server.url) as http:
            log = (await http.get("/_sim/actions")).json()["actions"]
        assert [a["path"] for a in log].count("renewInstance") == renewals

        third = act_process(path)  # and never called again afterwards
        assert third.returncode == 0, third.stderr[-2000:]
        assert len(posts(sim, "renewInstance")) == renewals
    finally:
        await app.aclose()
