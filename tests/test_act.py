"""The act step against the in-process simulator: ledger rows (as the planner writes them) ->
fresh re-checks -> claims -> API calls -> outcomes, reconciliation, verification and savings.

The rows are inserted directly (the planner is another engineer's part); the rule they name is
loaded (its ``when`` is what the stop's re-check judges on fresh metrics). Real SQLite file, the
client on ``httpx.ASGITransport(create_app(sim))``, time on the shared ``ManualClock``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.actions.execute import ActReport, realized_so_far
from monitor.actions.settings import ActSettings
from monitor.app import App
from monitor.clock import ManualClock
from monitor.config import Config
from monitor.sim import FleetSim
from monitor.store.models import ActionRecord
from tests.helpers import ENV, open_app, write_config

RULE = "stop-idle-gpus"
RULES = (
    "rules:\n"
    f"  - name: {RULE}\n"
    "    resource: instance\n"
    "    when: {idle_gpu: {window: 45m, threshold: 5}}\n"
    "  - name: renew-subscriptions\n"
    "    resource: instance\n"
    "    when: {field: billing_mode, op: eq, value: monthly}\n"
)
NOTEBOOK = "demo-notebook"
SUBSCRIPTION = "demo-subscription"
#: credit (1/10000 USD) for renewals: a month of H100 costs more than the demo's 100 h runway
RICH = 5_000 * 10_000


def rules_extra(tmp_path: Path) -> str:
    path = tmp_path / "act-rules.yaml"
    path.write_text(RULES)
    return f"rules: [{path}]\n"


class Tamper(httpx.AsyncBaseTransport):
    """Passes requests to the simulator; ``edit(request, response_body)`` may replace the
    answer (returning ``(status, body)``) after the simulator has carried the request out."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        edit: Callable[[httpx.Request, Any], tuple[int, Any] | None],
    ) -> None:
        self.inner = inner
        self.edit = edit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.startswith("/_sim"):
            return response
        raw = await response.aread()
        try:
            body = json.loads(raw)
        except ValueError:
            return httpx.Response(response.status_code, content=raw)
        changed = self.edit(request, body)
        if changed is None:
            return httpx.Response(response.status_code, json=body)
        status, new_body = changed
        return httpx.Response(status, json=new_body)


def open_tampered(
    tmp_path: Path,
    sim_app: Any,
    clock: ManualClock,
    edit: Callable[[httpx.Request, Any], tuple[int, Any] | None],
) -> App:
    config = Config.load(write_config(tmp_path, extra=rules_extra(tmp_path)), env=ENV)
    return App.open(
        config,
        clock,
        env=ENV,
        transport_factory=lambda _n: Tamper(httpx.ASGITransport(app=sim_app), edit),
    )


@pytest.fixture
async def app(tmp_path: Path, sim_app: Any, clock: ManualClock) -> Any:
    application = open_app(tmp_path, sim_app, clock, extra=rules_extra(tmp_path))
    await application.collect()
    yield application
    await application.aclose()


def posts(sim: FleetSim, action: str, instance_id: str | None = None) -> list[dict[str, Any]]:
    """The simulator's log of POSTs of ``action`` (for ``instance_id``)."""
    return [
        a
        for a in sim.actions
        if a["path"] == action
        and (instance_id is None or (a.get("body") or {}).get("instanceId") == instance_id)
    ]


async def snapshot(app: App, instance_id: str) -> dict[str, Any]:
    """The instance as the planner records it in the row's ``facts``."""
    inst = await app.contexts[0].client.get_instance(instance_id)

    def iso(when: datetime | None) -> str | None:
        return when.isoformat() if when else None

    return {
        "status": inst.status,
        "billing_mode": inst.billing_mode,
        "last_started_at": iso(inst.last_started_at),
        "created_at": iso(inst.created_at),
        "end_time": iso(inst.end_time),
        "auto_renew": inst.auto_renew,
    }


