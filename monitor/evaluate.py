"""One evaluation cycle: facts from the store -> rule engine -> alert states -> notifications.

The engine is pure; this module is the thin step around it that reads the alert states and
silences from the store, writes back the states that changed, turns due notifications into one
grouped message per channel, records each delivery (pending, then sent or failed) and delivers.
A failed delivery is retried by the notifier, recorded, and never blocks the next evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from monitor.facts import StoreFacts
from monitor.notify import DeliveryResult, Notice, Router, build_messages
from monitor.rules import AlertState, EvalResult, RuleSet, Silence, evaluate
from monitor.store.records import AlertRecord

log = structlog.get_logger("monitor.evaluate")


def to_state(rec: AlertRecord) -> AlertState:
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


def to_record(state: AlertState) -> AlertRecord:
    return AlertRecord(
        fingerprint=state.fingerprint,
        rule=state.rule,
        account=state.account,
        resource_kind=state.resource_kind,
        resource_id=state.resource_id,
        state=state.state,
        resource_name=state.resource_name,
        severity=state.severity,
        active_since=state.active_since,
        firing_since=state.firing_since,
        resolved_at=state.resolved_at,
        last_match_at=state.last_match_at,
        last_eval_at=state.last_eval_at,
        last_notified_at=state.last_notified_at,
        notified_severity=state.notified_severity,
        labels=dict(state.labels),
        values={k: _jsonable(v) for k, v in state.values.items()},
        summary=state.summary,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


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


@dataclass
class CycleReport:
    now: datetime
    result: EvalResult
    deliveries: list[DeliveryResult] = field(default_factory=list)

    @property
    def firing(self) -> list[AlertState]:
        return self.result.firing()


class Evaluator:
    """Evaluates a rule set against the store and delivers what is due."""

    def __init__(
        self,
        store: Any,
        ruleset: RuleSet,
        router: Router,
        notifier: Any,
        accounts: list[str],
        intervals: dict[str, int],
        stale_after: float,
    ) -> None:
        self.store = store
        self.ruleset = ruleset
        self.router = router
        self.notifier = notifier
        self.accounts = accounts
        self.intervals = intervals
        self.stale_after = stale_after

    def judge(self, now: datetime) -> EvalResult:
        """Evaluate and persist the changed alert states (no delivery)."""
        facts = StoreFacts(self.store, self.accounts, self.intervals, self.stale_after, now=now)
        states = {r.fingerprint: to_state(r) for r in self.store.load_alerts()}
        silences = [to_silence(s) for s in self.store.list_silences(now)]
        result = evaluate(self.ruleset, facts, now, states, silences)
        changed = [result.states[fp] for fp in sorted(result.changed)]
        keep = [to_record(s) for s in changed if s.state != "inactive"]
        forget = [s.fingerprint for s in changed if s.state == "inactive"]
        if keep:
            self.store.save_alerts(keep)
        if forget:
            self.store.delete_alerts(forget)
        for tr in result.transitions:
            log.info(
                "alert_transition",
                rule=tr.rule,
                account=tr.account,
                resource=tr.resource_id,
                old=tr.from_state,
                new=tr.to_state,
                reason=tr.reason,
            )
        return result

    async def cycle(self, now: datetime) -> CycleReport:
        result = self.judge(now)
        notices = [Notice(**n.notice_fields()) for n in result.notifications_due]
        messages = build_messages(notices, self.router, now)
        ids = [
            self.store.record_notification(
                channel=m.channel,
                kind=_kind(m),
                fingerprints=list(m.fingerprints),
                created_at=now,
                body=f"{m.title}\n{m.body}",
            )
            for m in messages
        ]
        deliveries: list[DeliveryResult] = []
        if messages:
            deliveries = await self.notifier.deliver(messages)
            for nid, res in zip(ids, deliveries, strict=True):
                self.store.update_notification(
                    nid,
                    status="sent" if res.ok else "failed",
                    attempts=res.attempts,
                    error=res.error,
                    sent_at=res.at if res.ok else None,
                )
        return CycleReport(now=now, result=result, deliveries=deliveries)


def _kind(message: Any) -> str:
    return "resolved" if message.kind == "success" else "firing"
