"""The README is what a newcomer follows: every command of the CLI is in it, and every YAML
example in it validates (rule files through the rule loader, configurations through the
configuration's own validation, a section of a configuration inside a minimal one)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from monitor.cli import cli
from monitor.config import Config, shipped_rules_dir
from monitor.rules import load_rules
from monitor.rules.testing import run_rule_tests

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = [
    (README[: m.start()].count("\n") + 2, m.group(1))
    for m in re.finditer(r"```ya?ml\n(.*?)```", README, re.S)
]


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name))


def test_every_command_is_in_the_readme() -> None:
    """Shown as ``novita-monitor NAME ...`` or, beside it, as `` `NAME ...` `` (the commands
    table's "`silence add/list/remove`" counts for all three)."""
    names = list(commands(cli))
    assert len(names) > 15  # the walk found the command tree
    shown = README.replace(
        "silence add/list/remove", "silence add`, `silence list`, `silence remove"
    )

    def mentioned(name: str) -> bool:
        return re.search(rf"(novita-monitor |`){re.escape(name)}(\b|`)", shown) is not None

    missing = [n for n in names if not mentioned(n)]
    assert missing == [], f"commands the README never shows: {missing}"


def test_the_readme_has_yaml_examples() -> None:
    assert len(BLOCKS) >= 8


def _env_names(text: str) -> set[str]:
    return set(re.findall(r"\b[a-z_]*_env:\s*([A-Z][A-Z0-9_]*)", text))


#: a condition each action may act on
ACTION_WHEN: dict[str, Any] = {
    "stop": {"idle_gpu": {"window": "45m"}},
    "start": {"idle_gpu": {"window": "45m"}},
    "renew": {"expiring_subscription": {"within": "3d"}},
    "set_auto_renew": {"expiring_subscription": {"within": "3d"}},
    "convert_to_subscription": {"subscription_candidate": {}},
}

MINIMAL: dict[str, Any] = {
    "accounts": [{"name": "main", "api_key_env": "NOVITA_API_KEY"}],
}


def _channel_names(data: Any) -> set[str]:
    """Channel names a configuration section refers to (routes, defaults, reports)."""
    found: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("channels", "default_channels", "notify") and isinstance(value, list):
                found |= {v for v in value if isinstance(v, str)}
            else:
                found |= _channel_names(value)
    elif isinstance(data, list):
        for item in data:
            found |= _channel_names(item)
    return found - {"console"}


@pytest.mark.parametrize(("line", "block"), BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_every_yaml_example_validates(line: int, block: str, tmp_path: Path) -> None:
    data = yaml.safe_load(block)
    assert isinstance(data, dict), f"README.md:{line}: a YAML example is not a mapping"
    if "scrape_configs" in data or "groups" in data:  # Prometheus's: metrics the README lists
        named = set(re.findall(r"novita_monitor_[a-z_]+", block))
        listed = set(re.findall(r"^\| `(novita_monitor_[a-z_]+)`", README, re.M))
        assert named <= listed, f"README.md:{line}: not in the metrics table: {named - listed}"
        return
    if "rule_files" in data and "tests" in data:  # a rule test file: it runs, and passes
        (tmp_path / "tests").mkdir()
        for name in data["rule_files"]:
            shipped = shipped_rules_dir() / Path(name).name
            (tmp_path / Path(name).name).write_text(shipped.read_text(encoding="utf-8"))
        (tmp_path / "tests" / "example.yaml").write_text(block, encoding="utf-8")
        results = run_rule_tests(tmp_path / "tests")
        assert results and all(r.passed for r in results), [r.failures for r in results]
        return
    if isinstance(data.get("actions"), list):  # a rule's actions: each in a rule it suits
        data = {
            "rules": [
                {
                    "name": f"example-{n}",
                    "resource": "instance",
                    "when": ACTION_WHEN[next(iter(action))],
                    "actions": [action],
                }
                for n, action in enumerate(data["actions"])
            ]
        }
        block = yaml.safe_dump(data, sort_keys=False)
    rules = data.get("rules")
    if isinstance(rules, list) and rules and all(isinstance(r, dict) for r in rules):
        path = tmp_path / "rules.yaml"
        path.write_text(block, encoding="utf-8")
        ruleset = load_rules([path])  # raises with file:line on any problem
        assert len(list(ruleset)) == len(rules)
        return
    env = {name: "json://127.0.0.1:9/" for name in _env_names(block)}
    env["NOVITA_API_KEY"] = "sk-readme-example-0000000000000000"
    if "accounts" in data:
        text = block
    else:  # a section: inside a minimal configuration, with the channels it names
        whole = {**MINIMAL, **data}
        names = _channel_names(data) - set(data.get("channels") or {})
        if names:
            whole["channels"] = {
                **{n: "json://127.0.0.1:9/" for n in sorted(names)},
                **(data.get("channels") or {}),
            }
        text = yaml.safe_dump(whole, sort_keys=False)
    if "database" not in data:
        text += f"\ndatabase: sqlite:///{tmp_path / 'monitor.db'}\n"
    Config.from_yaml(text, f"README.md:{line}", base_dir=tmp_path, env=env)
