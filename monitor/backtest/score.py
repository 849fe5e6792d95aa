"""The backtest's oracle and scores: pure functions over ground-truth traces, the stops that were
made (from the action ledger, with the times the simulator's owner started each instance again),
the alerts seen and the subscriptions' fate. No I/O; :mod:`monitor.backtest.run` gathers the
inputs.

Definitions (issue 12 §3):

* An *idle gap* is a maximal run of idle time in a trace. The **oracle** stops each
  pay-as-you-go instance (on demand or spot; a subscription's time is prepaid) at the start of
  every idle gap longer than the restart cost (:data:`RESTART_COST`, 10 minutes of the
  instance's GPU time) and starts it again when work resumes: it avoids ``(gap - restart cost) x
  GPUs`` GPU-hours per gap that ends in work, ``gap x GPUs`` for one that lasts to the horizon.
* The **rules** avoid, per stop, the idle time the instance spent stopped (times its GPUs), less
  the restart cost when the owner started it again, less the work time that found it stopped
  (the work that found its instance stopped counts against the rules).
* ``oracle_capture`` = rules' avoided GPU-hours / oracle's.
* ``net_savings_usd``: per stop, the compute price not paid while stopped, less the restart cost
  in GPU time, less the storage of the stopped instance (all through :mod:`monitor.economics`).
* ``false_stops``: stops made while the trace says work; ``prepaid_stops``: stops of
  subscription instances; ``actions_on_missing_data``: stops whose idle window (up to the
  stop) missed more than ``1 - min_coverage`` of its samples to a metrics outage.
* Detection latency: per idle gap longer than the window starting inside the horizon, the first
  time the idle alert was seen firing in the gap, less the gap's start, less the window.
* ``missed_expiries``: wanted subscriptions that lapsed; ``duplicate_renewals``: renewals
  beyond the first of the same subscription period.
* ``runway_alert_lead_h``: from the start of the runway alert's firing stretch that lasted up to
  the moment the balance reached zero, to that moment.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from monitor import economics

RESTART_COST = timedelta(minutes=10)
PAY_AS_YOU_GO = frozenset({"onDemand", "spot"})
HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Span:
    start: datetime
    end: datetime
    work: bool


@dataclass(frozen=True, slots=True)
class Trace:
    """One instance's ground truth over the horizon (spans contiguous, in order)."""

    instance_id: str
    gpu_count: int
    billing_mode: str
    spans: tuple[Span, ...]
    #: the true price of one running hour (USD), for the dollar figures
    hourly_usd: Decimal | None = None
    #: what its storage costs per hour while stopped (USD)
    storage_usd_per_hour: Decimal | None = None
    outages: tuple[tuple[datetime, datetime], ...] = ()


@dataclass(frozen=True, slots=True)
class Stop:
    """A stop a rule made: when the instance was stopped, and when it ran again (None: still
    stopped at the horizon's end)."""

    instance_id: str
    at: datetime
    until: datetime | None
    billing_mode: str
    rule: str = ""
    hourly_usd: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Gap:
    start: datetime
    end: datetime
    resumed: bool  # work follows it inside the horizon

    @property
    def length(self) -> timedelta:
        return self.end - self.start


def idle_gaps(trace: Trace) -> list[Gap]:
    """The maximal idle stretches of a trace."""
    out: list[Gap] = []
    cur: Span | None = None
    for span in trace.spans:
        if span.work:
            if cur is not None:
                out.append(Gap(cur.start, cur.end, True))
                cur = None
        elif cur is None:
            cur = span
        else:
            cur = Span(cur.start, span.end, False)
    if cur is not None:
        out.append(Gap(cur.start, cur.end, False))
    return out


def _hours(d: timedelta) -> float:
    return d.total_seconds() / 3600


