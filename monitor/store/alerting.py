"""Storage for the rule engine's state: alerts, silences, notifications (CRUD only).

The lifecycle logic lives in ``monitor.rules``; this module only persists what it decides, so
that a restart neither re-sends nor forgets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update

from monitor.store import tables as t
from monitor.store.base import StoreBase
from monitor.store.models import AlertRecord, NotificationRecord, Silence
from monitor.store.sql import upsert

ALERT_STATES = frozenset({"pending", "firing", "resolved"})
NOTIFICATION_KINDS = frozenset({"firing", "resolved", "test"})
NOTIFICATION_STATUSES = frozenset({"pending", "sent", "failed"})


class AlertingRepo(StoreBase):
    # -- alerts -----------------------------------------------------------------------------

    def load_alerts(
        self, account: str | None = None, states: Iterable[str] | None = None
    ) -> list[AlertRecord]:
        """Stored alerts (all accounts when ``account`` is None), by fingerprint."""
        a = t.alerts.c
        query = select(AlertRecord)
        if account is not None:
            query = query.where(a.account == account)
        if states is not None:
            query = query.where(a.state.in_(list(states)))
        return self._load(query.order_by(a.fingerprint))

    def save_alerts(self, alerts: Sequence[AlertRecord]) -> int:
        """Insert or replace alerts by fingerprint."""
        rows = []
        for alert in alerts:
            if alert.state not in ALERT_STATES:
                raise ValueError(f"alert state must be one of {sorted(ALERT_STATES)}")
            rows.append(
                {
                    "fingerprint": alert.fingerprint,
                    "rule": alert.rule,
                    "account": alert.account,
                    "resource_kind": alert.resource_kind,
                    "resource_id": alert.resource_id,
                    "state": alert.state,
                    "active_since": alert.active_since,
                    "firing_since": alert.firing_since,
                    "resolved_at": alert.resolved_at,
                    "last_eval_at": alert.last_eval_at,
                    "last_notified_at": alert.last_notified_at,
                    "labels": dict(alert.labels),
                    "values": dict(alert.values),
                    "summary": alert.summary,
                    "resource_name": alert.resource_name,
                    "severity": alert.severity,
                    "last_match_at": alert.last_match_at,
                    "notified_severity": alert.notified_severity,
                }
            )
        with self.engine.begin() as conn:
            return upsert(conn, t.alerts, rows, keys=["fingerprint"])

    def delete_alerts(self, fingerprints: Iterable[str]) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(t.alerts).where(t.alerts.c.fingerprint.in_(list(fingerprints)))
            )
            return result.rowcount or 0

    # -- silences ---------------------------------------------------------------------------

    def add_silence(
        self,
        *,
        starts_at: datetime,
        ends_at: datetime,
        created_at: datetime,
        reason: str = "",
        rule: str | None = None,
        resource_id: str | None = None,
        account: str | None = None,
        matchers: dict[str, Any] | None = None,
    ) -> int:
        """A silence; it always expires (``ends_at`` is required and after ``starts_at``)."""
        if ends_at <= starts_at:
            raise ValueError("a silence must end after it starts")
        with self.engine.begin() as conn:
            return conn.execute(
                insert(t.silences)
                .values(
                    rule=rule,
                    account=account,
                    resource_id=resource_id,
                    matchers=matchers or {},
                    starts_at=starts_at,
                    ends_at=ends_at,
                    reason=reason,
                    created_at=created_at,
                )
                .returning(t.silences.c.id)
            ).scalar_one()

    def list_silences(self, now: datetime, include_expired: bool = False) -> list[Silence]:
        """Silences not yet ended at ``now`` (those scheduled for later included)."""
        s = t.silences.c
        query = select(Silence)
        if not include_expired:
            query = query.where(s.ends_at > now)
        return self._load(query.order_by(s.id))

    def remove_silence(self, silence_id: int) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(delete(t.silences).where(t.silences.c.id == silence_id))
            return bool(result.rowcount)

    # -- notifications ----------------------------------------------------------------------

    def record_notification(
        self,
        *,
        channel: str,
        kind: str,
        fingerprints: Sequence[str],
        created_at: datetime,
        status: str = "pending",
        attempts: int = 0,
        sent_at: datetime | None = None,
        error: str | None = None,
        body: str | None = None,
    ) -> int:
        """A notification (grouped message to one channel); returns its id."""
        if kind not in NOTIFICATION_KINDS:
            raise ValueError(f"kind must be one of {sorted(NOTIFICATION_KINDS)}")
        if status not in NOTIFICATION_STATUSES:
            raise ValueError(f"status must be one of {sorted(NOTIFICATION_STATUSES)}")
        with self.engine.begin() as conn:
            return conn.execute(
                insert(t.notifications)
                .values(
                    channel=channel,
                    kind=kind,
                    fingerprints=list(fingerprints),
                    created_at=created_at,
                    sent_at=sent_at,
                    attempts=attempts,
                    status=status,
                    error=error,
                    body=body,
                )
                .returning(t.notifications.c.id)
            ).scalar_one()

    def update_notification(
        self,
        notification_id: int,
        *,
        status: str | None = None,
        attempts: int | None = None,
        sent_at: datetime | None = None,
        error: str | None = None,
    ) -> None:
        """Change the given fields of a notification (None leaves a field as it is)."""
        if status is not None and status not in NOTIFICATION_STATUSES:
            raise ValueError(f"status must be one of {sorted(NOTIFICATION_STATUSES)}")
        values = {
            k: v
            for k, v in {
                "status": status,
                "attempts": attempts,
                "sent_at": sent_at,
                "error": error,
            }.items()
            if v is not None
        }
        if not values:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(t.notifications)
                .where(t.notifications.c.id == notification_id)
                .values(**values)
            )

    def notifications(
        self, status: str | None = None, since: datetime | None = None
    ) -> list[NotificationRecord]:
        n = t.notifications.c
        query = select(NotificationRecord)
        if status is not None:
            query = query.where(n.status == status)
        if since is not None:
            query = query.where(n.created_at >= since)
        return self._load(query.order_by(n.id))
