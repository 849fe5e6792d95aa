"""The rule-author commands: ``schema`` (JSON Schemas for editors) and ``test-rules``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from monitor.cli.common import handle_errors
from monitor.errors import UserError


@click.command()
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


@click.command("test-rules")
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


COMMANDS = [schema, test_rules]
