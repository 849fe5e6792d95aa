"""Reserved names of the configuration: `shipped` in `rules:` (the shipped rules alongside the
user's own: `rules: [shipped, ./my-rules/]`) and the built-in `console` channel."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from monitor.app import load_ruleset
from monitor.cli import cli
from monitor.config import SHIPPED_RULES, Config, shipped_rules_dir
from monitor.errors import ConfigError, RuleError

ENV = {"HOME": "/home/alice", "NOVITA_API_KEY": "k"}
MINIMAL = "accounts:\n  - name: main\n    api_key_env: NOVITA_API_KEY\n"
MY_RULE = """\
rules:
  - name: my-idle
    resource: task
    when:
      failed_task: {within: 1h}
    severity: warning
"""


def _config(tmp_path: Path, rules: str) -> Path:
    (tmp_path / "my-rules").mkdir(exist_ok=True)
    (tmp_path / "my-rules" / "mine.yaml").write_text(MY_RULE)
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + textwrap.dedent(rules))
    return path


def _shipped_names() -> set[str]:
    return set(load_ruleset(Config.from_yaml(MINIMAL, env=ENV)).names)


def test_shipped_alongside_my_rules(tmp_path: Path) -> None:
    cfg = Config.load(_config(tmp_path, "rules: [shipped, ./my-rules/]\n"), env=ENV)

    assert cfg.rule_paths == [shipped_rules_dir(), tmp_path / "my-rules"]
    assert cfg.loads_shipped_rules
    names = set(load_ruleset(cfg).names)
    assert names == _shipped_names() | {"my-idle"}
    assert len(names) > 5


def test_a_folder_alone_replaces_the_shipped_rules_and_check_says_so(tmp_path: Path) -> None:
    path = _config(tmp_path, "rules: [./my-rules/]\n")
    cfg = Config.load(path, env=ENV)

    assert set(load_ruleset(cfg).names) == {"my-idle"}
    assert not cfg.loads_shipped_rules
    out = CliRunner().invoke(cli, ["check", "--config", str(path)], env=ENV)
    assert out.exit_code == 0, out.output
    assert "the shipped rules are not loaded" in out.output
    assert "rules: [shipped, ...]" in out.output

    both = CliRunner().invoke(
        cli, ["check", "--config", str(_config(tmp_path, "rules: [shipped, my-rules]\n"))], env=ENV
    )
    assert both.exit_code == 0, both.output
    assert "not loaded" not in both.output


def test_a_folder_called_shipped_is_written_with_a_path(tmp_path: Path) -> None:
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / "r.yaml").write_text(MY_RULE)
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + "rules: [./shipped]\n")

    cfg = Config.load(path, env=ENV)

    assert cfg.rule_paths == [tmp_path / "shipped"]
    assert set(load_ruleset(cfg).names) == {"my-idle"}
    assert not cfg.loads_shipped_rules


def test_shipped_listed_twice_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = _config(tmp_path, "rules:\n  - shipped\n  - my-rules/\n  - shipped\n")

    with pytest.raises(ConfigError) as info:
        Config.load(path, env=ENV)

    [p] = info.value.problems
    assert (p.line, p.field) == (7, "rules[2]")
    assert "'shipped' is listed twice (first at rules[0])" in p.message


def test_a_missing_folder_error_names_the_reserved_word(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + "rules: [shiped]\n")

    with pytest.raises(ConfigError) as info:
        Config.load(path, env=ENV)

    [p] = info.value.problems
    assert p.field == "rules[0]" and p.line == 4
    assert str(tmp_path / "shiped") in p.message
    assert f"{SHIPPED_RULES!r} for the shipped rules" in p.message


def test_a_user_rule_named_like_a_shipped_one_is_a_duplicate(tmp_path: Path) -> None:
    name = sorted(_shipped_names())[0]
    path = _config(tmp_path, "rules: [shipped, my-rules]\n")
    (tmp_path / "my-rules" / "mine.yaml").write_text(MY_RULE.replace("my-idle", name))

    with pytest.raises(RuleError) as info:
        load_ruleset(Config.load(path, env=ENV))

    assert any("duplicate rule name" in p.message for p in info.value.problems)


def test_a_channel_cannot_be_called_console(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + "channels:\n  console: {url_env: X}\n")

    with pytest.raises(ConfigError) as info:
        Config.load(path, env=ENV)

    [p] = info.value.problems
    assert (p.line, p.field) == (5, "channels.console")
    assert "built-in channel" in p.message
