"""``bench store`` at a tiny size, on SQLite and PostgreSQL: what retention keeps after D days at
the default schedules, and the size figures reported (no size target asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from monitor.bench_store import FIT_DAYS, HOURLY_BILL_DAYS, bench_store, growth_per_day
from monitor.cli import cli
from monitor.config import Schedules
from monitor.errors import UserError
from monitor.store import open_store
from monitor.store.testing import pg_url, reset_database

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(pg_url() is None, reason="NOVITA_MONITOR_TEST_PG_URL not set"),
        ],
    ),
]

N, DAYS = 3, 9


def runs_per_day() -> int:
    every = {**Schedules().collectors(), "retention": Schedules().retention}
    return sum(86400 // int(v) for v in every.values())


def database(backend: str) -> str | None:
    if backend == "sqlite":
        return None  # the command's own temporary file
    url = pg_url()
    assert url is not None
    reset_database(url)
    return url


@pytest.mark.parametrize("backend", BACKENDS)
def test_retention_bounds_what_is_kept(backend: str) -> None:
    lines: list[str] = []
    report = bench_store(N, DAYS, database(backend), seed=2, echo=lines.append, progress_every=3)
    assert json.loads(lines[-1]) == report
    assert sum(1 for line in lines if line.startswith("day ")) == DAYS // 3
    rows = report["rows"]
    assert report["raw_rows_written"] == N * 1440 * DAYS
    assert rows["metric_samples"] == N * 1440 * 7  # raw minutes: the last 7 days
    assert rows["metric_hourly"] == N * (24 * DAYS - 1)  # every hour rolled up but the last
    assert rows["balance_samples"] == DAYS * 288  # every 5 minutes, kept a year
    assert rows["usage_bills"] == N * DAYS * (24 + 1)  # hourly and daily, within 45 days
    assert rows["collector_runs"] == 7 * runs_per_day()  # the last 7 days' runs
    assert report["database"] == backend
    assert report["steady_bytes"] > 0 and report["mb_per_instance"] > 0
    assert report["raw_bytes_per_instance_day"] > report["rollup_bytes_per_instance_day"] > 0
    assert report["tables"]["metric_samples"] > 0
    assert report["mb_per_instance_year"] is None  # too few days to fit the growth
    assert "not extrapolated" in report["year_method"]
    if backend == "sqlite":
        assert report["file_bytes"] >= report["vacuumed_bytes"] == report["steady_bytes"]
    else:
        assert report["total_relation_bytes"] >= report["vacuum_full_bytes"] > 0


def test_a_database_with_an_account_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'used.db'}"
    store = open_store(url)
    store.ensure_account("prod")
    store.close()
    with pytest.raises(UserError, match=r"empty database.*\['prod'\]"):
        bench_store(1, 1, url, echo=lambda _: None)


def test_growth_is_fitted_once_the_short_windows_are_full() -> None:
    first = HOURLY_BILL_DAYS + 2
    # fast growth while the raw and hourly-bill windows fill, 1000 bytes a day after
    series = [
        (d, d * 5000 if d < first else first * 5000 + (d - first) * 1000) for d in range(1, 200)
    ]
    assert growth_per_day(series, 199) == pytest.approx(1000)
    short = [(d, d) for d in range(1, first + FIT_DAYS - 1)]
    assert growth_per_day(short, len(short)) is None


def test_cli_prints_the_report_last() -> None:
    result = CliRunner().invoke(
        cli, ["bench", "store", "--instances", "1", "--days", "2"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["instances"] == 1 and report["days"] == 2
    assert report["rows"]["metric_samples"] == 2 * 1440
