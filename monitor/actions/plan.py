"""The planner: the firing alerts of rules with actions -> ledger rows and announcements.

One pure step (no clock, no database, no HTTP): :func:`plan_actions` takes the evaluation's
result, the facts it was computed from and ``now``, and returns the rows to insert (in the
evaluation's transaction: :meth:`monitor.store.ledger.LedgerRepo.insert_actions`) and the
notices to deliver with the alert notifications. Its keyword arguments are fixed per process,
so the evaluation calls ``planner(result, facts, now)`` on a :func:`functools.partial`::

    planner = partial(plan_actions, ruleset=ruleset, settings=config.actions,
                      held=store.held_intents, silences=store_silences, dry_run=flag)

Which alerts: those ``firing`` whose condition held in this very evaluation (``last_match_at ==
now``: an alert held by ``keep_firing_for`` or by stale data never acts), of instance rules
with ``actions``, not silenced (a silence on a rule and instance holds its actions). One row
per action, skipped when its intent is held (:meth:`LedgerRepo.held_intents`: planned once).
A row that would end without acting (``refused``, ``dry_run``, ``skipped``) is recorded only
when the alert notifies (it starts firing, or a reminder is due): the ledger says it once per
notice, not once a minute.

Each row's ``facts`` hold what the decision saw, for the record and for the act step's
re-check: ``values`` (the alert's figures), ``summary``, ``fingerprint``, ``instance`` (status,
billing_mode, last_started_at, created_at, end_time, auto_renew, auto_renew_months,
hourly_cost_usd, keep_data_day, gpu_count) and, for the actions that spend, ``money``
(charge_usd, balance_usd, burn_rate_usd_per_hour, runway_after_charge_hours). ``params`` are
the action's parameters as a rule file spells them (durations as ``15m``): read them back with
:func:`monitor.actions.model.action_params`.

Guards at planning (each a ``refused`` row with the reason and its figures): protection (the
instance's ``NOVITA_MONITOR_PROTECT=true``, ``actions.protect.names``, the rule's ``exclude``);
what may be stopped (running ``onDemand`` with a known hourly price, ``spot`` only with
``include_spot``, never ``monthly``); money (renew, convert and set_auto_renew: a month count
the product lists with a known price, a runway after the charge of at least
``actions.min_runway_after_charge``; renew never within the 3 days before ``endTime`` while
auto-renew is on or unknown; convert only on a ``subscription_candidate`` alert with known
running hours).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from monitor import economics
from monitor.actions.model import ConvertParams, RenewParams, SetAutoRenewParams, StopParams
from monitor.notify.model import Notice
from monitor.rules.context import CachedFacts, money
from monitor.rules.durations import format_duration
from monitor.rules.facts import Facts, InstanceFact
from monitor.rules.lifecycle import AlertState, Silence, fingerprint
from monitor.rules.model import Rule, RuleAction, RuleSet
from monitor.store.ledger import RELEASING_STATES
from monitor.store.models import ActionRecord

if TYPE_CHECKING:
    from monitor.config import ActionSettings
    from monitor.rules.engine import EvalResult

#: the collectors whose data a charge is judged by (balance, prices, the instance itself)
_MONEY_COLLECTORS = frozenset({"balance", "instances", "products"})
#: values of the protect variable that mean "protected"
PROTECT_VALUES = frozenset({"true", "1", "yes", "on"})


def intent_key(rule: str, action: str, inst: InstanceFact) -> str:
    """``rule|action|instance|period``: the period is the ``endTime`` being renewed (renew,
    set_auto_renew) or the run acted on (``lastStartedAt``, else ``createdAt``)."""
    if action in ("renew", "set_auto_renew"):
        period = inst.end_time
    else:
        period = inst.last_started_at or inst.created_at
    return f"{rule}|{action}|{inst.id}|{_iso(period) or '-'}"


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat().replace("+00:00", "Z")


def _at(when: datetime, now: datetime) -> str:
    """``14:30 UTC`` today, ``2026-11-21 14:30 UTC`` another day."""
    return f"{when:%H:%M} UTC" if when.date() == now.date() else f"{when:%Y-%m-%d %H:%M} UTC"


def _usd(value: Decimal | None) -> str:
    if value is None:
        return "?"
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


_PLAIN = frozenset({int, float, str, bool, type(None)})


def _json(value: Any) -> Any:
    if type(value) in _PLAIN:  # nearly every value: decided without the ABC checks below
        return value
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, Decimal):
        return money(value)
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


def params_json(params: BaseModel) -> dict[str, Any]:
    """An action's parameters as a rule file spells them (durations ``15m``)."""
    return {k: _json(v) for k, v in params.model_dump().items()}


