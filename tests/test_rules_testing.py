"""The rule test runner: the shipped rule tests pass, the canonical case works, and a failing
case says exactly what was missing and what was unexpected."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.errors import RuleError
from monitor.rules import run_rule_tests
from monitor.rules.testing import parse_offset, parse_series

SHIPPED = Path(__file__).resolve().parent.parent / "monitor" / "shipped_rules"
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)

CANONICAL_TEST = """\
rule_files: [../idle-gpu.yaml]
tests:
  - name: the forgotten notebook fires, the busy trainer does not
    instances:
      - {id: i-1, name: notebook, status: running, billing_mode: onDemand, gpu_count: 1, started: -3h}
      - {id: i-2, name: trainer, status: running, billing_mode: onDemand, gpu_count: 2, started: -3h}
    metrics:
      i-1: {gpu_util: "1 for 60m"}
      i-2: {gpu_util: "80 for 60m"}
    expect:
      - at: 0m
        firing: [{rule: idle-gpu, resource: i-1}]
"""


def shipped_cases() -> list[Path]:
    return sorted((SHIPPED / "tests").glob("*.yaml"))


@pytest.mark.parametrize("path", shipped_cases(), ids=lambda p: p.name)
def test_shipped_rule_tests_pass(path: Path) -> None:
    results = run_rule_tests(path)
    assert results, path
    failed = [str(r) for r in results if not r.passed]
    assert failed == []


def test_every_shipped_rule_file_has_tests() -> None:
    rule_files = {p.name for p in SHIPPED.glob("*.yaml")}
    tested = {p.name for p in shipped_cases()}
    assert rule_files == tested
    assert len(rule_files) >= 7


def project(tmp_path: Path, test_text: str) -> Path:
    (tmp_path / "idle-gpu.yaml").write_text((SHIPPED / "idle-gpu.yaml").read_text())
    (tmp_path / "tests").mkdir()
    path = tmp_path / "tests" / "case.yaml"
    path.write_text(textwrap.dedent(test_text))
    return path


def test_the_canonical_case_passes(tmp_path: Path) -> None:
    (result,) = run_rule_tests(project(tmp_path, CANONICAL_TEST))
    assert result.passed and result.name.startswith("the forgotten notebook")


def test_a_wrong_expectation_fails_with_a_clear_diff(tmp_path: Path) -> None:
    wrong = CANONICAL_TEST.replace("resource: i-1}", "resource: i-2}")
    (result,) = run_rule_tests(project(tmp_path, wrong))
    assert not result.passed
    assert result.failures == [
        "at 0m: firing: missing idle-gpu on i-2",
        "at 0m: firing: unexpected idle-gpu on i-1 (warning, firing)",
    ]
    assert str(result).startswith("FAIL ")


def test_notified_lists_compare_the_notifications_since_the_previous_check(tmp_path: Path) -> None:
    text = CANONICAL_TEST.replace(
        "      - at: 0m\n        firing: [{rule: idle-gpu, resource: i-1}]",
        "      - {at: -10m, firing: [{rule: idle-gpu, resource: i-1}],"
        " notified: [{rule: idle-gpu, resource: i-1, state: firing}]}\n"
        "      - {at: 0m, firing: [{rule: idle-gpu, resource: i-1}],"
        " notified: [{rule: idle-gpu, resource: i-1, state: firing}]}",
    )
    (result,) = run_rule_tests(project(tmp_path, text))
    assert result.failures == ["at 0m: notified: missing idle-gpu on i-1 state=firing"]


def test_an_invalid_test_file_is_a_rule_error_with_lines(tmp_path: Path) -> None:
    bad = CANONICAL_TEST.replace("    expect:", "    expekt:")
    with pytest.raises(RuleError) as info:
        run_rule_tests(project(tmp_path, bad))
    messages = [str(p) for p in info.value.problems]
    assert any(":10: tests[0].expekt: unknown key" in m for m in messages)
    assert any(":3: tests[0].expect: missing required key" in m for m in messages)


def test_bad_series_is_reported_as_a_failure(tmp_path: Path) -> None:
    text = CANONICAL_TEST.replace('"1 for 60m"', '"1 during 60m"')
    (result,) = run_rule_tests(project(tmp_path, text))
    assert not result.passed
    assert result.failures[0].startswith("bad test data: bad series segment '1 during 60m'")


def test_series_and_offsets() -> None:
    samples = parse_series("80 for 2m, _ for 1m, 10 for 1m", NOW)
    assert samples == [
        (NOW - timedelta(minutes=3), 80.0),
        (NOW - timedelta(minutes=2), 80.0),
        (NOW, 10.0),
    ]
    assert parse_offset("-3h") == -timedelta(hours=3)
    assert parse_offset("+2d") == timedelta(days=2)
    assert parse_offset("0m") == parse_offset(0) == timedelta(0)
