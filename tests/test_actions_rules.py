"""Actions in rules (issue 9 §3): the registry, parameter models with their defaults, file:line
errors, the JSON Schema, the config's ``actions:`` section and ``schedules.act``; the economics
the planner and the savings use."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
import yaml

from monitor import economics
from monitor.actions import ACTION_KINDS
from monitor.actions.model import (
    ConvertParams,
    RenewParams,
    SetAutoRenewParams,
    StartParams,
    StopParams,
)
from monitor.config import Config
from monitor.errors import ConfigError, RuleError
from monitor.rules import load_rules, rule_schema
from monitor.rules.registry import actions

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(RuleError) as info:
        load_rules([path])
    return [str(p) for p in info.value.problems]


def test_the_registry_holds_exactly_the_issues_actions_with_their_defaults() -> None:
    assert tuple(actions.names()) == ACTION_KINDS
    assert "delete" not in actions
    assert StopParams().model_dump() == {"grace": timedelta(minutes=15), "include_spot": False}
    assert StartParams().model_dump() == {}
    assert RenewParams().model_dump() == {
        "months": 1,
        "min_util": None,
        "lookback": timedelta(days=7),
        "approval": "required",
    }
    assert ConvertParams().model_dump() == {"months": 1, "approval": "required"}
    assert SetAutoRenewParams().model_dump() == {"months": 1, "approval": "required"}
    spends = {a.name for a in actions if a.spends}
    assert spends == {"renew", "convert_to_subscription", "set_auto_renew"}


def test_the_canonical_example_validates_as_written(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        rules:
          - name: stop-idle-gpus
            resource: instance
            when: {idle_gpu: {window: 45m, threshold: 5}}
            actions:
              - stop: {grace: 15m}
        """,
    )
    (rule,) = load_rules([path]).rules
    (stop,) = rule.actions
    assert stop.name == "stop" and stop.params == StopParams(grace=timedelta(minutes=15))
    assert stop.source == f"{path}:6" and rule.exclude == () and rule.dry_run is False
    # and the schema editors use accepts it
    jsonschema.validate(yaml.safe_load(path.read_text()), rule_schema())


def test_every_form_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        rules:
          - name: everything
            resource: instance
            when: {subscription_candidate: {}}
            exclude: [i-1, "prod-*"]
            dry_run: true
            actions:
              - stop: {grace: 30m, include_spot: true}
              - start
              - renew: {months: 3, min_util: 20, lookback: 3d, approval: none}
              - convert_to_subscription: {months: 1}
              - set_auto_renew:
        """,
    )
    (rule,) = load_rules([path]).rules
    assert [a.name for a in rule.actions] == list(ACTION_KINDS)
    assert rule.exclude == ("i-1", "prod-*") and rule.dry_run
    assert rule.actions[2].params == RenewParams(
        months=3, min_util=20, lookback=timedelta(days=3), approval="none"
    )
    assert rule.actions[4].params == SetAutoRenewParams()
    jsonschema.validate(yaml.safe_load(path.read_text()), rule_schema())


def test_bad_actions_are_reported_each_with_file_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        rules:
          - name: bad
            resource: instance
            when: {idle_gpu: {}}
            actions:
              - stop: {grace: 15m, graec: 1}
              - delete: {}
              - renew: {months: 0, approval: maybe}
              - convert_to_subscription: {}
              - stop: {}
              - [stop]
              - start: 3
          - name: wrong-resource
            resource: account
            when: {low_balance: {usd: 5}}
            actions: [stop]
          - name: not-a-list
            resource: instance
            when: {idle_gpu: {}}
            actions: {stop: {}}
            exclude: i-1
            dry_run: maybe
        """,
    )
    got = problems(path)
    f = str(path)
    expected = [
        f"{f}:6: rule bad: actions[0].stop.graec: unknown key (expected one of: grace, include_spot)",
        f"{f}:7: rule bad: actions[1].delete: unknown action 'delete' (deleting is not an action:"
        " nothing deletes) (expected one of: stop, start, renew, convert_to_subscription,"
        " set_auto_renew)",
        f"{f}:8: rule bad: actions[2].renew.months: 0 is not valid (expected greater than or equal"
        " to 1)",
        f"{f}:8: rule bad: actions[2].renew.approval: 'maybe' is not valid (expected 'required' or"
        " 'none')",
        f"{f}:9: rule bad: actions[3].convert_to_subscription: convert_to_subscription acts only on"
        " subscription_candidate alerts (expected the rule's when to use subscription_candidate)",
        f"{f}:10: rule bad: actions[4].stop: stop is listed twice (expected each action at most"
        " once)",
        f"{f}:11: rule bad: actions[5]: an action is a mapping with one key (expected one of: stop,"
        " start, renew, convert_to_subscription, set_auto_renew)",
        f"{f}:12: rule bad: actions[6].start: start takes a mapping of parameters (expected e.g."
        " start: {})",
        f"{f}:16: rule wrong-resource: actions[0].stop: stop does not apply to account rules"
        " (expected resource: instance)",
    ]
    for line in expected:
        assert line in got, "\n".join(got)
    tail = [p for p in got if "not-a-list" in p]
    assert any(":20: rule not-a-list: actions:" in p for p in tail), tail
    assert any(":21: rule not-a-list: exclude:" in p for p in tail), tail
    assert any(":22: rule not-a-list: dry_run:" in p for p in tail), tail