def instance_snapshot(inst: InstanceFact) -> dict[str, Any]:
    """What the act step re-checks and the ledger explains with."""
    return {
        "name": inst.name,
        "status": inst.status,
        "billing_mode": inst.billing_mode,
        "last_started_at": _iso(inst.last_started_at),
        "created_at": _iso(inst.created_at),
        "end_time": _iso(inst.end_time),
        "auto_renew": inst.auto_renew,
        "auto_renew_months": inst.auto_renew_months,
        "hourly_cost_usd": money(inst.hourly_cost_usd),
        "keep_data_day": inst.keep_data_day,
        "gpu_count": inst.gpu_count,
    }


@dataclass(frozen=True)
class Decision:
    """What the planner decided for one action on one instance."""

    state: str  # refused | announced | awaiting_approval | planned
    reason: str
    due_at: datetime | None = None
    expires_at: datetime | None = None
    saving_per_hour_usd: Decimal | None = None
    money: dict[str, Any] | None = None
    money_refusal: bool = False  # a refused charge raises a notice


# --------------------------------------------------------------------------------------------
# guards


def protection(inst: InstanceFact, rule: Rule, settings: ActionSettings) -> str | None:
    """Why no action may touch ``inst`` (protected or excluded), or None."""
    env = settings.protect.env
    flag = str(inst.labels.get(env, "")).strip().lower()
    if flag in PROTECT_VALUES:
        return f"protected: its environment sets {env}={inst.labels.get(env)}"
    for pattern in settings.protect.names:
        if fnmatch.fnmatchcase(inst.name, pattern):
            return f"protected: its name {inst.name!r} matches {pattern!r} (actions.protect.names)"
    for pattern in rule.exclude:
        if pattern == inst.id or fnmatch.fnmatchcase(inst.id, pattern):
            return f"excluded by the rule: its id matches {pattern!r}"
        if inst.name and fnmatch.fnmatchcase(inst.name, pattern):
            return f"excluded by the rule: its name {inst.name!r} matches {pattern!r}"
    return None


def idle_why(values: Mapping[str, Any]) -> str | None:
    """The idle figures of an ``idle_gpu`` alert as a sentence, or None for other alerts."""
    if values.get("window_minutes") is None or values.get("threshold") is None:
        return None
    top = values.get("value")
    text = (
        f"GPU use at most {top:g}%" if isinstance(top, int | float) else "GPU use unknown"
    ) + f" (under {values['threshold']:g}%) over {values['window_minutes']:g} min"
    if values.get("idle_minutes") is not None:
        text += f", idle for {values['idle_minutes']} min"
    if values.get("cost_so_far_usd") is not None:
        text += f" (${values['cost_so_far_usd']:,.2f} so far)"
    return text


