"""YAML with line numbers, and pydantic errors turned into ``file:line: key.path: message``.

The configuration loader and the rule loader both read YAML that a person wrote, and both must
point at the line where something is wrong. PyYAML's composer keeps a start mark on every node;
:func:`load_yaml_with_lines` constructs the data with the safe loader and records, for every
path into the document (``("accounts", 0, "api_key_env")``), the 1-based line of the key (for a
mapping entry) or of the item (for a sequence element).

:func:`problems_from_validation_error` then maps each pydantic error's location onto that map.
Pydantic locations can contain labels that are not in the data (the member of a union, a
discriminator tag); they are dropped so the printed path is the one the user wrote.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic
import yaml
from pydantic import BaseModel

from monitor.errors import Problem, UserError

__all__ = [
    "LineMap",
    "YamlPath",
    "format_path",
    "load_yaml_with_lines",
    "problems_from_validation_error",
]

YamlPath = tuple[str | int, ...]
"""A path into a YAML document: mapping keys and sequence indexes, from the root."""


@dataclass
class LineMap:
    """Where each part of a YAML document starts (1-based line numbers)."""

    lines: dict[YamlPath, int] = field(default_factory=dict)

    def line_for(self, path: Iterable[str | int]) -> int | None:
        """The line of ``path``, or of its nearest ancestor that the document contains."""
        key = tuple(path)
        while True:
            if key in self.lines:
                return self.lines[key]
            if not key:
                return None
            key = key[:-1]

    def __contains__(self, path: object) -> bool:
        return path in self.lines

    def __len__(self) -> int:
        return len(self.lines)


def format_path(path: Iterable[str | int]) -> str:
    """``("accounts", 0, "name")`` -> ``accounts[0].name``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_yaml_with_lines(
    text: str, filename: str, *, error: type[UserError] = UserError
) -> tuple[Any, LineMap]:
    """Parse ``text`` safely and return ``(data, linemap)``.

    Syntax errors and duplicate keys raise ``error`` (a :class:`UserError` subclass, e.g.
    ``ConfigError`` or ``RuleError``) whose problems name ``filename`` and the line. An empty
    document gives ``None``.
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise error(f"{filename}: invalid YAML", [_syntax_problem(exc, filename)]) from None
        except yaml.YAMLError as exc:
            raise error(
                f"{filename}: invalid YAML", [Problem(filename, None, f"invalid YAML: {exc}")]
            ) from None
        if node is None:
            return None, LineMap({(): 1})
        duplicates = list(_duplicate_keys(node, filename))
        if duplicates:
            raise error(f"{filename}: invalid YAML", duplicates)
        try:
            data = loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            raise error(f"{filename}: invalid YAML", [_syntax_problem(exc, filename)]) from None
        linemap = LineMap()
        _record_lines(loader, node, (), node.start_mark.line + 1, linemap, set())
        return data, linemap
    finally:
        loader.dispose()


def _syntax_problem(exc: yaml.MarkedYAMLError, filename: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    what = exc.problem or "syntax error"
    if exc.context:
        what = f"{what} ({exc.context}"
        if exc.context_mark is not None and exc.context_mark is not mark:
            what += f" at line {exc.context_mark.line + 1}"
        what += ")"
    return Problem(filename, line, f"invalid YAML: {what}")


def _duplicate_keys(node: yaml.Node, filename: str) -> Iterator[Problem]:
    """PyYAML silently keeps the last of two equal keys; a person never means that."""
    stack: list[yaml.Node] = [node]
    seen_nodes: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen_nodes:
            continue
        seen_nodes.add(id(current))
        if isinstance(current, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key_node, value_node in current.value:
                stack.append(value_node)
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = (key_node.tag, key_node.value)
                line = key_node.start_mark.line + 1
                if key in first:
                    yield Problem(
                        filename,
                        line,
                        f"duplicate key {key_node.value!r} (first defined at line {first[key]})",
                    )
                else:
                    first[key] = line
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def _record_lines(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: YamlPath,
    line: int,
    linemap: LineMap,
    active: set[int],
) -> None:
    linemap.lines.setdefault(path, line)
    if id(node) in active:  # a recursive alias: stop rather than loop
        return
    active.add(id(node))
    try:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = _key_of(loader, key_node)
                if key is None:
                    continue
                _record_lines(
                    loader, value_node, (*path, key), key_node.start_mark.line + 1, linemap, active
                )
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                _record_lines(
                    loader, item, (*path, index), item.start_mark.line + 1, linemap, active
                )
    finally:
        active.discard(id(node))


def _key_of(loader: yaml.SafeLoader, key_node: yaml.Node) -> str | int | None:
    if not isinstance(key_node, yaml.ScalarNode):
        return None
    try:
        key = loader.construct_object(key_node)
    except yaml.YAMLError:
        return key_node.value
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        return str(key)
    return key


# --------------------------------------------------------------------------------------------
# pydantic errors -> problems


def problems_from_validation_error(
    exc: pydantic.ValidationError,
    filename: str,
    linemap: LineMap,
    rule: str | None = None,
    *,
    data: Any = None,
    model: type[BaseModel] | None = None,
    prefix: YamlPath = (),
) -> list[Problem]:
    """One :class:`Problem` per pydantic error: ``file:line: key.path: what (expected ...)``.

    ``data`` (the validated input) lets the printed path drop pydantic's union and tag labels;
    ``model`` lets an unknown key list the keys that are allowed there. ``prefix`` is prepended
    to every location (when a part of a document was validated on its own). Input values are
    quoted only for type and value errors of plain scalars, never for custom validators'
    messages, so a validator that handles a secret can keep it out of the report.
    """
    problems: list[Problem] = []
    seen: set[tuple[int | None, str, str]] = set()
    for err in exc.errors(include_url=False):
        raw_loc = (*prefix, *err["loc"])
        loc = _clean_loc(raw_loc, data, err["type"]) if data is not None else raw_loc
        line = linemap.line_for(loc)
        message = _message(err, model, tuple(err["loc"]))
        dotted = format_path(loc) or None
        key = (line, dotted or "", message)
        if key in seen:
            continue
        seen.add(key)
        problems.append(Problem(filename, line, message, rule=rule, field=dotted))
    return problems


def _clean_loc(loc: YamlPath, data: Any, err_type: str) -> YamlPath:
    """Keep the parts of ``loc`` that exist in ``data`` (the whole document).

    Pydantic puts labels in locations (a union member's name, a discriminator tag, a wrapped
    validator); they are not in the data and are dropped. A part missing from the data is kept
    only at the end of a "missing" or "unknown key" error: that is the key to add or remove.
    """
    out: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        present = (isinstance(current, Mapping) and part in current) or (
            isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        )
        if present:
            out.append(part)
            current = current[part]
        elif i == len(loc) - 1 and err_type in ("missing", "extra_forbidden"):
            out.append(part)
    return tuple(out)


def _message(err: Any, model: type[BaseModel] | None, loc: YamlPath | None) -> str:
    kind = err["type"]
    msg: str = err["msg"]
    if kind == "missing":
        return "missing required key"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1]) if model is not None and loc else None
        if allowed:
            return f"unknown key (expected one of: {', '.join(sorted(allowed))})"
        return "unknown key"
    if kind in ("value_error", "assertion_error"):
        for head in ("Value error, ", "Assertion failed, "):
            if msg.startswith(head):
                return msg[len(head) :]
        return msg
    ctx = err.get("ctx") or {}
    if "error" in ctx and kind.startswith("value_error"):
        return str(ctx["error"])
    if msg.startswith("Input should be "):
        expected = msg[len("Input should be ") :]
        return f"{_describe_input(err.get('input'))} is not valid (expected {expected})"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{_describe_input(err.get('input'))}: {msg[:1].lower()}{msg[1:]}"
    return msg[:1].lower() + msg[1:]


def _describe_input(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "an empty value"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _allowed_keys(model: type[BaseModel], path: YamlPath) -> set[str] | None:
    """The keys allowed at ``path`` inside ``model``, walking field annotations."""
    candidates: list[Any] = [model]
    for part in path:
        nxt: list[Any] = []
        for tp in _flatten(candidates):
            if _is_model(tp) and isinstance(part, str):
                info = _field_by_key(tp, part)
                if info is not None:
                    nxt.append(info.annotation)
            elif isinstance(part, int) and typing.get_origin(tp) in (list, tuple, set, frozenset):
                nxt.extend(typing.get_args(tp)[:1])
            elif typing.get_origin(tp) in (dict, Mapping) and len(typing.get_args(tp)) == 2:
                nxt.append(typing.get_args(tp)[1])
        if nxt:
            candidates = nxt
        elif isinstance(part, str):
            # a union label or a discriminator tag: narrow to the members it names, if any
            tagged = [tp for tp in _members(candidates) if _tagged(tp, part)]
            if tagged:
                candidates = tagged
    keys: set[str] = set()
    for tp in _flatten(candidates):
        if _is_model(tp):
            for name, info in tp.model_fields.items():
                if info.exclude:
                    continue
                alias = info.validation_alias if isinstance(info.validation_alias, str) else None
                keys.add(alias or info.alias or name)
    return keys or None


def _flatten(types_: Iterable[Any]) -> Iterator[Any]:
    for tp in types_:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            yield from _flatten(typing.get_args(tp)[:1])
        elif origin in (typing.Union, types.UnionType):
            yield from _flatten(typing.get_args(tp))
        else:
            yield tp


def _members(types_: Iterable[Any]) -> Iterator[Any]:
    """Union members, keeping their ``Annotated`` wrappers (where a ``Tag`` lives)."""
    for tp in types_:
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            yield from _members(typing.get_args(tp))
        elif origin is typing.Annotated and typing.get_origin(typing.get_args(tp)[0]) in (
            typing.Union,
            types.UnionType,
        ):
            yield from _members(typing.get_args(tp)[:1])
        else:
            yield tp


def _tagged(tp: Any, tag: str) -> bool:
    """Whether a union member is the one pydantic labels ``tag`` (Tag or Literal field)."""
    if typing.get_origin(tp) is typing.Annotated:
        base, *meta = typing.get_args(tp)
        if any(isinstance(m, pydantic.Tag) and m.tag == tag for m in meta):
            return True
        tp = base
    if not _is_model(tp):
        return getattr(tp, "__name__", None) == tag
    if tp.__name__ == tag:
        return True
    for info in tp.model_fields.values():
        if typing.get_origin(info.annotation) is typing.Literal and tag in typing.get_args(
            info.annotation
        ):
            return True
    return False


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _field_by_key(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else None
        if key in (name, info.alias, alias):
            return info
    return None
