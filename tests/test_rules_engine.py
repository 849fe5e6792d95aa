"""The engine and the alert lifecycle: for, repeat, resolve, hysteresis, restarts, silences,
stale-data inhibition and missing data, all driven by explicit ``now`` values."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from monitor.notify.model import Notice
from monitor.rules import (
    AlertState,
    BalanceFact,
    EvalResult,
    InMemoryFacts,
    InstanceFact,
    RuleSet,
    Silence,
    evaluate,
    fingerprint,
    load_rules,
)

T0 = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)

BALANCE_RULE = """\
rules:
  - name: low
    resource: account
    when: {low_balance: {usd: 10}}
    severity: warning
    repeat_interval: 4h
"""


def rules(tmp_path: Path, text: str = BALANCE_RULE) -> RuleSet:
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(text))
    return load_rules([path])


def with_extra(text: str, extra: str) -> str:
    return text.rstrip("\n") + "\n" + textwrap.indent(textwrap.dedent(extra), "    ")


def balance(usd: float | None, stale: list[str] | None = None) -> InMemoryFacts:
    return InMemoryFacts(
        balances={"acme": BalanceFact(Decimal(str(usd)), T0)} if usd is not None else {},
        burn_rates={"acme": Decimal(1)},
        stale={"acme": stale} if stale else {},
        account_names=["acme"],
    )


class Run:
    """Evaluate repeatedly, feeding states back as the daemon does."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self.states: dict[str, AlertState] = {}
        self.silences: list[Silence] = []

    def at(self, when: datetime, facts: InMemoryFacts) -> EvalResult:
        result = evaluate(self.ruleset, facts, when, self.states, self.silences)
        self.states = result.states
        return result

    def state(self, rule: str = "low", resource: str = "acme", kind: str = "account") -> str:
        st = self.states.get(fingerprint("acme", rule, kind, resource))
        return st.state if st else "absent"


def told(result: EvalResult) -> list[tuple[str, str]]:
    return [(n.rule, n.state) for n in result.notifications_due]


def test_fires_at_the_first_evaluation_and_notifies_once(tmp_path: Path) -> None:
    run = Run(rules(tmp_path))
    first = run.at(T0, balance(5))
    assert run.state() == "firing" and told(first) == [("low", "firing")]
    (transition,) = first.transitions
    assert (transition.from_state, transition.to_state) == ("inactive", "firing")
    assert told(run.at(T0 + MIN, balance(5))) == []
    assert told(run.at(T0 + 2 * MIN, balance(4))) == []


def test_for_holds_pending_then_fires(tmp_path: Path) -> None:
    run = Run(rules(tmp_path, with_extra(BALANCE_RULE, "for: 5m")))
    assert told(run.at(T0, balance(5))) == [] and run.state() == "pending"
    assert told(run.at(T0 + 4 * MIN, balance(5))) == [] and run.state() == "pending"
    assert told(run.at(T0 + 5 * MIN, balance(5))) == [("low", "firing")]
    assert run.state() == "firing"


def test_pending_that_clears_goes_inactive_without_notice(tmp_path: Path) -> None:
    run = Run(rules(tmp_path, with_extra(BALANCE_RULE, "for: 5m")))
    run.at(T0, balance(5))
    result = run.at(T0 + 2 * MIN, balance(50))
    assert run.state() == "inactive" and told(result) == []
    # a new episode starts the `for` clock again
    run.at(T0 + 3 * MIN, balance(5))
    assert told(run.at(T0 + 7 * MIN, balance(5))) == [] and run.state() == "pending"


def test_repeat_interval_reminds_and_survives_a_restart(tmp_path: Path) -> None:
    ruleset = rules(tmp_path)
    run = Run(ruleset)
    run.at(T0, balance(5))
    saved = dict(run.states)  # what the store persisted
    restarted = Run(ruleset)
    restarted.states = saved
    assert told(restarted.at(T0 + 10 * MIN, balance(5))) == []  # no re-send after a restart
    assert told(restarted.at(T0 + 4 * 60 * MIN - MIN, balance(5))) == []
    reminder = restarted.at(T0 + 4 * 60 * MIN, balance(5))
    assert told(reminder) == [("low", "firing")] and reminder.notifications_due[0].reminder
    assert told(restarted.at(T0 + 5 * 60 * MIN, balance(5))) == []