def _stop(inst: InstanceFact, params: StopParams, now: datetime) -> Decision:
    mode = inst.billing_mode
    if mode == "monthly":
        return Decision("refused", "a subscription (monthly): a stop saves nothing on prepaid time")
    if mode == "spot" and not params.include_spot:
        return Decision("refused", "a spot instance (the rule's stop has include_spot: false)")
    if mode not in ("onDemand", "spot"):
        return Decision("refused", f"billing mode {mode or 'unknown'}: only onDemand (and spot)")
    if inst.status != "running":
        return Decision("refused", f"not running (status {inst.status or 'unknown'})")
    if inst.hourly_cost_usd is None:
        return Decision("refused", "its hourly price is unknown: what a stop saves is not known")
    due = now + params.grace
    return Decision(
        "announced",
        f"stop at {_at(due, now)} unless it becomes busy (saves {_usd(inst.hourly_cost_usd)}/h)",
        due_at=due,
        saving_per_hour_usd=inst.hourly_cost_usd,
    )


def _start(inst: InstanceFact, now: datetime) -> Decision:
    if inst.status != "exited":
        return Decision("refused", f"not stopped (status {inst.status or 'unknown'})")
    return Decision("planned", "start it (the GPU may not be free: INSUFFICIENT_RESOURCE)", now)


@dataclass(frozen=True)
class _Money:
    """The account's figures a charge is judged by."""

    balance_usd: Decimal | None
    burn_usd_per_hour: Decimal | None
    instances: tuple[InstanceFact, ...]
    stale: tuple[str, ...] = ()  # stale collectors whose figures a charge is judged by


def _charges(book: _Money, but: str, now: datetime) -> list[economics.Charge]:
    """The auto-renewal charges of every subscription except ``but`` (whose own renewal the
    action replaces), as the runway counts them."""
    out = []
    for other in book.instances:
        if other.id == but:
            continue
        charge = economics.renewal_charge(
            instance_id=other.id,
            billing_mode=other.billing_mode,
            end_time=other.end_time,
            auto_renew=other.auto_renew,
            auto_renew_months=other.auto_renew_months,
            monthly_usd=other.monthly_price_usd,
            now=now,
        )
        if charge is not None:
            out.append(charge)
    return out


def _afford(
    what: str,
    inst: InstanceFact,
    months: int,
    book: _Money,
    settings: ActionSettings,
    now: datetime,
) -> tuple[Decision | None, dict[str, Any]]:
    """The money checks of a charge of ``months`` months: a listed count, a known price, the
    runway left after it. A refusal, or None, and the figures."""
    listed = sorted(inst.subscription_prices_usd)
    figures: dict[str, Any] = {"months": months, "listed_months": listed}
    if book.stale:
        reason = f"the {', '.join(book.stale)} data is stale: no charge on old figures"
        return Decision("refused", reason, money=figures, money_refusal=True), figures
    if not listed:
        reason = f"the month counts the product lists are unknown: cannot {what}"
        return Decision("refused", reason, money=figures, money_refusal=True), figures
    if months not in inst.subscription_prices_usd:
        reason = f"{months} months is not a count the product lists ({listed})"
        return Decision("refused", reason, money=figures, money_refusal=True), figures
    charge = inst.subscription_prices_usd[months]
    figures["charge_usd"] = money(charge)
    if charge is None:
        reason = f"the price of {months} months is unknown (it failed its bounds)"
        return Decision("refused", reason, money=figures, money_refusal=True), figures
    left = economics.runway_after_charge(
        book.balance_usd, book.burn_usd_per_hour, _charges(book, inst.id, now), charge, now
    )
    figures.update(
        balance_usd=money(book.balance_usd),
        burn_rate_usd_per_hour=money(book.burn_usd_per_hour),
        runway_after_charge_hours=None if left.hours is None else round(left.hours, 1),
        runway_reason=left.reason,
    )
    floor = settings.min_runway_after_charge / 3600
    after = _usd(None if book.balance_usd is None else book.balance_usd - charge)
    if (
        left.in_arrears
        or (left.hours is not None and left.hours < floor)
        or (book.balance_usd is not None and book.balance_usd - charge <= 0)
    ):
        runway = "none" if left.hours is None else f"{left.hours:,.1f} h"
        reason = (
            f"{what} costs {_usd(charge)}: the balance {_usd(book.balance_usd)} would fall to "
            f"{after}, a runway of {runway} at {_usd(book.burn_usd_per_hour)}/h "
            f"(less than actions.min_runway_after_charge, {floor:g} h)"
        )
        return Decision("refused", reason, money=figures, money_refusal=True), figures
    if left.hours is None and left.reason != "no_burn":
        reason = f"{what} costs {_usd(charge)}: the runway after it is unknown ({left.reason})"
        return Decision("refused", reason, money=figures, money_refusal=True), figures
    return None, figures


