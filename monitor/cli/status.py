"""``novita-monitor status``: the fleet at a glance, from the stored data."""

from __future__ import annotations

import json
import sys

import click

from monitor.cli.common import clock, config_option, handle_errors, load, open_database


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def status(config_path: str | None, as_json: bool) -> None:
    """The fleet at a glance: balance, burn rate, runway, instances, stale data."""
    from monitor.app import intervals
    from monitor.logs import configure_logging
    from monitor.status import fleet_status, render_text

    config = load(config_path)
    configure_logging("json" if as_json else config.log.format, config.log.level, stream=sys.stderr)
    with open_database(config) as store:
        data = fleet_status(
            store,
            [a.name for a in config.accounts],
            clock().now(),
            intervals(config),
            config.stale_after,
        )
    click.echo(json.dumps(data, indent=2) if as_json else render_text(data))


COMMANDS = [status]