async def plan(
    app: App,
    action: str,
    instance_id: str,
    now: datetime,
    *,
    state: str = "planned",
    due_in: timedelta = timedelta(0),
    rule: str = RULE,
    params: dict[str, Any] | None = None,
    row_instance: str | None = None,
    **kw: Any,
) -> int:
    snap = await snapshot(app, instance_id)
    period = snap["end_time"] if action == "renew" else snap["last_started_at"]
    key = f"{rule}|{action}|{instance_id}|{period}"
    fact = next(f for f in app.facts_at(now).instances("main") if f.id == instance_id)
    fields: dict[str, Any] = dict(
        account="main",
        rule=rule,
        action=action,
        instance_id=row_instance or instance_id,
        instance_name=fact.name,
        params=params if params is not None else ({"months": 1} if action == "renew" else {}),
        facts={"instance": snap, "value": 1.0},
        intent_key=key,
        idempotency_key=key,
        state=state,
        reason=f"{action} planned by {rule}",
        planned_at=now,
        due_at=now + due_in,
        saving_per_hour_usd=fact.hourly_cost_usd if action == "stop" else None,
    )
    fields.update(kw)
    (row_id,) = app.store.insert_actions([ActionRecord(**fields)])
    return row_id


def row(app: App, row_id: int) -> ActionRecord:
    found = app.store.action(row_id)
    assert found is not None
    return found


async def act(app: App, settings: ActSettings | None = None) -> ActReport:
    if settings is None:
        return await app.act()
    from monitor.actions.execute import act as act_step

    return await act_step(
        app.store,
        {c.account: c.client for c in app.contexts},
        app.facts_at,
        settings,
        app.clock.now(),
        by="test",
        ruleset=app.ruleset,
    )


def gpu_samples_before(cut: Callable[[], int]) -> Callable[[httpx.Request, Any], Any]:
    """A hook for :func:`open_tampered`: metrics answers without GPU samples at or after
    ``cut()`` (Unix seconds, read at each request)."""

    def drop(request: httpx.Request, body: Any) -> tuple[int, Any] | None:
        if request.url.path.endswith("/metrics/gpu/instance"):
            limit = cut()
            for series in (body["gpuUtilization"], body["gpuMemUtilization"]):
                series["avg"] = [p for p in series["avg"] if int(p["timestamp"]) < limit]
                for gpu in series["gpuIds"]:
                    gpu["items"] = [p for p in gpu["items"] if int(p["timestamp"]) < limit]
        return None

    return drop


def notices(report: ActReport, severity: str | None = None) -> list[str]:
    return [n.summary for n in report.notices if severity is None or n.severity == severity]


# -- stops ------------------------------------------------------------------------------------


