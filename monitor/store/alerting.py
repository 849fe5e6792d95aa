"""Storage for the rule engine's state: alerts, silences, notifications (CRUD only).

The lifecycle logic lives in ``monitor.rules``; this module only persists what it decides, so
that a restart neither re-sends nor forgets.

Two guarantees the evaluation builds on (``monitor.evaluate``, the outbox):

* alerts are written with a **compare-and-set** on ``version`` (:meth:`AlertingRepo.write_alerts`):
  a write applies only to the version the writer read, so of two processes that judged the
  same alert, the second's stale write is refused (and its notices with it);
* notifications are rows of an **outbox**: written ``pending`` (with ``title``, ``notify_type``,
  ``next_attempt_at``, ``expires_at``) in the evaluation's transaction, then claimed
  (:meth:`AlertingRepo.claim_notification`, which already sets the next attempt, so a crash
  during the send retries it later), sent, and recorded ``sent`` or left pending for the next
  attempt; past ``expires_at`` they are ``expired``. Rows without a title (stored before
  revision 0004, and ``notify-test`` records) are never picked up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from monitor.store import tables as t
from monitor.store.base import StoreBase
from monitor.store.models import AlertRecord, NotificationRecord, Silence
from monitor.store.sql import insert_statement, upsert

ALERT_STATES = frozenset({"pending", "firing", "resolved"})
NOTIFICATION_KINDS = frozenset({"firing", "resolved", "test", "report"})
NOTIFICATION_STATUSES = frozenset({"pending", "sent", "failed", "expired"})
#: notification columns an outbox row is written with (besides its id)
_NOTIFICATION_COLUMNS = [c.name for c in t.notifications.columns if c.name != "id"]
#: fingerprints per ``IN (...)`` (SQLite's limit on bound parameters is far above)
_CHUNK = 500


class StaleAlertWrite(RuntimeError):
    """An alert changed between the compare-and-set's check and its write (a concurrent
    writer): the whole evaluation's transaction is rolled back and judged again next time."""


