"""The fleet at a glance (``novita-monitor status``).

Every figure comes from :class:`monitor.facts.StoreFacts`, the same object the rules read, so
``status`` and the alerts can never disagree; the economics module computes them. An unknown
figure is ``null`` in JSON and ``?`` in the table, never a guess; the reasons are listed under
``data_problems``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from monitor import economics
from monitor.actions.savings import savings_by_rule, savings_json
from monitor.facts import STATUS_HOURS_WINDOW, STATUS_IDLE_THRESHOLD, StoreFacts


def _num(value: Decimal | float | None, places: int = 4) -> float | None:
    """Money at 4 places (as the alerts' values), hours at 2, percents at 2."""
    return None if value is None else round(float(value), places)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat().replace("+00:00", "Z")


def _hours(
    facts: StoreFacts, account: str, instance_id: str, start: datetime, end: datetime
) -> float | None:
    hours = facts.running_hours(account, start, end)
    return None if hours is None else hours.get(instance_id, 0.0)


#: the window of the utilisation ``status`` shows (``gpu_util_avg_15m``) and ``/metrics`` exports
UTIL_WINDOW = timedelta(minutes=15)


def gpu_util_recent(facts: StoreFacts, account: str, now: datetime) -> dict[str, float]:
    """Each instance's average GPU utilisation (%) over the last :data:`UTIL_WINDOW`; an
    instance without samples, or whose figure fails its bounds, is absent (unknown)."""
    util = facts.metric_window(account, "gpu_util", now - UTIL_WINDOW, now)
    out = {}
    for iid, agg in util.items():
        pct = economics.bounded_percent(agg.avg)
        if pct is not None:
            out[iid] = pct
    return out


def account_status(facts: StoreFacts, account: str, now: datetime) -> dict[str, Any]:
    insts = facts.instances(account)
    idle = facts.idle_since(account, STATUS_IDLE_THRESHOLD, now)
    hours = facts.running_hours(account, now - STATUS_HOURS_WINDOW, now)
    history = facts.history_start(account)
    covered = facts.usage_covered_until(account)
    billed_until = now if covered is None else min(covered, now)
    util = gpu_util_recent(facts, account, now)
    instances = []
    for inst in insts:
        since = idle.get(inst.id)
        ran = None if hours is None else hours.get(inst.id)
        steady, _ = economics.steady_hours_per_month(
            partial(_hours, facts, account, inst.id), billed_until, history
        )
        # the advice compares paying by the hour with a subscription: on-demand only
        hourly = inst.hourly_cost_usd if inst.billing_mode == "onDemand" else None
        instances.append(
            {
                "id": inst.id,
                "name": inst.name,
                "status": inst.status,
                "billing_mode": inst.billing_mode,
                "gpu_count": inst.gpu_count,
                "gpu_util_avg_15m": _num(util.get(inst.id), 2),
                "hourly_cost_usd": _num(inst.hourly_cost_usd),
                "monthly_price_usd": _num(inst.monthly_price_usd),
                "expires_at": _iso(inst.end_time),
                "auto_renew": inst.auto_renew,
                "idle_since": _iso(since),
                "idle_cost_usd": _num(economics.cost_since(inst.hourly_cost_usd, since, now)),
                "running_hours_30d": _num(ran, 2),
                "break_even_hours": _num(
                    economics.break_even_hours(inst.monthly_price_usd, hourly), 1
                ),
                "monthly_saving_usd": _num(
                    economics.monthly_saving(hourly, steady, inst.monthly_price_usd)
                ),
            }
        )
    balance = facts.balance(account)
    runway = facts.runway(account, now)
    stored = getattr(facts.store, "data_problems", None)
    problems = [
        {"kind": p.kind, "resource_id": p.resource_id, "field": p.field, "raw": p.raw, "count": 1}
        for p in facts.data_problems(account)
    ]
    if stored is not None:
        problems += [
            {
                "kind": p.kind,
                "resource_id": p.resource_id,
                "field": p.field,
                "raw": p.raw,
                "count": p.count,
            }
            for p in stored(account)
        ]
    ledger = getattr(facts.store, "actions", None)
    _, saved = savings_by_rule(ledger(account) if ledger is not None else [], now)
    return {
        "name": account,
        "balance_usd": _num(None if balance is None else balance.available_usd),
        "burn_rate_usd_per_hour": _num(facts.burn_rate(account)),
        "runway_hours": _num(runway.hours, 2),
        "runway_reason": runway.reason,
        "in_arrears": runway.in_arrears,
        "renewals_in_runway_usd": _num(runway.charges_usd) if runway.charges_usd else None,
        "spend_24h_usd": _num(facts.spend(account, now - timedelta(hours=24), now)),
        "stale": facts.stale_store_collectors(account, now),
        "data_problems": problems,
        # gross (the compute price not paid), from the action ledger's stops
        "savings": savings_json(saved),
        "instances": instances,
    }


def fleet_status(
    store: Any, accounts: list[str], now: datetime, intervals: dict[str, int], stale_after: float
) -> dict[str, Any]:
    facts = StoreFacts(store, accounts, intervals, stale_after, now=now)
    return {
        "generated_at": _iso(now),
        "accounts": [account_status(facts, a, now) for a in accounts],
    }


def _money(value: float | None, unknown: str = "?") -> str:
    if value is None:
        return unknown
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def _runway(acc: dict[str, Any]) -> str:
    if acc["in_arrears"]:
        return "none (in arrears)"
    if acc["runway_hours"] is not None:
        return f"{acc['runway_hours']:,.1f} h"
    return {"no_burn": "unlimited (nothing bills)"}.get(acc["runway_reason"] or "", "?")


def render_text(status: dict[str, Any]) -> str:
    """A plain table for terminals: each figure once, unknown ones as ``?``."""
    lines = []
    for acc in status["accounts"]:
        burn = acc["burn_rate_usd_per_hour"]
        lines.append(
            f"account {acc['name']}: balance {_money(acc['balance_usd'])}, "
            f"burn {_money(burn)}/h, runway {_runway(acc)}, "
            f"spent {_money(acc['spend_24h_usd'])} in 24 h"
        )
        saved = acc.get("savings") or {}
        if saved.get("expected_usd_per_hour") or saved.get("realized_usd"):
            lines.append(
                f"  savings: {_money(saved['expected_usd_per_hour'])}/h now, "
                f"{_money(saved['realized_usd'])} realized (novita-monitor actions)"
            )
        if acc["stale"]:
            lines.append(f"  STALE: {', '.join(acc['stale'])}")
        if acc["data_problems"]:
            kinds = sorted({p["kind"] for p in acc["data_problems"]})
            lines.append(
                f"  UNKNOWN FIGURES: {len(acc['data_problems'])} ({', '.join(kinds)}); "
                "see status --json"
            )
        lines.append(
            f"  {'ID':<22} {'NAME':<20} {'STATUS':<10} {'BILLING':<9} {'GPU':>3} "
            f"{'UTIL15m':>7} {'$/h':>7} {'IDLE $':>7}  EXPIRES"
        )
        for i in acc["instances"]:
            util = "-" if i["gpu_util_avg_15m"] is None else f"{i['gpu_util_avg_15m']:.1f}%"
            cost = "-" if i["hourly_cost_usd"] is None else f"{i['hourly_cost_usd']:.2f}"
            idle = "-" if i["idle_cost_usd"] is None else f"{i['idle_cost_usd']:.2f}"
            lines.append(
                f"  {i['id'][:22]:<22} {i['name'][:20]:<20} {i['status'][:10]:<10} "
                f"{(i['billing_mode'] or '-'):<9} {i['gpu_count']:>3} {util:>7} {cost:>7} "
                f"{idle:>7}  {i['expires_at'] or '-'}"
            )
    return "\n".join(lines)
