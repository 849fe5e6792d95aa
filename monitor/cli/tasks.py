"""``novita-monitor watch-task``: follow an async task id (the API cannot list them)."""

from __future__ import annotations

import click

from monitor.cli.common import clock, config_option, handle_errors, load, open_database
from monitor.errors import UserError


@click.command("watch-task")
@config_option
@click.argument("task_id")
@click.option("--account", default=None, help="Account name (needed with several accounts).")
@click.option("--label", default="", help="A label for messages.")
@handle_errors
def watch_task(config_path: str | None, task_id: str, account: str | None, label: str) -> None:
    """Watch an async task id until it ends (the API cannot list async tasks)."""
    config = load(config_path)
    names = [a.name for a in config.accounts]
    if account is None:
        if len(names) != 1:
            raise UserError(f"several accounts are configured ({', '.join(names)}): pass --account")
        account = names[0]
    elif account not in names:
        raise UserError(f"no account named {account!r} (configured: {', '.join(names)})")
    with open_database(config) as store:
        store.ensure_account(account)
        store.watch_task(account, task_id, label, clock().now())
    click.echo(f"watching async task {task_id} on account {account}")


COMMANDS = [watch_task]
