"""The report's model: immutable values built once from the store at one ``end``.

Every figure comes from :mod:`monitor.economics` through :class:`monitor.facts.StoreFacts` (or
the ledger's recorded savings); this module only gathers and labels them. ``None`` is unknown,
never zero: a day before the stored bills' history, an instance whose hours fail their bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from monitor import economics
from monitor.actions.savings import saving_line
from monitor.facts import STATUS_IDLE_THRESHOLD, StoreFacts
from monitor.status import account_status

DAY = timedelta(days=1)


@dataclass(frozen=True)
class DaySpend:
    day: datetime  # the UTC day's midnight
    usd: Decimal | None


@dataclass(frozen=True)
class InstanceLine:
    """One instance's spend in the window, its billed hours, idle GPU-hours and their cost."""

    id: str
    name: str
    product: str
    gpu_count: int
    billing_mode: str | None
    spend_usd: Decimal | None
    billed_hours: float | None
    idle_gpu_hours: float | None
    idle_cost_usd: Decimal | None


@dataclass(frozen=True)
class ProductSpend:
    id: str
    name: str
    usd: Decimal | None


@dataclass(frozen=True)
class RuleSaving:
    rule: str
    realized_usd: Decimal


@dataclass(frozen=True)
class AlertLine:
    rule: str
    severity: str
    resource_id: str
    resource_name: str
    state: str
    firing_since: datetime | None
    resolved_at: datetime | None
    summary: str


@dataclass(frozen=True)
class Advice:
    """Subscription advice for one on-demand instance (``status``'s figures)."""

    instance_id: str
    name: str
    hourly_usd: float | None
    monthly_price_usd: float | None
    break_even_hours: float | None
    monthly_saving_usd: float | None


@dataclass(frozen=True)
class AccountReport:
    name: str
    spend_usd: Decimal | None
    days: tuple[DaySpend, ...]
    instances: tuple[InstanceLine, ...]
    products: tuple[ProductSpend, ...]
    idle_from: datetime | None  # idle figures count the stored minutes from here on
    idle_gpu_hours: float | None
    idle_cost_usd: Decimal | None
    savings_usd: Decimal
    savings_by_rule: tuple[RuleSaving, ...]
    alerts: tuple[AlertLine, ...]
    advice: tuple[Advice, ...]
    problems: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    generated_at: datetime
    start: datetime
    end: datetime
    idle_threshold: float
    accounts: tuple[AccountReport, ...]


def report_window(end: datetime, since: timedelta) -> tuple[datetime, datetime]:
    """``[start, end)``: ``since`` back from ``end``, the start at the UTC midnight on or before
    it (days in UTC)."""
    start = end - since
    start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, end


def build_report(
    facts: StoreFacts,
    start: datetime,
    end: datetime,
    *,
    idle_threshold: float = STATUS_IDLE_THRESHOLD,
) -> Report:
    """The report of ``facts``' accounts over ``[start, end)`` (``facts.now`` is ``end``)."""
    accounts = tuple(
        _account(facts, account, start, end, idle_threshold) for account in facts.accounts()
    )
    return Report(facts.now, start, end, idle_threshold, accounts)


