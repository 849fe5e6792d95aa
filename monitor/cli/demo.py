"""``novita-monitor demo``: the simulator's demo scenario and the daemon's pipeline on one
simulated clock (:mod:`monitor.demo`). Registered in ``monitor.cli``."""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path
from typing import Any

import click

from monitor.cli.common import handle_errors
from monitor.errors import UserError


class _Speed(click.ParamType):
    """Simulated seconds per wall second (a number above 0), or ``max``."""

    name = "X|max"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        if isinstance(value, str) and value.lower() == "max":
            return math.inf
        try:
            speed = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number or 'max'", param, ctx)
        if not speed > 0:
            self.fail(f"{value!r}: expected a number above 0 (or 'max')", param, ctx)
        return speed


@click.command()
@click.option(
    "--for",
    "span",
    metavar="DURATION",
    default=None,
    help="Simulated time to run (e.g. 90m, 3h; default 60m: enough for the whole story).",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keep the database in this new SQLite file (default: a temporary one, deleted).",
)
@click.option(
    "--speed",
    type=_Speed(),
    default=None,
    help="At most this many simulated seconds per wall second (default 120: the default span "
    "in about 30 s; 'max': as fast as the work allows).",
)
@handle_errors
def demo(span: str | None, db: Path | None, speed: float | None) -> None:
    """Watch the daemon on a simulated account, no account or network needed.

    Runs the simulator's demo scenario and the daemon's pipeline (collect, evaluate, act,
    notify) on one simulated clock, with the shipped rules plus an idle-stop rule (15-minute
    grace) and a renewal rule; alerts print to the console. Ctrl-C ends it early with the
    summary."""
    # Until the demo's event loop takes the signals over (it then ends with the summary), a
    # stop request just ends the process, status 0, as for `run`.
    before = {sig: signal.signal(sig, _interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _demo(span, db, speed)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _interrupted(signum: int, _frame: Any) -> None:
    click.echo("demo interrupted")
    raise SystemExit(0)


def _demo(span: str | None, db: Path | None, speed: float | None) -> None:
    from monitor.app import run_async
    from monitor.demo import DEFAULT_SPAN, DEFAULT_SPEED, DemoOptions, run_demo
    from monitor.logs import configure_logging
    from monitor.rules.durations import parse_duration

    try:
        length = DEFAULT_SPAN if span is None else parse_duration(span)
    except (ValueError, TypeError) as exc:
        raise UserError(f"--for {span!r}: {exc} (expected a duration such as 90m or 3h)") from None
    if length.total_seconds() < 60:
        raise UserError(f"--for {span!r}: expected at least 1m of simulated time")
    configure_logging("console", "warning")
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    options = DemoOptions(span=length, speed=DEFAULT_SPEED if speed is None else speed, db=db)
    run_async(run_demo(options))


COMMANDS = [demo]
