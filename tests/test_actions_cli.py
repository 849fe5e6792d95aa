"""The ledger's commands through click's runner: ``plan`` (a dry run over the stored data),
``actions`` (the ledger and its savings), ``approve``, ``reject``, ``undo``; ``status``'s savings;
``silence add``'s warning. A database filled by an in-process ``App.once()`` over the demo
simulator; ledger rows come from the planner as the evaluation will write them."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from monitor.actions import STOP_IDLE_GPUS
from monitor.actions.plan import plan_actions
from monitor.app import intervals, load_ruleset
from monitor.cli import cli
from monitor.clock import ManualClock
from monitor.config import Config, shipped_rules_dir
from monitor.evaluate import to_state
from monitor.facts import StoreFacts
from monitor.rules import evaluate
from monitor.status import fleet_status, render_text
from monitor.store import Store
from monitor.store.db import open_store
from monitor.store.models import LISTED_FIELDS, ActionRecord
from tests.helpers import ENV, open_app, write_config

RULES = (
    STOP_IDLE_GPUS
    + """\
  - name: renew-used
    resource: instance
    when: {expiring_subscription: {within: 7d, min_util: 20}}
    actions:
      - renew: {months: 1}
"""
)


@pytest.fixture
def extra(tmp_path: Path) -> str:
    (tmp_path / "act.yaml").write_text(RULES)
    return f"rules: [{shipped_rules_dir()}, act.yaml]\nactions: {{min_runway_after_charge: 1h}}\n"


@pytest.fixture
def rich(demo_sim: Any) -> None:
    """$5,000 more on the demo account: a renewal then leaves a runway."""
    demo_sim.top_up(5000 * 10_000)


@pytest.fixture
def config(tmp_path: Path, extra: str) -> Path:
    return write_config(tmp_path, extra=extra)


def run(config: Path, clock: ManualClock, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--config", str(config)], obj={"clock": clock})


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def collect_only(tmp_path: Path, sim_app: Any, clock: ManualClock, extra: str) -> None:
    async def go() -> None:
        app = open_app(tmp_path, sim_app, clock, extra=extra)
        try:
            await app.collect(None)
        finally:
            await app.aclose()

    asyncio.run(go())


def once(tmp_path: Path, sim_app: Any, clock: ManualClock, extra: str) -> None:
    async def go() -> None:
        app = open_app(tmp_path, sim_app, clock, extra=extra)
        try:
            await app.once(None)
        finally:
            await app.aclose()

    asyncio.run(go())


def store_of(config: Path) -> Store:
    return open_store(Config.load(config, env=ENV).database_url)


def plan_into_ledger(config: Path, clock: ManualClock) -> list[ActionRecord]:
    """What the evaluation does with the planner (engineer A's integration): plan, insert."""
    cfg = Config.load(config, env=ENV)
    rules = load_ruleset(cfg)
    now = clock.now()
    store = store_of(config)
    try:
        facts = StoreFacts(store, ["main"], intervals(cfg), cfg.stale_after, now=now)
        states = {r.fingerprint: to_state(r) for r in store.load_alerts()}
        result = evaluate(rules, facts, now, states)
        rows, _ = plan_actions(
            result, facts, now, ruleset=rules, settings=cfg.actions, held=store.held_intents
        )
        store.insert_actions(rows)
        return store.actions("main")
    finally:
        store.close()


def test_plan_shows_what_the_rules_would_do_and_records_nothing(
    rich: None, tmp_path: Path, sim_app: Any, clock: ManualClock, config: Path, extra: str
) -> None:
    collect_only(tmp_path, sim_app, clock, extra)  # no evaluation yet: nothing planned
    data = as_json(run(config, clock, "plan", "--json"))
    plan = {(r["rule"], r["instance_id"]): r for r in data["plan"]}
    notebook = plan[("stop-idle-gpus", "demo-notebook")]
    assert notebook["would"] == "stop" and notebook["due_at"] == "2026-11-20T12:15:00Z"
    assert notebook["reason"].startswith(
        "stop at 12:15 UTC unless it becomes busy (saves $0.35/h), because GPU use at most 2%"
        " (under 5%) over 45 min, idle for 300 min ($1.75 so far) | stop-idle-gpus: instance"
    )
    assert notebook["facts"]["instance"]["billing_mode"] == "onDemand"
    assert notebook["facts"]["values"]["kind"] == "idle_gpu" and not notebook["in_ledger"]
    lapsing = plan[("stop-idle-gpus", "demo-lapsing")]  # an idle subscription
    assert lapsing["would"] == "refuse" and "saves nothing on prepaid time" in lapsing["reason"]
    assert ("stop-idle-gpus", "demo-trainer") not in plan  # busy
    renew = plan[("renew-used", "demo-subscription")]
    assert renew["would"] == "renew" and renew["facts"]["money"]["months"] == 1
    assert "awaits approval" in renew["reason"]
    assert data["data_as_of"]["main"]["instances"] == "2026-11-20T12:00:00Z"
    text = run(config, clock, "plan")
    assert text.exit_code == 0, text.output
    assert "account main: data as of instances 2026-11-20 12:00 UTC (now)" in text.output
    assert "STOP     stop jupyter-notebook (demo-notebook) at 2026-11-20 12:15 UTC" in text.output
    assert "from: status running, billing onDemand" in text.output
    with_store = store_of(config)
    try:
        assert with_store.actions("main") == []  # a dry run over the stored data
    finally:
        with_store.close()
    # once the daemon planned it, plan says so
    plan_into_ledger(config, clock)
    again = as_json(run(config, clock, "plan", "--json"))
    assert all(r["in_ledger"] for r in again["plan"] if r["would"] != "refuse")


def test_plan_without_rules_with_actions_says_how_to_start(
    tmp_path: Path, clock: ManualClock
) -> None:
    bare = write_config(tmp_path)
    result = run(bare, clock, "plan")
    assert result.exit_code == 0 and "no rule asks for actions" in result.output


def test_actions_approve_reject_undo_and_the_savings(
    rich: None, tmp_path: Path, sim_app: Any, clock: ManualClock, config: Path, extra: str
) -> None:
    once(tmp_path, sim_app, clock, extra)
    rows = plan_into_ledger(config, clock)
    by = {(r.rule, r.instance_id): r for r in rows}
    renew = by[("renew-used", "demo-subscription")]
    notebook = by[("stop-idle-gpus", "demo-notebook")]
    error = by[("stop-idle-gpus", "demo-error")]
    assert renew.state == "awaiting_approval" and notebook.state == "announced"

    listed = as_json(run(config, clock, "actions", "--json"))
    assert [r["id"] for r in listed["actions"]] == sorted(
        (r.id for r in rows), reverse=True
    )  # newest first
    assert listed["savings"]["total"] == {"expected_usd_per_hour": 0.0, "realized_usd": 0.0}

    text = run(config, clock, "actions").output
    assert f"approve: novita-monitor approve {renew.id} (or reject {renew.id}); expires" in text
    assert "due: 2026-11-20 12:15 UTC (in 15m)" in text  # the announced stops

    # approve
    ok = run(config, clock, "approve", str(renew.id))
    assert ok.exit_code == 0 and f"action #{renew.id} approved" in ok.output
    twice = run(config, clock, "approve", str(renew.id))
    assert twice.exit_code == 2 and "is approved, not awaiting approval" in twice.output
    assert run(config, clock, "approve", "nope").exit_code == 2
    missing = run(config, clock, "approve", "999")
    assert missing.exit_code == 2 and "no action #999" in missing.output

    # reject an announced stop; then it cannot be undone (nothing was done)
    no = run(config, clock, "reject", str(error.id))
    assert no.exit_code == 0 and "rejected" in no.output
    rejected_twice = run(config, clock, "reject", str(error.id))
    assert rejected_twice.exit_code == 2 and "is rejected: only a planned" in rejected_twice.output
    undo_rejected = run(config, clock, "undo", str(error.id))
    assert undo_rejected.exit_code == 2 and "nothing was done" in undo_rejected.output
    undo_open = run(config, clock, "undo", str(notebook.id))
    assert (
        undo_open.exit_code == 2
        and f"reject it instead (novita-monitor reject {notebook.id})" in undo_open.output
    )

    # the stop executes (what the act step records), then 2 hours pass
    store = store_of(config)
    try:
        now = clock.now()
        row = store.action(int(notebook.id or 0))
        assert row is not None
        claimed = store.claim(row, "test", now)
        assert claimed is not None
        done = store.transition(claimed, "succeeded", now, saving_since=now, answer={})
        assert done is not None
    finally:
        store.close()
    clock.advance(2 * 3600)
    listed = as_json(run(config, clock, "actions", "--json"))
    saved = listed["savings"]["rules"]["stop-idle-gpus"]
    assert saved == {"expected_usd_per_hour": 0.35, "realized_usd": 0.7}
    assert listed["savings"]["total"] == saved
    shown = next(r for r in listed["actions"] if r["id"] == notebook.id)
    assert shown["state"] == "succeeded" and shown["saved_usd"] == 0.7
    text = run(config, clock, "actions")
    assert "savings stop-idle-gpus: $0.35/h now, $0.70 realized" in text.output
    assert f"approve: novita-monitor approve {renew.id}" not in text.output  # approved already
    cfg = Config.load(config, env=ENV)
    store = store_of(config)
    try:  # status (its command reads the system clock: called with ours here)
        status = fleet_status(store, ["main"], clock.now(), intervals(cfg), cfg.stale_after)
    finally:
        store.close()
    assert status["accounts"][0]["savings"] == {"expected_usd_per_hour": 0.35, "realized_usd": 0.7}
    assert "savings: $0.35/h now, $0.70 realized" in render_text(status)

    # undo: a start is planned, the stop is marked undone
    cannot = run(config, clock, "undo", str(renew.id))
    assert cannot.exit_code == 2 and "is approved, not done yet" in cannot.output
    back = run(config, clock, "undo", str(notebook.id))
    assert back.exit_code == 2 and "is running again already" in back.output  # stored listing
    store = store_of(config)
    try:
        rec = store.instance("main", "demo-notebook")
        assert rec is not None
        row = {name: getattr(rec, name) for name in LISTED_FIELDS}
        row.update(instance_id=rec.instance_id, status="exited")
        store.upsert_instances("main", [row], clock.now(), complete=False)
    finally:
        store.close()
    back = run(config, clock, "undo", str(notebook.id))
    assert back.exit_code == 0, back.output
    assert (
        f"action #{notebook.id} undone: start of jupyter-notebook (demo-notebook) planned"
        in back.output
    )
    listed = as_json(run(config, clock, "actions", "--json"))
    start = listed["actions"][0]
    assert (start["action"], start["state"], start["instance_id"]) == (
        "start",
        "planned",
        "demo-notebook",
    )
    assert start["reason"].startswith(f"undo of #{notebook.id} (stop)")
    undone = next(r for r in listed["actions"] if r["id"] == notebook.id)
    assert undone["state"] == "undone" and f"undone by #{start['id']}" in undone["reason"]
    again = run(config, clock, "undo", str(notebook.id))
    assert again.exit_code == 2 and "is undone already: " in again.output
    assert f"undone by #{start['id']}" in again.output


def test_an_approval_past_its_ttl_expires(
    rich: None, tmp_path: Path, sim_app: Any, clock: ManualClock, config: Path, extra: str
) -> None:
    once(tmp_path, sim_app, clock, extra)
    rows = plan_into_ledger(config, clock)
    renew = next(r for r in rows if r.action == "renew")
    assert renew.expires_at == clock.now() + timedelta(hours=24)
    clock.advance(25 * 3600)
    late = run(config, clock, "approve", str(renew.id))
    assert late.exit_code == 2 and "expired at 2026-11-21 12:00 UTC" in late.output
    listed = as_json(run(config, clock, "actions", "--json", "--all"))
    assert next(r for r in listed["actions"] if r["id"] == renew.id)["state"] == "expired"


def test_a_renewal_cannot_be_undone(
    rich: None, tmp_path: Path, sim_app: Any, clock: ManualClock, config: Path, extra: str
) -> None:
    once(tmp_path, sim_app, clock, extra)
    rows = plan_into_ledger(config, clock)
    renew = next(r for r in rows if r.action == "renew")
    store = store_of(config)
    try:
        claimed = store.claim(renew, "test", clock.now())
        assert claimed is not None
        assert store.transition(claimed, "succeeded", clock.now(), answer={}) is not None
    finally:
        store.close()
    result = run(config, clock, "undo", str(renew.id))
    assert result.exit_code == 2 and "a renewal is paid: it cannot be undone" in result.output


def test_silence_add_warns_about_an_unknown_instance(
    tmp_path: Path, sim_app: Any, clock: ManualClock, config: Path, extra: str
) -> None:
    once(tmp_path, sim_app, clock, extra)
    args = ("silence", "add", "--rule", "stop-idle-gpus", "--for", "1h", "--reason", "keep")
    typo = CliRunner().invoke(
        cli, [*args, "--instance", "demo-notebok", "--config", str(config)], obj={"clock": clock}
    )
    assert typo.exit_code == 0  # added anyway: the instance may appear later
    assert "silence #1 added" in typo.stdout
    assert "warning: no known instance, task or account matches 'demo-notebok'" in typo.stderr
    for known in ("demo-notebook", "demo-note*", "main"):
        fine = CliRunner().invoke(
            cli, [*args, "--instance", known, "--config", str(config)], obj={"clock": clock}
        )
        assert fine.exit_code == 0 and "warning" not in fine.stderr, fine.stderr


def test_a_silence_holds_the_stop(
    tmp_path: Path, sim_app: Any, clock: ManualClock, config: Path, extra: str
) -> None:
    once(tmp_path, sim_app, clock, extra)
    hold = run(
        config,
        clock,
        *("silence", "add", "--rule", "stop-idle-gpus", "--instance", "demo-notebook"),
        *("--for", "1d", "--reason", "keep it"),
    )
    assert hold.exit_code == 0
    data = as_json(run(config, clock, "plan", "--json"))
    held = {r["instance_id"] for r in data["plan"] if r["rule"] == "stop-idle-gpus"}
    assert "demo-notebook" not in held and "demo-error" in held
