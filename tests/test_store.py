"""The store: instances and events, balance, bills, products, tasks, runs, alerting CRUD.

Runs on SQLite, and on PostgreSQL too when NOVITA_MONITOR_TEST_PG_URL is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from monitor.collect import convert
from monitor.novita.models import (
    AsyncTask,
    Balance,
    FixedTermBill,
    Instance,
    Product,
    TrainingTask,
    UsageBill,
)
from monitor.store import AlertRecord, BalanceSample, DataProblem, Store, open_store
from monitor.store import tables as t
from monitor.store.testing import pg_url, store_url

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

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
    yield s
    s.close()


def inst(id: str = "i-1", **kw: Any) -> dict[str, Any]:
    """A listed instance as the collector hands it to the store."""
    data: dict[str, Any] = {
        "id": id,
        "name": f"name-{id}",
        "status": "running",
        "gpuNum": "1",
        "cpuNum": "8",
        "billingMode": "onDemand",
        "productId": "p-4090",
        "clusterId": "c-1",
        "endTime": "-1",
    }
    data.update(kw)
    return convert.instance_row(Instance.model_validate(data))


def count(store: Store, table: Any) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


# -- opening ------------------------------------------------------------------------------------


def test_sqlite_open_creates_parent_dir_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "monitor.db"
    store = open_store(f"sqlite:///{path}")
    try:
        assert path.exists()
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
    finally:
        store.close()


def test_ensure_account_is_stable(store: Store) -> None:
    a = store.ensure_account("main")
    b = store.ensure_account("team-b")
    assert a != b
    assert store.ensure_account("main") == a
    assert store.accounts() == ["main", "team-b"]


# -- instances ----------------------------------------------------------------------------------


def test_instances_upsert_is_idempotent_and_events_only_on_change(store: Store) -> None:
    events = store.upsert_instances("main", [inst("i-1"), inst("i-2")], T0)
    assert [(e.kind, e.resource_id) for e in events] == [("appeared", "i-1"), ("appeared", "i-2")]
    assert (
        store.upsert_instances("main", [inst("i-1"), inst("i-2")], T0 + timedelta(minutes=1)) == []
    )
    assert count(store, t.instances) == 2
    assert count(store, t.instance_history) == 2
    rec = store.instances("main")[0]
    assert rec.first_seen == T0
    assert rec.last_seen == T0 + timedelta(minutes=1)
    assert rec.end_time is None
    assert rec.gpu_count == 1


def test_instance_changes_write_history_and_events(store: Store) -> None:
    store.upsert_instances("main", [inst("i-1")], T0)
    t1 = T0 + timedelta(minutes=1)
    end = int((T0 + timedelta(days=30)).timestamp())
    events = store.upsert_instances(
        "main",
        [
            inst(
                "i-1",
                status="exited",
                billingMode="monthly",
                endTime=str(end),
                statusError={"state": "OOM", "message": "killed"},
            )
        ],
        t1,
    )
    kinds = {e.kind: e for e in events}
    assert set(kinds) == {
        "status_changed",
        "error_entered",
        "billing_mode_changed",
        "end_time_moved",
    }
    assert (kinds["status_changed"].old, kinds["status_changed"].new) == ("running", "exited")
    assert kinds["error_entered"].new == "OOM"
    assert kinds["billing_mode_changed"].new == "monthly"
    assert kinds["end_time_moved"].old is None
    history = store.instance_history("main", "i-1")
    assert [h.status for h in history] == ["running", "exited"]
    assert history[1].end_time == datetime.fromtimestamp(end, UTC)
    # a name change alone is not a tracked change
    assert store.upsert_instances("main", [inst("i-1", status="exited", billingMode="monthly",
                                                 endTime=str(end), name="renamed",
                                                 statusError={"state": "OOM"})], t1) == []  # fmt: skip
    assert store.instance("main", "i-1").name == "renamed"  # type: ignore[union-attr]
    assert len(store.instance_history("main", "i-1")) == 2
    assert len(store.events("main")) == 5


def test_disappeared_and_reappeared(store: Store) -> None:
    store.upsert_instances("main", [inst("i-1"), inst("i-2")], T0)
    t1 = T0 + timedelta(minutes=1)
    assert store.upsert_instances("main", [inst("i-1")], t1, complete=False) == []
    events = store.upsert_instances("main", [inst("i-1")], t1)
    assert [(e.kind, e.resource_id) for e in events] == [("disappeared", "i-2")]
    assert [r.instance_id for r in store.instances("main")] == ["i-1"]
    gone = store.instances("main", include_disappeared=True)[1]
    assert gone.disappeared_at == t1
    # listing again without it: no second event
    assert store.upsert_instances("main", [inst("i-1")], t1 + timedelta(minutes=1)) == []
    events = store.upsert_instances("main", [inst("i-1"), inst("i-2")], t1 + timedelta(minutes=2))
    assert [(e.kind, e.resource_id) for e in events] == [("appeared", "i-2")]
    assert store.instance("main", "i-2").disappeared_at is None  # type: ignore[union-attr]


def test_accounts_are_separate(store: Store) -> None:
    store.upsert_instances("main", [inst("i-1")], T0)
    events = store.upsert_instances("other", [inst("i-1")], T0)
    assert [e.account for e in events] == ["other"]
    assert store.upsert_instances("other", [], T0)[0].kind == "disappeared"
    assert [r.instance_id for r in store.instances("main")] == ["i-1"]


# -- balance, bills, products -------------------------------------------------------------------


def balance(available: Decimal, ts: datetime, **kw: Any) -> BalanceSample:
    return convert.balance_sample(Balance(available_usd=available, **kw), ts)


def test_balance_samples(store: Store) -> None:
    assert store.latest_balance("main") is None
    store.add_balance("main", balance(Decimal("100.1234"), T0))
    store.add_balance("main", balance(Decimal("99.5"), T0 + timedelta(minutes=5), cash_usd=1))
    latest = store.latest_balance("main")
    assert latest is not None
    assert latest.available_usd == Decimal("99.5")
    assert latest.ts == T0 + timedelta(minutes=5)
    assert latest.cash_usd == Decimal(1) and latest.source == "balance_detail"
    assert [b.available_usd for b in store.balance_samples("main")] == [
        Decimal("100.1234"),
        Decimal("99.5"),
    ]


def hour_bill(owner: str, hour: int, amount: str, num: str = "1") -> dict[str, Any]:
    """An hourly GPU bill as the collector hands it to the store."""
    return convert.usage_bill_rows([wire_hour_bill(owner, hour, amount, num)])[0]


def wire_hour_bill(owner: str, hour: int, amount: str, num: str = "1") -> UsageBill:
    start = int((T0 + timedelta(hours=hour)).timestamp())
    return UsageBill.model_validate(
        {
            "startTime": str(start),
            "endTime": str(start + 3600),
            "category": "gpu",
            "ownerID": owner,
            "productId": "p-4090",
            "billNum0": num,
            "amount": amount,
            "payAmount": amount,
        }
    )


def test_usage_bills_upsert_no_duplicates_and_growing_amount(store: Store) -> None:
    bills = [
        hour_bill("i-1", -2, "3500"),
        hour_bill("i-1", -1, "3500"),
        hour_bill("i-1", 0, "1000"),
    ]
    assert store.upsert_usage_bills("main", "Hour", bills) == 3
    assert store.upsert_usage_bills("main", "Hour", bills) == 0
    # the current hour grows
    assert store.upsert_usage_bills("main", "Hour", [hour_bill("i-1", 0, "2500")]) == 1
    assert count(store, t.usage_bills) == 3
    rows = store.bills("main")
    assert rows[-1].pay_amount == Decimal("0.25")
    # the same bill under another cycle type is another row
    assert store.upsert_usage_bills("main", "Day", [hour_bill("i-1", 0, "2500")]) == 1
    assert count(store, t.usage_bills) == 4


def test_bills_overlapping_a_window_include_the_one_running_into_it(store: Store) -> None:
    assert store.usage_bills_overlapping("main", T0 - timedelta(hours=10), T0, "Hour") == []
    bills = [hour_bill("i-1", h, "3500") for h in (-4, -3, -2, -1)]
    bills += [{**hour_bill("i-2", -2, "12000"), "category": "llm"}]
    store.upsert_usage_bills("main", "Hour", bills)
    # the window starts half-way through the -3 bill: that bill is included (counted in
    # proportion by the economics), the -4 one is not
    rows = store.usage_bills_overlapping(
        "main", T0 - timedelta(hours=2, minutes=30), T0, cycle_type="Hour"
    )
    assert sorted((r.owner_id, r.start) for r in rows) == [
        ("i-1", T0 - timedelta(hours=h)) for h in (3, 2, 1)
    ]
    assert all(r.amount == Decimal("0.35") and r.bill_num0 == 1.0 for r in rows)
    assert store.usage_bills_overlapping("main", T0 - timedelta(hours=3), T0, "Day") == []
    llm = store.usage_bills_overlapping("main", T0 - timedelta(hours=3), T0, "Hour", "llm")
    assert [r.owner_id for r in llm] == ["i-2"]
    # summed in SQL, each bill weighted by its share of the window up to where bills reach:
    # the same figures as the economics' own definition over the rows
    from monitor import economics
    from monitor.facts import _bill

    start, end, as_of = T0 - timedelta(hours=3, minutes=30), T0, T0 - timedelta(minutes=30)
    (summed,) = store.usage_bill_sums("main", start, end, as_of, "Hour")
    assert (summed.owner_id, summed.priced, summed.unpriced) == ("i-1", 0, 4)
    rows = [_bill(r) for r in store.usage_bills_overlapping("main", start, end, "Hour")]
    rows = [b for b in rows if b.owner_id == "i-1"]
    # half of the 8:00 bill, the 9:00 and 10:00 ones, and the 11:00 one read at 11:30 in full
    assert summed.paid == economics.spend(Decimal(0), rows, start, end, as_of) == Decimal("1.225")
    (paid,) = store.usage_bill_sums("main", start, end, as_of, "Hour", by_owner=False)
    assert paid.paid == Decimal("1.225")  # llm bills are another category


def test_fixed_term_bills_idempotent(store: Store) -> None:
    bill = FixedTermBill.model_validate(
        {"startTime": "1764547200", "endTime": "1767225600", "productCategory": "gpu",
         "ownerID": "i-9", "productId": "p-4090", "amount": "3000000", "payAmount": "3000000",
         "cycle": "2025-12", "basePrice": "3000000"}
    )  # fmt: skip
    rows = convert.fixed_term_bill_rows([bill, bill])
    assert store.upsert_fixed_term_bills("main", rows) == 1
    assert store.upsert_fixed_term_bills("main", rows[:1]) == 0
    stored = store.fixed_term_bills("main")[0]
    assert stored.pay_amount == Decimal(300) and stored.base_price == Decimal(300)
    assert (stored.owner_id, stored.cycle, stored.end_ts) == ("i-9", "2025-12", 1767225600)


def test_products_and_price_lookup(store: Store) -> None:
    p = Product.model_validate(
        {"id": "p-4090", "name": "RTX 4090", "price": "35000", "spotPrice": "17000",
         "monthlyPrice": [{"month": 1, "price": "20000000"}]}
    )  # fmt: skip
    p2 = Product.model_validate({"id": "p-4090", "name": "RTX 4090", "price": "40000"})
    store.upsert_products("main", convert.product_rows([p]), "c-1", T0)
    store.upsert_products("main", convert.product_rows([p2]), "c-2", T0)
    store.upsert_products("main", convert.product_rows([p]), "c-1", T0)
    price = store.product_price("main", "p-4090", "c-1")
    assert price is not None
    assert price.price_usd_per_hour == Decimal("0.35")
    assert price.spot_price_usd_per_hour == Decimal("0.17")
    assert price.monthly_price_usd(1) == Decimal(200)
    assert store.product_price("main", "p-4090", "c-2").price_usd_per_hour == Decimal("0.4")  # type: ignore[union-attr]
    assert store.product_price("main", "p-4090", "c-9") is not None  # falls back
    assert store.product_price("main", "nope", "c-1") is None
    # with a billing mode: the per-GPU hourly price for that mode
    c1 = store.product_price("main", "p-4090", "c-1")
    c2 = store.product_price("main", "p-4090", "c-2")
    assert c1 is not None and c2 is not None
    assert c1.hourly_usd("onDemand") == Decimal("0.35")
    assert c1.hourly_usd("spot") == Decimal("0.17")
    assert c2.hourly_usd("spot") == Decimal("0.4")  # no spot price
    assert c1.hourly_usd("monthly") is None
    assert store.max_listed_price("main") == Decimal("0.4")
    assert count(store, t.products) == 2


# -- tasks and runs -----------------------------------------------------------------------------


def task(id: str, status: str) -> dict[str, Any]:
    return convert.training_task_rows(
        [TrainingTask(task_id=id, task_name=f"t-{id}", task_status=status)]
    )[0]


def poll(task_id: str, status: str, **kw: Any) -> dict[str, Any]:
    return convert.async_task_row(AsyncTask(task_id=task_id, status=status, **kw))


def test_training_task_events_on_terminal_status(store: Store) -> None:
    # first sync: an old failed task is history, not news
    assert (
        store.upsert_training_tasks("main", [task("a", "RUNNING"), task("old", "FAILED")], T0) == []
    )
    t1 = T0 + timedelta(minutes=5)
    events = store.upsert_training_tasks(
        "main", [task("a", "FAILED"), task("old", "FAILED"), task("new", "CANCELED")], t1
    )
    assert sorted((e.resource_id, e.old, e.new) for e in events) == [
        ("a", "RUNNING", "FAILED"),
        ("new", None, "CANCELED"),
    ]
    assert store.upsert_training_tasks("main", [task("a", "FAILED")], t1) == []
    recs = {r.task_id: r for r in store.training_tasks("main")}
    assert recs["a"].terminal and recs["a"].status_changed_at == t1
    assert recs["old"].first_seen == T0


def test_watched_async_tasks(store: Store) -> None:
    store.watch_task("main", "task-1", "upscale", T0)
    store.watch_task("main", "task-1", "upscale v2", T0)
    watched = store.watched_tasks("main")
    assert [(w.task_id, w.label, w.terminal) for w in watched] == [("task-1", "upscale v2", False)]
    t1 = T0 + timedelta(seconds=30)
    assert store.update_async_task("main", poll("task-1", "TASK_STATUS_PROCESSING"), t1) is None
    event = store.update_async_task("main", poll("task-1", "TASK_STATUS_FAILED", reason="nsfw"), t1)
    assert event is not None and event.kind == "task_finished" and event.new == "TASK_STATUS_FAILED"
    assert store.watched_tasks("main") == []
    done = store.watched_tasks("main", include_terminal=True)[0]
    assert done.reason == "nsfw" and done.last_checked == t1 and done.added_at == T0
    assert store.update_async_task("main", poll("task-1", "TASK_STATUS_FAILED"), t1) is None


def test_collector_runs_and_last_success(store: Store) -> None:
    assert store.last_success("main", "instances") is None
    store.record_run("main", "instances", T0, T0 + timedelta(seconds=2), "ok", {"instances": 3})
    store.record_run(
        "main",
        "instances",
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=1, seconds=1),
        "failed",
        error="boom",
    )
    store.record_run("main", "metrics", T0, T0 + timedelta(seconds=5), "partial", {"failed": 1})
    assert store.last_success("main", "instances") == T0 + timedelta(seconds=2)
    assert store.last_success("main", "metrics") == T0 + timedelta(seconds=5)
    assert store.last_success("main", "metrics", include_partial=False) is None
    runs = store.last_runs("main")
    assert runs["instances"].outcome == "failed" and runs["instances"].error == "boom"
    assert runs["metrics"].counts == {"failed": 1}
    with pytest.raises(ValueError):
        store.record_run("main", "x", T0, T0, "weird")


# -- alerts, silences, notifications ------------------------------------------------------------


def test_alerts_roundtrip(store: Store) -> None:
    a = AlertRecord(
        fingerprint="idle-gpu/main/i-1", rule="idle-gpu", account="main", resource_kind="instance",
        resource_id="i-1", state="pending", active_since=T0, last_eval_at=T0,
        labels={"team": "ml"}, values={"gpu_util": 1.5}, summary="idle",
    )  # fmt: skip
    b = AlertRecord(
        fingerprint="monitor/x", rule="monitor-health", account=None, resource_kind="monitor",
        resource_id="x", state="firing", firing_since=T0,
    )  # fmt: skip
    store.save_alerts([a, b])
    fired = AlertRecord(
        **{**a.model_dump(), "state": "firing", "firing_since": T0 + timedelta(minutes=1)}
    )
    store.save_alerts([fired])
    loaded = store.load_alerts()
    assert [x.fingerprint for x in loaded] == ["idle-gpu/main/i-1", "monitor/x"]
    assert loaded[0].state == "firing" and loaded[0].labels == {"team": "ml"}
    assert loaded[0].values == {"gpu_util": 1.5}
    assert loaded[0].active_since == T0
    assert [x.fingerprint for x in store.load_alerts(account="main")] == ["idle-gpu/main/i-1"]
    assert store.load_alerts(states=["resolved"]) == []
    assert store.delete_alerts(["monitor/x"]) == 1


def test_silences(store: Store) -> None:
    sid = store.add_silence(
        rule="idle-gpu", resource_id="i-1", starts_at=T0, ends_at=T0 + timedelta(hours=2),
        reason="training tonight", created_at=T0,
    )  # fmt: skip
    store.add_silence(rule="spend", starts_at=T0, ends_at=T0 + timedelta(minutes=5), created_at=T0)
    assert [s.id for s in store.list_silences(T0 + timedelta(hours=1))] == [sid]
    assert len(store.list_silences(T0 + timedelta(hours=1), include_expired=True)) == 2
    silence = store.list_silences(T0)[0]
    assert silence.active(T0 + timedelta(minutes=1)) and not silence.active(T0 + timedelta(hours=3))
    assert store.remove_silence(sid) is True
    assert store.remove_silence(sid) is False
    with pytest.raises(ValueError):
        store.add_silence(starts_at=T0, ends_at=T0, created_at=T0)


def test_notifications(store: Store) -> None:
    nid = store.record_notification(
        channel="ops", kind="firing", fingerprints=["a", "b"], created_at=T0
    )
    store.update_notification(nid, status="failed", attempts=1, error="timeout")
    store.update_notification(nid, status="sent", attempts=2, sent_at=T0 + timedelta(seconds=9))
    (n,) = store.notifications()
    assert (n.status, n.attempts, n.sent_at, n.error) == (
        "sent",
        2,
        T0 + timedelta(seconds=9),
        "timeout",
    )
    assert n.fingerprints == ["a", "b"]
    assert store.notifications(status="pending") == []


def test_bills_keyed_by_requested_product_category(store: Store) -> None:
    bill = wire_hour_bill("i-1", -1, "3500")
    summary = convert.usage_bill_rows([bill], product_category="summary")
    assert store.upsert_usage_bills("main", "Hour", summary) == 1
    assert store.upsert_usage_bills("main", "Hour", convert.usage_bill_rows([bill], "gpu")) == 1
    window = (T0 - timedelta(hours=2), T0)
    (gpu,) = store.usage_bills_overlapping("main", *window, cycle_type="Hour")  # not summary too
    (summary,) = store.usage_bills_overlapping("main", *window, "Hour", category="summary")
    assert gpu.pay_amount == summary.pay_amount == Decimal("0.35")


def test_store_is_shared_by_threads(store: Store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def work(i: int) -> None:
        store.record_run("main", f"c{i % 4}", T0, T0 + timedelta(seconds=i), "ok", {"i": i})
        store.add_balance("main", balance(Decimal(i), T0 + timedelta(seconds=i)))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(40)))
    assert count(store, t.collector_runs) == 40
    assert count(store, t.balance_samples) == 40


def test_events_query_filters(store: Store) -> None:
    store.upsert_instances("main", [inst("i-1"), inst("i-2")], T0)
    store.upsert_instances("main", [inst("i-1", status="exited")], T0 + timedelta(minutes=1))
    since = T0 + timedelta(seconds=30)
    assert [(e.kind, e.resource_id) for e in store.events("main", since=since)] == [
        ("status_changed", "i-1"),
        ("disappeared", "i-2"),
    ]
    assert [e.resource_id for e in store.events(kinds=["appeared"])] == ["i-1", "i-2"]
    assert store.events("main", resource_id="i-2", until=since)[0].kind == "appeared"


def test_first_success_survives_retention(store: Store) -> None:
    assert store.first_success("main", "usage_bills") is None
    store.record_run("main", "usage_bills", T0, T0 + timedelta(seconds=1), "failed", error="x")
    assert store.first_success("main", "usage_bills") is None
    store.record_run("main", "usage_bills", T0, T0 + timedelta(seconds=2), "ok")
    store.record_run("main", "usage_bills", T0 + timedelta(days=9), T0 + timedelta(days=9), "ok")
    counts = store.enforce_retention(T0 + timedelta(days=10))
    assert counts["collector_runs"] == 2
    assert store.first_success("main", "usage_bills") == T0 + timedelta(seconds=2)
    assert store.last_success("main", "usage_bills") == T0 + timedelta(days=9)


def test_alert_details_roundtrip(store: Store) -> None:
    a = AlertRecord(
        fingerprint="fp", rule="low-balance", account="main", resource_kind="account",
        resource_id="main", state="firing", resource_name="Main account", severity="critical",
        last_match_at=T0, notified_severity="warning",
    )  # fmt: skip
    store.save_alerts([a])
    # every save moves the row to a new version (an evaluator re-reads what it did not write)
    assert [x.model_dump() for x in store.load_alerts()] == [{**a.model_dump(), "version": 1}]
    store.save_alerts([a])
    assert [x.version for x in store.load_alerts()] == [2]


async def test_writes_run_one_at_a_time_on_one_writer_thread_off_the_event_loop(
    tmp_path: Path,
) -> None:
    """``in_writer`` runs each write on the same dedicated thread (never the event loop's),
    in the order asked, passes results and errors through, and ``close`` waits for it."""
    import asyncio
    import threading

    store = open_store(store_url("sqlite", tmp_path))
    loop_thread = threading.get_ident()
    seen: list[tuple[int, str]] = []
    active = 0
    overlapped = False

    def write(label: str) -> str:
        nonlocal active, overlapped
        active += 1
        overlapped = overlapped or active > 1
        seen.append((threading.get_ident(), threading.current_thread().name))
        store.upsert_instances("main", [inst(f"i-{label}")], T0, complete=False)
        active -= 1
        return label

    def fail() -> None:
        raise ValueError("bad write")

    try:
        labels = await asyncio.gather(*(store.in_writer(write, str(n)) for n in range(8)))
        with pytest.raises(ValueError, match="bad write"):
            await store.in_writer(fail)
        assert labels == [str(n) for n in range(8)]
        assert not overlapped
        assert len({ident for ident, _ in seen}) == 1
        ident, name = seen[0]
        assert ident != loop_thread and name.startswith("store-writer")
        assert {r.instance_id for r in store.instances("main")} == {f"i-{n}" for n in range(8)}
    finally:
        store.close()
    assert store._writer is None


# -- records: new fields, detachment, what the store takes --------------------------------------


def test_renewal_fields_are_stored_and_updated_in_place(store: Store) -> None:
    store.upsert_instances(
        "main", [inst("i-1", billingMode="monthly", autoRenew=True, autoRenewMonth="3",
                      keepDataDay="7")], T0
    )  # fmt: skip
    rec = store.instance("main", "i-1")
    assert rec is not None
    assert (rec.auto_renew, rec.auto_renew_month, rec.keep_data_day) == (True, 3, 7)
    # switching auto-renew off is stored (not a tracked field: no history row, no event)
    events = store.upsert_instances(
        "main", [inst("i-1", billingMode="monthly", autoRenew=False, autoRenewMonth="3",
                      keepDataDay="7")], T0 + timedelta(minutes=1)
    )  # fmt: skip
    assert events == []
    assert store.instance("main", "i-1").auto_renew is False  # type: ignore[union-attr]
    assert store.instances("main")[0].auto_renew is False
    assert len(store.instance_history("main", "i-1")) == 1


def test_usage_bill_unit_price_is_usd_per_unit_of_bill_num0(store: Store) -> None:
    start = int((T0 - timedelta(hours=1)).timestamp())
    bills = [
        UsageBill.model_validate(
            {"startTime": str(start), "endTime": str(start + 3600), "ownerID": owner,
             "productId": "p-4090", "billNum0": "3600", "discountPrice0": price,
             "amount": "3500", "payAmount": "3500", **extra}
        )
        for owner, price, extra in (
            ("i-1", "3500", {}),  # 1/10000 USD: $0.35 per unit
            ("i-2", "35000000", {"pricePrecision": 10000}),  # divided by the precision first
            ("i-3", None, {}),
        )
    ]  # fmt: skip
    assert store.upsert_usage_bills("main", "Hour", convert.usage_bill_rows(bills, "gpu")) == 3
    prices = {b.owner_id: b.unit_price for b in store.bills("main")}
    assert prices == {"i-1": Decimal("0.35"), "i-2": Decimal("0.35"), "i-3": None}


def test_listing_rows_are_checked(store: Store) -> None:
    row = inst("i-1")
    del row["auto_renew"]
    with pytest.raises(ValueError, match=r"missing \['auto_renew'\]"):
        store.upsert_instances("main", [row], T0)
    with pytest.raises(ValueError, match=r"unknown \['colour'\]"):
        store.upsert_instances("main", [{**inst("i-1"), "colour": "red"}], T0)
    assert store.instances("main") == []


def test_returned_records_are_detached_and_usable_after_close(tmp_path: Path) -> None:
    from sqlalchemy import inspect

    store = open_store(store_url("sqlite", tmp_path))
    envs = [{"key": "NOVITA_MONITOR_PROTECT", "value": "yes"}, {"key": "HF_TOKEN", "value": "x"}]
    store.upsert_instances("main", [inst("i-1", envs=envs)], T0)
    store.save_alerts(
        [AlertRecord(fingerprint="fp", rule="r", account="main", resource_kind="instance",
                     resource_id="i-1", state="firing", labels={"a": 1})]
    )  # fmt: skip
    store.add_balance("main", balance(Decimal(5), T0))
    records = [*store.instances("main"), *store.load_alerts(), store.latest_balance("main")]
    store.close()  # the engine is disposed: any lazy load would fail now
    assert all(inspect(r).detached for r in records)
    instance, alert, sample = records
    assert instance.envs == {"NOVITA_MONITOR_PROTECT": "yes"}  # type: ignore[union-attr]
    assert instance.first_seen == T0  # type: ignore[union-attr]
    assert alert.labels == {"a": 1} and alert.state == "firing"  # type: ignore[union-attr]
    assert sample.available_usd == Decimal(5)  # type: ignore[union-attr]


def problem(kind: str, resource: str, field: str, raw: str | None) -> DataProblem:
    return DataProblem(kind=kind, resource_id=resource, field=field, raw=raw)


def test_data_problems_count_and_keep_the_first_sighting(store: Store) -> None:
    assert store.data_problems("main") == []
    t1 = T0 + timedelta(minutes=5)
    store.record_data_problems(
        "main",
        [problem("unparsed", "i-1", "gpuNum", "abc"), problem("out_of_bounds", "i-2",
         "hourly_cost", "99999"), problem("unparsed", "i-1", "gpuNum", "abd")],
        T0,
    )  # fmt: skip
    store.record_data_problems("main", [problem("unparsed", "i-1", "gpuNum", "x" * 2000)], t1)
    store.record_data_problems("team-b", [problem("unparsed", "i-1", "gpuNum", "1")], t1)
    store.record_data_problems("main", [], t1)  # nothing to record: nothing changes
    got = store.data_problems("main")
    assert [(p.kind, p.resource_id, p.field, p.count) for p in got] == [
        ("out_of_bounds", "i-2", "hourly_cost", 1),
        ("unparsed", "i-1", "gpuNum", 3),  # twice in the first report, once in the second
    ]
    oob, unparsed = got
    assert (oob.raw, oob.first_seen, oob.last_seen) == ("99999", T0, T0)
    assert (unparsed.first_seen, unparsed.last_seen) == (T0, t1)
    assert unparsed.raw == "x" * 500  # the latest, cut
    assert [(p.count, p.raw) for p in store.data_problems("team-b")] == [(1, "1")]
    with pytest.raises(ValueError, match="aware"):
        store.record_data_problems("main", [], datetime(2026, 1, 1))


def test_bill_rows_are_checked(store: Store) -> None:
    row = hour_bill("i-1", -1, "3500")
    with pytest.raises(ValueError, match=r"upsert_usage_bills: .*missing \['unit_price'\]"):
        store.upsert_usage_bills(
            "main", "Hour", [{k: v for k, v in row.items() if k != "unit_price"}]
        )
    with pytest.raises(ValueError, match=r"unknown \['account_id'\]"):
        store.upsert_usage_bills("main", "Hour", [{**row, "account_id": 7}])
    with pytest.raises(ValueError, match=r"upsert_fixed_term_bills: .*missing \['base_price'"):
        store.upsert_fixed_term_bills("main", [row])
    assert store.bills("main") == []


def test_records_build_like_sqlmodel_with_defaults_per_instance_and_strict_fields() -> None:
    from sqlalchemy import inspect

    a = AlertRecord(fingerprint="fp", rule="r", account=None, resource_kind="monitor",
                    resource_id="x", state="firing")  # fmt: skip
    b = AlertRecord(fingerprint="fp2", rule="r", account=None, resource_kind="monitor",
                    resource_id="y", state="pending", values={"v": 1})  # fmt: skip
    assert inspect(a).transient  # an instrumented instance, in no session
    assert a.labels == {} and a.values == {} and a.summary == "" and a.severity is None
    a.labels["k"] = "v"
    assert b.labels == {}  # a factory default is made per instance, never shared
    assert b.model_dump()["values"] == {"v": 1}
    assert a.model_fields_set == {"fingerprint", "rule", "account", "resource_kind",
                                  "resource_id", "state"}  # fmt: skip
    a.state = "resolved"  # assignable, as SQLModel's own
    assert a.state == "resolved"
    with pytest.raises(TypeError, match=r"unknown field.*colour"):
        AlertRecord(fingerprint="fp", rule="r", resource_kind="m", resource_id="x",
                    state="firing", colour="red")  # fmt: skip
    with pytest.raises(TypeError, match="missing required field 'available_usd'"):
        BalanceSample(ts=T0)
