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


def write_config(tmp_path: Path, base_url: str = "http://localhost", extra: str = "") -> Path:
    path = tmp_path / "novita-monitor.yaml"
    path.write_text(
        "accounts:\n"
        "  - name: main\n"
        "    api_key_env: NOVITA_API_KEY\n"
        f"    base_url: {base_url}\n"
        f"database: sqlite:///{tmp_path / 'monitor.db'}\n" + extra
    )
    return path


def open_app(tmp_path: Path, sim_app: Any, clock: Any, extra: str = "", **kwargs: Any) -> App:
    config = Config.load(write_config(tmp_path, extra=extra), env=ENV)
    return App.open(
        config,
        clock,
        env=ENV,
        transport_factory=lambda _name: httpx.ASGITransport(app=sim_app),
        **kwargs,
    )
