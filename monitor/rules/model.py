"""The rule language's data model: durations, the rule schema (pydantic), compiled rules.

A rule file is ``{rules: [rule, ...]}``. :class:`RuleModel` validates a rule's own keys
(``extra="forbid"``, so a typo is an error naming the key); its ``when`` tree is validated by
:mod:`monitor.rules.tree` against the condition registry, and the result is a :class:`Rule`
the engine evaluates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import jinja2
from pydantic import BaseModel, ConfigDict, Field, field_validator

from monitor.rules.durations import Duration
from monitor.rules.tree import Node

RESOURCES = ("instance", "account", "task", "monitor")
SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
ON_MISSING = ("keep", "match", "no_match")


class StrictModel(BaseModel):
    """Every user-facing model rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RuleModel(StrictModel):
    """One rule as written in YAML (``when`` is checked separately, against the registry)."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="unique across all loaded rule files",
    )
    description: str = ""
    resource: Literal["instance", "account", "task", "monitor"]
    when: dict[str, Any] = Field(
        description="a condition tree: all/any/not, comparisons, built-ins"
    )
    for_: Duration = Field(default=timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)
    severity: Literal["info", "warning", "critical"] = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    notify: list[str] | None = Field(
        default=None, description="channel names; omitted = the config's default_channels"
    )
    repeat_interval: Duration = Field(
        default=timedelta(hours=4), description="re-notify while firing; 0 = never"
    )
    on_missing: Literal["keep", "match", "no_match"] = Field(
        default="keep",
        description="missing data: keep (neither fire nor resolve), match, no_match",
    )
    summary: str | None = Field(
        default=None, description="Jinja2 template overriding the notification text"
    )
    actions: list[Any] | None = Field(
        default=None,
        description="remedial actions when the alert fires: stop, start, renew, "
        "convert_to_subscription, set_auto_renew (one key each)",
    )
    exclude: list[str] = Field(
        default_factory=list, description="instance ids or name globs the actions never touch"
    )
    dry_run: bool = Field(False, description="record and print the plan, call nothing")

    @field_validator("summary")
    @classmethod
    def _template_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                jinja2.Environment().parse(value)
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(
                    f"bad Jinja2 template at template line {exc.lineno}: {exc.message}"
                    " (expected a Jinja2 template string)"
                ) from None
        return value


class RuleFileModel(StrictModel):
    """The top of a rule file."""

    rules: list[dict[str, Any]] = Field(description="the rules of this file")


@dataclass(frozen=True)
class RuleAction:
    """One action a rule asks for: its registered name and validated parameters."""

    name: str
    params: BaseModel
    source: str = ""  # file:line of the action, for messages


@dataclass(frozen=True)
class Rule:
    """A validated rule, ready to evaluate."""

    name: str
    resource: str
    when: Node
    description: str = ""
    for_: timedelta = timedelta(0)
    keep_firing_for: timedelta = timedelta(0)
    severity: str = "warning"
    labels: dict[str, str] = field(default_factory=dict)
    notify: tuple[str, ...] | None = None
    repeat_interval: timedelta = timedelta(hours=4)
    on_missing: str = "keep"
    summary: str | None = None
    source: str = ""  # file:line, for messages
    needs: frozenset[str] = frozenset()  # collectors the rule's conditions read
    actions: tuple[RuleAction, ...] = ()
    exclude: tuple[str, ...] = ()  # instance ids or name globs the actions never touch
    dry_run: bool = False

    @property
    def is_monitor_rule(self) -> bool:
        """A rule about the monitor itself is never inhibited by stale collectors."""
        return self.resource == "monitor"


@dataclass(frozen=True)
class RuleSet:
    """Rules from one or more files, names unique."""

    rules: tuple[Rule, ...] = ()
    files: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, name: str) -> Rule | None:
        for rule in self.rules:
            if rule.name == name:
                return rule
        return None

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rules]
