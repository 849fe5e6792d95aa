"""One evaluation: facts from the store -> rule engine -> alert states, notifications and
planned actions, written in ONE transaction (the outbox); delivery is a separate step.

    decision = evaluator.decide(now)      # reads, evaluates, plans (nothing written)
    report = evaluator.record(decision)   # one transaction: alert states (compare-and-set on
                                          # their version), pending notifications, actions
    await evaluator.deliver(now)          # the outbox: sends what is due, retries with backoff

``evaluate(now)`` is the first two, ``cycle(now)`` all three. A crash anywhere loses nothing:
either the alert states and their notifications are committed together, or neither is (the
next evaluation decides again); a committed notification stays pending until it is sent or
expires (``notify.expire_after``). An alert another process moved since it was read is not
written (its write is refused by the compare-and-set), nor are its notifications: the refusal
is logged and the alert re-read at the next evaluation.

The planner (``planner(result, facts, now) -> (actions, notices)``, see ``monitor.actions``)
is called with the evaluation's result; its ledger rows go in through
``store.insert_actions(rows, conn)`` in the same transaction, and its notices (announcements
of planned actions) join the notifications.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from monitor.facts import StoreFacts
from monitor.notify import DeliveryResult, Notice, Renderer, Router, build_messages
from monitor.notify.outbox import DEFAULT_EXPIRE_AFTER, Outbox, outbox_rows
from monitor.rules import AlertState, EvalResult, Facts, RuleSet, Silence, evaluate
from monitor.rules.lifecycle import fingerprint
from monitor.store.alerting import StaleAlertWrite, stored_values
from monitor.store.models import ActionRecord

log = structlog.get_logger("monitor.evaluate")

#: ``planner(result, facts, now) -> (ledger rows, notices)``: the actions an evaluation plans
Planner = Callable[[EvalResult, Facts, datetime], tuple[list[ActionRecord], list[Notice]]]


def to_state(rec: Any) -> AlertState:
    """The engine's state of a stored alert (an :class:`AlertRecord`, or a row of
    ``store.alert_rows()``: the same attribute names)."""
    return AlertState(
        fingerprint=rec.fingerprint,
        account=rec.account or "",
        rule=rec.rule,
        resource_kind=rec.resource_kind,
        resource_id=rec.resource_id,
        state=rec.state,
        resource_name=rec.resource_name or "",
        severity=rec.severity or "warning",
        active_since=rec.active_since,
        firing_since=rec.firing_since,
        resolved_at=rec.resolved_at,
        last_match_at=rec.last_match_at,
        last_eval_at=rec.last_eval_at,
        last_notified_at=rec.last_notified_at,
        notified_severity=rec.notified_severity,
        values=dict(rec.values),
        labels=dict(rec.labels),
        summary=rec.summary,
    )


def to_silence(rec: Any) -> Silence:
    return Silence(
        id=str(rec.id),
        ends_at=rec.ends_at,
        rule=rec.rule,
        resource_id=rec.resource_id,
        account=rec.account,
        labels=dict(rec.matchers or {}),
        starts_at=rec.starts_at,
        reason=rec.reason,
    )


@dataclass(frozen=True)
class Decision:
    """What one evaluation decided, before anything is written."""

    now: datetime
    result: EvalResult
    versions: dict[str, int]  # every alert's version as read (absent: not stored)
    read: dict[str, AlertState]  # every alert's state as read
    keep: list[AlertState]  # written as they are (AlertFields)
    forget: list[str]
    notices: list[Notice]
    actions: list[ActionRecord]


@dataclass
class CycleReport:
    now: datetime
    result: EvalResult
    deliveries: list[DeliveryResult] = field(default_factory=list)
    notifications: list[int] = field(default_factory=list)  # outbox rows written
    actions: list[int] = field(default_factory=list)  # ledger rows written
    refused: set[str] = field(default_factory=set)  # alerts another writer moved first

    @property
    def firing(self) -> list[AlertState]:
        return self.result.firing()


class Evaluator:
    """Evaluates a rule set against the store, records what it decided, delivers."""

    def __init__(
        self,
        store: Any,
        ruleset: RuleSet,
        router: Router,
        notifier: Any,
        accounts: list[str],
        intervals: dict[str, int],
        stale_after: float,
        *,
        planner: Planner | None = None,
        expire_after: timedelta = DEFAULT_EXPIRE_AFTER,
        renderer: Renderer | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.store = store
        self.ruleset = ruleset
        self.router = router
        self.notifier = notifier
        self.accounts = accounts
        self.intervals = intervals
        self.stale_after = stale_after
        self.planner = planner
        self.expire_after = expire_after
        self.renderer = renderer
        self.outbox = outbox or Outbox(store, notifier)
        #: the alert states this evaluator wrote or read, as stored, with their version
        self._known: dict[str, tuple[int, AlertState]] = {}

    def read_states(self) -> tuple[dict[str, int], dict[str, AlertState]]:
        """Every stored alert's version and state, by fingerprint. A state this evaluator
        wrote or read is remembered with its version, and read again only when another writer
        moved it since (a version differs): each evaluation reads the versions, and the rows
        of the alerts it does not know, not every row (hundreds, their times and JSON
        decoded)."""
        versions = self.store.alert_versions()
        known = self._known
        moved = [fp for fp, version in versions.items() if known.get(fp, (-1,))[0] != version]
        if moved:
            rows = self.store.alert_rows(None if len(moved) == len(versions) else moved)
            for row in rows:
                versions[row.fingerprint] = int(row.version)
                known[row.fingerprint] = (int(row.version), to_state(row))
        for fp in known.keys() - versions.keys():
            del known[fp]  # deleted (resolved long ago, or by another writer)
        versions = {fp: versions[fp] for fp in sorted(versions) if fp in known}
        return versions, {fp: known[fp][1] for fp in versions}

    def _remember(self, decision: Decision, refused: set[str]) -> None:
        """After the commit: the states written, at their new version, as read back."""
        for state in decision.keep:
            fp = state.fingerprint
            if fp in refused:
                self._known.pop(fp, None)
                continue
            values = stored_values(state.values)
            if values != state.values:
                state = replace(state, values=values)
            self._known[fp] = (decision.versions.get(fp, -1) + 1, state)
        for fp in decision.forget:
            self._known.pop(fp, None)

    def decide(self, now: datetime) -> Decision:
        """Read the alert states and silences, evaluate, plan: nothing is written."""
        facts = StoreFacts(self.store, self.accounts, self.intervals, self.stale_after, now=now)
        versions, states = self.read_states()
        silences = [to_silence(s) for s in self.store.list_silences(now)]
        result = evaluate(self.ruleset, facts, now, states, silences)
        changed = [result.states[fp] for fp in sorted(result.changed)]
        notices = [Notice(**n.notice_fields()) for n in result.notifications_due]
        actions: list[ActionRecord] = []
        if self.planner is not None:
            planned, announcements = self.planner(result, facts, now)
            actions = list(planned)
            notices += list(announcements)
        return Decision(
            now=now,
            result=result,
            versions=versions,
            read=states,
            keep=[s for s in changed if s.state != "inactive"],
            forget=[s.fingerprint for s in changed if s.state == "inactive"],
            notices=notices,
            actions=actions,
        )

    def record(self, decision: Decision) -> CycleReport:
        """Write the decision in one transaction: the alert states (compare-and-set), the
        notifications due (pending, rendered per channel) and the planned actions."""
        now = decision.now
        try:
            with self.store.transaction() as conn:
                refused = self.store.write_alerts(
                    decision.keep, decision.forget, decision.versions, conn, decision.read
                )
                notices = [n for n in decision.notices if n.fingerprint not in refused]
                messages = build_messages(notices, self.router, now, self.renderer)
                ids = self.store.insert_notifications(
                    outbox_rows(messages, now, self.expire_after), conn
                )
                actions = [a for a in decision.actions if _alert_of(a) not in refused]
                action_ids = self.store.insert_actions(actions, conn) if actions else []
        except StaleAlertWrite as exc:
            # another writer moved an alert between the check and the write: nothing of
            # this evaluation was kept; the next one reads the states again
            log.warning("evaluation_refused", reason=str(exc))
            refused = {r.fingerprint for r in decision.keep} | set(decision.forget)
            return CycleReport(now=now, result=decision.result, refused=refused)
        self._remember(decision, refused)
        for fp in sorted(refused):
            state = decision.result.states[fp]
            log.warning(
                "alert_write_refused",
                fingerprint=fp,
                rule=state.rule,
                account=state.account,
                resource=state.resource_id,
                reason="changed by another writer since it was read; re-read next evaluation",
            )
        for tr in decision.result.transitions:
            if tr.fingerprint in refused:
                continue
            log.info(
                "alert_transition",
                rule=tr.rule,
                account=tr.account,
                resource=tr.resource_id,
                old=tr.from_state,
                new=tr.to_state,
                reason=tr.reason,
            )
        return CycleReport(
            now=now,
            result=decision.result,
            notifications=ids,
            actions=action_ids,
            refused=refused,
        )

    def enqueue(self, notices: Sequence[Notice], now: datetime) -> list[int]:
        """Put notices that no evaluation decided (the act step's: an action done, a breaker
        tripped, a stop that did not complete) in the outbox, pending, as the evaluation's."""
        if not notices:
            return []
        messages = build_messages(list(notices), self.router, now, self.renderer)
        return self.store.insert_notifications(outbox_rows(messages, now, self.expire_after))

    def evaluate(self, now: datetime) -> CycleReport:
        """Decide and record (no delivery)."""
        return self.record(self.decide(now))

    def judge(self, now: datetime) -> EvalResult:
        """Decide and record; the engine's result (``bench rules`` times this)."""
        return self.evaluate(now).result

    async def deliver(self, now: datetime, wait: bool = True) -> list[DeliveryResult]:
        """The delivery step: send the pending notifications due at ``now`` (``wait=False``:
        not when a delivery is already under way)."""
        return await self.outbox.deliver(now, wait)

    async def cycle(self, now: datetime) -> CycleReport:
        """Decide, record, then deliver what is due (this evaluation's and earlier ones')."""
        report = self.evaluate(now)
        report.deliveries = await self.deliver(now)
        return report


def _alert_of(action: ActionRecord) -> str:
    """The fingerprint of the instance alert an action was planned from."""
    return fingerprint(action.account, action.rule, "instance", action.instance_id)
