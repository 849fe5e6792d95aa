"""The account's economics: the one place that computes cost, burn, runway, hours and savings.

Everything here is a pure function of plain values (no database, no wire, no clock): the facts
layer (``monitor/facts.py``) reads the store and hands the values in; ``status``, the rule
conditions (through :class:`monitor.rules.facts.Facts`), and later the report, the metrics
endpoint and the actions all get their figures from these functions, so two screens can never
disagree about the same number.

Conventions:

* Money is ``Decimal`` USD; hours are ``float``; times are aware UTC datetimes.
* ``None`` means *unknown*, never zero. A figure that fails its physical bounds is unknown too,
  and the function says why with a :class:`Problem` (logged once and listed by ``status --json``
  under ``data_problems``): a wrong number must never reach a notification or an action.
* Each function's docstring names its sources in order of trust and what it answers when data
  is missing.

Units the API docs leave open (wire-format §6, §7) are not trusted alone:

* ``billNum0`` is "number of cards x billing time" with no unit. Card-hours are derived from
  what the docs do fix, the bill's money: ``amount / unit price`` (``discountPrice0`` divided
  by ``pricePrecision``). ``billNum0`` is only a cross-check: it must match ``k x`` the derived
  figure for ``k`` in 1 (hours), 60 (minutes) or 3600 (seconds) within 25 %, else the bill's
  hours are unknown.
* Whether a product's ``price`` is per GPU or per instance: the hourly bills decide (the
  listed figure x GPUs is replaced by the billed figure when they differ by more than 10 %),
  and the monthly price follows the same basis as the hourly one.
* The monthly price's scale: plausible only when ``monthly / hourly`` (same basis) lies
  between 250 and 800 hours; anything else is unknown.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

HOUR_S = 3600.0
#: hours of an average month (365 x 24 / 12): what "per month" means everywhere
MONTH_HOURS = 730.0
#: the only status that is billed by the hour (wire-format §3): a ``pulling`` or ``starting``
#: instance is not charged for GPU time
BILLABLE_STATUSES = frozenset({"running"})
#: billing modes charged by the hour (``monthly`` is prepaid)
HOURLY_MODES = frozenset({"onDemand", "spot"})
#: statuses on the way somewhere: an instance stuck in one for long is a problem
TRANSITIONAL_STATUSES = frozenset(
    {
        "toCreate", "creating", "pulling", "toStart", "starting", "toStop", "stopping",
        "toRestart", "restarting", "toRemove", "removing", "toReset", "resetting", "migrating",
        "pending",
    }
)  # fmt: skip
#: statuses of an instance that has not run yet
CREATING_STATUSES = frozenset({"toCreate", "creating", "pulling", "pending"})

#: the billed hourly cost replaces the listed one when they differ by more than this
BILL_TOLERANCE = Decimal("0.10")
#: ``billNum0 / k`` must match the card-hours derived from money within this share
UNIT_TOLERANCE = 0.25
#: the time units ``billNum0`` may be counted in: hours, minutes, seconds
BILL_TIME_UNITS = (1, 60, 3600)
#: plausible monthly price / hourly price (same basis), in hours
MONTHLY_RATIO_HOURS = (250.0, 800.0)
#: an hourly cost above this many times the highest listed GPU price is not believable
MAX_COST_FACTOR = 8
#: a subscription with auto-renew on is charged about this long before ``endTime`` (wire §7.4)
AUTO_RENEW_LEAD = timedelta(days=3)
#: rounding tolerance of "hours within a window never exceed its length"
_HOURS_SLACK = 1.01


@dataclass(frozen=True)
class Problem:
    """A figure that could not be believed: what, of which resource, from which raw inputs."""

    kind: str  # e.g. "bill_unit_mismatch", "hours_out_of_bounds", "monthly_price_implausible"
    resource_id: str
    field: str
    raw: str


@dataclass(frozen=True)
class Bill:
    """What the economics needs of one usage-based bill (one owner, one period)."""

    owner_id: str
    start: datetime
    end: datetime | None  # as sent: often the period's last second (inclusive)
    amount: Decimal | None  # before vouchers: the price of what was used
    pay_amount: Decimal | None  # what was paid (after vouchers)
    unit_price: Decimal | None  # USD per unit of bill_num0 (discountPrice0 / pricePrecision)
    bill_num0: float | None  # cards x billing time, unit unconfirmed

    @property
    def period_end(self) -> datetime:
        """The exclusive end of the bill's period (an inclusive ``...:59`` end gains a second;
        an absent end is taken as one hour)."""
        if self.end is None:
            return self.start + timedelta(hours=1)
        seconds = (self.end - self.start).total_seconds()
        if seconds % 60 == 59:
            return self.end + timedelta(seconds=1)
        return self.end


@dataclass(frozen=True)
class CardHours:
    """Card-hours of one bill, and the ``billNum0`` time unit it showed (None: not shown)."""

    hours: float | None
    unit: int | None
    problem: Problem | None = None


def bill_card_hours(bill: Bill, unit_hint: int | None = None) -> CardHours:
    """Card-hours a usage bill charged for.

    Sources, in order of trust: ``amount / unit_price`` (the money the docs define), checked
    against ``billNum0 / k`` for ``k`` in :data:`BILL_TIME_UNITS`. When both exist and no ``k``
    brings them within :data:`UNIT_TOLERANCE`, the figure is unknown (a problem). Without a
    unit price, ``billNum0 / unit_hint`` when the account's other bills have shown the unit,
    else unknown. A bill with zero money and zero quantity is zero hours.
    """
    derived: float | None = None
    if bill.amount is not None and bill.unit_price is not None and bill.unit_price > 0:
        derived = float(bill.amount / bill.unit_price)
    num = bill.bill_num0
    if derived is None:
        if num is not None and num == 0:
            return CardHours(0.0, unit_hint)
        if num is not None and unit_hint is not None:
            return CardHours(num / unit_hint, unit_hint)
        return CardHours(None, None)
    if num is None:
        return CardHours(derived, None)
    if derived == 0:
        if num == 0:
            return CardHours(0.0, unit_hint)
        return CardHours(None, None, _bill_problem(bill, derived))
    unit = min(BILL_TIME_UNITS, key=lambda k: abs(num / k - derived))
    if abs(num / unit - derived) > UNIT_TOLERANCE * derived:
        return CardHours(None, None, _bill_problem(bill, derived))
    return CardHours(derived, unit)


def _bill_problem(bill: Bill, derived: float) -> Problem:
    return Problem(
        "bill_unit_mismatch",
        bill.owner_id,
        "billNum0",
        f"billNum0={bill.bill_num0} amount={bill.amount} unit_price={bill.unit_price} "
        f"derived_card_hours={derived:.4f} start={bill.start.isoformat()}",
    )


def window_share(
    start: datetime, end: datetime, win_start: datetime, win_end: datetime, as_of: datetime
) -> float:
    """The share of a bill's period ``[start, end)`` that lies in ``[win_start, win_end)``,
    counting the period only up to ``as_of`` (what the bill can have charged when it was
    read: the current period's bill is partial). 0 when they do not overlap."""
    effective_end = min(end, as_of)
    length = (effective_end - start).total_seconds()
    if length <= 0:
        return 0.0
    lo, hi = max(start, win_start), min(effective_end, win_end)
    overlap = (hi - lo).total_seconds()
    return max(0.0, min(1.0, overlap / length))


@dataclass(frozen=True)
class CardHoursByOwner:
    """Card-hours per bill owner over a window; an owner mapped to None has a bill whose hours
    are unknown. ``unit`` is the ``billNum0`` time unit the bills showed (None: not shown)."""

    hours: dict[str, float | None]
    unit: int | None
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class BillTotals:
    """One owner's bills that lie wholly inside a window, summed (by the store, in SQL: a
    month of a thousand instances' bills is not read row by row). ``priced_hours`` is the sum
    of ``amount / unit price`` over the ``priced`` bills that carry a unit price, ``priced_num``
    their ``billNum0``; ``unpriced_num`` the ``billNum0`` of the others; ``paid`` what all of
    them cost (``payAmount``, else ``amount``)."""

    owner_id: str
    priced: int = 0
    priced_hours: float = 0.0
    priced_num: float = 0.0
    unpriced: int = 0
    unpriced_num: float = 0.0
    paid: Decimal = Decimal(0)


def _unit_of(num: float, derived: float) -> int | None:
    """The ``billNum0`` time unit that makes ``num`` agree with ``derived`` card-hours within
    :data:`UNIT_TOLERANCE`, or None when none does."""
    if derived <= 0:
        return None
    unit = min(BILL_TIME_UNITS, key=lambda k: abs(num / k - derived))
    return unit if abs(num / unit - derived) <= UNIT_TOLERANCE * derived else None


def bill_time_unit(totals: Iterable[BillTotals], bills: Iterable[Bill]) -> int | None:
    """The ``billNum0`` time unit (1, 60 or 3600) most of the bills show when their quantity
    is checked against their money; None when none shows one."""
    shown = [_unit_of(t.priced_num, t.priced_hours) for t in totals if t.priced_hours > 0]
    shown += [bill_card_hours(b).unit for b in bills]
    units = [u for u in shown if u is not None]
    return max(set(units), key=units.count) if units else None


def card_hours_by_owner(
    totals: Iterable[BillTotals],
    edges: Iterable[Bill],
    win_start: datetime,
    win_end: datetime,
    as_of: datetime,
) -> CardHoursByOwner:
    """Card-hours each owner was charged for in ``[win_start, win_end)``: the bills wholly
    inside it (``totals``) in full, and the bills straddling its edges (``edges``) in
    proportion to their overlap (a daily bill that began before the window counts for the
    part inside it), never "bills that start inside it". Each owner's card-hours come from
    the money (``amount / unit price``) and are cross-checked against ``billNum0``: when no
    time unit makes them agree within 25 %, that owner's hours are unknown (a problem)."""
    totals, edges = list(totals), list(edges)
    hint = bill_time_unit(totals, edges)
    hours: dict[str, float | None] = {}
    problems: list[Problem] = []

    def add(owner: str, figure: float | None) -> None:
        before = hours.get(owner, 0.0)
        hours[owner] = None if figure is None or before is None else before + figure

    for total in totals:
        figure: float | None = total.priced_hours
        if total.priced_hours > 0 and _unit_of(total.priced_num, total.priced_hours) is None:
            figure = None
            problems.append(
                Problem(
                    "bill_unit_mismatch",
                    total.owner_id,
                    "billNum0",
                    f"sum_billNum0={total.priced_num} derived_card_hours={total.priced_hours:.4f}"
                    f" bills={total.priced}",
                )
            )
        elif total.priced_hours == 0 and total.priced_num > 0:
            figure = None  # money says nothing was used, the quantity says otherwise
        if total.unpriced:
            extra = None if hint is None else total.unpriced_num / hint
            figure = None if figure is None or extra is None else figure + extra
        add(total.owner_id, figure)
    for bill in edges:
        share = window_share(bill.start, bill.period_end, win_start, win_end, as_of)
        if share <= 0:
            continue
        one = bill_card_hours(bill, hint)
        if one.problem is not None:
            problems.append(one.problem)
        add(bill.owner_id, None if one.hours is None else one.hours * share)
    return CardHoursByOwner(hours, hint, tuple(problems))


def running_hours(
    card_hours: float | None, gpu_count: int, window: timedelta, resource_id: str = ""
) -> tuple[float | None, Problem | None]:
    """Hours an instance was billed in a window: its card-hours / its GPU count.

    Bounded by the window's length (a physical limit): beyond it the figure is unknown and a
    problem says why. A CPU-only instance (no GPU) counts its instance-hours."""
    if card_hours is None:
        return None, None
    hours = card_hours / max(gpu_count, 1)
    limit = window.total_seconds() / HOUR_S
    if hours < 0 or hours > limit * _HOURS_SLACK:
        return None, Problem(
            "hours_out_of_bounds",
            resource_id,
            "running_hours",
            f"card_hours={card_hours:.4f} gpu_count={gpu_count} window_hours={limit:.2f}",
        )
    return min(hours, limit), None


def billed_hourly_cost(
    amount: Decimal | None, card_hours: float | None, gpu_count: int
) -> Decimal | None:
    """The hourly cost of a whole instance as one complete hourly bill shows it: the bill's
    amount over the hours the instance ran in it (so a partly-run hour still gives the
    per-hour price). Unknown without money or hours."""
    if amount is None or card_hours is None or card_hours <= 0:
        return None
    hours = card_hours / max(gpu_count, 1)
    if hours <= 0:
        return None
    return amount / Decimal(str(hours))


@dataclass(frozen=True)
class HourlyCost:
    """The hourly cost of a whole instance, and where it came from."""

    usd: Decimal | None
    source: str  # "listed" | "billed" | "unknown"
    listed_usd: Decimal | None = None  # listed unit price x GPUs, for the record
    problem: Problem | None = None


def hourly_cost(
    *,
    status: str,
    billing_mode: str | None,
    gpu_count: int,
    listed_unit_usd: Decimal | None,
    billed_usd: Decimal | None,
    max_listed_unit_usd: Decimal | None = None,
    resource_id: str = "",
) -> HourlyCost:
    """What the instance costs per hour *now*.

    Only a ``running`` instance billed by the hour costs anything per hour (a ``monthly`` one
    is prepaid; ``pulling``, ``exited`` ... are not charged for GPU time). Sources in order of
    trust: the latest *complete* hourly bill (``billed_usd``, see :func:`billed_hourly_cost`)
    when it differs from the listed price x GPUs by more than :data:`BILL_TOLERANCE` (then the
    listing's basis or scale is not what we read); otherwise the listed price x GPUs. Bounded
    by :data:`MAX_COST_FACTOR` x the highest listed unit price x GPUs.
    """
    if status not in BILLABLE_STATUSES or billing_mode not in HOURLY_MODES:
        return HourlyCost(None, "not_billing")
    listed = listed_unit_usd * max(gpu_count, 1) if listed_unit_usd is not None else None
    chosen, source = listed, "listed"
    if (
        billed_usd is not None
        and billed_usd > 0
        and (listed is None or abs(listed - billed_usd) / billed_usd > BILL_TOLERANCE)
    ):
        chosen, source = billed_usd, "billed"
    if chosen is None:
        return HourlyCost(None, "unknown", listed)
    if max_listed_unit_usd is not None and max_listed_unit_usd > 0:
        ceiling = max_listed_unit_usd * max(gpu_count, 1) * MAX_COST_FACTOR
        if chosen > ceiling or chosen < 0:
            return HourlyCost(
                None,
                "unknown",
                listed,
                Problem(
                    "hourly_cost_out_of_bounds",
                    resource_id,
                    "hourly_cost_usd",
                    f"{source}={chosen} listed={listed} ceiling={ceiling}",
                ),
            )
    return HourlyCost(chosen, source, listed)


def price_units(
    hourly_cost_usd: Decimal | None, listed_unit_usd: Decimal | None, gpu_count: int
) -> Decimal:
    """How many listed units the instance is billed as: its GPU count when the listed price is
    per GPU, 1 when it is per instance. Shown by the hourly cost over the listed price (snapped
    to either within :data:`BILL_TOLERANCE`); the GPU count when no cost is known."""
    gpus = Decimal(max(gpu_count, 1))
    if hourly_cost_usd is None or listed_unit_usd is None or listed_unit_usd <= 0:
        return gpus
    ratio = hourly_cost_usd / listed_unit_usd
    for snap in (gpus, Decimal(1)):
        if abs(ratio - snap) <= BILL_TOLERANCE * snap:
            return snap
    return ratio


def monthly_price(
    *,
    monthly_unit_usd: Decimal | None,
    on_demand_unit_usd: Decimal | None,
    units: Decimal,
    resource_id: str = "",
) -> tuple[Decimal | None, Problem | None]:
    """The price of a one-month subscription of the whole instance: the product's listed
    1-month price x the listed units the instance is billed as (:func:`price_units`: the
    monthly price is taken on the same basis as the hourly one). Bounded: the listed monthly
    price over the listed on-demand hourly price must lie within :data:`MONTHLY_RATIO_HOURS`,
    else the scale or meaning of ``monthlyPrice`` is not what we read and the price is
    unknown."""
    if monthly_unit_usd is None or on_demand_unit_usd is None or on_demand_unit_usd <= 0:
        return None, None
    ratio = float(monthly_unit_usd / on_demand_unit_usd)
    low, high = MONTHLY_RATIO_HOURS
    if not low <= ratio <= high:
        return None, Problem(
            "monthly_price_implausible",
            resource_id,
            "monthlyPrice",
            f"monthly={monthly_unit_usd} hourly={on_demand_unit_usd} ratio_hours={ratio:.1f}",
        )
    return monthly_unit_usd * units, None


def break_even_hours(monthly_usd: Decimal | None, hourly_usd: Decimal | None) -> float | None:
    """Running hours per month above which the subscription is cheaper than paying by the
    hour: ``monthly / hourly``. Unknown when either is."""
    if monthly_usd is None or hourly_usd is None or hourly_usd <= 0:
        return None
    return float(monthly_usd / hourly_usd)


def per_month(hours: float | None, window: timedelta) -> float | None:
    """Hours in ``window`` scaled to an average month (:data:`MONTH_HOURS`), capped at it."""
    if hours is None:
        return None
    span = window.total_seconds() / HOUR_S
    if span <= 0:
        return None
    return min(MONTH_HOURS, hours * MONTH_HOURS / span)


#: the lookbacks subscription advice sizes for (every one must exceed break-even: steady use)
ADVICE_LOOKBACKS = (timedelta(days=7), timedelta(days=30))


def steady_hours_per_month(
    hours_in: Callable[[datetime, datetime], float | None],
    now: datetime,
    history_start: datetime | None,
    lookbacks: Iterable[timedelta] = ADVICE_LOOKBACKS,
) -> tuple[float | None, dict[int, float]]:
    """The running hours per month an instance sustains: the smallest of its hours over each
    lookback (cut to the stored history) scaled to a month, so a burst in the last days does
    not count as steady use. Also each lookback's figure by its length in days. Unknown when
    any lookback's hours are unknown or no history is stored."""
    if history_start is None:
        return None, {}
    by_days: dict[int, float] = {}
    for lookback in lookbacks:
        start = max(now - lookback, history_start)
        scaled = per_month(hours_in(start, now), now - start)
        if scaled is None:
            return None, by_days
        by_days[round(lookback.total_seconds() / 86400)] = scaled
    return (min(by_days.values()) if by_days else None), by_days


def monthly_saving(
    hourly_usd: Decimal | None, hours_per_month: float | None, monthly_usd: Decimal | None
) -> Decimal | None:
    """What a subscription would save per month at this use: ``hours x hourly - monthly``, or
    0 when it would cost more (no saving). Unknown when any input is."""
    if hourly_usd is None or hours_per_month is None or monthly_usd is None:
        return None
    return max(Decimal(0), hourly_usd * Decimal(str(round(hours_per_month, 6))) - monthly_usd)


def burn_rate(costs: Iterable[HourlyCost]) -> Decimal | None:
    """USD per hour the account spends now: the sum of the billing instances' hourly costs.
    Unknown when some billing instance's cost is unknown (an under-estimate would lengthen
    the runway); zero when nothing bills."""
    total = Decimal(0)
    for cost in costs:
        if cost.source == "not_billing":
            continue
        if cost.usd is None:
            return None
        total += cost.usd
    return total


@dataclass(frozen=True)
class Charge:
    """A charge the platform will take from the balance: auto-renewals."""

    at: datetime
    usd: Decimal | None  # None: due but of unknown size
    resource_id: str


def renewal_charge(
    *,
    instance_id: str,
    billing_mode: str | None,
    end_time: datetime | None,
    auto_renew: bool | None,
    auto_renew_months: int | None,
    monthly_usd: Decimal | None,
    now: datetime,
) -> Charge | None:
    """The auto-renewal charge of a subscription, if any: taken about :data:`AUTO_RENEW_LEAD`
    before ``endTime`` (already due when that time has passed), for ``autoRenewMonth`` months
    at the monthly price (unknown when that price is)."""
    if billing_mode != "monthly" or not auto_renew or end_time is None or end_time <= now:
        return None
    at = max(now, end_time - AUTO_RENEW_LEAD)
    months = auto_renew_months or 1
    usd = None if monthly_usd is None else monthly_usd * months
    return Charge(at, usd, instance_id)


@dataclass(frozen=True)
class Runway:
    """How long the balance lasts. ``hours`` None with ``reason`` "no_burn" (nothing bills and
    no charge exhausts it), "unknown_burn" or "unknown_balance" or "unknown_charge"."""

    hours: float | None
    reason: str | None
    in_arrears: bool
    charges_usd: Decimal = Decimal(0)  # renewal charges counted inside the runway


def runway(
    balance_usd: Decimal | None,
    burn_usd_per_hour: Decimal | None,
    charges: Iterable[Charge],
    now: datetime,
) -> Runway:
    """Hours until the balance is spent at the current burn rate, with the auto-renewal
    charges subtracted at their time (a runway that ignores a $199 charge due tomorrow is
    wrong). A negative (or zero) balance: 0 h, in arrears. No burn: unknown with reason
    "no_burn", unless a charge exhausts the balance. A charge of unknown size that falls
    inside the runway makes it unknown ("unknown_charge")."""
    if balance_usd is None:
        return Runway(None, "unknown_balance", False)
    if balance_usd <= 0:
        return Runway(0.0, "in_arrears", balance_usd < 0)
    if burn_usd_per_hour is None:
        return Runway(None, "unknown_burn", False)
    burn = float(burn_usd_per_hour)
    left = float(balance_usd)
    clock = now
    counted = Decimal(0)
    for charge in sorted(charges, key=lambda c: c.at):
        hours_to = (charge.at - clock).total_seconds() / HOUR_S
        if burn > 0 and left <= burn * hours_to:
            break  # the balance runs out before this charge
        left -= burn * hours_to
        clock = charge.at
        if charge.usd is None:
            return Runway(None, "unknown_charge", False)
        left -= float(charge.usd)
        counted += charge.usd
        if left <= 0:
            return Runway((clock - now).total_seconds() / HOUR_S, None, False, counted)
    if burn <= 0:
        return Runway(None, "no_burn", False, counted)
    hours = (clock - now).total_seconds() / HOUR_S + left / burn
    return Runway(hours, None, False, counted)


def spend(
    inside_usd: Decimal,
    edges: Iterable[Bill],
    win_start: datetime,
    win_end: datetime,
    as_of: datetime,
) -> Decimal:
    """Money paid (``payAmount``, after vouchers) for usage in ``[win_start, win_end)``: the
    bills wholly inside it (``inside_usd``, summed by the store) and the bills straddling its
    edges in proportion to their overlap. The caller decides whether the stored bills reach
    back far enough (else the figure is unknown, not this sum)."""
    total = inside_usd
    for bill in edges:
        paid = bill.pay_amount if bill.pay_amount is not None else bill.amount
        if paid is None:
            continue
        share = window_share(bill.start, bill.period_end, win_start, win_end, as_of)
        if share > 0:
            total += paid * Decimal(str(share))
    return total


def cost_since(hourly_usd: Decimal | None, since: datetime | None, now: datetime) -> Decimal | None:
    """What an instance has cost since ``since`` at its current hourly cost (an idle
    instance's idle cost, a stuck one's cost while stuck). Unknown when either is."""
    if hourly_usd is None or since is None or since > now:
        return None
    return hourly_usd * Decimal(str((now - since).total_seconds() / HOUR_S))


def stop_saving(
    saving_per_hour_usd: Decimal | None,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
) -> Decimal | None:
    """The gross saving of a stop (the compute price not paid; storage of the stopped instance
    is not subtracted): hours stopped x the hourly price it stopped paying. Stopped from
    ``since`` until ``until`` (it ran again) or, still stopped, until ``now`` (accruing).
    Unknown when the price or the start is; never negative."""
    end = until if until is not None else now
    if saving_per_hour_usd is None or since is None:
        return None
    if end <= since:
        return Decimal(0)
    return cost_since(saving_per_hour_usd, since, end)


def months_after(when: datetime, months: int) -> datetime:
    """``when`` moved ``months`` calendar months on (the day clamped to the month's length):
    where a subscription's ``endTime`` should land after a renewal of ``months``."""
    if months < 0:
        raise ValueError("months must not be negative")
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    days = calendar.monthrange(year, month)[1]
    return when.replace(year=year, month=month, day=min(when.day, days))


def share_of_cost(hourly_usd: Decimal | None, part: int, whole: int) -> Decimal | None:
    """The hourly cost of ``part`` of an instance's ``whole`` GPUs (its idle GPUs)."""
    if hourly_usd is None or whole <= 0:
        return None
    return hourly_usd * part / whole


def per_month_cost(hourly_usd: Decimal | None) -> Decimal | None:
    """An hourly cost over an average month (:data:`MONTH_HOURS`)."""
    return None if hourly_usd is None else hourly_usd * Decimal(str(MONTH_HOURS))


def per_day_cost(hourly_usd: Decimal | None) -> Decimal | None:
    """An hourly figure (a cost, a saving) over a day of 24 hours."""
    return None if hourly_usd is None else hourly_usd * 24


def average_per_window(
    total_usd: Decimal | None, period: timedelta, window: timedelta
) -> Decimal | None:
    """The average spend per ``window`` over a ``period`` that cost ``total_usd`` (the 7-day
    baseline of a 24-hour spend). Unknown when the total is."""
    if total_usd is None or period <= timedelta(0):
        return None
    return total_usd * Decimal(str(window / period))


@dataclass(frozen=True)
class Span:
    """A stretch of samples: ``start``, its length, the highest GPU utilisation in it (None:
    not sampled) and whether it is covered (a rolled-up hour with minutes missing is not)."""

    start: datetime
    length: timedelta
    peak: float | None
    complete: bool = True


def idle_since(
    spans_newest_first: Iterable[Span | tuple[datetime, float | None]],
    threshold: float,
    *,
    not_before: datetime | None,
    max_gap: timedelta = timedelta(minutes=5),
) -> datetime | None:
    """When the current idle stretch began: walking back from the newest span (a minute, or a
    rolled-up hour), the start of the oldest span of the unbroken run under ``threshold``. The
    run ends at a busy span, one not fully sampled, a gap longer than ``max_gap`` between spans
    (missing data never counts as idle), or ``not_before`` (the last start, or the start of
    stored history). A ``(start, peak)`` pair is a one-minute span. None when the newest span
    is not idle or there is none."""
    since: datetime | None = None
    for item in spans_newest_first:
        span = item if isinstance(item, Span) else Span(item[0], timedelta(minutes=1), item[1])
        if not_before is not None and span.start + span.length <= not_before:
            break
        if span.peak is None or span.peak >= threshold or not span.complete:
            break
        if since is not None and since - (span.start + span.length) > max_gap:
            break
        since = span.start
    if since is not None and not_before is not None:
        since = max(since, not_before)
    return since


def stale(
    last_success: Mapping[str, datetime | None],
    intervals: Mapping[str, int],
    stale_after: float,
    now: datetime,
) -> list[str]:
    """Collectors whose last success is older than ``stale_after`` x their interval (or that
    never succeeded): their data is too old to decide on."""
    out = []
    for name, interval in intervals.items():
        if name not in last_success:
            continue  # not expected (e.g. async tasks while none is watched)
        last = last_success[name]
        if last is None or now - last > timedelta(seconds=interval * stale_after):
            out.append(name)
    return out


def bounded_percent(value: float | None) -> float | None:
    """A utilisation figure, or unknown when outside 0-100 %."""
    if value is None or math.isnan(value) or not 0 <= value <= 100.0001:
        return None
    return value


# --------------------------------------------------------------------------------------------
# remedies: what a charge leaves, what a stop saves


def subscription_prices(
    *,
    listed_unit_usd: Mapping[int, Decimal],
    on_demand_unit_usd: Decimal | None,
    units: Decimal,
    resource_id: str = "",
) -> tuple[dict[int, Decimal | None], list[Problem]]:
    """The price of each month count a product lists (``monthlyPrice[]``) for the whole
    instance: each listed price x the units the instance is billed as, bounded per month as
    :func:`monthly_price` bounds the 1-month price (a count whose price fails is listed with
    an unknown price: renewing it is refused, never guessed)."""
    out: dict[int, Decimal | None] = {}
    problems: list[Problem] = []
    for months, listed in sorted(listed_unit_usd.items()):
        if months < 1:
            continue
        per_month, problem = monthly_price(
            monthly_unit_usd=listed / months,
            on_demand_unit_usd=on_demand_unit_usd,
            units=units,
            resource_id=resource_id,
        )
        out[months] = None if per_month is None else per_month * months
        if problem is not None:
            problems.append(problem)
    return out, problems


def runway_after_charge(
    balance_usd: Decimal | None,
    burn_usd_per_hour: Decimal | None,
    charges: Iterable[Charge],
    charge_usd: Decimal | None,
    now: datetime,
) -> Runway:
    """The runway left if ``charge_usd`` were paid now (a renewal, a conversion): the balance
    less the charge, at the current burn rate, the other charges (auto-renewals) subtracted at
    their time (:func:`runway`). Unknown ("unknown_charge") when the charge is."""
    if charge_usd is None:
        return Runway(None, "unknown_charge", False)
    if balance_usd is None:
        return Runway(None, "unknown_balance", False)
    return runway(balance_usd - charge_usd, burn_usd_per_hour, charges, now)


def lookback_utilisation(avg: float | None, covered_s: float, span_s: float) -> float | None:
    """Average GPU use over a lookback in which unsampled time counts as 0 % (a stopped
    instance is not used): ``avg x covered / span``. Unknown without a span; 0 without
    samples."""
    if span_s <= 0:
        return None
    if avg is None:
        return 0.0
    return bounded_percent(avg * min(1.0, covered_s / span_s))


def data_expires_at(stopped_at: datetime | None, keep_data_day: int | None) -> datetime | None:
    """When a stopped instance's local data is deleted: ``keepDataDay`` days after the stop
    (wire-format §7.5). Unknown when either is."""
    if stopped_at is None or keep_data_day is None or keep_data_day < 0:
        return None
    return stopped_at + timedelta(days=keep_data_day)


def saving_so_far(
    per_hour_usd: Decimal | None,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
) -> Decimal | None:
    """What a stop has saved (gross: the compute price not paid): its hourly price x the hours
    stopped, from ``since`` (the stop) to ``until`` (the next start), or to ``now`` while
    still stopped. Unknown when the price or the stop time is."""
    if per_hour_usd is None or since is None:
        return None
    end = until if until is not None else now
    if end <= since:
        return Decimal(0)
    return per_hour_usd * Decimal(str((end - since).total_seconds() / HOUR_S))


@dataclass(frozen=True)
class SavingLine:
    """One stop's saving as the ledger records it."""

    per_hour_usd: Decimal | None
    since: datetime | None  # when the instance was stopped (None: not stopped yet)
    until: datetime | None = None  # when it ran again (None: still stopped)
    realized_usd: Decimal | None = None  # closed figure, when recorded


@dataclass(frozen=True)
class Savings:
    """Savings of a set of stops: ``expected_usd_per_hour`` of those still stopped,
    ``realized_usd`` closed and accrued (still-stopped instances accrue up to now)."""

    expected_usd_per_hour: Decimal
    realized_usd: Decimal


def savings(lines: Iterable[SavingLine], now: datetime) -> Savings:
    """Sum the savings of ``lines`` (:class:`SavingLine`) at ``now``; a line whose price or
    stop time is unknown adds nothing."""
    expected = Decimal(0)
    realized = Decimal(0)
    for line in lines:
        if line.since is None or line.per_hour_usd is None:
            continue
        if line.until is None:
            expected += line.per_hour_usd
        closed = line.realized_usd if line.until is not None else None
        figure = (
            closed
            if closed is not None
            else saving_so_far(line.per_hour_usd, line.since, line.until, now)
        )
        realized += figure or Decimal(0)
    return Savings(expected, realized)


# --------------------------------------------------------------------------------------------
# reports: spend by day, instance and product; idle GPU-hours and their cost; savings in a window


@dataclass(frozen=True)
class Spent:
    """What the bills of one owner and product that started on one UTC day paid in a window
    (summed and weighted by the store: ``MoneyRepo.usage_spend_groups``)."""

    day: datetime
    owner_id: str
    product_id: str
    paid: Decimal


def spend_by(
    groups: Iterable[Spent], key: Callable[[Spent], str], known: Callable[[Spent], bool]
) -> dict[str, Decimal | None]:
    """The paid amounts of ``groups`` added up per ``key`` (a day, an owner, a product). A
    key with any group for which ``known`` is false (a day before the stored bills' history)
    is unknown: a partial sum is never shown as the figure."""
    out: dict[str, Decimal | None] = {}
    for group in groups:
        name = key(group)
        before = out.get(name, Decimal(0))
        out[name] = None if before is None or not known(group) else before + group.paid
    return out


def idle_gpu_hours(idle_minutes: int, gpu_count: int) -> float:
    """GPU-hours an instance sat idle: its minutes in which every GPU stayed under the idle
    threshold (counted by the store: ``MetricsRepo.idle_minute_counts``), times its GPUs. A
    minute not sampled is never idle (missing data is not idleness)."""
    return idle_minutes / 60.0 * max(gpu_count, 1)


def idle_cost(
    spent_usd: Decimal | None,
    billed_hours: float | None,
    idle_gpu_hours: float | None,
    gpu_count: int,
    window: timedelta,
) -> Decimal | None:
    """What an instance's idle GPU-hours cost at the rate its bills charged in the window
    (``spent / billed hours``, hours of the whole instance; the bills may lag the samples by
    the hour being billed, so idle hours may exceed billed ones a little). Unknown without
    spend or billed hours, or when the idle hours exceed the window (a physical limit)."""
    if spent_usd is None or billed_hours is None or idle_gpu_hours is None:
        return None
    idle_hours = idle_gpu_hours / max(gpu_count, 1)
    if idle_hours == 0:
        return Decimal(0)
    if billed_hours <= 0 or idle_hours > window.total_seconds() / HOUR_S * _HOURS_SLACK:
        return None
    return spent_usd / Decimal(str(billed_hours)) * Decimal(str(idle_hours))


def clip_saving(line: SavingLine, start: datetime, end: datetime) -> SavingLine | None:
    """The part of a stop's saving that falls in ``[start, end)``: the stop clipped to the
    window (its recorded figure kept only when the stop lies wholly inside); None when the
    stop does not overlap the window."""
    if line.since is None or line.since >= end:
        return None
    until = line.until if line.until is not None and line.until < end else None
    if line.until is not None and line.until <= start:
        return None
    since = max(line.since, start)
    inside = since == line.since and until is not None
    return SavingLine(
        line.per_hour_usd,
        since,
        until if until is not None else end,
        line.realized_usd if inside else None,
    )


def total(values: Iterable[Decimal | None]) -> Decimal | None:
    """The sum of money figures; unknown when any of them is."""
    out = Decimal(0)
    for value in values:
        if value is None:
            return None
        out += value
    return out


def total_hours(values: Iterable[float | None]) -> float | None:
    """The sum of hours; unknown when any of them is."""
    out = 0.0
    for value in values:
        if value is None:
            return None
        out += value
    return out