def test_repeat_interval_zero_never_repeats(tmp_path: Path) -> None:
    run = Run(rules(tmp_path, BALANCE_RULE.replace("repeat_interval: 4h", "repeat_interval: 0")))
    run.at(T0, balance(5))
    assert told(run.at(T0 + 48 * 60 * MIN, balance(5))) == []


def test_resolve_notifies_and_keep_firing_for_delays_it(tmp_path: Path) -> None:
    run = Run(rules(tmp_path, with_extra(BALANCE_RULE, "keep_firing_for: 10m")))
    run.at(T0, balance(5))
    assert told(run.at(T0 + MIN, balance(50))) == [] and run.state() == "firing"
    assert told(run.at(T0 + 9 * MIN, balance(50))) == [] and run.state() == "firing"
    resolved = run.at(T0 + 10 * MIN, balance(50))  # 10 min after it last held
    assert told(resolved) == [("low", "resolved")] and run.state() == "resolved"
    note = resolved.notifications_due[0]
    assert note.resolved_at == T0 + 10 * MIN and note.firing_since == T0
    # firing again is a new episode with a new firing notice
    assert told(run.at(T0 + 12 * MIN, balance(5))) == [("low", "firing")]


def test_a_match_during_keep_firing_for_extends_it(tmp_path: Path) -> None:
    run = Run(rules(tmp_path, with_extra(BALANCE_RULE, "keep_firing_for: 10m")))
    run.at(T0, balance(5))
    run.at(T0 + 5 * MIN, balance(50))
    run.at(T0 + 8 * MIN, balance(5))
    run.at(T0 + 16 * MIN, balance(50))
    assert run.state() == "firing"
    run.at(T0 + 18 * MIN, balance(50))
    assert run.state() == "resolved"


def test_clear_threshold_hysteresis_prevents_flapping(tmp_path: Path) -> None:
    run = Run(rules(tmp_path))
    notes = []
    for minute, usd in enumerate([9.5, 10.2, 9.8, 10.9, 9.9, 10.5]):
        notes += told(run.at(T0 + minute * MIN, balance(usd)))
    assert notes == [("low", "firing")] and run.state() == "firing"
    assert told(run.at(T0 + 10 * MIN, balance(11.5))) == [("low", "resolved")]


def test_severity_escalation_notifies(tmp_path: Path) -> None:
    text = """\
    rules:
      - name: low
        resource: account
        when:
          low_balance:
            levels: [{usd: 10, severity: warning}, {usd: 3, severity: critical}]
    """
    run = Run(rules(tmp_path, text))
    assert told(run.at(T0, balance(8))) == [("low", "firing")]
    escalated = run.at(T0 + MIN, balance(2))
    assert told(escalated) == [("low", "firing")]
    assert escalated.notifications_due[0].severity == "critical"
    assert told(run.at(T0 + 2 * MIN, balance(3.1))) == []  # holds critical inside the band
    assert run.states[fingerprint("acme", "low", "account", "acme")].severity == "critical"


def test_missing_data_neither_fires_nor_resolves(tmp_path: Path) -> None:
    run = Run(rules(tmp_path))
    assert told(run.at(T0, balance(None))) == [] and run.state() == "absent"
    run.at(T0 + MIN, balance(5))
    result = run.at(T0 + 2 * MIN, balance(None))
    assert run.state() == "firing" and told(result) == [] and result.transitions == []


@pytest.mark.parametrize(
    ("on_missing", "expected"), [("match", "firing"), ("no_match", "resolved")]
)
def test_on_missing_can_say_otherwise(tmp_path: Path, on_missing: str, expected: str) -> None:
    run = Run(rules(tmp_path, with_extra(BALANCE_RULE, f"on_missing: {on_missing}")))
    run.at(T0, balance(5) if expected == "resolved" else balance(None))
    run.at(T0 + MIN, balance(None))
    assert run.state() == expected


def test_silenced_alerts_change_state_but_notify_nothing_until_the_silence_ends(
    tmp_path: Path,
) -> None:
    run = Run(rules(tmp_path))
    run.silences = [Silence("s1", ends_at=T0 + 30 * MIN, rule="lo*", reason="known")]
    assert told(run.at(T0, balance(5))) == [] and run.state() == "firing"
    assert told(run.at(T0 + 29 * MIN, balance(5))) == []
    # the silence expired: the firing that was never told is told now
    assert told(run.at(T0 + 30 * MIN, balance(5))) == [("low", "firing")]