class AlertFields(Protocol):
    """What an alert row is written from: an :class:`AlertRecord`, or the engine's alert
    state as it is (the evaluation writes hundreds; no record is built for each)."""

    @property
    def fingerprint(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def account(self) -> str | None: ...
    @property
    def resource_kind(self) -> str: ...
    @property
    def resource_id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def resource_name(self) -> str | None: ...
    @property
    def severity(self) -> str | None: ...
    @property
    def active_since(self) -> datetime | None: ...
    @property
    def firing_since(self) -> datetime | None: ...
    @property
    def resolved_at(self) -> datetime | None: ...
    @property
    def last_match_at(self) -> datetime | None: ...
    @property
    def last_eval_at(self) -> datetime | None: ...
    @property
    def last_notified_at(self) -> datetime | None: ...
    @property
    def notified_severity(self) -> str | None: ...
    @property
    def labels(self) -> Mapping[str, Any]: ...
    @property
    def values(self) -> Mapping[str, Any]: ...
    @property
    def summary(self) -> str: ...


def _jsonable(value: Any) -> Any:
    """A value of an alert's ``values`` as its JSON column keeps it (times as ISO text)."""
    if value is None or isinstance(value, int | float | str | bool):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def stored_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """An alert's ``values`` as the store keeps them and reads them back."""
    return {key: _jsonable(value) for key, value in values.items()}


def _alert_row(alert: AlertFields) -> dict[str, Any]:
    if alert.state not in ALERT_STATES:
        raise ValueError(f"alert state must be one of {sorted(ALERT_STATES)}")
    return {
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
        "values": stored_values(alert.values),
        "summary": alert.summary,
        "resource_name": alert.resource_name,
        "severity": alert.severity,
        "last_match_at": alert.last_match_at,
        "notified_severity": alert.notified_severity,
    }


#: the columns of an alert row that move (the others name the alert: its fingerprint's parts)
_MOVING = (
    "state",
    "resource_name",
    "severity",
    "active_since",
    "firing_since",
    "resolved_at",
    "last_match_at",
    "last_eval_at",
    "last_notified_at",
    "notified_severity",
    "summary",
)


def _changes(before: AlertFields, after: AlertFields) -> dict[str, Any]:
    """The columns of ``after``'s row that differ from ``before`` (an alert as read back)."""
    if after.state not in ALERT_STATES:
        raise ValueError(f"alert state must be one of {sorted(ALERT_STATES)}")
    row = {c: getattr(after, c) for c in _MOVING if getattr(after, c) != getattr(before, c)}
    values = stored_values(after.values)
    if values != before.values:
        row["values"] = values
    if after.labels != before.labels:
        row["labels"] = dict(after.labels)
    return row


class AlertingRepo(StoreBase):
    # -- alerts -----------------------------------------------------------------------------

    def alert_rows(self, fingerprints: Iterable[str] | None = None) -> list[Any]:
        """Stored alerts as plain rows (the attribute names of :class:`AlertRecord`, no ORM
        object), by fingerprint: all of them, or those of ``fingerprints``."""
        a = t.alerts.c
        with self.engine.connect() as conn:
            if fingerprints is None:
                return list(conn.execute(select(t.alerts).order_by(a.fingerprint)))
            wanted = sorted(fingerprints)
            rows: list[Any] = []
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                rows += conn.execute(select(t.alerts).where(a.fingerprint.in_(chunk)))
            return sorted(rows, key=lambda r: r.fingerprint)

    def alert_versions(self) -> dict[str, int]:
        """Every stored alert's version, by fingerprint: what an evaluation that remembers
        the states it wrote reads to know which ones another writer moved since."""
        a = t.alerts.c
        with self.engine.connect() as conn:
            return {fp: int(v) for fp, v in conn.execute(select(a.fingerprint, a.version))}

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
        """Insert or replace alerts by fingerprint (no compare-and-set: tools and tests; the
        evaluation writes through :meth:`write_alerts`). Each moves to a new version, so an
        evaluator that remembers the states it wrote reads these again."""
        rows = [_alert_row(alert) for alert in alerts]
        a = t.alerts.c
        with self.engine.begin() as conn:
            count = upsert(conn, t.alerts, rows, keys=["fingerprint"])
            fingerprints = [row["fingerprint"] for row in rows]
            for i in range(0, len(fingerprints), _CHUNK):
                conn.execute(
                    update(t.alerts)
                    .where(a.fingerprint.in_(fingerprints[i : i + _CHUNK]))
                    .values(version=a.version + 1)
                )
            return count

    def write_alerts(
        self,
        keep: Sequence[AlertFields],
        forget: Iterable[str],
        read_versions: Mapping[str, int],
        conn: Connection,
        read: Mapping[str, AlertFields] | None = None,
    ) -> set[str]:
        """Write an evaluation's changed alerts in ``conn``'s transaction, each with a
        compare-and-set on ``version``: ``read_versions`` holds the version of every alert as
        the evaluation read it (a fingerprint absent from it was absent from the store). An
        alert saved or forgotten applies only when the stored row is still at that version (or
        still absent), and moves to version + 1; the others are refused and returned (a
        concurrent writer judged them first; the caller logs them and re-reads them at its
        next evaluation). Raises :class:`StaleAlertWrite` (the caller's transaction is rolled
        back) if a row moved between this check and its write. ``read``: the alerts as the
        evaluation read them; an update then writes only the columns that changed (a firing
        alert's figures and times, not its twenty columns)."""
        a = t.alerts.c
        forget = list(forget)
        wanted = [alert.fingerprint for alert in keep] + forget
        current: dict[str, int] = {}
        for i in range(0, len(wanted), _CHUNK):
            query = select(a.fingerprint, a.version).where(
                a.fingerprint.in_(wanted[i : i + _CHUNK])
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            current.update({fp: int(v) for fp, v in conn.execute(query)})
        lost: set[str] = set()
        known = read or {}
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for alert in keep:
            fp = alert.fingerprint
            version = read_versions.get(fp)
            if current.get(fp) != version:
                lost.add(fp)
            elif version is None:
                inserts.append({**_alert_row(alert), "version": 0})
            else:
                before = known.get(fp)
                row = _alert_row(alert) if before is None else _changes(before, alert)
                updates.append({**row, "version": version + 1, "_fp": fp, "_v": version})
        deletes: list[dict[str, Any]] = []
        for fp in forget:
            version = read_versions.get(fp)
            if current.get(fp) != version:
                lost.add(fp)
            elif version is not None:
                deletes.append({"_fp": fp, "_v": version})
        if inserts:
            stmt = insert_statement(conn, t.alerts).on_conflict_do_nothing(
                index_elements=["fingerprint"]
            )
            # in one go (a first evaluation of a big fleet creates hundreds; SQLAlchemy's
            # "insertmanyvalues" returns every inserted row on SQLite and PostgreSQL alike):
            # a conflict inserts nothing, so a fingerprint not returned is a lost race
            made = {fp for (fp,) in conn.execute(stmt.returning(a.fingerprint), inserts)}
            missing = sorted({row["fingerprint"] for row in inserts} - made)
            if missing:
                raise StaleAlertWrite(f"alert(s) {', '.join(missing)} created meanwhile")
        cas = (a.fingerprint == bindparam("_fp")) & (a.version == bindparam("_v"))
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in updates:  # one statement per set of columns changed (a handful)
            by_columns.setdefault(tuple(c for c in row if not c.startswith("_")), []).append(row)
        for columns, rows in by_columns.items():
            stmt = update(t.alerts).where(cas).values({c: bindparam(c) for c in columns})
            done = conn.execute(stmt, rows).rowcount
            if done != len(rows):
                raise StaleAlertWrite(f"{len(rows) - done} alert(s) changed meanwhile")
        if deletes:
            done = conn.execute(delete(t.alerts).where(cas), deletes).rowcount
            if done != len(deletes):
                raise StaleAlertWrite(f"{len(deletes) - done} alert(s) changed meanwhile")
        return lost

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
        next_attempt_at: datetime | None = None,
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
                "next_attempt_at": next_attempt_at,
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

    # -- the outbox -------------------------------------------------------------------------

    def insert_notifications(
        self, rows: Sequence[NotificationRecord], conn: Connection | None = None
    ) -> list[int]:
        """Insert outbox rows (in ``conn``'s transaction when given); their ids, in order."""
        if conn is None:
            with self.engine.begin() as own:
                return self.insert_notifications(rows, own)
        ids = []
        for row in rows:
            values = {name: getattr(row, name) for name in _NOTIFICATION_COLUMNS}
            if values["kind"] not in NOTIFICATION_KINDS:
                raise ValueError(f"kind must be one of {sorted(NOTIFICATION_KINDS)}")
            if values["status"] not in NOTIFICATION_STATUSES:
                raise ValueError(f"status must be one of {sorted(NOTIFICATION_STATUSES)}")
            result = conn.execute(
                insert(t.notifications).values(**values).returning(t.notifications.c.id)
            )
            ids.append(int(result.scalar_one()))
        return ids

    def due_notifications(self, now: datetime, limit: int = 200) -> list[NotificationRecord]:
        """Pending outbox rows whose next attempt is due at ``now`` (oldest first); rows
        without a title (before revision 0004, tests of a channel) are never picked up."""
        n = t.notifications.c
        query = (
            select(NotificationRecord)
            .where(
                n.status == "pending",
                n.title.is_not(None),
                n.next_attempt_at.is_not(None),
                n.next_attempt_at <= now,
            )
            .order_by(n.next_attempt_at, n.id)
            .limit(limit)
        )
        return self._load(query)

    def expire_notifications(self, now: datetime) -> list[NotificationRecord]:
        """Mark ``expired`` the pending outbox rows past their ``expires_at``; returns them."""
        n = t.notifications.c
        late = (n.status == "pending") & n.title.is_not(None) & (n.expires_at <= now)
        rows = self._load(select(NotificationRecord).where(late).order_by(n.id))
        if rows:
            with self.engine.begin() as conn:
                conn.execute(
                    update(t.notifications)
                    .where(late, n.id.in_([r.id for r in rows]))
                    .values(status="expired")
                )
        return rows

    def claim_notification(self, row: NotificationRecord, retry_at: datetime) -> bool:
        """Count one more attempt of ``row`` and set its next attempt to ``retry_at``, before
        it is sent (a crash during the send leaves it pending, due again at ``retry_at``):
        a compare-and-set on its attempts, so two senders never both send one attempt. False
        when another sender got there first (or the row is no longer pending)."""
        n = t.notifications.c
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t.notifications)
                .where(n.id == row.id, n.status == "pending", n.attempts == row.attempts)
                .values(attempts=row.attempts + 1, next_attempt_at=retry_at)
            )
            return result.rowcount == 1

    def finish_notification(
        self, notification_id: int, *, ok: bool, at: datetime, error: str | None
    ) -> None:
        """Record a claimed attempt's answer: ``sent`` (at ``at``), or still pending with the
        error (its next attempt was set by the claim)."""
        n = t.notifications.c
        values: dict[str, Any] = (
            {"status": "sent", "sent_at": at, "error": None} if ok else {"error": error}
        )
        with self.engine.begin() as conn:
            conn.execute(
                update(t.notifications)
                .where(n.id == notification_id, n.status == "pending")
                .values(**values)
            )
