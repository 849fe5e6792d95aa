"""The ``report`` command: spend, idle GPU-hours, savings, alerts and subscription advice over
the last days, as text, JSON or one self-contained HTML file. Registered on
``monitor.cli``; reads the database only (no API call)."""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import click

from monitor.cli.common import clock, config_option, handle_errors, load, open_database
from monitor.errors import UserError
from monitor.report.render import FORMATS


@click.command()
@config_option
@click.option(
    "--since",
    default="7d",
    show_default=True,
    help="How far back (e.g. 7d, 30d, 36h); the report starts at that day's midnight UTC.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the report to this file (default: standard output).",
)
@handle_errors
def report(config_path: str | None, since: str, fmt: str, output: Path | None) -> None:
    """Spend by day, instance and product, idle GPU-hours and their cost, savings realized
    by actions, alerts raised and subscription advice (days in UTC; unknown figures say
    "unknown")."""
    from monitor.app import intervals
    from monitor.config import parse_duration
    from monitor.facts import StoreFacts
    from monitor.logs import configure_logging
    from monitor.report import build_report, render
    from monitor.report.model import report_window

    try:
        seconds = float(parse_duration(since))
    except (ValueError, TypeError) as exc:
        raise UserError(f"--since: {exc}") from None
    if seconds <= 0:
        raise UserError(f"--since: {since!r} must be longer than zero (e.g. 7d)")
    config = load(config_path)
    configure_logging(config.log.format, config.log.level, stream=sys.stderr)
    now = clock().now()
    with open_database(config) as store:
        facts = StoreFacts(
            store,
            [a.name for a in config.accounts],
            intervals(config),
            config.stale_after,
            now=now,
        )
        start, end = report_window(now, timedelta(seconds=seconds))
        built = build_report(facts, start, end)
    text = render(built, fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    _write(output, text)
    click.echo(f"report written to {output}", err=True)


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file renamed over it)."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"--output: cannot write in {folder}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"--output: cannot write {path}: {exc.strerror or exc}") from None


COMMANDS = [report]
