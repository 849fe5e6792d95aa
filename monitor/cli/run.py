"""The daemon's commands: ``run`` (the daemon), ``once`` (one cycle, cron-friendly) and
``check`` (validate what ``run`` would load: ``systemctl reload`` runs it first)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from monitor.cli.common import check_clock_url, config_option, handle_errors, load, setup_logs


@click.command()
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
        check_clock_url(clock_url)
    config = load(config_path)
    setup_logs(config)
    path = find_config_path(config_path, os.environ, Path.cwd())
    assert path is not None
    try:
        run_async(Daemon(path, clock_url=clock_url, dry_run=dry_run).run())
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _exit_now(signum: int, _frame: Any) -> None:
    raise SystemExit(0)


@click.command()
@config_option
@click.option("--collector", "collectors", multiple=True, help="Only these collectors.")
@click.option("--json", "as_json", is_flag=True, help="Print the run reports as JSON.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Plan and record the rules' actions (what, why, from which data), call nothing.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Run even while a daemon runs on the same database (it leads: see README, "
    "PostgreSQL and replicas).",
)
@handle_errors
def once(
    config_path: str | None,
    collectors: tuple[str, ...],
    as_json: bool,
    dry_run: bool,
    force: bool = False,
) -> None:
    """Run every collector once, evaluate the rules once, act, deliver notifications, exit.

    Exit status 1 when a collector failed outright, a notification could not be delivered (it
    stays pending: the next run or the daemon retries it), or an action failed or ended with
    an unknown outcome (refused and breaker-skipped actions are printed, not failures)."""
    from monitor.app import App, run_async

    config = load(config_path)
    setup_logs(config, "console" if not as_json else "json")

    from monitor.leader import refuse_if_led
    from monitor.store.filelock import DatabaseLock

    # a daemon on the same database already does all this: refused unless --force
    lock = None if force else DatabaseLock.for_url(config.database_url)

    async def go() -> Any:
        app = App.open(config, dry_run=dry_run)  # the database's folder and file made first
        try:
            if lock is not None:
                lock.acquire("once")  # SQLite: a daemon holds the file's lock
            if app.store.dialect == "postgresql" and not force:
                refuse_if_led(app.store.engine, app.clock.now(), [c.account for c in app.contexts])
            return await app.once(list(collectors) or None)
        finally:
            await app.aclose()
            if lock is not None:
                lock.release()

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


@click.command()
@config_option
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@handle_errors
def check(config_path: str | None, paths: tuple[Path, ...]) -> None:
    """Validate the configuration (and its rules), or the rule files/folders given."""
    from monitor.checks import check_paths

    lines = check_paths(config_path, list(paths))
    for line in lines:
        click.echo(line)


COMMANDS = [run, once, check]