def test_schema_lists_the_actions_and_rejects_delete() -> None:
    schema = rule_schema()
    for name in ("StopParams", "RenewParams", "ConvertParams", "SetAutoRenewParams"):
        assert name in schema["$defs"]
    assert schema["$defs"]["StopParams"]["properties"]["grace"]["default"] == "15m"
    assert schema["$defs"]["RenewParams"]["properties"]["lookback"]["default"] == "7d"
    bad = {
        "rules": [
            {
                "name": "x",
                "resource": "instance",
                "when": {"idle_gpu": {}},
                "actions": [{"delete": {}}],
            }
        ]
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_the_schema_command_prints_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "monitor", "schema"], capture_output=True, text=True, check=True
    ).stdout
    rule = json.loads(out)["$defs"]["RuleModel"]["properties"]
    assert {"actions", "exclude", "dry_run"} <= set(rule)


# --------------------------------------------------------------------------------------------
# config


ACCOUNT = "accounts: [{name: main, api_key_env: K}]\n"


def test_config_actions_defaults_are_the_issues() -> None:
    cfg = Config.from_yaml(ACCOUNT, env={})
    a = cfg.actions
    assert (a.enabled, a.dry_run) == (True, False)
    assert (a.max_per_cycle, a.max_per_hour, a.max_per_rule_per_hour) == (3, 10, 5)
    assert a.min_runway_after_charge == 86400 and a.approval_ttl == 86400
    assert a.protect.names == [] and a.protect.env == "NOVITA_MONITOR_PROTECT"
    assert cfg.schedules.act == 60
    assert "act" not in cfg.schedules.collectors()
    assert cfg.describe()["actions"]["max_per_cycle"] == 3


def test_config_actions_are_validated_with_lines() -> None:
    text = ACCOUNT + textwrap.dedent(
        """\
        schedules: {act: 30s}
        actions:
          dry_run: true
          max_per_cycle: -1
          min_runway_after_charge: 2d
          protect: {names: ["prod-*"], env: "bad name", nmes: []}
          enable: false
        """
    )
    with pytest.raises(ConfigError) as info:
        Config.from_yaml(text, "c.yaml", env={})
    got = [str(p) for p in info.value.problems]
    assert any(p.startswith("c.yaml:5: actions.max_per_cycle:") for p in got), got
    assert any(p.startswith("c.yaml:7: actions.protect.env:") for p in got), got
    assert any(p.startswith("c.yaml:7: actions.protect.nmes: unknown key") for p in got), got
    assert any(p.startswith("c.yaml:8: actions.enable: unknown key") for p in got), got
    ok = Config.from_yaml(
        ACCOUNT + "schedules: {act: 30s}\nactions: {min_runway_after_charge: 2d}\n", env={}
    )
    assert ok.schedules.act == 30 and ok.actions.min_runway_after_charge == 2 * 86400


