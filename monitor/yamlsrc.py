"""YAML with line numbers, and pydantic errors turned into ``file:line: key.path: message``.

The configuration loader and the rule loader both read YAML that a person wrote, and both must
point at the line where something is wrong. PyYAML's composer keeps a start mark on every node;
:func:`load_yaml_with_lines` constructs the data with the safe loader and keeps, for every node
of the document, where it starts: :class:`LineMap` answers the 1-based line of a path into the
document (``("accounts", 0, "api_key_env")``): the line of the key (for a mapping entry) or of
the item (for a sequence element).

The files are also hostile input (a daemon that holds an API key reads them, at start and at
every SIGHUP), so reading one is bounded (:class:`YamlLimits`): its size, its nesting depth and
the number of values its aliases expand to are capped while it is composed, before anything
walks the data. Lines are recorded once per node, not once per path: a node that aliases make
reachable along 9**9 paths (a "billion laughs" file) is still one node. Each violation is one
problem that names the file and the line.

:func:`problems_from_validation_error` then maps each pydantic error's location onto that map.
Pydantic locations can contain labels that are not in the data (the member of a union, a
discriminator tag); they are dropped so the printed path is the one the user wrote.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
import yaml
from pydantic import BaseModel
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from monitor.errors import Problem, UserError

__all__ = [
    "MAX_YAML_BYTES_ENV",
    "LineMap",
    "YamlLimits",
    "YamlPath",
    "format_path",
    "load_yaml_with_lines",
    "problems_from_validation_error",
    "read_yaml_file",
]

YamlPath = tuple[str | int, ...]
"""A path into a YAML document: mapping keys and sequence indexes, from the root."""

MAX_YAML_BYTES_ENV = "NOVITA_MONITOR_MAX_YAML_BYTES"
"""Raises (or lowers) the size cap; an environment variable because a file cannot set its own."""


# --------------------------------------------------------------------------------------------
# limits


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


@dataclass(frozen=True)
class YamlLimits:
    """What one YAML file may cost.

    ``max_bytes``: the file's size (2 MiB: the shipped rules and their tests together are
    about 30 KiB). ``max_depth``: nested mappings and sequences (a rule's deepest ``all``/
    ``any``/``not`` tree needs a dozen; PyYAML's composer recurses per level, so 1,000 levels
    were a ``RecursionError``). ``max_values``: nodes (keys, scalars, mappings, sequences) once
    every alias is expanded, what pydantic and the rule builder walk; composing 100,000 plain
    nodes costs about 0.8 s and 90 MB, and the shipped rules and their tests hold 1,750. It
    follows a raised ``max_bytes`` (:meth:`from_env`), so a bigger file is not refused for
    holding what its size allows.
    """

    max_bytes: int = 2 * 1024 * 1024
    max_depth: int = 64
    max_values: int = 100_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> YamlLimits:
        """The defaults, with ``max_bytes`` from ``$NOVITA_MONITOR_MAX_YAML_BYTES`` when set
        (bytes, or a number with K, M or G: ``4M``). Read at each load; a daemon's environment
        is fixed at its start, so a SIGHUP applies the cap it started with."""
        env = os.environ if env is None else env
        raw = env.get(MAX_YAML_BYTES_ENV)
        if raw is None or not raw.strip():
            return cls()
        match = _SIZE.match(raw)
        value = 0
        if match:
            unit = (match.group(2) or "b")[0].lower()
            value = int(match.group(1)) * _SIZE_UNITS.get(unit, 1)
        if value <= 0:
            raise UserError(
                f"{MAX_YAML_BYTES_ENV}={raw!r} is not a size "
                "(expected a positive number of bytes, or a number with K, M or G, e.g. 4M)"
            )
        default = cls()
        scale = max(1.0, value / default.max_bytes)
        return cls(max_bytes=value, max_values=int(default.max_values * scale))


class _LimitExceeded(Exception):
    """Raised inside the composer; becomes one :class:`Problem` at ``line``."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _size_problem(filename: str, text: str, size: int, limits: YamlLimits) -> Problem:
    line = text.count("\n", 0, limits.max_bytes) + 1  # where the cap is crossed (about)
    return Problem(
        filename,
        line,
        f"the file is larger than the limit of {limits.max_bytes} bytes"
        + (f" ({size} bytes)" if size > 0 else "")
        + f" (expected a smaller file, or a higher limit in ${MAX_YAML_BYTES_ENV})",
    )


