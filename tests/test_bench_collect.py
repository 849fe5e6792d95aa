"""``bench collect`` at a tiny size over two accounts: a real simulator gateway process, the
monitor's clients at concurrency C each; the report's fields (no timing asserted)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from monitor.cli import cli


def run(*args: str) -> tuple[list[str], dict]:
    result = CliRunner().invoke(cli, ["bench", "collect", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    return lines, json.loads(lines[-1])


def test_two_accounts_without_baseline() -> None:
    lines, report = run(
        "--instances", "12", "--accounts", "2", "--latency-ms", "5", "--concurrency", "4",
        "--no-baseline", "--runs", "2",
    )  # fmt: skip
    assert report["accounts"] == 2
    assert report["accounts_ok"] == 2  # every collector of both accounts ran ok
    assert report["failed_runs"] == 0
    assert report["runs"] == 2 and len(report["ratios"]) == 2
    assert report["baseline_wall_s"] is None and report["speedup"] is None
    assert not any("(baseline)" in line for line in lines)
    # every request of both accounts counted; the floor follows them
    assert report["requests"] > 2 * 5
    assert report["floor_s"] == (1 + -(-(report["requests"] - 1) // 4)) * 0.005
    assert report["ratio"] >= 1.0  # the floor is a floor
    # a steady cycle reads one new minute of each running instance of both fleets
    assert 0 < report["metric_rows"] <= 12
    assert 0 < report["gateway_max_in_flight"] <= 4  # the gateway's cap, over both accounts
    # each run's own peak (reset before it): memory freed since the base was read may put it
    # under the base, never under zero nor over the largest run's
    assert report["peak_rss_max_mb"] >= report["peak_rss_mb"] > 0 and report["base_rss_mb"] > 0
    assert report["peak_rss_method"] in ("VmHWM per run", "ru_maxrss since start")
    assert report["cpu_s"] > 0


def test_two_accounts_with_the_baseline() -> None:
    lines, report = run(
        "--instances", "6", "--accounts", "2", "--latency-ms", "5", "--concurrency", "4"
    )  # fmt: skip
    assert any("concurrency 1 (baseline)" in line for line in lines)
    assert report["baseline_wall_s"] > 0 and report["speedup"] > 0
    assert report["accounts_ok"] == 2


def test_more_accounts_than_instances_is_refused() -> None:
    result = CliRunner().invoke(cli, ["bench", "collect", "--instances", "1", "--accounts", "2"])
    assert result.exit_code != 0
    assert "2 accounts need at least as many instances" in result.output
