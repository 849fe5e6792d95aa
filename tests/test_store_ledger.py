"""The action ledger's two guarantees: one intent acts once; one process executes a row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from monitor.store import Store, open_store
from monitor.store.models import ActionRecord

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    yield s
    s.close()


def stop(state: str = "announced", key: str = "idle|stop|i-1|1700000000", **kw) -> ActionRecord:
    fields = dict(
        account="main",
        rule="idle",
        action="stop",
        instance_id="i-1",
        instance_name="nb",
        params={"grace": 900},
        facts={"gpu_util_max": 0.4},
        intent_key=key,
        idempotency_key=key,
        state=state,
        reason="idle 45 min",
        planned_at=T0,
        due_at=T0 + timedelta(minutes=15),
        saving_per_hour_usd=Decimal("0.35"),
    )
    fields.update(kw)
    return ActionRecord(**fields)


def test_one_intent_is_planned_once_and_released_when_it_ends_without_acting(
    store: Store,
) -> None:
    (first,) = store.insert_actions([stop()])
    assert store.insert_actions([stop()]) == []  # the key is held
    assert store.held_intents("main") == {"idle|stop|i-1|1700000000"}
    row = store.action(first)
    assert row is not None and row.facts == {"gpu_util_max": 0.4}
    assert row.saving_per_hour_usd == Decimal("0.35")
    aborted = store.transition(row, "aborted", T0, reason="busy again")
    assert aborted is not None and aborted.idempotency_key is None
    assert aborted.finished_at == T0 and aborted.intent_key == "idle|stop|i-1|1700000000"
    assert store.held_intents("main") == set()
    assert len(store.insert_actions([stop()])) == 1  # planned again after the abort
    # a dry run never holds the key
    (dry,) = store.insert_actions([stop("dry_run", key="k2")])
    assert store.action(dry).idempotency_key is None  # type: ignore[union-attr]


def test_the_held_intents_asked_for_are_read_and_no_others(store: Store) -> None:
    """The planner asks which of the firing alerts' intents are held, not for the whole ledger:
    the account's held keys among those asked, in chunks, another account's never."""
    many = [f"idle|stop|i-{n}|1700000000" for n in range(1200)]
    store.insert_actions([stop(key=k, instance_id=k.split("|")[2]) for k in many[::2]])
    store.insert_actions([stop(key="other", account="second")])
    asked = [*many[:1001], "other", "never-planned"]
    assert store.held_intents("main", asked) == set(many[:1001:2])
    assert store.held_intents("main", []) == set()
    assert store.held_intents("second", asked) == {"other"}
    assert store.held_intents("main") == set(many[::2])  # without keys: every held one


def test_a_row_is_claimed_by_one_process_only(store: Store) -> None:
    (ident,) = store.insert_actions([stop()])
    row = store.action(ident)
    assert row is not None
    mine = store.claim(row, "proc-a", T0)
    theirs = store.claim(row, "proc-b", T0)  # read the same version: loses
    assert mine is not None and theirs is None
    assert (mine.state, mine.claimed_by, mine.attempts) == ("executing", "proc-a", 1)
    # the outcome is written only by the holder of the current version
    assert store.transition(row, "succeeded", T0) is None
    done = store.transition(mine, "succeeded", T0 + timedelta(seconds=3), answer={"ok": True})
    assert done is not None and done.answer == {"ok": True}
    assert done.idempotency_key == "idle|stop|i-1|1700000000"  # acted: the key stays held
    assert store.acted_since("main", T0 - timedelta(hours=1)) == 1
    assert store.acted_since("main", T0 + timedelta(hours=1)) == 0
    assert store.acted_since("main", T0 - timedelta(hours=1), rule="other") == 0


def test_reads_newest_first_and_due_in_order(store: Store) -> None:
    store.insert_actions(
        [
            stop(key="a", due_at=T0 + timedelta(minutes=20)),
            stop(key="b", due_at=T0 + timedelta(minutes=5), planned_at=T0 + timedelta(minutes=1)),
        ]
    )
    assert [r.intent_key for r in store.actions("main")] == ["b", "a"]
    due = store.actions(states=["announced"], due_by=T0 + timedelta(minutes=10))
    assert [r.intent_key for r in due] == ["b"]
    with pytest.raises(ValueError):
        store.insert_actions([stop(state="bogus", key="c")])