def read_yaml_file(
    path: Path, *, error: type[UserError] = UserError, limits: YamlLimits | None = None
) -> str:
    """The text of ``path``, read no further than the size cap (a huge file is never read
    whole). ``OSError`` and ``UnicodeDecodeError`` propagate: the caller words them."""
    limits = limits or YamlLimits.from_env()
    with path.open("rb") as fh:
        raw = fh.read(limits.max_bytes + 1)
    if len(raw) > limits.max_bytes:
        filename = str(path)
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        text = raw.decode("utf-8", errors="replace")  # the cut may split a character
        raise error(f"{filename}: file too large", [_size_problem(filename, text, size, limits)])
    return raw.decode("utf-8")


def _line_of(mark: Any) -> int:
    return int(mark.line) + 1 if mark is not None else 1


class _Guard(Composer, SafeConstructor, Resolver):
    """The safe loader's composer, with the limits checked while the node graph is composed:
    the depth before each nested collection is entered, the expanded count at each node and
    alias (an alias counts as every node of the one it names, computed once when that ends).
    The events come from a parser mixed in by the two loaders below."""

    if TYPE_CHECKING:  # from the parser mixed in

        def __init__(self, text: str, limits: YamlLimits) -> None: ...
        def peek_event(self) -> Any: ...
        def dispose(self) -> None: ...

    def _start(self, limits: YamlLimits) -> None:
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._limits = limits
        self._depth = 0
        self._values = 0
        self._aliased = False  # whether an alias has added to the count
        self._sizes: dict[int, int] = {}  # id(anchored node) -> its expanded node count

    def _count(self, n: int, mark: Any, alias: bool = False) -> None:
        self._values += n
        self._aliased |= alias
        if self._values > self._limits.max_values:
            cap = self._limits.max_values
            raise _LimitExceeded(
                _line_of(mark),
                f"the document expands to more than {cap} values (expected fewer; aliases "
                "that repeat aliases multiply: a 'billion laughs' file?)"
                if self._aliased
                else f"the document holds more than {cap} values (expected fewer: split it "
                f"into several files, or raise ${MAX_YAML_BYTES_ENV}, which raises this too)",
            )

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # an undefined alias is the composer's error
                size = self._sizes.get(id(target))
                if size is None:
                    raise _LimitExceeded(
                        _line_of(event.start_mark),
                        f"alias *{event.anchor} is used inside the node it names "
                        "(expected an alias to a node defined before it, not to its container)",
                    )
                self._count(size, event.start_mark, alias=True)
            return super().compose_node(parent, index)
        nested = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        if nested and self._depth >= self._limits.max_depth:
            raise _LimitExceeded(
                _line_of(event.start_mark),
                f"nested deeper than {self._limits.max_depth} levels (expected fewer levels)",
            )
        before = self._values
        self._count(1, event.start_mark)
        self._depth += nested
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= nested
        if event.anchor is not None:
            self._sizes[id(node)] = self._values - before
        return node


class _PureLoader(_Guard, Reader, Scanner, Parser):
    """PyYAML's own parser: slower, and its syntax errors say more ("expected ',' or ']', but
    got ':'" where libyaml says "did not find expected ',' or ']'")."""

    def __init__(self, text: str, limits: YamlLimits) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        self._start(limits)


try:
    from yaml._yaml import CParser

    class _FastLoader(_Guard, CParser):  # the composer first: CParser has one in C
        """libyaml's parser for the events (composing 100,000 nodes: 0.7 s instead of 2.1)."""

        def __init__(self, text: str, limits: YamlLimits) -> None:
            CParser.__init__(self, text)
            self._start(limits)

    _LOADERS: tuple[type[_Guard], ...] = (_FastLoader, _PureLoader)
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _LOADERS = (_PureLoader,)


# --------------------------------------------------------------------------------------------
# lines


class _Lines:
    """One node's children: key or index -> (line of the entry, the child's ``_Lines``)."""

    __slots__ = ("children",)

    def __init__(self) -> None:
        self.children: dict[str | int, tuple[int, _Lines]] = {}


