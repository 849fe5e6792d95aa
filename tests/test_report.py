"""Reports: the figures against the simulator's truth and a hand-made store, unknown figures
shown as unknown, the HTML report's charts read back from headless Chromium, the command."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, make_url

from monitor import economics
from monitor.app import App
from monitor.cli import cli
from monitor.clock import ManualClock
from monitor.economics import SavingLine, Spent
from monitor.pipeline import Pipeline
from monitor.report import build_report, render, to_json
from monitor.report.model import report_window
from monitor.sim import FleetSim
from monitor.sim.truth import truth_json
from monitor.store import tables as t
from monitor.store.models import ActionRecord
from monitor.store.testing import pg_url, reset_database
from monitor.store.types import to_epoch
from tests.helpers import ENV, open_app, skip_unless_ci

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
D = timedelta(days=1)


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


@pytest.fixture
def backend() -> str:
    return "sqlite"


def database_url(backend: str, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """None (``open_app``'s SQLite file) or the emptied test PostgreSQL database, its password
    through PGPASSWORD (a configured URL may not hold one)."""
    if backend == "sqlite":
        return None
    url = pg_url()
    assert url is not None
    reset_database(url)
    parsed = make_url(url)
    if parsed.password:
        monkeypatch.setenv("PGPASSWORD", str(parsed.password))
    return parsed._replace(password=None).render_as_string(hide_password=False)


@pytest.fixture
async def app(
    tmp_path: Path,
    sim_app: Any,
    clock: ManualClock,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[App]:
    """The demo fleet collected at T0 and for an hour after (bills collected at T0 + 1 h)."""
    database = database_url(backend, monkeypatch)
    running = open_app(tmp_path, sim_app, clock, database=database)
    try:
        pipeline = Pipeline(running, clock)
        # no retention job: the tests roll up themselves (figures from raw minutes, then the
        # same figures from the rollups)
        del pipeline.intervals["retention"]
        await pipeline.step()
        await pipeline.advance(60, every=15)
        yield running
    finally:
        await running.aclose()


def report_json(app: App, since: timedelta) -> dict[str, Any]:
    now = app.clock.now()
    start, end = report_window(now, since)
    return to_json(build_report(app.facts_at(now), start, end))


# -- the figures ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_spend_by_instance_day_and_product_match_the_simulators_truth(
    app: App, demo_sim: FleetSim
) -> None:
    data = report_json(app, D)
    (acc,) = data["accounts"]
    start = datetime.fromisoformat(data["start"])
    assert start == datetime(2026, 11, 19, tzinfo=UTC)  # a day back, at midnight UTC
    truth = {i["id"]: i for i in truth_json(demo_sim, int(start.timestamp()))["instances"]}
    spent = {i["id"]: i["usd"] for i in acc["spend_by_instance"]}
    paid_something = [iid for iid, t in truth.items() if t["cost_since_usd"] > 0]
    assert len(paid_something) >= 5
    for iid in paid_something:
        assert spent[iid] == pytest.approx(truth[iid]["cost_since_usd"], abs=1e-3), iid
    for iid, usd in spent.items():
        assert usd == pytest.approx(truth[iid]["cost_since_usd"] if iid in truth else 0, abs=1e-3)
    total = sum(t["cost_since_usd"] for t in truth.values())
    assert acc["spend_usd"] == pytest.approx(total, abs=1e-3)
    # the days and the products add up to the same spend
    assert [d["day"] for d in acc["spend_by_day"]] == ["2026-11-19", "2026-11-20"]
    assert sum(d["usd"] for d in acc["spend_by_day"]) == pytest.approx(total, abs=1e-3)
    assert sum(p["usd"] for p in acc["spend_by_product"]) == pytest.approx(total, abs=1e-3)


async def test_idle_hours_and_cost_agree_with_the_idle_alert(app: App) -> None:
    (acc,) = report_json(app, D)["accounts"]
    notebook = next(i for i in acc["spend_by_instance"] if i["id"] == "demo-notebook")
    # the notebook idles from 5 h before T0 (the idle-gpu alert's figure at T0) to T0 + 1 h
    assert notebook["idle_gpu_hours"] == pytest.approx(6.0, abs=0.02)
    (alert,) = [
        a
        for a in app.store.load_alerts("main")
        if a.rule == "idle-gpu" and a.resource_id == "demo-notebook"
    ]
    assert notebook["idle_cost_usd"] == pytest.approx(alert.values["cost_so_far_usd"], abs=0.01)
    # the busy trainer is not idle; a prepaid subscription's idle hours cost nothing more
    trainer = next(i for i in acc["spend_by_instance"] if i["id"] == "demo-trainer")
    assert trainer["idle_gpu_hours"] == 0
    lapsing = next(i for i in acc["spend_by_instance"] if i["id"] == "demo-lapsing")
    assert lapsing["billing_mode"] == "monthly" and lapsing["idle_cost_usd"] is None
    hourly = [
        i["idle_cost_usd"] for i in acc["spend_by_instance"] if i["billing_mode"] != "monthly"
    ]
    assert acc["idle"]["cost_usd"] == pytest.approx(sum(hourly), abs=1e-3)
    assert acc["idle"]["gpu_hours"] == pytest.approx(
        sum(i["idle_gpu_hours"] for i in acc["spend_by_instance"]), abs=0.02
    )


def counted_by_minutes(app: App, start: datetime, end: datetime) -> dict[str, int]:
    """Idle minutes per instance the idle machinery's way: each raw minute's busiest GPU."""
    ids = [i.id for i in app.facts_at(end).instances("main")]
    return {
        iid: sum(1 for _, peak in rows if peak is not None and peak < 5.0)
        for iid, rows in app.store.gpu_minutes("main", ids, start, end).items()
    }


@pytest.mark.parametrize("backend", BACKENDS)
async def test_idle_minutes_are_counted_from_the_rollups_and_the_raw_minutes_alike(
    app: App,
) -> None:
    now = app.clock.now()
    start, end = report_window(now, D)
    ids = [i.id for i in app.facts_at(now).instances("main")]
    expected = {k: v for k, v in counted_by_minutes(app, start, end).items() if v}
    assert expected["demo-notebook"] == 360 and 0 < expected["demo-inference"] < 360
    assert app.store.idle_minute_counts("main", ids, start, end, 5.0) == expected
    before = report_json(app, D)
    assert app.store.rollup(now) > 0  # whole hours decided from their figures, mixed ones read
    assert app.store.idle_minute_counts("main", ids, start, end, 5.0) == expected
    assert report_json(app, D) == before
    # past the raw retention: an hour idle throughout still counts, a mixed one cannot
    mark = app.store.rollup_watermark()
    assert mark is not None and mark > start
    with app.store.engine.begin() as conn:
        conn.execute(delete(t.metric_samples).where(t.metric_samples.c.ts < to_epoch(mark)))
    after = app.store.idle_minute_counts("main", ids, start, end, 5.0)
    assert after["demo-notebook"] == 360 and after["demo-error"] == expected["demo-error"]
    assert 0 <= after.get("demo-inference", 0) < expected["demo-inference"]
    assert all(after.get(i, 0) <= n for i, n in expected.items())


async def test_alerts_and_subscription_advice_are_the_status_figures(app: App) -> None:
    (acc,) = report_json(app, D)["accounts"]
    firing = {(a.rule, a.resource_id) for a in app.store.load_alerts("main", ["firing"])}
    assert firing and firing <= {(a["rule"], a["resource_id"]) for a in acc["alerts"]}
    (advice,) = [a for a in acc["subscription_advice"] if a["monthly_saving_usd"]]
    (alert,) = [a for a in app.store.load_alerts("main") if a.rule == "subscription-candidate"]
    assert advice["instance_id"] == alert.resource_id == "demo-allmonth"
    assert advice["monthly_saving_usd"] == alert.values["monthly_saving_usd"]


async def test_days_before_the_stored_bills_are_unknown_never_a_number(app: App) -> None:
    now = app.clock.now()
    start, end = report_window(now, timedelta(days=30))
    report = build_report(app.facts_at(now), start, end)
    (acc,) = to_json(report)["accounts"]
    days = {d["day"]: d["usd"] for d in acc["spend_by_day"]}
    # the hourly bills reach 8 days back from the first collection (T0): 11-12 12:00, so
    # 11-12 is only half known
    assert days["2026-10-21"] is None and days["2026-11-12"] is None
    assert days["2026-11-13"] is not None and days["2026-11-20"] is not None
    assert acc["spend_usd"] is None
    assert all(i["usd"] is None for i in acc["spend_by_instance"])
    assert all(p["usd"] is None for p in acc["spend_by_product"])
    text = render(report, "text")
    assert re.search(r"\n    2026-10-21 +unknown\n", text) and "spent unknown" in text
    html = render(report, "html")
    assert 'data-label="2026-10-21" data-value="unknown"' in html


def test_savings_count_the_part_of_each_stop_inside_the_window(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 11, 20, 12, tzinfo=UTC))
    from monitor.config import Config
    from tests.helpers import write_config

    app = App.open(Config.load(write_config(tmp_path), env=ENV), clock, env=ENV)
    try:
        rows = [  # stopped at 1 $/h: 10 h before the window, 2 h inside; then one inside
            (datetime(2026, 11, 18, 14, tzinfo=UTC), datetime(2026, 11, 19, 2, tzinfo=UTC), "1"),
            (datetime(2026, 11, 20, 1, tzinfo=UTC), None, "0.5"),  # still stopped: 11 h
        ]
        for n, (since, until, rate) in enumerate(rows):
            app.store.insert_actions(
                [
                    ActionRecord(
                        account="main",
                        rule="idle-stop",
                        action="stop",
                        instance_id=f"i-{n}",
                        intent_key=f"k-{n}",
                        idempotency_key=f"k-{n}",
                        dry_run=False,
                        state="succeeded",
                        planned_at=since,
                        saving_per_hour_usd=Decimal(rate),
                        saving_since=since,
                        saving_until=until,
                        realized_saving_usd=None if until is None else Decimal(12),
                    )
                ]
            )
        now = clock.now()
        start, end = report_window(now, D)
        (acc,) = to_json(build_report(app.facts_at(now), start, end))["accounts"]
        assert acc["savings"]["realized_usd"] == pytest.approx(2 + 5.5)
        assert acc["savings"]["by_rule"] == [{"rule": "idle-stop", "realized_usd": 7.5}]
        # with no bills collected every money figure is unknown
        assert acc["spend_usd"] is None and acc["idle"]["gpu_hours"] is None
    finally:
        app.store.close()


# -- the economics the report adds ---------------------------------------------------------


def test_spend_by_leaves_a_partly_known_key_unknown() -> None:
    day = datetime(2026, 11, 19, tzinfo=UTC)
    groups = [
        Spent(day, "a", "p", Decimal("1.5")),
        Spent(day + D, "a", "p", Decimal("2")),
        Spent(day + D, "b", "q", Decimal("4")),
    ]
    assert economics.spend_by(groups, lambda g: g.owner_id, lambda g: True) == {
        "a": Decimal("3.5"),
        "b": Decimal(4),
    }
    later = economics.spend_by(groups, lambda g: g.owner_id, lambda g: g.day > day)
    assert later == {"a": None, "b": Decimal(4)}


def test_idle_gpu_hours_are_idle_minutes_times_gpus() -> None:
    assert economics.idle_gpu_hours(90, 2) == 3.0
    assert economics.idle_gpu_hours(30, 0) == 0.5  # a CPU-only instance counts itself


def test_idle_cost_is_at_the_billed_rate_and_unknown_beyond_the_window() -> None:
    day = timedelta(hours=24)
    assert economics.idle_cost(Decimal(10), 10.0, 5.0, 1, day) == Decimal(5)
    assert economics.idle_cost(Decimal(10), 10.0, 8.0, 4, day) == Decimal(2)  # 2 h of 10 idle
    # the bills lag the samples by the hour being billed: idle beyond billed hours is priced
    assert economics.idle_cost(Decimal(23), 23.0, 24.0, 1, day) == Decimal(24)
    assert economics.idle_cost(Decimal(10), 10.0, 25.0, 1, day) is None  # beyond the window
    assert economics.idle_cost(Decimal(10), None, 1.0, 1, day) is None
    assert economics.idle_cost(None, 10.0, 1.0, 1, day) is None
    assert economics.idle_cost(Decimal(10), 0.0, 1.0, 1, day) is None  # no rate billed yet
    assert economics.idle_cost(Decimal(10), 0.0, 0.0, 1, day) == 0


def test_a_stop_is_clipped_to_the_window() -> None:
    s, e = datetime(2026, 11, 19, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)
    line = SavingLine(Decimal(2), s - D, s + timedelta(hours=3), Decimal(54))
    clipped = economics.clip_saving(line, s, e)
    assert clipped == SavingLine(Decimal(2), s, s + timedelta(hours=3), None)
    inside = SavingLine(Decimal(2), s + timedelta(hours=1), s + timedelta(hours=3), Decimal(4))
    assert economics.clip_saving(inside, s, e) == inside
    assert economics.clip_saving(SavingLine(Decimal(2), e, None), s, e) is None
    assert economics.clip_saving(SavingLine(Decimal(2), s - D, s), s, e) is None


# -- HTML in a real browser ----------------------------------------------------------------


async def test_the_html_report_renders_in_chromium_with_the_json_reports_numbers(
    app: App, tmp_path: Path
) -> None:
    if CHROMIUM is None:
        skip_unless_ci("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.async_api import async_playwright

    now = app.clock.now()
    start, end = report_window(now, timedelta(days=7))
    report = build_report(app.facts_at(now), start, end)
    (acc,) = to_json(report)["accounts"]
    page_file = tmp_path / "report.html"
    page_file.write_text(render(report, "html"), encoding="utf-8")
    html = page_file.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html

    expected = {
        "spend-by-day": [(d["day"], d["usd"]) for d in acc["spend_by_day"]],
        "spend-by-instance": [(i["name"], i["usd"]) for i in acc["spend_by_instance"]],
        "spend-by-product": [(p["name"], p["usd"]) for p in acc["spend_by_product"]],
        "idle-gpu-hours": [(i["name"], i["idle_gpu_hours"]) for i in acc["spend_by_instance"]],
    }
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            await page.goto(page_file.as_uri())
            assert requests == [page_file.as_uri()]  # no external asset
            for chart, bars in expected.items():
                read = await page.eval_on_selector_all(
                    f"svg[data-chart='{chart}'] g.bar-group",
                    """els => els.map(e => {
                        const r = e.querySelector('rect');
                        return [e.dataset.label, e.dataset.value,
                                r ? r.getBoundingClientRect().width : null,
                                e.querySelector('title').textContent];
                    })""",
                )
                assert [(label, value) for label, value, _, _ in read] == [
                    (label, "unknown" if v is None else repr(v)) for label, v in bars
                ], chart
                # the bars are drawn to scale: width / widest = value / largest
                top = max((v for _, v in bars if v), default=0)
                widest = max((w for _, _, w, _ in read if w), default=0)
                for (_, value), (_, _, width, title) in zip(bars, read, strict=True):
                    if value is not None and top:
                        assert width / widest == pytest.approx(value / top, abs=0.01), chart
                    assert title.endswith("unknown" if value is None else f"{value:,.2f}")
            headline = await page.get_attribute("[data-figure='spend_usd']", "data-value")
            assert headline == repr(acc["spend_usd"])
            saving = await page.get_attribute(
                "[data-figure='monthly_saving_usd'][data-value]:not([data-value='0.0'])",
                "data-value",
            )
            (advised,) = [a for a in acc["subscription_advice"] if a["monthly_saving_usd"]]
            assert saving == repr(advised["monthly_saving_usd"])
        finally:
            await browser.close()


# -- the command ---------------------------------------------------------------------------


async def test_the_report_command_writes_each_format(app: App, tmp_path: Path) -> None:
    config = str(app.config.path)
    clock = app.clock
    runner = CliRunner()
    out = tmp_path / "r.json"
    result = runner.invoke(
        cli,
        ["report", "--config", config, "--since", "1d", "--format", "json", "--output", str(out)],
        obj={"clock": clock},
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written == report_json(app, D)
    text = runner.invoke(cli, ["report", "--config", config], obj={"clock": clock}, env=ENV)
    assert text.exit_code == 0 and "spend by day (UTC)" in text.stdout
    html = runner.invoke(
        cli, ["report", "--config", config, "--format", "html"], obj={"clock": clock}, env=ENV
    )
    assert html.stdout.startswith("<!DOCTYPE html>")
    bad = runner.invoke(cli, ["report", "--config", config, "--since", "a week"], env=ENV)
    assert bad.exit_code == 2 and "--since: 'a week' is not a duration" in bad.stderr
