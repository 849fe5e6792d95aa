"""The planner: firing alerts of rules with actions -> ledger rows (states, keys, facts,
reasons with figures) and announcements; every guard of issue 9 §4 that applies at planning."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from monitor.actions import STOP_IDLE_GPUS
from monitor.actions.model import StopParams, action_params
from monitor.actions.plan import held_by_silence, intent_key, plan_actions
from monitor.config import ActionSettings
from monitor.rules import (
    BalanceFact,
    EvalResult,
    InMemoryFacts,
    InstanceFact,
    RuleSet,
    Silence,
    evaluate,
    load_rules,
)
from monitor.store import open_store
from monitor.store.testing import pg_url, store_url

T0 = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)

CANONICAL = STOP_IDLE_GPUS


def ruleset(tmp_path: Path, text: str = CANONICAL) -> RuleSet:
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(text))
    return load_rules([path])


def inst(iid: str = "i-1", **kw: Any) -> InstanceFact:
    fields: dict[str, Any] = dict(
        id=iid,
        name=kw.pop("name", "trainer-7"),
        status="running",
        billing_mode="onDemand",
        gpu_count=1,
        last_started_at=T0 - timedelta(hours=3),
        created_at=T0 - timedelta(days=2),
        hourly_cost_usd=Decimal("1.20"),
        keep_data_day=7,
    )
    fields.update(kw)
    return InstanceFact(**fields)


def idle_facts(*instances: InstanceFact, util: float = 0.5, **kw: Any) -> InMemoryFacts:
    """Every instance idle (``util`` %) for the last 2 hours."""
    metrics = {(i.id, "gpu_util"): [(T0 - n * MIN, util) for n in range(0, 120)] for i in instances}
    return InMemoryFacts(
        instance_list={"main": list(instances)},
        metrics=metrics,
        account_names=["main"],
        history_starts={"main": T0 - timedelta(days=10)},
        **kw,
    )


def run(
    rules: RuleSet,
    facts: InMemoryFacts,
    *,
    settings: ActionSettings | None = None,
    held: set[str] | None = None,
    silences: list[Silence] | None = None,
    dry_run: bool = False,
    every_firing: bool = False,
    now: datetime = T0,
) -> tuple[EvalResult, list[Any], list[Any]]:
    result = evaluate(rules, facts, now, {})
    planner = partial(
        plan_actions,
        ruleset=rules,
        settings=settings or ActionSettings(),
        held=lambda account, keys: set(held or ()) & set(keys),
        silences=lambda at: list(silences or ()),
        dry_run=dry_run,
        every_firing=every_firing,
    )
    rows, notices = planner(result, facts, now)
    return result, rows, notices


def test_the_canonical_example_announces_a_stop_with_its_figures(tmp_path: Path) -> None:
    rules = ruleset(tmp_path)
    trainer = inst()
    _, rows, notices = run(rules, idle_facts(trainer))
    (row,) = rows
    assert (row.rule, row.action, row.instance_id, row.state) == (
        "stop-idle-gpus",
        "stop",
        "i-1",
        "announced",
    )
    assert row.due_at == T0 + timedelta(minutes=15) and row.planned_at == T0
    assert row.saving_per_hour_usd == Decimal("1.20")
    assert row.intent_key == row.idempotency_key == "stop-idle-gpus|stop|i-1|2026-11-20T11:00:00Z"
    assert row.params == {"grace": "15m", "include_spot": False}
    assert action_params("stop", row.params) == StopParams(grace=timedelta(minutes=15))
    snap = row.facts["instance"]
    assert snap["status"] == "running" and snap["billing_mode"] == "onDemand"
    assert snap["last_started_at"] == "2026-11-20T11:00:00Z" and snap["keep_data_day"] == 7
    assert snap["hourly_cost_usd"] == 1.2
    assert row.facts["values"]["kind"] == "idle_gpu" and row.facts["values"]["value"] == 0.5
    assert row.reason == (
        "stop at 14:15 UTC unless it becomes busy (saves $1.20/h), because GPU use at most 0.5%"
        " (under 5%) over 45 min, idle for 120 min ($2.40 so far) | stop-idle-gpus: instance"
        " trainer-7 (i-1): value 0.5, threshold 5.0, $1.20/h, $2.40 so far"
    )
    assert not row.dry_run
    (note,) = notices
    assert note.resource_id == "i-1" and note.state == "firing"
    assert note.summary.startswith("will stop trainer-7 at 14:15 UTC unless it becomes busy")
    assert "novita-monitor silence add --rule stop-idle-gpus --instance i-1" in note.summary
    assert "deleted 7 days after the stop" in note.summary
    assert "GPU may not be free" in note.summary


def test_an_intent_is_planned_once_and_after_a_restart_again(tmp_path: Path) -> None:
    rules = ruleset(tmp_path)
    trainer = inst()
    key = intent_key("stop-idle-gpus", "stop", trainer)
    assert run(rules, idle_facts(trainer), held={key})[1] == []
    restarted = replace(trainer, last_started_at=T0 - timedelta(hours=1))
    (row,) = run(rules, idle_facts(restarted), held={key})[1]
    assert row.intent_key != key


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(pg_url() is None, reason="NOVITA_MONITOR_TEST_PG_URL not set"),
        ),
    ],
)
def test_the_ledger_keeps_one_intent_through_the_planner(tmp_path: Path, backend: str) -> None:
    rules = ruleset(tmp_path)
    facts = idle_facts(inst())
    store = open_store(store_url(backend, tmp_path))
    try:
        for minute in range(3):
            now = T0 + minute * MIN
            result = evaluate(rules, facts, now, {})
            rows, _ = plan_actions(
                result,
                facts,
                now,
                ruleset=rules,
                settings=ActionSettings(),
                held=store.held_intents,
            )
            store.insert_actions(rows)
        (only,) = store.actions("main")
        assert only.state == "announced" and only.facts["instance"]["status"] == "running"
        assert only.facts["instance"]["end_time"] is None and only.params["grace"] == "15m"
        assert only.saving_per_hour_usd == Decimal("1.20") and only.due_at == T0 + 15 * MIN
    finally:
        store.close()


def test_only_alerts_firing_in_this_evaluation_act(tmp_path: Path) -> None:
    rules = ruleset(tmp_path)
    trainer = inst()
    facts = idle_facts(trainer)
    result = evaluate(rules, facts, T0, {})
    (state,) = result.states.values()
    stale = replace(state, last_match_at=T0 - MIN)  # held by keep_firing_for or stale data
    rows, _ = plan_actions(
        replace(result, states={state.fingerprint: stale}),
        facts,
        T0,
        ruleset=rules,
        settings=ActionSettings(),
    )
    assert rows == []


@pytest.mark.parametrize(
    ("instance", "reason"),
    [
        (inst(billing_mode="monthly", end_time=T0 + timedelta(days=9)), "saves nothing on prepaid"),
        (inst(billing_mode="spot"), "include_spot: false"),
        (inst(hourly_cost_usd=None), "hourly price is unknown"),
        (inst(billing_mode=None), "billing mode unknown"),
        (inst(labels={"NOVITA_MONITOR_PROTECT": "true"}), "NOVITA_MONITOR_PROTECT=true"),
        (inst(name="prod-db"), "matches 'prod-*' (actions.protect.names)"),
        (inst(name="keep-me"), "excluded by the rule: its name 'keep-me' matches 'keep-*'"),
        (inst("i-excluded"), "excluded by the rule: its id matches 'i-excluded'"),
    ],
)
def test_what_may_not_be_stopped_is_refused_with_the_reason(
    tmp_path: Path, instance: InstanceFact, reason: str
) -> None:
    text = CANONICAL.replace(
        "    actions:", "    exclude: [i-excluded, keep-*]\n    actions:"
    ).replace(
        "when: {idle_gpu: {window: 45m, threshold: 5}}",
        "when: {field: gpu_count, op: gt, value: 0}",
    )
    rules = ruleset(tmp_path, text)
    settings = ActionSettings.model_validate({"protect": {"names": ["prod-*"]}})
    _, rows, notices = run(rules, idle_facts(instance), settings=settings)
    (row,) = rows
    assert row.state == "refused" and reason in row.reason, row.reason
    assert notices == []  # a refused stop announces nothing


def test_spot_with_include_spot_and_a_custom_protect_variable(tmp_path: Path) -> None:
    text = CANONICAL.replace("stop: {grace: 15m}", "stop: {grace: 30m, include_spot: true}")
    rules = ruleset(tmp_path, text)
    settings = ActionSettings.model_validate({"protect": {"env": "KEEP"}})
    spot = inst(billing_mode="spot", labels={"NOVITA_MONITOR_PROTECT": "true"})
    (row,) = run(rules, idle_facts(spot), settings=settings)[1]
    assert row.state == "announced" and row.due_at == T0 + timedelta(minutes=30)
    kept = inst(labels={"KEEP": "TRUE"})
    (row,) = run(rules, idle_facts(kept), settings=settings)[1]
    assert row.state == "refused" and "KEEP=TRUE" in row.reason


def test_dry_run_from_the_flag_the_config_or_the_rule_records_and_announces_nothing(
    tmp_path: Path,
) -> None:
    facts = idle_facts(inst())
    for rules, settings, flag in [
        (ruleset(tmp_path), ActionSettings(), True),
        (ruleset(tmp_path), ActionSettings(dry_run=True), False),
        (ruleset(tmp_path, CANONICAL.replace("    actions:", "    dry_run: true\n    actions:")),
         ActionSettings(), False),
    ]:  # fmt: skip
        _, rows, notices = run(rules, facts, settings=settings, dry_run=flag)
        (row,) = rows
        assert row.state == "dry_run" and row.dry_run and notices == []
        assert row.reason.startswith("dry run, would: stop at 14:15 UTC")
        assert row.due_at == T0 + timedelta(minutes=15)  # shown by plan


def test_the_kill_switch_skips_and_says_what_it_would_do(tmp_path: Path) -> None:
    _, rows, notices = run(
        ruleset(tmp_path), idle_facts(inst()), settings=ActionSettings(enabled=False)
    )
    (row,) = rows
    assert row.state == "skipped" and row.reason.startswith("kill switch (actions.enabled: false)")
    assert notices == []


def test_rows_that_end_without_acting_are_recorded_once_per_notice(tmp_path: Path) -> None:
    rules = ruleset(tmp_path)
    facts = idle_facts(inst())
    first = evaluate(rules, facts, T0, {})
    settings = ActionSettings(dry_run=True)
    assert len(plan_actions(first, facts, T0, ruleset=rules, settings=settings)[0]) == 1
    later = T0 + MIN
    second = evaluate(rules, facts, later, first.states)  # firing, no notice due
    assert second.notifications_due == []
    assert plan_actions(second, facts, later, ruleset=rules, settings=settings)[0] == []
    # plan shows every firing alert
    shown = plan_actions(second, facts, later, ruleset=rules, settings=settings, every_firing=True)
    assert len(shown[0]) == 1


def test_a_silence_on_rule_and_instance_holds_its_actions(tmp_path: Path) -> None:
    rules = ruleset(tmp_path)
    facts = idle_facts(inst(), inst("i-2", name="notebook"))
    hush = Silence("1", T0 + timedelta(hours=1), rule="stop-idle-gpus", resource_id="i-1")
    _, rows, _ = run(rules, facts, silences=[hush])
    assert [r.instance_id for r in rows] == ["i-2"]
    # the act step's check: a silence added after planning holds the row too
    (planned,) = run(rules, idle_facts(inst()))[1]
    assert held_by_silence([hush], planned, T0) is hush
    assert held_by_silence([hush], planned, T0 + timedelta(hours=2)) is None  # it ended
    other = Silence("2", T0 + timedelta(hours=1), rule="other-rule")
    assert held_by_silence([other], planned, T0) is None
    by_label = Silence("3", T0 + timedelta(hours=1), labels={"team": "ml"})
    assert held_by_silence([by_label], planned, T0, labels={"team": "ml"}) is by_label


# --------------------------------------------------------------------------------------------
# money

RENEW = """\
rules:
  - name: renew-used
    resource: instance
    when: {expiring_subscription: {within: 7d}}
    actions:
      - renew: {months: 1}
