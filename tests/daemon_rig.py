"""One rig for the end-to-end tests of the daemon as a real process (issue 9 §8): the simulator
as a process (``simulator --port 0 --speed 60 --scenario demo``: a simulated minute is a wall
second) and the daemon (``run --clock URL``) following its clock, on a real socket and a real
SQLite file; the simulator's apprise ``json://`` sink (``/_sim/notify``) is the channel, so the
notices the daemon delivers can be read back.

Every wait is a condition with a bounded deadline (:meth:`tests.helpers.Process.wait_for`),
never a sleep for simulated minutes: "after N simulated minutes" is
:meth:`Rig.wait_sim`, which watches the simulator's clock.

Use the ``rig`` fixture (``tests/conftest.py``)::

    rig.sim.add_instance("keep-me", envs={"NOVITA_MONITOR_PROTECT": "true"})
    rig.configure(RULES, extra="actions: {max_per_cycle: 2}\\n")
    daemon = rig.start()               # or rig.start("--dry-run"), rig.start(env={...})
    rig.wait_for("the stop", lambda: rig.rows(state="succeeded"))
    assert rig.sim.performed("stop") == ["demo-notebook"]
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import API_KEY, Process

#: simulated seconds per wall second (the daemon's schedules run this much faster too)
SPEED = 60
GPU = "/gpu-instance/openapi/v1"
#: a generous bound for what a loaded 2-core machine does in a few seconds
WAIT_S = 45.0


class Sim:
    """The simulator process and its control endpoints (``/_sim/*``)."""

    def __init__(self, speed: float = SPEED, scenario: str = "demo") -> None:
        self.proc = Process(
            ["simulator", "--port", "0", "--speed", str(speed), "--scenario", scenario]
        )
        self.proc.wait_for("the simulator", lambda: self._listening() is not None, 30)
        url = self._listening()
        assert url is not None
        self.url = url
        # the key is for the Novita API's paths; ``/_sim/*`` takes none
        self.http = httpx.Client(
            base_url=url, timeout=10, headers={"Authorization": f"Bearer {API_KEY}"}
        )

    def _listening(self) -> str | None:
        line = next((x for x in list(self.proc.lines) if "listening on " in x), None)
        return line.split("listening on ")[1].strip() if line else None

    @property
    def clock_url(self) -> str:
        return f"{self.url}/_sim/clock"

    def get(self, path: str) -> Any:
        answer = self.http.get(path)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def post(self, path: str, body: Any) -> Any:
        answer = self.http.post(path, json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def api(self, action: str, body: dict[str, Any]) -> Any:
        """POST a Novita action as a user would (``setAutoRenew``, ``stop``...)."""
        return self.post(f"{GPU}/gpu/instance/{action}", body)

    def instance(self, instance_id: str) -> dict[str, Any]:
        """get-instance, as the API answers it."""
        return dict(self.get(f"{GPU}/gpu/instance?instanceId={instance_id}"))

    def add_instance(self, instance_id: str, **fields: Any) -> dict[str, Any]:
        """A running instance with a past (``POST /_sim/instances``; idle for 5 h by default)."""
        return dict(self.post("/_sim/instances", {"id": instance_id, **fields}))

    def now(self) -> datetime:
        return datetime.fromisoformat(self.get("/_sim/clock")["now"])

    def balance_usd(self) -> float:
        return float(self.get("/_sim/summary")["balance_usd"])

    def actions(self, action: str | None = None) -> list[dict[str, Any]]:
        """The action requests received (``/_sim/actions``), those refused included."""
        log = self.get("/_sim/actions")["actions"]
        return [a for a in log if action is None or a["path"] == action]

    def performed(self, action: str) -> list[str]:
        """The instances on which ``action`` was carried out, in order."""
        return [
            str((a.get("body") or {}).get("instanceId"))
            for a in self.actions(action)
            if a.get("performed")
        ]

    def notifications(self) -> list[str]:
        """Title and message of each notice the daemon delivered to the sink."""
        out = []
        for n in self.get("/_sim/notifications")["notifications"]:
            body = n["body"] if isinstance(n["body"], dict) else {"message": str(n["body"])}
            out.append(f"{body.get('title', '')}\n{body.get('message', '')}")
        return out

    def close(self) -> None:
        self.http.close()
        self.proc.stop()


class Rig:
    """The simulator, a configuration and the daemon processes started on it."""

    def __init__(self, tmp_path: Path, speed: float = SPEED) -> None:
        self.tmp_path = tmp_path
        self.db = tmp_path / "monitor.db"
        self.config_path = tmp_path / "config.yaml"
        self.daemons: list[Process] = []
        self.sim = Sim(speed)
        self.env = {**os.environ, "NOVITA_API_KEY": API_KEY}
        self.env.pop("NOVITA_MONITOR_TEST_CRASH_AFTER", None)

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def configure(self, rules: str, extra: str = "") -> Path:
        """The config: one account on the simulator, ``rules`` (YAML text) as the only rules,
        the simulator's sink as the default channel, JSON logs, then ``extra`` (YAML lines)."""
        rules_path = self.tmp_path / "rules.yaml"
        rules_path.write_text(rules)
        sink = self.sim.url.replace("http://", "json://") + "/_sim/notify"
        self.config_path.write_text(
            "accounts:\n  - name: main\n    api_key_env: NOVITA_API_KEY\n"
            f"    base_url: {self.sim.url}\n"
            f"database: sqlite:///{self.db}\n"
            "log: {format: json}\n"
            'http: {listen: "127.0.0.1:0"}\n'  # any free port: never a clash with another daemon
            f"rules: [{rules_path}]\n"
            f'channels:\n  sink: "{sink}"\ndefault_channels: [sink]\n' + extra
        )
        return self.config_path

    def start(self, *flags: str, env: dict[str, str] | None = None) -> Process:
        """``run --config C --clock URL [flags]``, the environment's key plus ``env``."""
        daemon = Process(
            ["run", "--config", str(self.config_path), "--clock", self.sim.clock_url, *flags],
            {**self.env, **(env or {})},
        )
        self.daemons.append(daemon)
        return daemon

    @property
    def daemon(self) -> Process:
        assert self.daemons, "no daemon started"
        return self.daemons[-1]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``novita-monitor ARGS`` as a process (``plan``, ``approve``, ``actions``...)."""
        return subprocess.run(
            [sys.executable, "-m", "monitor", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def rows(self, **where: str) -> list[dict[str, Any]]:
        """The ledger's rows (``actions`` table) in id order, JSON columns decoded, filtered
        by equality on the given columns (``rows(state="succeeded", action="stop")``)."""
        if not self.db.exists():
            return []
        con = sqlite3.connect(self.db, timeout=10)
        con.row_factory = sqlite3.Row
        try:
            found = [dict(r) for r in con.execute("SELECT * FROM actions ORDER BY id")]
        except sqlite3.OperationalError:  # not created yet
            return []
        finally:
            con.close()
        for r in found:
            for column in ("params", "facts", "answer"):
                if isinstance(r.get(column), str):
                    r[column] = json.loads(r[column])
        return [r for r in found if all(r.get(k) == v for k, v in where.items())]

    def wait_for(self, what: str, predicate: Callable[[], Any], deadline_s: float = WAIT_S) -> None:
        """Until ``predicate()`` is true, within ``deadline_s`` of wall time; fails at once
        when the daemon died (its output in the message)."""
        self.daemon.wait_for(what, predicate, deadline_s)

    def wait_sim(self, minutes: float, deadline_s: float | None = None) -> None:
        """Until the simulator's clock has moved ``minutes`` on from now (the daemon's act
        step runs every simulated minute: this is "several act cycles")."""
        start = self.sim.now()
        deadline = deadline_s if deadline_s is not None else minutes * 60 / SPEED * 3 + 10
        self.wait_for(
            f"{minutes} simulated minutes",
            lambda: (self.sim.now() - start).total_seconds() >= minutes * 60,
            deadline,
        )

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.stop()
        self.sim.close()


def poll(predicate: Callable[[], Any], deadline_s: float = WAIT_S) -> bool:
    """Whether ``predicate()`` becomes true within ``deadline_s`` (a bounded condition wait for
    what no daemon process watches, e.g. between two daemons)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())
