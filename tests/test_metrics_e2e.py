"""The daemon's HTTP endpoint end to end (issue 11 §3): a real daemon process (``run --clock``)
on a real simulator process, ``http: {listen: 127.0.0.1:0}``.

``/metrics`` carries the figures of ``status --json`` (balance, runway, burn, instance counts,
GPU utilisation; parsed with ``prometheus_client.parser``) and no secret; ``/healthz`` answers;
``/readyz`` is 200 once the collections are fresh, 503 with a reason while the API fails
(``/_sim/faults``) and 200 again after; ``http: false`` listens nowhere; a bad or taken
``http.listen`` is one clear error. Waits are bounded, for real processes doing real work.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import API_KEY, Process

#: a notification URL with a token, read from the environment: it must never be exposed
CHANNEL_SECRET = "json://127.0.0.1:9/hook/Zq8TokenAbc123Def456Ghi789"
ENV = {**os.environ, "NOVITA_API_KEY": API_KEY, "OPS_URL": CHANNEL_SECRET}

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def start_sim(speed: int) -> tuple[Process, str]:
    sim = Process(["simulator", "--port", "0", "--speed", str(speed), "--scenario", "demo"])
    sim.wait_for("the simulator", lambda: any("listening on" in x for x in sim.lines), 30)
    url = next(x for x in sim.lines if "listening on" in x).split("listening on ")[1]
    return sim, url


@pytest.fixture
def fast_sim() -> Iterator[str]:
    """A simulator at ``--speed 60`` (a simulated minute per wall second)."""
    sim, url = start_sim(60)
    try:
        yield url
    finally:
        sim.stop()


def write_config(tmp_path: Path, url: str, http: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        "accounts:\n  - name: main\n    api_key_env: NOVITA_API_KEY\n"
        f"    base_url: {url}\n"
        f"database: sqlite:///{tmp_path / 'monitor.db'}\n"
        "log: {format: json}\n"
        "channels:\n  ops: {url_env: OPS_URL}\n"
        f"{http}\n"
    )
    return config


def start_daemon(config: Path, sim_url: str) -> Process:
    return Process(["run", "--config", str(config), "--clock", f"{sim_url}/_sim/clock"], ENV)


def events(daemon: Process) -> list[dict[str, Any]]:
    out = []
    for line in list(daemon.lines):
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def endpoint(daemon: Process) -> str:
    daemon.wait_for(
        "the HTTP endpoint", lambda: any(e["event"] == "http_listening" for e in events(daemon))
    )
    (listening,) = [e for e in events(daemon) if e["event"] == "http_listening"]
    url = str(listening["url"])
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")  # the bound port
    return url


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def ready(url: str) -> httpx.Response:
    return httpx.get(f"{url}/readyz", timeout=10)


def wait_until(what: str, daemon: Process, check: Callable[[], bool], deadline_s: float) -> None:
    """Poll ``check`` (real requests) until true, the daemon dying or the deadline."""
    daemon.wait_for(what, check, deadline_s)


FIGURES = (
    "novita_monitor_balance_usd",
    "novita_monitor_runway_hours",
    "novita_monitor_burn_rate_usd_per_hour",
    "novita_monitor_instances",
    "novita_monitor_gpu_utilization_percent",
)


def figures(samples: Samples) -> dict[str, Any]:
    return {name: samples.get(name, {}) for name in FIGURES}


def read_at(samples: Samples) -> float:
    return samples["novita_monitor_figures_read_timestamp_seconds"][()]


def status_json(config: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "status", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=True,
    )
    return dict(json.loads(done.stdout))


def test_metrics_carry_the_figures_of_status_json_and_no_secret(tmp_path: Path) -> None:
    # --speed 1: the daemon's clock (the simulator's) is the wall clock ``status`` reads
    sim, sim_url = start_sim(1)
    daemon = None
    try:
        config = write_config(tmp_path, sim_url, "http: {listen: '127.0.0.1:0'}")
        daemon = start_daemon(config, sim_url)
        url = endpoint(daemon)
        health = httpx.get(f"{url}/healthz", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        wait_until("ready", daemon, lambda: ready(url).status_code == 200, 60)
        assert ready(url).json() == {"ready": True, "reason": "collections fresh"}

        # a reading from before ``status`` and one from after it agree: ``status`` saw the same
        for _attempt in range(10):
            before = scrape(url)
            started = time.time()
            status = status_json(config)
            ended = time.time()
            after = scrape(url)
            deadline = time.monotonic() + 15
            while read_at(after) < ended + 0.5 and time.monotonic() < deadline:
                time.sleep(0.2)  # the cached reading expires within 2 s
                after = scrape(url)
            if read_at(before) <= started and figures(before) == figures(after):
                break
        else:
            pytest.fail("the figures never held still across a status --json")
        (acc,) = status["accounts"]
        main = (("account", "main"),)
        assert acc["balance_usd"] is not None and acc["burn_rate_usd_per_hour"] is not None
        assert round(after["novita_monitor_balance_usd"][main], 4) == acc["balance_usd"]
        burn = after["novita_monitor_burn_rate_usd_per_hour"][main]
        assert round(burn, 4) == acc["burn_rate_usd_per_hour"]
        assert acc["runway_hours"] is not None
        assert round(after["novita_monitor_runway_hours"][main], 2) == acc["runway_hours"]
        counts = Counter((i["status"], i["billing_mode"] or "") for i in acc["instances"])
        exported = {
            (dict(k)["status"], dict(k)["billing_mode"]): v
            for k, v in after["novita_monitor_instances"].items()
        }
        assert exported == {k: float(n) for k, n in counts.items()}
        assert sum(exported.values()) >= 5  # the demo's fleet
        util = {
            dict(k)["instance"]: v
            for k, v in after["novita_monitor_gpu_utilization_percent"].items()
        }
        known = {i["id"]: i["gpu_util_avg_15m"] for i in acc["instances"]}
        assert {k for k, v in known.items() if v is not None} == set(util)  # unknown: absent
        assert util and all(round(util[k], 2) == known[k] for k in util)
        assert util["demo-notebook"] < 5 < util["demo-trainer"]  # idle vs busy

        # the rest of the list, and the collectors' runs fed by the job reports
        assert after["novita_monitor_savings_usd_total"][main] == 0.0
        firing = after["novita_monitor_alerts_firing"]
        assert firing and all(dict(k).keys() == {"rule", "severity"} for k in firing)
        last = after["novita_monitor_collector_last_success_timestamp_seconds"]
        assert (("account", "main"), ("collector", "instances")) in last
        runs = after["novita_monitor_collector_duration_seconds_count"]
        assert runs[(("account", "main"), ("collector", "instances"))] >= 1
        errors = after["novita_monitor_collector_errors_total"]
        assert errors[(("account", "main"), ("collector", "instances"))] == 0

        # no secret anywhere the endpoint answers
        bodies = [
            httpx.get(f"{url}{path}", timeout=10).text
            for path in ("/metrics", "/healthz", "/readyz", "/nothing-here")
        ]
        for body in bodies:
            assert API_KEY not in body and API_KEY[-12:] not in body
            assert CHANNEL_SECRET not in body and "Zq8TokenAbc123" not in body

        # per-collector "ok" lines are debug; the evaluation's line sums the runs up
        seen = events(daemon)
        assert not [e for e in seen if e["event"] == "collector_run" and e["outcome"] == "ok"]
        evaluated = [e for e in seen if e["event"] == "evaluated"]
        assert evaluated and "collector_runs" in evaluated[0]

        assert daemon.stop() == 0
        with pytest.raises(httpx.TransportError):  # shut down with the daemon
            httpx.get(f"{url}/healthz", timeout=5)
    finally:
        if daemon is not None:
            daemon.stop()
        sim.stop()


def test_readyz_is_503_with_a_reason_while_collections_are_stale(
    tmp_path: Path, fast_sim: str
) -> None:
    config = write_config(tmp_path, fast_sim, "http: {listen: '127.0.0.1:0'}")
    daemon = start_daemon(config, fast_sim)
    try:
        url = endpoint(daemon)
        first = ready(url)  # before the first cycle: nothing collected yet, not ready
        assert first.status_code in (200, 503)
        wait_until("ready", daemon, lambda: ready(url).status_code == 200, 60)
        # the check ``http: false`` relies on sees this listening socket
        assert _sockets_of(daemon.proc.pid) & _listening_inodes()

        # the API fails every request: 3 simulated minutes later the listing is stale
        httpx.post(f"{fast_sim}/_sim/faults", json={"error_rate": 1.0}).raise_for_status()

        def listing_stale() -> bool:  # another collector (metrics) may go stale first
            answer = ready(url)
            stale = answer.json().get("stale", {}).get("main", [])
            return answer.status_code == 503 and "instances" in stale

        wait_until("the listing stale, not ready", daemon, listing_stale, 60)
        answer = ready(url).json()
        assert answer["ready"] is False
        assert answer["reason"].startswith("stale collections (main: ")
        assert "instances" in answer["stale"]["main"]
        key = (("account", "main"), ("collector", "instances"))

        def failed_runs() -> float:
            return scrape(url)["novita_monitor_collector_errors_total"].get(key, 0.0)

        # a run fails once its retries are spent: counted then, by the job report
        wait_until("a failed run counted", daemon, lambda: failed_runs() >= 1, 60)
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200  # alive all along

        # the API answers again: fresh again
        httpx.post(f"{fast_sim}/_sim/faults", json={"error_rate": 0.0}).raise_for_status()
        wait_until("ready again", daemon, lambda: ready(url).status_code == 200, 90)

        # a reload keeps the endpoint where it is, and says a new address waits for a restart
        config.write_text(config.read_text().replace("127.0.0.1:0", "127.0.0.1:1"))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(
            "the reload", daemon, lambda: any(e["event"] == "reloaded" for e in events(daemon)), 60
        )
        (moved,) = [e for e in events(daemon) if e["event"] == "http_change_needs_restart"]
        assert moved["running"] == url
        assert ready(url).status_code in (200, 503)  # still served, by the new app
        assert scrape(url)["novita_monitor_collector_errors_total"][key] >= 1  # counts kept
        assert daemon.stop() == 0
    finally:
        daemon.stop()


def _listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    inodes.add(fields[9])
    return inodes


def _sockets_of(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:[") : -1])
    return out


def test_http_false_serves_nothing(tmp_path: Path, fast_sim: str) -> None:
    config = write_config(tmp_path, fast_sim, "http: false")
    daemon = start_daemon(config, fast_sim)
    try:
        daemon.wait_for("the start", lambda: any(e["event"] == "started" for e in events(daemon)))
        assert any(e["event"] == "http_off" for e in events(daemon))
        assert not any(e["event"] == "http_listening" for e in events(daemon))
        assert not _sockets_of(daemon.proc.pid) & _listening_inodes()  # listens nowhere
        assert daemon.stop() == 0
    finally:
        daemon.stop()


def test_a_bad_listen_address_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", "http:\n  listen: 127.0.0.1\n")
    for command in (["check"], ["run"]):
        done = subprocess.run(
            [sys.executable, "-m", "monitor", *command, "--config", str(config)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        # the file (shortened when long) and the line of the key, what is wrong and expected
        assert ":10: http.listen: '127.0.0.1' is not HOST:PORT (expected HOST:PORT" in done.stderr
        assert "Traceback" not in done.stderr


def test_a_taken_port_fails_the_start_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path, "http://127.0.0.1:9", f"http:\n  listen: '127.0.0.1:{port}'\n"
        )
        done = subprocess.run(
            [sys.executable, "-m", "monitor", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert (
        f"error: {config}:10: http.listen: cannot listen on 127.0.0.1:{port}: the port is in use"
        in done.stderr
    )
    assert "Traceback" not in done.stderr
