"""Re-checks at execution, on fresh data: pure functions of a fresh get-instance (and fresh
metrics, fixed-term bills) and the row's planning snapshot. Each answers ``None`` (go ahead) or
the reason not to act.

The stop's condition is judged by the rule's own ``when`` tree (the same condition functions as
the evaluation, :mod:`monitor.rules.conditions`) over an :class:`InMemoryFacts` built from the
fresh samples: one definition of "idle", whether read from the store or fresh from the API.

The planning snapshot is the row's ``facts`` (or ``facts["instance"]`` when the planner nests
it): ``status``, ``billing_mode``, ``last_started_at``, ``created_at``, ``end_time``,
``auto_renew`` (times as ISO 8601 text or null).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor import economics
from monitor.novita.models import FixedTermBill, Instance, InstanceMetrics, MetricPoint
from monitor.rules.context import CachedFacts, EvalContext, Resource, Result
from monitor.rules.facts import SAMPLE_STEP_S, InMemoryFacts, InstanceFact, Samples
from monitor.rules.model import Rule
from monitor.rules.tree import metric_windows
from monitor.store.models import ActionRecord

#: two readings of one instant (seconds on the wire, stored and read back) agree within this
SAME_TIME = timedelta(seconds=1)
#: statuses of an instance being stopped, or stopped
STOPPING = frozenset({"toStop", "stopping", "exited"})
#: a fresh metrics read reaches back this far beyond the rule's longest window
METRIC_MARGIN = timedelta(minutes=5)
#: the values of the protection variable that protect
PROTECT_VALUES = frozenset({"true", "1", "yes"})


# -- the planning snapshot ---------------------------------------------------------------------


def snapshot(row: ActionRecord) -> dict[str, Any]:
    """The instance as planning saw it (``facts["instance"]`` or ``facts`` itself)."""
    facts = row.facts or {}
    nested = facts.get("instance")
    return dict(nested) if isinstance(nested, dict) else dict(facts)


def parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def same_time(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= SAME_TIME


def _shown(when: datetime | None) -> str:
    return when.isoformat() if when else "none"


# -- stop ---------------------------------------------------------------------------------------


def changed_since_planning(inst: Instance, snap: Mapping[str, Any]) -> str | None:
    """Status, billing mode or ``lastStartedAt`` moved since planning (for a stop: the run
    planned for is not the run running now)."""
    missing = [k for k in ("status", "billing_mode", "last_started_at") if k not in snap]
    if missing:
        return f"the planning snapshot lacks {', '.join(missing)}: cannot tell it is unchanged"
    if inst.status != snap["status"]:
        return f"status changed since planning: {snap['status']} -> {inst.status}"
    if (inst.billing_mode or None) != (snap["billing_mode"] or None):
        return f"billing mode changed since planning: {snap['billing_mode']} -> {inst.billing_mode}"
    planned = parse_time(snap["last_started_at"])
    if not same_time(inst.last_started_at, planned):
        return (
            f"lastStartedAt changed since planning: {_shown(planned)} -> "
            f"{_shown(inst.last_started_at)} (it was started again)"
        )
    return None


def not_stoppable(inst: Instance, include_spot: bool) -> str | None:
    """Only running pay-as-you-go instances, and spot ones when the rule's stop says so."""
    if inst.status != "running":
        return f"status is {inst.status or 'unknown'}, not running"
    mode = inst.billing_mode
    if mode == "onDemand" or (mode == "spot" and include_spot):
        return None
    if mode == "spot":
        return "a spot instance (the rule's stop does not say include_spot: true)"
    if mode == "monthly":
        return "a subscription (a stop saves nothing on prepaid time)"
    return f"billing mode {mode or 'unknown'} is not stoppable"


def protection(inst: Instance, names: Iterable[str], env_var: str) -> str | None:
    """The instance's environment says ``NOVITA_MONITOR_PROTECT=true``, or a protect glob
    matches its name."""
    value = inst.env.get(env_var)
    if value is not None and value.strip().lower() in PROTECT_VALUES:
        return f"protected: its environment has {env_var}={value}"
    for pattern in names:
        if inst.name and fnmatch.fnmatchcase(inst.name, pattern):
            return f"protected: its name {inst.name!r} matches {pattern!r}"
    return None


def instance_fact(inst: Instance, base: InstanceFact | None) -> InstanceFact:
    """The fresh get-instance as an :class:`InstanceFact`, over the stored one's figures (its
    hourly cost and monthly price come from the facts, i.e. from :mod:`monitor.economics`)."""
    fresh = base if base is not None else InstanceFact(id=inst.id)
    return replace(
        fresh,
        name=inst.name,
        status=inst.status,
        billing_mode=inst.billing_mode or None,
        gpu_count=inst.gpu_num,
        cpu_num=inst.cpu_num,
        product_id=inst.product_id or fresh.product_id,
        product_name=inst.product_name or fresh.product_name,
        cluster_id=inst.cluster_id or fresh.cluster_id,
        end_time=inst.end_time,
        created_at=inst.created_at,
        last_started_at=inst.last_started_at,
        error_state=inst.error_state,
        labels=inst.env,
        auto_renew=inst.auto_renew,
        auto_renew_months=inst.auto_renew_month,
        keep_data_day=inst.keep_data_day,
    )


def metric_span(rule: Rule) -> timedelta:
    """How far back the fresh metrics must reach for the rule's condition."""
    return max(metric_windows(rule.when), default=timedelta(0)) + METRIC_MARGIN


def _stamp(point: MetricPoint) -> datetime:
    # the store keeps a point in the minute it falls in; the in-memory facts stamp a sample at
    # its minute's end (``start < t <= end``): the same windows either way
    minute = point.ts - point.ts % SAMPLE_STEP_S
    return datetime.fromtimestamp(minute + SAMPLE_STEP_S, tz=UTC)


