"""What every command module of ``monitor.cli`` shares: the ``--config`` option, the error
handler (one line, the right exit status), logging set-up, the clock and environment the tests
inject, and the formatting of times and money in command output.

Nothing here builds the monitor's parts: commands get them from ``monitor.app`` (the
composition root). Command modules import this module, never ``monitor.cli`` itself.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from functools import wraps
from typing import Any, TypeVar

import click

from monitor.clock import Clock, SystemClock
from monitor.errors import MonitorError, RuntimeFailure, UserError

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config",
    "config_path",
    metavar="FILE",
    default=None,
    help="Configuration file (default: $NOVITA_MONITOR_CONFIG, ./novita-monitor.yaml, "
    "$XDG_CONFIG_HOME/novita-monitor/config.yaml, /etc/novita-monitor/config.yaml).",
)


def handle_errors(fn: F) -> F:
    """Turn the monitor's errors into one message and the right exit status."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            click.echo(f"error: {_one_line_if_repeated(exc)}", err=True)
            sys.exit(exc.exit_code)
        except MonitorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _one_line_if_repeated(exc: UserError) -> str:
    """A lone problem that repeats the error's own message is printed once, with its place
    (``file:line: account 'main': environment variable ... is not set``)."""
    head = exc.args[0] if exc.args else ""
    if len(exc.problems) == 1 and exc.problems[0].message == head:
        return str(exc.problems[0])
    return str(exc)


def setup_logs(config: Any = None, fmt: Any = None) -> None:
    from monitor.logs import configure_logging

    if config is not None:
        configure_logging(fmt or config.log.format, config.log.level)
    else:
        configure_logging(fmt or "auto", "info")


def load(config_path: str | None) -> Any:
    from monitor.app import load_config

    return load_config(config_path)


def open_database(config: Any) -> AbstractContextManager[Any]:
    """The configured store, through the composition root (``monitor.app.open_database``)."""
    from monitor.app import open_database as opened

    return opened(config)


def ensure_port_free(host: str, port: int) -> None:
    """Fail in one line (exit 1: the port may be free on a retry) when ``host:port`` is taken,
    rather than letting the server log its bind error and a traceback."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise RuntimeFailure(
                    f"cannot listen on {host}:{port}: the port is in use (stop what uses it, "
                    "or pick another port)"
                ) from None
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------
# what the invoking code may inject: click's context object (``obj={"clock": ManualClock(...),
# "env": {...}}`` in tests)


def _obj() -> Mapping[str, Any]:
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj if isinstance(obj, Mapping) else {}


def clock() -> Clock:
    """The current time's source: the system clock unless the caller injected one."""
    given = _obj().get("clock")
    return given if given is not None else SystemClock()


def env() -> Mapping[str, str]:
    """The environment channel URLs are read from (``notify-test``)."""
    given = _obj().get("env")
    return given if given is not None else os.environ


# ---------------------------------------------------------------------------------------------
# formatting


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def when(value: datetime | None, now: datetime) -> str:
    """``2026-11-20 12:00 UTC (2h ago)`` / ``(in 1h30m)``."""
    if value is None:
        return "-"
    from monitor.rules.durations import format_duration

    delta = now - value
    seconds = int(abs(delta.total_seconds())) // 60 * 60
    span = format_duration(timedelta(seconds=seconds)) if seconds else "now"
    rel = span if span == "now" else (f"{span} ago" if delta >= timedelta(0) else f"in {span}")
    return f"{value:%Y-%m-%d %H:%M} UTC ({rel})"


def usd(value: float | None) -> str:
    if value is None:
        return "?"
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def check_clock_url(url: str) -> None:
    """``--clock`` follows a simulator on this machine: an http(s) URL to a loopback host."""
    from urllib.parse import urlsplit

    from monitor.config import is_loopback

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(
            f"--clock: {url!r} is not an http URL (expected http://127.0.0.1:PORT/_sim/clock)"
        )
    if not is_loopback(parts.hostname):
        raise UserError(
            f"--clock: {parts.hostname} is not this machine (a simulator's clock is followed "
            "only on a loopback address: 127.0.0.1, ::1 or localhost)"
        )
