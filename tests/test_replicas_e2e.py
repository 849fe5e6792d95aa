"""One daemon per database, end to end, with real processes (issue 12 §1).

* SQLite: a second ``run`` on the same database file refuses to start, ``once`` too (unless
  ``--force``); a SIGKILLed daemon's lock does not block the next one.
* PostgreSQL (``tests/pg.py``): two replicas follow the simulator's clock (``run --clock``,
  ``--speed 60``: a simulated minute is a wall second) with the README's idle-stop rule and a
  real receiver. One leads; ``once`` is refused beside it; the leader is killed with SIGKILL in
  the middle of its work (during the stop's grace, or right after the stop's POST answered and
  before its outcome was recorded), or frozen (SIGSTOP) past its lease and thawed once the other
  leads (its writes fenced, it follows); the follower takes over within two lease periods and
  nothing is done twice: one stop per instance in the simulator's action log, each message
  received once, one firing notice per idle alert.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from monitor.actions import STOP_IDLE_GPUS
from monitor.app import TEST_CRASH_ENV
from tests.helpers import API_KEY, Process
from tests.pg import require_pg
from tests.receivers import JsonSink

RULE = STOP_IDLE_GPUS
LEASE = timedelta(minutes=10)  # simulated: 10 wall seconds at --speed 60
ENV = {**os.environ, "NOVITA_API_KEY": API_KEY}


@pytest.fixture
def simulator() -> Iterator[str]:
    sim = Process(["simulator", "--port", "0", "--speed", "60", "--scenario", "demo"])
    try:
        sim.wait_for("the simulator", lambda: any("listening on" in x for x in sim.lines), 30)
        yield next(x for x in sim.lines if "listening on" in x).split("listening on ")[1]
    finally:
        sim.stop()


def write_config(tmp_path: Path, url: str, database: str, extra: str = "") -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE)
    config = tmp_path / "config.yaml"
    config.write_text(
        "accounts:\n  - name: main\n    api_key_env: NOVITA_API_KEY\n"
        f"    base_url: {url}\n"
        f"database: {database}\nlog: {{format: json}}\nrules: [{rules}]\n"
        'http: {listen: "127.0.0.1:0"}\n' + extra  # replicas side by side: each its own free port
    )
    return config


def cli(*args: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


# -- SQLite: one daemon per file ----------------------------------------------------------------


def test_a_second_daemon_on_one_sqlite_file_refuses_to_start(
    tmp_path: Path, simulator: str
) -> None:
    db = tmp_path / "monitor.db"
    lock = Path(f"{db}.lock")
    config = write_config(tmp_path, simulator, f"sqlite:///{db}")
    first = Process(["run", "--config", str(config)], ENV)
    third = None
    try:
        holds = f"run, pid {first.proc.pid}"
        first.wait_for("the lock", lambda: lock.exists() and holds in lock.read_text(), 60)

        second = cli("run", "--config", str(config))
        assert second.returncode == 1
        assert f"database {db} is in use by another novita-monitor ({holds}" in second.stderr
        assert "one daemon per SQLite database" in second.stderr

        once = cli("once", "--config", str(config))
        assert once.returncode == 1
        assert "is in use by another novita-monitor" in once.stderr
        assert "pass --force" in once.stderr
        forced = cli("once", "--config", str(config), "--force")  # beside the daemon
        assert forced.returncode == 0, forced.stderr
        assert "alert(s) firing" in forced.stdout
        assert first.proc.poll() is None  # the first daemon runs on

        # a SIGKILLed holder releases the lock with its process: the next daemon starts
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        third = Process(["run", "--config", str(config)], ENV)
        holds = f"run, pid {third.proc.pid}"
        third.wait_for("the lock", lambda: holds in lock.read_text(), 60)
        assert third.proc.poll() is None
        assert third.stop() == 0
    finally:
        first.stop()
        if third is not None:
            third.stop()


# -- PostgreSQL: two replicas, the leader killed ---------------------------------------------


def _sim_now(url: str) -> datetime:
    return datetime.fromisoformat(httpx.get(f"{url}/_sim/clock").json()["now"])


def _logged(process: Process, event: str) -> list[dict[str, Any]]:
    found = []
    for line in list(process.lines):
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event:
            found.append(entry)
    return found


@pytest.mark.parametrize("kill", ["during-grace", "after-the-stop-call", "paused"])
def test_the_follower_takes_over_a_killed_leader_and_nothing_is_done_twice(
    tmp_path: Path, simulator: str, kill: str
) -> None:
    database = require_pg(tmp_path)
    engine = create_engine(database)
    sink = JsonSink().start()
    url = make_url(database)  # the configuration takes no password: PGPASSWORD does
    env = {**ENV, "PGPASSWORD": url.password or ""}
    config = write_config(
        tmp_path,
        simulator,
        f"{url.drivername}://{url.username}@{url.host}:{url.port}/{url.database}",
        f'channels:\n  ops: "{sink.url}"\ndefault_channels: [ops]\n'
        f"leader: {{lease: {int(LEASE.total_seconds())}s}}\n",
    )

    def rows(sql: str) -> list[Any]:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())

    def stops() -> list[Any]:
        return rows(
            "SELECT id, instance_id, state, claimed_by FROM actions WHERE action = 'stop' "
            "ORDER BY id"
        )

    def state(instance: str) -> list[str]:
        return [r[2] for r in stops() if r[1] == instance]

    run = ["run", "--config", str(config), "--clock", f"{simulator}/_sim/clock"]
    # after-the-stop-call: the leader kills itself (SIGKILL) once its first stop's POST
    # answered, before the outcome is recorded (the test-only crash point, see monitor.app)
    # paused: the leader is frozen (SIGSTOP) past its lease, then thawed while the follower
    # leads: its writes are fenced and it follows
    crash = kill == "after-the-stop-call"
    leader = Process(run, {**env, TEST_CRASH_ENV: "call"} if crash else env)
    follower = None
    try:
        leader.wait_for("the leader", lambda: bool(_logged(leader, "leader_elected")), 60)
        follower = Process(run, env)
        follower.wait_for("the follower", lambda: bool(_logged(follower, "follower")), 60)
        holder = _logged(leader, "leader_elected")[0]["holder"]
        assert _logged(follower, "follower")[0]["leader"] == holder
        assert not _logged(follower, "started")  # a follower collects nothing
        # ... but serves its endpoints, and says it follows a live leader
        served = _logged(follower, "http_listening")[0]["url"]
        ready = httpx.get(f"{served}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["reason"] == "follower, sees a live leader"
        assert ready.json()["leader"] == holder
        assert httpx.get(f"{served}/healthz", timeout=10).status_code == 200
        assert "novita_monitor_" in httpx.get(f"{served}/metrics", timeout=10).text

        once = cli("once", "--config", str(config), env=env)
        assert once.returncode == 1
        assert "leads this database" in once.stderr and "--force" in once.stderr

        leader.wait_for("the announced stop", lambda: state("demo-notebook") != [], 60)
        assert state("demo-notebook") == ["announced"]
        if kill == "during-grace":  # the leader is in the middle of a cycle (every second)
            leader.proc.send_signal(signal.SIGKILL)
        if kill == "paused":
            leader.proc.send_signal(signal.SIGSTOP)
        else:
            leader.wait_for("the leader's death", lambda: leader.proc.poll() is not None, 60)
            assert leader.proc.returncode == -signal.SIGKILL
        died_at = _sim_now(simulator)
        cut = [r for r in stops() if r[2] == "executing"]
        if crash:  # claimed and called by the leader, the outcome unrecorded
            ((cut_id, cut_instance, _state, claimed_by),) = cut
            assert claimed_by.startswith(f"{socket.gethostname()}:{leader.proc.pid}")

        follower.wait_for("the takeover", lambda: bool(_logged(follower, "leader_elected")), 60)
        ((epoch, acquired_at),) = rows("SELECT epoch, acquired_at FROM leader_lease")
        assert epoch == 2
        took = acquired_at - died_at
        print(f"takeover {took.total_seconds():.0f} simulated s after the leader died ({kill})")
        assert took <= 2 * LEASE  # within two lease periods
        if kill == "paused":  # thawed: its jobs resume, refused by the fence; it follows
            leader.proc.send_signal(signal.SIGCONT)
            leader.wait_for(
                "the old leader to follow", lambda: bool(_logged(leader, "following")), 60
            )
            assert _logged(leader, "leadership_lost")[0]["epoch"] == 2

        follower.wait_for("the stop", lambda: state("demo-notebook") == ["succeeded"], 90)
        # a few more cycles of the new leader: a duplicate would show now
        settled = _sim_now(simulator) + timedelta(minutes=5)
        follower.wait_for("5 more minutes", lambda: _sim_now(simulator) >= settled, 30)

        # every stop planned once and called once, the one cut short included (reconciled
        # by reading the instance, never called again)
        log = httpx.get(f"{simulator}/_sim/actions").json()["actions"]
        called = Counter(
            a["body"].get("instanceId")
            for a in log
            if "stop" in str(a.get("path", "")).lower() and a.get("performed")
        )
        succeeded = Counter(r[1] for r in stops() if r[2] == "succeeded")
        assert called == succeeded and called["demo-notebook"] == 1
        assert max(Counter(r[1] for r in stops()).values()) == 1
        assert "demo-trainer" not in called
        if crash:
            (row,) = [r for r in stops() if r[0] == cut_id]
            assert row[2:] == ("succeeded", claimed_by)  # not claimed again
            assert called[cut_instance] == 1
        # each message received once
        bodies = [json.dumps(b, sort_keys=True) for b in sink.bodies]
        assert bodies and len(bodies) == len(set(bodies))
        assert any("will stop" in b for b in bodies)
        # the idle alerts fired once each (one episode: idle until stopped), across the
        # failover; (the monitor's own health alert may fire again, legitimately: at --speed 60
        # a first cycle takes longer than its stale_after of 3 simulated minutes)
        idle = {
            fp for (fp,) in rows("SELECT fingerprint FROM alerts WHERE rule = 'stop-idle-gpus'")
        }
        firing = Counter(
            fp
            for (fps,) in rows("SELECT fingerprints FROM notifications WHERE kind = 'firing'")
            for fp in (json.loads(fps) if isinstance(fps, str) else fps or [])
            if fp in idle
        )
        assert "demo-notebook" in str(rows("SELECT resource_id FROM alerts"))
        assert set(firing) == idle and max(firing.values()) == 1
        # nothing lost either: sent, or under way (decided by the last evaluations)
        lost = "status NOT IN ('sent', 'pending') OR error IS NOT NULL"
        assert rows(f"SELECT count(*) FROM notifications WHERE {lost}") == [(0,)]
        assert follower.stop() == 0
        if kill == "paused":
            assert leader.stop() == 0
        assert _logged(follower, "lease_released")  # a clean stop hands over at once
    finally:
        leader.stop()
        if follower is not None:
            follower.stop()
        sink.stop()
        engine.dispose()
