"""The replicas' lease and its fence (``monitor.leader``, ``monitor.store.lease``).

The pure step on its own; then, against the real PostgreSQL server (see ``tests/pg.py``), two
electors on an injected clock (acquire, renew, expire, take over) and the fence: a write of a
leader whose epoch is stale is refused and rolled back, whatever goes through the store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from monitor.clock import ManualClock
from monitor.leader import (
    Elector,
    LeaderRunning,
    Leadership,
    NotLeader,
    lease_name,
    next_lease,
    refuse_if_led,
)
from monitor.store import open_store
from monitor.store import tables as t
from monitor.store.db import create_store_engine
from monitor.store.facade import Store
from monitor.store.lease import NOBODY, Lease, install_fence, read_lease
from monitor.store.models import ActionRecord, AlertRecord
from tests.pg import require_pg

LEASE_NAME = lease_name(["main", "gpu-team"])  # a configuration's accounts
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=15)
NEVER = datetime(1970, 1, 1, tzinfo=UTC)


# -- the pure step ----------------------------------------------------------------------------


def test_a_blank_row_is_taken_with_the_first_epoch() -> None:
    blank = Lease(LEASE_NAME, NOBODY, 0, NEVER, NEVER)
    assert next_lease(blank, "a", T0, LEASE) == Lease(LEASE_NAME, "a", 1, T0, T0 + LEASE)


def test_the_holder_renews_keeping_its_epoch() -> None:
    mine = Lease(LEASE_NAME, "a", 4, T0, T0 + LEASE)
    later = T0 + LEASE / 3
    assert next_lease(mine, "a", later, LEASE) == Lease(LEASE_NAME, "a", 4, T0, later + LEASE)


def test_a_live_lease_of_another_is_left_alone_an_expired_one_taken_over() -> None:
    theirs = Lease(LEASE_NAME, "a", 4, T0, T0 + LEASE)
    assert next_lease(theirs, "b", T0 + LEASE - timedelta(seconds=1), LEASE) is None
    at = T0 + LEASE  # expires_at itself: no longer live
    assert next_lease(theirs, "b", at, LEASE) == Lease(LEASE_NAME, "b", 5, at, at + LEASE)


def test_leading_again_under_a_new_epoch_is_a_change_of_role() -> None:
    """A leader that never saw its lease taken (paused) and takes it again after the other
    died leads under a new epoch: reported, so the daemon starts its schedule afresh."""
    me = Leadership("a")
    assert me.observe(Lease(LEASE_NAME, "a", 1, T0, T0 + LEASE), T0)
    assert not me.observe(Lease(LEASE_NAME, "a", 1, T0, T0 + 2 * LEASE), T0 + LEASE)  # renewed
    later = T0 + 5 * LEASE
    assert me.observe(Lease(LEASE_NAME, "a", 3, later, later + LEASE), later)
    assert me.token() == ("a", 3)
    assert me.snapshot() == {
        "is_leader": True, "epoch": 3, "holder": "a", "leader_seen_at": later
    }  # fmt: skip
    assert me.observe(Lease(LEASE_NAME, "b", 4, later, later + LEASE), later)  # lost
    assert me.token() is None and me.holder == "b"


# -- against PostgreSQL -------------------------------------------------------------------------


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[str]:
    url = require_pg(tmp_path)
    open_store(url).close()  # migrated to head
    yield url


@pytest.fixture
def engines(pg: str) -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.dispose()


def elector(
    url: str, engines: list[Engine], me: str, clock: ManualClock, changes: list[bool]
) -> Elector:
    engine = create_store_engine(url)
    engines.append(engine)
    return Elector(
        engine, Leadership(me), clock, LEASE.total_seconds(), changes.append, name=LEASE_NAME
    )


def test_lease_acquire_renew_expire_and_takeover_on_the_injected_clock(
    pg: str, engines: list[Engine]
) -> None:
    clock = ManualClock(T0)
    a_changes: list[bool] = []
    b_changes: list[bool] = []
    a = elector(pg, engines, "host:1:a", clock, a_changes)
    b = elector(pg, engines, "host:2:b", clock, b_changes)
    assert a.interval_s == pytest.approx(5.0)  # renewed every third of the lease

    a.step()  # the first to step takes the blank row
    assert a_changes == [True] and a.leadership.token() == ("host:1:a", 1)
    b.step()
    assert b_changes == [] and not b.leadership.is_leader
    assert b.leadership.holder == "host:1:a" and b.leadership.leader_seen_at == T0

    for _ in range(6):  # renewed every 5 s for 30 s: the lease never ends
        clock.advance(5)
        a.step()
        b.step()
    assert a.leadership.token() == ("host:1:a", 1) and b_changes == []
    lease = read_lease(engines[0], LEASE_NAME)
    assert lease is not None and lease.expires_at == clock.now() + LEASE

    # a stops renewing (dead): b takes over at its first step after the expiry, within 4/3
    died_at = clock.now()
    clock.advance(14)
    b.step()
    assert b_changes == []  # still live
    clock.advance(1)
    b.step()
    assert b_changes == [True] and b.leadership.token() == ("host:2:b", 2)
    assert clock.now() - died_at <= 2 * LEASE
    lease = read_lease(engines[0], LEASE_NAME)
    assert lease == Lease(LEASE_NAME, "host:2:b", 2, clock.now(), clock.now() + LEASE)

    # a comes back: it finds b's live lease and follows (its role change is reported)
    a.step()
    assert a_changes == [True, False] and a.leadership.token() is None
    assert a.leadership.holder == "host:2:b" and a.leadership.epoch == 2

    # a clean stop releases the lease: a takes over at its next step, not a lease later
    b.stop(release=True)
    assert b.leadership.token() is None
    a.step()
    assert a.leadership.token() == ("host:1:a", 3)


def test_only_one_of_many_electors_stepping_at_once_leads(pg: str, engines: list[Engine]) -> None:
    import threading

    clock = ManualClock(T0)
    electors = [elector(pg, engines, f"host:{i}:x", clock, []) for i in range(6)]
    barrier = threading.Barrier(len(electors))

    def go(e: Elector) -> None:
        barrier.wait()
        e.step()

    threads = [threading.Thread(target=go, args=(e,)) for e in electors]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    leaders = [e.leadership.me for e in electors if e.leadership.is_leader]
    assert len(leaders) == 1
    assert read_lease(engines[0], LEASE_NAME) == Lease(LEASE_NAME, leaders[0], 1, T0, T0 + LEASE)


def _stop_action() -> ActionRecord:
    key = "idle|stop|i-1|1700000000"
    return ActionRecord(
        account="main", rule="idle", action="stop", instance_id="i-1", instance_name="nb",
        params={"grace": 900}, facts={}, intent_key=key, idempotency_key=key,
        state="announced", reason="idle 45 min", planned_at=T0,
        due_at=T0 + timedelta(minutes=15), saving_per_hour_usd=Decimal("0.35"),
    )  # fmt: skip


def _alert(state: str) -> AlertRecord:
    return AlertRecord(
        fingerprint="fp-1", rule="idle", account="main", resource_kind="instance",
        resource_id="i-1", state=state, last_eval_at=T0,
    )  # fmt: skip


def test_a_leader_whose_epoch_is_stale_can_no_longer_write(pg: str, engines: list[Engine]) -> None:
    clock = ManualClock(T0)
    a = elector(pg, engines, "host:1:a", clock, [])
    b = elector(pg, engines, "host:2:b", clock, [])
    store: Store = open_store(pg)
    install_fence(store.engine, LEASE_NAME, a.leadership.token)
    try:
        # not leading yet: nothing is written
        with pytest.raises(NotLeader, match="not the leader"):
            store.insert_actions([_stop_action()])
        a.step()
        (action_id,) = store.insert_actions([_stop_action()])  # leading: written
        row = store.action(action_id)
        assert row is not None

        # the evaluation's transaction is under way when b takes a's lease over (a paused
        # past its lease): at its commit the write sees the new epoch and is rolled back whole
        clock.advance(LEASE.total_seconds())
        refused = pytest.raises(NotLeader, match="held by host:2:b at epoch 2")
        with refused, store.transaction() as conn:
            store.write_alerts([_alert("firing")], [], {}, conn)
            b.step()  # the takeover commits meanwhile
        assert b.leadership.token() == ("host:2:b", 2)
        assert store.load_alerts() == []  # rolled back

        # a still believes it leads (it has not stepped since): its claim and its ledger
        # writes carry epoch 1 and are refused; the row is untouched
        assert a.leadership.token() == ("host:1:a", 1)
        with pytest.raises(NotLeader):
            store.claim(row, "host:1", clock.now())
        with pytest.raises(NotLeader):
            store.transition(row, "aborted", clock.now(), reason="x")
        with pytest.raises(NotLeader):
            store.ensure_account("other")
        after = store.action(action_id)
        assert after is not None and (after.state, after.version) == ("announced", row.version)
        with store.engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(t.accounts)).scalar_one()
            assert count == 0  # nor the account (reads are not fenced)

        # the new leader's writes, fenced by its own epoch, go through
        fenced_b = open_store(pg)
        install_fence(fenced_b.engine, LEASE_NAME, b.leadership.token)
        try:
            assert fenced_b.claim(row, "host:2", clock.now()) is not None
        finally:
            fenced_b.close()
    finally:
        store.close()


def test_once_is_refused_while_a_live_leader_holds_the_database(
    pg: str, engines: list[Engine]
) -> None:
    clock = ManualClock(T0)
    a = elector(pg, engines, "host:1:a", clock, [])
    assert LEASE_NAME == "gpu-team,main"
    refuse_if_led(engines[0], clock.now(), ["main"])  # nobody leads yet
    a.step()
    soon = clock.now() + LEASE - timedelta(seconds=1)
    with pytest.raises(LeaderRunning, match=r"host:1:a, epoch 1.*gpu-team,main.*--force"):
        refuse_if_led(engines[0], soon, ["main"])  # one of its accounts is led
    refuse_if_led(engines[0], soon, ["research"])  # another daemon's accounts: not this one's
    refuse_if_led(engines[0], clock.now() + LEASE, ["main"])  # its lease ended: a dead daemon