def _approval(
    approval: str, sentence: str, figures: dict[str, Any], settings: ActionSettings, now: datetime
) -> Decision:
    if approval == "none":
        return Decision("planned", sentence, now, money=figures)
    expires = now + timedelta(seconds=settings.approval_ttl)
    return Decision(
        "awaiting_approval",
        f"{sentence}; awaits approval until {_at(expires, now)}",
        expires_at=expires,
        money=figures,
    )


def _renew(
    inst: InstanceFact,
    params: RenewParams,
    book: _Money,
    facts: CachedFacts,
    account: str,
    settings: ActionSettings,
    now: datetime,
) -> Decision:
    if inst.billing_mode != "monthly" or inst.end_time is None:
        return Decision("refused", "not a subscription with an end time: nothing to renew")
    left = inst.end_time - now
    if inst.auto_renew is not False and left <= economics.AUTO_RENEW_LEAD:
        state = "on" if inst.auto_renew else "unknown"
        return Decision(
            "refused",
            f"auto-renew is {state} and endTime {_iso(inst.end_time)} is within 3 days: the "
            "platform charges for the renewal itself (a renew now could pay twice)",
            money_refusal=True,
        )
    if params.min_util is not None:
        start = now - params.lookback
        first = facts.metrics_start(account)
        if first is not None and first > start:
            start = first
        agg = facts.metric_window(account, "gpu_util", start, now, [inst.id]).get(inst.id)
        util = economics.lookback_utilisation(
            None if agg is None else agg.avg,
            0.0 if agg is None else agg.covered_s,
            (now - start).total_seconds(),
        )
        if agg is None and inst.status == "running":
            util = None  # running but no samples: unknown, not idle
        if util is None or util < params.min_util:
            shown = "unknown" if util is None else f"{util:.1f} %"
            return Decision(
                "refused",
                f"GPU use over {format_duration(params.lookback)} is {shown}, "
                f"below min_util {params.min_util:g} %",
            )
    refusal, figures = _afford("renew", inst, params.months, book, settings, now)
    if refusal is not None:
        return refusal
    figures["end_time"] = _iso(inst.end_time)
    ends = _at(inst.end_time, now) if inst.end_time is not None else "unknown"
    sentence = (
        f"renew for {params.months} month{'s' if params.months != 1 else ''} "
        f"({_usd(inst.subscription_prices_usd[params.months])}) the term ending {ends}; "
        f"runway after it {figures['runway_after_charge_hours']} h"
    )
    return _approval(params.approval, sentence, figures, settings, now)


def _convert(
    inst: InstanceFact,
    params: ConvertParams,
    alert: AlertState,
    book: _Money,
    settings: ActionSettings,
    now: datetime,
) -> Decision:
    if inst.billing_mode != "onDemand":
        return Decision("refused", f"billing mode {inst.billing_mode}: only onDemand converts")
    values = alert.values
    if values.get("break_even_hours") is None:  # set by subscription_candidate only
        return Decision("refused", "not a subscription_candidate alert (no break-even figures)")
    if values.get("utilization") is None:  # set only when the running hours are known
        return Decision("refused", "its running hours are unknown: no conversion on a guess")
    refusal, figures = _afford("convert", inst, params.months, book, settings, now)
    if refusal is not None:
        return refusal
    sentence = (
        f"convert to a {params.months}-month subscription "
        f"({_usd(inst.subscription_prices_usd[params.months])}): runs {values.get('value')} h/month "
        f"against break-even {values.get('break_even_hours')} h, saves "
        f"${values.get('monthly_saving_usd')}/month"
    )
    return _approval(params.approval, sentence, figures, settings, now)


