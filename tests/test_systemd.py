"""The systemd unit (``systemd/novita-monitor.service``) starts, reloads and refuses as the issue
asks: ``systemd-analyze verify`` on a copy pointing at the installed command, and the unit's
own ``ExecStart`` and ``ExecReload`` command lines run as an unprivileged user (``nobody`` with
the unit's supplementary group when the tests run as root) against the installed layout the
README describes, with the credentials directory as systemd sets it (``CREDENTIALS_DIRECTORY``).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from monitor.config import Config, resolve_api_key
from monitor.errors import ConfigError
from tests.deploy import ROOT, Proc, RunAs, install_venv, remove, scratch
from tests.helpers import API_KEY, Process, skip_unless_ci

UNIT = ROOT / "systemd" / "novita-monitor.service"
UNIT_CONFIG = ROOT / "systemd" / "config.yaml"
README = ROOT / "README.md"
PREFIX = "/opt/novita-monitor"
ETC = "/etc/novita-monitor"
CONFIG = f"{ETC}/config.yaml"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values in order (systemd keys repeat: ``ExecReload=`` twice)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def readme_systemd_block() -> str:
    text = README.read_text()
    section = text.split("### systemd", 1)[1].split("\n### ", 1)[0]
    return section.split("```sh", 1)[1].split("```", 1)[0]


# ---------------------------------------------------------------------------------------------
# what the unit says


def test_the_unit_keeps_its_hardening_and_stops_restarting_on_invalid_input() -> None:
    s = service()
    assert s["Restart"] == ["on-failure"]
    assert "2" in s["RestartPreventExitStatus"][0].split()
    assert s["DynamicUser"] == ["yes"]
    assert s["StateDirectory"] == ["novita-monitor"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["NoNewPrivileges"] == ["yes"]
    assert s["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert s["LoadCredential"] == [f"api-key:{ETC}/api-key"]
    assert s["Type"] == ["exec"]


def test_reload_checks_the_file_the_daemon_runs_before_signalling() -> None:
    s = service()
    start = shlex.split(s["ExecStart"][0])
    first, signal = (shlex.split(c) for c in s["ExecReload"])
    assert start[:2] == [f"{PREFIX}/bin/novita-monitor", "run"]
    assert first[:2] == [f"{PREFIX}/bin/novita-monitor", "check"]
    config_of = {tuple(start): start[start.index("--config") + 1]}
    assert first[first.index("--config") + 1] == config_of[tuple(start)] == CONFIG
    assert signal == ["/bin/kill", "-HUP", "$MAINPID"]


def test_the_install_instructions_are_true() -> None:
    """The header and the README install from a clone (the package is not on PyPI), create
    the group the unit reads its configuration through, and install the file
    ``Documentation=`` points at."""
    header = "\n".join(line for line in UNIT.read_text().splitlines() if line.startswith("#"))
    block = readme_systemd_block()
    doc = parse_unit(UNIT.read_text())["Unit"]["Documentation"][0]
    assert doc.startswith("file://")
    doc_path = doc.removeprefix("file://")
    group = service()["SupplementaryGroups"][0]
    for text in (header, block):
        assert not re.search(r"pip install novita-monitor\b", text)
        assert re.search(rf"{PREFIX}/bin/pip install \S*(clone|checkout)", text)
        assert f"groupadd --system {group}" in text
        assert re.search(rf"install -D -m 0640 -g {group} \S+ {CONFIG}", text)
        assert re.search(rf"install -D -m 0644 \S*README.md {doc_path}", text)
        assert f"{ETC}/api-key" in text


# ---------------------------------------------------------------------------------------------
# the credential reference of the unit's configuration


def test_a_secret_file_in_the_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "api-key").write_text("sk-from-a-credential\n")
    (tmp_path / "api-key").chmod(0o400)
    cfg = Config.load(UNIT_CONFIG, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})

    key = resolve_api_key(cfg.accounts[0], {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert key.get_secret_value() == "sk-from-a-credential"
    with pytest.raises(ConfigError) as info:
        resolve_api_key(cfg.accounts[0], {})
    assert "CREDENTIALS_DIRECTORY is not set" in str(info.value.problems[0])
    assert info.value.problems[0].line == 4  # the account in systemd/config.yaml


# ---------------------------------------------------------------------------------------------
# the unit's commands, run


@dataclass
class Installed:
    root: Path
    run_as: RunAs
    credentials: Path
    config: Path

    def path(self, unit_path: str) -> str:
        """A path of the unit, in the temporary layout."""
        for prefix in (PREFIX, ETC, "/var/lib"):
            if unit_path == prefix or unit_path.startswith(prefix + "/"):
                return str(self.root) + unit_path
        return unit_path

    def command(self, line: str, mainpid: int | None = None) -> list[str]:
        words = [self.path(w) for w in shlex.split(line)]
        if mainpid is not None:
            words = [str(mainpid) if w == "$MAINPID" else w for w in words]
        return words

    def env(self) -> dict[str, str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": "/",
            "LANG": "C.UTF-8",
            "CREDENTIALS_DIRECTORY": str(self.credentials),
        }
        for assignment in service().get("Environment", []):
            key, _, value = assignment.partition("=")
            env[key] = self.path(value)
        return env


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    """The README's systemd layout under a temporary root: the venv at /opt/novita-monitor,
    /etc/novita-monitor/config.yaml (0640, group of the unit), the key as a credential
    (0400, owned by the service user, as systemd hands it over), the state directory."""
    run_as = RunAs.pick()
    root = scratch("nm-systemd-")
    try:
        install_venv(Path(str(root) + PREFIX), run_as)
        etc = Path(str(root) + ETC)
        etc.mkdir(parents=True)
        config = etc / "config.yaml"
        config.write_text(UNIT_CONFIG.read_text())
        run_as.own(config, 0o640, group_only=True)
        credentials = root / "run" / "credentials" / "novita-monitor.service"
        credentials.mkdir(parents=True)
        (credentials / "api-key").write_text(API_KEY + "\n")
        run_as.own(credentials / "api-key", 0o400)
        run_as.own(credentials, 0o500)
        state = root / "var" / "lib" / "novita-monitor"
        state.mkdir(parents=True)
        run_as.own(state, 0o700)
        yield Installed(root, run_as, credentials, config)
    finally:
        remove(root)


def _write_config(installed: Installed, base_url: str, rules: list[str] | None = None) -> None:
    data = yaml.safe_load(UNIT_CONFIG.read_text())
    data["accounts"][0]["base_url"] = base_url
    data["schedules"] = {"evaluate": 1}
    if rules is not None:
        data["rules"] = rules
    installed.config.write_text(yaml.safe_dump(data))


def _evaluations(daemon: Proc, after: int = 0) -> list[int]:
    out = []
    for line in daemon.lines[after:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "evaluated":
            out.append(int(record["rules"]))
    return out


def _index(daemon: Proc, event: str) -> int:
    for i, line in enumerate(daemon.lines):
        if f'"event": "{event}"' in line:
            return i
    return -1


def test_the_unit_starts_reloads_and_refuses_a_bad_reload(installed: Installed) -> None:
    s = service()
    env = installed.env()
    run_as = installed.run_as
    sim = Process(["simulator", "--port", "0", "--scenario", "demo"])
    daemon: Proc | None = None
    try:
        sim.wait_for("the simulator", lambda: any("listening on" in x for x in sim.lines), 30)
        url = next(x for x in sim.lines if "listening on" in x).split("listening on ")[1]
        _write_config(installed, url)
        if run_as.privileged:  # the group is what lets the dynamic user read the file
            denied = subprocess.run(
                run_as.argv(installed.command(s["ExecReload"][0]), groups=False),
                env=env,
                capture_output=True,
                text=True,
                cwd="/",
            )
            assert denied.returncode == 2
            assert "Permission denied" in denied.stderr

        daemon = Proc(run_as.argv(installed.command(s["ExecStart"][0])), env)
        daemon.wait_for("the first evaluations", lambda: len(_evaluations(daemon)) >= 2, 90)
        shipped = _evaluations(daemon)[-1]
        assert shipped > 5
        db = Path(installed.path("/var/lib")) / "novita-monitor" / "monitor.db"
        assert db.exists()  # in the state directory (XDG_STATE_HOME of the unit)
        assert API_KEY not in "\n".join(daemon.lines)

        # systemctl reload with a valid new file: the check passes, SIGHUP reloads
        rules = installed.config.parent / "rules"
        rules.mkdir()
        (rules / "mine.yaml").write_text(
            "rules:\n  - name: my-failed-task\n    resource: task\n"
            "    when:\n      failed_task: {within: 1h}\n    severity: warning\n"
        )
        run_as.own(rules / "mine.yaml", 0o640, group_only=True)
        run_as.own(rules, 0o750, group_only=True)
        _write_config(installed, url, rules=["shipped", "./rules/"])
        for line in s["ExecReload"]:
            done = subprocess.run(
                run_as.argv(installed.command(line, daemon.proc.pid)),
                env=env,
                capture_output=True,
                text=True,
                cwd="/",
            )
            assert done.returncode == 0, (line, done.stderr)
        daemon.wait_for("the reload", lambda: _index(daemon, "reloaded") >= 0, 30)
        after = _index(daemon, "reloaded")
        daemon.wait_for(
            "an evaluation with the new rule",
            lambda: shipped + 1 in _evaluations(daemon, after),
            30,
        )

        # an invalid file: ExecReload's check fails (systemctl reload fails), no SIGHUP
        installed.config.write_text(installed.config.read_text() + "schedules: {evaluate: -1}\n")
        for line in s["ExecReload"]:
            done = subprocess.run(
                run_as.argv(installed.command(line, daemon.proc.pid)),
                env=env,
                capture_output=True,
                text=True,
                cwd="/",
            )
            if done.returncode != 0:
                break
        assert line == s["ExecReload"][0]  # systemd stops at the first failing command
        assert done.returncode == 2
        assert f"{installed.config}:" in done.stderr
        mark = len(daemon.lines)
        daemon.wait_for("two more evaluations", lambda: len(_evaluations(daemon, mark)) >= 2, 30)
        assert set(_evaluations(daemon, mark)) == {shipped + 1}  # the old (valid) rules
        assert daemon.proc.poll() is None
        assert sum('"event": "reloaded"' in x for x in daemon.lines) == 1

        assert daemon.stop() == 0  # KillSignal=SIGTERM: a clean stop
        daemon = None

        # ExecStart on the invalid file: exit 2, which the unit does not restart
        bad = subprocess.run(
            run_as.argv(installed.command(s["ExecStart"][0])),
            env=env,
            capture_output=True,
            text=True,
            cwd="/",
            timeout=60,
        )
        assert bad.returncode == 2, bad.stderr
        assert str(bad.returncode) in s["RestartPreventExitStatus"][0].split()
    finally:
        if daemon is not None:
            daemon.stop()
        sim.stop()


def test_systemd_analyze_verify_passes_on_the_installed_command(
    tmp_path: Path, installed: Installed
) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        skip_unless_ci("systemd-analyze is not installed (.ci/run installs systemd)")
    copy = tmp_path / "novita-monitor.service"
    copy.write_text(UNIT.read_text().replace(PREFIX, installed.path(PREFIX)))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""  # not even a warning (an unknown key, a bad value)

    broken = tmp_path / "broken" / "novita-monitor.service"
    broken.parent.mkdir()
    broken.write_text(copy.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    noisy = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True)
    assert "restart specifier" in noisy.stderr  # what the check above would catch