async def test_the_forgotten_notebook_is_stopped_after_its_grace_verified_and_its_saving_closed(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    now = clock.now()
    row_id = await plan(app, "stop", NOTEBOOK, now, state="announced", due_in=timedelta(minutes=15))
    first = await act(app)
    assert first.outcomes == [] and row(app, row_id).state == "announced"  # grace not over
    clock.advance(15 * 60)
    # due, but the metrics (a minute late) do not reach the grace's end yet: it waits
    waited = await act(app)
    assert waited.outcomes == [] and row(app, row_id).state == "announced"
    assert posts(demo_sim, "stop", NOTEBOOK) == []
    clock.advance(60)
    report = await act(app)
    stopped = row(app, row_id)
    assert stopped.state == "succeeded", stopped.reason
    assert len(posts(demo_sim, "stop", NOTEBOOK)) == 1
    assert stopped.claimed_by == app.actor and stopped.attempts == 1
    assert stopped.answer["response"] == {} and stopped.answer["verified"] is None
    assert stopped.saving_since == clock.now()
    per_hour = stopped.saving_per_hour_usd
    assert per_hour is not None and per_hour > 0
    (note,) = notices(report)
    assert "stopped jupyter-notebook (demo-notebook)" in note and RULE in note
    assert "/h while stopped" in note
    assert report.failed is False

    # verification: the simulator's stop takes 60 s; two minutes later it has reached exited
    clock.advance(120)
    await act(app)
    verified = row(app, row_id)
    assert verified.answer["verified"] is True
    assert verified.answer["observed"]["status"] == "exited"
    # still stopped: the saving accrues (hours stopped x price)
    assert realized_so_far(verified, clock.now()) == pytest.approx(per_hour * Decimal(120) / 3600)

    # someone starts it again two hours after the stop: the saving closes at its lastStartedAt
    clock.advance(2 * 3600 - 120)
    await app.contexts[0].client.start_instance(NOTEBOOK)
    restarted_at = clock.now()
    clock.advance(60)
    await app.collect(["instances"])
    await act(app)
    closed = row(app, row_id)
    assert closed.saving_until is not None
    assert abs(closed.saving_until - restarted_at) <= timedelta(seconds=60)
    hours = (closed.saving_until - stopped.saving_since).total_seconds() / 3600
    assert closed.realized_saving_usd == pytest.approx(
        per_hour * Decimal(str(hours)), rel=Decimal("1e-6")
    )
    assert realized_so_far(closed, clock.now() + timedelta(days=1)) == closed.realized_saving_usd


async def test_an_instance_that_becomes_busy_during_the_grace_is_not_stopped(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    row_id = await plan(
        app, "stop", NOTEBOOK, clock.now(), state="announced", due_in=timedelta(minutes=15)
    )
    clock.advance(5 * 60)
    demo_sim.set_profile(NOTEBOOK, "trainer")  # someone picked the notebook up again
    clock.advance(10 * 60 + 60)
    report = await act(app)
    aborted = row(app, row_id)
    assert aborted.state == "aborted"
    assert "no longer holds on fresh data" in aborted.reason and "busy" in aborted.reason
    assert aborted.idempotency_key is None  # released: a later idle stretch may plan again
    assert posts(demo_sim, "stop") == []
    (note,) = notices(report)
    assert "not done" in note and "busy" in note


async def test_work_resumed_in_the_graces_last_minute_is_seen_before_the_stop(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    """The metrics arrive a minute late: at the grace's end the newest sample is a minute
    old, and work that resumed in between is not in it. The stop waits for a sample taken at
    or after the grace's end, and that sample shows the work."""
    row_id = await plan(
        app, "stop", NOTEBOOK, clock.now(), state="announced", due_in=timedelta(minutes=15)
    )
    clock.advance(15 * 60 - 30)
    demo_sim.set_profile(NOTEBOOK, "trainer")  # a job starts 30 s before the grace ends
    clock.advance(30)
    waited = await act(app)  # due: the newest sample (a minute old) is still idle
    assert waited.outcomes == [] and row(app, row_id).state == "announced"
    (wait,) = waited.waiting  # what ``once`` prints for it
    assert (wait.action_id, wait.state) == (row_id, "waiting")
    assert "waiting for a sample taken at or after" in wait.reason
    clock.advance(60)
    await act(app)
    aborted = row(app, row_id)
    assert aborted.state == "aborted" and "busy" in aborted.reason, aborted.reason
    assert posts(demo_sim, "stop") == []


async def test_a_stop_waiting_for_samples_that_never_come_is_aborted_as_stale(
    tmp_path: Path, sim_app: Any, demo_sim: FleetSim, clock: ManualClock
) -> None:
    """The wait for a sample past the grace's end is bounded by ``metrics_max_age``."""
    frozen_at = int((clock.now() + timedelta(minutes=14)).timestamp())
    app = open_tampered(tmp_path, sim_app, clock, gpu_samples_before(lambda: frozen_at))
    try:
        await app.collect()
        row_id = await plan(
            app, "stop", NOTEBOOK, clock.now(), state="announced", due_in=timedelta(minutes=15)
        )
        for step in (15 * 60, 60):  # due at +15 min; the newest sample stays at +13 min
            clock.advance(step)
            await act(app)
            assert row(app, row_id).state == "announced"  # waiting: 2, then 3 minutes old
        clock.advance(60)  # +17 min: the newest sample is now 4 minutes old
        await act(app)
        aborted = row(app, row_id)
        assert aborted.state == "aborted" and "stale or missing" in aborted.reason
        assert posts(demo_sim, "stop") == []
    finally:
        await app.aclose()


async def test_a_stop_is_aborted_when_the_instance_was_restarted_since_planning(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    row_id = await plan(app, "stop", NOTEBOOK, clock.now())
    snap = row(app, row_id).facts["instance"]
    moved = dict(snap, last_started_at=(clock.now() - timedelta(hours=9)).isoformat())
    app.store.transition(row(app, row_id), "planned", clock.now(), facts={"instance": moved})
    await act(app)
    aborted = row(app, row_id)
    assert aborted.state == "aborted" and "lastStartedAt changed" in aborted.reason
    assert posts(demo_sim, "stop") == []


async def test_stale_metrics_abort_a_stop(
    tmp_path: Path, sim_app: Any, demo_sim: FleetSim, clock: ManualClock
) -> None:
    ten_minutes_ago = gpu_samples_before(
        lambda: int((clock.now() - timedelta(minutes=10)).timestamp())
    )
    app = open_tampered(tmp_path, sim_app, clock, ten_minutes_ago)
    try:
        await app.collect()
        row_id = await plan(app, "stop", NOTEBOOK, clock.now())
        await act(app)
        aborted = row(app, row_id)
        assert aborted.state == "aborted" and "stale or missing" in aborted.reason
        assert posts(demo_sim, "stop") == []
    finally:
        await app.aclose()


async def test_protected_subscription_and_spot_instances_are_never_stopped(
    tmp_path: Path, sim_app: Any, demo_sim: FleetSim, clock: ManualClock
) -> None:
    def protect_error_instance(request: httpx.Request, body: Any) -> tuple[int, Any] | None:
        if request.url.path.endswith("/gpu/instance") and body.get("id") == "demo-error":
            body["envs"] = [
                *body.get("envs", []),
                {"key": "NOVITA_MONITOR_PROTECT", "value": "true"},
            ]
        return None

    app = open_tampered(tmp_path, sim_app, clock, protect_error_instance)
    try:
        await app.collect()
        now = clock.now()
        protected = await plan(app, "stop", "demo-error", now)
        by_name = await plan(app, "stop", NOTEBOOK, now)
        subscription = await plan(app, "stop", "demo-lapsing", now)
        spot = await plan(app, "stop", "demo-multigpu", now)
        settings = ActSettings(protect_names=("jupyter-*",), max_per_cycle=10)
        report = await act(app, settings)
        states = {i: row(app, i).state for i in (protected, by_name, subscription, spot)}
        assert set(states.values()) == {"refused"}, {i: row(app, i).reason for i in states}
        assert "NOVITA_MONITOR_PROTECT=true" in row(app, protected).reason
        assert "matches 'jupyter-*'" in row(app, by_name).reason
        assert "subscription" in row(app, subscription).reason
        assert "include_spot" in row(app, spot).reason
        assert posts(demo_sim, "stop") == []
        assert len(notices(report, "warning")) == 4
    finally:
        await app.aclose()


async def test_the_breaker_trips_at_its_limit_with_one_alert(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    now = clock.now()
    first = await plan(app, "stop", NOTEBOOK, now)
    second = await plan(app, "stop", "demo-error", now)
    report = await act(app, ActSettings(max_per_cycle=1))
    assert row(app, first).state == "succeeded"
    skipped = row(app, second)
    assert skipped.state == "skipped" and skipped.reason.startswith("breaker: max_per_cycle 1")
    assert len(posts(demo_sim, "stop")) == 1
    (alarm,) = notices(report, "critical")
    assert "breaker tripped" in alarm and "1 action(s) skipped" in alarm
    assert report.breakers == {"main": ["max_per_cycle 1 reached in this act step"]}


async def test_the_hourly_breakers_count_a_rolling_hour(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    now = clock.now()
    done = [
        ActionRecord(
            account="main", rule=RULE, action="stop", instance_id=f"old-{i}", intent_key=f"k{i}",
            idempotency_key=f"k{i}", state="succeeded", planned_at=now - timedelta(minutes=50),
            started_at=now - timedelta(minutes=50 - i),
        )
        for i in range(5)
    ]  # fmt: skip
    app.store.insert_actions(done)
    row_id = await plan(app, "stop", NOTEBOOK, now)
    report = await act(app)  # max_per_rule_per_hour: 5 in the last hour
    assert row(app, row_id).state == "skipped"
    assert "max_per_rule_per_hour 5" in row(app, row_id).reason
    assert len(notices(report, "critical")) == 1
    # an hour after the oldest, the window has moved on: the rule may act again
    clock.advance(15 * 60)
    again = await plan(app, "stop", NOTEBOOK, clock.now())
    await act(app)
    assert row(app, again).state == "succeeded"
    assert len(posts(demo_sim, "stop")) == 1


async def test_kill_switch_and_dry_run_call_nothing(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    first = await plan(app, "stop", NOTEBOOK, clock.now())
    await act(app, ActSettings(enabled=False))
    assert row(app, first).state == "skipped" and "kill switch" in row(app, first).reason
    second = await plan(app, "stop", NOTEBOOK, clock.now())
    await act(app, ActSettings(dry_run=True))
    assert row(app, second).state == "skipped" and "dry run" in row(app, second).reason
    assert posts(demo_sim, "stop") == []


async def test_a_stop_that_never_completes_raises_an_alert(
    tmp_path: Path, sim_app: Any, demo_sim: FleetSim, clock: ManualClock
) -> None:
    stuck: set[str] = set()

    def never_exits(request: httpx.Request, body: Any) -> tuple[int, Any] | None:
        if request.url.path.endswith("/instance/stop"):
            stuck.add(json.loads(request.content)["instanceId"])
        if request.url.path.endswith("/gpu/instance") and body.get("id") in stuck:
            body["status"] = "stopping"
            body["lastStoppedAt"] = ""
        return None

    app = open_tampered(tmp_path, sim_app, clock, never_exits)
    try:
        await app.collect()
        row_id = await plan(app, "stop", NOTEBOOK, clock.now())
        await act(app)
        assert row(app, row_id).state == "succeeded"
        clock.advance(3 * 60)
        quiet = await act(app)
        assert row(app, row_id).answer["verified"] is None and quiet.notices == []
        clock.advance(3 * 60)
        report = await act(app)
        unverified = row(app, row_id)
        assert unverified.answer["verified"] is False
        (alarm,) = notices(report, "critical")
        assert "not verified: expected the instance to reach exited within 5 min" in alarm
        clock.advance(60)
        assert (await act(app)).notices == []  # said once
    finally:
        await app.aclose()


async def test_a_2xx_answer_with_an_error_body_is_a_failure(
    tmp_path: Path, sim_app: Any, demo_sim: FleetSim, clock: ManualClock
) -> None:
    def error_body(request: httpx.Request, body: Any) -> tuple[int, Any] | None:
        if request.url.path.endswith("/instance/stop"):
            return 200, {"code": 3, "reason": "OPERATION_LIMIT", "message": "try later"}
        return None

    app = open_tampered(tmp_path, sim_app, clock, error_body)
    try:
        await app.collect()
        row_id = await plan(app, "stop", NOTEBOOK, clock.now())
        report = await act(app)
        failed = row(app, row_id)
        assert failed.state == "failed" and "OPERATION_LIMIT" in failed.reason
        assert failed.answer["response"]["code"] == 3
        assert report.failed is True and len(notices(report, "critical")) == 1
        # nothing was stopped and a second try cannot double a stop: the intent is released,
        # so the idle notebook's alert plans it again (a new row, its own grace)
        assert failed.idempotency_key is None
        assert failed.intent_key not in app.store.held_intents("main")
        again = await plan(app, "stop", NOTEBOOK, clock.now())
        assert again != row_id and row(app, again).state == "planned"
    finally:
        await app.aclose()


# -- renewals ---------------------------------------------------------------------------------


async def test_a_renew_answered_balance_not_enough_fails_once_without_a_retry_storm(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    demo_sim.top_up(-demo_sim.balance_10k() + 10_000)  # $1 left: a month of H100 is more
    row_id = await plan(app, "renew", SUBSCRIPTION, clock.now(), rule="renew-subscriptions")
    report = await act(app)
    failed = row(app, row_id)
    assert failed.state == "failed" and "BALANCE_NOT_ENOUGH" in failed.reason
    assert failed.answer["error"]["reason"] == "BALANCE_NOT_ENOUGH"
    assert len(notices(report, "critical")) == 1 and report.failed
    # a charge is planned once per period: a failed renewal keeps its intent
    assert failed.idempotency_key is not None
    assert failed.intent_key in app.store.held_intents("main")
    for _ in range(3):
        clock.advance(60)
        later = await act(app)
        assert later.notices == [] and later.outcomes == []
    assert len(posts(demo_sim, "renewInstance")) == 1


async def test_a_renew_is_paid_once_and_verified(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    demo_sim.top_up(RICH)
    before = await snapshot(app, SUBSCRIPTION)
    row_id = await plan(app, "renew", SUBSCRIPTION, clock.now(), rule="renew-subscriptions")
    report = await act(app)
    assert row(app, row_id).state == "succeeded", row(app, row_id).reason
    assert "renewed" in notices(report, "info")[0]
    assert row(app, row_id).answer["verified"] is True  # the simulator renews at once
    after = await snapshot(app, SUBSCRIPTION)
    assert after["end_time"] > before["end_time"]
    # the same intent cannot be planned again while the row holds its key
    assert app.store.insert_actions([replace_state(row(app, row_id))]) == []
    assert len(posts(demo_sim, "renewInstance")) == 1


def replace_state(record: ActionRecord) -> ActionRecord:
    fields = {k: getattr(record, k) for k in ActionRecord.model_fields if k != "id"}
    fields.update(state="planned", version=0)
    return ActionRecord(**fields)


async def test_a_renew_within_auto_renews_window_is_refused(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    await app.contexts[0].client.set_auto_renew([SUBSCRIPTION], True, 1)
    clock.advance(3600)  # endTime is now less than 3 days away
    row_id = await plan(app, "renew", SUBSCRIPTION, clock.now(), rule="renew-subscriptions")
    report = await act(app)
    refused = row(app, row_id)
    assert refused.state == "refused"
    assert "auto-renew is on" in refused.reason and "within 3 days" in refused.reason
    assert posts(demo_sim, "renewInstance") == []
    assert len(notices(report, "warning")) == 1


async def test_a_renew_is_refused_when_end_time_moved_since_planning(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    demo_sim.top_up(RICH)
    row_id = await plan(app, "renew", SUBSCRIPTION, clock.now(), rule="renew-subscriptions")
    await app.contexts[0].client.renew_instance(SUBSCRIPTION, 1)  # renewed by hand meanwhile
    await act(app)
    assert row(app, row_id).state == "refused"
    assert "endTime moved since planning" in row(app, row_id).reason
    assert len(posts(demo_sim, "renewInstance")) == 1  # the hand's, not ours


async def test_a_renew_is_refused_when_a_renewal_bill_for_the_period_exists(
    tmp_path: Path, sim_app: Any, demo_sim: FleetSim, clock: ManualClock
) -> None:
    # the platform charged the renewal (the bill exists) but get-instance still shows the old
    # endTime (a lagging read): the bill alone must stop a second payment
    old_end: dict[str, str] = {}

    def lagging_end_time(request: httpx.Request, body: Any) -> tuple[int, Any] | None:
        if request.url.path.endswith("/gpu/instance") and body.get("id") == SUBSCRIPTION:
            old_end.setdefault("endTime", body["endTime"])
            body["endTime"] = old_end["endTime"]
        return None

    demo_sim.top_up(RICH)
    app = open_tampered(tmp_path, sim_app, clock, lagging_end_time)
    try:
        await app.collect()
        row_id = await plan(app, "renew", SUBSCRIPTION, clock.now(), rule="renew-subscriptions")
        await app.contexts[0].client.renew_instance(SUBSCRIPTION, 1)
        await act(app)
        refused = row(app, row_id)
        assert refused.state == "refused", refused.reason
        assert "a renewal bill for this period already exists" in refused.reason
        assert len(posts(demo_sim, "renewInstance")) == 1
    finally:
        await app.aclose()


async def test_a_renew_answered_5xx_after_being_carried_out_is_reconciled_by_reading(
    tmp_path: Path, sim_app: Any, demo_sim: FleetSim, clock: ManualClock
) -> None:
    def lost_answer(request: httpx.Request, body: Any) -> tuple[int, Any] | None:
        if request.url.path.endswith("/renewInstance"):
            return 500, {"code": 500, "reason": "UNKNOWN", "message": "gateway lost it"}
        return None

    demo_sim.top_up(RICH)
    app = open_tampered(tmp_path, sim_app, clock, lost_answer)
    try:
        await app.collect()
        before = await snapshot(app, SUBSCRIPTION)
        row_id = await plan(app, "renew", SUBSCRIPTION, clock.now(), rule="renew-subscriptions")
        report = await act(app)
        unknown = row(app, row_id)
        assert unknown.state == "outcome_unknown" and report.failed
        assert len(notices(report, "critical")) == 1
        assert len(posts(demo_sim, "renewInstance")) == 1  # carried out, once, not retried
        clock.advance(60)
        second = await act(app)
        done = row(app, row_id)
        assert done.state == "succeeded" and done.answer["reconciled"] is True
        assert done.answer["observed"]["end_time"] > before["end_time"]
        assert "reading the instance shows it was carried out" in notices(second)[0]
        assert len(posts(demo_sim, "renewInstance")) == 1
    finally:
        await app.aclose()


async def test_a_crash_between_intent_and_outcome_is_reconciled_never_called_again(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    # crash after the claim, before the call: the renewal never went out
    row_id = await plan(app, "renew", SUBSCRIPTION, clock.now(), rule="renew-subscriptions")
    assert app.store.claim(row(app, row_id), "crashed-process", clock.now()) is not None
    await act(app)
    assert row(app, row_id).state == "executing"  # may still be in flight elsewhere
    clock.advance(150)
    await act(app)
    assert row(app, row_id).state == "outcome_unknown"  # not seen yet: waits, calls nothing
    clock.advance(5 * 60)
    report = await act(app)
    failed = row(app, row_id)
    assert failed.state == "failed" and "not carried out" in failed.reason
    assert failed.reason.endswith("(planned: renew planned by renew-subscriptions)")
    assert failed.reason.count("planned:") == 1
    assert "not called again" in notices(report, "critical")[0]
    assert posts(demo_sim, "renewInstance") == []

    # crash after the call went out, before the outcome was recorded: succeeded by reading
    other = await plan(app, "stop", NOTEBOOK, clock.now())
    claimed = app.store.claim(row(app, other), "crashed-process", clock.now())
    assert claimed is not None
    await app.contexts[0].client.stop_instance(NOTEBOOK)
    clock.advance(150)
    await act(app)
    reconciled = row(app, other)
    assert reconciled.state == "succeeded" and reconciled.answer["reconciled"] is True
    assert reconciled.saving_since is not None
    assert len(posts(demo_sim, "stop", NOTEBOOK)) == 1


# -- approvals ----------------------------------------------------------------------------------


async def test_unapproved_actions_expire_and_approved_ones_run(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    now = clock.now()
    waiting = await plan(
        app, "renew", SUBSCRIPTION, now, state="awaiting_approval", rule="renew-subscriptions",
        due_at=None, expires_at=now + timedelta(hours=24),
    )  # fmt: skip
    clock.advance(23 * 3600)
    await act(app)
    assert row(app, waiting).state == "awaiting_approval"
    clock.advance(3600)
    await act(app)
    assert row(app, waiting).state == "expired" and row(app, waiting).idempotency_key is None
    assert posts(demo_sim, "renewInstance") == []


def test_settings_reject_negative_limits() -> None:
    with pytest.raises(ValueError, match="max_per_hour"):
        ActSettings(max_per_hour=-1)
    section = type("S", (), {"max_per_cycle": 7, "protect": type("P", (), {"names": ["a*"]})()})
    assert ActSettings.from_section(section()) == replace(
        ActSettings(), max_per_cycle=7, protect_names=("a*",)
    )


async def test_the_busy_trainer_is_never_stopped_data_loading_dips_included(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    # the trainer dips below 5 % while loading data; over the rule's 45 min it is busy
    stopped = []
    for _ in range(6):
        row_id = await plan(app, "stop", "demo-trainer", clock.now())
        await act(app)
        stopped.append(row(app, row_id).state)
        assert "the condition no longer holds on fresh data" in row(app, row_id).reason
        clock.advance(10 * 60)
    assert stopped == ["aborted"] * 6
    assert posts(demo_sim, "stop") == []


async def test_one_failing_action_never_stops_the_others(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    demo_sim.top_up(-demo_sim.balance_10k() + 10_000)
    renew = await plan(app, "renew", SUBSCRIPTION, clock.now(), rule="renew-subscriptions")
    gone = await plan(app, "stop", NOTEBOOK, clock.now(), row_instance="no-such-instance")
    stop = await plan(app, "stop", NOTEBOOK, clock.now(), idempotency_key="second-key")
    report = await act(app)
    assert row(app, renew).state == "failed"
    assert row(app, gone).state == "aborted" and "gone" in row(app, gone).reason
    assert row(app, stop).state == "succeeded"
    assert report.failed and len(posts(demo_sim, "stop")) == 1


async def test_a_silence_added_during_the_grace_holds_the_stop(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    row_id = await plan(
        app, "stop", NOTEBOOK, clock.now(), state="announced", due_in=timedelta(minutes=15)
    )
    clock.advance(5 * 60)
    # what the announcement tells the user to do to keep it
    app.store.add_silence(
        starts_at=clock.now(),
        ends_at=clock.now() + timedelta(hours=4),
        created_at=clock.now(),
        reason="still using it",
        rule=RULE,
        resource_id=NOTEBOOK,
    )
    clock.advance(10 * 60)
    report = await act(app)  # through App.act: the store's silences
    held = row(app, row_id)
    assert held.state == "skipped" and "silenced" in held.reason and "still using it" in held.reason
    assert posts(demo_sim, "stop") == []
    (note,) = notices(report)
    assert "held: silenced" in note


async def test_an_unreachable_api_aborts_without_holding_the_intent(
    tmp_path: Path, sim_app: Any, demo_sim: FleetSim, clock: ManualClock
) -> None:
    def refuse_connections(request: httpx.Request, body: Any) -> tuple[int, Any] | None:
        return None

    class Unreachable(Tamper):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/instance/stop"):
                raise httpx.ConnectError("connection refused", request=request)
            return await super().handle_async_request(request)

    config = Config.load(write_config(tmp_path, extra=rules_extra(tmp_path)), env=ENV)
    app = App.open(
        config,
        clock,
        env=ENV,
        transport_factory=lambda _n: Unreachable(
            httpx.ASGITransport(app=sim_app), refuse_connections
        ),
    )
    for ctx in app.contexts:  # no real backoff sleeps between the client's connect retries
        ctx.client.retry = replace(ctx.client.retry, sleep=no_sleep)
    try:
        await app.collect()
        row_id = await plan(app, "stop", NOTEBOOK, clock.now())
        await act(app)
        aborted = row(app, row_id)
        assert aborted.state == "aborted" and "not sent" in aborted.reason
        assert aborted.idempotency_key is None  # a later plan may try again
        assert posts(demo_sim, "stop") == []
    finally:
        await app.aclose()


async def no_sleep(_seconds: float) -> None:
    return None


async def test_start_convert_and_auto_renew_are_called_once_and_verified(
    app: App, demo_sim: FleetSim, clock: ManualClock
) -> None:
    demo_sim.top_up(RICH)
    now = clock.now()
    start = await plan(app, "start", "demo-stopped", now)
    convert = await plan(app, "convert_to_subscription", "demo-allmonth", now, params={"months": 1})
    auto = await plan(
        app, "set_auto_renew", SUBSCRIPTION, now, params={"months": 1, "enabled": True}
    )
    report = await act(app)
    assert {row(app, i).state for i in (start, convert, auto)} == {"succeeded"}, [
        row(app, i).reason for i in (start, convert, auto)
    ]
    assert len(notices(report, "info")) == 3
    assert row(app, convert).answer["verified"] is True
    assert row(app, auto).answer["verified"] is True
    assert row(app, start).answer["verified"] is None  # starting takes the simulator 30 s
    clock.advance(60)
    await act(app)
    assert row(app, start).answer["verified"] is True
    assert row(app, start).answer["observed"]["status"] == "running"
    calls = [a["path"] for a in demo_sim.actions]
    assert sorted(calls) == ["setAutoRenew", "start", "transToMonthlyInstance"]


async def test_a_call_cut_by_a_shutdown_is_recorded_outcome_unknown(
    tmp_path: Path, sim_app: Any, demo_sim: FleetSim, clock: ManualClock
) -> None:
    entered = asyncio.Event()

    class Hanging(Tamper):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/instance/stop"):
                entered.set()
                await asyncio.Event().wait()  # never answers
            return await super().handle_async_request(request)

    config = Config.load(write_config(tmp_path, extra=rules_extra(tmp_path)), env=ENV)
    app = App.open(
        config,
        clock,
        env=ENV,
        transport_factory=lambda _n: Hanging(httpx.ASGITransport(app=sim_app), lambda r, b: None),
    )
    try:
        await app.collect()
        row_id = await plan(app, "stop", NOTEBOOK, clock.now())
        task = asyncio.create_task(app.act())
        await asyncio.wait_for(entered.wait(), timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cut = row(app, row_id)
        assert cut.state == "outcome_unknown" and "cut by a shutdown" in cut.reason
    finally:
        await app.aclose()