"""


def sub(**kw: Any) -> InstanceFact:
    fields: dict[str, Any] = dict(
        billing_mode="monthly",
        hourly_cost_usd=None,
        end_time=T0 + timedelta(days=5),
        auto_renew=False,
        monthly_price_usd=Decimal("300"),
        subscription_prices_usd={1: Decimal("300"), 3: Decimal("850")},
        name="sub-1",
    )
    fields.update(kw)
    return inst("s-1", **fields)


def money_facts(instance: InstanceFact, balance: str = "1000", burn: str = "2") -> InMemoryFacts:
    return idle_facts(
        instance,
        balances={"main": BalanceFact(Decimal(balance), T0)},
        burn_rates={"main": Decimal(burn)},
    )


def test_a_renewal_awaits_approval_with_its_figures(tmp_path: Path) -> None:
    _, rows, notices = run(ruleset(tmp_path, RENEW), money_facts(sub()))
    (row,) = rows
    assert row.state == "awaiting_approval" and row.expires_at == T0 + timedelta(hours=24)
    assert row.intent_key == "renew-used|renew|s-1|2026-11-25T14:00:00Z"
    money = row.facts["money"]
    assert money["charge_usd"] == 300.0 and money["balance_usd"] == 1000.0
    assert money["runway_after_charge_hours"] == 350.0  # (1000 - 300) / 2
    # the term it renews, as people read a time (not ISO 8601)
    assert "renew for 1 month ($300.00) the term ending 2026-11-25 14:00 UTC;" in row.reason
    (note,) = notices
    assert "novita-monitor approve ID" in note.summary


def test_approval_none_plans_it_due_now(tmp_path: Path) -> None:
    text = RENEW.replace("renew: {months: 1}", "renew: {months: 3, approval: none}")
    (row,) = run(ruleset(tmp_path, text), money_facts(sub()))[1]
    assert row.state == "planned" and row.due_at == T0 and row.facts["money"]["charge_usd"] == 850


@pytest.mark.parametrize(
    ("instance", "balance", "reason"),
    [
        (sub(), "310", "less than actions.min_runway_after_charge, 24 h"),
        (sub(), "250", "would fall to -$50.00"),
        (
            sub(subscription_prices_usd={3: Decimal("850")}),
            "1000",
            "1 months is not a count the product lists ([3])",
        ),
        (sub(subscription_prices_usd={}), "1000", "month counts the product lists are unknown"),
        (sub(subscription_prices_usd={1: None}), "1000", "price of 1 months is unknown"),
        (sub(auto_renew=True, end_time=T0 + timedelta(days=2)), "1000", "auto-renew is on"),
        (sub(auto_renew=None, end_time=T0 + timedelta(days=2)), "1000", "auto-renew is unknown"),
    ],
)
def test_money_guards_refuse_with_a_notice(
    tmp_path: Path, instance: InstanceFact, balance: str, reason: str
) -> None:
    _, rows, notices = run(ruleset(tmp_path, RENEW), money_facts(instance, balance))
    (row,) = rows
    assert row.state == "refused" and reason in row.reason, row.reason
    (note,) = notices
    assert note.severity == "warning" and "refused" in note.summary


def test_auto_renew_off_within_three_days_may_renew(tmp_path: Path) -> None:
    instance = sub(auto_renew=False, end_time=T0 + timedelta(days=2))
    (row,) = run(ruleset(tmp_path, RENEW), money_facts(instance))[1]
    assert row.state == "awaiting_approval"


def test_renew_min_util_over_its_lookback(tmp_path: Path) -> None:
    text = RENEW.replace("renew: {months: 1}", "renew: {months: 1, min_util: 20, lookback: 1d}")
    rules = ruleset(tmp_path, text)
    (row,) = run(rules, money_facts(sub()))[1]  # 0.5 % over 2 h of a day
    assert row.state == "refused" and "below min_util 20 %" in row.reason


CONVERT = """\
rules:
  - name: convert-steady
    resource: instance
    when: {field: billing_mode, op: eq, value: onDemand}
    actions:
      - convert_to_subscription: {months: 1}