def _auto_renew(
    inst: InstanceFact,
    params: SetAutoRenewParams,
    book: _Money,
    settings: ActionSettings,
    now: datetime,
) -> Decision:
    if inst.billing_mode != "monthly" or inst.end_time is None:
        return Decision("refused", "not a subscription with an end time")
    if inst.auto_renew is True and (inst.auto_renew_months or 1) == params.months:
        return Decision("refused", f"auto-renew is already on for {params.months} month(s)")
    refusal, figures = _afford("auto-renew", inst, params.months, book, settings, now)
    if refusal is not None:
        return refusal
    charge_at = max(now, inst.end_time - economics.AUTO_RENEW_LEAD)
    sentence = (
        f"turn auto-renew on for {params.months} month(s): "
        f"{_usd(inst.subscription_prices_usd[params.months])} charged about {_at(charge_at, now)}"
    )
    return _approval(params.approval, sentence, figures, settings, now)


def decide(
    action: RuleAction,
    rule: Rule,
    inst: InstanceFact,
    alert: AlertState,
    *,
    facts: CachedFacts,
    account: str,
    settings: ActionSettings,
    now: datetime,
) -> Decision:
    """The guards and the resulting state of one action on one instance (dry run and the kill
    switch are applied by the caller)."""
    why = protection(inst, rule, settings)
    if why is not None:
        return Decision("refused", why)
    params = action.params
    if isinstance(params, StopParams):
        return _stop(inst, params, now)
    if action.name == "start":
        return _start(inst, now)
    balance = facts.balance(account)
    stale = set(facts.stale_collectors(account, now)) & _MONEY_COLLECTORS
    book = _Money(
        None if balance is None else balance.available_usd,
        facts.burn_rate(account),
        tuple(facts.instances(account)),
        tuple(sorted(stale)),
    )
    if isinstance(params, RenewParams):
        return _renew(inst, params, book, facts, account, settings, now)
    if isinstance(params, ConvertParams):
        return _convert(inst, params, alert, book, settings, now)
    if isinstance(params, SetAutoRenewParams):
        return _auto_renew(inst, params, book, settings, now)
    return Decision("refused", f"unknown action {action.name!r}")


# --------------------------------------------------------------------------------------------
# announcements


def _silence_hint(rule: str, inst: InstanceFact) -> str:
    return (
        f"novita-monitor silence add --rule {rule} --instance {inst.id} --for 1d "
        '--reason "keep it running"'
    )


def _notice(
    rule: Rule,
    alert: AlertState,
    inst: InstanceFact,
    action: str,
    severity: str,
    summary: str,
    values: dict[str, Any],
) -> Notice:
    return Notice(
        fingerprint=fingerprint(alert.account, rule.name, f"action:{action}", inst.id),
        rule=rule.name,
        severity=severity,
        state="firing",
        account=alert.account,
        resource_kind="instance",
        resource_id=inst.id,
        resource_name=inst.name,
        summary=summary,
        values={
            **{k: v for k, v in values.items() if isinstance(v, int | float | str | bool)},
            "action": action,  # an action's notice, not an alert (messages count them apart)
        },
        labels=dict(rule.labels),
        channels=list(rule.notify) if rule.notify is not None else None,
        started_at=alert.firing_since,
    )


