"""The alert lifecycle: inactive -> pending -> firing -> resolved, as plain values.

An alert is keyed by a :func:`fingerprint` of (account, rule, resource kind, resource id). Its
:class:`AlertState` is all the engine needs to continue after a restart: when the condition
started to hold (``for``), when it last held (``keep_firing_for``), and when a notification
last went out (``repeat_interval``), so a restart neither re-sends nor forgets.

Notifications are due when an alert starts firing (or after a silence ends, if its firing was
never told), every ``repeat_interval`` while it fires, when its severity rises, and when it
resolves after a firing notice was sent. Silenced alerts change state but notify nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from monitor.rules.model import SEVERITY_RANK, Rule

STATES = ("inactive", "pending", "firing", "resolved")


@lru_cache(maxsize=1 << 16)  # every rule meets every resource at every evaluation
def fingerprint(account: str, rule: str, resource_kind: str, resource_id: str) -> str:
    """A stable 16-hex-digit id of one alert (same inputs, same id, across restarts)."""
    raw = "\x1f".join((account, rule, resource_kind, resource_id)).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class AlertState:
    """What is remembered about one alert between evaluations (persisted by the store)."""

    fingerprint: str
    account: str
    rule: str
    resource_kind: str
    resource_id: str
    state: str = "inactive"  # inactive | pending | firing | resolved
    resource_name: str = ""
    severity: str = "warning"
    active_since: datetime | None = None  # condition first held in this episode
    firing_since: datetime | None = None
    resolved_at: datetime | None = None
    last_match_at: datetime | None = None  # last evaluation where the condition held
    last_eval_at: datetime | None = None
    last_notified_at: datetime | None = None  # last firing notice of this episode
    notified_severity: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    summary: str = ""


@dataclass(frozen=True)
class Silence:
    """Mute notifications of matching alerts from ``starts_at`` until ``ends_at`` (always set).

    ``rule`` and ``resource_id`` are exact names or shell globs; ``None`` matches anything.
    ``account`` restricts to one account; ``labels`` must all be equal on the alert.
    """

    id: str
    ends_at: datetime
    rule: str | None = None
    resource_id: str | None = None
    account: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    reason: str = ""
    created_by: str = ""

    def active(self, now: datetime) -> bool:
        return (self.starts_at is None or self.starts_at <= now) and now < self.ends_at

    def matches(self, state: AlertState, now: datetime) -> bool:
        if not self.active(now):
            return False
        if self.account is not None and self.account != state.account:
            return False
        if self.rule is not None and not fnmatch.fnmatchcase(state.rule, self.rule):
            return False
        if self.resource_id is not None and not fnmatch.fnmatchcase(
            state.resource_id, self.resource_id
        ):
            return False
        return all(state.labels.get(k) == v for k, v in self.labels.items())


@dataclass(frozen=True)
class Transition:
    """One change of an alert's state, for the store's history."""

    fingerprint: str
    rule: str
    account: str
    resource_kind: str
    resource_id: str
    from_state: str
    to_state: str
    at: datetime
    severity: str
    values: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # e.g. "condition", "resource gone", "rule removed"


@dataclass(frozen=True)
class Notification:
    """A notice due now. Its first fields are exactly those of ``monitor.notify.Notice``
    (see :meth:`notice_fields`); the rest is context for history and templates."""

    fingerprint: str
    rule: str
    severity: str
    state: str  # firing | resolved
    account: str
    resource_kind: str
    resource_id: str
    resource_name: str
    summary: str
    values: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    channels: list[str] | None = None
    started_at: datetime | None = None
    template: str | None = None
    firing_since: datetime | None = None
    resolved_at: datetime | None = None
    description: str = ""
    reminder: bool = False  # a repeat of an already notified firing alert

    def notice_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``monitor.notify.Notice(**...)``."""
        return {
            "fingerprint": self.fingerprint,
            "rule": self.rule,
            "severity": self.severity,
            "state": self.state,
            "account": self.account,
            "resource_kind": self.resource_kind,
            "resource_id": self.resource_id,
            "resource_name": self.resource_name,
            "summary": self.summary,
            "values": dict(self.values),
            "labels": dict(self.labels),
            "channels": list(self.channels) if self.channels is not None else None,
            "started_at": self.started_at,
            "template": self.template,
        }


