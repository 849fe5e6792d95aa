"""The daemon as a real process against the simulator on a real socket: it collects, reloads on
SIGHUP (keeping the running configuration when the new file is invalid), and stops cleanly on
SIGTERM. Waiting here is for a real process doing real work, with deadlines, never for time to
pass in the model."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.sim import SimServer
from tests.helpers import API_KEY

DEADLINE_S = 60


class Daemon:
    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def events(self) -> list[dict[str, object]]:
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait_for(self, what: str, predicate: Callable[[], bool]) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; output:\n" + "\n".join(self.lines))

    def has_event(self, name: str) -> bool:
        return any(e.get("event") == name for e in self.events())


def _runs(db: Path) -> dict[str, str]:
    if not db.exists():
        return {}
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT collector, outcome FROM collector_runs").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()
    return {c: o for c, o in rows}


@pytest.fixture
def live_sim() -> Iterator[SimServer]:
    from monitor.clock import ScaledClock
    from monitor.sim import FleetSim, create_app

    sim = FleetSim(ScaledClock(1.0), scenario="demo", seed=0)
    with SimServer(create_app(sim)) as server:
        yield server


def _config(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "accounts:\n"
        "  - name: main\n"
        "    api_key_env: NOVITA_API_KEY\n"
        f"    base_url: {url}\n"
        f"database: sqlite:///{tmp_path / 'monitor.db'}\n"
        "log: {format: json}\n" + extra
    )
    return path


def test_daemon_collects_reloads_and_stops(tmp_path: Path, live_sim: SimServer) -> None:
    config = _config(tmp_path, live_sim.url)
    env = {**os.environ, "NOVITA_API_KEY": API_KEY}
    daemon = Daemon(config, env)
    try:
        db = tmp_path / "monitor.db"
        daemon.wait_for(
            "a first collection", lambda: {"instances", "metrics", "balance"} <= set(_runs(db))
        )
        assert _runs(db)["instances"] == "ok"
        daemon.wait_for("an evaluation", lambda: daemon.has_event("alert_transition"))

        # SIGHUP with a valid new file: reloaded
        config.write_text(config.read_text() + "stale_after: 5\n")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for("the reload", lambda: daemon.has_event("reloaded"))

        # SIGHUP with a broken rule file: rejected, old configuration kept, still running
        bad = tmp_path / "bad-rules.yaml"
        bad.write_text(
            "rules:\n  - name: broken\n    resource: instance\n    when: {idle_gpu: {treshold: 5}}\n"
        )
        config.write_text(config.read_text() + f"rules: [{bad}]\n")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for("the rejection", lambda: daemon.has_event("reload_rejected"))
        rejected = next(e for e in daemon.events() if e.get("event") == "reload_rejected")
        assert "bad-rules.yaml:4" in str(rejected["error"]) and "treshold" in str(rejected["error"])
        assert daemon.proc.poll() is None

        # SIGTERM: a graceful stop well within 10 s
        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        code = daemon.proc.wait(timeout=15)
        assert code == 0
        assert time.monotonic() - started < 10
        assert daemon.has_event("stopped")
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    # the key never reaches the logs
    assert all(API_KEY not in line for line in daemon.lines)
