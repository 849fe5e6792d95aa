"""The act step's pure parts: success bodies, outcome readings, renewal refusals, protection,
savings arithmetic; and the ledger reads it relies on, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from monitor import economics
from monitor.actions import recheck, verify
from monitor.actions.execute import realized_so_far
from monitor.novita.models import FixedTermBill, Instance
from monitor.store import Store, open_store
from monitor.store.models import ActionRecord
from monitor.store.testing import pg_url, store_url

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
END = T0 + timedelta(days=10)

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


def record(action: str = "stop", state: str = "planned", **kw: Any) -> ActionRecord:
    fields: dict[str, Any] = dict(
        account="main",
        rule="r",
        action=action,
        instance_id="i-1",
        intent_key=f"r|{action}|i-1|{kw.get('key', 'p')}",
        idempotency_key=f"r|{action}|i-1|{kw.pop('key', 'p')}",
        state=state,
        planned_at=T0,
        params={"months": 1},
        facts={"instance": {"end_time": END.isoformat()}},
    )
    fields.update(kw)
    return ActionRecord(**fields)


def instance(**kw: Any) -> Instance:
    data: dict[str, Any] = {"id": "i-1", "name": "nb", "status": "running"}
    data.update(kw)
    return Instance.model_validate(data)


# -- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, error",
    [
        ({}, None),
        ({"code": 0}, None),
        ({"code": "0", "message": "ok"}, None),
        ({"code": 3}, "the answer carries code 3"),
        ({"code": "x"}, "the answer carries code 'x'"),
        ({"reason": "BALANCE_NOT_ENOUGH", "message": "short"}, "reason 'BALANCE_NOT_ENOUGH'"),
        ({"error": "busy"}, "the answer carries error 'busy'"),
        ({"reason": ""}, None),
    ],
)
def test_a_2xx_body_is_a_success_only_without_reason_error_or_a_non_zero_code(
    body: dict[str, Any], error: str | None
) -> None:
    found = verify.answer_error(body)
    if error is None:
        assert found is None
    else:
        assert found is not None and error in found


# -- outcomes read from the instance ------------------------------------------------------------


def test_a_stop_is_carried_out_when_stopping_and_completed_when_exited() -> None:
    row = record(started_at=T0)
    assert not verify.carried_out(row, instance(status="running"))
    assert verify.carried_out(row, instance(status="toStop"))
    assert not verify.completed(row, instance(status="toStop"))
    assert verify.completed(row, instance(status="exited"))
    # stopped then started again by someone: it was carried out
    again = instance(
        status="running", lastStoppedAt=str(int((T0 + timedelta(minutes=1)).timestamp()))
    )
    assert verify.carried_out(row, again) and verify.completed(row, again)
    earlier = instance(
        status="running", lastStoppedAt=str(int((T0 - timedelta(hours=1)).timestamp()))
    )
    assert not verify.carried_out(row, earlier)


def test_a_renew_is_completed_when_end_time_moves_by_the_months_or_a_renewal_bill_exists() -> None:
    row = record("renew", started_at=T0, params={"months": 2})
    moved_one = instance(
        billingMode="monthly", endTime=str(int(economics.months_after(END, 1).timestamp()))
    )
    moved_two = instance(
        billingMode="monthly", endTime=str(int(economics.months_after(END, 2).timestamp()))
    )
    assert not verify.completed(row, moved_one)
    assert verify.completed(row, moved_two)
    same = instance(billingMode="monthly", endTime=str(int(END.timestamp())))
    bill = FixedTermBill.model_validate({"startTime": str(int(END.timestamp())), "ownerID": "i-1"})
    old = FixedTermBill.model_validate(
        {"startTime": str(int((END - timedelta(days=30)).timestamp())), "ownerID": "i-1"}
    )
    assert not verify.completed(row, same, [old])
    assert verify.completed(row, same, [old, bill])


def test_convert_and_auto_renew_outcomes() -> None:
    assert verify.completed(record("convert_to_subscription"), instance(billingMode="monthly"))
    assert not verify.completed(record("convert_to_subscription"), instance(billingMode="onDemand"))
    off = record("set_auto_renew", params={"enabled": False, "months": 1})
    assert verify.completed(off, instance(autoRenew=False))
    assert not verify.completed(off, instance(autoRenew=True))


# -- refusals -----------------------------------------------------------------------------------


def sub(**kw: Any) -> Instance:
    return instance(billingMode="monthly", endTime=str(int(END.timestamp())), **kw)


def test_renewal_refusals() -> None:
    snap = {"end_time": END.isoformat()}
    assert recheck.renewal_refusal(sub(autoRenew=False), snap, [], T0) is None
    moved = {"end_time": (END - timedelta(days=1)).isoformat()}
    assert "endTime moved" in (recheck.renewal_refusal(sub(autoRenew=False), moved, [], T0) or "")
    late = END - timedelta(days=2)
    assert "auto-renew is on" in (
        recheck.renewal_refusal(sub(autoRenew=True), snap, [], late) or ""
    )
    unknown = recheck.renewal_refusal(sub(), snap, [], late)
    assert unknown is not None and "auto-renew is unknown" in unknown
    assert recheck.renewal_refusal(sub(autoRenew=True), snap, [], T0) is None  # not yet in window
    bill = FixedTermBill.model_validate({"startTime": str(int(END.timestamp()))})
    paid = recheck.renewal_refusal(sub(autoRenew=False), snap, [bill], T0)
    assert paid is not None and "renewal bill for this period already exists" in paid
    assert "not a subscription" in (recheck.renewal_refusal(instance(), snap, [], T0) or "")
    assert "lacks end_time" in (recheck.renewal_refusal(sub(autoRenew=False), {}, [], T0) or "")


def test_protection_and_what_may_be_stopped() -> None:
    env = [{"key": "NOVITA_MONITOR_PROTECT", "value": "TRUE"}]
    assert recheck.protection(instance(envs=env), (), "NOVITA_MONITOR_PROTECT")
    off = [{"key": "NOVITA_MONITOR_PROTECT", "value": "false"}]
    assert recheck.protection(instance(envs=off), (), "NOVITA_MONITOR_PROTECT") is None
    assert recheck.protection(instance(name="prod-db"), ("prod-*",), "X")
    assert recheck.protection(instance(name="dev"), ("prod-*",), "X") is None
    assert recheck.not_stoppable(instance(billingMode="onDemand"), False) is None
    assert recheck.not_stoppable(instance(billingMode="spot"), True) is None
    assert "include_spot" in (recheck.not_stoppable(instance(billingMode="spot"), False) or "")
    assert "subscription" in (recheck.not_stoppable(instance(billingMode="monthly"), True) or "")
    stopped = instance(billingMode="onDemand", status="exited")
    assert "not running" in (recheck.not_stoppable(stopped, False) or "")


def test_a_snapshot_without_the_planned_fields_cannot_prove_nothing_changed() -> None:
    why = recheck.changed_since_planning(instance(), {"status": "running"})
    assert why is not None and "lacks billing_mode, last_started_at" in why


# -- savings ------------------------------------------------------------------------------------


def test_savings_are_hours_stopped_times_price() -> None:
    per_hour = Decimal("0.70")
    assert economics.stop_saving(per_hour, T0, T0 + timedelta(hours=3), T0) == Decimal("2.1")
    assert economics.stop_saving(per_hour, T0, None, T0 + timedelta(hours=1)) == Decimal("0.7")
    assert economics.stop_saving(per_hour, T0, T0 - timedelta(hours=1), T0) == Decimal(0)
    assert economics.stop_saving(None, T0, None, T0) is None
    row = record(saving_per_hour_usd=per_hour, saving_since=T0)
    assert realized_so_far(row, T0 + timedelta(minutes=30)) == Decimal("0.35")


def test_months_after_clamps_to_the_end_of_the_month() -> None:
    assert economics.months_after(datetime(2026, 1, 31, tzinfo=UTC), 1) == datetime(
        2026, 2, 28, tzinfo=UTC
    )
    assert economics.months_after(datetime(2028, 1, 31, tzinfo=UTC), 1).day == 29
    assert economics.months_after(datetime(2026, 11, 20, tzinfo=UTC), 3) == datetime(
        2027, 2, 20, tzinfo=UTC
    )


# -- the ledger reads -----------------------------------------------------------------------------


def test_follow_ups_are_recent_successes_and_open_savings(store: Store) -> None:
    ids = store.insert_actions(
        [
            record(key="recent", state="succeeded", finished_at=T0 - timedelta(minutes=2)),
            record(key="old", state="succeeded", finished_at=T0 - timedelta(days=1)),
            record(
                key="open",
                state="succeeded",
                finished_at=T0 - timedelta(days=2),
                saving_since=T0 - timedelta(days=2),
                saving_per_hour_usd=Decimal("0.5"),
            ),
            record(key="failed", state="failed", finished_at=T0),
        ]
    )
    recent, _old, open_, _failed = ids
    assert [r.id for r in store.follow_ups(T0 - timedelta(minutes=10))] == [open_, recent]
    # an unknown outcome stays unfinished; closing a saving keeps the state
    row = store.action(open_)
    assert row is not None
    closed = store.update_savings(row, saving_until=T0, realized_saving_usd=Decimal("24"))
    assert closed is not None and closed.state == "succeeded"
    assert [r.id for r in store.follow_ups(T0 - timedelta(minutes=10))] == [recent]
    (pending,) = store.insert_actions([record(key="unknown")])
    claimed = store.claim(store.action(pending), "me", T0)  # type: ignore[arg-type]
    assert claimed is not None
    unknown = store.transition(claimed, "outcome_unknown", T0, finished_at=None)
    assert unknown is not None and unknown.finished_at is None and unknown.idempotency_key
