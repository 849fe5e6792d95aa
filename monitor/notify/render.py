"""Turning notices into grouped messages: one per channel per evaluation cycle.

Inside a message, notices are grouped by rule and state; each group has a headline with the money
at stake ("[warning] idle-gpu: 3 GPUs idle, $4.20/h wasted") and a line per resource with its name,
id, value against threshold and costs. Wording lives in Jinja2 templates (``monitor/templates``):
``title.j2``, ``body.j2``, ``headline.j2``, ``line.j2``; a directory of same-named files overrides
them, and a rule's own ``template`` string replaces ``line.j2`` for that rule's lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from monitor.logs import get_logger
from monitor.notify.model import Message, Notice, severity_rank
from monitor.notify.routing import Router

__all__ = [
    "Group",
    "Renderer",
    "build_messages",
    "format_duration",
    "format_hours",
    "format_money",
    "format_number",
    "validate_template",
]

log = get_logger("monitor.notify")

_SUMMED = ("cost_per_hour_usd", "cost_so_far_usd", "monthly_saving_usd")


def _gpus(notice: Notice) -> int:
    """The idle GPUs a notice counts (its instance's GPUs when it does not say)."""
    return int(_dec(notice.values.get("idle_gpus")) or _dec(notice.values.get("gpu_count")) or 1)


def _dec(x: Any) -> Decimal | None:
    """A Decimal for numbers and numeric strings; None for anything else (and for bools)."""
    if x is None or isinstance(x, bool | jinja2.Undefined):
        return None
    if isinstance(x, Decimal):
        return x
    try:
        d = Decimal(str(x))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def _missing(x: Any) -> bool:
    return x is None or isinstance(x, jinja2.Undefined)


def format_money(x: Any) -> str:
    """``$4.20``, ``-$1,234.50``; sub-cent amounts keep four decimals (``$0.0042``)."""
    if _missing(x):
        return ""
    d = _dec(x)
    if d is None:
        return str(x)
    sign = "-" if d < 0 else ""
    d = abs(d)
    if 0 < d < Decimal("0.01"):
        return f"{sign}${d.quantize(Decimal('0.0001'), ROUND_HALF_UP)}"
    return f"{sign}${d.quantize(Decimal('0.01'), ROUND_HALF_UP):,.2f}"


def format_hours(x: Any) -> str:
    """``38.5 h``."""
    if _missing(x):
        return ""
    d = _dec(x)
    if d is None:
        return str(x)
    return f"{d.quantize(Decimal('0.1'), ROUND_HALF_UP)} h"


def _plain(d: Decimal) -> str:
    if d == d.to_integral_value():
        return str(d.quantize(Decimal(1)))
    text = f"{d.quantize(Decimal('0.01'), ROUND_HALF_UP)}"
    return text.rstrip("0").rstrip(".")


def format_number(x: Any, unit: Any = None) -> str:
    """A value with its unit: ``1.2%``, ``$4.20`` (unit ``$``/``usd``), ``38.5 h``, ``3 GB``."""
    if _missing(x):
        return ""
    unit = None if _missing(unit) else str(unit)
    if unit and unit.lower() in ("$", "usd"):
        return format_money(x)
    if unit and unit.lower() in ("h", "hours"):
        return format_hours(x)
    d = _dec(x)
    text = str(x) if d is None else _plain(d)
    if not unit:
        return text
    return f"{text}{unit}" if unit == "%" else f"{text} {unit}"


def format_duration(x: Any) -> str:
    """``45 min``, ``5 h 10 min``, ``2 d 3 h`` for a timedelta (or seconds)."""
    if _missing(x):
        return ""
    seconds = x.total_seconds() if isinstance(x, timedelta) else float(x)
    minutes = max(0, round(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def format_minutes(x: Any) -> str:
    """A number of minutes as :func:`format_duration` writes it."""
    d = _dec(x)
    return "" if d is None else format_duration(float(d) * 60)


def _known(x: Any) -> bool:
    """The template test ``x is known``: defined and not None."""
    return not _missing(x)


def _plural(word: Any, n: Any) -> str:
    word = str(word)
    if n == 1 or word.endswith("s"):
        return word
    return f"{word}s"


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Group:
    """One rule's notices of one state inside a message."""

    rule: str
    state: str
    severity: str
    count: int  # alerts (an action's notice, which carries ``action``, is not one)
    headline: str
    lines: list[str]
    names: tuple[str, ...]  # the resource each line is about, as its line names it
    totals: Mapping[str, Decimal | None]
    actions: int = 0  # the actions' notices in the group (planned, done, refused)


def _environment(template_dir: Path | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    loaders.append(jinja2.PackageLoader("monitor", "templates"))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        # the package's templates never change under a running process: no stat() of the
        # file at every render (two per alert line); a user's directory may be edited
        auto_reload=template_dir is not None,
    )
    env.filters.update(
        money=format_money,
        hours=format_hours,
        num=format_number,
        duration=format_duration,
        minutes=format_minutes,
        plural=_plural,
    )
    env.tests["known"] = _known
    return env


@lru_cache(maxsize=1)
def _shared_environment() -> jinja2.Environment:
    return _environment(None)


def validate_template(source: str) -> str | None:
    """The syntax error in a rule's template override, or None if it compiles (for ``check``)."""
    try:
        _shared_environment().parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    return None


class Renderer:
    """Renders notices with the default templates, optionally overridden from a directory."""

    def __init__(self, template_dir: Path | None = None) -> None:
        self.env = _shared_environment() if template_dir is None else _environment(template_dir)
        self._overrides: dict[str, jinja2.Template | None] = {}

    def _override(self, notice: Notice) -> jinja2.Template | None:
        source = notice.template
        if not source:
            return None
        if source not in self._overrides:
            try:
                self._overrides[source] = self.env.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                log.warning("notify.template_error", rule=notice.rule, error=str(exc))
                self._overrides[source] = None
        return self._overrides[source]

    def line_context(self, notice: Notice, now: datetime) -> dict[str, Any]:
        """Everything a line template can use (see ``line.j2``)."""
        since = format_duration(now - notice.started_at) if notice.started_at else ""
        fields = {
            "fingerprint": notice.fingerprint,
            "rule": notice.rule,
            "severity": notice.severity,
            "state": notice.state,
            "account": notice.account,
            "resource_kind": notice.resource_kind,
            "resource_id": notice.resource_id,
            "resource_name": notice.resource_name,
            "name": notice.resource_name or notice.resource_id,
            "display": _display(notice),
            "summary": notice.summary,
            "labels": dict(notice.labels),
            "values": dict(notice.values),
            "started_at": notice.started_at,
            "since": since,
            "now": now,
        }
        return {**notice.values, **fields}

    def line(self, notice: Notice, now: datetime, context: dict[str, Any] | None = None) -> str:
        """The notice's line: the rule's override if it renders, else ``line.j2``."""
        context = context if context is not None else self.line_context(notice, now)
        override = self._override(notice)
        if override is not None:
            try:
                return _one_line(override.render(context))
            except Exception as exc:  # a user template must never stop a notification
                log.warning("notify.template_error", rule=notice.rule, error=str(exc))
        return _one_line(self.env.get_template("line.j2").render(context))

    def group(
        self,
        rule: str,
        state: str,
        notices: list[Notice],
        now: datetime,
        also: list[dict[str, Any]] | None = None,
    ) -> Group:
        """One rule's group. ``also``: earlier groups of the message that alert on some of the
        same resources for the same condition (``{"rule", "count"}``), said in the headline."""
        notices = sorted(
            notices,
            key=lambda n: (
                -(_dec(n.values.get("cost_per_hour_usd")) or Decimal(0)),
                n.resource_name,
                n.resource_id,
            ),
        )
        severity = max((n.severity for n in notices), key=severity_rank)
        totals: dict[str, Decimal | None] = {}
        for key in _SUMMED:
            found = [d for n in notices if (d := _dec(n.values.get(key))) is not None]
            totals[key] = sum(found, Decimal(0)) if found else None
        runways = [d for n in notices if (d := _dec(n.values.get("runway_hours"))) is not None]
        totals["runway_hours"] = min(runways) if runways else None
        kind = _kind_of(notices)
        of_kind = [n for n in notices if n.values.get("kind") == kind]
        gpus = sum(_gpus(n) for n in of_kind)
        # the GPUs the hourly figure covers (a prepaid or unpriced one has none)
        priced_gpus = sum(
            _gpus(n) for n in of_kind if n.values.get("cost_per_hour_usd") is not None
        )
        contexts = [self.line_context(n, now) for n in notices]  # once: lines and headline
        # an action's notice on a resource whose alert is in the group says its part on that
        # alert's line: one line per instance, its figures then what is done about them
        alert_at = {
            (n.resource_kind, n.resource_id): i
            for i, n in enumerate(notices)
            if "action" not in n.values
        }
        shown: list[int] = []
        joined: dict[int, list[str]] = {}
        for i, n in enumerate(notices):
            at = alert_at.get((n.resource_kind, n.resource_id)) if "action" in n.values else None
            if at is None or not n.summary:
                shown.append(i)
            else:
                joined.setdefault(at, []).append(n.summary)
        lines = [
            "; ".join([self.line(notices[i], now, contexts[i]), *joined.get(i, [])]) for i in shown
        ]
        actions = sum(1 for n in notices if "action" in n.values)
        count = len(notices) - actions
        headline = _one_line(
            self.env.get_template("headline.j2").render(
                rule=rule,
                kind=kind,
                state=state,
                severity=severity,
                count=count,
                actions=actions,
                gpus=gpus,
                priced_gpus=priced_gpus,
                noun=notices[0].resource_kind or "resource",
                totals=totals,
                notices=contexts,
                also=also or [],
            )
        )
        names = tuple(contexts[i]["display"] for i in shown)
        return Group(rule, state, severity, count, headline, lines, names, totals, actions)

    def message(self, channel: str, notices: list[Notice], now: datetime) -> Message:
        """One grouped message for ``channel`` (``notices`` must not be empty)."""
        by_key: dict[tuple[str, str], list[Notice]] = {}
        for n in notices:
            by_key.setdefault((n.state, n.rule), []).append(n)
        # firing groups first, worst severity first, then by rule; resolved ones by rule
        firing_keys = sorted(
            (key for key in by_key if key[0] != "resolved"),
            key=lambda k: (-max(severity_rank(n.severity) for n in by_key[k]), k[1]),
        )
        also = _overlaps(by_key, firing_keys)
        firing = [self.group(k[1], k[0], by_key[k], now, also.get(k)) for k in firing_keys]
        resolved = [
            self.group(k[1], k[0], by_key[k], now)
            for k in sorted((key for key in by_key if key[0] == "resolved"), key=lambda k: k[1])
        ]
        said = _said_once(firing + resolved)
        firing, resolved = said[: len(firing)], said[len(firing) :]
        worst = firing[0].severity if firing else "resolved"
        context = {
            "groups": firing + resolved,
            "firing": firing,
            "resolved": resolved,
            "severity": worst,
            "firing_count": sum(g.count for g in firing),
            "actions_count": sum(g.actions for g in firing + resolved),
            "resolved_count": sum(g.count for g in resolved),
            "now": now,
        }
        title = _one_line(self.env.get_template("title.j2").render(context))
        body = self.env.get_template("body.j2").render(context)
        body = "\n".join(line.rstrip() for line in body.strip().splitlines())
        while "\n\n\n" in body:
            body = body.replace("\n\n\n", "\n\n")
        return Message(
            channel=channel,
            title=title,
            body=body,
            kind=_kind(worst),
            fingerprints=tuple(n.fingerprint for n in notices),
        )


def _kind_of(notices: list[Notice]) -> str | None:
    """A group's condition kind (an action's notice in the group carries none)."""
    return next((str(n.values["kind"]) for n in notices if n.values.get("kind")), None)


def _overlaps(
    by_key: Mapping[tuple[str, str], list[Notice]], firing: list[tuple[str, str]]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """For each firing group (``firing``: their keys in the message's order), the groups before
    it whose alerts of the same condition kind are on some of its resources: two idle rules on
    the same instances (``idle-gpu``, ``stop-idle-gpus``) each say "$0.70/h wasted", and a
    reader should not add the two up."""
    earlier: list[tuple[str, str | None, set[tuple[str, str]]]] = []
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for key in firing:
        notices = by_key[key]
        kind = _kind_of(notices)
        mine = {(n.resource_kind, n.resource_id) for n in notices if "action" not in n.values}
        for rule, their_kind, theirs in earlier:
            shared = len(mine & theirs)
            if kind is not None and their_kind == kind and shared:
                out.setdefault(key, []).append({"rule": rule, "count": shared})
        earlier.append((key[1], kind, mine))
    return out


def _display(notice: Notice) -> str:
    """How a line names its resource: the name, and the id when it differs."""
    name = notice.resource_name or notice.resource_id
    if notice.resource_name and notice.resource_name != notice.resource_id:
        return f"{name} ({notice.resource_id})"
    return name


def _said_once(groups: list[Group]) -> list[Group]:
    """A line that repeats, word for word, one an earlier group of the message showed (two
    rules on one instance, e.g. ``idle-gpu`` and ``stop-idle-gpus`` resolved by its stop) points
    to it instead of showing its figures again, where a reader would add them up twice."""
    said: dict[str, str] = {}
    out = []
    for group in groups:
        lines = []
        for line, name in zip(group.lines, group.names, strict=True):
            if said.get(line, group.rule) != group.rule:
                lines.append(f"{name}: as under {said[line]}")
            else:
                said.setdefault(line, group.rule)
                lines.append(line)
        out.append(replace(group, lines=lines))
    return out


def _kind(worst: str) -> str:
    """The apprise notify type of a message, from its worst firing severity."""
    rank = severity_rank(worst)
    if worst == "resolved":
        return "success"
    if rank >= 3:
        return "failure"
    if rank == 2:
        return "warning"
    return "info"


def build_messages(
    notices: Iterable[Notice],
    router: Router,
    now: datetime,
    renderer: Renderer | None = None,
) -> list[Message]:
    """One grouped message per channel for this evaluation cycle's notices.

    A notice repeated with the same fingerprint and state is counted once (the last one wins).
    Resolved notices skip channels whose ``send_resolved`` is off; a channel left with nothing to
    say gets no message. Messages are ordered by channel name.
    """
    renderer = renderer or Renderer()
    unique: dict[tuple[str, str], Notice] = {}
    for notice in notices:
        unique[(notice.fingerprint, notice.state)] = notice
    per_channel: dict[str, list[Notice]] = {}
    for notice in unique.values():
        for name in router.channels_for(notice):
            if notice.state == "resolved" and not router.channel(name).send_resolved:
                continue
            per_channel.setdefault(name, []).append(notice)
    return [renderer.message(name, per_channel[name], now) for name in sorted(per_channel)]
