"""The command line: a thin layer over ``monitor.app`` (the composition root).

Exit status: 0 success, 2 invalid input (configuration, rules, arguments), 1 runtime failure.
User errors print one clear message, never a traceback.

One module per command group; each lists its commands in ``COMMANDS`` and imports only
``monitor.cli.common`` of this package (never ``monitor.cli`` itself: no import cycle). A new
command module is registered with one line below, ``_register(module)``; a new ``bench``
subcommand is one more ``@bench.command`` in ``monitor/cli/bench.py``.
"""

from __future__ import annotations

from types import ModuleType

import click

from monitor import __version__
from monitor.cli import (
    actions,
    alerts,
    backtest,
    bench,
    demo,
    report,
    rules,
    run,
    sim,
    status,
    tasks,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="novita-monitor")
def cli() -> None:
    """Watch a Novita AI GPU-cloud account: idle GPUs, balance runway, expiring subscriptions,
    failed tasks. Snapshots the account into a database, evaluates rules, notifies."""


def _register(module: ModuleType) -> None:
    for command in module.COMMANDS:
        cli.add_command(command)


_register(run)  # run, once, check
_register(status)  # status
_register(tasks)  # watch-task
_register(alerts)  # alerts, silence add|list|remove, notify-test
_register(actions)  # plan, actions, approve, reject, undo
_register(rules)  # schema, test-rules
_register(sim)  # simulator
_register(bench)  # bench collect|rules|store
_register(demo)  # demo
_register(report)  # report
_register(backtest)  # backtest


def main() -> None:
    cli.main(prog_name="novita-monitor")


__all__ = ["cli", "main"]
