"""The Docker image an operator would ship (no Docker engine here): the Dockerfile lints clean
(hadolint), pins its base image and its dependencies, keeps the build context small, runs
non-root with the database on a volume and the metrics on 0.0.0.0, and its exact entrypoint
command line (parsed from the Dockerfile) runs outside Docker against the simulator as the
image's user, with the image's environment and configuration."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from packaging.utils import canonicalize_name

from monitor.config import Config
from tests.deploy import (
    ROOT,
    Proc,
    RunAs,
    install_venv,
    remove,
    runtime_closure,
    runtime_requirements,
    scratch,
)
from tests.helpers import API_KEY, Process

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONSTRAINTS = ROOT / "docker" / "constraints.txt"
IMAGE_CONFIG = ROOT / "docker" / "config.yaml"
PYPROJECT = ROOT / "pyproject.toml"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def one(name: str) -> str:
    found = [args for word, args in instructions(DOCKERFILE.read_text()) if word == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def exec_form(name: str) -> list[str]:
    value = json.loads(one(name))
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), name
    return value


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in instructions(DOCKERFILE.read_text()):
        if word == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def image_config() -> dict:
    return yaml.safe_load(IMAGE_CONFIG.read_text())


def readme_docker_block() -> str:
    section = (ROOT / "README.md").read_text().split("### Docker", 1)[1].split("\n### ", 1)[0]
    return section.split("```sh", 1)[1].split("```", 1)[0]


# ---------------------------------------------------------------------------------------------
# the Dockerfile


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is not installed (pip install -e '.[test]')"
    return found


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    done = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr

    latest = tmp_path / "Dockerfile"
    latest.write_text(DOCKERFILE.read_text().replace("FROM python:", "FROM python:latest #"))
    noisy = subprocess.run([hadolint(), str(latest)], capture_output=True, text=True)
    assert noisy.returncode != 0 and "DL3007" in noisy.stdout  # what the lint would catch


def test_base_image_and_dependencies_are_pinned() -> None:
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?", one("FROM")), one("FROM")
    installs = [a for w, a in instructions(DOCKERFILE.read_text()) if w == "RUN" and "pip" in a]
    assert installs and all("--constraint docker/constraints.txt" in a for a in installs)
    copies = [a for w, a in instructions(DOCKERFILE.read_text()) if w == "COPY"]
    assert any(a.startswith("docker/constraints.txt") for a in copies)


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_constraints_cover_every_runtime_dependency() -> None:
    """Every dependency of pyproject (with the postgres extra the image installs), and theirs,
    is pinned, at a version pyproject allows. After a change: scripts/lock-deps."""
    pins = _pins()
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in docker/constraints.txt (scripts/lock-deps)"
        assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])
    for name in sorted(runtime_closure()):
        assert name in pins, f"{name} (a runtime dependency's) is not pinned (scripts/lock-deps)"
    assert "novita-monitor" not in pins


def test_runs_non_root_with_the_database_on_a_volume_and_metrics_on_all_addresses() -> None:
    user = one("USER")
    assert user not in ("root", "0") and not user.startswith("0:")
    config = image_config()
    database = config["database"]
    volumes = json.loads(one("VOLUME"))
    assert any(database.startswith(f"sqlite:///{v}/") for v in volumes), (database, volumes)
    host, _, port = config["http"]["listen"].rpartition(":")
    assert host == "0.0.0.0"
    assert one("EXPOSE") == port
    health = one("HEALTHCHECK")
    command = json.loads(health.split("CMD", 1)[1])
    assert command[0] == "python" and f"http://127.0.0.1:{port}/healthz" in command[-1]
    assert exec_form("ENTRYPOINT") == ["novita-monitor"]
    assert exec_form("CMD")[0] == "run"
    assert one("STOPSIGNAL") == "SIGTERM"
    assert config["accounts"][0]["api_key_env"] == "NOVITA_API_KEY"


def test_the_readme_runs_what_the_image_expects() -> None:
    block = readme_docker_block()
    volume = json.loads(one("VOLUME"))[0]
    assert f"-v novita-monitor-data:{volume}" in block
    assert f"-p {one('EXPOSE')}:{one('EXPOSE')}" in block
    assert "-e NOVITA_API_KEY" in block
    assert "docker build -t novita-monitor ." in block
    assert "--stop-timeout" in block


# ---------------------------------------------------------------------------------------------
# the build context


def _excluded(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, pattern in patterns:
        if any(pattern.fullmatch(p) for p in prefixes):
            excluded = not negated
    return excluded


def _patterns() -> list[tuple[bool, re.Pattern[str]]]:
    out = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(glob):
            if glob.startswith("**/", i):
                regex += "(.*/)?"
                i += 3
            elif glob.startswith("**", i):
                regex += ".*"
                i += 2
            elif glob[i] == "*":
                regex += "[^/]*"
                i += 1
            elif glob[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(glob[i])
                i += 1
        out.append((negated, re.compile(regex)))
    return out


def test_the_build_context_carries_only_what_the_build_copies() -> None:
    patterns = _patterns()
    for kept in (
        "pyproject.toml",
        "README.md",
        "monitor/cli/__init__.py",
        "monitor/shipped_rules/idle-gpu.yaml",
        "docker/constraints.txt",
        "docker/config.yaml",
    ):
        assert not _excluded(kept, patterns), kept
    for dropped in (
        ".venv/bin/python",
        ".git/HEAD",
        "monitor.db",
        "data/monitor.db-wal",
        "monitor/__pycache__/app.cpython-311.pyc",
        "tests/test_docker.py",
        "novita-monitor.yaml",
        "api-key",
    ):
        assert _excluded(dropped, patterns), dropped
    for _word, args in (i for i in instructions(DOCKERFILE.read_text()) if i[0] == "COPY"):
        for source in shlex.split(args)[:-1]:
            assert not _excluded(source.rstrip("/"), patterns), source


# ---------------------------------------------------------------------------------------------
# the entrypoint, run


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def image_root() -> Iterator[tuple[Path, RunAs]]:
    """The image's layout under a temporary root: the package installed in a venv (the
    image's site-packages), /etc/novita-monitor/config.yaml, the volume; the image's user."""
    uid = int(one("USER")) if one("USER").isdigit() else 10001
    run_as = RunAs(uid, uid, uid) if os.geteuid() == 0 else RunAs.pick()
    root = scratch("nm-docker-")
    try:
        install_venv(root / "usr" / "local", run_as)
        volume = Path(str(root) + json.loads(one("VOLUME"))[0])
        volume.mkdir(parents=True)
        run_as.own(volume, 0o700)
        yield root, run_as
    finally:
        remove(root)


def test_the_entrypoint_runs_the_daemon_against_the_simulator(
    image_root: tuple[Path, RunAs],
) -> None:
    root, run_as = image_root

    def mapped(value: str) -> str:
        for prefix in ("/etc/novita-monitor", "/var/lib"):
            if value == prefix or value.startswith(prefix + "/"):
                return str(root) + value
        return value

    sim = Process(["simulator", "--port", "0", "--scenario", "demo"])
    daemon: Proc | None = None
    try:
        sim.wait_for("the simulator", lambda: any("listening on" in x for x in sim.lines), 30)
        url = next(x for x in sim.lines if "listening on" in x).split("listening on ")[1]
        config = image_config()
        config["accounts"][0]["base_url"] = url
        config["database"] = "sqlite:///" + mapped(config["database"].removeprefix("sqlite:///"))
        config["schedules"] = {"evaluate": 1}
        if "http" not in Config.model_fields:
            # the http: section arrives with issue 11 section 3 (another branch): until then
            # the daemon would refuse the key; the assertions on it are above
            config.pop("http")
            http = None
        else:  # another port than the image's: tests run side by side on this machine
            http = _free_port()
            config["http"]["listen"] = f"0.0.0.0:{http}"
        etc = root / "etc" / "novita-monitor"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "config.yaml").write_text(yaml.safe_dump(config))
        (etc / "config.yaml").chmod(0o644)

        env = {k: mapped(v) for k, v in image_env().items()}
        env |= {"PATH": f"{root}/usr/local/bin:/usr/bin:/bin", "HOME": "/", "LANG": "C.UTF-8"}
        env["NOVITA_API_KEY"] = API_KEY  # docker run -e NOVITA_API_KEY
        argv = [*exec_form("ENTRYPOINT"), *(mapped(a) for a in exec_form("CMD"))]
        workdir = [a for w, a in instructions(DOCKERFILE.read_text()) if w == "WORKDIR"][-1]
        daemon = Proc(run_as.argv(argv, groups=False), env, cwd=mapped(workdir))

        def evaluations() -> int:
            return sum('"event": "evaluated"' in x for x in daemon.lines)

        daemon.wait_for("two evaluations", lambda: evaluations() >= 2, 90)
        db = Path(mapped(config["database"].removeprefix("sqlite:///")))
        assert db.exists() and db.stat().st_uid == run_as.uid
        assert API_KEY not in "\n".join(daemon.lines)
        if http is not None:
            health = json.loads(one("HEALTHCHECK").split("CMD", 1)[1])
            port = image_config()["http"]["listen"].rpartition(":")[2]
            health = [a.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{http}/") for a in health]
            done = subprocess.run(
                run_as.argv(health, groups=False), env=env, capture_output=True, timeout=30
            )
            assert done.returncode == 0, done.stderr
        assert daemon.stop() == 0  # docker stop: SIGTERM to the entrypoint's process itself
        daemon = None
    finally:
        if daemon is not None:
            daemon.stop()
        sim.stop()