# --------------------------------------------------------------------------------------------
# economics


def test_subscription_prices_per_listed_count_with_bounds() -> None:
    prices, bad = economics.subscription_prices(
        listed_unit_usd={1: Decimal("250"), 3: Decimal("700"), 6: Decimal("60")},
        on_demand_unit_usd=Decimal("0.5"),
        units=Decimal(2),
    )
    assert prices == {1: Decimal("500"), 3: Decimal("1400"), 6: None}  # 6 x $10/month: implausible
    assert [p.kind for p in bad] == ["monthly_price_implausible"]
    assert economics.subscription_prices(
        listed_unit_usd={1: Decimal("250")}, on_demand_unit_usd=None, units=Decimal(1)
    ) == ({1: None}, [])


def test_runway_after_a_charge() -> None:
    left = economics.runway_after_charge(Decimal("1000"), Decimal("2"), [], Decimal("300"), T0)
    assert left.hours == 350.0
    renewal = economics.Charge(T0 + timedelta(hours=10), Decimal("600"), "other")
    short = economics.runway_after_charge(
        Decimal("1000"), Decimal("2"), [renewal], Decimal("300"), T0
    )
    assert short.hours == 50.0  # 700 - 10 h x 2 - 600 = 80 left at 10 h, then 40 h more
    assert economics.runway_after_charge(
        Decimal("100"), Decimal("2"), [], Decimal("300"), T0
    ).in_arrears
    assert economics.runway_after_charge(None, Decimal("2"), [], Decimal("1"), T0).reason == (
        "unknown_balance"
    )
    assert economics.runway_after_charge(Decimal(1), Decimal(1), [], None, T0).hours is None


def test_savings_close_and_accrue() -> None:
    per = Decimal("0.50")
    closed = economics.SavingLine(per, T0, T0 + timedelta(hours=4), Decimal("2.00"))
    open_ = economics.SavingLine(per, T0 + timedelta(hours=2), None)
    unknown = economics.SavingLine(None, T0, None)
    not_yet = economics.SavingLine(per, None, None)
    total = economics.savings([closed, open_, unknown, not_yet], T0 + timedelta(hours=6))
    assert total.expected_usd_per_hour == per  # only the one still stopped
    assert total.realized_usd == Decimal("2.00") + Decimal("2.0")  # 4 h x 0.50 accrued
    assert economics.saving_so_far(per, T0, None, T0 - timedelta(hours=1)) == 0


def test_data_expiry_and_lookback_use() -> None:
    assert economics.data_expires_at(T0, 7) == T0 + timedelta(days=7)
    assert (
        economics.data_expires_at(None, 7) is None and economics.data_expires_at(T0, None) is None
    )
    assert economics.lookback_utilisation(50.0, 3600, 7200) == 25.0
    assert economics.lookback_utilisation(None, 0, 7200) == 0.0
    assert economics.lookback_utilisation(50.0, 0, 0) is None


def test_the_readme_rules_with_actions_validate(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Automatic idle shutdown", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]
    files = [b for b in blocks if b.startswith("rules:")]
    assert len(files) == 3  # dry run first, then live, and the renewal example
    names = []
    for i, text in enumerate(files):
        path = tmp_path / f"r{i}.yaml"
        path.write_text(text)
        for rule in load_rules([path]).rules:
            assert rule.actions, rule.name
            names.append(rule.name)
    assert names == [
        "stop-idle-gpus",
        "stop-idle-gpus",
        "renew-used-subscriptions",
        "convert-steady-instances",
    ]
    # the defaults block names every action with its defaults
    (defaults,) = [b for b in blocks if b.startswith("actions:")]
    listed = yaml.safe_load(defaults)["actions"]
    for item in listed:
        ((name, params),) = item.items()
        spec = actions.get(name)
        assert spec is not None and spec.params.model_validate(params or {}) == spec.params()
