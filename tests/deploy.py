"""Helpers of the deployment tests (``test_systemd.py``, ``test_docker.py``): the installed
layout the README describes, built in a temporary folder from a wheel of this checkout, and a
real process of its command run as an unprivileged user."""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import Process

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534


def free_gid() -> int:
    """A group id no group uses: the stand-in for the unit's ``SupplementaryGroups=`` group."""
    for gid in range(61000, 65000):
        try:
            grp.getgrgid(gid)
        except KeyError:
            return gid
    raise AssertionError("no free group id")


@dataclass
class RunAs:
    """How commands run: as ``nobody`` with one supplementary group when the tests run as root
    (a systemd ``DynamicUser=`` with ``SupplementaryGroups=``), else as the current user."""

    uid: int
    gid: int
    group: int  # the supplementary group the configuration is readable through

    @classmethod
    def pick(cls) -> RunAs:
        if os.geteuid() == 0:
            return cls(NOBODY, NOBODY, free_gid())
        return cls(os.getuid(), os.getgid(), os.getgid())

    @property
    def privileged(self) -> bool:
        return os.geteuid() == 0

    def argv(self, command: list[str], groups: bool = True) -> list[str]:
        if not self.privileged:
            return command
        extra = [f"--groups={self.group}"] if groups else ["--clear-groups"]
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", *extra, "--", *command]

    def own(self, path: Path, mode: int, group_only: bool = False) -> None:
        """``path`` as systemd would hand it over: owned by the service user (or root with
        the supplementary group when ``group_only``), with ``mode``."""
        if self.privileged:
            if group_only:
                os.chown(path, 0, self.group)
            else:
                os.chown(path, self.uid, self.gid)
        path.chmod(mode)


def _interpreter(run_as: RunAs) -> str:
    """A Python the unprivileged user may run, of this interpreter's version (pyenv builds
    under /root are not)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = getattr(sys, "_base_executable", sys.executable)
    for candidate in (base, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if not Path(candidate).exists():
            continue
        done = subprocess.run(
            run_as.argv([candidate, "-c", "import sys; print(sys.version_info[:2])"]),
            capture_output=True,
            text=True,
            cwd="/",
        )
        if done.returncode == 0 and done.stdout.strip() == str(sys.version_info[:2]):
            return candidate
    raise AssertionError(
        f"no Python {version} the unprivileged user (uid {run_as.uid}) may run: install "
        f"python{version} system-wide (apt-get install python3) for the deployment tests"
    )


def install_venv(prefix: Path, run_as: RunAs) -> Path:
    """``python3 -m venv PREFIX && PREFIX/bin/pip install /path/to/clone``, as the README says,
    without the network: the wheel of this checkout, its runtime dependencies copied from the
    test environment. Returns the installed ``novita-monitor``."""
    dist = prefix.parent / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = dist.glob("novita_monitor-*.whl")
    subprocess.run(
        [_interpreter(run_as), "-m", "venv", "--without-pip", str(prefix)],
        check=True,
        capture_output=True,
    )
    python = prefix / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    copy_runtime_dependencies(purelib)
    for folder, dirs, files in os.walk(prefix):
        for name in dirs + files:
            p = Path(folder, name)
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o444 | (0o111 if p.is_dir() else 0))
    command = prefix / "bin" / "novita-monitor"
    done = subprocess.run(
        run_as.argv([str(command), "--version"]), capture_output=True, text=True, cwd="/"
    )
    assert done.returncode == 0, f"the installed command does not run: {done.stderr}"
    return command


def runtime_requirements() -> list[Requirement]:
    """pyproject's dependencies and its ``postgres`` extra (what the Docker image installs),
    those whose markers hold here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for r in project["optional-dependencies"]["postgres"]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate()]


def runtime_closure() -> set[str]:
    """The distributions the runtime requirements need, theirs included (as installed in the
    test environment), canonical names."""
    seen: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in runtime_requirements()]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        for sub in metadata.requires(req.name) or []:
            child = Requirement(sub)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if child.marker is None or any(child.marker.evaluate(e) for e in envs):
                todo.append((child, frozenset(child.extras)))
    return seen


def copy_runtime_dependencies(purelib: Path) -> None:
    """What ``pip install`` would have put beside the package, from the test environment
    (the same interpreter version, no network): every file of every runtime distribution."""
    for name in sorted(runtime_closure()):
        dist = metadata.distribution(name)
        for file in dist.files or []:
            if file.parts and file.parts[0] == "..":
                continue  # scripts in bin/: the layout's own
            source = Path(str(dist.locate_file(file)))
            if source.is_file():
                target = purelib / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)


def scratch(prefix: str) -> Path:
    """A temporary folder others may traverse (pytest's tmp_path is 0700 for root)."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    return root


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def Proc(argv: list[str], env: dict[str, str], cwd: str = "/") -> Process:
    """A real process running a whole command line (the installed command, a unit's own
    lines), its output collected, with bounded waits: :class:`tests.helpers.Process`."""
    return Process([], env, argv=argv, cwd=cwd)
