"""Secrets at rest (issue 10 §3, the environment part): of an instance's environment the store
keeps only what the monitor reads (the protection flag, ``instance_env_keys``, the ``labels.KEY``
the loaded rules compare), so a token kept there never reaches the database file, its ``-wal``
or its ``-shm``; and migration 0005 scrubs a database written before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from monitor.app import App
from monitor.clock import ManualClock
from monitor.collect import convert
from monitor.collect.envs import PROTECT_ENV
from monitor.config import Config, shipped_rules_dir
from monitor.novita.models import Instance
from monitor.store import open_store
from monitor.store.db import create_store_engine, current_revision, migrate
from monitor.store.facade import Store
from monitor.store.testing import store_url
from tests.helpers import ENV, write_config
from tests.test_store_migrations import BACKENDS, HEAD

TOKEN = "hf_SeCrEt0123456789abcdefGHIJKLmnop"
LISTING = "/gpu-instance/openapi/v1/gpu/instances"
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class WithEnv(httpx.AsyncBaseTransport):
    """The simulator, whose instances carry these environment variables besides their own."""

    def __init__(self, sim_app: Any, envs: dict[str, str]) -> None:
        self.inner = httpx.ASGITransport(app=sim_app)
        self.envs = envs

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path != LISTING:
            return response
        body = json.loads(await response.aread())
        for item in body.get("instances", []):
            item["envs"] = [
                *item.get("envs", []),
                *({"key": k, "value": v} for k, v in self.envs.items()),
            ]
        return httpx.Response(response.status_code, json=body)


def database_bytes(db: Path) -> Iterator[tuple[str, bytes]]:
    """The database file and its journal files, as they are on disk now."""
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")):
        if path.exists():
            yield path.name, path.read_bytes()


def assert_not_on_disk(db: Path, secret: str) -> None:
    found = [name for name, data in database_bytes(db) if secret.encode() in data]
    assert found == [], f"{secret} found in {found}"


def rule_file(tmp_path: Path, key: str, name: str = "labelled") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"rules:\n  - name: {name}\n    resource: instance\n    when:\n      all:\n"
        f"        - {{field: labels.{key}, op: eq, value: ml-team}}\n"
        "        - not: {field: status, op: eq, value: running}\n"
        "    severity: info\n"
    )
    return path


def open_with_env(
    tmp_path: Path, sim_app: Any, clock: ManualClock, envs: dict[str, str], extra: str = ""
) -> App:
    config = Config.load(write_config(tmp_path, extra=extra), env=ENV)
    return App.open(config, clock, env=ENV, transport_factory=lambda _name: WithEnv(sim_app, envs))


async def test_a_token_in_an_instance_environment_never_reaches_the_database_file(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    rules = rule_file(tmp_path, "TEAM")
    envs = {"HF_TOKEN": TOKEN, "TEAM": "ml-team", PROTECT_ENV: "yes"}
    extra = f"rules: [{shipped_rules_dir()}, {rules}]\n"
    app = open_with_env(tmp_path, sim_app, clock, envs, extra)
    db = tmp_path / "monitor.db"
    try:
        for _ in range(5):  # rows rewritten: each listing, the status changes, the evaluations
            await app.once()
            clock.advance(60)
        assert_not_on_disk(db, TOKEN)  # while the daemon runs: file, -wal, -shm
        stored = {r.instance_id: r.envs for r in app.store.instances("main")}
    finally:
        await app.aclose()
    assert_not_on_disk(db, TOKEN)  # and once it stopped
    # what the monitor reads is kept: the protection flag and the key a rule compares; the
    # simulator's own PYTHONUNBUFFERED is not read, so not kept either
    assert stored and all(e == {PROTECT_ENV: "yes", "TEAM": "ml-team"} for e in stored.values())


async def test_configured_keys_are_kept_and_a_reload_follows_the_new_rules(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    envs = {"HF_TOKEN": TOKEN, "TEAM": "ml", "PROJECT": "llm", "OWNER": "alice"}
    first = rule_file(tmp_path, "TEAM", "by-team")
    extra = f"instance_env_keys: [OWNER]\nrules: [{first}]\n"
    app = open_with_env(tmp_path, sim_app, clock, envs, extra)
    try:
        assert app.contexts[0].settings.env_keys == {PROTECT_ENV, "OWNER", "TEAM"}
        await app.collect(["instances"])
        (one, *_) = app.store.instances("main")
        assert one.envs == {"OWNER": "alice", "TEAM": "ml"}
    finally:
        await app.aclose()
    # a reload (SIGHUP) builds the App again from the new files: the set follows the rules
    second = rule_file(tmp_path, "PROJECT", "by-project")
    extra = f"instance_env_keys: [OWNER]\nrules: [{second}]\n"
    clock.advance(60)
    app = open_with_env(tmp_path, sim_app, clock, envs, extra)
    try:
        assert app.contexts[0].settings.env_keys == {PROTECT_ENV, "OWNER", "PROJECT"}
        await app.collect(["instances"])
        (one, *_) = app.store.instances("main")
        assert one.envs == {"OWNER": "alice", "PROJECT": "llm"}
    finally:
        await app.aclose()
    assert_not_on_disk(tmp_path / "monitor.db", TOKEN)


async def test_a_protection_flag_of_another_name_is_the_one_kept(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    envs = {PROTECT_ENV: "true", "KEEP_OFF": "true", "HF_TOKEN": TOKEN}
    extra = "actions: {protect: {env: KEEP_OFF}}\nrules: []\n"
    app = open_with_env(tmp_path, sim_app, clock, envs, extra)
    try:
        assert app.contexts[0].settings.env_keys == {"KEEP_OFF"}
        await app.collect(["instances"])
        (one, *_) = app.store.instances("main")
    finally:
        await app.aclose()
    assert one.envs == {"KEEP_OFF": "true"}


# ---------------------------------------------------------------------------------------------
# Migration 0005: a database written before it is scrubbed


def listing_with_envs(minute: int, envs: dict[str, str]) -> list[dict[str, Any]]:
    """A listing as the code before 0005 stored it: the whole environment (its size varies
    from one listing to the next, so rewritten rows leave their old copies behind)."""
    status = ["running", "exited", "stopping"][minute % 3]
    rows = []
    for n in range(40):
        row = convert.instance_row(Instance.model_validate({"id": f"i-{n}", "status": status}))
        row["envs"] = {**envs, "N": str(n), "PAD": "x" * (minute * 37 % 200)}
        rows.append(row)
    return rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_migration_0005_scrubs_a_database_written_before_it(backend: str, tmp_path: Path) -> None:
    url = store_url(backend, tmp_path)
    engine = create_store_engine(url)
    if backend == "sqlite":  # as SQLite builds without SECURE_DELETE (Debian's has it) leave
        event.listen(engine, "connect", lambda c, _r: c.execute("PRAGMA secure_delete=OFF"))
    migrate(engine, revision="0004")
    old = Store(engine)
    envs = {"HF_TOKEN": TOKEN, PROTECT_ENV: "1", "PATH": "/usr/bin"}
    for minute in range(12):  # a daemon's rewrites of its rows, minute after minute
        old.upsert_instances(
            "main", listing_with_envs(minute, envs), T0 + timedelta(minutes=minute)
        )
    db = tmp_path / "store" / "monitor.db"
    crashed = tmp_path / "crashed" / "monitor.db"  # a copy taken while it ran: a kill -9
    if backend == "sqlite":
        crashed.parent.mkdir()
        for name, data in database_bytes(db):
            (crashed.parent / name).write_bytes(data)
    old.close()
    urls = [url]
    if backend == "sqlite":
        # the premise: the token is in the files, freed copies of old rows included
        assert db.read_bytes().count(TOKEN.encode()) > 40
        assert TOKEN.encode() in Path(f"{crashed}-wal").read_bytes()
        urls.append(f"sqlite:///{crashed}")

    for where in urls:
        store = open_store(where)  # migrates 0004 -> head
        try:
            assert current_revision(store.engine) == HEAD
            kept = {r.instance_id: r.envs for r in store.instances("main")}
            assert len(kept) == 40 and all(e == {PROTECT_ENV: "1"} for e in kept.values())
            with store.engine.connect() as conn:  # the rewrite it asked for is done
                due = "SELECT count(*) FROM store_meta WHERE key = 'scrub_due'"
                assert conn.execute(text(due)).scalar_one() == 0
            file = Path(make_url(where).database or "")
            if backend == "sqlite":
                assert_not_on_disk(file, TOKEN)
                assert_not_on_disk(file, "/usr/bin")
        finally:
            store.close()
        if backend == "sqlite":
            assert_not_on_disk(file, TOKEN)


def test_a_fresh_database_is_not_rewritten(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        store = open_store(store_url("sqlite", tmp_path))
        store.close()
    assert not [e for e in logs if e["event"] == "database_rewritten"]


def test_a_rewrite_that_cannot_be_done_now_is_left_to_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from structlog.testing import capture_logs

    from monitor.store import scrub

    url = store_url("sqlite", tmp_path)
    engine = create_store_engine(url)
    migrate(engine, revision="0004")
    old = Store(engine)
    old.upsert_instances("main", listing_with_envs(0, {"HF_TOKEN": TOKEN}), T0)
    old.close()

    def disk_full(_engine: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as patch, capture_logs() as logs:
        patch.setattr(scrub, "_sqlite_rewrite", disk_full)
        store = open_store(url)  # the monitor starts all the same
        store.close()
    assert [e["event"] for e in logs if e["event"].startswith("database_rewrite")] == [
        "database_rewrite",
        "database_rewrite_postponed",
    ]
    with capture_logs() as logs:
        store = open_store(url)  # at head already: only the rewrite is left, and done now
        store.close()
    assert any(e["event"] == "database_rewritten" for e in logs)
    assert_not_on_disk(tmp_path / "store" / "monitor.db", TOKEN)