def oracle_gap_hours(gap: Gap, gpu_count: int) -> float:
    """GPU-hours the oracle avoids in one gap (0 when the gap is not longer than a restart)."""
    if gap.length <= RESTART_COST:
        return 0.0
    cost = RESTART_COST if gap.resumed else timedelta(0)
    return _hours(gap.length - cost) * gpu_count


def oracle_avoided_hours(traces: Iterable[Trace]) -> float:
    return sum(
        oracle_gap_hours(g, t.gpu_count)
        for t in traces
        if t.billing_mode in PAY_AS_YOU_GO
        for g in idle_gaps(t)
    )


def _overlap(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> timedelta:
    return max(timedelta(0), min(a1, b1) - max(a0, b0))


def _split(trace: Trace, a: datetime, b: datetime) -> tuple[timedelta, timedelta]:
    """(idle, work) time of the trace inside ``[a, b)``."""
    idle = work = timedelta(0)
    for span in trace.spans:
        part = _overlap(span.start, span.end, a, b)
        if span.work:
            work += part
        else:
            idle += part
    return idle, work


def horizon_end(traces: Iterable[Trace]) -> datetime:
    return max(t.spans[-1].end for t in traces)


def stop_hours(trace: Trace, stop: Stop, end: datetime) -> float:
    """GPU-hours a stop avoided: idle time stopped, less the restart, less the work lost."""
    until = min(stop.until or end, end)
    idle, work = _split(trace, stop.at, until)
    cost = RESTART_COST if stop.until is not None and stop.until < end else timedelta(0)
    return _hours(idle - cost - work) * trace.gpu_count


def rules_avoided_hours(traces: Sequence[Trace], stops: Iterable[Stop]) -> float:
    by_id = {t.instance_id: t for t in traces}
    end = horizon_end(traces)
    return sum(
        stop_hours(by_id[s.instance_id], s, end)
        for s in stops
        if s.instance_id in by_id and s.billing_mode in PAY_AS_YOU_GO
    )


def oracle_capture(traces: Sequence[Trace], stops: Iterable[Stop]) -> float | None:
    oracle = oracle_avoided_hours(traces)
    if oracle <= 0:
        return None
    return rules_avoided_hours(traces, stops) / oracle


def working_at(trace: Trace, t: datetime) -> bool:
    return any(s.start <= t < s.end and s.work for s in trace.spans)


def false_stops(traces: Sequence[Trace], stops: Iterable[Stop]) -> list[Stop]:
    by_id = {t.instance_id: t for t in traces}
    return [s for s in stops if s.instance_id in by_id and working_at(by_id[s.instance_id], s.at)]


def work_started_before(trace: Trace, t: datetime) -> datetime | None:
    """When the stretch of work going on at ``t`` began (None: idle at ``t``)."""
    began: datetime | None = None
    for span in trace.spans:
        if span.start > t:
            break
        began = (began or span.start) if span.work else None
    return began if working_at(trace, t) else None


def blind_false_stops(traces: Sequence[Trace], stops: Iterable[Stop], lag: timedelta) -> list[Stop]:
    """The false stops made less than ``lag`` after the work began: no monitor could see that
    work yet (the API publishes a minute's samples about a minute later)."""
    by_id = {t.instance_id: t for t in traces}
    out = []
    for s in false_stops(traces, stops):
        began = work_started_before(by_id[s.instance_id], s.at)
        if began is not None and s.at - began < lag:
            out.append(s)
    return out


def prepaid_stops(stops: Iterable[Stop]) -> list[Stop]:
    return [s for s in stops if s.billing_mode not in PAY_AS_YOU_GO]


def stops_on_missing_data(
    traces: Sequence[Trace], stops: Iterable[Stop], window: timedelta, min_coverage: float
) -> list[Stop]:
    """Stops whose window ``[at - window, at)`` lost more than ``1 - min_coverage`` of it to
    metric outages."""
    by_id = {t.instance_id: t for t in traces}
    out = []
    for s in stops:
        trace = by_id.get(s.instance_id)
        if trace is None:
            continue
        lost = sum((_overlap(a, b, s.at - window, s.at) for a, b in trace.outages), timedelta(0))
        if lost > window * (1 - min_coverage):
            out.append(s)
    return out


def net_savings_usd(traces: Sequence[Trace], stops: Iterable[Stop]) -> Decimal | None:
    """Compute not paid while stopped, less restart costs and storage; None when a price is
    unknown."""
    by_id = {t.instance_id: t for t in traces}
    end = horizon_end(traces)
    total = Decimal(0)
    for s in stops:
        trace = by_id.get(s.instance_id)
        if trace is None or s.billing_mode not in PAY_AS_YOU_GO:
            continue
        hourly = s.hourly_usd if s.hourly_usd is not None else trace.hourly_usd
        until = min(s.until or end, end)
        saved = economics.cost_since(hourly, s.at, until)
        storage = economics.cost_since(trace.storage_usd_per_hour or Decimal(0), s.at, until)
        restart = Decimal(0)
        if s.until is not None and s.until < end:
            restart = economics.cost_since(hourly, s.at, s.at + RESTART_COST) or Decimal(0)
        if saved is None or storage is None:
            return None
        total += saved - storage - restart
    return total


def oracle_savings_usd(traces: Iterable[Trace]) -> Decimal | None:
    """The oracle's net savings, on the same terms."""
    total = Decimal(0)
    for t in traces:
        if t.billing_mode not in PAY_AS_YOU_GO:
            continue
        for g in idle_gaps(t):
            if g.length <= RESTART_COST:
                continue
            saved = economics.cost_since(t.hourly_usd, g.start, g.end)
            storage = economics.cost_since(t.storage_usd_per_hour or Decimal(0), g.start, g.end)
            restart: Decimal | None = Decimal(0)
            if g.resumed:
                restart = economics.cost_since(t.hourly_usd, g.start, g.start + RESTART_COST)
            if saved is None or storage is None or restart is None:
                return None
            total += saved - storage - restart
    return total


def detection_latencies(
    traces: Sequence[Trace],
    firing: Iterable[tuple[str, datetime]],
    window: timedelta,
    horizon_start: datetime,
) -> list[timedelta]:
    """Per idle gap (of a pay-as-you-go instance) longer than ``window`` that starts after
    ``horizon_start`` and in which the idle alert was seen firing: first firing - start -
    window."""
    seen: dict[str, list[datetime]] = {}
    for iid, at in firing:
        seen.setdefault(iid, []).append(at)
    out = []
    for t in traces:
        if t.billing_mode not in PAY_AS_YOU_GO:
            continue
        times = sorted(seen.get(t.instance_id, []))
        for g in idle_gaps(t):
            if g.start <= horizon_start or g.length <= window:
                continue
            inside = [x for x in times if g.start <= x < g.end]
            if inside:
                out.append(inside[0] - g.start - window)
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def duplicate_renewals(renewals: Iterable[tuple[str, datetime]]) -> int:
    """Renewals ``(instance, period start)`` beyond the first of each period."""
    counts = Counter(renewals)
    return sum(n - 1 for n in counts.values())


def missed_expiries(subscriptions: Iterable[tuple[str, bool, bool]]) -> list[str]:
    """``(instance, wanted, lapsed)``: the wanted ones that lapsed."""
    return [iid for iid, wanted, lapsed in subscriptions if wanted and lapsed]


def runway_alert_lead(
    samples: Sequence[tuple[datetime, bool]], zero_at: datetime | None
) -> timedelta | None:
    """``samples``: ``(time, alert firing)`` in time order. The lead of the firing stretch that
    lasted up to ``zero_at`` (None: the balance never reached zero, or no alert fired before)."""
    if zero_at is None:
        return None
    began: datetime | None = None
    for at, on in samples:
        if at > zero_at:
            break
        if on and began is None:
            began = at
        elif not on:
            began = None
    return None if began is None else zero_at - began
