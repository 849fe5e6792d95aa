"""Rule files: every problem reported as ``file:line: rule NAME: field: what (expected)``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from monitor.errors import RuleError
from monitor.rules.durations import format_duration, parse_duration
from monitor.rules.loader import load_rules
from monitor.rules.schema import rule_schema

SHIPPED = Path(__file__).resolve().parent.parent / "monitor" / "shipped_rules"

CANONICAL = """\
rules:
  - name: idle-gpu
    description: A pay-as-you-go GPU instance has done nothing for 30 minutes.
    resource: instance
    when:
      all:
        - {field: billing_mode, op: in, value: [onDemand, spot]}
        - idle_gpu: {window: 30m, threshold: 5, gpu_memory_threshold: 10, min_uptime: 15m}
    severity: warning
    repeat_interval: 4h
    labels: {team: ml}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(*paths: Path, channels: set[str] | None = None) -> list[str]:
    with pytest.raises(RuleError) as info:
        load_rules(list(paths), known_channels=channels)
    return [str(p) for p in info.value.problems]


def test_canonical_rule_loads_with_its_meaning(tmp_path: Path) -> None:
    ruleset = load_rules([write(tmp_path, "idle.yaml", CANONICAL)])
    (rule,) = ruleset.rules
    assert rule.name == "idle-gpu" and rule.resource == "instance"
    assert rule.for_.total_seconds() == 0
    assert rule.repeat_interval.total_seconds() == 4 * 3600
    assert rule.labels == {"team": "ml"} and rule.notify is None and rule.on_missing == "keep"
    assert rule.needs == {"instances", "metrics"}
    params = rule.when.children[1].params  # type: ignore[attr-defined]
    assert (params.threshold, params.gpu_memory_threshold) == (5, 10)
    assert params.window.total_seconds() == 1800 and params.min_uptime.total_seconds() == 900
    assert params.min_coverage == 0.9 and params.metric_lag.total_seconds() == 60


def test_typo_key_names_file_line_rule_and_allowed_keys(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "r.yaml",
        """\
        rules:
          - name: r1
            resource: account
            when: {low_balance: {usd: 5}}
            severity: warning
            notfy: [ops]
        """,
    )
    (msg,) = problems(f)
    assert msg.startswith(f"{f}:6: rule r1: notfy: unknown key (expected one of: actions, ")


def test_bad_op_bad_regex_unknown_field_bad_duration_all_reported(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "r.yaml",
        """\
        rules:
          - name: r1
            resource: instance
            when:
              all:
                - {field: billing_mode, op: equals, value: x}
                - {field: name, op: regex, value: "gpu-("}
                - {field: biling_mode, op: eq, value: x}
                - idle_gpu: {window: 30x, treshold: 5}
            repeat_interval: 4 hours
        """,
    )
    got = problems(f)
    assert f"{f}:6: rule r1: when.all[0].op: 'equals' is not valid (expected 'eq', " in got[1]
    assert (
        got[0]
        == f"{f}:10: rule r1: repeat_interval: '4 hours' is not a duration (expected e.g. 30m, 4h, 7d)"
    )
    assert (
        f"{f}:7: rule r1: when.all[1].value: bad regular expression 'gpu-(': "
        "missing ), unterminated subpattern at position 4 (expected a Python regular expression)"
    ) in got
    assert any(
        m.startswith(
            f"{f}:8: rule r1: when.all[2].field: unknown field 'biling_mode' for instance rules (expected one of: id, name, status, billing_mode"
        )
        for m in got
    )
    assert (
        f"{f}:9: rule r1: when.all[3].idle_gpu.window: '30x' is not a duration (expected e.g. 30m, 4h, 7d)"
        in got
    )
    assert any(
        m.startswith(
            f"{f}:9: rule r1: when.all[3].idle_gpu.treshold: unknown key (expected one of: cpu_threshold, gpu_memory_threshold"
        )
        for m in got
    )
    assert len(got) == 6


def test_duplicate_names_across_files_and_unknown_channel(tmp_path: Path) -> None:
    a = write(
        tmp_path,
        "a.yaml",
        "rules:\n  - {name: dup, resource: monitor, when: {collector_stale: {}}}\n",
    )
    b = write(
        tmp_path,
        "b.yaml",
        """\
        rules:
          - name: ok
            resource: monitor
            when: {collector_stale: {}}
            notify: [ops, pager]
          - name: dup
            resource: monitor
            when: {collector_stale: {}}
        """,
    )
    got = problems(tmp_path, channels={"ops"})  # a folder: both files
    assert got == [
        f"{b}:5: rule ok: notify[1]: unknown channel 'pager' (expected one of: ops)",
        f"{b}:6: rule dup: name: duplicate rule name (first defined at {a}:2; "
        "expected names unique across all rule files)",
    ]
    # without a configuration, channel names are not checked
    assert problems(a, b) == [got[1]]