@dataclass
class LineMap:
    """Where each part of a YAML document starts (1-based line numbers).

    Built from the document's nodes (each once, however many aliases reach it); ``lines`` holds
    explicit entries (an empty document, tests) and is consulted when the nodes do not answer.
    """

    lines: dict[YamlPath, int] = field(default_factory=dict)
    _root: tuple[int, _Lines] | None = field(default=None, repr=False, compare=False)

    def _walk(self, path: YamlPath) -> tuple[int, int] | None:
        """(line of the longest resolvable prefix, its length), from the node tree."""
        if self._root is None:
            return None
        line, node = self._root
        depth = 0
        for part in path:
            entry = node.children.get(part)
            if entry is None:
                break
            line, node = entry
            depth += 1
        return line, depth

    def line_for(self, path: Iterable[str | int]) -> int | None:
        """The line of ``path``, or of its nearest ancestor that the document contains."""
        key = tuple(path)
        walked = self._walk(key)
        if walked is not None and walked[1] == len(key):
            return walked[0]
        while True:
            if key in self.lines:
                return self.lines[key]
            if not key:
                return walked[0] if walked is not None else None
            if walked is not None and len(key) <= walked[1]:
                return walked[0]
            key = key[:-1]

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, tuple):
            return False
        walked = self._walk(path)
        return path in self.lines or (walked is not None and walked[1] == len(path))


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
    text: str,
    filename: str,
    *,
    error: type[UserError] = UserError,
    limits: YamlLimits | None = None,
) -> tuple[Any, LineMap]:
    """Parse ``text`` safely and return ``(data, linemap)``.

    Syntax errors, duplicate keys and exceeded :class:`YamlLimits` (from the environment when
    not given) raise ``error`` (a :class:`UserError` subclass, e.g. ``ConfigError`` or
    ``RuleError``) whose problems name ``filename`` and the line. An empty document gives
    ``None``.
    """
    limits = limits or YamlLimits.from_env()
    if len(text) > limits.max_bytes or len(text.encode("utf-8")) > limits.max_bytes:
        size = len(text.encode("utf-8"))
        raise error(f"{filename}: file too large", [_size_problem(filename, text, size, limits)])
    for attempt, loader_type in enumerate(_LOADERS, start=1):
        loader = loader_type(text, limits)
        try:
            node = loader.get_single_node()
            break
        except _LimitExceeded as exc:
            loader.dispose()
            problem = Problem(filename, exc.line, exc.message)
            raise error(f"{filename}: refused", [problem]) from None
        except yaml.YAMLError as exc:
            loader.dispose()
            if attempt < len(_LOADERS):
                continue  # invalid: parse again with the parser whose errors say more
            if isinstance(exc, yaml.MarkedYAMLError):
                problem = _syntax_problem(exc, filename)
            else:
                problem = Problem(filename, None, f"invalid YAML: {exc}")
            raise error(f"{filename}: invalid YAML", [problem]) from None
    try:
        if node is None:
            return None, LineMap({(): 1})
        duplicates = list(_duplicate_keys(node, filename))
        if duplicates:
            raise error(f"{filename}: invalid YAML", duplicates)
        try:
            data = loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            raise error(f"{filename}: invalid YAML", [_syntax_problem(exc, filename)]) from None
        return data, LineMap(_root=(node.start_mark.line + 1, _line_tree(loader, node)))
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


def _line_tree(loader: _Guard, root: yaml.Node) -> _Lines:
    """Each node once (aliases share it), without recursion. Runs after construction, which
    has already folded merge keys (``<<: *base``) into the mappings that use them; when a key
    appears twice that way, the later entry is the one the data holds, so its line wins."""
    made: dict[int, _Lines] = {}
    order: list[yaml.Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in made:
            continue
        made[id(node)] = _Lines()
        order.append(node)
        if isinstance(node, yaml.MappingNode):
            stack.extend(value for _key, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    for node in order:
        children = made[id(node)].children
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = _key_of(loader, key_node)
                if key is not None:
                    children[key] = (key_node.start_mark.line + 1, made[id(value_node)])
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                children[index] = (item.start_mark.line + 1, made[id(item)])
    return made[id(root)]


def _key_of(loader: _Guard, key_node: yaml.Node) -> str | int | None:
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