@dataclass(frozen=True)
class Outcome:
    """The result of one lifecycle step for one alert."""

    state: AlertState
    transition: Transition | None = None
    notification: Notification | None = None


def _transition(old: AlertState, new: AlertState, now: datetime, reason: str) -> Transition:
    return Transition(
        fingerprint=new.fingerprint,
        rule=new.rule,
        account=new.account,
        resource_kind=new.resource_kind,
        resource_id=new.resource_id,
        from_state=old.state,
        to_state=new.state,
        at=now,
        severity=new.severity,
        values=dict(new.values),
        reason=reason,
    )


def _notification(rule: Rule, state: AlertState, kind: str, reminder: bool) -> Notification:
    return Notification(
        fingerprint=state.fingerprint,
        rule=state.rule,
        severity=state.severity,
        state=kind,
        account=state.account,
        resource_kind=state.resource_kind,
        resource_id=state.resource_id,
        resource_name=state.resource_name,
        summary=state.summary,
        values=dict(state.values),
        labels=dict(state.labels),
        channels=list(rule.notify) if rule.notify is not None else None,
        started_at=state.firing_since or state.active_since,
        template=rule.summary,
        firing_since=state.firing_since,
        resolved_at=state.resolved_at,
        description=rule.description,
        reminder=reminder,
    )


def step(
    rule: Rule,
    old: AlertState,
    match: bool | None,
    now: datetime,
    *,
    silenced: bool,
    inhibited: bool = False,
    values: dict[str, Any] | None = None,
    severity: str | None = None,
    summary: str = "",
    reason: str = "condition",
    notify_resolved: bool = True,
) -> Outcome:
    """Advance one alert given this evaluation's verdict.

    ``match`` None (missing data) and ``inhibited`` keep the state as it is: neither fire nor
    resolve, and notify nothing (an inhibited alert is muted like a silenced one).
    """
    if match is None or inhibited:
        return Outcome(old)
    if not match and old.state not in ("pending", "firing"):
        return Outcome(old)  # nothing to do: the common case, kept cheap
    # what changes, gathered and applied in one ``replace`` (thousands of alerts per cycle)
    changes: dict[str, Any] = {"last_eval_at": now}
    if match:
        changes.update(
            values=dict(values or {}),
            severity=severity or rule.severity,
            summary=summary or old.summary,
            last_match_at=now,
            labels=dict(rule.labels),
        )
        if old.state not in ("pending", "firing"):  # a new episode
            changes.update(
                active_since=now,
                firing_since=None,
                resolved_at=None,
                last_notified_at=None,
                notified_severity=None,
                state="pending",
            )
        state = changes.get("state", old.state)
        active_since = changes.get("active_since", old.active_since)
        if state == "pending" and now - (active_since or now) >= rule.for_:
            changes.update(state="firing", firing_since=now)
    else:
        if old.state == "pending":
            changes.update(state="inactive", active_since=None)
        elif old.state == "firing":
            held = old.last_match_at or now
            if now - held >= rule.keep_firing_for:
                changes.update(state="resolved", resolved_at=now)
        if changes.get("state", old.state) != old.state and values:
            changes["values"] = {**old.values, **values}
    new = replace(old, **changes)
    transition = _transition(old, new, now, reason) if new.state != old.state else None
    note = None
    if new.state == "firing" and not silenced:
        due = new.last_notified_at is None
        reminder = False
        if not due and rule.repeat_interval > timedelta(0):
            due = reminder = now - new.last_notified_at >= rule.repeat_interval  # type: ignore[operator]
        if (
            not due
            and new.notified_severity is not None
            and SEVERITY_RANK.get(new.severity, 0) > SEVERITY_RANK.get(new.notified_severity, 0)
        ):
            due = True
        if due:
            new = replace(new, last_notified_at=now, notified_severity=new.severity)
            note = _notification(rule, new, "firing", reminder)
    elif (
        new.state == "resolved"
        and old.state == "firing"
        and old.last_notified_at is not None
        and not silenced
        and notify_resolved
    ):
        note = _notification(rule, new, "resolved", False)
    return Outcome(new, transition, note)
