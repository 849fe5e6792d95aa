"""The daemon's Prometheus metrics: what ``/metrics`` exposes (served by :mod:`monitor.web`).

Two kinds of figures, in a registry of the daemon's own (never ``prometheus_client``'s global
one, so one process may hold several):

* the fleet's figures, read at scrape time by :class:`FleetCollector` (a custom collector)
  from the same :class:`~monitor.facts.StoreFacts` and ``status`` code as ``status --json``,
  so the two never disagree; nothing is computed here. A figure that is unknown there (``null``
  in ``status --json``) is *absent* here, never 0. The reading is cached for a few seconds
  (``ttl_s``): a storm of scrapes costs one reading of the database per ``ttl_s``.
  A runway with nothing billing is ``+Inf`` (``status`` says "unlimited").
* the collectors' runs, fed by the job reports (:class:`RunMetrics`): their durations and
  failures, counted since the process started.

No label carries a secret: labels are account, rule, collector and instance ids, and
statuses; the error texts of failed runs are never exported (they go to the log).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.actions.savings import savings_by_rule
from monitor.collect.runner import RunReport
from monitor.facts import StoreFacts
from monitor.logs import get_logger
from monitor.status import gpu_util_recent
from monitor.store.ledger import ACTION_STATES, OPEN_STATES

__all__ = [
    "PREFIX",
    "AccountFigures",
    "Exporter",
    "FleetCollector",
    "FleetFigures",
    "RunMetrics",
    "fleet_families",
    "new_registry",
    "read_figures",
]

log = get_logger("monitor.exporter")

PREFIX = "novita_monitor"
#: ledger states an action ends in (counted by ``novita_monitor_actions_total``); a row still
#: open or executing has no outcome yet
OUTCOME_STATES = ACTION_STATES - OPEN_STATES - {"executing"}
#: buckets of ``novita_monitor_collector_duration_seconds``: a listing takes ~0.1-2 s, a
#: metrics fetch of a large fleet up to a minute
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: how long one reading of the fleet's figures serves scrapes (wall seconds)
DEFAULT_TTL_S = 2.0


# ------------------------------------------------------------------------------------------
# the figures: immutable values, read from the facts


@dataclass(frozen=True)
class AccountFigures:
    """One account's figures at one moment, as ``status --json`` has them (unrounded);
    ``None``: unknown (the metric is absent)."""

    account: str
    balance_usd: float | None = None
    burn_usd_per_hour: float | None = None
    runway_hours: float | None = None  # +Inf: nothing bills (``status``: "unlimited")
    instances: tuple[tuple[str, str, int], ...] = ()  # (status, billing_mode, count)
    gpu_util_percent: tuple[tuple[str, float], ...] = ()  # (instance id, %)
    savings_usd: float | None = None  # realized by the actions (``status``' savings)
    last_success: tuple[tuple[str, float], ...] = ()  # (collector, Unix seconds)


@dataclass(frozen=True)
class FleetFigures:
    read_at: float  # when they were read (Unix seconds, on the daemon's clock)
    accounts: tuple[AccountFigures, ...] = ()
    alerts_firing: tuple[tuple[str, str, int], ...] = ()  # (rule, severity, count)
    actions: tuple[tuple[str, str, int], ...] = ()  # (kind, outcome, count)


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def _account(
    facts: StoreFacts, store: Any, account: str, ledger: list[Any], now: datetime
) -> AccountFigures:
    balance = facts.balance(account)
    runway = facts.runway(account, now)
    hours = runway.hours
    if hours is None and runway.reason == "no_burn":
        hours = math.inf
    by_kind = Tally((i.status, i.billing_mode or "") for i in facts.instances(account))
    util = gpu_util_recent(facts, account, now)
    _, saved = savings_by_rule(ledger, now)
    last = {name: store.last_success(account, name) for name in facts.intervals}
    return AccountFigures(
        account=account,
        balance_usd=_f(None if balance is None else balance.available_usd),
        burn_usd_per_hour=_f(facts.burn_rate(account)),
        runway_hours=hours,
        instances=tuple((s, m, n) for (s, m), n in sorted(by_kind.items())),
        gpu_util_percent=tuple(sorted(util.items())),
        savings_usd=_f(saved.realized_usd),
        last_success=tuple(
            (name, when.timestamp()) for name, when in sorted(last.items()) if when is not None
        ),
    )


def read_figures(
    facts: StoreFacts, store: Any, now: datetime, rules: Iterable[tuple[str, str]] = ()
) -> FleetFigures:
    """The fleet's figures at ``now``: every account's, the firing alerts per rule and
    severity (``rules``' own severities at 0 when none fires), the ended actions per kind and
    outcome."""
    firing = Tally({key: 0 for key in rules})
    for alert in store.load_alerts(states=["firing"]):
        firing[(alert.rule, alert.severity or "")] += 1
    ledger = store.actions()  # read once: the savings per account, the outcomes
    outcomes = Tally((row.action, row.state) for row in ledger if row.state in OUTCOME_STATES)
    by_account: dict[str, list[Any]] = {}
    for row in ledger:
        by_account.setdefault(row.account, []).append(row)
    return FleetFigures(
        read_at=now.timestamp(),
        accounts=tuple(
            _account(facts, store, a, by_account.get(a, []), now) for a in facts.accounts()
        ),
        alerts_firing=tuple((r, s, n) for (r, s), n in sorted(firing.items())),
        actions=tuple((k, o, n) for (k, o), n in sorted(outcomes.items())),
    )


# ------------------------------------------------------------------------------------------
# the figures as metric families: one pure step


def _gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))


def fleet_families(figures: FleetFigures) -> list[Metric]:
    """The metric families of ``figures``; an unknown figure adds no sample."""
    balance = _gauge("balance_usd", "Available balance (USD), as status shows it.", ["account"])
    runway = _gauge(
        "runway_hours",
        "Hours until the balance runs out at the current burn, renewals included (+Inf: "
        "nothing bills).",
        ["account"],
    )
    burn = _gauge(
        "burn_rate_usd_per_hour", "What the account's instances cost per hour now.", ["account"]
    )
    instances = _gauge(
        "instances", "Instances by status and billing mode.", ["account", "status", "billing_mode"]
    )
    util = _gauge(
        "gpu_utilization_percent",
        "Average GPU utilisation over the last 15 minutes (status' gpu_util_avg_15m).",
        ["account", "instance"],
    )
    savings = CounterMetricFamily(
        f"{PREFIX}_savings_usd",
        "Savings realized by novita-monitor's stops (gross, USD), as status shows them.",
        labels=["account"],
    )
    last = _gauge(
        "collector_last_success_timestamp_seconds",
        "When each collector last succeeded (Unix time, on the daemon's clock).",
        ["account", "collector"],
    )
    alerts = _gauge("alerts_firing", "Alerts firing, by rule and severity.", ["rule", "severity"])
    actions = CounterMetricFamily(
        f"{PREFIX}_actions",
        "Remedial actions that ended, by kind and outcome (the action ledger).",
        labels=["kind", "outcome"],
    )
    for acc in figures.accounts:
        a = acc.account
        for family, value in (
            (balance, acc.balance_usd),
            (runway, acc.runway_hours),
            (burn, acc.burn_usd_per_hour),
        ):
            if value is not None:
                family.add_metric([a], value)
        for status, mode, count in acc.instances:
            instances.add_metric([a, status, mode], count)
        for iid, pct in acc.gpu_util_percent:
            util.add_metric([a, iid], pct)
        if acc.savings_usd is not None:
            savings.add_metric([a], acc.savings_usd)
        for collector, ts in acc.last_success:
            last.add_metric([a, collector], ts)
    read = _gauge(
        "figures_read_timestamp_seconds",
        f"When the fleet figures of this scrape were read (Unix time, on the daemon's clock; "
        f"a reading serves the scrapes of the next {DEFAULT_TTL_S:g} s).",
        [],
    )
    read.add_metric([], figures.read_at)
    for rule, severity, count in figures.alerts_firing:
        alerts.add_metric([rule, severity], count)
    for kind, outcome, count in figures.actions:
        actions.add_metric([kind, outcome], count)
    return [balance, runway, burn, instances, util, savings, last, alerts, actions, read]


class FleetCollector(Collector):
    """Reads the fleet's figures at scrape time through ``source`` (None: nothing to read
    yet, e.g. while the daemon starts), at most once per ``ttl_s`` wall seconds.

    A reading that fails (the database down) is logged and exposes no fleet figure: the
    collector metrics still answer, and ``/readyz`` says what is wrong."""

    def __init__(
        self,
        source: Callable[[], FleetFigures | None],
        ttl_s: float = DEFAULT_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._ttl_s = ttl_s
        self._monotonic = monotonic
        self._lock = threading.Lock()  # one reading at a time; the others wait and share it
        self._cached: tuple[float, list[Metric]] | None = None

    def refresh(self) -> list[Metric]:
        """Read the figures unless the cached reading is recent; the families to expose.
        Thread-safe: the endpoint calls it in a worker thread before each scrape, so the
        database is read off the daemon's event loop."""
        with self._lock:
            now = self._monotonic()
            if self._cached is None or now - self._cached[0] >= self._ttl_s:
                self._cached = (now, self._read())
            return self._cached[1]

    def collect(self) -> Iterator[Metric]:
        yield from self.refresh()

    def _read(self) -> list[Metric]:
        try:
            figures = self._source()
        except Exception as exc:
            log.error("metrics_read_failed", error=repr(exc))
            return []
        return [] if figures is None else fleet_families(figures)

    def describe(self) -> list[Metric]:
        return []  # read at scrape time only (registering it reads nothing)