def _account(
    facts: StoreFacts,
    account: str,
    start: datetime,
    end: datetime,
    threshold: float,
) -> AccountReport:
    store = facts.store
    groups, history = facts.spend_groups(account, start, end)

    def day_known(group: economics.Spent) -> bool:
        return history is not None and max(group.day, start) >= history

    def window_known(_group: economics.Spent) -> bool:
        return history is not None and start >= history

    by_day = economics.spend_by(groups, lambda g: g.day.isoformat(), day_known)
    days = []
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        known = history is not None and max(day, start) >= history
        empty: Decimal | None = Decimal(0) if known else None
        days.append(DaySpend(day, by_day.get(day.isoformat(), empty)))
        day += DAY
    empty_window: Decimal | None = Decimal(0) if history is not None and start >= history else None
    by_owner = economics.spend_by(groups, lambda g: g.owner_id, window_known)
    by_product = economics.spend_by(groups, lambda g: g.product_id, window_known)

    insts = {i.id: i for i in facts.instances(account)}
    owners = sorted(set(by_owner) | set(insts))
    hours = facts.running_hours(account, start, end)
    # idle: the stored minutes (whole rolled-up hours at once where their figures settle it),
    # from the later of the window's start and the first sample
    first = facts.metrics_start(account)
    idle_from = None if first is None else max(start, first)
    idle_minutes = (
        store.idle_minute_counts(account, owners, idle_from, end, threshold)
        if idle_from is not None
        else {}
    )
    lines = []
    for iid in owners:
        inst = insts.get(iid)
        gpus = inst.gpu_count if inst is not None else 1
        spent = by_owner.get(iid, empty_window)
        billed = None if hours is None else hours.get(iid)
        idle = (
            None if idle_from is None else economics.idle_gpu_hours(idle_minutes.get(iid, 0), gpus)
        )
        mode = inst.billing_mode if inst is not None else None
        prepaid = mode == "monthly"  # its idle hours cost nothing more: not in the idle cost
        lines.append(
            InstanceLine(
                id=iid,
                name=inst.name if inst is not None else "",
                product=(inst.product_name or inst.product_id or "") if inst is not None else "",
                gpu_count=gpus,
                billing_mode=mode,
                spend_usd=spent,
                billed_hours=billed,
                idle_gpu_hours=idle,
                idle_cost_usd=None
                if prepaid
                else economics.idle_cost(spent, billed, idle, gpus, end - start),
            )
        )
    products = []
    for pid, usd in sorted(by_product.items()):
        price = store.product_price(account, pid) if pid else None
        products.append(ProductSpend(pid, (price.name if price is not None else "") or pid, usd))

    ledger = store.actions(account)
    clipped = [
        (row.rule, economics.clip_saving(line, start, end))
        for row in ledger
        if (line := saving_line(row)) is not None
    ]
    per_rule: dict[str, list[economics.SavingLine]] = {}
    for rule, clip in clipped:
        if clip is not None:
            per_rule.setdefault(rule, []).append(clip)
    by_rule = tuple(
        RuleSaving(rule, economics.savings(items, end).realized_usd)
        for rule, items in sorted(per_rule.items())
    )
    saved = economics.savings([c for items in per_rule.values() for c in items], end)

    status = account_status(facts, account, end)
    advice = tuple(
        Advice(
            i["id"],
            i["name"],
            i["hourly_cost_usd"],
            i["monthly_price_usd"],
            i["break_even_hours"],
            i["monthly_saving_usd"],
        )
        for i in status["instances"]
        if i["billing_mode"] == "onDemand"
        and (i["break_even_hours"] is not None or i["monthly_saving_usd"] is not None)
    )
    problems = tuple(
        sorted({f"{p['kind']} {p['resource_id']} {p['field']}" for p in status["data_problems"]})
    )
    return AccountReport(
        name=account,
        spend_usd=economics.total(d.usd for d in days),
        days=tuple(days),
        instances=tuple(lines),
        products=tuple(products),
        idle_from=idle_from,
        idle_gpu_hours=None  # no minute stored: nothing says whether anything idled
        if idle_from is None
        else economics.total_hours(i.idle_gpu_hours for i in lines),
        idle_cost_usd=None
        if idle_from is None
        else economics.total(
            i.idle_cost_usd for i in lines if i.idle_gpu_hours and i.billing_mode != "monthly"
        ),
        savings_usd=saved.realized_usd,
        savings_by_rule=by_rule,
        alerts=_alerts(store.load_alerts(account), start, end),
        advice=advice,
        problems=problems,
    )


def _alerts(rows: Sequence[Any], start: datetime, end: datetime) -> tuple[AlertLine, ...]:
    """Alerts that fired in the window (or were firing in it), first fired first."""
    out = [
        AlertLine(
            rule=a.rule,
            severity=a.severity or "",
            resource_id=a.resource_id,
            resource_name=a.resource_name or "",
            state=a.state,
            firing_since=a.firing_since,
            resolved_at=a.resolved_at,
            summary=a.summary or "",
        )
        for a in rows
        if a.firing_since is not None
        and a.firing_since < end
        and (a.resolved_at is None or a.resolved_at >= start)
    ]
    far = datetime.max.replace(tzinfo=UTC)
    return tuple(sorted(out, key=lambda a: (a.firing_since or far, a.rule, a.resource_id)))
