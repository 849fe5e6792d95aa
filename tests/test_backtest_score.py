"""The backtest's oracle and scores on hand-made traces (``monitor.backtest.score``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from monitor.backtest import score
from monitor.backtest.score import Gap, Span, Stop, Trace

T0 = datetime(2026, 11, 2, 6, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def trace(
    *parts: tuple[float, float, bool],
    gpus: int = 1,
    mode: str = "onDemand",
    iid: str = "i-1",
    hourly: str | None = "1.20",
    outages: tuple[tuple[float, float], ...] = (),
) -> Trace:
    """Spans ``(start_min, end_min, work)``."""
    return Trace(
        instance_id=iid,
        gpu_count=gpus,
        billing_mode=mode,
        spans=tuple(Span(at(a), at(b), w) for a, b, w in parts),
        hourly_usd=None if hourly is None else Decimal(hourly),
        storage_usd_per_hour=Decimal("0.06"),
        outages=tuple((at(a), at(b)) for a, b in outages),
    )


# work 0-60, idle 60-180 (2 h), work 180-240, idle 240-245 (5 min), work 245-300, idle to 600
DAY = trace(
    (0, 60, True),
    (60, 120, False),
    (120, 180, False),  # two idle spans in a row are one gap
    (180, 240, True),
    (240, 245, False),
    (245, 300, True),
    (300, 600, False),
    gpus=2,
)


def test_idle_gaps_merge_adjacent_idle_spans_and_know_whether_work_resumed() -> None:
    assert score.idle_gaps(DAY) == [
        Gap(at(60), at(180), True),
        Gap(at(240), at(245), True),
        Gap(at(300), at(600), False),
    ]


def test_the_oracle_skips_gaps_shorter_than_a_restart_and_pays_one_per_resumed_gap() -> None:
    # 2 h gap resumed: (120 - 10) min; 5 min gap: not worth a restart; last 300 min: no restart
    expected = ((120 - 10) + 300) / 60 * 2
    assert score.oracle_avoided_hours([DAY]) == pytest.approx(expected)
    # a gap of exactly the restart cost is not longer than it
    assert score.oracle_gap_hours(Gap(at(0), at(10), True), 1) == 0
    # prepaid instances: nothing to avoid
    prepaid = trace((0, 60, True), (60, 600, False), mode="monthly")
    assert score.oracle_avoided_hours([prepaid]) == 0


def test_rules_that_stop_like_the_oracle_capture_everything() -> None:
    stops = [
        Stop("i-1", at(60), at(180), "onDemand"),
        Stop("i-1", at(300), None, "onDemand"),
    ]
    assert score.oracle_capture([DAY], stops) == pytest.approx(1.0)


def test_late_stops_capture_less_and_work_that_found_it_stopped_counts_against() -> None:
    # stopped 60 min into the first gap, restarted 5 min after work resumed
    late = Stop("i-1", at(120), at(185), "onDemand")
    hours = score.stop_hours(DAY, late, at(600))
    assert hours == pytest.approx((60 - 10 - 5) / 60 * 2)
    oracle = score.oracle_avoided_hours([DAY])
    assert score.oracle_capture([DAY], [late]) == pytest.approx(hours / oracle)
    # a stop that lasts to the horizon pays no restart
    assert score.stop_hours(DAY, Stop("i-1", at(400), None, "onDemand"), at(600)) == (
        pytest.approx(200 / 60 * 2)
    )


def test_false_and_prepaid_stops() -> None:
    stops = [
        Stop("i-1", at(30), at(31), "onDemand"),  # during work
        Stop("i-1", at(90), at(180), "onDemand"),  # idle: fine
        Stop("i-1", at(242), at(245), "onDemand"),  # the 5-minute gap: idle, not false
        Stop("i-2", at(90), None, "monthly"),
    ]
    sub = trace((0, 600, False), mode="monthly", iid="i-2")
    assert score.false_stops([DAY, sub], stops) == [stops[0]]
    assert score.prepaid_stops(stops) == [stops[3]]
    # a prepaid stop avoids nothing, even in an idle gap
    assert score.rules_avoided_hours([DAY, sub], [stops[3]]) == 0


def test_false_stops_within_the_metric_lag_are_told_apart() -> None:
    lag = timedelta(minutes=2)
    blind = Stop("i-1", at(180.5), at(190), "onDemand")  # 30 s after work resumed at 180
    seen = Stop("i-1", at(200), at(205), "onDemand")  # 20 min into it
    assert score.false_stops([DAY], [blind, seen]) == [blind, seen]
    assert score.blind_false_stops([DAY], [blind, seen], lag) == [blind]
    assert score.work_started_before(DAY, at(200)) == at(180)
    assert score.work_started_before(DAY, at(100)) is None  # idle then


def test_stops_on_missing_data_compare_the_outage_with_the_window() -> None:
    t = trace((0, 100, True), (100, 600, False), outages=((110, 170),))
    window = timedelta(minutes=45)
    inside = Stop("i-1", at(180), None, "onDemand")  # window 135-180 lost 35 min
    after = Stop("i-1", at(220), None, "onDemand")  # window 175-220 clean
    edge = Stop("i-1", at(214), None, "onDemand")  # window 169-214 lost 1 min (< 10 %)
    assert score.stops_on_missing_data([t], [inside, after, edge], window, 0.9) == [inside]


def test_net_savings_subtract_restarts_and_storage() -> None:
    t = trace((0, 60, True), (60, 180, False), (180, 600, True), hourly="1.20")
    stop = Stop("i-1", at(60), at(180), "onDemand", hourly_usd=Decimal("1.20"))
    # 2 h at 1.20, less 10 min at 1.20 (the restart), less 2 h of storage at 0.06
    net = score.net_savings_usd([t], [stop])
    assert net is not None
    assert float(net) == pytest.approx(2.40 - 0.20 - 0.12, abs=0.01)
    oracle = score.oracle_savings_usd([t])
    assert oracle is not None and float(oracle) == pytest.approx(float(net), abs=0.01)
    # an unknown price is unknown, never a number
    unknown = trace((0, 60, True), (60, 180, False), (180, 600, True), hourly=None)
    assert score.net_savings_usd([unknown], [Stop("i-1", at(60), at(180), "onDemand")]) is None


def test_detection_latency_beyond_the_window() -> None:
    window = timedelta(minutes=45)
    firing = [("i-1", at(60 + 45 + 4)), ("i-1", at(60 + 45 + 9)), ("i-1", at(300 + 45 + 2))]
    lat = score.detection_latencies([DAY], firing, window, T0)
    assert [d.total_seconds() / 60 for d in lat] == [4, 2]
    # a gap open at the horizon's start has no known start: left out
    open_start = trace((0, 100, False), (100, 200, True))
    assert score.detection_latencies([open_start], [("i-1", at(45))], window, T0) == []
    assert score.percentile([4, 2, 9, 1], 50) == 2
    assert score.percentile([4, 2, 9, 1], 95) == 9
    assert score.percentile([], 50) is None


def test_renewals_expiries_and_runway_lead() -> None:
    period = at(0)
    assert score.duplicate_renewals([("s-1", period), ("s-1", period), ("s-2", period)]) == 1
    assert score.duplicate_renewals([("s-1", period), ("s-1", at(60))]) == 0
    subs = [("s-1", True, True), ("s-2", False, True), ("s-3", True, False)]
    assert score.missed_expiries(subs) == ["s-1"]
    samples = [(at(0), True), (at(5), False), (at(10), True), (at(15), True), (at(2000), True)]
    # the stretch that lasted to zero began at 10
    assert score.runway_alert_lead(samples, at(1500)) == timedelta(minutes=1490)
    assert score.runway_alert_lead(samples, None) is None
    assert score.runway_alert_lead([(at(0), False)], at(100)) is None
