"""Migrations: run at open, match the tables, keep data across re-opens and upgrades."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Engine, MetaData, Table, inspect, select, text

from monitor.collect.convert import balance_sample, instance_rows
from monitor.novita.models import Balance, Instance
from monitor.store import open_store
from monitor.store.db import (
    MIGRATIONS_DIR,
    alembic_config,
    create_store_engine,
    current_revision,
    migrate,
)
from monitor.store.tables import metadata
from monitor.store.testing import pg_url, store_url

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HEAD = "0008"

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
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path)


def test_migrations_produce_exactly_the_tables(url: str) -> None:
    store = open_store(url)
    try:
        with store.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, metadata) == []
        assert current_revision(store.engine) == HEAD
    finally:
        store.close()


def test_reopen_keeps_data_and_is_idempotent(url: str) -> None:
    store = open_store(url)
    store.upsert_instances("main", instance_rows([Instance(id="i-1", status="running")]), T0)
    store.add_balance("main", balance_sample(Balance(available_usd=Decimal("12.5")), T0))
    store.close()
    for _ in range(2):
        store = open_store(url)
        try:
            assert [r.instance_id for r in store.instances("main")] == ["i-1"]
            assert store.latest_balance("main").available_usd == Decimal("12.5")  # type: ignore[union-attr]
        finally:
            store.close()


EXTRA_REVISION = '''
"""A test-only revision on top of head: adds a table and a column."""
import sqlalchemy as sa
from alembic import op

revision = "test_extra"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("extra_notes", sa.Column("id", sa.Integer(), primary_key=True))
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("note")
    op.drop_table("extra_notes")
'''


def test_upgrade_from_0001_keeps_data(url: str, tmp_path: Path) -> None:
    engine = create_store_engine(url)
    try:
        migrate(engine, revision="0001")
        assert current_revision(engine) == "0001"
        with engine.begin() as conn:  # as the code at 0001 wrote them
            conn.execute(text("INSERT INTO accounts (id, name) VALUES (1, 'main')"))
            conn.execute(
                text(
                    "INSERT INTO instances (account_id, instance_id, name, status, gpu_count,"
                    " first_seen) VALUES (1, 'i-1', '', 'running', 8, :t)"
                ),
                {"t": T0.replace(tzinfo=None) if engine.dialect.name == "sqlite" else T0},
            )
            conn.execute(
                text(
                    "INSERT INTO alerts (fingerprint, rule, resource_kind, resource_id, state)"
                    " VALUES ('fp', 'idle-gpu', 'instance', 'i-1', 'firing')"
                )
            )
    finally:
        engine.dispose()

    store = open_store(url)  # upgrades 0001 -> head
    try:
        assert current_revision(store.engine) == HEAD
        assert store.instance("main", "i-1").gpu_count == 8  # type: ignore[union-attr]
        (alert,) = store.load_alerts()
        assert (alert.fingerprint, alert.state, alert.severity) == ("fp", "firing", None)
        # NULL JSON and text read as empty, as the callers (evaluate.to_state) expect
        assert (alert.labels, alert.values, alert.summary) == ({}, {}, "")
        assert store.instance("main", "i-1").envs == {}  # type: ignore[union-attr]
    finally:
        store.close()

    # and a future revision on top of head keeps the data too
    versions = tmp_path / "versions"
    shutil.copytree(MIGRATIONS_DIR / "versions", versions)
    (versions / "9999_test.py").write_text(EXTRA_REVISION.replace("{head}", HEAD))
    config = alembic_config()
    config.set_main_option("version_locations", str(versions))
    engine = create_store_engine(url)
    try:
        migrate(engine, config=config)
        assert current_revision(engine) == "test_extra"
        assert "note" in {c["name"] for c in inspect(engine).get_columns("instances")}
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT instance_id, gpu_count FROM instances")).all()
        assert [tuple(r) for r in rows] == [("i-1", 8)]
    finally:
        engine.dispose()


def test_concurrent_opens_migrate_once(url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def open_and_use(i: int) -> int:
        store = open_store(url)
        try:
            return store.ensure_account(f"acct-{i % 2}")
        finally:
            store.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(open_and_use, range(8)))
    assert len(set(ids)) == 2
    engine = create_store_engine(url)
    try:
        assert current_revision(engine) == HEAD
    finally:
        engine.dispose()


def test_in_memory_sqlite_store() -> None:
    store = open_store("sqlite://")
    try:
        store.upsert_instances("main", instance_rows([Instance(id="i-1", status="running")]), T0)
        assert [r.instance_id for r in store.instances("main")] == ["i-1"]
    finally:
        store.close()


# -- 0002 -> head: a database written by the code at 0002 keeps every row ------------------------

E0 = int(T0.timestamp())
AT = {"created_at": T0 - timedelta(days=10), "first_seen": T0 - timedelta(days=5)}


def rows_at_0002() -> dict[str, list[dict[str, object]]]:
    """One or two rows per table in the form the code at revision 0002 wrote them (integer
    micro-dollars via ``Money``, epoch seconds, packed per-GPU bytes, monthly prices as JSON
    strings, ``""`` for absent key parts)."""
    money = Decimal
    return {
        "accounts": [{"id": 1, "name": "main"}, {"id": 2, "name": "team-b"}],
        "instances": [
            {"key": 1, "account_id": 1, "instance_id": "i-1", "name": "trainer",
             "status": "running", "billing_mode": "monthly", "end_time": T0 + timedelta(days=30),
             "gpu_count": 8, "cpu_num": 64, "memory": 512, "product_id": "p-h100",
             "product_name": "H100", "cluster_id": "c-1", "cluster_name": "Cluster 1",
             "kind": "gpu", "error_state": None, "spot_status": None,
             "created_at": AT["created_at"], "last_started_at": T0 - timedelta(days=1),
             "last_stopped_at": None, "first_seen": AT["first_seen"], "last_seen": T0,
             "disappeared_at": None, "envs": {"A": "b"}},
            {"key": 2, "account_id": 2, "instance_id": "i-2", "name": "", "status": "exited",
             "billing_mode": "onDemand", "end_time": None, "gpu_count": 1, "cpu_num": None,
             "memory": None, "product_id": None, "product_name": None, "cluster_id": None,
             "cluster_name": None, "kind": None, "error_state": "OOM", "spot_status": "ok",
             "created_at": None, "last_started_at": None, "last_stopped_at": T0,
             "first_seen": T0, "last_seen": T0, "disappeared_at": T0, "envs": {}},
        ],
        "instance_history": [
            {"id": 1, "instance_key": 1, "ts": T0, "status": "running", "billing_mode": "monthly",
             "end_time": T0 + timedelta(days=30), "gpu_count": 8, "product_id": "p-h100",
             "cluster_id": "c-1", "error_state": None},
        ],
        "events": [
            {"id": 1, "account_id": 1, "ts": T0, "kind": "appeared", "resource_kind": "instance",
             "resource_id": "i-1", "old": None, "new": "running"},
        ],
        "metric_samples": [
            {"instance_key": 1, "ts": E0, "gpu_util": 123, "gpu_mem": 456, "cpu": 78, "mem": 90,
             "disk": 12, "gpu_utils": bytes([1, 2, 255]), "gpu_mems": bytes([3, 4, 5])},
            {"instance_key": 2, "ts": E0 + 60, "gpu_util": None, "gpu_mem": None, "cpu": 5,
             "mem": None, "disk": None, "gpu_utils": None, "gpu_mems": None},
        ],
        "metric_hourly": [
            {"instance_key": 1, "ts": E0 - 3600, "n": 60, "gpu_util_avg": 500,
             "gpu_util_max": 1000, "gpu_util_min": 0, "gpu_util_n": 60, "gpu_mem_avg": 100,
             "gpu_mem_max": 200, "gpu_mem_min": 50, "gpu_mem_n": 59, "cpu_avg": 10,
             "mem_avg": 20, "disk_avg": 30, "gpu_utils_avg": bytes([50, 51]),
             "gpu_utils_max": bytes([100, 99]), "gpu_mems_avg": bytes([10, 11])},
        ],
        "balance_samples": [
            {"account_id": 1, "ts": E0, "available": money("12.345678"), "cash": money("10"),
             "credit_limit": money("0"), "pending_charges": None,
             "outstanding_invoices": money("-1.5"), "source": "balance_detail"},
        ],
        "usage_bills": [
            {"account_id": 1, "cycle_type": "Hour", "category": "gpu", "owner_id": "i-1",
             "product_id": "p-h100", "start_ts": E0 - 3600, "end_ts": E0,
             "product_name": "H100", "billing_method": 1, "bill_num0": 28800.0,
             "amount": money("20.000001"), "voucher_amount": money("0"),
             "pay_amount": money("20.000001")},
            {"account_id": 1, "cycle_type": "Day", "category": "gpu", "owner_id": "",
             "product_id": "", "start_ts": E0 - 86400, "end_ts": None, "product_name": None,
             "billing_method": None, "bill_num0": None, "amount": None,
             "voucher_amount": None, "pay_amount": None},
        ],
        "fixed_term_bills": [
            {"account_id": 1, "category": "gpu", "owner_id": "i-1", "product_id": "p-h100",
             "start_ts": E0 - 86400, "end_ts": E0 + 29 * 86400, "product_name": "H100",
             "trade_mode": "monthly", "trade_type": "new", "cycle": "2026-03", "bill_num": 1,
             "base_price": money("1500"), "amount": money("1500"),
             "voucher_amount": money("0"), "pay_amount": money("1500"), "create_ts": E0 - 86400},
        ],
        "products": [
            {"account_id": 1, "product_id": "p-h100", "cluster_id": "c-1", "name": "H100",
             "price_per_hour": money("2.5"), "spot_price_per_hour": money("1.25"),
             "monthly_prices": {"1": "1500.5", "3": "4200"}, "available_deploy": True,
             "updated_at": T0},
            {"account_id": 1, "product_id": "p-h100", "cluster_id": "", "name": "",
             "price_per_hour": None, "spot_price_per_hour": None, "monthly_prices": {},
             "available_deploy": None, "updated_at": None},
        ],
        "training_tasks": [
            {"account_id": 1, "task_id": "t-1", "name": "finetune", "task_type": "lora",
             "status": "FAILED", "terminal": True, "created_at": T0, "first_seen": T0,
             "last_seen": T0, "status_changed_at": T0,
             "models": [{"model_name": "m", "model_status": "ok"}]},
        ],
        "watched_tasks": [
            {"account_id": 1, "task_id": "a-1", "label": "upscale", "status": "TASK_STATUS_QUEUED",
             "terminal": False, "reason": None, "task_type": "img", "progress_percent": 12.5,
             "added_at": T0, "last_checked": T0, "status_changed_at": None},
        ],
        "collector_runs": [
            {"id": 1, "account_id": 1, "collector": "instances", "started": T0,
             "finished": T0 + timedelta(seconds=1), "outcome": "ok", "counts": {"instances": 2},
             "error": None},
            {"id": 2, "account_id": 2, "collector": "metrics", "started": T0,
             "finished": T0 + timedelta(seconds=2), "outcome": "failed", "counts": {},
             "error": "boom"},
        ],
        "alerts": [
            {"fingerprint": "idle/main/i-1", "rule": "idle", "account": "main",
             "resource_kind": "instance", "resource_id": "i-1", "state": "firing",
             "active_since": T0, "firing_since": T0, "resolved_at": None, "last_eval_at": T0,
             "last_notified_at": T0, "labels": {"team": "ml"}, "values": {"gpu": 0.4},
             "summary": "idle", "resource_name": "trainer", "severity": "warning",
             "last_match_at": T0, "notified_severity": "warning"},
        ],
        "silences": [
            {"id": 1, "rule": "idle", "account": "main", "resource_id": None,
             "matchers": {"team": "ml"}, "starts_at": T0, "ends_at": T0 + timedelta(hours=1),
             "reason": "maintenance", "created_at": T0},
        ],
        "notifications": [
            {"id": 1, "channel": "ops", "kind": "firing", "fingerprints": ["idle/main/i-1"],
             "created_at": T0, "sent_at": T0, "attempts": 1, "status": "sent", "error": None,
             "body": "idle"},
        ],
        "store_meta": [{"key": "rollup_watermark", "value": str(E0)}],
    }  # fmt: skip


def snapshot(engine: Engine) -> dict[str, list[dict[str, object]]]:
    """Every row of every table, read through the reflected schema (no store code)."""
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {
            name: [
                dict(r._mapping)
                for r in conn.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for name, table in meta.tables.items()
            if name != "alembic_version"
        }


def test_upgrade_from_0002_keeps_every_row(url: str) -> None:
    from monitor.store import tables as t

    engine = create_store_engine(url)
    try:
        migrate(engine, revision="0002")
        rows = rows_at_0002()
        at_0002 = MetaData()
        at_0002.reflect(engine)
        assert set(rows) == set(at_0002.tables) - {"alembic_version"}  # every table has rows
        with engine.begin() as conn:
            for table in at_0002.sorted_tables:  # parents first
                if table.name in rows:
                    columns = set(table.columns.keys())
                    assert all(set(r) == columns for r in rows[table.name]), table.name
                    # through today's column types (Money, UTCDateTime), as the code wrote
                    # them, but only the columns of 0002 (later ones have defaults of their own)
                    today = t.metadata.tables[table.name]
                    shaped = Table(
                        table.name,
                        MetaData(),
                        *[
                            Column(c.name, c.type, primary_key=c.primary_key)
                            for c in today.columns
                            if c.name in columns
                        ],
                    )
                    conn.execute(shaped.insert(), rows[table.name])
            if engine.dialect.name == "postgresql":  # ids given explicitly: move the sequences
                for name in ("accounts", "instances", "collector_runs", "silences"):
                    key = "key" if name == "instances" else "id"
                    conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{name}', '{key}'),"
                            f" (SELECT max({key}) FROM {name}))"
                        )
                    )
        before = snapshot(engine)
    finally:
        engine.dispose()

    store = open_store(url)  # upgrades 0002 -> head
    try:
        assert current_revision(store.engine) == HEAD
        after = snapshot(store.engine)
        added = {
            "instances": {"auto_renew", "auto_renew_month", "keep_data_day"},
            "usage_bills": {"unit_price"},
            "notifications": {"title", "notify_type", "next_attempt_at", "expires_at", "report_id"},
            "alerts": {"version"},
        }
        assert set(after) == set(before) | {
            "data_problems",
            "actions",
            "report_runs",
            "leader_lease",
        }
        if store.dialect == "sqlite":  # added to in place, never rebuilt without WITHOUT ROWID
            with store.engine.connect() as conn:
                ddl = dict(conn.execute(text("SELECT name, sql FROM sqlite_master")).all())
            for name in ("usage_bills", "balance_samples", "metric_samples", "metric_hourly"):
                assert "WITHOUT ROWID" in ddl[name], name
        # 0006: a window of time is a range of the bills' key
        assert inspect(store.engine).get_pk_constraint("usage_bills")["constrained_columns"] == [
            "account_id", "cycle_type", "category", "start_ts", "owner_id", "product_id"
        ]  # fmt: skip
        assert after["data_problems"] == [] and after["actions"] == []
        for row in before["instances"]:  # 0005: of an environment, only the protection flag
            row["envs"] = {k: v for k, v in row["envs"].items() if k == "NOVITA_MONITOR_PROTECT"}
        for name, old_rows in before.items():
            new_cols = added.get(name, set())
            assert [{k: v for k, v in r.items() if k not in new_cols} for r in after[name]] == (
                old_rows
            ), name
            fresh = {"version": 0}  # alerts start at version 0 (0004)
            assert all(r[c] == fresh.get(c) for r in after[name] for c in new_cols), name

        # and the store reads the old rows as its records, decoded
        (i1,) = store.instances("main")
        assert (i1.instance_id, i1.gpu_count, i1.envs, i1.created_at) == (
            "i-1", 8, {}, AT["created_at"],
        )  # fmt: skip
        assert i1.auto_renew is None and i1.end_time == T0 + timedelta(days=30)
        assert [r.instance_id for r in store.instances("team-b", include_disappeared=True)] == [
            "i-2"
        ]
        sample = store.latest_balance("main")
        assert sample is not None and sample.ts == T0
        assert (sample.available_usd, sample.outstanding_invoices_usd) == (
            Decimal("12.345678"), Decimal("-1.5"),
        )  # fmt: skip
        price = store.product_price("main", "p-h100", "c-1")
        assert price is not None and price.monthly_price_usd(3) == Decimal(4200)
        assert price.monthly_prices_usd == {1: Decimal("1500.5"), 3: Decimal(4200)}
        (hourly,) = store.bills("main", "Hour")
        assert (hourly.pay_amount, hourly.bill_num0, hourly.unit_price) == (
            Decimal("20.000001"), 28800.0, None,
        )  # fmt: skip
        assert store.fixed_term_bills("main")[0].base_price == Decimal(1500)
        assert store.training_tasks("main")[0].models == [{"model_name": "m", "model_status": "ok"}]
        assert store.watched_tasks("main")[0].progress_percent == 12.5
        assert store.last_runs("team-b")["metrics"].error == "boom"
        (alert,) = store.load_alerts()
        assert (alert.values, alert.labels, alert.notified_severity) == (
            {"gpu": 0.4}, {"team": "ml"}, "warning",
        )  # fmt: skip
        assert store.list_silences(T0)[0].active(T0)
        assert store.notifications()[0].fingerprints == ["idle/main/i-1"]
        gpus = store.per_gpu_window("main", ["i-1"], T0 - timedelta(hours=1), T0)["i-1"]
        assert [g.avg for g in gpus] == [50.0, 51.0]
        assert store.samples("main", "i-1", T0, T0 + timedelta(minutes=1))[0].gpu_utils == (
            1.0, 2.0, None,
        )  # fmt: skip
        # ids keep counting after the old rows
        assert store.ensure_account("third") > 2
    finally:
        store.close()
