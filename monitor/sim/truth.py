"""The scenario's ground truth, computed from the fleet model, never from the wire answers.

``GET /_sim/truth`` (:func:`truth_json`) and ``GET /_sim/truth/metrics`` (:func:`metrics_truth`).
The wire answers say the same things in the form some quirk dictates (:mod:`monitor.sim.quirks`);
these answers say them once, in plain units (USD, hours, percent, ISO 8601 UTC), so a test can
hold the monitor's figures against them under every quirk.

``GET /_sim/truth[?since=T]`` (``T`` Unix seconds or ISO 8601) answers::

    {"now": ISO, "unix": int, "scenario": str, "quirks": {key: value},
     "window_30d": {"start": ISO, "end": ISO},
     "account": {...}, "instances": [{...}, ...]}

``account``:

* ``balance_usd``: the available balance now (may be negative: the simulator stops nothing).
* ``in_arrears``: ``balance_usd < 0``.
* ``burn_usd_per_hour``: the sum of ``hourly_cost_usd`` over the instances billing now.
* ``runway_hours``: hours until the balance reaches 0 at that burn, counting the subscription
  renewals the model will charge on the way (auto-renew on: charged 3 days before ``endTime``,
  as the console says, wire-format §7.4; at ``endTime`` if that charge failed; the next
  renewal only, a runway rarely spans two; a charge the balance left then cannot cover ends
  the runway at its time, the convention :func:`monitor.economics.runway` keeps, although the
  model then switches that subscription to pay-as-you-go rather than stopping it; a stopped
  subscription's renewal counts too); ``0`` when the balance is not positive; ``null``
  when nothing burns (``runway_reason: "no_burn"``).
* ``runway_reason``: ``null``, ``"no_burn"`` or ``"in_arrears"``.

Each item of ``instances`` (removed instances included while they have usage in the window):

* ``id``, ``name``, ``status``, ``billing_mode`` (``null`` for the wire's ``""``),
  ``gpu_count``, ``cpu_count``, ``product_id``, ``cluster_id``, ``profile`` (the utilization
  profile now), ``end_time`` (ISO or ``null``), ``auto_renew``.
* ``billing_now``: usage is being charged now (running, inside its pay-as-you-go span).
* ``hourly_cost_usd``: what it is charged per hour now; ``null`` when not billing (stopped,
  pulling, pending, or a subscription inside its term).
* ``paygo_rate_usd_per_hour``: what one running hour costs it by usage: its on-demand or spot
  rate; for a subscription, the on-demand rate it would pay without one.
* ``running_hours_30d``: hours it was running in ``[now - 30 d, now)``, whatever its billing.
* ``card_hours_30d``: ``running_hours_30d`` x ``gpu_count``.
* ``usage_hours_30d``: the running hours charged by usage in the window (the hours its usage
  bills cover; a subscription's running hours are not among them).
* ``cost_30d_usd``: the usage charged in the window, to the second. Bills exist for completed
  hours only, so a monitor reading bills trails these four figures by up to one hour of
  running (plus its bill collection interval).
* ``monthly_price_usd``: the true price of a 1-month subscription of this instance (all its
  GPUs; the listed price once under ``price-basis=per-instance``).
* ``break_even_hours``: ``monthly_price_usd / paygo_rate_usd_per_hour``: running hours a
  month above which the subscription is cheaper.
* ``monthly_saving_usd``: for an on-demand instance, ``max(0, hourly rate x steady hours per
  month - monthly_price_usd)``: what a 1-month subscription would save at the use it sustains.
  Steady hours per month: the smaller of its running hours over the last 7 and the last 30
  days, each scaled to an average month of 730 h (365 x 24 / 12), so a burst in the last days
  is not taken for steady use; the same definition the monitor's subscription advice uses
  (``monitor.economics.steady_hours_per_month``), applied here to the true hours. ``null`` for
  spot (cannot be converted), subscriptions and instances in no billing mode.
* ``idle_since``: when its GPUs became idle (utilization profile ``idle``) and stayed so while
  running, ISO; ``null`` when not running or not idle. ``idle_gpu_ids``: the GPUs of a
  partially idle instance (profile ``partial``), ``[]`` otherwise.
* with ``?since=T``: ``running_hours_since``, ``card_hours_since``, ``usage_hours_since`` and
  ``cost_since_usd``, as above over ``[T, now)``.

``GET /_sim/truth/metrics?instanceId=I&start=S&end=E[&interval=60]`` answers the true
utilization at each ``interval``-aligned time in ``[S, E]`` at which ``I`` was running,
whatever the API has published yet (the metric lag) and in plain form (the ``cpu`` quirk does
not apply): ``{"instance_id", "points": [{"ts": unix, "gpu_util": mean of the GPUs,
"gpu_utils": [per GPU], "gpu_mem": mean, "cpu_per_core": 0-100, "mem", "disk"}]}``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from monitor.sim import catalog, profiles
from monitor.sim.fleet import DAY, HOUR, FleetSim, SimInstance

WINDOW_30D = 30 * DAY
#: an average month, in hours (365 x 24 / 12): what "per month" means
MONTH_HOURS = 730.0


def _iso(t: int | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _usd(amount_10k: float, places: int = 6) -> float:
    return round(amount_10k / 10000, places)


def billing_now(inst: SimInstance, now: int) -> bool:
    return bool(inst.runs) and inst.runs[-1][1] is None and inst.paygo_until is None


def paygo_rate_10k(inst: SimInstance) -> float:
    """1/10000 USD per running hour by usage: its own rate, or on demand for a subscription."""
    if inst.billing_mode in ("onDemand", "spot"):
        return inst.rate_10k_per_hour()
    return catalog.hourly_price(inst.product_id, inst.cluster_id) * inst.price_units / 10


def monthly_price_10k(inst: SimInstance) -> float:
    return catalog.monthly_price(inst.product_id, inst.cluster_id, 1) * inst.price_units / 10


def idle_since(inst: SimInstance, now: int) -> int | None:
    """Start of the current stretch of profile ``idle`` within the current run, if any."""
    if inst.status != "running" or not inst.runs or inst.runs[-1][1] is not None:
        return None
    if inst.profile_at(now) != "idle":
        return None
    since = 0
    for at, profile in inst.profiles:
        if at > now:
            break
        if profile == "idle" and (since == 0 or inst.profile_at(at - 1) != "idle"):
            since = at
    start = inst.runs[-1][0]
    assert start is not None
    return max(since, start)


def _window(inst: SimInstance, a: int, now: int) -> dict[str, float]:
    running = inst.run_seconds(a, now, now)
    usage = inst.paygo_seconds(a, now, now)
    return {
        "running_hours": round(running / HOUR, 6),
        "card_hours": round(running * inst.gpu_num / HOUR, 6),
        "usage_hours": round(usage / HOUR, 6),
        "cost_usd": _usd(inst.rate_10k_per_hour() * usage / HOUR),
    }


def instance_truth(inst: SimInstance, now: int, since: int | None) -> dict[str, Any]:
    billing = billing_now(inst, now)
    rate = paygo_rate_10k(inst)
    monthly = monthly_price_10k(inst)
    month = _window(inst, now - WINDOW_30D, now)
    saving = None
    if inst.billing_mode == "onDemand":
        week = _window(inst, now - 7 * DAY, now)
        steady = min(
            week["running_hours"] * MONTH_HOURS / (7 * 24),
            month["running_hours"] * MONTH_HOURS / (30 * 24),
        )
        saving = round(max(0.0, _usd(rate) * steady - _usd(monthly)), 6)
    idle = idle_since(inst, now)
    out: dict[str, Any] = {
        "id": inst.id,
        "name": inst.name,
        "status": inst.status,
        "billing_mode": inst.billing_mode or None,
        "gpu_count": inst.gpu_num,
        "cpu_count": inst.cpu_num,
        "product_id": inst.product_id,
        "cluster_id": inst.cluster_id,
        "profile": inst.profile_at(now),
        "end_time": _iso(inst.end_time) if inst.billing_mode == "monthly" else None,
        "auto_renew": inst.auto_renew,
        "billing_now": billing,
        "hourly_cost_usd": _usd(inst.rate_10k_per_hour()) if billing else None,
        "paygo_rate_usd_per_hour": _usd(rate),
        "running_hours_30d": month["running_hours"],
        "card_hours_30d": month["card_hours"],
        "usage_hours_30d": month["usage_hours"],
        "cost_30d_usd": month["cost_usd"],
        "monthly_price_usd": _usd(monthly),
        "break_even_hours": round(monthly / rate, 4) if rate > 0 else None,
        "monthly_saving_usd": saving,
        "idle_since": _iso(idle),
        "idle_gpu_ids": sorted(inst.idle_gpus) if inst.profile_at(now) == "partial" else [],
    }
    if since is not None:
        part = _window(inst, since, now)
        out["running_hours_since"] = part["running_hours"]
        out["card_hours_since"] = part["card_hours"]
        out["usage_hours_since"] = part["usage_hours"]
        out["cost_since_usd"] = part["cost_usd"]
    return out


def runway(
    balance_10k: float, burn_10k: float, charges: list[tuple[int, float]], now: int
) -> float:
    """Hours until the balance reaches 0 burning ``burn_10k`` per hour, with ``charges``
    (``(time, amount)``, in the future) debited at their times."""
    left = balance_10k
    t = now
    for at, amount in sorted(charges):
        hours = (at - t) / HOUR
        if left - burn_10k * hours <= 0:
            break
        left -= burn_10k * hours + amount
        t = at
        if left <= 0:
            return (t - now) / HOUR
    return (t - now) / HOUR + left / burn_10k


def truth_json(sim: FleetSim, since: int | None = None) -> dict[str, Any]:
    """The answer of ``GET /_sim/truth`` (see the module docstring)."""
    with sim._lock:
        now = sim.now_ts()
        balance = sim.balance_10k()
        window_start = now - WINDOW_30D
        items = [
            i
            for i in sim.all_instances()
            if i.status != "removed" or i.paygo_seconds(window_start, now, now) > 0
        ]
        burn = sum(i.rate_10k_per_hour() for i in items if billing_now(i, now))
        renewals = [
            (due, float(sim._renew_cost(i, i.auto_renew_month)))
            for i in items
            if (due := sim.renewal_due(i)) is not None
        ]
        instances = [instance_truth(i, now, since) for i in items]
    reason: str | None = None
    hours: float | None
    if balance <= 0:
        hours, reason = 0.0, "in_arrears" if balance < 0 else None
    elif burn <= 0:
        hours, reason = None, "no_burn"
    else:
        hours = round(runway(balance, burn, renewals, now), 4)
    return {
        "now": _iso(now),
        "unix": now,
        "scenario": sim.scenario,
        "quirks": sim.quirks.as_dict(),
        "window_30d": {"start": _iso(window_start), "end": _iso(now)},
        "account": {
            "balance_usd": _usd(balance),
            "in_arrears": balance < 0,
            "burn_usd_per_hour": _usd(burn),
            "runway_hours": hours,
            "runway_reason": reason,
        },
        "instances": instances,
    }


def metrics_truth(
    sim: FleetSim, instance_id: str, start: int, end: int, interval: int = 60
) -> dict[str, Any]:
    """The answer of ``GET /_sim/truth/metrics`` (see the module docstring)."""
    inst = sim.instance(instance_id)
    now = sim.now_ts()
    key = sim.key(inst.id)
    interval = max(1, interval)
    points = []
    t = -(-start // interval) * interval
    while t <= min(end, now):
        if inst.running_at(t, now):
            profile = inst.profile_at(t)
            gpus = [
                profiles.gpu_util(profile, key, g, t, g in inst.idle_gpus)
                for g in range(inst.gpu_num)
            ]
            vrams = [
                profiles.gpu_mem_util(profile, key, g, t, g in inst.idle_gpus)
                for g in range(inst.gpu_num)
            ]
            points.append(
                {
                    "ts": t,
                    "gpu_util": sum(gpus) / len(gpus),
                    "gpu_utils": gpus,
                    "gpu_mem": sum(vrams) / len(vrams),
                    "cpu_per_core": profiles.cpu_per_core(profile, key, t),
                    "mem": profiles.mem_util(profile, key, t),
                    "disk": profiles.root_disk_util(key, t),
                }
            )
        t += interval
    return {"instance_id": inst.id, "points": points}
