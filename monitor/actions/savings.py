"""What the stops saved, per rule and in total, from the ledger (``actions`` and ``status``).

Gross savings (the compute price not paid; a stopped instance's storage is not subtracted):
each stop row carries the hourly price it saves (``saving_per_hour_usd``) from the stop
(``saving_since``) until the instance runs again (``saving_until``, with the closed
``realized_saving_usd``); still-stopped instances accrue up to now. The sums are
:func:`monitor.economics.savings`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from monitor import economics
from monitor.economics import SavingLine, Savings
from monitor.rules.context import money
from monitor.store.models import ActionRecord


def saving_line(row: ActionRecord) -> SavingLine | None:
    """The saving a ledger row stands for (stops that acted), or None."""
    if row.action != "stop" or row.saving_since is None:
        return None
    return SavingLine(
        row.saving_per_hour_usd, row.saving_since, row.saving_until, row.realized_saving_usd
    )


def row_saving(row: ActionRecord, now: datetime) -> Savings | None:
    line = saving_line(row)
    return None if line is None else economics.savings([line], now)


def savings_by_rule(
    rows: Iterable[ActionRecord], now: datetime
) -> tuple[dict[str, Savings], Savings]:
    """Savings per rule (rules with a stop that acted) and in total."""
    lines: dict[str, list[SavingLine]] = {}
    for row in rows:
        line = saving_line(row)
        if line is not None:
            lines.setdefault(row.rule, []).append(line)
    per_rule = {rule: economics.savings(items, now) for rule, items in sorted(lines.items())}
    total = economics.savings([line for items in lines.values() for line in items], now)
    return per_rule, total


def savings_json(figures: Savings) -> dict[str, Any]:
    """``{expected_usd_per_hour, realized_usd}`` as ``status`` and ``actions --json`` show it."""
    return {
        "expected_usd_per_hour": money(figures.expected_usd_per_hour),
        "realized_usd": money(figures.realized_usd),
    }