def test_silence_scope_and_silenced_resolution(tmp_path: Path) -> None:
    run = Run(rules(tmp_path))
    run.silences = [Silence("other", ends_at=T0 + 60 * MIN, rule="low", resource_id="other-*")]
    assert told(run.at(T0, balance(5))) == [("low", "firing")]  # a silence for someone else
    run.silences = [Silence("s", ends_at=T0 + 60 * MIN, rule="low", account="acme")]
    assert told(run.at(T0 + MIN, balance(50))) == [] and run.state() == "resolved"
    not_yet = Silence("later", starts_at=T0 + 2 * 60 * MIN, ends_at=T0 + 3 * 60 * MIN)
    assert not not_yet.active(T0) and not_yet.active(T0 + 2 * 60 * MIN)
    assert not not_yet.active(T0 + 3 * 60 * MIN)


IDLE = """\
rules:
  - name: idle
    resource: instance
    when: {idle_gpu: {window: 30m}}
"""


def idle_facts(util: float, stale: list[str] | None = None, present: bool = True) -> InMemoryFacts:
    inst = InstanceFact(
        "i-1", "nb", "running", "onDemand", 1, last_started_at=T0 - timedelta(hours=5)
    )
    samples = [(T0 - timedelta(hours=5) + k * MIN, util) for k in range(1, 5 * 60 + 60)]
    return InMemoryFacts(
        instance_list={"acme": [inst] if present else []},
        metrics={("i-1", "gpu_util"): samples},
        stale={"acme": stale} if stale else {},
        account_names=["acme"],
    )


def test_stale_collectors_inhibit_dependent_alerts_and_raise_one_monitor_alert(
    tmp_path: Path,
) -> None:
    run = Run(rules(tmp_path, IDLE))
    assert told(run.at(T0, idle_facts(0))) == [("idle", "firing")]
    # metrics stale: the (now busy) instance neither resolves nor re-notifies
    held = run.at(T0 + MIN, idle_facts(90, stale=["metrics"]))
    assert run.state("idle", "i-1", "instance") == "firing"
    assert told(held) == [("monitor-cannot-see-account", "firing")]
    assert held.inhibited_accounts == {"acme": ["metrics"]}
    assert run.state("monitor-cannot-see-account", "acme", "monitor") == "firing"
    # a collector the rule does not read does not hold it
    run2 = Run(rules(tmp_path, IDLE))
    run2.at(T0, idle_facts(0))
    run2.at(T0 + MIN, idle_facts(90, stale=["bills"]))
    assert run2.state("idle", "i-1", "instance") == "resolved"
    # fresh again: the held alert resolves and the monitor alert too
    fresh = run.at(T0 + 2 * MIN, idle_facts(90))
    assert sorted(told(fresh)) == [("idle", "resolved"), ("monitor-cannot-see-account", "resolved")]


def test_shipped_monitor_rule_replaces_the_builtin_one(tmp_path: Path) -> None:
    text = IDLE + "  - {name: cannot-see, resource: monitor, when: {collector_stale: {}}}\n"
    run = Run(rules(tmp_path, text))
    result = run.at(T0, idle_facts(0, stale=["instances"]))
    assert told(result) == [("cannot-see", "firing")]


def test_a_vanished_resource_resolves(tmp_path: Path) -> None:
    run = Run(rules(tmp_path, with_extra(IDLE, "keep_firing_for: 1h")))
    run.at(T0, idle_facts(0))
    gone = run.at(T0 + MIN, idle_facts(0, present=False))
    assert run.state("idle", "i-1", "instance") == "resolved"
    assert told(gone) == [("idle", "resolved")]
    assert gone.transitions[0].reason == "resource gone"


def test_a_removed_rule_resolves_silently(tmp_path: Path) -> None:
    run = Run(rules(tmp_path))
    run.at(T0, balance(5))
    run.ruleset = rules(tmp_path, IDLE)
    result = run.at(T0 + MIN, balance(5))
    assert run.state() == "resolved" and told(result) == []
    assert [t.reason for t in result.transitions] == ["rule removed"]


