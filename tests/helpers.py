"""Helpers shared by the end-to-end tests: a config file pointing at the in-process simulator, and
an App wired to it through httpx's ASGI transport (no socket, one event loop, injected clock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from monitor.app import App
from monitor.config import Config

API_KEY = "sk-test-0123456789abcdef0123456789abcdef"
ENV = {"NOVITA_API_KEY": API_KEY}


def write_config(
    tmp_path: Path,
    base_url: str = "http://localhost",
    extra: str = "",
    database: str | None = None,
) -> Path:
    path = tmp_path / "novita-monitor.yaml"
    database = database or f"sqlite:///{tmp_path / 'monitor.db'}"
    path.write_text(
        "accounts:\n"
        "  - name: main\n"
        "    api_key_env: NOVITA_API_KEY\n"
        f"    base_url: {base_url}\n"
        f"database: {database}\n" + extra
    )
    return path


def open_app(
    tmp_path: Path,
    sim_app: Any,
    clock: Any,
    extra: str = "",
    database: str | None = None,
    **kwargs: Any,
) -> App:
    """An App on the in-process simulator ``sim_app`` (its pipeline: ``monitor.pipeline``)."""
    config = Config.load(write_config(tmp_path, extra=extra, database=database), env=ENV)
    return App.open(
        config,
        clock,
        env=ENV,
        transport_factory=lambda _name: httpx.ASGITransport(app=sim_app),
        **kwargs,
    )


class Process:
    """A real ``python -m monitor ...`` process (the daemon, the simulator), its output lines
    collected by a thread; waits are bounded by deadlines, for real work, never for model
    time (that is the simulator's clock)."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        *,
        argv: list[str] | None = None,
        cwd: str | None = None,
    ) -> None:
        """``args`` to ``python -m monitor``; or ``argv``, a whole command line (an installed
        command, a unit's ``ExecStart``), run in ``cwd``."""
        import subprocess
        import sys
        import threading

        self.proc = subprocess.Popen(
            argv if argv is not None else [sys.executable, "-m", "monitor", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, what: str, predicate: Any, deadline_s: float = 60.0) -> None:
        import time

        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        if predicate():
            return
        raise AssertionError(f"timed out waiting for {what}; output:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 15 s; the exit status."""
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
        return int(self.proc.returncode)


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` from a SQLite file another process writes (none while it is created)."""
    import sqlite3

    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=10)
    try:
        return list(con.execute(sql).fetchall())
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def skip_unless_ci(reason: str) -> None:
    """Skip locally with ``reason`` (a tool `.ci/run` installs is missing here); in CI (``CI``
    set) fail instead: there a missing tool is a defect, never a silent skip."""
    import os

    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{reason}: missing in CI")
    pytest.skip(reason)