# ------------------------------------------------------------------------------------------
# the collectors' runs, from the job reports


@dataclass
class RunMetrics:
    """Counters and a histogram fed by the collectors' job reports (:meth:`observe`)."""

    registry: CollectorRegistry
    duration: Histogram = field(init=False)
    errors: Counter = field(init=False)
    runs: Counter = field(init=False)

    def __post_init__(self) -> None:
        labels = ["account", "collector"]
        self.duration = Histogram(
            f"{PREFIX}_collector_duration_seconds",
            "How long each collector run took (wall seconds).",
            labels,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            f"{PREFIX}_collector_errors",
            "Collector runs that failed or were partial.",
            labels,
            registry=self.registry,
        )
        self.runs = Counter(
            f"{PREFIX}_collector_runs",
            "Collector runs, by outcome (ok, partial, failed).",
            [*labels, "outcome"],
            registry=self.registry,
        )

    def observe(self, report: RunReport) -> None:
        labels = (report.account, report.collector)
        self.duration.labels(*labels).observe(report.duration_s)
        self.runs.labels(*labels, report.outcome).inc()
        if report.outcome != "ok":
            self.errors.labels(*labels).inc()
        else:
            self.errors.labels(*labels)  # the series exists at 0 from the first run


class Exporter(NamedTuple):
    registry: CollectorRegistry
    fleet: FleetCollector
    runs: RunMetrics


def new_registry(
    source: Callable[[], FleetFigures | None], ttl_s: float = DEFAULT_TTL_S
) -> Exporter:
    """A registry of its own with the fleet collector and the run metrics."""
    registry = CollectorRegistry(auto_describe=False)
    fleet = FleetCollector(source, ttl_s)
    registry.register(fleet)
    return Exporter(registry, fleet, RunMetrics(registry))
