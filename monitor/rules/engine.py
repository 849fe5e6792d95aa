"""One evaluation: rules x facts x now x previous alert states -> new states, transitions and
the notifications due. A pure function of its inputs: no clock, no database, no I/O.

Inhibition: when a collector of an account is stale, every rule reading that collector's data
neither fires nor resolves (its alerts keep their state and stay quiet), and a ``monitor``
alert "the monitor cannot see the account" fires instead. That alert comes from the loaded
rules using ``collector_stale`` (the shipped ``monitor-health.yaml``), or, when none is loaded,
from the built-in rule :data:`BUILTIN_MONITOR_RULE`, so staleness is never silent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from monitor.rules.conditions import CollectorStaleParams
from monitor.rules.context import CachedFacts, EvalContext, Resource, Result, money
from monitor.rules.facts import COLLECTORS, Facts
from monitor.rules.lifecycle import (
    AlertState,
    Notification,
    Outcome,
    Silence,
    Transition,
    fingerprint,
    step,
)
from monitor.rules.model import Rule, RuleSet
from monitor.rules.registry import conditions
from monitor.rules.tree import BuiltinNode, Node

_stale_spec = conditions.get("collector_stale")
assert _stale_spec is not None
BUILTIN_MONITOR_RULE = Rule(
    name="monitor-cannot-see-account",
    resource="monitor",
    when=BuiltinNode(_stale_spec, CollectorStaleParams()),
    description="The monitor cannot see (part of) the account: collected data is stale.",
    severity="critical",
    repeat_interval=timedelta(hours=4),
    source="(built-in)",
)


@dataclass(frozen=True)
class EvalResult:
    """``states`` holds every fingerprint passed in plus those that became active (resolved
    and inactive ones included: the store decides what to keep); ``changed`` names those that
    differ from the input, so the store writes only them. ``transitions`` and
    ``notifications_due`` are in a deterministic order (account, rule, resource)."""

    states: dict[str, AlertState]
    transitions: list[Transition] = field(default_factory=list)
    notifications_due: list[Notification] = field(default_factory=list)
    inhibited_accounts: dict[str, list[str]] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)  # fingerprints whose state differs from input

    def firing(self) -> list[AlertState]:
        return [s for s in self.states.values() if s.state == "firing"]


def _uses(node: Node, name: str) -> bool:
    if isinstance(node, BuiltinNode):
        return node.spec.name == name
    children = getattr(node, "children", None)
    if children is not None:
        return any(_uses(c, name) for c in children)
    child = getattr(node, "child", None)
    return child is not None and _uses(child, name)


def resources_for(
    kind: str, account: str, facts: CachedFacts, now: datetime | None = None
) -> list[Resource]:
    """The resources a rule of ``kind`` is evaluated against, for one account."""
    if kind == "instance":
        return [
            Resource("instance", i.id, account, i.name, i.field_map(), i)
            for i in facts.instances(account)
        ]
    if kind == "task":
        return [
            Resource("task", t.id, account, t.name, t.field_map(), t) for t in facts.tasks(account)
        ]
    if kind == "account":
        balance = facts.balance(account)
        burn = facts.burn_rate(account)
        runway = facts.runway(account, now).hours if now is not None else None
        fields = {
            "account": account,
            "balance_usd": money(balance.available_usd) if balance else None,
            "burn_rate_usd_per_hour": money(burn),
            "runway_hours": runway,
        }
        return [Resource("account", account, account, account, fields)]
    if kind == "monitor":
        stale = facts.stale_collectors(account, now) if now is not None else []
        fields_ = {"account": account, "stale_collectors": sorted(stale)}
        return [Resource("monitor", account, account, account, fields_)]
    raise ValueError(f"unknown resource kind {kind!r}")


def _usd(value: Any) -> str:
    """$4.20, -$0.26: money as people read it."""
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return f"${value}"
    return f"-${-amount:,.2f}" if amount < 0 else f"${amount:,.2f}"


_SUMMARY_KEYS = (
    ("value", "value"),
    ("threshold", "threshold"),
    ("runway_hours", "runway {}h"),
    ("balance_usd", "balance {usd}"),
    ("cost_per_hour_usd", "{usd}/h"),
    ("cost_so_far_usd", "{usd} so far"),
    ("monthly_saving_usd", "saves {usd}/month"),
    ("days_left", "{} days left"),
    ("status", "status {}"),
    ("error", "error {}"),
    ("collectors", "stale: {}"),
)


def summarize(rule: Rule, resource: Resource, values: Mapping[str, Any]) -> str:
    """A plain one-line default summary with the concrete numbers (templates can do better)."""
    who = resource.name or resource.id
    if resource.name and resource.name != resource.id:
        who = f"{resource.name} ({resource.id})"
    parts = []
    for key, fmt in _SUMMARY_KEYS:
        value = values.get(key)
        if value is None or value == "":
            continue
        if fmt == key:
            parts.append(f"{key} {value}")
        elif "{usd}" in fmt:
            parts.append(fmt.format(usd=_usd(value)))
        else:
            parts.append(fmt.format(value))
    head = f"{rule.name}: {resource.kind} {who}"
    return f"{head}: {', '.join(parts)}" if parts else head


def _inhibited(rule: Rule, stale: set[str]) -> bool:
    if rule.is_monitor_rule or not stale:
        return False
    return bool(rule.needs & stale) or bool(stale - set(COLLECTORS)) or not rule.needs


def evaluate(
    ruleset: RuleSet | Iterable[Rule],
    facts: Facts,
    now: datetime,
    states: Mapping[str, AlertState],
    silences: Iterable[Silence] = (),
    *,
    notify_resolved: bool = True,
) -> EvalResult:
    """Evaluate every rule for every account of ``facts`` at ``now``.

    Feed the returned ``states`` back in at the next evaluation (the store persists them).
    """
    cached = CachedFacts(facts)
    rules = list(ruleset)
    if not any(_uses(r.when, "collector_stale") for r in rules):
        rules.append(BUILTIN_MONITOR_RULE)
    by_name = {r.name: r for r in rules}
    silences = [s for s in silences if s.active(now)]
    out: dict[str, AlertState] = dict(states)
    transitions: list[Transition] = []
    notes: list[Notification] = []
    inhibited_accounts: dict[str, list[str]] = {}
    seen: set[str] = set()
    changed: set[str] = set()

    def record(outcome: Outcome) -> None:
        fp = outcome.state.fingerprint
        if states.get(fp) is not outcome.state:
            changed.add(fp)
        out[fp] = outcome.state
        if outcome.transition is not None:
            transitions.append(outcome.transition)
        if outcome.notification is not None:
            notes.append(outcome.notification)

    def is_silenced(state: AlertState) -> bool:
        return any(s.matches(state, now) for s in silences)

    def is_silenced_by_rule(state: AlertState, rule: Rule) -> bool:
        """Silenced, matching on the rule's labels (the state's may be older)."""
        return bool(silences) and is_silenced(replace(state, labels=dict(rule.labels)))

    accounts = cached.accounts()
    for account in accounts:
        stale = set(cached.stale_collectors(account, now))
        if stale:
            inhibited_accounts[account] = sorted(stale)
        resources: dict[str, list[Resource]] = {}
        for rule in rules:
            inhibited = _inhibited(rule, stale)
            if rule.resource not in resources:
                resources[rule.resource] = resources_for(rule.resource, account, cached, now)
            ctx = EvalContext(cached, account, now, rule.severity)  # one per rule: its prior
            # where the condition cannot hold, a resource without an alert has nothing to
            # remember: it is not evaluated (an idle rule over a mostly busy fleet)
            possible = None if inhibited else rule.when.candidates(ctx)
            for res in resources[rule.resource]:  # is set per resource (thousands of them)
                fp = fingerprint(account, rule.name, res.kind, res.id)
                seen.add(fp)
                prior = states.get(fp)
                if inhibited:
                    continue  # neither fire nor resolve, and stay quiet
                if prior is None and possible is not None and res.id not in possible:
                    continue
                ctx.prior = prior
                result = rule.when.evaluate(ctx, res)
                match = _apply_missing(rule, result)
                if prior is None:
                    if not match:
                        continue  # never active: nothing to remember
                    prior = AlertState(
                        fp, account, rule.name, res.kind, res.id, severity=rule.severity
                    )
                old = prior
                if res.name and res.name != old.resource_name:
                    old = replace(old, resource_name=res.name)
                record(
                    step(
                        rule,
                        old,
                        match,
                        now,
                        silenced=is_silenced_by_rule(old, rule),
                        values=result.values,
                        severity=result.severity,
                        summary=summarize(rule, res, result.values) if match else "",
                        notify_resolved=notify_resolved,
                    )
                )
    # alerts whose resource is gone, or whose rule was removed
    account_set = set(accounts)
    for fp, old in sorted(states.items()):
        if fp in seen or old.state not in ("pending", "firing"):
            continue
        known = by_name.get(old.rule)
        if known is None:
            gone = replace(old, state="resolved" if old.state == "firing" else "inactive")
            gone = replace(gone, resolved_at=now if old.state == "firing" else old.resolved_at)
            record(
                Outcome(
                    gone,
                    Transition(
                        fp,
                        old.rule,
                        old.account,
                        old.resource_kind,
                        old.resource_id,
                        old.state,
                        gone.state,
                        now,
                        old.severity,
                        dict(old.values),
                        "rule removed",
                    ),
                )
            )
            continue
        if old.account not in account_set:
            continue
        if _inhibited(known, set(inhibited_accounts.get(old.account, ()))):
            continue
        quick = replace(known, keep_firing_for=timedelta(0))  # a vanished resource cannot linger
        record(
            step(
                quick,
                old,
                False,
                now,
                silenced=is_silenced(old),
                reason="resource gone",
                notify_resolved=notify_resolved,
            )
        )
    return EvalResult(out, transitions, notes, inhibited_accounts, changed)


def _apply_missing(rule: Rule, result: Result) -> bool | None:
    if result.match is not None:
        return result.match
    if rule.on_missing == "match":
        return True
    if rule.on_missing == "no_match":
        return False
    return None
