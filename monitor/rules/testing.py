"""Rule unit tests, as ``promtool test rules`` does for Prometheus: facts over time in,
expected alerts out.

A test file::

    rule_files: [../idle-gpu.yaml]          # relative to the test file
    tests:
      - name: the forgotten notebook fires, the busy trainer does not
        instances:
          - {id: i-1, name: notebook, status: running, billing_mode: onDemand,
             gpu_count: 1, started: -3h, hourly_cost: 0.8}
        metrics:
          i-1: {gpu_util: "1 for 60m"}     # 1-minute samples ending at now
        expect:
          - at: 0m
            firing: [{rule: idle-gpu, resource: i-1}]

Times are relative to the test's ``now`` (``-3h``, ``0m``, ``+2d``). A series is
``"V for D, V for D, ..."`` in chronological order ending at ``now`` (``_`` for a gap), sampled
every minute; balance/burn_rate/spend take a number or a series. The runner evaluates every
minute from ``start`` (default: the first ``at``) to the last ``at``, feeding states back as
the daemon does, and compares at each ``at`` the ``firing`` list (always), and ``pending``,
``resolved`` and ``notified`` (notifications since the previous ``at``) when given, exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import Field

from monitor.errors import Problem, RuleError
from monitor.rules.durations import parse_duration
from monitor.rules.engine import evaluate
from monitor.rules.facts import (
    SAMPLE_STEP_S,
    BalanceFact,
    InMemoryFacts,
    InstanceFact,
    Samples,
    TaskFact,
)
from monitor.rules.lifecycle import AlertState, Notification, Silence
from monitor.rules.loader import load_rules
from monitor.rules.model import RuleSet, StrictModel
from monitor.yamlsrc import load_yaml_with_lines, problems_from_validation_error

DEFAULT_NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
STEP = timedelta(seconds=SAMPLE_STEP_S)
_SEGMENT = re.compile(r"^\s*(_|-?\d+(?:\.\d+)?)\s+for\s+(\S+)\s*$")


def parse_offset(value: Any) -> timedelta:
    """``-3h`` / ``+2d`` / ``0m`` / ``0`` -> a signed timedelta."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return timedelta(0)
    text = str(value).strip()
    sign = -1 if text.startswith("-") else 1
    return sign * parse_duration(text.lstrip("+-"))