def test_evaluation_is_deterministic_and_fingerprints_stable(tmp_path: Path) -> None:
    ruleset = rules(tmp_path, IDLE)
    a = evaluate(ruleset, idle_facts(0), T0, {}, [])
    b = evaluate(ruleset, idle_facts(0), T0, {}, [])
    assert a == b
    assert fingerprint("acme", "idle", "instance", "i-1") == fingerprint(
        "acme", "idle", "instance", "i-1"
    )
    assert fingerprint("acme", "idle", "instance", "i-1") != fingerprint(
        "acme", "idle", "instance", "i-2"
    )
    assert a.changed == set(a.states)


def test_notifications_carry_what_a_notice_needs(tmp_path: Path) -> None:
    text = with_extra(
        IDLE,
        """\
        notify: [ops]
        labels: {team: ml}
        summary: "{{ resource_name }} idle"
        description: Idle GPU.
        """,
    )
    run = Run(rules(tmp_path, text))
    facts = idle_facts(1)
    facts.instance_list["acme"] = [
        InstanceFact("i-1", "nb", "running", "onDemand", 1, last_started_at=T0 - timedelta(hours=5),
                     hourly_cost_usd=Decimal("0.8"))
    ]  # fmt: skip
    (note,) = run.at(T0, facts).notifications_due
    notice = Notice(**note.notice_fields())
    assert {f.name for f in fields(Notice)} == set(note.notice_fields())
    assert (notice.rule, notice.state, notice.account) == ("idle", "firing", "acme")
    assert (notice.resource_kind, notice.resource_id, notice.resource_name) == (
        "instance",
        "i-1",
        "nb",
    )
    assert notice.channels == ["ops"] and notice.labels == {"team": "ml"}
    assert notice.template == "{{ resource_name }} idle" and notice.started_at == T0
    assert notice.values["value"] == 1 and notice.values["threshold"] == 5
    assert notice.values["cost_per_hour_usd"] == 0.8
    assert "nb (i-1)" in notice.summary and "threshold 5" in notice.summary
    assert note.description == "Idle GPU."


