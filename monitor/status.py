"""The fleet at a glance (``novita-monitor status``), computed from the store only.

Hourly cost of a running on-demand or spot instance: the product's hourly price for its cluster
times ``gpu_count`` (the per-GPU basis of ``price`` is unconfirmed, wire-format §1.4/§2.9), checked
against the instance's recent hourly bills: when they differ by more than 10 % the bills win and a
warning is logged. Monthly (prepaid) instances and instances not running cost null per hour.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog

log = structlog.get_logger("monitor.status")

BILL_TOLERANCE = Decimal("0.10")


def stale_collectors(
    store: Any, account: str, now: datetime, intervals: dict[str, int], stale_after: float
) -> list[str]:
    """Collectors whose last success is older than ``stale_after`` x their interval (or never)."""
    stale = []
    for name, interval in intervals.items():
        if name == "async_tasks" and not store.watched_tasks(account):
            continue  # polled only while some task is watched: nothing to be stale about
        last = store.last_success(account, name)
        if last is None or now - last > timedelta(seconds=interval * stale_after):
            stale.append(name)
    return stale


def hourly_cost(store: Any, account: str, inst: Any, now: datetime) -> Decimal | None:
    if inst.status != "running" or inst.billing_mode not in ("onDemand", "spot"):
        return None
    price = store.hourly_price_usd(account, inst.product_id, inst.cluster_id, inst.billing_mode)
    listed = price * inst.gpu_count if price is not None and inst.gpu_count else None
    billed = store.recent_hourly_bill_usd(account, inst.instance_id, now)
    if listed is None:
        return billed
    if billed is not None and billed > 0 and abs(listed - billed) / billed > BILL_TOLERANCE:
        log.warning(
            "price_differs_from_bills",
            account=account,
            instance=inst.instance_id,
            listed_usd_per_hour=str(listed),
            billed_usd_per_hour=str(billed),
        )
        return billed
    return listed


def _num(value: Decimal | None, places: int = 4) -> float | None:
    return None if value is None else round(float(value), places)


def account_status(
    store: Any, account: str, now: datetime, intervals: dict[str, int], stale_after: float
) -> dict[str, Any]:
    instances = []
    burn = Decimal(0)
    for inst in store.instances(account):
        cost = hourly_cost(store, account, inst, now)
        if cost is not None:
            burn += cost
        util = store.gpu_util_avg(account, inst.instance_id, now - timedelta(minutes=15), now)
        instances.append(
            {
                "id": inst.instance_id,
                "name": inst.name,
                "status": inst.status,
                "billing_mode": inst.billing_mode or None,
                "gpu_count": int(inst.gpu_count or 0),
                "gpu_util_avg_15m": None if util is None else round(float(util), 2),
                "hourly_cost_usd": _num(cost),
                "expires_at": inst.end_time.isoformat().replace("+00:00", "Z")
                if inst.end_time
                else None,
            }
        )
    balance = store.latest_balance(account)
    balance_usd = None if balance is None else balance.available_usd
    runway = None
    if balance_usd is not None and burn > 0:
        runway = balance_usd / burn
    return {
        "name": account,
        "balance_usd": _num(balance_usd, 4),
        "burn_rate_usd_per_hour": _num(burn),
        "runway_hours": _num(runway, 2),
        "stale": stale_collectors(store, account, now, intervals, stale_after),
        "instances": instances,
    }


def fleet_status(
    store: Any, accounts: list[str], now: datetime, intervals: dict[str, int], stale_after: float
) -> dict[str, Any]:
    return {
        "generated_at": now.isoformat().replace("+00:00", "Z"),
        "accounts": [account_status(store, a, now, intervals, stale_after) for a in accounts],
    }


def render_text(status: dict[str, Any]) -> str:
    """A plain table for terminals."""
    lines = []
    for acc in status["accounts"]:
        bal = acc["balance_usd"]
        runway = acc["runway_hours"]
        lines.append(
            f"account {acc['name']}: balance "
            + (f"${bal:,.2f}" if bal is not None else "unknown")
            + f", burn ${acc['burn_rate_usd_per_hour'] or 0:,.2f}/h, runway "
            + (f"{runway:,.1f} h" if runway is not None else "n/a")
        )
        if acc["stale"]:
            lines.append(f"  STALE: {', '.join(acc['stale'])}")
        header = f"  {'ID':<22} {'NAME':<20} {'STATUS':<10} {'BILLING':<9} {'GPU':>3} {'UTIL15m':>7} {'$/h':>7}  EXPIRES"
        lines.append(header)
        for i in acc["instances"]:
            util = "-" if i["gpu_util_avg_15m"] is None else f"{i['gpu_util_avg_15m']:.1f}%"
            cost = "-" if i["hourly_cost_usd"] is None else f"{i['hourly_cost_usd']:.2f}"
            lines.append(
                f"  {i['id'][:22]:<22} {i['name'][:20]:<20} {i['status'][:10]:<10} "
                f"{(i['billing_mode'] or '-'):<9} {i['gpu_count']:>3} {util:>7} {cost:>7}  "
                f"{i['expires_at'] or '-'}"
            )
    return "\n".join(lines)