def parse_series(text: Any, now: datetime) -> Samples:
    """``"80 for 20m, 10 for 2m, _ for 5m"`` -> minute samples ending at ``now``."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        raise ValueError(f'a series needs durations (expected e.g. "{text} for 30m")')
    segments: list[tuple[float | None, int]] = []
    for part in str(text).split(","):
        m = _SEGMENT.match(part)
        if not m:
            raise ValueError(
                f'bad series segment {part.strip()!r} (expected "VALUE for DURATION", '
                'e.g. "80 for 20m, 10 for 2m")'
            )
        minutes = int(parse_duration(m.group(2)) / STEP)
        segments.append((None if m.group(1) == "_" else float(m.group(1)), minutes))
    total = sum(n for _, n in segments)
    out: Samples = []
    t = now - total * STEP
    for value, n in segments:
        for _ in range(n):
            t += STEP
            if value is not None:
                out.append((t, value))
    return out


# --------------------------------------------------------------------------------------------
# Test file models


class InstanceSpec(StrictModel):
    id: str
    name: str = ""
    status: str = "running"
    billing_mode: str | None = "onDemand"
    gpu_count: int = 1
    cpu_num: int | None = None
    product_id: str | None = None
    product_name: str | None = None
    cluster_id: str | None = None
    started: str | int | None = None
    created: str | int | None = None
    status_since: str | int | None = None
    end_time: str | int | None = None
    error_state: str | None = None
    hourly_cost: float | None = None
    monthly_price: float | None = None
    keep_data_day: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    changes: list[dict[str, Any]] = Field(
        default_factory=list, description="[{at: -10m, status: exited, ...}]: later field values"
    )


class TaskSpec(StrictModel):
    id: str
    kind: Literal["training", "async"] = "training"
    status: str
    name: str = ""
    reason: str | None = None
    created: str | int | None = None
    finished: str | int | None = None
    changes: list[dict[str, Any]] = Field(
        default_factory=list, description="[{at: -5m, status: FAILED}]: later field values"
    )


class StaleSpec(StrictModel):
    collectors: list[str]
    start: str | int | None = Field(None, alias="from")
    until: str | int | None = None


class SilenceSpec(StrictModel):
    rule: str | None = None
    resource: str | None = None
    start: str | int | None = Field(None, alias="from")
    until: str | int
    id: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class AlertRef(StrictModel):
    rule: str
    resource: str | None = None
    severity: str | None = None
    state: Literal["firing", "resolved"] | None = None  # for notified


class Expectation(StrictModel):
    at: str | int
    firing: list[AlertRef] = Field(default_factory=list)
    pending: list[AlertRef] | None = None
    resolved: list[AlertRef] | None = None
    notified: list[AlertRef] | None = None


class TestCase(StrictModel):
    __test__ = False

    name: str
    now: datetime | None = None
    start: str | int | None = Field(None, description="first evaluation (default: first at)")
    account: str = "default"
    history_start: str | int | None = None
    instances: list[InstanceSpec] = Field(default_factory=list)
    metrics: dict[str, dict[str, Any]] = Field(default_factory=dict)
    balance: float | str | None = None
    burn_rate: float | str | None = None
    spend: float | str | None = Field(None, description="USD per hour, a number or a series")
    tasks: list[TaskSpec] = Field(default_factory=list)
    stale: list[str] | list[StaleSpec] = Field(default_factory=list)
    silences: list[SilenceSpec] = Field(default_factory=list)
    expect: list[Expectation]


class TestFile(StrictModel):
    __test__ = False

    rule_files: list[str]
    tests: list[TestCase]


@dataclass
class TestResult:
    __test__ = False
    file: str
    name: str
    passed: bool
    failures: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'} {self.file}: {self.name}"
        return "\n".join([head, *(f"  {f}" for f in self.failures)])


# --------------------------------------------------------------------------------------------
# Building facts for a moment


def _value_at(samples: Samples, t: datetime) -> float | None:
    last = None
    for ts, v in samples:
        if ts > t:
            break
        last = v
    return last


def _scalar_or_series(value: float | str | None, now: datetime) -> Samples:
    if value is None:
        return []
    if isinstance(value, int | float):
        return [(datetime.min.replace(tzinfo=UTC), float(value))]
    return parse_series(value, now)


@dataclass
class _Scenario:
    case: TestCase
    now: datetime
    metrics: dict[tuple[str, str], Samples]
    gpu_metrics: dict[tuple[str, str, str], Samples]
    running: dict[str, Samples]
    balance: Samples
    burn: Samples
    spend: Samples
    history_start: datetime | None

    def at(self, offset: timedelta | None = None, t: datetime | None = None) -> datetime:
        return t if t is not None else self.now + (offset or timedelta(0))

    def rel(self, value: str | int | None) -> datetime | None:
        return None if value is None else self.now + parse_offset(value)

    def instance(self, spec: InstanceSpec, t: datetime) -> InstanceFact | None:
        fields = spec.model_dump()
        since = self.rel(spec.status_since) or self.rel(spec.started) or self.rel(spec.created)
        for change in spec.changes:
            when = self.rel(change.get("at", 0))
            if when is not None and when <= t:
                fields.update({k: v for k, v in change.items() if k != "at"})
                if "status" in change:
                    since = when
        if fields["status"] == "removed":
            return None
        started = self.rel(fields["started"])
        return InstanceFact(
            id=spec.id,
            name=fields["name"] or spec.id,
            status=fields["status"],
            billing_mode=fields["billing_mode"],
            gpu_count=fields["gpu_count"],
            cpu_num=fields["cpu_num"],
            product_id=fields["product_id"],
            product_name=fields["product_name"],
            cluster_id=fields["cluster_id"],
            end_time=self.rel(fields["end_time"]),
            created_at=self.rel(fields["created"]) or started,
            last_started_at=started,
            first_seen=self.history_start,
            status_since=since,
            error_state=fields["error_state"],
            hourly_cost_usd=_dec(fields["hourly_cost"]),
            monthly_price_usd=_dec(fields["monthly_price"]),
            labels=dict(fields["labels"]),
            keep_data_day=fields["keep_data_day"],
        )

    def task(self, spec: TaskSpec, t: datetime) -> TaskFact | None:
        created = self.rel(spec.created)
        if created is not None and created > t:
            return None  # not listed yet
        fields = spec.model_dump()
        finished = self.rel(spec.finished)
        for change in spec.changes:
            when = self.rel(change.get("at", 0))
            if when is not None and when <= t:
                fields.update({k: v for k, v in change.items() if k != "at"})
                if "status" in change and spec.finished is None:
                    finished = when
        return TaskFact(
            id=spec.id,
            kind=fields["kind"],
            status=fields["status"],
            name=fields["name"] or spec.id,
            reason=fields["reason"],
            created_at=created,
            finished_at=finished,
        )

    def facts(self, t: datetime) -> InMemoryFacts:
        case, account = self.case, self.case.account
        stale: list[str] = []
        for item in case.stale:
            if isinstance(item, str):
                stale.append(item)
            else:
                start, until = self.rel(item.start), self.rel(item.until)
                if (start is None or start <= t) and (until is None or t < until):
                    stale.extend(item.collectors)
        balance = _value_at(self.balance, t)
        burn = _value_at(self.burn, t)
        instances = [i for i in (self.instance(s, t) for s in case.instances) if i is not None]
        tasks = [task for task in (self.task(s, t) for s in case.tasks) if task is not None]
        return InMemoryFacts(
            instance_list={account: instances},
            metrics=self.metrics,
            gpu_metrics=self.gpu_metrics,
            balances={account: BalanceFact(Decimal(str(balance)), t)}
            if balance is not None
            else {},
            burn_rates={account: Decimal(str(burn))} if burn is not None else {},
            spend_rate={account: self.spend},
            running=self.running,
            task_list={account: tasks},
            stale={account: sorted(set(stale))} if stale else {},
            history_starts={account: self.history_start} if self.history_start else {},
            account_names=[account],
        )


def _dec(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _scenario(case: TestCase) -> _Scenario:
    now = case.now or DEFAULT_NOW
    metrics: dict[tuple[str, str], Samples] = {}
    gpu_metrics: dict[tuple[str, str, str], Samples] = {}
    running: dict[str, Samples] = {}
    for iid, series in case.metrics.items():
        for name, text in series.items():
            if name == "gpus":
                for gpu_id, per in dict(text).items():
                    for gname, gtext in dict(per).items():
                        gpu_metrics[(iid, str(gpu_id), gname)] = parse_series(gtext, now)
            elif name == "running":
                running[iid] = parse_series(text, now)
            else:
                metrics[(iid, name)] = parse_series(text, now)
    spend = _scalar_or_series(case.spend, now)
    if spend and spend[0][0].year == 1:  # a constant spend rate over the last 60 days
        spend = parse_series(f"{spend[0][1]} for 60d", now)
    firsts = [
        s[0][0] - STEP for s in [*metrics.values(), *gpu_metrics.values(), *running.values()] if s
    ]
    if spend:
        firsts.append(spend[0][0] - STEP)
    history = now + parse_offset(case.history_start) if case.history_start is not None else None
    if history is None and firsts:
        history = min(firsts)
    return _Scenario(
        case,
        now,
        metrics,
        gpu_metrics,
        running,
        _scalar_or_series(case.balance, now),
        _scalar_or_series(case.burn_rate, now),
        spend,
        history,
    )


# --------------------------------------------------------------------------------------------
# Running


def _refs(items: Iterable[AlertRef], account: str) -> set[tuple[str, str, str | None, str | None]]:
    return {(r.rule, r.resource or account, r.severity, r.state) for r in items}


def _compare(
    what: str,
    expected: list[AlertRef],
    actual: list[tuple[str, str, str, str]],
    account: str,
) -> list[str]:
    """Exact comparison; an expected item's optional severity/state must match too."""
    remaining = list(actual)
    missing = []
    for ref in expected:
        resource = ref.resource or account
        hit = next(
            (
                a
                for a in remaining
                if a[0] == ref.rule
                and a[1] == resource
                and (ref.severity is None or a[2] == ref.severity)
                and (ref.state is None or a[3] == ref.state)
            ),
            None,
        )
        if hit is None:
            extra = "".join(
                f" {k}={v}" for k, v in (("severity", ref.severity), ("state", ref.state)) if v
            )
            missing.append(f"{ref.rule} on {resource}{extra}")
        else:
            remaining.remove(hit)
    out = []
    if missing:
        out.append(f"{what}: missing {', '.join(missing)}")
    if remaining:
        listed = ", ".join(f"{a[0]} on {a[1]} ({a[2]}, {a[3]})" for a in remaining)
        out.append(f"{what}: unexpected {listed}")
    return out