def announce(
    rule: Rule,
    alert: AlertState,
    inst: InstanceFact,
    action: str,
    decision: Decision,
    now: datetime,
) -> Notice | None:
    """The notice a live plan raises: a stop's announcement (when, how to keep it, when its
    data would expire, that the GPU may not be free again), an approval request, a refused
    charge. None for the rest."""
    who = inst.name or inst.id
    if decision.state == "announced" and decision.due_at is not None:
        parts = [
            f"will stop {who} at {_at(decision.due_at, now)} unless it becomes busy "
            f"(saves {_usd(decision.saving_per_hour_usd)}/h); to keep it: "
            f"`{_silence_hint(rule.name, inst)}`",
        ]
        if inst.keep_data_day is not None:
            expires = economics.data_expires_at(decision.due_at, inst.keep_data_day)
            parts.append(
                f"its local data is deleted {inst.keep_data_day} days after the stop "
                f"({_at(expires, now) if expires else '?'}) unless it is started again"
            )
        else:
            parts.append("how long its local data is kept after a stop is unknown")
        parts.append("the GPU may not be free when it is started again")
        values = {
            "action": "stop",
            "due_at": _iso(decision.due_at),
            "saving_per_hour_usd": money(decision.saving_per_hour_usd),
            "keep_data_day": inst.keep_data_day,
        }
        return _notice(rule, alert, inst, action, rule.severity, "; ".join(parts), values)
    if decision.state == "awaiting_approval":
        summary = (
            f"{action} {who}: {decision.reason}. See `novita-monitor actions`, then "
            "`novita-monitor approve ID` or `novita-monitor reject ID`"
        )
        return _notice(rule, alert, inst, action, rule.severity, summary, decision.money or {})
    if decision.state == "refused" and decision.money_refusal:
        summary = f"{action} {who} refused: {decision.reason}"
        return _notice(rule, alert, inst, action, "warning", summary, decision.money or {})
    return None


# --------------------------------------------------------------------------------------------
# the step


def _silenced(silences: Sequence[Silence], state: AlertState, rule: Rule, now: datetime) -> bool:
    if not silences:
        return False
    labelled = replace(state, labels=dict(rule.labels))
    return any(s.matches(labelled, now) for s in silences)


def held_by_silence(
    silences: Iterable[Silence],
    row: ActionRecord,
    now: datetime,
    labels: Mapping[str, str] | None = None,
) -> Silence | None:
    """The active silence that holds a ledger row's action (one on its rule and instance; its
    rule's ``labels`` count as an alert's), or None: what the act step checks before it acts."""
    state = AlertState(
        fingerprint=str((row.facts or {}).get("fingerprint", "")),
        account=row.account,
        rule=row.rule,
        resource_kind="instance",
        resource_id=row.instance_id,
        labels=dict(labels or {}),
    )
    return next((s for s in silences if s.matches(state, now)), None)


