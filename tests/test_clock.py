"""One clock (issue 9 §2): the daemon follows the simulator's clock (``run --clock URL``, a
test-and-demo option), so a rule with a 30-minute window fires after 30 simulated minutes,
which at ``--speed 60`` is half a wall minute; and the clock that makes it possible."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from monitor.cli import cli
from monitor.clock import FollowedClock, ManualClock, ScaledClock, read_clock
from monitor.sim import FleetSim, SimServer, create_app
from tests.helpers import API_KEY, Process, query

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_a_followed_clock_runs_at_its_speed_and_never_backwards() -> None:
    wall = ManualClock(T0)
    sim_now = datetime(2026, 1, 1, tzinfo=UTC)
    clock = FollowedClock(sim_now, 60, base=wall)
    assert clock.now() == sim_now and clock.speed == 60
    wall.advance(1.5)
    assert clock.now() == sim_now + timedelta(seconds=90)
    # a reading moved by hand (the simulator advanced an hour) is followed
    clock.sync(sim_now + timedelta(hours=1), 60)
    assert clock.now() == sim_now + timedelta(hours=1)
    wall.advance(1)
    assert clock.now() == sim_now + timedelta(hours=1, minutes=1)
    # a late reading (behind what was given out) does not move time backwards
    clock.sync(sim_now + timedelta(minutes=30), 60)
    assert clock.now() == sim_now + timedelta(hours=1, minutes=1)
    wall.advance(31 * 60 / 60 + 1)  # 32 simulated minutes later: past the old reading again
    assert clock.now() == sim_now + timedelta(hours=1, minutes=2)
    with pytest.raises(ValueError, match="speed > 0"):
        FollowedClock(sim_now, 0)


@pytest.fixture
def fast_sim() -> Iterator[SimServer]:
    with SimServer(create_app(FleetSim(ScaledClock(60.0), scenario="demo", seed=0))) as server:
        yield server


def test_the_simulator_tells_its_clock_and_speed(
    fast_sim: SimServer, sim_server: SimServer
) -> None:
    now, speed = read_clock(f"{fast_sim.url}/_sim/clock")
    assert speed == 60.0
    assert abs((now - fast_sim.sim.clock.now()).total_seconds()) < 60  # a second of wall time
    # a simulator on a manual clock has no speed: its time cannot be followed
    body = httpx.get(f"{sim_server.url}/_sim/clock").json()
    assert body["speed"] is None and body["now"] == T0.isoformat()
    with pytest.raises(ValueError, match="does not run on its own"):
        read_clock(f"{sim_server.url}/_sim/clock")
    with pytest.raises(ValueError, match="cannot read the clock"):
        read_clock(f"{fast_sim.url}/_sim/nothing-here")


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://example.com/_sim/clock", "example.com is not this machine"),
        ("ftp://127.0.0.1/_sim/clock", "is not an http URL"),
    ],
)
def test_run_clock_must_be_a_local_simulator(tmp_path: Path, url: str, message: str) -> None:
    result = CliRunner().invoke(cli, ["run", "--clock", url, "--config", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert message in result.output


IDLE_RULE = """rules:
  - name: idle-30m
    resource: instance
    when: {idle_gpu: {window: 30m, threshold: 5}}
    severity: info
"""


def test_the_daemon_on_the_simulators_clock_fires_a_30_minute_window_in_seconds(
    tmp_path: Path,
) -> None:
    """The real daemon process against the real simulator process at --speed 60."""
    sim = Process(["simulator", "--port", "0", "--speed", "60", "--scenario", "demo"])
    daemon = None
    try:
        sim.wait_for("the simulator", lambda: any("listening on" in x for x in sim.lines), 30)
        url = next(x for x in sim.lines if "listening on" in x).split("listening on ")[1]
        rules = tmp_path / "rules.yaml"
        rules.write_text(IDLE_RULE)
        db = tmp_path / "monitor.db"
        config = tmp_path / "config.yaml"
        config.write_text(
            "accounts:\n  - name: main\n    api_key_env: NOVITA_API_KEY\n"
            f"    base_url: {url}\n"
            f"database: sqlite:///{db}\nlog: {{format: json}}\nrules: [{rules}]\n"
        )
        # the busy trainer goes idle now; the rule needs 30 idle minutes to fire
        httpx.post(
            f"{url}/_sim/profile", json={"instance_id": "demo-trainer", "profile": "idle"}
        ).raise_for_status()
        switched = datetime.fromisoformat(httpx.get(f"{url}/_sim/clock").json()["now"])
        started = time.monotonic()
        daemon = Process(
            ["run", "--config", str(config), "--clock", f"{url}/_sim/clock"],
            {**os.environ, "NOVITA_API_KEY": API_KEY},
        )

        def firing(resource: str) -> list[tuple[str, str]]:
            return query(
                db,
                "SELECT firing_since, state FROM alerts WHERE rule = 'idle-30m' "
                f"AND resource_id = '{resource}'",
            )

        # the forgotten notebook has been idle for hours: it fires at the first evaluation
        daemon.wait_for("the notebook's alert", lambda: bool(firing("demo-notebook")), 60)
        assert not firing("demo-trainer")
        # 30 simulated minutes are 30 wall seconds: well within 90 s, without waiting 30 min
        daemon.wait_for("the trainer's alert", lambda: bool(firing("demo-trainer")), 90)
        elapsed = time.monotonic() - started
        ((since, state),) = firing("demo-trainer")
        fired_at = datetime.fromisoformat(since)
        if fired_at.tzinfo is None:
            fired_at = fired_at.replace(tzinfo=UTC)
        assert state == "firing"
        # the whole window had to be idle: not before 30 simulated minutes after the switch,
        # less one sample (the window's first minute sample may fall just after the switch)
        assert timedelta(minutes=29) <= fired_at - switched <= timedelta(minutes=45)
        assert 20 < elapsed < 90
        events = [json.loads(x) for x in daemon.lines if x.startswith("{")]
        (follow,) = [e for e in events if e.get("event") == "following_clock"]
        assert follow["speed"] == 60.0
        assert daemon.stop() == 0
    finally:
        if daemon is not None:
            daemon.stop()
        sim.stop()