def run_case(case: TestCase, ruleset: RuleSet) -> list[str]:
    """Run one test case; return its failures (empty = passed)."""
    scen = _scenario(case)
    account = case.account
    checks = sorted(((scen.now + parse_offset(e.at)), i) for i, e in enumerate(case.expect))
    if not checks:
        return ["no expect entries"]
    first: datetime = checks[0][0]
    if case.start is not None:
        first = min(first, scen.now + parse_offset(case.start))
    last = checks[-1][0]
    silences = [
        Silence(
            id=s.id or f"silence-{i}",
            ends_at=scen.now + parse_offset(s.until),
            rule=s.rule,
            resource_id=s.resource,
            starts_at=scen.rel(s.start),
            labels=dict(s.labels),
        )
        for i, s in enumerate(case.silences)
    ]
    states: dict[str, AlertState] = {}
    sent: list[tuple[datetime, Notification]] = []
    failures: list[str] = []
    t = first
    prev_check: datetime | None = None
    pending_checks = list(checks)
    while t <= last:
        result = evaluate(ruleset, scen.facts(t), t, states, silences)
        states = result.states
        sent.extend((t, n) for n in result.notifications_due)
        while pending_checks and pending_checks[0][0] == t:
            _, index = pending_checks.pop(0)
            exp = case.expect[index]
            label = f"at {exp.at}"
            mine = [s for s in states.values() if s.account == account]

            def listed(
                state: str, mine: list[AlertState] = mine
            ) -> list[tuple[str, str, str, str]]:
                return [
                    (s.rule, s.resource_id, s.severity, s.state) for s in mine if s.state == state
                ]

            failures += [
                f"{label}: {f}" for f in _compare("firing", exp.firing, listed("firing"), account)
            ]
            if exp.pending is not None:
                failures += [
                    f"{label}: {f}"
                    for f in _compare("pending", exp.pending, listed("pending"), account)
                ]
            if exp.resolved is not None:
                failures += [
                    f"{label}: {f}"
                    for f in _compare("resolved", exp.resolved, listed("resolved"), account)
                ]
            if exp.notified is not None:
                window = [
                    (n.rule, n.resource_id, n.severity, n.state)
                    for when, n in sent
                    if (prev_check is None or when > prev_check) and when <= t
                ]
                failures += [
                    f"{label}: {f}" for f in _compare("notified", exp.notified, window, account)
                ]
            prev_check = t
        t += STEP
    return failures


def load_test_file(path: Path) -> TestFile:
    filename = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(f"{filename}: cannot read", [Problem(filename, None, str(exc))]) from None
    data, linemap = load_yaml_with_lines(text, filename, error=RuleError)
    try:
        return TestFile.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = problems_from_validation_error(exc, filename, linemap, data=data, model=TestFile)
        raise RuleError(f"{filename}: invalid rule test file", problems) from None


def find_test_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]


def run_rule_tests(path: Path | str, known_channels: set[str] | None = None) -> list[TestResult]:
    """Run every test case of a test file (or of every ``*.yaml`` in a folder).

    Raises :class:`RuleError` if a test file or the rule files it names are invalid.
    """
    results: list[TestResult] = []
    for file in find_test_files(Path(path)):
        spec = load_test_file(file)
        ruleset = load_rules([file.parent / f for f in spec.rule_files], known_channels)
        for case in spec.tests:
            try:
                failures = run_case(case, ruleset)
            except ValueError as exc:
                failures = [f"bad test data: {exc}"]
            results.append(TestResult(str(file), case.name, not failures, failures))
    return results
