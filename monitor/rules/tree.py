"""The ``when`` tree: ``all``/``any``/``not``, comparisons on a resource's fields, built-ins.

Parsing checks every node against the registry and reports each problem with its path inside
the rule (``when.all[1].idle_gpu.threshold``), so the loader can name file, line, rule and
field. Operators live in one table (:data:`OPS`), as in Cloud Custodian's value filter.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

import pydantic
from pydantic import BaseModel, ConfigDict

from monitor.rules.context import EvalContext, Resource, Result, and3, or3
from monitor.rules.durations import parse_duration
from monitor.rules.facts import InstanceFact, TaskFact
from monitor.rules.registry import ConditionSpec, conditions

Path_ = tuple[str | int, ...]

# --------------------------------------------------------------------------------------------
# Fields a comparison may name, per resource kind

FIELDS: dict[str, tuple[str, ...]] = {
    "instance": (*InstanceFact.__dataclass_fields__, "gpu_num"),
    "task": tuple(TaskFact.__dataclass_fields__),
    "account": ("account", "balance_usd", "burn_rate_usd_per_hour", "runway_hours"),
    "monitor": ("account", "stale_collectors"),
}
#: Fields holding a mapping, reachable as ``labels.KEY``.
MAPPING_FIELDS = {"instance": ("labels",)}


def field_known(kind: str, name: str) -> bool:
    head, _, rest = name.partition(".")
    if rest:
        return head in MAPPING_FIELDS.get(kind, ())
    return name in FIELDS.get(kind, ())


def lookup(fields: dict[str, Any], name: str) -> Any:
    head, _, rest = name.partition(".")
    value = fields.get(head)
    if rest:
        return value.get(rest) if isinstance(value, Mapping) else None
    return value


# --------------------------------------------------------------------------------------------
# Operators (one table)


def _num(value: Any) -> Any:
    return (
        float(value) if isinstance(value, Decimal | int) and not isinstance(value, bool) else value
    )


def _ordered(fn: Callable[[Any, Any], bool]) -> Callable[[Any, Any, datetime], bool]:
    def op(a: Any, b: Any, now: datetime) -> bool:
        if a is None:
            return False
        try:
            return fn(_num(a), _num(b))
        except TypeError:
            return False

    return op


def _days_until(a: Any, b: Any, now: datetime) -> bool:
    """The time is in the future and at most ``b`` away."""
    return isinstance(a, datetime) and timedelta(0) <= a - now <= b


def _age(a: Any, b: Any, now: datetime) -> bool:
    """The time is at least ``b`` in the past."""
    return isinstance(a, datetime) and now - a >= b


OPS: dict[str, Callable[[Any, Any, datetime], bool]] = {
    "eq": lambda a, b, now: _num(a) == _num(b),
    "ne": lambda a, b, now: _num(a) != _num(b),
    "lt": _ordered(lambda a, b: a < b),
    "le": _ordered(lambda a, b: a <= b),
    "gt": _ordered(lambda a, b: a > b),
    "ge": _ordered(lambda a, b: a >= b),
    "in": lambda a, b, now: _num(a) in b,
    "not_in": lambda a, b, now: _num(a) not in b,
    "regex": lambda a, b, now: a is not None and b.search(str(a)) is not None,
    "glob": lambda a, b, now: a is not None and fnmatch.fnmatchcase(str(a), b),
    "days_until": _days_until,
    "age": _age,
}
OpName = Literal[
    "eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "regex", "glob", "days_until", "age"
]


class CompareModel(BaseModel):
    """``{field, op, value}``: compare a field of the resource with a value."""

    model_config = ConfigDict(extra="forbid")
    field: str
    op: OpName = "eq"
    value: Any = None


def _prepare_value(op: str, value: Any) -> Any:
    """Check and convert ``value`` for ``op``; raise ValueError with what was expected."""
    if op in ("in", "not_in"):
        if not isinstance(value, list):
            raise ValueError(f"{op} needs a list (expected e.g. value: [onDemand, spot])")
        return [_num(v) for v in value]
    if op == "regex":
        if not isinstance(value, str):
            raise ValueError("regex needs a string (expected a regular expression)")
        try:
            return re.compile(value)
        except re.error as exc:
            raise ValueError(
                f"bad regular expression {value!r}: {exc} (expected a Python regular expression)"
            ) from None
    if op == "glob":
        if not isinstance(value, str):
            raise ValueError("glob needs a string (expected a pattern like gpu-*)")
        return value
    if op in ("days_until", "age"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return timedelta(days=value)
        try:
            return parse_duration(value)
        except ValueError:
            raise ValueError(
                f"{op} needs a number of days or a duration, not {value!r} (expected e.g. 7 or 36h)"
            ) from None
    if op in ("lt", "le", "gt", "ge") and (value is None or isinstance(value, list | dict)):
        raise ValueError(f"{op} needs a number or a string (expected e.g. value: 5)")
    return value


# --------------------------------------------------------------------------------------------
# Nodes


class Node(Protocol):
    @property
    def needs(self) -> frozenset[str]: ...

    def evaluate(self, ctx: EvalContext, resource: Resource) -> Result: ...

    def candidates(self, ctx: EvalContext) -> frozenset[str] | None:
        """The ids of the resources on which the node may hold or be unknown (a superset), or
        None when it cannot tell: on every other resource it is false."""
        ...


def _merge(results: Sequence[Result]) -> tuple[dict[str, Any], str | None]:
    """The children's values in one mapping; where two children name the same key (``kind``,
    ``value``, ``threshold``...), the first listed keeps it, so a message describes the
    condition written first (``all: [idle_gpu, cpu...]`` reads as an idle GPU) and the later
    ones add only what they alone know."""
    values: dict[str, Any] = {}
    severity = None
    for r in results:
        for key, value in r.values.items():
            values.setdefault(key, value)
        severity = r.severity or severity
    return values, severity


@dataclass(frozen=True)
class AllNode:
    children: tuple[Node, ...]
    needs: frozenset[str] = frozenset()

    def evaluate(self, ctx: EvalContext, resource: Resource) -> Result:
        results = []
        for child in self.children:
            result = child.evaluate(ctx, resource)
            results.append(result)
            if result.match is False:  # decisive: skip the (possibly costly) rest
                break
        values, severity = _merge(results)
        return Result(and3([r.match for r in results]), values, severity)

    def candidates(self, ctx: EvalContext) -> frozenset[str] | None:
        found = None
        for child in self.children:  # true needs every child not false
            ids = child.candidates(ctx)
            if ids is not None:
                found = ids if found is None else found & ids
        return found


@dataclass(frozen=True)
class AnyNode:
    children: tuple[Node, ...]
    needs: frozenset[str] = frozenset()

    def evaluate(self, ctx: EvalContext, resource: Resource) -> Result:
        results = [child.evaluate(ctx, resource) for child in self.children]
        matched = [r for r in results if r.match]
        values, severity = _merge(matched or results)
        return Result(or3([r.match for r in results]), values, severity)

    def candidates(self, ctx: EvalContext) -> frozenset[str] | None:
        found: frozenset[str] = frozenset()
        for child in self.children:  # true needs some child not false
            ids = child.candidates(ctx)
            if ids is None:
                return None
            found |= ids
        return found


@dataclass(frozen=True)
class NotNode:
    child: Node
    needs: frozenset[str] = frozenset()

    def evaluate(self, ctx: EvalContext, resource: Resource) -> Result:
        result = self.child.evaluate(replace(ctx, negated=not ctx.negated), resource)
        match = None if result.match is None else not result.match
        return Result(match, result.values)

    def candidates(self, ctx: EvalContext) -> frozenset[str] | None:
        return None  # the child false is this node true


@dataclass(frozen=True)
class CompareNode:
    field: str
    op: str
    value: Any
    needs: frozenset[str] = frozenset()

    def evaluate(self, ctx: EvalContext, resource: Resource) -> Result:
        actual = lookup(resource.fields, self.field)
        return Result(bool(OPS[self.op](actual, self.value, ctx.now)))

    def candidates(self, ctx: EvalContext) -> frozenset[str] | None:
        return None  # a comparison costs less than the set it would build


@dataclass(frozen=True)
class BuiltinNode:
    spec: ConditionSpec
    params: BaseModel
    needs: frozenset[str] = field(default=frozenset())

    def evaluate(self, ctx: EvalContext, resource: Resource) -> Result:
        return self.spec.fn(self.params, ctx, resource)

    def candidates(self, ctx: EvalContext) -> frozenset[str] | None:
        pick = self.spec.candidates
        return None if pick is None or ctx.negated else pick(self.params, ctx)


def metric_windows(node: Any) -> list[timedelta]:
    """Windows/lookbacks of the metric-reading conditions in a ``when`` tree (what the
    collectors' first-sight backfill covers, and what the act step re-reads before a stop)."""
    if isinstance(node, BuiltinNode):
        if "metrics" not in node.spec.needs:
            return []
        return [
            value
            for name in ("window", "lookback")
            if isinstance(value := getattr(node.params, name, None), timedelta)
        ]
    children = list(getattr(node, "children", ()))
    if getattr(node, "child", None) is not None:
        children.append(node.child)
    return [w for child in children for w in metric_windows(child)]


# --------------------------------------------------------------------------------------------
# Parsing


class Reporter(Protocol):
    """Where parse problems go (the loader maps paths to lines)."""

    def error(self, path: Path_, message: str) -> None: ...

    def validation(
        self, exc: pydantic.ValidationError, path: Path_, data: Any, model: type[BaseModel]
    ) -> None: ...


BOOLEAN_KEYS = ("all", "any", "not")


def expected_keys() -> str:
    return ", ".join([*BOOLEAN_KEYS, "field/op/value", *conditions.names()])


def parse_when(data: Any, path: Path_, kind: str, report: Reporter) -> Node | None:
    """Build the node tree for ``data`` at ``path``; report problems and return None on error."""
    if not isinstance(data, dict) or not data:
        report.error(
            path, f"a condition must be a non-empty mapping (expected one of: {expected_keys()})"
        )
        return None
    if "field" in data or "op" in data:
        return _parse_compare(data, path, kind, report)
    if len(data) != 1:
        keys = ", ".join(str(k) for k in data)
        report.error(
            path,
            f"a condition has exactly one key, found {keys} (wrap several in all: [...] or any: [...])",
        )
        return None
    ((key, value),) = data.items()
    sub = (*path, key)
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            report.error(sub, f"{key} needs a non-empty list of conditions")
            return None
        children = [parse_when(item, (*sub, i), kind, report) for i, item in enumerate(value)]
        if any(c is None for c in children):
            return None
        kids = tuple(c for c in children if c is not None)
        needs = frozenset().union(*(c.needs for c in kids))
        return AllNode(kids, needs) if key == "all" else AnyNode(kids, needs)
    if key == "not":
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
            sub = (*sub, 0)
        child = parse_when(value, sub, kind, report)
        return None if child is None else NotNode(child, child.needs)
    spec = conditions.get(str(key))
    if spec is None:
        report.error(sub, f"unknown condition {key!r} (expected one of: {expected_keys()})")
        return None
    if kind not in spec.resources:
        wanted = " or ".join(sorted(spec.resources))
        report.error(
            sub,
            f"{key} does not apply to {kind} rules (expected resource: {wanted})",
        )
        return None
    params_data = {} if value is None else value
    if not isinstance(params_data, dict):
        report.error(sub, f"{key} takes a mapping of parameters (expected e.g. {key}: {{}})")
        return None
    try:
        params = spec.params.model_validate(params_data)
    except pydantic.ValidationError as exc:
        report.validation(exc, sub, params_data, spec.params)
        return None
    return BuiltinNode(spec, params, spec.needs)


def _unknown_field(kind: str, name: str) -> str:
    allowed = ", ".join(FIELDS.get(kind, ()))
    extra = "; labels.KEY for labels" if kind in MAPPING_FIELDS else ""
    return f"unknown field {name!r} for {kind} rules (expected one of: {allowed}{extra})"


def _parse_compare(data: dict[str, Any], path: Path_, kind: str, report: Reporter) -> Node | None:
    try:
        model = CompareModel.model_validate(data)
    except pydantic.ValidationError as exc:
        report.validation(exc, path, data, CompareModel)
        name = data.get("field")
        if isinstance(name, str) and not field_known(kind, name):
            report.error((*path, "field"), _unknown_field(kind, name))
        return None
    ok = True
    if not field_known(kind, model.field):
        report.error((*path, "field"), _unknown_field(kind, model.field))
        ok = False
    try:
        value = _prepare_value(model.op, model.value)
    except ValueError as exc:
        report.error((*path, "value"), str(exc))
        return None
    if not ok:
        return None
    needs = frozenset({"balance"}) if kind == "account" else frozenset()
    if kind == "instance":
        needs = frozenset({"instances"})
    elif kind == "task":
        needs = frozenset({"tasks"})
    return CompareNode(model.field, model.op, value, needs)
