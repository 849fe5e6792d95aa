"""Registries: built-in conditions and actions, looked up by name, never if-chains.

Each condition owns its parameter model (pydantic, ``extra="forbid"``), the resource kinds it
applies to and the collectors whose data it reads (so stale data inhibits exactly the rules
that depend on it). Each action (:data:`actions`, filled by :mod:`monitor.actions.model`) owns
its parameter model and the resource kinds it applies to; what it does lives in
``monitor.actions`` (the engine never executes anything).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from monitor.rules.context import EvalContext, Resource, Result

ConditionFn = Callable[[Any, EvalContext, Resource], Result]
#: ``candidates(params, ctx) -> ids``: the resources of ``ctx.account`` on which the condition
#: may hold or be unknown (a superset); on every other resource it is false. Read once per rule
#: and account, so the engine calls the condition only where it can matter.
CandidatesFn = Callable[[Any, EvalContext], frozenset[str]]


@dataclass(frozen=True)
class ConditionSpec:
    name: str
    params: type[BaseModel]
    resources: frozenset[str]
    needs: frozenset[str]
    fn: ConditionFn
    doc: str = ""
    candidates: CandidatesFn | None = None


class Registry:
    """A name -> :class:`ConditionSpec` table with a decorator to fill it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, ConditionSpec] = {}

    def register(
        self,
        name: str,
        params: type[BaseModel],
        resources: tuple[str, ...],
        needs: tuple[str, ...] = (),
        candidates: CandidatesFn | None = None,
    ) -> Callable[[ConditionFn], ConditionFn]:
        def decorate(fn: ConditionFn) -> ConditionFn:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            doc = (fn.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            self._items[name] = ConditionSpec(
                name, params, frozenset(resources), frozenset(needs), fn, doc, candidates
            )
            return fn

        return decorate

    def get(self, name: str) -> ConditionSpec | None:
        return self._items.get(name)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __iter__(self) -> Iterator[ConditionSpec]:
        return iter(self._items[n] for n in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._items


conditions = Registry("condition")


@dataclass(frozen=True)
class ActionSpec:
    """A remedial action a rule may ask for: its parameter model and where it applies."""

    name: str
    params: type[BaseModel]
    resources: frozenset[str]
    doc: str = ""
    #: what the action spends (renew, convert, set_auto_renew): approval and money guards
    spends: bool = False


class ActionRegistry:
    """A name -> :class:`ActionSpec` table."""

    def __init__(self) -> None:
        self._items: dict[str, ActionSpec] = {}

    def register(
        self,
        name: str,
        params: type[BaseModel],
        resources: tuple[str, ...] = ("instance",),
        *,
        spends: bool = False,
    ) -> type[BaseModel]:
        if name in self._items:
            raise ValueError(f"action {name!r} registered twice")
        doc = (params.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        self._items[name] = ActionSpec(name, params, frozenset(resources), doc, spends)
        return params

    def get(self, name: str) -> ActionSpec | None:
        return self._items.get(name)

    def names(self) -> list[str]:
        return list(self._items)

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items


actions = ActionRegistry()