def test_an_action_on_the_wrong_resource_is_rejected_clearly(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "r.yaml",
        "rules:\n  - name: r\n    resource: monitor\n    when: {collector_stale: {}}\n    actions: [{stop: {}}]\n",
    )
    (msg,) = problems(f)
    assert msg == (
        f"{f}:5: rule r: actions[0].stop: stop does not apply to monitor rules "
        "(expected resource: instance)"
    )


def test_condition_on_wrong_resource_unknown_condition_and_shapes(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "r.yaml",
        """\
        rules:
          - name: a
            resource: account
            when: {idle_gpu: {}}
          - name: b
            resource: instance
            when: {idle_cpu: {}}
          - name: c
            resource: instance
            when: {all: []}
          - name: d
            resource: account
            when: {low_balance: {}}
          - name: e
            resource: instance
            when: {field: end_time, op: days_until, value: soon}
          - name: f
            resource: account
            when: {low_balance: {usd: 5}}
            summary: "{{ value "
        """,
    )
    got = problems(f)
    assert (
        got[0]
        == f"{f}:4: rule a: when.idle_gpu: idle_gpu does not apply to account rules (expected resource: instance)"
    )
    assert got[1].startswith(
        f"{f}:7: rule b: when.idle_cpu: unknown condition 'idle_cpu' (expected one of: all, any, not, field/op/value, collector_stale,"
    )
    assert got[2] == f"{f}:10: rule c: when.all: all needs a non-empty list of conditions"
    assert (
        got[3] == f"{f}:13: rule d: when.low_balance: low_balance needs usd, runway_hours or levels"
    )
    assert got[4] == (
        f"{f}:16: rule e: when.value: days_until needs a number of days or a duration, not 'soon' "
        "(expected e.g. 7 or 36h)"
    )
    assert got[5].startswith(f"{f}:20: rule f: summary: bad Jinja2 template")


def test_yaml_syntax_and_structure_errors(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "rules:\n  - name: x\n    when: [unclosed\n")
    empty = write(tmp_path, "empty.yaml", "")
    wrong = write(tmp_path, "wrong.yaml", "rule: []\n")
    got = problems(tmp_path / "missing.yaml", bad, empty, wrong)
    assert got[0] == f"{tmp_path / 'missing.yaml'}: no such file or folder"
    assert got[1].startswith(f"{bad}:") and "invalid YAML" in got[1]
    assert got[2] == f"{empty}:1: empty rule file (expected a mapping with a rules: list)"
    assert any(m.startswith(f"{wrong}:1: rule: unknown key") for m in got)


def test_every_problem_is_in_the_error_message(tmp_path: Path) -> None:
    f = write(tmp_path, "r.yaml", "rules:\n  - {name: x, resource: nope, when: {}}\n")
    with pytest.raises(RuleError) as info:
        load_rules([f])
    text = str(info.value)
    assert text.splitlines()[0] == "1 problem in rule files"
    assert (
        "rule x: resource: 'nope' is not valid (expected 'instance', 'account', 'task' or 'monitor')"
        in text
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("4h", 14400), ("7d", 604800), ("1h30m", 5400), ("90s", 90), ("0", 0), (0, 0)],
)
def test_durations(text: object, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["30", 30, "4 hours", "h", "-5m", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match=r"expected e\.g\. 30m, 4h, 7d"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    assert format_duration(parse_duration("1h30m")) == "1h30m"
    assert format_duration(parse_duration("7d")) == "7d"


def test_shipped_rules_load_and_name_no_channel() -> None:
    ruleset = load_rules([SHIPPED], known_channels=set())
    assert {
        "idle-gpu",
        "low-balance",
        "balance-runway",
        "subscription-expiring-used",
        "subscription-expiring-idle",
        "failed-task",
        "instance-error",
        "spend-surge",
        "subscription-candidate",
        "monitor-cannot-see-account",
    } <= set(ruleset.names)
    assert all(rule.notify is None for rule in ruleset)


def test_canonical_idle_gpu_rule_is_shipped_exactly() -> None:
    shipped = yaml.safe_load((SHIPPED / "idle-gpu.yaml").read_text())
    assert shipped == yaml.safe_load(CANONICAL)


def test_schema_validates_shipped_files_and_rejects_mistakes() -> None:
    schema = rule_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(SHIPPED.glob("*.yaml")):
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert errors == [], (path, [e.message for e in errors])
    for bad in (
        {"rules": [{"name": "x", "resource": "instance", "when": {"idle_gpu": {"treshold": 5}}}]},
        {"rules": [{"name": "x", "resource": "instance", "when": {"field": "a", "op": "equals"}}]},
        {"rules": [{"name": "x", "resource": "account", "when": {"spend": {}}, "for": "5 min"}]},
        {
            "rules": [
                {"name": "x", "resource": "monitor", "when": {"collector_stale": {}}, "notfy": []}
            ]
        },
    ):
        assert list(validator.iter_errors(bad)), bad


def test_schema_spells_duration_defaults_as_rule_files_do() -> None:
    text = json.dumps(rule_schema())
    assert '"PT' not in text and '"P7D"' not in text
    idle = rule_schema()["$defs"]["IdleGpuParams"]["properties"]
    assert idle["window"]["default"] == "30m" and idle["threshold"]["default"] == 5
