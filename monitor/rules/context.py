"""What a condition sees while it is evaluated: the resource, the facts (cached), ``now``.

A condition answers with a :class:`Result`: ``match`` is ``True``, ``False`` or ``None``
(missing data), and ``values`` carries the numbers a message needs (value, threshold, idle
cost, runway, saving...). Composition uses three-valued (Kleene) logic so that one missing
input makes a conjunction missing rather than false, unless another part is decisively false.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from monitor.economics import Runway
from monitor.rules.facts import (
    BalanceFact,
    Facts,
    GpuAgg,
    InstanceFact,
    TaskFact,
    WindowAgg,
)

if TYPE_CHECKING:
    from monitor.rules.lifecycle import AlertState


@dataclass(frozen=True)
class Resource:
    """The thing an alert is about: an instance, an account, a task, or the monitor's view."""

    kind: str
    id: str
    account: str
    name: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    obj: InstanceFact | TaskFact | None = None


@dataclass(frozen=True)
class Result:
    match: bool | None
    values: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None  # a condition with levels may raise or lower the rule's severity


def and3(items: Sequence[bool | None]) -> bool | None:
    if any(i is False for i in items):
        return False
    if any(i is None for i in items):
        return None
    return True


def or3(items: Sequence[bool | None]) -> bool | None:
    if any(i is True for i in items):
        return True
    if any(i is None for i in items):
        return None
    return False


def money(value: Decimal | float | None) -> float | None:
    """Values in results are plain floats (rounded to the cent's hundredth) for templates/JSON."""
    if value is None:
        return None
    return round(float(value), 4)


def _ids_key(instance_ids: Iterable[str] | None) -> frozenset[str] | tuple[str, ...] | None:
    """The cache key of an id list: a frozenset as it is (its hash is computed once, and the
    same set asked for each of a thousand instances is found by identity), others sorted."""
    if instance_ids is None or isinstance(instance_ids, frozenset):
        return instance_ids
    return tuple(sorted(instance_ids))


class CachedFacts:
    """Memoises :class:`Facts` calls for one evaluation: every condition of every rule asks for
    the whole account at once and reads its instance from the answer. A condition that asks
    for a list of instances computed once per evaluation passes it as a ``frozenset``."""

    def __init__(self, facts: Facts) -> None:
        self._facts = facts
        self._cache: dict[tuple[Any, ...], Any] = {}

    def _get(self, key: tuple[Any, ...], call: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = call()
        return self._cache[key]

    def accounts(self) -> list[str]:
        return self._get(("accounts",), self._facts.accounts)

    def instances(self, account: str) -> list[InstanceFact]:
        return self._get(("instances", account), lambda: self._facts.instances(account))

    def metric_window(
        self,
        account: str,
        series: str,
        start: datetime,
        end: datetime,
        instance_ids: Collection[str] | None = None,
        busy_at: float | None = None,
    ) -> dict[str, WindowAgg]:
        """Whole-account windows are cached; a window for a few named instances (a condition
        that concerns a handful, like expiring subscriptions) is read for those only."""
        ids = _ids_key(instance_ids)
        return self._get(
            ("metric", account, series, start, end, ids, busy_at),
            lambda: self._facts.metric_window(account, series, start, end, ids, busy_at),
        )

    def per_gpu_window(
        self,
        account: str,
        series: str,
        start: datetime,
        end: datetime,
        instance_ids: Collection[str] | None = None,
    ) -> dict[str, list[GpuAgg]]:
        ids = _ids_key(instance_ids)
        return self._get(
            ("gpu", account, series, start, end, ids),
            lambda: self._facts.per_gpu_window(account, series, start, end, ids),
        )

    def memo(self, key: tuple[Any, ...], call: Any) -> Any:
        """Remember ``call()`` under ``key`` for this evaluation (for values a condition derives
        from the facts once per account rather than once per resource)."""
        return self._get(("memo", *key), call)

    def balance(self, account: str) -> BalanceFact | None:
        return self._get(("balance", account), lambda: self._facts.balance(account))

    def burn_rate(self, account: str) -> Decimal | None:
        return self._get(("burn", account), lambda: self._facts.burn_rate(account))

    def runway(self, account: str, now: datetime) -> Runway:
        return self._get(("runway", account, now), lambda: self._facts.runway(account, now))

    def idle_since(
        self, account: str, threshold: float, now: datetime, instance_ids: Collection[str] | None
    ) -> dict[str, datetime]:
        ids = _ids_key(instance_ids)
        return self._get(
            ("idle_since", account, threshold, now, ids),
            lambda: self._facts.idle_since(account, threshold, now, ids),
        )

    def spend(self, account: str, start: datetime, end: datetime) -> Decimal | None:
        return self._get(
            ("spend", account, start, end), lambda: self._facts.spend(account, start, end)
        )

    def running_hours(
        self, account: str, start: datetime, end: datetime
    ) -> dict[str, float | None] | None:
        return self._get(
            ("running", account, start, end),
            lambda: self._facts.running_hours(account, start, end),
        )

    def usage_covered_until(self, account: str) -> datetime | None:
        return self._get(
            ("usage_covered", account), lambda: self._facts.usage_covered_until(account)
        )

    def tasks(self, account: str) -> list[TaskFact]:
        return self._get(("tasks", account), lambda: self._facts.tasks(account))

    def stale_collectors(self, account: str, now: datetime) -> list[str]:
        return self._get(
            ("stale", account, now), lambda: self._facts.stale_collectors(account, now)
        )

    def history_start(self, account: str) -> datetime | None:
        return self._get(("history", account), lambda: self._facts.history_start(account))

    def metrics_start(self, account: str) -> datetime | None:
        return self._get(("metrics_start", account), lambda: self._facts.metrics_start(account))


@dataclass
class EvalContext:
    """Per-evaluation context handed to conditions. ``prior`` is the alert state of the
    resource being evaluated (for hysteresis: a firing alert clears at a different level)."""

    facts: CachedFacts
    account: str
    now: datetime
    rule_severity: str = "warning"
    prior: AlertState | None = None
    #: under a ``not``: a non-match's values become the values of a matching alert
    negated: bool = False

    @property
    def active(self) -> bool:
        """Whether the alert for this resource is currently pending or firing."""
        return self.prior is not None and self.prior.state in ("pending", "firing")

    def ago(self, delta: timedelta) -> datetime:
        return self.now - delta
