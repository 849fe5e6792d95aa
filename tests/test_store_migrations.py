"""Migrations: run at open, match the tables, keep data across re-opens and upgrades."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

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
HEAD = "0003"

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