def _samples(points: Iterable[MetricPoint]) -> Samples:
    return sorted((_stamp(p), p.value) for p in points)


def fresh_facts(
    account: str, fact: InstanceFact, metrics: InstanceMetrics | None, since: datetime
) -> InMemoryFacts:
    """Facts of one instance from a fresh metrics answer covering ``since`` .. now."""
    series: dict[tuple[str, str], Samples] = {}
    per_gpu: dict[tuple[str, str, str], Samples] = {}
    if metrics is not None:
        named = {
            "gpu_util": metrics.gpu_utilization.avg,
            "gpu_mem": metrics.gpu_mem_utilization.avg,
            "cpu": metrics.cpu_per_core(fact.cpu_num),
            "mem": metrics.mem_utilization,
            "disk": metrics.root_disk_utilization,
        }
        for name, points in named.items():
            if points:
                series[(fact.id, name)] = _samples(points)
        for name, gpus in (
            ("gpu_util", metrics.gpu_utilization),
            ("gpu_mem", metrics.gpu_mem_utilization),
        ):
            for gpu in gpus.gpu_ids:
                if gpu.items:
                    per_gpu[(fact.id, gpu.gpu_id, name)] = _samples(gpu.items)
    return InMemoryFacts(
        instance_list={account: [fact]},
        metrics=series,
        gpu_metrics=per_gpu,
        history_starts={account: since},
        account_names=[account],
    )


def newest_gpu_sample(metrics: InstanceMetrics) -> datetime | None:
    points = [*metrics.gpu_utilization.avg]
    for gpu in metrics.gpu_utilization.gpu_ids:
        points.extend(gpu.items)
    return max((p.timestamp for p in points), default=None)


def unseen_since_due(row: ActionRecord, newest: datetime) -> str | None:
    """Why an announced stop must wait for newer samples, or ``None``.

    A stop announced with a grace is re-judged with a sample taken at or after its grace's end:
    the grace is watched to its end. The metrics arrive a minute or two late, so without this
    the last minutes of the grace were never seen, and work that resumed then (the owner's
    answer to the announcement, or a job that starts on the hour as the grace ends) was
    stopped. A stop without a grace (``planned``) has nothing more to watch. The wait is
    bounded by ``metrics_max_age``: a sample that never comes makes the data stale, and the
    stop is aborted."""
    if row.state != "announced" or row.due_at is None or newest >= row.due_at:
        return None
    return (
        f"waiting for a sample taken at or after {_shown(row.due_at)} (its grace's end; the "
        f"newest is {_shown(newest)})"
    )


def judge(
    rule: Rule, account: str, fact: InstanceFact, facts: InMemoryFacts, now: datetime
) -> Result:
    """The rule's condition for this instance over ``facts`` (as the evaluation judges it)."""
    ctx = EvalContext(CachedFacts(facts), account, now, rule.severity)
    resource = Resource("instance", fact.id, account, fact.name, fact.field_map(), fact)
    return rule.when.evaluate(ctx, resource)


def condition_verdict(result: Result) -> str | None:
    if result.match is True:
        return None
    if result.match is None:
        return "fresh data missing or too short to judge the condition"
    shown = {k: result.values[k] for k in ("value", "threshold") if k in result.values}
    figures = f" ({', '.join(f'{k} {v}' for k, v in shown.items())})" if shown else ""
    return f"the condition no longer holds on fresh data{figures}: it became busy"


# -- renew --------------------------------------------------------------------------------------


def renewal_refusal(
    inst: Instance, snap: Mapping[str, Any], bills: Iterable[FixedTermBill], now: datetime
) -> str | None:
    """Why a renewal must not be paid now: not a subscription, ``endTime`` moved since
    planning, auto-renew on (or unknown) within :data:`~monitor.economics.AUTO_RENEW_LEAD` of
    ``endTime`` (the platform charges then), or a renewal bill for this period exists."""
    if inst.billing_mode != "monthly" or inst.end_time is None:
        return f"not a subscription with an endTime (billing mode {inst.billing_mode or 'unknown'})"
    if "end_time" not in snap:
        return "the planning snapshot lacks end_time: cannot tell which period to renew"
    planned = parse_time(snap["end_time"])
    if not same_time(inst.end_time, planned):
        return f"endTime moved since planning: {_shown(planned)} -> {_shown(inst.end_time)}"
    if inst.auto_renew is not False and now >= inst.end_time - economics.AUTO_RENEW_LEAD:
        state = "on" if inst.auto_renew else "unknown"
        return (
            f"auto-renew is {state} and endTime {_shown(inst.end_time)} is within "
            f"{economics.AUTO_RENEW_LEAD.days} days: the platform charges then"
        )
    bill = renewal_bill(bills, inst.end_time)
    if bill is not None:
        return (
            f"a renewal bill for this period already exists (from {_shown(bill.start_time)}, "
            f"created {_shown(bill.create_time)})"
        )
    return None


def renewal_bill(bills: Iterable[FixedTermBill], period_end: datetime) -> FixedTermBill | None:
    """A fixed-term bill paying for time from ``period_end`` on (the period after the one
    being renewed): a renewal already paid."""
    for bill in bills:
        if bill.start_time is not None and bill.start_time >= period_end - timedelta(hours=1):
            return bill
    return None


def months_of(row: ActionRecord) -> int:
    months = (row.params or {}).get("months", 1)
    if isinstance(months, bool) or not isinstance(months, int) or months < 1:
        raise ValueError(
            f"action {row.id}: params.months must be a positive integer, got {months!r}"
        )
    return months