"""


def test_convert_needs_a_subscription_candidate_alert(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="acts only on subscription_candidate alerts"):
        ruleset(tmp_path, CONVERT)
    text = CONVERT.replace(
        "when: {field: billing_mode, op: eq, value: onDemand}",
        "when: {subscription_candidate: {min_history: 1d}}",
    )
    rules = ruleset(tmp_path, text)
    steady = inst(monthly_price_usd=Decimal("300"), subscription_prices_usd={1: Decimal("300")})
    facts = money_facts(steady)
    facts.running = {"i-1": [(T0 - n * MIN, 1.0) for n in range(0, 60 * 24 * 9)]}
    _, rows, _ = run(rules, facts)
    (row,) = rows
    assert row.state == "awaiting_approval", row.reason
    assert "convert to a 1-month subscription ($300.00)" in row.reason
    assert row.intent_key == "convert-steady|convert_to_subscription|i-1|2026-11-20T11:00:00Z"


def test_no_charge_on_stale_balance_data(tmp_path: Path) -> None:
    facts = money_facts(sub())
    facts.stale = {"main": ["balance"]}
    _, rows, notices = run(ruleset(tmp_path, RENEW), facts)
    (row,) = rows
    assert row.state == "refused" and "the balance data is stale" in row.reason
    assert len(notices) == 1


def test_convert_refuses_unknown_running_hours(tmp_path: Path) -> None:
    text = CONVERT.replace(
        "when: {field: billing_mode, op: eq, value: onDemand}",
        "when: {subscription_candidate: {min_history: 30d}}",
    ).replace("convert-steady", "convert-any")
    rules = ruleset(tmp_path, text.replace("    when:", "    on_missing: match\n    when:"))
    steady = inst(monthly_price_usd=Decimal("300"), subscription_prices_usd={1: Decimal("300")})
    # 10 days of history, 30 asked: the hours are missing, and on_missing makes it fire
    (row,) = run(rules, money_facts(steady))[1]
    assert row.state == "refused" and "running hours are unknown" in row.reason
    other = text.replace(
        "when: {subscription_candidate: {min_history: 30d}}",
        "when: {any: [{subscription_candidate: {}}, {field: gpu_count, op: gt, value: 0}]}",
    )
    (row,) = run(ruleset(tmp_path, other), money_facts(steady))[1]
    assert row.state == "refused" and "not a subscription_candidate alert" in row.reason
