"""Load rule files (or folders of them) into a :class:`RuleSet`, reporting every problem.

Validation runs in layers (YAML syntax, file structure, each rule's keys, the ``when`` tree and
each condition's parameters, regexes, then references: rule names unique across all files and
channel names known) and collects *all* problems before raising one :class:`RuleError`, each
``file:line: rule NAME: field: what is wrong (what was expected)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel

import monitor.actions.model  # registers the actions (parameter models)
import monitor.rules.conditions  # noqa: F401  (registers the built-in conditions)
from monitor.errors import Problem, RuleError
from monitor.rules.model import Rule, RuleAction, RuleFileModel, RuleModel, RuleSet
from monitor.rules.registry import actions as action_registry
from monitor.rules.tree import BuiltinNode, Node, Path_, parse_when
from monitor.yamlsrc import (
    LineMap,
    format_path,
    load_yaml_with_lines,
    problems_from_validation_error,
)

RULE_SUFFIXES = (".yaml", ".yml")


def rule_files(paths: Iterable[Path | str]) -> tuple[list[Path], list[Problem]]:
    """Expand folders (their ``*.yaml``/``*.yml``, not recursing) and check files exist."""
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(
                sorted(p for p in path.iterdir() if p.suffix in RULE_SUFFIXES and p.is_file())
            )
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(path), None, "no such file or folder"))
    return files, problems


class _Reporter:
    """Collects problems for one rule, mapping document paths to lines."""

    def __init__(
        self, filename: str, linemap: LineMap, rule: str, rule_path: Path_, document: Any
    ) -> None:
        self.filename = filename
        self.document = document
        self.linemap = linemap
        self.rule = rule
        self.rule_path = rule_path
        self.problems: list[Problem] = []

    def _field(self, path: Path_) -> str | None:
        return format_path(path[len(self.rule_path) :]) or None

    def error(self, path: Path_, message: str) -> None:
        full = (*self.rule_path, *path)
        self.problems.append(
            Problem(
                self.filename,
                self.linemap.line_for(full),
                message,
                rule=self.rule,
                field=self._field(full),
            )
        )

    def validation(
        self, exc: pydantic.ValidationError, path: Path_, data: Any, model: type[BaseModel]
    ) -> None:
        full = (*self.rule_path, *path)
        for problem in problems_from_validation_error(
            exc,
            self.filename,
            self.linemap,
            self.rule,
            data=self.document,
            model=model,
            prefix=full,
        ):
            self.problems.append(
                dataclasses.replace(problem, field=_strip(problem.field, self.rule_path))
            )


def _strip(dotted: str | None, rule_path: Path_) -> str | None:
    if dotted is None:
        return None
    head = format_path(rule_path)
    if dotted == head:
        return None
    if dotted.startswith(head + "."):
        return dotted[len(head) + 1 :]
    if dotted.startswith(head + "["):
        return dotted[len(head) :]
    return dotted


@dataclasses.dataclass
class _Entry:
    """A rule as found in a file: its name and notify list even when the rule is invalid, so
    duplicate names and unknown channels are reported alongside its other problems."""

    name: str
    line: int | None
    notify: list[Any]
    notify_lines: list[int | None]
    rule: Rule | None


def _load_file(path: Path) -> tuple[list[_Entry], list[Problem]]:
    filename = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Problem(filename, None, f"cannot read: {exc}")]
    try:
        data, linemap = load_yaml_with_lines(text, filename, error=RuleError)
    except RuleError as exc:
        return [], list(exc.problems)
    if data is None:
        return [], [Problem(filename, 1, "empty rule file (expected a mapping with a rules: list)")]
    if not isinstance(data, dict):
        return [], [Problem(filename, 1, "a rule file is a mapping (expected rules: [...])")]
    try:
        RuleFileModel.model_validate(data)
    except pydantic.ValidationError as exc:
        return [], problems_from_validation_error(
            exc, filename, linemap, data=data, model=RuleFileModel
        )
    out: list[_Entry] = []
    problems: list[Problem] = []
    for index, raw in enumerate(data["rules"]):
        rule_path: Path_ = ("rules", index)
        name = raw.get("name") if isinstance(raw, dict) else None
        label = name if isinstance(name, str) and name else f"#{index + 1}"
        report = _Reporter(filename, linemap, label, rule_path, data)
        if not isinstance(raw, dict):
            report.error((), "a rule is a mapping (expected name, resource, when, ...)")
            problems.extend(report.problems)
            continue
        rule = _build_rule(raw, report, filename, linemap.line_for(rule_path))
        problems.extend(report.problems)
        if isinstance(name, str) and name:
            notify = raw.get("notify")
            notify = [c for c in notify if isinstance(c, str)] if isinstance(notify, list) else []
            out.append(
                _Entry(
                    name,
                    linemap.line_for((*rule_path, "name")),
                    notify,
                    [linemap.line_for((*rule_path, "notify", i)) for i in range(len(notify))],
                    rule if not report.problems else None,
                )
            )
    return out, problems


def _build_rule(
    raw: dict[str, Any], report: _Reporter, filename: str, line: int | None
) -> Rule | None:
    model: RuleModel | None = None
    try:
        model = RuleModel.model_validate(raw)
    except pydantic.ValidationError as exc:
        report.validation(exc, (), raw, RuleModel)
    resource = raw.get("resource")
    when = raw.get("when")
    node = None
    if isinstance(resource, str) and resource in ("instance", "account", "task", "monitor"):
        if "when" not in raw:
            pass  # reported by the model as missing
        else:
            node = parse_when(when, ("when",), resource, report)
    rule_actions = _parse_actions(raw, report, filename, node)
    if model is None or node is None or rule_actions is None:
        return None
    return Rule(
        name=model.name,
        resource=model.resource,
        when=node,
        description=model.description,
        for_=model.for_,
        keep_firing_for=model.keep_firing_for,
        severity=model.severity,
        labels=dict(model.labels),
        notify=tuple(model.notify) if model.notify is not None else None,
        repeat_interval=model.repeat_interval,
        on_missing=model.on_missing,
        summary=model.summary,
        source=f"{filename}:{line}" if line else filename,
        needs=node.needs,
        actions=rule_actions,
        exclude=tuple(model.exclude),
        dry_run=model.dry_run,
    )


def _uses(node: Node | None, name: str) -> bool:
    if node is None:
        return False
    if isinstance(node, BuiltinNode):
        return node.spec.name == name
    children = getattr(node, "children", None)
    if children is not None:
        return any(_uses(c, name) for c in children)
    return _uses(getattr(node, "child", None), name)


def _parse_actions(
    raw: dict[str, Any], report: _Reporter, filename: str, node: Node | None
) -> tuple[RuleAction, ...] | None:
    """The rule's ``actions`` list, each item one registered action with its parameters;
    None when something is wrong (reported)."""
    items = raw.get("actions")
    if items is None or not isinstance(items, list):
        return ()  # absent, or not a list: the rule model reports the latter
    expected = ", ".join(action_registry.names())
    resource = raw.get("resource")
    out: list[RuleAction] = []
    ok = True
    seen: set[str] = set()
    for i, item in enumerate(items):
        path: Path_ = ("actions", i)
        if isinstance(item, str) and item in action_registry:
            item = {item: None}  # "- start" reads as "- start: {}"
        if not isinstance(item, dict) or len(item) != 1:
            report.error(path, f"an action is a mapping with one key (expected one of: {expected})")
            ok = False
            continue
        ((name, value),) = item.items()
        sub: Path_ = (*path, name)
        spec = action_registry.get(str(name))
        if spec is None:
            hint = " (deleting is not an action: nothing deletes)" if name == "delete" else ""
            report.error(sub, f"unknown action {name!r}{hint} (expected one of: {expected})")
            ok = False
            continue
        if isinstance(resource, str) and resource not in spec.resources:
            wanted = " or ".join(sorted(spec.resources))
            report.error(
                sub, f"{name} does not apply to {resource} rules (expected resource: {wanted})"
            )
            ok = False
            continue
        if name in seen:
            report.error(sub, f"{name} is listed twice (expected each action at most once)")
            ok = False
            continue
        seen.add(str(name))
        data = {} if value is None else value
        if not isinstance(data, dict):
            report.error(sub, f"{name} takes a mapping of parameters (expected e.g. {name}: {{}})")
            ok = False
            continue
        try:
            params = spec.params.model_validate(data)
        except pydantic.ValidationError as exc:
            report.validation(exc, sub, data, spec.params)
            ok = False
            continue
        if (
            name == "convert_to_subscription"
            and node is not None
            and not _uses(node, "subscription_candidate")
        ):
            report.error(
                sub,
                "convert_to_subscription acts only on subscription_candidate alerts "
                "(expected the rule's when to use subscription_candidate)",
            )
            ok = False
            continue
        line = report.linemap.line_for((*report.rule_path, *sub))
        out.append(RuleAction(str(name), params, f"{filename}:{line}" if line else filename))
    return tuple(out) if ok else None


def load_rules(paths: Iterable[Path | str], known_channels: set[str] | None = None) -> RuleSet:
    """Load every rule file in ``paths`` (files or folders).

    ``known_channels``: the channel names the configuration defines; a rule's ``notify`` naming
    another is an error. ``None`` skips that check (e.g. ``check`` without a config).
    Raises :class:`RuleError` listing every problem found.
    """
    files, problems = rule_files(paths)
    rules: list[Rule] = []
    first_seen: dict[str, str] = {}
    for path in files:
        entries, file_problems = _load_file(path)
        problems.extend(file_problems)
        for entry in entries:
            where = f"{path}:{entry.line}" if entry.line else str(path)
            if entry.name in first_seen:
                problems.append(
                    Problem(
                        str(path),
                        entry.line,
                        f"duplicate rule name (first defined at {first_seen[entry.name]}; "
                        "expected names unique across all rule files)",
                        rule=entry.name,
                        field="name",
                    )
                )
                continue
            first_seen[entry.name] = where
            if known_channels is not None:
                for i, channel in enumerate(entry.notify):
                    if channel not in known_channels:
                        known = ", ".join(sorted(known_channels)) or "none configured"
                        problems.append(
                            Problem(
                                str(path),
                                entry.notify_lines[i],
                                f"unknown channel {channel!r} (expected one of: {known})",
                                rule=entry.name,
                                field=f"notify[{i}]",
                            )
                        )
            if entry.rule is not None:
                rules.append(entry.rule)
    if problems:
        count = len(problems)
        raise RuleError(f"{count} problem{'s' if count != 1 else ''} in rule files", problems)
    return RuleSet(tuple(rules), tuple(str(f) for f in files))