def test_the_rules_package_imports_no_database_http_scheduler_or_apprise_code() -> None:
    code = (
        "import sys, monitor.rules, monitor.rules.testing\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'sqlmodel', 'httpx', 'apscheduler', 'apprise', 'alembic')]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert out.stdout.strip() == ""


def test_a_composite_condition_keeps_the_first_conditions_figures() -> None:
    """``all: [idle_gpu, X]``: the message must describe the idle GPU (its kind, value and
    threshold), X adding only keys of its own; before, the last child overwrote them and an
    idle-GPU alert was rendered as X with X's figures."""
    from monitor.rules.context import Result
    from monitor.rules.tree import AllNode, AnyNode

    class Fixed:
        needs: frozenset[str] = frozenset()

        def __init__(self, result: Result) -> None:
            self.result = result

        def evaluate(self, ctx: object, resource: object) -> Result:
            return self.result

    gpu = Result(True, {"kind": "idle_gpu", "value": 0.4, "threshold": 5, "idle_minutes": 50})
    cpu = Result(True, {"kind": "cpu", "value": 2.0, "threshold": 10, "cpu_avg": 2.0})
    for node in (AllNode((Fixed(gpu), Fixed(cpu))), AnyNode((Fixed(gpu), Fixed(cpu)))):
        merged = node.evaluate(None, None).values  # type: ignore[arg-type]
        assert merged == {
            "kind": "idle_gpu",
            "value": 0.4,
            "threshold": 5,
            "idle_minutes": 50,
            "cpu_avg": 2.0,
        }


PREFILTER_RULES = """\
rules:
  - name: idle
    resource: instance
    when: {idle_gpu: {window: 30m, threshold: 5, min_uptime: 15m}}
  - name: idle-ondemand
    resource: instance
    when:
      all:
        - {field: billing_mode, op: in, value: [onDemand, spot]}
        - idle_gpu: {window: 45m, threshold: 5}
  - name: any-idle
    resource: instance
    when: {idle_gpu: {window: 30m, mode: any}}
  - name: busy
    resource: instance
    when: {not: {idle_gpu: {window: 30m}}}
  - name: idle-or-unknown
    resource: instance
    on_missing: match
    when: {idle_gpu: {window: 30m}}
  - name: underused
    resource: instance
    when: {underused_gpus: {window: 30m}}
"""


def fleet_facts(now: datetime) -> InMemoryFacts:
    """A fleet with every case the pre-filter must get right: busy, idle, a gap, stopped,
    too young, started before the stored history, a GPU-less machine, multi-GPU with one GPU
    idle."""
    start = now - timedelta(hours=3)
    kinds = {
        "busy": (60.0, "running", 1, start),
        "idle": (1.0, "running", 1, start),
        "gap": (None, "running", 1, start),
        "stopped": (1.0, "exited", 1, start),
        "young": (1.0, "running", 1, now - timedelta(minutes=5)),
        "unstarted": (80.0, "running", 1, None),
        "cpu-only": (0.0, "running", 0, start),
        "half-idle": (50.0, "running", 2, start),
        "monthly-idle": (2.0, "running", 1, start),
    }
    insts, metrics, gpus = [], {}, {}
    for iid, (util, status, count, started) in kinds.items():
        mode = "monthly" if iid.startswith("monthly") else "onDemand"
        insts.append(InstanceFact(iid, iid, status, mode, count, last_started_at=started))
        if util is None:
            continue
        minutes = sorted(now - k * MIN for k in range(90))
        metrics[(iid, "gpu_util")] = [(t, util) for t in minutes]
        if count > 1:
            gpus[(iid, "0", "gpu_util")] = [(t, 2 * util) for t in minutes]
            gpus[(iid, "1", "gpu_util")] = [(t, 0.0) for t in minutes]
    return InMemoryFacts(
        instance_list={"acme": insts},
        metrics=metrics,
        gpu_metrics=gpus,
        account_names=["acme"],
        history_starts={"acme": now - timedelta(days=1)},
    )


def test_the_pre_filter_changes_no_outcome_and_skips_the_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Conditions name the resources they may hold on (``candidates``); the engine evaluates
    the others only when they have an alert. Same states, transitions and notices as
    evaluating every resource, over a day in which instances go idle and busy again."""
    import monitor.rules.conditions as conds
    from monitor.rules.tree import BuiltinNode

    ruleset = rules(tmp_path, PREFILTER_RULES)
    judged: list[str] = []
    real = conds._idle_gpus

    def counted(params, ctx, inst):  # type: ignore[no-untyped-def]
        judged.append(inst.id)
        return real(params, ctx, inst)

    monkeypatch.setattr(conds, "_idle_gpus", counted)

    def day(prefilter: bool) -> list[EvalResult]:
        if not prefilter:
            monkeypatch.setattr(BuiltinNode, "candidates", lambda self, ctx: None)
        run, out = Run(ruleset), []
        for step_ in range(6):
            now = T0 + step_ * 20 * MIN
            facts = fleet_facts(now)
            if step_ in (2, 3):  # the idle one works for a while, the busy one rests
                minutes = sorted(now - k * MIN for k in range(90))
                facts.metrics[("idle", "gpu_util")] = [(t, 70.0) for t in minutes]
                facts.metrics[("busy", "gpu_util")] = [(t, 0.5) for t in minutes]
            out.append(run.at(now, facts))
        monkeypatch.undo()
        monkeypatch.setattr(conds, "_idle_gpus", counted)
        return out

    judged.clear()
    fast = day(prefilter=True)
    skipped = len(judged)
    judged.clear()
    slow = day(prefilter=False)
    assert skipped < len(judged)  # the pre-filter did skip work
    for a, b in zip(fast, slow, strict=True):
        assert a.states == b.states
        assert a.transitions == b.transitions
        assert a.notifications_due == b.notifications_due
        assert a.changed == b.changed
    fired = {(s.rule, s.resource_id) for s in fast[0].states.values() if s.state == "firing"}
    assert ("idle", "idle") in fired and ("idle", "busy") not in fired
    assert ("idle-or-unknown", "gap") in fired  # unknown, matched by on_missing
    assert ("busy", "busy") in fired  # under a not: nothing skipped
    assert ("underused", "half-idle") in fired
    assert ("idle-ondemand", "monthly-idle") not in fired
    assert ("idle", "young") not in fired
    # and the busy instance's recovery later in the day resolves through the alert it has
    assert any(t.rule == "idle" and t.resource_id == "busy" for r in fast for t in r.transitions)
