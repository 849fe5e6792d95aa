"""Configuration: every error names file, line and key; lookup order; secrets by reference."""

from __future__ import annotations

import itertools
import os
import textwrap
from pathlib import Path
from typing import Annotated, Literal

import pydantic
import pytest
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydField
from structlog.testing import capture_logs

from monitor.config import (
    Channel,
    Config,
    default_database_url,
    find_config_path,
    inline_url_secret,
    resolve_api_key,
    resolve_channel_url,
    shipped_rules_dir,
)
from monitor.errors import ConfigError, Problem, UserError
from monitor.logs import clear_secrets, redact_text
from monitor.yamlsrc import (
    MAX_YAML_BYTES_ENV,
    LineMap,
    YamlLimits,
    load_yaml_with_lines,
    problems_from_validation_error,
    read_yaml_file,
)

ENV = {"HOME": "/home/alice"}


@pytest.fixture(autouse=True)
def _forget_secrets():
    yield
    clear_secrets()


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems_of(path: Path, env: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        Config.load(path, env=env or ENV)
    assert info.value.problems, "a ConfigError must list its problems"
    return info.value.problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


MINIMAL = """
accounts:
  - name: main
    api_key_env: NOVITA_API_KEY
"""


class TestValidConfig:
    def test_minimal_file_gets_every_default(self, tmp_path):
        path = write(tmp_path, MINIMAL)

        cfg = Config.load(path, env={"XDG_STATE_HOME": "/state", "HOME": "/h"})

        assert cfg.path == path
        assert cfg.accounts[0].base_url == "https://api.novita.ai"
        assert cfg.accounts[0].max_concurrency == 8
        assert cfg.schedules.instances == 60
        assert cfg.schedules.balance == 300
        assert cfg.schedules.fixed_term_bills == 86400
        assert cfg.schedules.async_tasks == 30
        assert cfg.metrics.interval_s == 60
        assert cfg.metrics.backfill_min_s == 3600
        assert cfg.retention.raw_days == 7
        assert cfg.retention.rollup_days == 365
        assert cfg.stale_after == 3
        assert cfg.log.format == "auto"
        assert cfg.channels == {}
        assert cfg.database == default_database_url({"XDG_STATE_HOME": "/state"}, os.geteuid())
        assert cfg.rule_paths == [shipped_rules_dir()]
        assert shipped_rules_dir().parts[-2:] == ("monitor", "shipped_rules")

    def test_full_example_and_relative_paths(self, tmp_path):
        (tmp_path / "rules").mkdir()
        path = write(
            tmp_path,
            """
            accounts:
              - name: main
                api_key_file: secrets/key
                base_url: http://127.0.0.1:9999/
                max_concurrency: 4
              - name: team-b
                api_key_env: TEAM_B_KEY
            database: sqlite:///data/monitor.db
            rules: [rules/]
            schedules: {instances: 2m, balance: 600}
            metrics: {interval_s: 120, lag_s: 90}
            stale_after: 4
            retention: {raw_days: 3, rollup_days: 30}
            log: {format: JSON, level: DEBUG}
            channels:
              local: "json://127.0.0.1:8080/"
              ops: {url_env: SLACK_URL}
              finance: {url_file: smtp-url, send_resolved: false}
            default_channels: [ops]
            routes:
              - {match: {severity: critical}, channels: [finance]}
            """,
        )

        cfg = Config.load(path, env=ENV)

        assert cfg.accounts[0].api_key_file == tmp_path / "secrets/key"
        assert cfg.accounts[0].base_url == "http://127.0.0.1:9999"
        assert cfg.database == f"sqlite:///{tmp_path}/data/monitor.db"
        assert cfg.rule_paths == [tmp_path / "rules/"]
        assert cfg.schedules.instances == 120
        assert cfg.schedules.metrics == 120  # follows metrics.interval_s
        assert cfg.log.format == "json" and cfg.log.level == "debug"
        assert cfg.channels["finance"].url_file == tmp_path / "smtp-url"
        assert cfg.channels["finance"].send_resolved is False
        assert cfg.channels["local"].url == "json://127.0.0.1:8080/"
        assert cfg.routes[0].match == {"severity": "critical"}
        assert cfg.line_for("channels", "ops") == 17
        assert cfg.line_for("accounts", 1, "api_key_env") == 7

    def test_default_database_for_a_user_and_for_root(self):
        env = {"XDG_STATE_HOME": "/state"}

        user = Config.from_yaml(MINIMAL, env=env, euid=1000)
        root = Config.from_yaml(MINIMAL, env=env, euid=0)

        assert user.database == "sqlite:////state/novita-monitor/monitor.db"
        assert root.database == "sqlite:////var/lib/novita-monitor/monitor.db"

    def test_empty_rules_list_means_no_rules(self, tmp_path):
        cfg = Config.load(write(tmp_path, MINIMAL + "rules: []\n"), env=ENV)

        assert cfg.rule_paths == []

    def test_console_channel_always_exists(self, tmp_path):
        cfg = Config.load(write(tmp_path, MINIMAL + "default_channels: [console]\n"), env=ENV)

        assert cfg.default_channels == ["console"]

    def test_postgres_url_gets_the_psycopg_driver(self, tmp_path):
        text = MINIMAL + "database: postgresql://monitor@db.internal/monitor\n"

        cfg = Config.load(write(tmp_path, text), env=ENV)

        assert cfg.database == "postgresql+psycopg://monitor@db.internal/monitor"

    def test_describe_shows_references_never_secrets(self, tmp_path):
        text = MINIMAL + "channels:\n  ops: {url_env: SLACK_URL}\n  local: json://h:8080/x\n"
        cfg = Config.load(write(tmp_path, text), env=ENV)

        described = cfg.describe()

        assert described["accounts"][0]["api_key"] == "env:NOVITA_API_KEY"
        assert described["channels"] == {"ops": "env:SLACK_URL", "local": "json://h:8080/x"}


class TestErrorsNameFileLineAndKey:
    def test_typo_key(self, tmp_path):
        path = write(
            tmp_path,
            """
            accounts:
              - name: main
                api_key_env: NOVITA_API_KEY
                max_concurency: 4
            """,
        )

        p = only(problems_of(path))

        assert (p.file, p.line, p.field) == (str(path), 4, "accounts[0].max_concurency")
        assert p.message.startswith("unknown key (expected one of: ")
        assert "max_concurrency" in p.message and "api_key," not in p.message
        assert str(p).startswith(f"{path}:4: accounts[0].max_concurency: unknown key")

    def test_typo_at_top_level_and_in_a_section(self, tmp_path):
        path = write(tmp_path, MINIMAL + "schedules:\n  balanse: 300\nretension: {raw_days: 3}\n")

        problems = problems_of(path)

        assert [(p.line, p.field) for p in problems] == [
            (5, "schedules.balanse"),
            (6, "retension"),
        ]
        assert "balance" in problems[0].message and "retention" in problems[1].message

    def test_wrong_type(self, tmp_path):
        path = write(tmp_path, MINIMAL + "    max_concurrency: lots\nstale_after: [1]\n")

        problems = problems_of(path)

        assert [(p.line, p.field) for p in problems] == [
            (4, "accounts[0].max_concurrency"),
            (5, "stale_after"),
        ]
        assert "'lots' is not valid (expected a valid integer" in problems[0].message

    def test_wrong_enum_value_lists_the_choices(self, tmp_path):
        path = write(tmp_path, MINIMAL + "log:\n  format: fancy\n")

        p = only(problems_of(path))

        assert (p.line, p.field) == (5, "log.format")
        assert p.message == "'fancy' is not valid (expected 'auto', 'json' or 'console')"

    def test_missing_accounts(self, tmp_path):
        path = write(tmp_path, "database: sqlite:///x.db\n")

        p = only(problems_of(path))

        assert (p.line, p.field, p.message) == (1, "accounts", "missing required key")

    def test_empty_accounts_list(self, tmp_path):
        p = only(problems_of(write(tmp_path, "accounts: []\n")))

        assert (p.line, p.field) == (1, "accounts")
        assert "at least 1" in p.message

    def test_missing_account_name(self, tmp_path):
        path = write(tmp_path, "accounts:\n  - api_key_env: K\n")

        p = only(problems_of(path))

        assert (p.line, p.field, p.message) == (2, "accounts[0].name", "missing required key")

    def test_empty_file(self, tmp_path):
        p = only(problems_of(write(tmp_path, "")))

        assert p.field == "accounts"

    def test_top_level_not_a_mapping(self, tmp_path):
        p = only(problems_of(write(tmp_path, "- a\n- b\n")))

        assert p.message == "expected a mapping of keys at the top level"

    def test_both_key_sources(self, tmp_path):
        path = write(
            tmp_path,
            """
            accounts:
              - name: main
                api_key_env: NOVITA_API_KEY
              - name: other
                api_key_env: OTHER_KEY
                api_key_file: /run/key
            """,
        )

        p = only(problems_of(path))

        assert (p.line, p.field) == (4, "accounts[1]")
        assert "exactly one of api_key_env and api_key_file" in p.message

    def test_neither_key_source(self, tmp_path):
        p = only(problems_of(write(tmp_path, "accounts:\n  - name: main\n")))

        assert (p.line, p.field) == (2, "accounts[0]")

    def test_inline_api_key_is_rejected_without_echoing_it(self, tmp_path):
        key = "sk_live_0123456789abcdefABCDEF"
        path = write(tmp_path, f"accounts:\n  - name: main\n    api_key: {key}\n")

        with pytest.raises(ConfigError) as info:
            Config.load(path, env=ENV)

        p = only(info.value.problems)
        assert (p.line, p.field) == (3, "accounts[0].api_key")
        assert "api_key_env" in p.message and "api_key_file" in p.message
        assert key not in str(info.value)
        assert info.value.__cause__ is None
        assert info.value.__context__ is None or info.value.__suppress_context__

    def test_key_pasted_into_api_key_env_is_not_echoed(self, tmp_path):
        key = "sk0123456789abcdefabcdef0123"
        path = write(tmp_path, f"accounts:\n  - name: main\n    api_key_env: {key}\n")

        with pytest.raises(ConfigError) as info:
            Config.load(path, env=ENV)

        assert only(info.value.problems).line == 3
        assert "looks like a secret" in str(info.value)
        assert key not in str(info.value)

    def test_duplicate_account_names(self, tmp_path):
        path = write(
            tmp_path,
            """
            accounts:
              - name: main
                api_key_env: A
              - name: main
                api_key_env: B
            """,
        )

        p = only(problems_of(path))

        assert (p.line, p.field) == (4, "accounts[1].name")
        assert "duplicate account name 'main'" in p.message

    @pytest.mark.parametrize(
        "url, why",
        [
            ("slack://T1234/B5678/abcdefghijklmnop", "slack://"),
            ("tgram://123456:ABCDEF/987654", "tgram://"),
            ("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js", "discord://"),
            ("mailto://ops:hunter2@mail.example.com", "password"),
            ("json://user:pass@127.0.0.1:8080/", "password"),
            ("json://hooks.example.com/services/Xk29dk3KdkfA0d9cK3kdkaq", "token"),
            ("json://hooks.example.com/notify?token=abc", "query"),
        ],
    )
    def test_inline_channel_with_a_secret(self, tmp_path, url, why):
        path = write(tmp_path, MINIMAL + f'channels:\n  ops: "{url}"\n')

        with pytest.raises(ConfigError) as info:
            Config.load(path, env=ENV)

        p = only(info.value.problems)
        assert (p.line, p.field) == (5, "channels.ops")
        assert why in p.message
        assert "url_env" in p.message and "url_file" in p.message
        assert url not in str(info.value)

    @pytest.mark.parametrize(
        "url",
        [
            "json://127.0.0.1:8080/",
            "mailto://mail.example.com?to=ops@example.com",
            "jsons://h/a/b",
            "json://monitoring-receiver01.internal.example.com:8080/alerts",
        ],
    )
    def test_inline_channel_without_a_secret_is_fine(self, url):
        assert inline_url_secret(url) is None

    def test_channel_in_long_form_with_a_secret_inline(self, tmp_path):
        path = write(tmp_path, MINIMAL + 'channels:\n  ops:\n    url: "slack://a/b/c"\n')

        p = only(problems_of(path))

        assert (p.line, p.field) == (6, "channels.ops.url")

    def test_channel_with_two_sources(self, tmp_path):
        path = write(tmp_path, MINIMAL + "channels:\n  ops: {url_env: A, url_file: /b}\n")

        p = only(problems_of(path))

        assert (p.line, p.field) == (5, "channels.ops")
        assert "exactly one of url, url_env and url_file" in p.message

    def test_unknown_channel_in_default_channels_and_routes(self, tmp_path):
        path = write(
            tmp_path,
            MINIMAL
            + textwrap.dedent(
                """
                channels:
                  ops: {url_env: SLACK_URL}
                default_channels: [ops, opps]
                routes:
                  - match: {severity: critical}
                    channels: [finance]
                """
            ),
        )

        problems = problems_of(path)

        assert [(p.line, p.field) for p in problems] == [
            (7, "default_channels[1]"),
            (10, "routes[0].channels[0]"),
        ]
        assert problems[0].message == "unknown channel 'opps' (expected one of: console, ops)"

    def test_reference_errors_are_reported_with_structural_errors(self, tmp_path):
        path = write(
            tmp_path,
            """
            accounts:
              - name: main
                api_key_env: K
                typo: 1
            default_channels: [nope]
            """,
        )

        assert [p.line for p in problems_of(path)] == [4, 5]

    @pytest.mark.parametrize(
        "url, message",
        [
            ("mysql://u@h/db", "unsupported database 'mysql'"),
            ("postgresql://u:secret@h/db", "must not contain a password"),
            ("not a url", "not a database URL"),
        ],
    )
    def test_bad_database_url(self, tmp_path, url, message):
        path = write(tmp_path, MINIMAL + f"database: {url}\n")

        p = only(problems_of(path))

        assert (p.line, p.field) == (4, "database")
        assert message in p.message
        assert "secret" not in str(p)

    def test_missing_rule_folder(self, tmp_path):
        path = write(tmp_path, MINIMAL + "rules:\n  - my-rules/\n")

        p = only(problems_of(path))

        assert (p.line, p.field) == (5, "rules[0]")
        assert str(tmp_path / "my-rules") in p.message

    def test_metrics_interval_below_api_minimum(self, tmp_path):
        p = only(problems_of(write(tmp_path, MINIMAL + "metrics: {interval_s: 30}\n")))

        assert (p.line, p.field) == (4, "metrics.interval_s")
        assert "greater than or equal to 60" in p.message

    def test_conflicting_metric_intervals(self, tmp_path):
        text = MINIMAL + "schedules: {metrics: 60}\nmetrics: {interval_s: 120}\n"

        p = only(problems_of(write(tmp_path, text)))

        assert (p.line, p.field) == (5, "metrics.interval_s")

    def test_bad_duration(self, tmp_path):
        p = only(problems_of(write(tmp_path, MINIMAL + "schedules: {balance: soon}\n")))

        assert (p.line, p.field) == (4, "schedules.balance")
        assert "not a duration" in p.message

    def test_yaml_syntax_error_names_its_line(self, tmp_path):
        path = write(
            tmp_path,
            """
            accounts:
              - name: main
                api_key_env: K
            channels: {ops: [unclosed
            log: {}
            """,
        )

        p = only(problems_of(path))

        assert p.file == str(path)
        assert p.line == 5  # where PyYAML noticed; the message names where the list began
        assert p.message == (
            "invalid YAML: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence at line 4)"
        )

    def test_yaml_tab_indentation_error(self, tmp_path):
        path = write(tmp_path, "accounts:\n  - name: main\n\tapi_key_env: K\n")

        p = only(problems_of(path))

        assert p.line == 3 and "invalid YAML" in p.message

    def test_duplicate_yaml_key(self, tmp_path):
        path = write(tmp_path, MINIMAL + "log: {level: info}\nlog: {level: debug}\n")

        p = only(problems_of(path))

        assert p.line == 5
        assert "duplicate key 'log' (first defined at line 4)" in p.message

    def test_unreadable_file(self, tmp_path):
        with pytest.raises(ConfigError) as info:
            Config.load(tmp_path / "absent.yaml", env=ENV)

        assert "cannot read" in str(info.value) and "absent.yaml" in str(info.value)


class TestLineMap:
    def test_lines_of_keys_items_and_fallback_to_parent(self):
        text = "a:\n  b:\n    - x\n    - {c: 1,\n       d: 2}\n"

        data, lines = load_yaml_with_lines(text, "f.yaml")

        assert data == {"a": {"b": ["x", {"c": 1, "d": 2}]}}
        assert lines.line_for(("a",)) == 1
        assert lines.line_for(("a", "b", 0)) == 3
        assert lines.line_for(("a", "b", 1, "d")) == 5
        assert lines.line_for(("a", "b", 1, "nope", "deeper")) == 4
        assert lines.line_for(("zzz",)) == 1

    def test_anchors_and_merge_keys(self):
        text = "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n"

        data, lines = load_yaml_with_lines(text, "f.yaml")

        assert data["other"] == {"x": 1, "y": 2}
        assert lines.line_for(("other", "y")) == 4

    def test_empty_document(self):
        assert load_yaml_with_lines("", "f.yaml") == (None, LineMap({(): 1}))


def billion_laughs(levels: int = 9) -> str:
    """``a`` holds 9 strings, ``b`` 9 aliases of ``a``, ... : 9**levels strings in ~40 bytes a
    line (the 9-level file of issue 10 took ``check`` to 4 GB)."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghijklmnopqrstuvwxyz"
    for prev, name in itertools.pairwise(names[:levels]):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def nested(levels: int) -> str:
    """A block mapping nested ``levels`` deep: level n starts on line n."""
    return "".join(f"{'  ' * i}k{i}:\n" for i in range(levels)) + "  " * levels + "end\n"


class TestYamlLimits:
    """Hostile YAML is refused while it is composed, in one problem that names the line."""

    def refused(self, text: str, limits: YamlLimits | None = None) -> Problem:
        with pytest.raises(UserError) as info:
            load_yaml_with_lines(text, "f.yaml", limits=limits or YamlLimits())
        return only(info.value.problems)

    def test_billion_laughs_is_refused_at_the_alias_that_crosses_the_cap(self):
        # nodes with their keys: a 11, b 92, c 821, d 7382, e 66431 (74738 with the root);
        # the aliases of f (each worth 66430) cross 100000
        p = self.refused(billion_laughs(9))

        assert (p.file, p.line) == ("f.yaml", 6)
        assert "expands to more than 100000 values" in p.message

    def test_expanded_values_are_counted_exactly(self):
        # the root 1, key a 1, its list 3, key b 1, its list 1 + 2 * 3: 13 nodes
        text = "a: &a [1, 2]\nb: [*a, *a]\n"

        assert load_yaml_with_lines(text, "f.yaml", limits=YamlLimits(max_values=13))[0] == {
            "a": [1, 2],
            "b": [[1, 2], [1, 2]],
        }
        assert self.refused(text, YamlLimits(max_values=12)).line == 2

    def test_a_plain_file_with_too_many_values_is_not_called_a_bomb(self):
        p = self.refused("[" + ",".join(["1"] * 20) + "]\n", YamlLimits(max_values=10))

        assert p.line == 1 and "holds more than 10 values" in p.message
        assert "split it" in p.message and MAX_YAML_BYTES_ENV in p.message

    def test_a_thousand_nested_brackets(self):
        p = self.refused("rules: " + "[" * 1000 + "]" * 1000 + "\n")

        assert p.line == 1 and "nested deeper than 64 levels" in p.message

    def test_depth_is_refused_at_the_line_of_the_first_level_too_many(self):
        load_yaml_with_lines(nested(64), "f.yaml")  # 64 mappings: the limit, accepted

        p = self.refused(nested(65))

        assert p.line == 65 and "nested deeper than 64 levels" in p.message

    def test_an_alias_inside_the_node_it_names(self):
        p = self.refused("x: 1\na: &a [1, *a]\n")

        assert p.line == 2 and "alias *a is used inside the node it names" in p.message

    def test_size_cap_names_the_line_where_it_is_crossed(self):
        text = "".join(f"k{i}: 12345\n" for i in range(10))  # 10 bytes a line

        p = self.refused(text, YamlLimits(max_bytes=50))

        assert p.line == 6
        assert "larger than the limit of 50 bytes (100 bytes)" in p.message
        assert MAX_YAML_BYTES_ENV in p.message

    def test_size_cap_from_the_environment(self):
        assert YamlLimits.from_env({}).max_bytes == 2 * 1024 * 1024
        assert YamlLimits.from_env({MAX_YAML_BYTES_ENV: "4M"}) == YamlLimits(
            max_bytes=4 * 1024 * 1024, max_values=200_000
        )
        assert YamlLimits.from_env({MAX_YAML_BYTES_ENV: "512 KiB"}).max_bytes == 512 * 1024
        assert YamlLimits.from_env({MAX_YAML_BYTES_ENV: "1000"}) == YamlLimits(max_bytes=1000)
        for bad in ("lots", "0", "-5", "1.5M"):
            with pytest.raises(UserError, match=f"{MAX_YAML_BYTES_ENV}=.* is not a size"):
                YamlLimits.from_env({MAX_YAML_BYTES_ENV: bad})

    def test_config_load_obeys_the_cap_of_its_environment(self, tmp_path):
        path = write(tmp_path, MINIMAL + "log: {level: info}\n" * 20)

        p = only(problems_of(path, {**ENV, MAX_YAML_BYTES_ENV: "100"}))

        assert p.file == str(path) and p.line is not None
        assert "larger than the limit of 100 bytes" in p.message

    def test_a_file_is_read_no_further_than_the_cap(self, tmp_path):
        path = tmp_path / "big.yaml"
        path.write_text("x: 1\n" * 1000)
        reads: list[int] = []
        real_open = Path.open

        def spy_open(self, *args, **kwargs):
            fh = real_open(self, *args, **kwargs)
            real_read = fh.read
            fh.read = lambda n=-1: reads.append(n) or real_read(n)  # type: ignore[method-assign]
            return fh

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Path, "open", spy_open)
            with pytest.raises(UserError) as info:
                read_yaml_file(path, limits=YamlLimits(max_bytes=100))

        assert reads == [101]
        assert "(5000 bytes)" in str(info.value)

    def test_a_cap_that_cuts_a_character_in_two_is_still_the_size_error(self, tmp_path):
        path = tmp_path / "big.yaml"
        path.write_text("x: é\n" * 100, encoding="utf-8")  # é is bytes 4 and 5: read 4, cut

        with pytest.raises(UserError, match="larger than the limit of 3 bytes"):
            read_yaml_file(path, limits=YamlLimits(max_bytes=3))

    def test_lines_are_recorded_per_node_not_per_path(self):
        """With the expansion cap lifted, the bomb's 9**9 paths are still 90 nodes: loading
        and looking a line up stay instant (the old path-by-path walk never finished)."""
        data, lines = load_yaml_with_lines(
            billion_laughs(9), "f.yaml", limits=YamlLimits(max_values=10**12)
        )

        assert data["i"][8][8][8][8][8][8][8][8][0] == "lol"
        assert lines.line_for(("i", 8, 8, 8, 8, 8, 8, 8, 8, 0)) == 1  # the string, in a's line
        assert lines.line_for(("i", 8)) == 8  # an alias item: the node it names starts there
        assert lines.line_for(("e",)) == 5
        assert ("i", 0, 0) in lines and ("i", 9) not in lines


class TestBaseUrl:
    """The API key travels in every request's header: never unencrypted off this machine."""

    @pytest.mark.parametrize(
        "url",
        ["http://api.novita.ai", "http://10.0.0.5:8080", "http://127.0.0.1.example.com"],
    )
    def test_plain_http_to_another_host_is_refused(self, tmp_path, url):
        text = MINIMAL.replace("NOVITA_API_KEY\n", f"NOVITA_API_KEY\n    base_url: {url}\n")

        p = only(problems_of(write(tmp_path, text)))

        assert (p.line, p.field) == (4, "accounts[0].base_url")
        assert "would send the API key unencrypted (expected https://" in p.message

    @pytest.mark.parametrize(
        "url",
        [
            "https://api.example.com",
            "http://127.0.0.1:8765",
            "http://127.3.2.1",
            "http://[::1]:8765",
            "http://localhost:8765",
            "HTTP://LOCALHOST",
        ],
    )
    def test_https_anywhere_and_http_to_loopback_are_accepted(self, tmp_path, url):
        text = MINIMAL.replace("NOVITA_API_KEY\n", f"NOVITA_API_KEY\n    base_url: {url}\n")

        assert Config.load(write(tmp_path, text), env=ENV).accounts[0].base_url == url


class _Idle(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["idle"]
    window: int


class _Spend(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["spend"]
    limit: float


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    when: Annotated[_Idle | _Spend, PydField(discriminator="kind")]
    labels: dict[str, str] = {}
    target: int | list[int] = 0


class TestValidationProblems:
    """The shared helper the rule loader uses too: pydantic's labels never reach the user."""

    def problems(self, text: str, **kw) -> list[Problem]:
        data, lines = load_yaml_with_lines(text, "r.yaml")
        with pytest.raises(pydantic.ValidationError) as info:
            _Rule.model_validate(data)
        return problems_from_validation_error(
            info.value, "r.yaml", lines, data=data, model=_Rule, **kw
        )

    def test_unknown_key_inside_a_discriminated_union(self):
        text = "name: r\nwhen:\n  kind: idle\n  window: 3\n  windw: 4\n"

        (p,) = self.problems(text, rule="r")

        assert str(p) == (
            "r.yaml:5: rule r: when.windw: unknown key (expected one of: kind, window)"
        )

    def test_wrong_type_inside_a_union_member(self):
        (p,) = self.problems("name: r\nwhen:\n  kind: spend\n  limit: lots\n")

        assert (p.line, p.field) == (4, "when.limit")
        assert p.message.startswith("'lots' is not valid (expected a valid number")

    def test_plain_union_labels_are_dropped(self):
        problems = self.problems("name: r\nwhen: {kind: idle, window: 1}\ntarget: [x]\n")

        assert {(p.line, p.field) for p in problems} == {(3, "target"), (3, "target[0]")}

    def test_prefix_for_a_part_validated_alone(self):
        text = "rules:\n  - name: r\n    when: {kind: idle}\n"
        data, lines = load_yaml_with_lines(text, "r.yaml")
        with pytest.raises(pydantic.ValidationError) as info:
            _Rule.model_validate(data["rules"][0])

        (p,) = problems_from_validation_error(
            info.value, "r.yaml", lines, data=data, prefix=("rules", 0)
        )

        assert (p.line, p.field, p.message) == (
            3,
            "rules[0].when.window",
            "missing required key",
        )


class TestLookupOrder:
    @pytest.fixture
    def places(self, tmp_path):
        cwd = tmp_path / "cwd"
        xdg = tmp_path / "xdg"
        home = tmp_path / "home"
        for d in (cwd, xdg / "novita-monitor", home / ".config" / "novita-monitor"):
            d.mkdir(parents=True)
        return cwd, xdg, home

    def test_explicit_wins_even_if_absent(self, places):
        cwd, xdg, _ = places
        (cwd / "novita-monitor.yaml").write_text("x")
        env = {"NOVITA_MONITOR_CONFIG": "/elsewhere.yaml", "XDG_CONFIG_HOME": str(xdg)}

        assert find_config_path("given.yaml", env, cwd) == cwd / "given.yaml"
        assert find_config_path("/abs/given.yaml", env, cwd) == Path("/abs/given.yaml")

    def test_env_var_before_files(self, places):
        cwd, _, _ = places
        (cwd / "novita-monitor.yaml").write_text("x")

        found = find_config_path(None, {"NOVITA_MONITOR_CONFIG": "/e.yaml"}, cwd)

        assert found == Path("/e.yaml")

    def test_cwd_before_xdg(self, places):
        cwd, xdg, _ = places
        (cwd / "novita-monitor.yaml").write_text("x")
        (xdg / "novita-monitor" / "config.yaml").write_text("x")

        found = find_config_path(None, {"XDG_CONFIG_HOME": str(xdg)}, cwd)

        assert found == cwd / "novita-monitor.yaml"

    def test_xdg_then_home_default(self, places):
        cwd, xdg, home = places
        (xdg / "novita-monitor" / "config.yaml").write_text("x")
        (home / ".config" / "novita-monitor" / "config.yaml").write_text("x")

        assert find_config_path(None, {"XDG_CONFIG_HOME": str(xdg), "HOME": str(home)}, cwd) == (
            xdg / "novita-monitor" / "config.yaml"
        )
        assert find_config_path(None, {"HOME": str(home)}, cwd) == (
            home / ".config" / "novita-monitor" / "config.yaml"
        )

    def test_nothing_found(self, places):
        cwd, xdg, home = places
        env = {"XDG_CONFIG_HOME": str(xdg), "HOME": str(home), "NOVITA_MONITOR_CONFIG": ""}

        found = find_config_path(None, env, cwd)

        assert found in (None, Path("/etc/novita-monitor/config.yaml"))
        assert found is None or found.is_file()

    def test_default_database_location(self):
        assert default_database_url({"XDG_STATE_HOME": "/s"}, 1000) == (
            "sqlite:////s/novita-monitor/monitor.db"
        )
        assert default_database_url({"HOME": "/home/a"}, 1000) == (
            "sqlite:////home/a/.local/state/novita-monitor/monitor.db"
        )
        assert default_database_url({"XDG_STATE_HOME": "/s"}, 0) == (
            "sqlite:////var/lib/novita-monitor/monitor.db"
        )


class TestSecrets:
    def load(self, tmp_path, text: str) -> Config:
        return Config.load(write(tmp_path, text), env=ENV)

    def test_api_key_from_env_is_registered_for_redaction(self, tmp_path):
        cfg = self.load(tmp_path, MINIMAL)

        key = resolve_api_key(cfg.accounts[0], {"NOVITA_API_KEY": " sk_abc123456 \n"})

        assert key.get_secret_value() == "sk_abc123456"
        assert "sk_abc123456" not in repr(key)
        assert redact_text("sent sk_abc123456") == "sent ***"

    def test_missing_env_var_names_account_and_variable(self, tmp_path):
        cfg = self.load(tmp_path, MINIMAL)

        with pytest.raises(ConfigError) as info:
            resolve_api_key(cfg.accounts[0], {})

        assert "account 'main'" in str(info.value)
        assert "NOVITA_API_KEY" in str(info.value)
        assert info.value.problems[0].line == 2

    def test_api_key_from_file(self, tmp_path):
        key_file = tmp_path / "key"
        key_file.write_text("sk_from_file_42\n")
        key_file.chmod(0o600)
        cfg = self.load(tmp_path, "accounts:\n  - name: main\n    api_key_file: key\n")

        with capture_logs() as logs:
            key = resolve_api_key(cfg.accounts[0], {})

        assert key.get_secret_value() == "sk_from_file_42"
        assert logs == []

    def test_world_readable_key_file_warns_without_the_key(self, tmp_path):
        key_file = tmp_path / "key"
        key_file.write_text("sk_from_file_42\n")
        key_file.chmod(0o644)
        cfg = self.load(tmp_path, "accounts:\n  - name: main\n    api_key_file: key\n")

        with capture_logs() as logs:
            resolve_api_key(cfg.accounts[0], {})

        assert len(logs) == 1
        assert logs[0]["log_level"] == "warning"
        assert logs[0]["path"] == str(key_file) and logs[0]["mode"] == "0o644"
        assert "sk_from_file_42" not in repr(logs)

    def test_unreadable_key_file_names_account_and_file_not_value(self, tmp_path):
        cfg = self.load(tmp_path, "accounts:\n  - name: main\n    api_key_file: nokey\n")

        with pytest.raises(ConfigError) as info:
            resolve_api_key(cfg.accounts[0], {})

        assert "account 'main'" in str(info.value)
        assert str(tmp_path / "nokey") in str(info.value)

    def test_empty_key_file(self, tmp_path):
        (tmp_path / "key").write_text("\n")
        (tmp_path / "key").chmod(0o600)
        cfg = self.load(tmp_path, "accounts:\n  - name: main\n    api_key_file: key\n")

        with pytest.raises(ConfigError, match="is empty"):
            resolve_api_key(cfg.accounts[0], {})

    def test_channel_urls_from_env_file_and_inline(self, tmp_path):
        url_file = tmp_path / "smtp-url"
        url_file.write_text("mailtos://ops:Pa55word99@smtp.example.com\n")
        url_file.chmod(0o600)
        cfg = self.load(
            tmp_path,
            MINIMAL
            + "channels:\n"
            + "  local: json://127.0.0.1:8080/\n"
            + "  ops: {url_env: SLACK_URL}\n"
            + "  finance: {url_file: smtp-url}\n",
        )
        slack = "slack://T0AAAA1/B0BBBB2/abcdefghijklmnopqrstuvwx"
        env = {"SLACK_URL": slack}

        urls = {n: resolve_channel_url(n, c, env) for n, c in cfg.channels.items()}

        assert urls["local"].get_secret_value() == "json://127.0.0.1:8080/"
        assert urls["ops"].get_secret_value() == slack
        assert urls["finance"].get_secret_value() == "mailtos://ops:Pa55word99@smtp.example.com"
        # each secret part is redacted on its own, e.g. when a library logs only the token
        assert redact_text("token abcdefghijklmnopqrstuvwx") == "token ***"
        assert redact_text("login with Pa55word99") == "login with ***"
        assert redact_text("posting to json://127.0.0.1:8080/") == (
            "posting to json://127.0.0.1:8080/"
        )

    def test_missing_channel_env_var(self):
        channel = Channel(url_env="SLACK_URL")

        with pytest.raises(ConfigError, match=r"channel 'ops'.*SLACK_URL"):
            resolve_channel_url("ops", channel, {})
