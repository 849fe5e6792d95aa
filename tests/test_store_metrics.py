"""Metric samples: merge by minute, idempotence, windows and coverage, rollups and retention."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from monitor.collect.convert import instance_rows, minute_rows
from monitor.novita.models import Instance, InstanceMetrics
from monitor.store import MetricRow, Store, open_store
from monitor.store import tables as t
from monitor.store.testing import pg_url, store_url

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
E0 = int(T0.timestamp())

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


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = open_store(store_url(request.param, tmp_path))
    s.upsert_instances(
        "main",
        instance_rows(
            [
                Instance(id="i-1", status="running", gpu_num=2, cpu_num=4),
                Instance(id="i-2", status="running", gpu_num=1, cpu_num=1),
            ]
        ),
        T0,
    )
    yield s
    s.close()


def pts(start: int, values: list[float], step: int = 60) -> list[dict[str, str]]:
    return [{"timestamp": str(start + i * step), "value": str(v)} for i, v in enumerate(values)]


def metrics(start: int, gpu: list[float], **series: list[float]) -> InstanceMetrics:
    body: dict[str, Any] = {
        "gpuUtilization": {
            "avg": pts(start, gpu),
            "gpuIds": [
                {"gpuId": "1", "items": pts(start, [v * 2 for v in gpu])},
                {"gpuId": "0", "items": pts(start, [0.0 for _ in gpu])},
            ],
        },
    }
    names = {"cpu": "cpuUtilization", "mem": "memUtilization", "disk": "rootDiskUtilization"}
    for key, values in series.items():
        body[names[key]] = pts(start, values)
    return InstanceMetrics.model_validate(body)


def raw_count(store: Store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.metric_samples)).scalar_one()


def test_upsert_metrics_merges_by_minute_and_is_idempotent(store: Store) -> None:
    m = metrics(E0 + 5, [10.0, 20.0, 30.0], cpu=[400.0, 200.0, 0.0])
    assert store.upsert_metrics("main", "i-1", minute_rows(m, 4)) == 3
    assert store.upsert_metrics("main", "i-1", minute_rows(m, 4)) == 0
    assert raw_count(store) == 3
    # an overlapping fetch: one minute changes, one is new, a series missing here is kept
    m2 = metrics(E0 + 60 + 5, [20.0, 35.0, 40.0])
    assert store.upsert_metrics("main", "i-1", minute_rows(m2, 4)) == 2
    rows = store.samples("main", "i-1", T0, T0 + timedelta(hours=1))
    assert [r.ts for r in rows] == [E0, E0 + 60, E0 + 120, E0 + 180]
    assert [r.gpu_util for r in rows] == [10.0, 20.0, 35.0, 40.0]
    assert [r.cpu for r in rows] == [100.0, 50.0, 0.0, None]  # per core, kept when missing
    # per-GPU, ordered by GPU id: gpu 0 first
    assert rows[1].gpu_utils == (0.0, 40.0)
    assert store.latest_metric_ts("main", "i-1") == T0 + timedelta(minutes=3)
    assert store.latest_metric_ts("main", "i-2") is None


def test_metrics_for_an_unlisted_instance_get_a_stub(store: Store) -> None:
    assert store.upsert_metrics("main", "i-new", minute_rows(metrics(E0, [5.0]), None)) == 1
    assert [r.instance_id for r in store.instances("main")] == ["i-1", "i-2"]  # not listed yet
    assert store.upsert_instances(
        "main", instance_rows([Instance(id="i-new", status="running")]), T0
    )[0].kind == ("appeared")


def test_metric_window_raw_and_coverage(store: Store) -> None:
    store.upsert_metrics("main", "i-1", minute_rows(metrics(E0, [0, 10, 20, 30, 40]), 4))
    store.upsert_metrics("main", "i-2", minute_rows(metrics(E0 + 120, [50, 50]), 1))
    window = store.metric_window("main", None, "gpu_util", T0, T0 + timedelta(minutes=10))
    a = window["i-1"]
    assert (a.avg, a.max, a.min, a.count) == (20.0, 40.0, 0.0, 5)
    assert a.covered_seconds == 300
    assert a.first_ts == T0 and a.last_ts == T0 + timedelta(minutes=4)
    assert window["i-2"].count == 2 and window["i-2"].covered_seconds == 120
    only = store.metric_window("main", ["i-2"], "gpu_util", T0, T0 + timedelta(minutes=3))
    assert list(only) == ["i-2"] and only["i-2"].count == 1
    assert store.metric_window("main", None, "cpu", T0, T0 + timedelta(minutes=10)) == {}
    with pytest.raises(ValueError):
        store.metric_window("main", None, "bogus", T0, T0)


def test_a_window_for_named_instances_reads_their_keys_once(store: Store) -> None:
    """An instance's key never changes: a window for named instances asks the instances
    table only for those it does not know yet (one id unknown here: asked each time)."""
    from sqlalchemy import event

    store.upsert_metrics("main", "i-1", minute_rows(metrics(E0, [0, 10, 20]), 4))
    asked: list[str] = []

    def on(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM instances" in statement:
            asked.append(statement)

    end = T0 + timedelta(minutes=5)
    event.listen(store.engine, "before_cursor_execute", on)
    try:
        first = store.metric_window("main", ["i-1", "i-2", "i-nope"], "gpu_util", T0, end)
        assert len(asked) == 1
        again = store.metric_window("main", ["i-1", "i-2", "i-nope"], "gpu_util", T0, end)
        assert len(asked) == 2  # i-nope only
        store.metric_window("main", ["i-1", "i-2"], "gpu_util", T0, end)
        assert len(asked) == 2
    finally:
        event.remove(store.engine, "before_cursor_execute", on)
    assert first == again and list(first) == ["i-1"] and first["i-1"].max == 20.0
    store.upsert_metrics("main", "i-nope", minute_rows(metrics(E0, [7.0]), None))  # a stub row
    late = store.metric_window("main", ["i-1", "i-nope"], "gpu_util", T0, end)
    assert sorted(late) == ["i-1", "i-nope"] and late["i-nope"].max == 7.0


def test_per_gpu_window(store: Store) -> None:
    store.upsert_metrics("main", "i-1", minute_rows(metrics(E0, [10, 20, 30]), 4))
    gpus = store.per_gpu_window("main", ["i-1"], T0, T0 + timedelta(minutes=5))["i-1"]
    assert [(g.index, g.avg, g.max, g.count) for g in gpus] == [
        (0, 0.0, 0.0, 3),
        (1, 40.0, 60.0, 3),
    ]


def fill(store: Store, key: int, start: int, minutes: int, gpus: int = 2) -> list[MetricRow]:
    rows = [
        MetricRow(
            instance_key=key,
            ts=start + i * 60,
            gpu_util=float(i % 100),
            gpu_mem=50.0,
            cpu=25.0,
            mem=60.0,
            disk=10.0,
            gpu_utils=tuple(float((i + g) % 100) for g in range(gpus)),
            gpu_mems=tuple(50.0 for _ in range(gpus)),
        )
        for i in range(minutes)
    ]
    assert store.bulk_insert_metrics(rows) == minutes
    return rows


def test_rollup_then_retention_keeps_aggregates(store: Store) -> None:
    key = store.instance_key("main", "i-1")
    assert key is not None
    day0 = E0 - 10 * 86400
    fill(store, key, day0, 10 * 1440)  # ten days, one sample per minute
    now = T0
    before = store.metric_window("main", ["i-1"], "gpu_util", T0 - timedelta(days=9), T0)["i-1"]
    counts = store.enforce_retention(now, raw_days=7, rollup_days=365)
    assert counts["rolled_up"] == 10 * 24 - 1  # every completed hour (the last is too recent)
    assert counts["metric_samples"] == 3 * 1440  # raw older than 7 days deleted
    assert raw_count(store) == 7 * 1440
    again = store.enforce_retention(now, raw_days=7, rollup_days=365)
    assert again["rolled_up"] == 0 and again["metric_samples"] == 0
    # hourly values: hour h holds minutes 60h..60h+59 -> gpu_util (i % 100)
    with store.engine.connect() as conn:
        first = conn.execute(select(t.metric_hourly).where(t.metric_hourly.c.ts == day0)).one()
    values = [float(i % 100) for i in range(60)]
    assert first.n == 60 and first.gpu_util_n == 60
    assert first.gpu_util_max == 590 and first.gpu_util_min == 0
    assert first.gpu_util_avg == round(sum(values) / 60 * 10)
    assert first.cpu_avg == 250 and first.mem_avg == 600 and first.disk_avg == 100
    assert bytes(first.gpu_utils_max) == bytes([59, 60])
    # the same window, now read mostly from the rollups, gives the same aggregates
    after = store.metric_window("main", ["i-1"], "gpu_util", T0 - timedelta(days=9), T0)["i-1"]
    assert after.count == before.count == 9 * 1440
    assert after.covered_seconds == 9 * 86400
    assert after.max == before.max and after.min == before.min
    assert after.avg == pytest.approx(before.avg, abs=0.05)
    assert after.first_ts == before.first_ts
    gpus = store.per_gpu_window("main", ["i-1"], T0 - timedelta(days=9), T0)["i-1"]
    assert [g.count for g in gpus] == [9 * 1440, 9 * 1440]
    assert gpus[1].max == 99.0
    # rollups older than a year go too
    later = store.enforce_retention(T0 + timedelta(days=365 - 5), raw_days=7, rollup_days=365)
    assert later["metric_hourly"] > 0
    with store.engine.connect() as conn:
        oldest = conn.execute(select(func.min(t.metric_hourly.c.ts))).scalar_one()
    assert oldest >= int((T0 - timedelta(days=5)).timestamp())


def test_late_samples_reroll_their_hour(store: Store) -> None:
    key = store.instance_key("main", "i-1")
    assert key is not None
    fill(store, key, E0 - 3 * 3600, 3 * 60)
    store.rollup(T0)
    hour = E0 - 3 * 3600
    window = store.metric_window("main", ["i-1"], "gpu_util", T0 - timedelta(hours=3), T0)
    assert window["i-1"].count == 180
    # a backfill changes one minute of an hour that is already rolled up
    store.upsert_metrics("main", "i-1", minute_rows(metrics(hour, [100.0]), 4))
    with store.engine.connect() as conn:
        row = conn.execute(
            select(t.metric_hourly).where(
                t.metric_hourly.c.instance_key == key, t.metric_hourly.c.ts == hour
            )
        ).one()
    assert row.gpu_util_max == 1000


def test_window_mixes_rollups_and_raw_edges(store: Store) -> None:
    key = store.instance_key("main", "i-1")
    assert key is not None
    fill(store, key, E0 - 5 * 3600, 5 * 60)
    store.rollup(T0)
    start = T0 - timedelta(hours=4, minutes=30)  # half an hour of raw, then whole hours
    agg = store.metric_window("main", ["i-1"], "gpu_util", start, T0)["i-1"]
    expected = [float(i % 100) for i in range(30, 5 * 60)]
    assert agg.count == len(expected)
    assert agg.avg == pytest.approx(sum(expected) / len(expected), abs=0.05)
    assert agg.first_ts == start


def test_upsert_metrics_many_in_one_transaction(store: Store) -> None:
    items = [
        ("i-1", minute_rows(metrics(E0, [10.0, 20.0]), 4)),
        ("i-2", minute_rows(metrics(E0, [30.0]), 1)),
        ("i-2", minute_rows(InstanceMetrics(), 1)),  # an empty response writes nothing
    ]
    assert store.upsert_metrics_many("main", items) == 3
    assert store.upsert_metrics_many("main", items) == 0
    window = store.metric_window("main", None, "gpu_util", T0, T0 + timedelta(minutes=5))
    assert {k: v.avg for k, v in window.items()} == {"i-1": 15.0, "i-2": 30.0}


def test_history_inserted_below_the_watermark_is_rolled_up(store: Store) -> None:
    key = store.instance_key("main", "i-1")
    assert key is not None
    store.rollup(T0)  # nothing yet: no watermark is set
    fill(store, key, E0 - 2 * 3600, 60)
    assert store.rollup(T0) == 1
    # a bulk backfill of an older hour, below the watermark now
    fill(store, key, E0 - 5 * 3600, 60)
    agg = store.metric_window("main", ["i-1"], "gpu_util", T0 - timedelta(hours=6), T0)["i-1"]
    assert agg.count == 120
    assert agg.first_ts == T0 - timedelta(hours=5)


def test_latest_metric_times_and_batch_alias(store: Store) -> None:
    assert store.latest_metric_times("main") == {}
    batch = [
        ("i-1", minute_rows(metrics(E0, [1.0, 2.0]), 4)),
        ("i-2", minute_rows(metrics(E0 + 300, [3.0]), 1)),
    ]
    assert store.upsert_metrics_batch("main", batch) == 3
    assert store.latest_metric_times("main") == {
        "i-1": T0 + timedelta(minutes=1),
        "i-2": T0 + timedelta(minutes=5),
    }


def test_database_bytes_grow_with_samples(store: Store) -> None:
    before = store.database_bytes()
    key = store.instance_key("main", "i-1")
    assert key is not None
    fill(store, key, E0, 3 * 1440)
    assert store.database_bytes() > before


def test_an_idle_stretch_is_traced_through_the_rollups_to_its_minute(store: Store) -> None:
    """Idle stretches that began days ago are found to the minute through the rollups (a few
    hundred rows, not every minute): one GPU of two still busy while the average is under the
    threshold is not idle; a gap in the samples ends a stretch."""
    from monitor.facts import StoreFacts
    from monitor.store.types import from_epoch

    k1, k2 = store.instance_key("main", "i-1"), store.instance_key("main", "i-2")
    assert k1 is not None and k2 is not None
    start = E0 - 4 * 86400
    turn = E0 - 3 * 86400 + 17 * 60  # the first idle minute of both
    hole = E0 - 2 * 86400  # i-2 has no samples for 30 minutes from here
    rows = []
    for ts in range(start, E0, 60):
        busy = ts < turn
        # i-1: GPU 2 at 8 % (average 4.5 %, under 5 %) until the turn
        rows.append(
            MetricRow(k1, ts, gpu_util=4.5 if busy else 1.0, gpu_utils=(1.0, 8.0 if busy else 1.0))
        )
        if not hole <= ts < hole + 1800:
            rows.append(
                MetricRow(
                    k2, ts, gpu_util=80.0 if busy else 1.0, gpu_utils=(80.0 if busy else 1.0,)
                )
            )
    store.bulk_insert_metrics(rows)
    store.rollup(T0, chunk_hours=24 * 5)
    assert store.rollup_watermark() is not None
    facts = StoreFacts(store, ["main"], {}, 2.0, now=T0)
    since = facts.idle_since("main", 5.0, T0, ["i-1", "i-2"])
    assert since == {"i-1": from_epoch(turn), "i-2": from_epoch(hole + 1800)}


def test_an_idle_stretch_reaches_back_to_a_start_mid_hour(store: Store) -> None:
    """An instance started at 07:31 and idle since: its first rolled-up hour has 29 minutes
    (not a gap: the start of its run), and the stretch reaches back to 07:31 through the
    rollups as through the raw minutes (the demo's notebook read 4.5 h instead of 5 h before)."""
    from monitor.facts import StoreFacts
    from monitor.store.types import from_epoch

    start = E0 - 5 * 3600 + 31 * 60  # 07:31
    store.upsert_instances(
        "main",
        instance_rows(
            [
                Instance(
                    id="i-2",
                    status="running",
                    gpu_num=1,
                    cpu_num=1,
                    last_started_at=from_epoch(start),
                )
            ]
        ),
        T0,
    )
    key = store.instance_key("main", "i-2")
    assert key is not None
    store.bulk_insert_metrics(
        [MetricRow(key, ts, gpu_util=1.0, gpu_utils=(1.0,)) for ts in range(start, E0, 60)]
    )
    raw = StoreFacts(store, ["main"], {}, 2.0, now=T0).idle_since("main", 5.0, T0, ["i-2"])
    store.rollup(T0)
    assert store.rollup_watermark() is not None
    rolled = StoreFacts(store, ["main"], {}, 2.0, now=T0).idle_since("main", 5.0, T0, ["i-2"])
    assert raw == rolled == {"i-2": from_epoch(start)}


def test_a_longer_window_with_the_same_end_reads_only_its_head(store: Store) -> None:
    """The facts answer a 45-minute window after a 30-minute one (the shipped idle rule, then a
    stop rule) from the 30 minutes already summed plus the 15 before them: the same figures
    as one read of the 45, across raw minutes and rolled-up hours alike."""
    from monitor.facts import StoreFacts

    key = store.instance_key("main", "i-1")
    assert key is not None
    fill(store, key, E0 - 5 * 3600, 5 * 60 - 7)  # the last 7 minutes unsampled
    store.rollup(T0)  # whole hours up to T0 - 1 h from the rollups
    facts = StoreFacts(store, ["main"], {}, 3.0, now=T0)
    windows = [T0 - timedelta(minutes=m) for m in (30, 45, 200, 45, 20)]
    direct = [store.metric_window("main", None, "gpu_util", s, T0)["i-1"] for s in windows]
    asked: list[tuple[datetime, datetime]] = []
    read = store.metric_partials

    def spy(account: str, ids: Any, series: str, start: datetime, end: datetime) -> Any:
        asked.append((start, end))
        return read(account, ids, series, start, end)

    store.metric_partials = spy  # type: ignore[method-assign]
    for start, want in zip(windows, direct, strict=True):
        got = facts.metric_window("main", "gpu_util", start, T0)["i-1"]
        assert (got.avg, got.max, got.min, got.count, got.covered_s) == pytest.approx(
            (want.avg, want.max, want.min, want.count, want.covered_seconds)
        )
    # 30; 45 as its first 15; 200 as its first 155 (rollups and raw); 45 again from the
    # cache; 20 is inside the others and read whole
    assert asked == [
        (T0 - timedelta(minutes=30), T0),
        (T0 - timedelta(minutes=45), T0 - timedelta(minutes=30)),
        (T0 - timedelta(minutes=200), T0 - timedelta(minutes=45)),
        (T0 - timedelta(minutes=20), T0),
    ]


def steady(store: Store, instance: str, start: int, values: list[float]) -> None:
    """One sample a minute from ``start``: ``values`` on both GPUs and as their average."""
    key = store.instance_key("main", instance)
    assert key is not None
    store.bulk_insert_metrics(
        MetricRow(key, start + i * 60, v, 50.0, 25.0, 60.0, 10.0, (v, v / 2), (50.0, 50.0))
        for i, v in enumerate(values)
    )


def test_a_longer_window_skips_the_head_of_instances_the_shorter_one_shows_busy(
    store: Store,
) -> None:
    """A 45-minute idle window after a 30-minute one: an instance the 30 minutes already show at
    the threshold is answered by them (``partial``: busy in the 45 too), so the 15 minutes
    before are read only for the others, whose figures are those of one read of the 45."""
    from monitor.facts import StoreFacts

    start = E0 - 60 * 60
    steady(store, "i-1", start, [40.0] * 20 + [1.0] * 10 + [80.0] * 30)  # busy now, peak 80
    steady(store, "i-2", start, [1.0, 2.0, 3.0] * 20)  # idle throughout
    facts = StoreFacts(store, ["main"], {}, 3.0, now=T0)
    s30, s45 = T0 - timedelta(minutes=30), T0 - timedelta(minutes=45)
    want = store.metric_window("main", None, "gpu_util", s45, T0)
    asked: list[tuple[Any, datetime, datetime]] = []
    read = store.metric_partials

    def spy(account: str, ids: Any, series: str, begin: datetime, end: datetime) -> Any:
        asked.append((ids, begin, end))
        return read(account, ids, series, begin, end)

    store.metric_partials = spy  # type: ignore[method-assign]
    facts.metric_window("main", "gpu_util", s30, T0)
    got = facts.metric_window("main", "gpu_util", s45, T0, busy_at=5.0)
    assert asked[-1] == (("i-2",), s45, s30)  # the head, for the quiet instance only
    assert got["i-1"].partial and got["i-1"].max >= 5.0
    quiet = got["i-2"]
    assert not quiet.partial
    assert (quiet.avg, quiet.max, quiet.min, quiet.count) == pytest.approx(
        (want["i-2"].avg, want["i-2"].max, want["i-2"].min, want["i-2"].count)
    )
    # asked again, the same answer, from memory
    assert facts.metric_window("main", "gpu_util", s45, T0, busy_at=5.0) == got
    assert len(asked) == 2
    # without busy_at every instance is read whole: i-1's 45 minutes, its 40 % head included
    whole = facts.metric_window("main", "gpu_util", s45, T0)["i-1"]
    assert not whole.partial
    assert (whole.avg, whole.max, whole.count) == pytest.approx(
        (want["i-1"].avg, 80.0, want["i-1"].count)
    )


def test_a_longer_per_gpu_window_for_fewer_instances_reads_only_its_head(store: Store) -> None:
    """The per-GPU window of a stop rule's candidates (among the idle rule's) after the idle
    rule's shorter one: its head is read and merged, with the figures of one read."""
    from monitor.facts import StoreFacts

    start = E0 - 60 * 60
    steady(store, "i-1", start, [float(i % 7) for i in range(60)])
    steady(store, "i-2", start, [float(i % 3) for i in range(60)])
    facts = StoreFacts(store, ["main"], {}, 3.0, now=T0)
    s30, s45 = T0 - timedelta(minutes=30), T0 - timedelta(minutes=45)
    asked: list[tuple[Any, datetime, datetime]] = []
    read = store.per_gpu_window

    def spy(account: str, ids: Any, begin: datetime, end: datetime, series: str) -> Any:
        asked.append((ids, begin, end))
        return read(account, ids, begin, end, series=series)

    store.per_gpu_window = spy  # type: ignore[method-assign]
    facts.per_gpu_window("main", "gpu_util", s30, T0, ["i-1", "i-2"])
    got = facts.per_gpu_window("main", "gpu_util", s45, T0, ["i-2"])
    assert asked[-1] == (["i-2"], s45, s30)
    assert list(got) == ["i-2"]
    want = read("main", ["i-2"], s45, T0, series="gpu_util")["i-2"]
    assert [x for g in got["i-2"] for x in (g.avg, g.max, g.count)] == pytest.approx(
        [x for g in want for x in (g.avg, g.max, g.count)]
    )
    # instances the shorter window was not read for are read whole
    facts.per_gpu_window("main", "gpu_util", s45, T0)
    assert asked[-1] == (None, s45, T0)


def test_an_alert_that_needs_a_busy_instances_figures_gets_the_whole_window(
    store: Store, tmp_path: Path
) -> None:
    """The rules read a 30-minute idle window, then 45-minute ones. Where a busy instance's
    figures make or end an alert (under a ``not``, or an idle alert resolving) they are those
    of the whole 45 minutes, never of the 30 that showed it busy."""
    from monitor.facts import StoreFacts
    from monitor.rules import AlertState, evaluate, fingerprint, load_rules

    start = E0 - 60 * 60
    steady(store, "i-1", start, [95.0] * 20 + [1.0] * 10 + [80.0] * 30)  # peak 95 in the head
    steady(store, "i-2", start, [1.0] * 60)
    path = tmp_path / "r.yaml"
    path.write_text(
        "rules:\n"
        "  - {name: idle30, resource: instance, when: {idle_gpu: {window: 30m}}}\n"
        "  - {name: idle45, resource: instance, when: {idle_gpu: {window: 45m}}}\n"
        "  - {name: busy45, resource: instance, when: {not: {idle_gpu: {window: 45m}}}}\n"
    )
    want = store.metric_window("main", ["i-1"], "gpu_util", T0 - timedelta(minutes=45), T0)
    fp = fingerprint("main", "idle45", "instance", "i-1")
    firing = AlertState(
        fp, "main", "idle45", "instance", "i-1", "firing", active_since=T0, firing_since=T0
    )
    facts = StoreFacts(store, ["main"], {}, 3.0, now=T0)
    result = evaluate(load_rules([path]), facts, T0, {fp: firing})
    busy = result.states[fingerprint("main", "busy45", "instance", "i-1")]
    resolved = result.states[fp]
    assert busy.state == "firing" and resolved.state == "resolved"
    for state in (busy, resolved):
        assert state.values["value"] == 95.0
        assert state.values["gpu_util_avg"] == pytest.approx(want["i-1"].avg, abs=0.01)
    assert result.states[fingerprint("main", "idle30", "instance", "i-2")].state == "firing"
    assert result.states[fingerprint("main", "idle45", "instance", "i-2")].state == "firing"
