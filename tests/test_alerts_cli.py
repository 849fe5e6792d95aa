"""The alert-facing commands (``alerts``, ``silence``, ``notify-test``) through click's runner,
against a real database file that an in-process ``App.once()`` over the simulator filled.

Time: the commands take their clock from click's context object, so the tests hand them the same
ManualClock the simulator and the App use; silences then start and expire in simulated time.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from monitor.cli import cli
from monitor.clock import ManualClock
from monitor.store.db import open_store
from monitor.store.records import AlertRecord
from tests.helpers import ENV, open_app, write_config
from tests.receivers import JsonSink

QUICK = ["instances", "metrics", "balance", "training_tasks"]


def channels(url: str) -> str:
    return f'channels:\n  ops: "{url}"\ndefault_channels: [ops]\n'


def run(config: Path, clock: ManualClock, *args: str, env: dict[str, str] | None = None) -> Result:
    """One command, its clock (and environment for channel URLs) injected."""
    argv = [*args, "--config", str(config)]
    return CliRunner().invoke(cli, argv, obj={"clock": clock, "env": env or ENV})


def once(tmp_path: Path, sim_app: Any, clock: ManualClock, extra: str, names: Any = None) -> Any:
    async def go() -> Any:
        app = open_app(tmp_path, sim_app, clock, extra=extra)
        try:
            return await app.once(names)
        finally:
            await app.aclose()

    return asyncio.run(go())


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def sink() -> Any:
    with JsonSink() as s:
        yield s


@pytest.fixture
def config(tmp_path: Path, sink: JsonSink) -> Path:
    return write_config(tmp_path, extra=channels(sink.url))


# ---------------------------------------------------------------------------------------------
# alerts


def test_alerts_lists_what_fires(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink, config: Path
) -> None:
    once(tmp_path, sim_app, clock, channels(sink.url))
    rows = as_json(run(config, clock, "alerts", "--json"))
    fired = {(r["rule"], r["resource_id"]) for r in rows}
    assert ("idle-gpu", "demo-notebook") in fired
    assert ("idle-gpu", "demo-trainer") not in fired
    assert {("balance-runway", "main"), ("subscription-expiring-idle", "demo-lapsing")} <= fired
    assert any(rule == "failed-task" for rule, _ in fired)
    notebook = next(r for r in rows if r["resource_id"] == "demo-notebook")
    assert notebook == {
        **notebook,
        "state": "firing",
        "severity": "warning",
        "account": "main",
        "resource_kind": "instance",
        "resource_name": "jupyter-notebook",
        "since": "2026-11-20T12:00:00Z",
        "silenced": False,
        "silenced_by": [],
    }
    assert "$0.35/h" in notebook["summary"]
    assert all(r["state"] == "firing" for r in rows)
    # most urgent first: severities never increase down the list
    ranks = {"critical": 3, "warning": 2, "info": 1}
    assert [ranks[r["severity"]] for r in rows] == sorted(
        (ranks[r["severity"]] for r in rows), reverse=True
    )

    clock.advance(90 * 60)
    text = run(config, clock, "alerts")
    assert text.exit_code == 0, text.output
    line = next(x for x in text.output.splitlines() if "demo-notebook" in x)
    assert line.startswith("firing") and "idle-gpu" in line and "(jupyter-notebook)" in line
    assert "since 2026-11-20 12:00 UTC (1h30m ago)" in line
    assert f"{len(rows)} firing, 0 pending, 0 resolved" in text.output


def test_alerts_shows_recently_resolved_and_all_with_the_flag(
    tmp_path: Path, clock: ManualClock, config: Path
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'monitor.db'}")
    now = clock.now()
    try:
        store.ensure_account("main")
        store.save_alerts(
            [
                AlertRecord(
                    fingerprint=f"fp-{rid}",
                    rule="idle-gpu",
                    account="main",
                    resource_kind="instance",
                    resource_id=rid,
                    state="resolved",
                    severity="warning",
                    active_since=now - timedelta(days=3),
                    firing_since=now - timedelta(days=3),
                    resolved_at=now - ago,
                    summary=f"{rid} was idle",
                )
                for rid, ago in (("i-recent", timedelta(hours=2)), ("i-old", timedelta(hours=30)))
            ]
        )
    finally:
        store.close()
    recent = as_json(run(config, clock, "alerts", "--json"))
    assert [(r["resource_id"], r["state"]) for r in recent] == [("i-recent", "resolved")]
    assert recent[0]["since"] == "2026-11-20T10:00:00Z"
    every = as_json(run(config, clock, "alerts", "--json", "--all"))
    assert {r["resource_id"] for r in every} == {"i-recent", "i-old"}
    (tmp_path / "empty").mkdir()
    result = run(write_config(tmp_path / "empty"), clock, "alerts")
    assert result.exit_code == 0 and "no alerts" in result.output


def test_alerts_json_through_the_installed_command(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink, config: Path
) -> None:
    """The real entry point: stdout carries only the JSON list (logs, if any, go to stderr)."""
    once(tmp_path, sim_app, clock, channels(sink.url))
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "alerts", "--config", str(config), "--json", "--all"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert ("idle-gpu", "demo-notebook") in {(r["rule"], r["resource_id"]) for r in rows}


# ---------------------------------------------------------------------------------------------
# silences


def test_silence_add_list_remove_round_trip(clock: ManualClock, config: Path) -> None:
    added = run(
        config,
        clock,
        "silence",
        "add",
        "--rule",
        "subscription-*",
        "--instance",
        "demo-lapsing",
        "--for",
        "2h",
        "--reason",
        "letting it lapse",
    )
    assert added.exit_code == 0, added.output
    assert "silence #1 added" in added.output and "2026-11-20 14:00 UTC" in added.output
    listed = as_json(run(config, clock, "silence", "list", "--json"))
    assert listed == [
        {
            "id": 1,
            "state": "active",
            "rule": "subscription-*",
            "account": None,
            "resource_id": "demo-lapsing",
            "starts_at": "2026-11-20T12:00:00Z",
            "ends_at": "2026-11-20T14:00:00Z",
            "created_at": "2026-11-20T12:00:00Z",
            "reason": "letting it lapse",
        }
    ]
    text = run(config, clock, "silence", "list")
    assert "#1" in text.output and "letting it lapse" in text.output

    # it expires on its own: gone from the list, still there with --all
    clock.advance(2 * 3600)
    assert as_json(run(config, clock, "silence", "list", "--json")) == []
    expired = as_json(run(config, clock, "silence", "list", "--json", "--all"))
    assert [(s["id"], s["state"]) for s in expired] == [(1, "expired")]

    removed = run(config, clock, "silence", "remove", "1")
    assert removed.exit_code == 0 and "silence #1 removed" in removed.output
    assert as_json(run(config, clock, "silence", "list", "--json", "--all")) == []
    again = run(config, clock, "silence", "remove", "1")
    assert again.exit_code == 2
    assert "no silence #1" in again.output


def test_a_silenced_alert_fires_quietly_until_its_silence_expires(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink, config: Path
) -> None:
    extra = channels(sink.url)
    added = run(
        config,
        clock,
        *("silence", "add", "--rule", "idle-gpu", "--instance", "demo-note*"),
        *("--for", "30m", "--reason", "benchmarking tonight"),
    )
    assert added.exit_code == 0, added.output

    first = once(tmp_path, sim_app, clock, extra)
    assert ("idle-gpu", "demo-notebook") in {(a.rule, a.resource_id) for a in first.cycle.firing}
    assert len(sink.bodies) == 1
    message = sink.bodies[0]["message"]
    assert "demo-error" in message  # the other idle instance is not silenced
    assert "demo-notebook" not in message
    rows = as_json(run(config, clock, "alerts", "--json"))
    notebook = next(r for r in rows if r["resource_id"] == "demo-notebook")
    assert notebook["state"] == "firing" and notebook["silenced_by"] == [1]

    def idle_messages() -> list[str]:
        # other alerts (the instance in `pending` gets stuck meanwhile) have their own messages
        return [b["message"] for b in sink.bodies if "idle-gpu" in b["message"]]

    clock.advance(29 * 60)  # still silenced: nothing new about idle GPUs
    once(tmp_path, sim_app, clock, extra, QUICK)
    assert len(idle_messages()) == 1

    clock.advance(60)  # 30 minutes: the silence has ended, the held-back notice goes out once
    once(tmp_path, sim_app, clock, extra, QUICK)
    assert len(idle_messages()) == 2
    late = idle_messages()[1]
    assert "jupyter-notebook (demo-notebook)" in late and "demo-error" not in late
    notebook = next(
        r for r in as_json(run(config, clock, "alerts", "--json")) if r["rule"] == "idle-gpu"
    )
    assert notebook["silenced"] is False

    clock.advance(60)
    once(tmp_path, sim_app, clock, extra, QUICK)
    assert len(idle_messages()) == 2


# ---------------------------------------------------------------------------------------------
# notify-test


def test_notify_test_reaches_a_real_receiver(
    tmp_path: Path, clock: ManualClock, sink: JsonSink
) -> None:
    config = write_config(
        tmp_path,
        extra="channels:\n  ops: {url_env: OPS_URL}\n  other: {url_env: UNSET_URL}\n",
    )
    result = run(config, clock, "notify-test", "--channel", "ops", env={**ENV, "OPS_URL": sink.url})
    assert result.exit_code == 0, result.output
    assert "test message delivered to channel 'ops'" in result.output
    (body,) = sink.bodies
    assert body["title"] == "[test] novita-monitor: notification test"
    assert "channel 'ops' (json)" in body["message"]
    assert "2026-11-20 12:00:00 UTC" in body["message"]
    store = open_store(f"sqlite:///{tmp_path / 'monitor.db'}")
    try:
        (note,) = store.notifications()
    finally:
        store.close()
    assert (note.kind, note.channel, note.status) == ("test", "ops", "sent")

    # a channel whose URL variable is unset: exit 2 naming the variable, nothing sent
    unset = run(config, clock, "notify-test", "--channel", "other")
    assert unset.exit_code == 2
    assert "environment variable UNSET_URL is not set" in unset.output
    assert len(sink.bodies) == 1


def test_notify_test_to_the_console(tmp_path: Path, clock: ManualClock) -> None:
    result = run(write_config(tmp_path), clock, "notify-test", "--channel", "console")
    assert result.exit_code == 0, result.output
    assert "[test] novita-monitor: notification test" in result.stdout
    assert "channel 'console' (console)" in result.stdout


def test_notify_test_failure_exits_1_without_the_secret(
    tmp_path: Path, clock: ManualClock, sink: JsonSink
) -> None:
    secret = "pw-Zq81secret"
    url = f"json://bot:{secret}@127.0.0.1:{sink.port}/hook"
    config = write_config(tmp_path, extra="channels:\n  ops: {url_env: OPS_URL}\n")
    sink.fail_next(1, status=500)
    result = run(config, clock, "notify-test", "--channel", "ops", env={**ENV, "OPS_URL": url})
    assert result.exit_code == 1
    assert "test message to channel 'ops' failed" in result.output
    assert "Traceback" not in result.output
    assert secret not in result.output
    assert [r.status for r in sink.requests] == [500]  # one attempt, no retries
    assert sink.bodies == []


# ---------------------------------------------------------------------------------------------
# bad input: exit 2, one message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("silence", "add", "--rule", "idle-gpus", "--for", "2h", "--reason", "x"),
            "no loaded rule matches 'idle-gpus' (loaded: balance-runway, failed-task, idle-gpu,",
        ),
        (
            ("silence", "add", "--rule", "nothing-*", "--for", "2h", "--reason", "x"),
            "no loaded rule matches 'nothing-*'",
        ),
        (
            ("silence", "add", "--rule", "idle-gpu", "--for", "2 hours", "--reason", "x"),
            "--for: '2 hours' is not a duration",
        ),
        (
            ("silence", "add", "--rule", "idle-gpu", "--for", "0", "--reason", "x"),
            "must last longer than 0",
        ),
        (("silence", "add", "--rule", "idle-gpu", "--reason", "x"), "Missing option '--for'"),
        (
            (
                "silence",
                "add",
                "--rule",
                "idle-gpu",
                "--for",
                "1h",
                "--reason",
                "x",
                "--account",
                "b",
            ),
            "no account named 'b' (configured: main)",
        ),
        (("silence", "remove", "abc"), "silence id must be a number"),
        (("silence", "remove", "42"), "no silence #42"),
        (
            ("notify-test", "--channel", "pager"),
            "no channel named 'pager' (configured: ops, console)",
        ),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    clock: ManualClock, config: Path, args: tuple[str, ...], message: str
) -> None:
    result = run(config, clock, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_missing_config_file_exits_2(tmp_path: Path, clock: ManualClock) -> None:
    result = run(tmp_path / "nope.yaml", clock, "alerts")
    assert result.exit_code == 2
    assert "nope.yaml" in result.output and "Traceback" not in result.output


def test_monitor_rule_is_silenceable_even_when_not_in_the_files(
    tmp_path: Path, clock: ManualClock
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: only-one\n    resource: account\n"
        "    when: {low_balance: {levels: [{usd: 5, severity: warning}]}}\n    severity: warning\n"
    )
    config = write_config(tmp_path, extra=f"rules: [{rules}]\n")
    ok = run(
        config, clock, "silence", "add", "--rule", "monitor-*", "--for", "1d", "--reason", "maint"
    )
    assert ok.exit_code == 0, ok.output
    bad = run(config, clock, "silence", "add", "--rule", "idle-gpu", "--for", "1d", "--reason", "x")
    assert bad.exit_code == 2
    assert "(loaded: monitor-cannot-see-account, only-one)" in bad.output
