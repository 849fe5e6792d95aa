"""``novita-monitor backtest --from-db``: a candidate rule set replayed over the stored history
of a real account ("this rule would have fired N times and stopped M instances, saving $X").

The rules are evaluated by the engine (:func:`monitor.rules.engine.evaluate`, alert states kept in
memory, nothing written) over the stored data at every ``step`` from the first stored sample (plus
the longest window) to the last. A rule with a ``stop`` action *would have stopped* an instance
once its alert had been firing for the grace (pay-as-you-go instances; spot only with
``include_spot``); the stop then counts as lasting while the alert keeps firing, and saves the
instance's hourly cost (from the stored facts, :mod:`monitor.economics`) for each step in which
the instance was really running (it had samples), so time it was stopped anyway is not counted.

Approximations, printed with the result: the instances' status and prices are those stored last
(the store keeps no per-minute status); a would-be stop does not change the history that follows
it (the owner's reaction is unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from monitor import economics

NOTE = (
    "statuses and prices are the last stored; a would-be stop does not change the history "
    "after it; savings count only the steps in which the instance had samples (was running)"
)


@dataclass
class RuleTally:
    fired: int = 0
    stopped: int = 0
    instances: set[str] = field(default_factory=set)
    saving_usd: Decimal = Decimal(0)
    unknown_price: int = 0


def _stop_params(rule: Any) -> Any | None:
    for action in rule.actions:
        if action.name == "stop":
            return action.params
    return None


def replay(
    config: Any,
    rule_paths: Sequence[Path],
    step: timedelta = timedelta(minutes=5),
    progress: Any = None,
) -> dict[str, Any]:
    """Replay ``rule_paths`` over ``config``'s database (see the module docstring)."""
    from monitor.app import intervals
    from monitor.facts import StoreFacts
    from monitor.rules import load_rules
    from monitor.rules.engine import evaluate
    from monitor.rules.tree import metric_windows
    from monitor.store.db import open_store

    ruleset = load_rules(rule_paths, known_channels=config.channel_names)
    accounts = [a.name for a in config.accounts]
    store = open_store(config.database_url)
    try:
        firsts = [t for a in accounts if (t := store.first_metric_time(a)) is not None]
        lasts = [t for a in accounts for t in store.latest_metric_times(a).values()]
        if not firsts or not lasts:
            return {"error": "no stored metrics to replay", "rules": {}}
        window = max((w for r in ruleset for w in metric_windows(r.when)), default=timedelta(0))
        start, end = min(firsts) + window, max(lasts)
        tallies = {r.name: RuleTally() for r in ruleset}
        stops = {r.name: p for r in ruleset if (p := _stop_params(r)) is not None}
        states: dict[str, Any] = {}
        open_stops: dict[str, tuple[str, str, Decimal | None]] = {}
        every = intervals(config)
        t, steps = start, 0
        while t <= end:
            facts = StoreFacts(store, accounts, every, config.stale_after, now=t)
            result = evaluate(ruleset, facts, t, states)
            prior, states = states, dict(result.states)
            running: dict[str, set[str]] = {}
            for fp, s in states.items():
                tally = tallies.get(s.rule)
                if tally is None:
                    continue
                was = prior.get(fp)
                if s.state == "firing" and (was is None or was.state != "firing"):
                    tally.fired += 1
                params = stops.get(s.rule)
                if params is None or s.resource_kind != "instance":
                    continue
                if s.state != "firing":
                    open_stops.pop(fp, None)
                    continue
                if fp not in open_stops:
                    if s.firing_since is None or t - s.firing_since < params.grace:
                        continue
                    inst = _instance(facts, s.account, s.resource_id)
                    modes = {"onDemand", "spot"} if params.include_spot else {"onDemand"}
                    if inst is None or inst.billing_mode not in modes:
                        continue
                    open_stops[fp] = (s.account, s.resource_id, inst.hourly_cost_usd)
                    tally.stopped += 1
                    tally.instances.add(s.resource_id)
                    continue
                account, iid, hourly = open_stops[fp]
                if account not in running:
                    running[account] = set(facts.metric_window(account, "gpu_util", t - step, t))
                if iid in running[account]:
                    cost = economics.cost_since(hourly, t - step, t)
                    if cost is None:
                        tally.unknown_price += 1
                    else:
                        tally.saving_usd += cost
            steps += 1
            if progress and steps % 288 == 0:
                progress(f"{t.isoformat()}: {steps} evaluations")
            t += step
    finally:
        store.close()
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "step_s": int(step.total_seconds()),
        "evaluations": steps,
        "note": NOTE,
        "rules": {
            name: {
                "fired": x.fired,
                "stopped": x.stopped,
                "instances_stopped": len(x.instances),
                "saving_usd": float(round(x.saving_usd, 2)),
                "steps_with_unknown_price": x.unknown_price,
            }
            for name, x in tallies.items()
        },
    }


def _instance(facts: Any, account: str, iid: str) -> Any | None:
    return next((i for i in facts.instances(account) if i.id == iid), None)


def sentence(name: str, tally: dict[str, Any]) -> str:
    """``this rule would have fired N times and stopped M instances, saving $X``."""
    text = f"{name} would have fired {tally['fired']} times"
    if tally["stopped"]:
        text += (
            f" and stopped {tally['instances_stopped']} instances ({tally['stopped']} stops), "
            f"saving ${tally['saving_usd']:,.2f}"
        )
        if tally["steps_with_unknown_price"]:
            text += " (more where the price was unknown)"
    return text
