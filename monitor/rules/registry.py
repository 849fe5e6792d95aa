"""Registries: built-in conditions (and, later, actions) looked up by name, never if-chains.

Each entry owns its parameter model (pydantic, ``extra="forbid"``), the resource kinds it
applies to and the collectors whose data it reads (so stale data inhibits exactly the rules
that depend on it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from monitor.rules.context import EvalContext, Resource, Result

ConditionFn = Callable[[Any, EvalContext, Resource], Result]


@dataclass(frozen=True)
class ConditionSpec:
    name: str
    params: type[BaseModel]
    resources: frozenset[str]
    needs: frozenset[str]
    fn: ConditionFn
    doc: str = ""


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
    ) -> Callable[[ConditionFn], ConditionFn]:
        def decorate(fn: ConditionFn) -> ConditionFn:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            doc = (fn.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            self._items[name] = ConditionSpec(
                name, params, frozenset(resources), frozenset(needs), fn, doc
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
