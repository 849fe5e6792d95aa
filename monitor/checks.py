"""``novita-monitor check``: validate configuration and rules, listing every problem.

With rule PATHs only, the rule files are checked alone (channel names are not known, so not
checked). With a configuration (``--config`` or the usual lookup), the configuration is checked,
then its rules against its channels, then the API keys and channel URLs it references resolve.
Everything wrong is reported together; exit status 2 when anything is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from monitor.config import (
    SHIPPED_RULES,
    Config,
    find_config_path,
    resolve_api_key,
    resolve_channel_url,
)
from monitor.errors import ConfigError, Problem, RuleError, UserError
from monitor.rules import RuleSet, load_rules


def known_channels(config: Config) -> set[str]:
    return config.channel_names


def check_rules(
    paths: list[Path], channels: set[str] | None
) -> tuple[RuleSet | None, list[Problem]]:
    try:
        return load_rules(paths, known_channels=channels), []
    except RuleError as exc:
        return None, exc.problems or [Problem(str(paths[0]) if paths else "-", None, str(exc))]


def check_secrets(config: Config, env: Mapping[str, str]) -> list[Problem]:
    problems: list[Problem] = []
    for account in config.accounts:
        try:
            resolve_api_key(account, env)
        except ConfigError as exc:
            problems += exc.problems or [Problem(str(config.path), None, str(exc))]
    for name, channel in config.channels.items():
        try:
            resolve_channel_url(name, channel, env)
        except ConfigError as exc:
            problems += exc.problems or [Problem(str(config.path), None, str(exc))]
    return problems


def check_paths(
    config_path: str | None, paths: list[Path], env: Mapping[str, str] | None = None
) -> list[str]:
    """Return the lines to print when everything is valid; raise UserError listing every problem."""
    env = os.environ if env is None else env
    lines: list[str] = []
    problems: list[Problem] = []
    if paths:
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise RuleError("", [Problem(str(p), None, "no such file or folder") for p in missing])
    config: Config | None = None
    if config_path is not None or not paths:
        found = find_config_path(config_path, env, Path.cwd())
        if found is None:
            raise ConfigError(
                "no configuration file found: pass --config FILE or rule files/folders to check"
            )
        config = Config.load(found, env=env)  # raises ConfigError listing every problem
        lines.append(f"ok: configuration {found} ({len(config.accounts)} account(s))")
        problems += check_secrets(config, env)
        ruleset, rule_problems = check_rules(config.rule_paths, known_channels(config))
        problems += rule_problems
        if ruleset is not None:
            lines.append(f"ok: {len(ruleset.rules)} rule(s) in {len(ruleset.files)} file(s)")
        if not config.loads_shipped_rules:
            lines.append(
                f"note: the shipped rules are not loaded ({found}: rules: lists only your own; "
                f"add {SHIPPED_RULES} to it to keep them: rules: [{SHIPPED_RULES}, ...])"
            )
    if paths:
        channels = known_channels(config) if config is not None else None
        ruleset, rule_problems = check_rules(paths, channels)
        problems += rule_problems
        if ruleset is not None:
            lines.append(f"ok: {len(ruleset.rules)} rule(s) in {len(ruleset.files)} file(s)")
    if problems:
        raise UserError(f"{len(problems)} problem(s) found:", problems)
    return lines