def plan_actions(
    result: EvalResult,
    facts: Facts | CachedFacts,
    now: datetime,
    *,
    ruleset: RuleSet | Iterable[Rule],
    settings: ActionSettings,
    held: Callable[[str, Collection[str]], set[str]] | None = None,
    silences: Callable[[datetime], Iterable[Silence]] | Iterable[Silence] = (),
    dry_run: bool = False,
    every_firing: bool = False,
) -> tuple[list[ActionRecord], list[Notice]]:
    """The ledger rows and notices for the actions of the alerts firing at ``now``.

    ``held(account, keys)``: which of ``keys`` (the intents of the alerts firing) the ledger
    holds (``store.held_intents``); ``silences``: the active silences, or a callable ``now ->
    silences`` read at each call; ``dry_run``: the command line's ``--dry-run``
    (``settings.dry_run`` and a rule's ``dry_run`` count too);
    ``every_firing``: record refused and dry-run rows for every firing alert, not only those
    that notify (``novita-monitor plan``). Rows come in a stable order (account, rule,
    instance, the rule's action order)."""
    cached = facts if isinstance(facts, CachedFacts) else CachedFacts(facts)
    rules = {r.name: r for r in ruleset if r.actions and r.resource == "instance"}
    if not rules:
        return [], []
    live_silences = list(silences(now) if callable(silences) else silences)
    notifying = {n.fingerprint for n in result.notifications_due if n.state == "firing"}
    firing = sorted(
        (
            s
            for s in result.states.values()
            if s.state == "firing"
            and s.rule in rules
            and s.resource_kind == "instance"
            and s.last_match_at == now
        ),
        key=lambda s: (s.account, s.rule, s.resource_id),
    )
    rows: list[ActionRecord] = []
    notices: list[Notice] = []
    holding: dict[str, set[str]] = {}
    params: dict[tuple[str, int], dict[str, Any]] = {}

    def params_of(rule: str, number: int, action: RuleAction) -> dict[str, Any]:
        """An action's parameters as spelled in the rule: the same for each of its rows."""
        if (rule, number) not in params:
            params[(rule, number)] = params_json(action.params)
        return params[(rule, number)]

    by_id: dict[str, dict[str, InstanceFact]] = {}
    todo: list[tuple[AlertState, Rule, InstanceFact, list[str]]] = []
    for alert in firing:
        rule = rules[alert.rule]
        if _silenced(live_silences, alert, rule, now):
            continue  # a silence on the rule and instance holds its actions
        if alert.account not in by_id:
            by_id[alert.account] = {i.id: i for i in cached.instances(alert.account)}
        inst = by_id[alert.account].get(alert.resource_id)
        if inst is None:
            continue
        keys = [intent_key(rule.name, action.name, inst) for action in rule.actions]
        todo.append((alert, rule, inst, keys))
        holding.setdefault(alert.account, set()).update(keys)
    for account, wanted in holding.items():  # which of those intents the ledger holds
        holding[account] = set(held(account, wanted)) if held is not None else set()
    for alert, rule, inst, keys in todo:
        dry = dry_run or settings.dry_run or rule.dry_run
        for number, (action, key) in enumerate(zip(rule.actions, keys, strict=True)):
            if key in holding[alert.account]:
                continue  # planned already (or acted)
            decision = decide(
                action,
                rule,
                inst,
                alert,
                facts=cached,
                account=alert.account,
                settings=settings,
                now=now,
            )
            state, reason = decision.state, decision.reason
            why = idle_why(alert.values) if action.name == "stop" else None
            if why is not None and state != "refused":
                reason = f"{reason}, because {why}"
            if state != "refused":
                if dry:
                    state, reason = "dry_run", f"dry run, would: {reason}"
                elif not settings.enabled:
                    state = "skipped"
                    reason = f"kill switch (actions.enabled: false), would: {reason}"
            if (
                state in RELEASING_STATES
                and not every_firing
                and alert.fingerprint not in notifying
            ):
                continue  # said once per notice, not once per evaluation
            record_facts: dict[str, Any] = {
                "values": _json(dict(alert.values)),
                "summary": alert.summary,
                "fingerprint": alert.fingerprint,
                "instance": instance_snapshot(inst),
            }
            if decision.money is not None:
                record_facts["money"] = decision.money
            rows.append(
                ActionRecord(
                    account=alert.account,
                    rule=rule.name,
                    action=action.name,
                    instance_id=inst.id,
                    instance_name=inst.name,
                    params=dict(params_of(rule.name, number, action)),
                    facts=record_facts,
                    intent_key=key,
                    idempotency_key=key,
                    dry_run=dry,
                    state=state,
                    reason=f"{reason} | {alert.summary}" if alert.summary else reason,
                    planned_at=now,
                    due_at=decision.due_at,
                    expires_at=decision.expires_at,
                    saving_per_hour_usd=decision.saving_per_hour_usd,
                )
            )
            holding[alert.account].add(key)
            if not dry and state in ("announced", "awaiting_approval", "refused"):
                note = announce(rule, alert, inst, action.name, decision, now)
                if note is not None:
                    notices.append(note)
    return rows, notices
