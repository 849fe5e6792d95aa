"""The command line: a thin layer over ``monitor.app`` and friends.

Exit status: 0 success, 2 invalid input (configuration, rules, arguments), 1 runtime failure.
User errors print one clear message, never a traceback.
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from monitor import __version__
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


def _setup_logs(config: Any = None, fmt: Any = None) -> None:
    from monitor.logs import configure_logging

    if config is not None:
        configure_logging(fmt or config.log.format, config.log.level)
    else:
        configure_logging(fmt or "auto", "info")


def _load(config_path: str | None) -> Any:
    from monitor.app import load_config

    return load_config(config_path)


@contextmanager
def open_database(config: Any) -> Iterator[Any]:
    """The configured store, closed on the way out: how every command opens the database, so
    each fails the same way (one line; exit 2 for what the user must fix, 1 for what may pass
    on a retry: ``monitor.store.db.open_store``)."""
    from monitor.store.db import open_store

    store = open_store(config.database_url)
    try:
        yield store
    finally:
        store.close()


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="novita-monitor")
def cli() -> None:
    """Watch a Novita AI GPU-cloud account: idle GPUs, balance runway, expiring subscriptions,
    failed tasks. Snapshots the account into a database, evaluates rules, notifies."""


# ---------------------------------------------------------------------------------------------
# simulator


@cli.command()
@click.option("--port", type=int, default=8765, show_default=True, help="Port on 127.0.0.1.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--scenario", type=click.Choice(["demo", "fleet"]), default="demo", show_default=True)
@click.option("--instances", type=int, default=20, show_default=True, help="Fleet size (fleet).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--api-key", default=None, help="Accept only this key (default: any non-empty key).")
@click.option("--latency-ms", type=float, default=0.0, show_default=True)
@click.option(
    "--max-concurrency", type=int, default=0, help="Requests served at once (0: no limit)."
)
@click.option("--rate-limit", type=float, default=0.0, help="Requests per second (0: no limit).")
@click.option("--error-rate", type=float, default=0.0, help="Share of requests answered 500/503.")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Clock speed factor.")
@click.option(
    "--quirk",
    "quirks",
    multiple=True,
    metavar="KEY=VALUE",
    help="Answer one open question of the API docs one way (repeatable); see below.",
)
@handle_errors
def simulator(
    port: int,
    host: str,
    scenario: str,
    instances: int,
    seed: int,
    api_key: str | None,
    latency_ms: float,
    max_concurrency: int,
    rate_limit: float,
    error_rate: float,
    speed: float,
    quirks: tuple[str, ...],
) -> None:
    """Serve a simulated Novita API (same paths and wire format) on a local port.

    The ground truth of the scenario is at GET /_sim/truth; quirks can also be changed at run
    time with POST /_sim/quirks. Quirks (KEY=VALUES):
    """
    from monitor.sim.quirks import QuirkError, Quirks
    from monitor.sim.server import run_simulator

    try:
        chosen = Quirks.of(quirks)
    except QuirkError as exc:
        raise UserError(f"--quirk: {exc}") from None
    ensure_port_free(host, port)
    if api_key:
        from monitor.logs import register_secret

        register_secret(api_key)
    run_simulator(
        port=port,
        scenario=scenario,
        instances=instances,
        seed=seed,
        api_key=api_key,
        latency_ms=latency_ms,
        max_concurrency=max_concurrency,
        rate_limit=rate_limit,
        error_rate=error_rate,
        speed=speed,
        host=host,
        quirks=chosen,
    )


def _quirk_help() -> str:
    import textwrap

    from monitor.sim.quirks import SWITCHES

    # \b keeps click from re-wrapping the list into one paragraph
    lines = ["\b"]
    for s in SWITCHES:
        lines.append(f"{s.key}={'|'.join(s.values)} (default {s.default})")
        lines.extend(textwrap.wrap(s.meaning, 72, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines)


simulator.help = inspect.cleandoc(simulator.help or "") + "\n\n" + _quirk_help()


# ---------------------------------------------------------------------------------------------
# collect


@cli.command()
@config_option
@click.option(
    "--clock",
    "clock_url",
    metavar="URL",
    default=None,
    help="FOR TESTS AND DEMOS ONLY: take the time from a local simulator's clock "
    "(http://127.0.0.1:PORT/_sim/clock); the schedules then run at the simulator's --speed.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Plan and record the rules' actions (what, why, from which data), call nothing.",
)
@handle_errors
def run(config_path: str | None, clock_url: str | None, dry_run: bool) -> None:
    """Run the daemon in the foreground (SIGTERM/SIGINT stop, SIGHUP reloads)."""
    # Until the daemon's event loop takes the signals over, a stop request just ends the
    # process (nothing is open yet): status 0, as for a stop at any later moment.
    before = {sig: signal.signal(sig, _exit_now) for sig in (signal.SIGTERM, signal.SIGINT)}
    from monitor.app import find_config_path, run_async
    from monitor.daemon import Daemon

    if clock_url is not None:
        _check_clock_url(clock_url)
    config = _load(config_path)
    _setup_logs(config)
    path = find_config_path(config_path, os.environ, Path.cwd())
    assert path is not None
    try:
        run_async(Daemon(path, clock_url=clock_url, dry_run=dry_run).run())
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _check_clock_url(url: str) -> None:
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


def _exit_now(signum: int, _frame: Any) -> None:
    raise SystemExit(0)


@cli.command()
@config_option
@click.option("--collector", "collectors", multiple=True, help="Only these collectors.")
@click.option("--json", "as_json", is_flag=True, help="Print the run reports as JSON.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Plan and record the rules' actions (what, why, from which data), call nothing.",
)
@handle_errors
def once(
    config_path: str | None, collectors: tuple[str, ...], as_json: bool, dry_run: bool
) -> None:
    """Run every collector once, evaluate the rules once, act, deliver notifications, exit.

    Exit status 1 when a collector failed outright, a notification could not be delivered (it
    stays pending: the next run or the daemon retries it), or an action failed or ended with
    an unknown outcome (refused and breaker-skipped actions are printed, not failures)."""
    from monitor.app import App, run_async

    config = _load(config_path)
    _setup_logs(config, "console" if not as_json else "json")

    async def go() -> Any:
        app = App.open(config, dry_run=dry_run)
        try:
            return await app.once(list(collectors) or None)
        finally:
            await app.aclose()

    result = run_async(go())
    reports = result.reports
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        for r in reports:
            counts = " ".join(f"{k}={v}" for k, v in r.counts.items())
            tail = f"  ({r.error})" if r.error else ""
            click.echo(f"{r.account:<12} {r.collector:<18} {r.outcome:<8} {counts}{tail}")
        for line in result.summary_lines():
            click.echo(line)
    failed = any(r.outcome == "failed" for r in reports)
    if failed or result.failed_deliveries or result.failed_actions:
        sys.exit(1)


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def status(config_path: str | None, as_json: bool) -> None:
    """The fleet at a glance: balance, burn rate, runway, instances, stale data."""
    from monitor.app import intervals
    from monitor.clock import SystemClock
    from monitor.logs import configure_logging
    from monitor.status import fleet_status, render_text

    config = _load(config_path)
    configure_logging("json" if as_json else config.log.format, config.log.level, stream=sys.stderr)
    with open_database(config) as store:
        data = fleet_status(
            store,
            [a.name for a in config.accounts],
            SystemClock().now(),
            intervals(config),
            config.stale_after,
        )
    click.echo(json.dumps(data, indent=2) if as_json else render_text(data))


@cli.command()
@config_option
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@handle_errors
def check(config_path: str | None, paths: tuple[Path, ...]) -> None:
    """Validate the configuration (and its rules), or the rule files/folders given."""
    from monitor.checks import check_paths

    lines = check_paths(config_path, list(paths))
    for line in lines:
        click.echo(line)


@cli.command("watch-task")
@config_option
@click.argument("task_id")
@click.option("--account", default=None, help="Account name (needed with several accounts).")
@click.option("--label", default="", help="A label for messages.")
@handle_errors
def watch_task(config_path: str | None, task_id: str, account: str | None, label: str) -> None:
    """Watch an async task id until it ends (the API cannot list async tasks)."""
    from monitor.clock import SystemClock

    config = _load(config_path)
    names = [a.name for a in config.accounts]
    if account is None:
        if len(names) != 1:
            raise UserError(f"several accounts are configured ({', '.join(names)}): pass --account")
        account = names[0]
    elif account not in names:
        raise UserError(f"no account named {account!r} (configured: {', '.join(names)})")
    with open_database(config) as store:
        store.ensure_account(account)
        store.watch_task(account, task_id, label, SystemClock().now())
    click.echo(f"watching async task {task_id} on account {account}")


# ---------------------------------------------------------------------------------------------
# bench


@cli.group()
def bench() -> None:
    """Benchmarks (numbers printed, last line JSON)."""


@bench.command("collect")
@click.option("--instances", type=int, default=1000, show_default=True)
@click.option("--latency-ms", type=float, default=50.0, show_default=True)
@click.option("--concurrency", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--runs", type=int, default=1, show_default=True, help="Repeat, report the median.")
@handle_errors
def bench_collect(
    instances: int, latency_ms: float, concurrency: int, seed: int, runs: int
) -> None:
    """Time a steady-state collection cycle against a simulated fleet, vs concurrency 1."""
    from monitor.bench import bench_collect as run_bench

    run_bench(instances, latency_ms, concurrency, seed, runs, echo=click.echo)


# registers alerts, silence, notify-test (cli_alerts); plan, actions, approve, reject, undo
from monitor import cli_actions, cli_alerts  # noqa: E402,F401


@bench.command("rules")
@click.option("--instances", type=int, default=1000, show_default=True)
@click.option("--days", type=int, default=7, show_default=True)
@click.option("--runs", type=int, default=1, show_default=True, help="Repeat, report the median.")
@click.option("--seed", type=int, default=1, show_default=True)
@handle_errors
def bench_rules(instances: int, days: int, runs: int, seed: int) -> None:
    """Time one evaluation of the shipped rules over DAYS of history for N instances."""
    from monitor.bench_rules import bench_rules as run_bench

    run_bench(instances, days, seed=seed, runs=runs, echo=click.echo)


def main() -> None:
    cli.main(prog_name="novita-monitor")


# ---------------------------------------------------------------------------------------------
# rules


@cli.command()
@click.option(
    "--config-schema", is_flag=True, help="Print the configuration file's schema instead."
)
@handle_errors
def schema(config_schema: bool) -> None:
    """Print the JSON Schema of rule files (for editors)."""
    if config_schema:
        from monitor.config import Config

        click.echo(json.dumps(Config.model_json_schema(), indent=2))
        return
    from monitor.rules import rule_schema

    click.echo(json.dumps(rule_schema(), indent=2))


@cli.command("test-rules")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@handle_errors
def test_rules(paths: tuple[Path, ...]) -> None:
    """Run rule test files (facts over time in, expected alerts out), like promtool test rules."""
    from monitor.rules import run_rule_tests

    failed = total = 0
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        for result in run_rule_tests(path):
            total += 1
            if result.passed:
                click.echo(str(result))
            else:
                failed += 1
                click.echo(str(result))
    if total == 0:
        raise UserError("no rule tests found in " + ", ".join(map(str, paths)))
    click.echo(f"{total - failed} passed, {failed} failed")
    if failed:
        sys.exit(1)


# backtest (cli_backtest)
from monitor import cli_backtest  # noqa: E402

for _command in cli_backtest.COMMANDS:
    cli.add_command(_command)
