"""Instances (current state, history of tracked changes, disappearance) and derived events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from monitor.store import tables as t
from monitor.store.base import StoreBase
from monitor.store.models import LISTED_FIELDS, InstanceRecord
from monitor.store.records import (
    APPEARED,
    BILLING_MODE_CHANGED,
    DISAPPEARED,
    END_TIME_MOVED,
    ERROR_ENTERED,
    STATUS_CHANGED,
    Event,
    InstanceChange,
)

#: the instance fields whose change writes a history row
TRACKED = (
    "status",
    "billing_mode",
    "end_time",
    "gpu_count",
    "product_id",
    "cluster_id",
    "error_state",
)


def _check_listing(item: Mapping[str, Any]) -> None:
    """A listing's rows carry ``instance_id`` and exactly the :data:`LISTED_FIELDS` (checked on
    the first row: the collector builds them all alike)."""
    missing = [f for f in ("instance_id", *LISTED_FIELDS) if f not in item]
    extra = [f for f in item if f != "instance_id" and f not in LISTED_FIELDS]
    if missing or extra:
        raise ValueError(
            f"upsert_instances: a listed instance needs instance_id and {', '.join(LISTED_FIELDS)};"
            f" missing {missing}, unknown {extra}"
        )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


#: the instance columns an evaluation reads (the facts' ``InstanceFact``; the act step's
#: restarts): the others (last seen, cluster name, memory...) cost a conversion per row unread
LISTED = (
    "instance_id", "name", "status", "billing_mode", "gpu_count", "cpu_num", "product_id",
    "product_name", "cluster_id", "end_time", "created_at", "last_started_at", "first_seen",
    "error_state", "envs", "auto_renew", "auto_renew_month", "keep_data_day",
)  # fmt: skip


class InstancesRepo(StoreBase):
    """Instances and their events."""

    # -- instances --------------------------------------------------------------------------

    def upsert_instances(
        self,
        account: str,
        instances: Sequence[Mapping[str, Any]],
        now: datetime,
        complete: bool = True,
        keep: Iterable[str] = (),
    ) -> list[Event]:
        """Record a listing of the account's instances; return the events it implies.

        Each item is one instance as the store keeps it: ``instance_id`` and the
        :data:`~monitor.store.models.LISTED_FIELDS` of :class:`InstanceRecord` (the collector
        converts the API's payload; plain mappings, not model objects: a listing of thousands
        is written with Core statements).

        History rows and events are written only on a real change of a tracked field. With
        ``complete=True`` (the listing holds every instance), known instances missing from it are
        marked disappeared; a disappeared instance that shows up again "appears" again.

        ``keep``: ids of instances the listing holds but whose item could not be read (it did
        not parse): they are left as stored (their last listed state, ``last_seen``
        included) and never marked disappeared.
        """
        if now.tzinfo is None:
            raise ValueError("upsert_instances needs an aware datetime")
        account_id = self.ensure_account(account)
        c = t.instances.c
        events: list[Event] = []
        history: list[dict[str, Any]] = []
        seen: set[str] = set()
        kept = set(keep)
        only_seen: list[int] = []
        new_rows: list[dict[str, Any]] = []

        def event(kind: str, instance_id: str, old: Any = None, new: Any = None) -> None:
            events.append(
                Event(account, now, kind, "instance", instance_id, _text(old), _text(new))
            )

        if instances:
            _check_listing(instances[0])
        with self.engine.begin() as conn:
            existing = {
                row.instance_id: row
                for row in conn.execute(select(t.instances).where(c.account_id == account_id))
            }
            for inst in instances:
                instance_id = inst["instance_id"]
                if instance_id in seen:
                    continue
                seen.add(instance_id)
                values = {f: inst[f] for f in LISTED_FIELDS}
                old = existing.get(instance_id)
                if old is None or old.first_seen is None:
                    values.update(first_seen=now, last_seen=now, disappeared_at=None)
                    if old is None:  # inserted together below, history once keys are known
                        new_rows.append(
                            {"account_id": account_id, "instance_id": instance_id, **values}
                        )
                    else:  # a stub created by a metrics upsert before the first listing
                        conn.execute(update(t.instances).where(c.key == old.key).values(**values))
                        history.append({"instance_key": old.key, "ts": now, **_tracked(values)})
                    event(APPEARED, instance_id, None, values["status"])
                    continue
                key = old.key
                changes = {f: values[f] for f in TRACKED if getattr(old, f) != values[f]}
                reappeared = old.disappeared_at is not None
                if reappeared:
                    event(APPEARED, instance_id, None, values["status"])
                if changes or reappeared:
                    history.append({"instance_key": key, "ts": now, **_tracked(values)})
                if "status" in changes:
                    event(STATUS_CHANGED, instance_id, old.status, values["status"])
                if "error_state" in changes and values["error_state"] is not None:
                    event(ERROR_ENTERED, instance_id, old.error_state, values["error_state"])
                if "billing_mode" in changes:
                    event(
                        BILLING_MODE_CHANGED, instance_id, old.billing_mode, values["billing_mode"]
                    )
                if "end_time" in changes:
                    event(END_TIME_MOVED, instance_id, old.end_time, values["end_time"])
                values.update(last_seen=now, disappeared_at=None)
                if all(getattr(old, f) == v for f, v in values.items() if f != "last_seen"):
                    only_seen.append(key)  # the common case: one UPDATE for all of them
                else:
                    conn.execute(update(t.instances).where(c.key == key).values(**values))
            if only_seen:
                conn.execute(update(t.instances).where(c.key.in_(only_seen)).values(last_seen=now))
            if new_rows:
                conn.execute(insert(t.instances), new_rows)
                ids = [r["instance_id"] for r in new_rows]
                keys: dict[str, int] = {}
                for i in range(0, len(ids), 500):
                    for instance_id, key in conn.execute(
                        select(c.instance_id, c.key).where(
                            c.account_id == account_id, c.instance_id.in_(ids[i : i + 500])
                        )
                    ):
                        keys[instance_id] = key
                history.extend(
                    {"instance_key": keys[r["instance_id"]], "ts": now, **_tracked(r)}
                    for r in new_rows
                )
                with self._lock:
                    for instance_id, key in keys.items():
                        self._instance_keys[(account_id, instance_id)] = key
            if complete:
                for instance_id, old in existing.items():
                    if instance_id in seen or instance_id in kept or old.disappeared_at is not None:
                        continue
                    if old.first_seen is None:  # a stub never listed
                        continue
                    conn.execute(
                        update(t.instances).where(c.key == old.key).values(disappeared_at=now)
                    )
                    event(DISAPPEARED, instance_id, old.status, None)
            if history:
                conn.execute(insert(t.instance_history), history)
            self._write_events(conn, account_id, events)
            with self._lock:
                for row in existing.values():
                    self._instance_keys[(account_id, row.instance_id)] = row.key
        return events

    def instances(self, account: str, include_disappeared: bool = False) -> list[InstanceRecord]:
        """Current state of the account's instances (listed at least once), by instance id."""
        account_id = self.ensure_account(account)
        c = t.instances.c
        query = select(InstanceRecord).where(c.account_id == account_id, c.first_seen.is_not(None))
        if not include_disappeared:
            query = query.where(c.disappeared_at.is_(None))
        return self._load(query.order_by(c.instance_id))

    def instance_rows(self, account: str) -> list[Any]:
        """:meth:`instances` as plain rows of the columns an evaluation reads (:data:`LISTED`,
        named as :class:`InstanceRecord`'s attributes; no ORM objects): what each evaluation
        reads for thousands of instances, five times cheaper than building the models."""
        account_id = self.ensure_account(account)
        c = t.instances.c
        query = (
            select(*(c[name] for name in LISTED))
            .where(c.account_id == account_id, c.first_seen.is_not(None))
            .where(c.disappeared_at.is_(None))
            .order_by(c.instance_id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def known_instance_ids(self, account: str) -> set[str]:
        """Every instance id the account ever listed (gone ones included): a narrow read."""
        account_id = self.ensure_account(account)
        c = t.instances.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.instance_id).where(c.account_id == account_id))
            return {iid for (iid,) in rows}

    def running_instances(self, account: str) -> list[tuple[str, int | None]]:
        """``(instance_id, cpu_num)`` of the instances last listed as running: what the
        metrics collector fans out over (a narrow read; :meth:`instances` builds records)."""
        account_id = self.ensure_account(account)
        c = t.instances.c
        query = select(c.instance_id, c.cpu_num).where(
            c.account_id == account_id,
            c.first_seen.is_not(None),
            c.disappeared_at.is_(None),
            c.status == "running",
        )
        with self.engine.connect() as conn:
            return [(iid, cpu) for iid, cpu in conn.execute(query.order_by(c.instance_id))]

    def cluster_ids(self, account: str) -> list[str]:
        """Clusters the account's current instances are in (non-empty ids), sorted."""
        account_id = self.ensure_account(account)
        c = t.instances.c
        query = (
            select(c.cluster_id)
            .distinct()
            .where(
                c.account_id == account_id,
                c.first_seen.is_not(None),
                c.disappeared_at.is_(None),
                c.cluster_id.is_not(None),
                c.cluster_id != "",
            )
        )
        with self.engine.connect() as conn:
            return sorted(cid for (cid,) in conn.execute(query))

    def instance(self, account: str, instance_id: str) -> InstanceRecord | None:
        account_id = self.ensure_account(account)
        c = t.instances.c
        found = self._load(
            select(InstanceRecord).where(c.account_id == account_id, c.instance_id == instance_id)
        )
        return found[0] if found else None

    def instance_history(self, account: str, instance_id: str) -> list[InstanceChange]:
        """Tracked-state changes of one instance, oldest first."""
        account_id = self.ensure_account(account)
        h = t.instance_history.c
        with self.engine.connect() as conn:
            key = self._instance_key(conn, account_id, instance_id)
            if key is None:
                return []
            rows = conn.execute(
                select(t.instance_history).where(h.instance_key == key).order_by(h.ts, h.id)
            ).all()
        return [
            InstanceChange(
                ts=r.ts,
                status=r.status,
                billing_mode=r.billing_mode,
                end_time=r.end_time,
                gpu_count=r.gpu_count,
                product_id=r.product_id,
                cluster_id=r.cluster_id,
                error_state=r.error_state,
            )
            for r in rows
        ]

    def events(
        self,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Iterable[str] | None = None,
        resource_id: str | None = None,
    ) -> list[Event]:
        """Stored events, oldest first, in ``[since, until)``."""
        e = t.events.c
        query = select(t.events, t.accounts.c.name).join(
            t.accounts, t.accounts.c.id == e.account_id
        )
        if account is not None:
            query = query.where(e.account_id == self.ensure_account(account))
        if since is not None:
            query = query.where(e.ts >= since)
        if until is not None:
            query = query.where(e.ts < until)
        if kinds is not None:
            query = query.where(e.kind.in_(list(kinds)))
        if resource_id is not None:
            query = query.where(e.resource_id == resource_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(e.ts, e.id)).all()
        return [
            Event(r.name, r.ts, r.kind, r.resource_kind, r.resource_id, r.old, r.new) for r in rows
        ]

    def status_histories(
        self, account: str, instance_ids: Sequence[str]
    ) -> dict[str, list[tuple[datetime, str]]]:
        """``(ts, status)`` histories of ``instance_ids``, oldest first, in one query per 500
        instances (not one per instance): when each entered its current status."""
        account_id = self.ensure_account(account)
        h, c = t.instance_history.c, t.instances.c
        out: dict[str, list[tuple[datetime, str]]] = {iid: [] for iid in instance_ids}
        ids = list(instance_ids)
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                query = (
                    select(c.instance_id, h.ts, h.status)
                    .join(t.instances, t.instances.c.key == h.instance_key)
                    .where(c.account_id == account_id, c.instance_id.in_(ids[i : i + 500]))
                    .order_by(h.instance_key, h.ts, h.id)
                )
                for iid, ts, status in conn.execute(query):
                    out[iid].append((ts, status))
        return out


def _tracked(values: dict[str, Any]) -> dict[str, Any]:
    return {f: values[f] for f in TRACKED}
