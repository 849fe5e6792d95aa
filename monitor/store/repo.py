"""The :class:`Store` facade: repository functions over the tables.

Every call opens its own short transaction (``engine.begin()``), so one ``Store`` can be shared by
the daemon's threads and coroutines. Nothing here reads the clock: callers pass ``now``. Results are
plain frozen records (``monitor.store.records``), usable after the call returned.

The store is split by concern into mixins (this module: accounts, instances, balance, bills,
products, tasks, collector runs; ``metrics.py``: samples, rollups, windows, retention;
``alerting.py``: alerts, silences, notifications); :class:`Store` is their union.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, overload

from sqlalchemy import Connection, Engine, and_, func, insert, select, update

from monitor.novita.models import (
    AsyncTask,
    Balance,
    FixedTermBill,
    Instance,
    Product,
    TrainingTask,
    UsageBill,
)
from monitor.store import tables as t
from monitor.store.records import (
    APPEARED,
    BILLING_MODE_CHANGED,
    DISAPPEARED,
    END_TIME_MOVED,
    ERROR_ENTERED,
    STATUS_CHANGED,
    TASK_FINISHED,
    BalanceSample,
    CollectorRun,
    Event,
    InstanceChange,
    InstanceRecord,
    ProductPrice,
    TrainingTaskRecord,
    WatchedTask,
)
from monitor.store.sql import upsert
from monitor.store.types import Money, from_epoch, micros_to_usd, to_epoch, usd_to_micros

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
RUN_OUTCOMES = frozenset({"ok", "partial", "failed"})
_PRICES: Any = object()  # product_price() without a billing mode: the whole price record


class StoreBase:
    """Engine, and caches of account ids and instance keys (they never change once assigned)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._account_ids: dict[str, int] = {}
        self._account_names: dict[int, str] = {}
        self._instance_keys: dict[tuple[int, str], int] = {}

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # -- accounts ---------------------------------------------------------------------------

    def ensure_account(self, name: str) -> int:
        """The integer id of account ``name``, created on first use."""
        with self._lock:
            cached = self._account_ids.get(name)
        if cached is not None:
            return cached
        with self.engine.begin() as conn:
            upsert(conn, t.accounts, [{"name": name}], keys=["name"], update=[])
            account_id = conn.execute(
                select(t.accounts.c.id).where(t.accounts.c.name == name)
            ).scalar_one()
        with self._lock:
            self._account_ids[name] = account_id
            self._account_names[account_id] = name
        return account_id

    def accounts(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(t.accounts.c.name).order_by(t.accounts.c.id)).scalars())

    def _account_name(self, conn: Connection, account_id: int) -> str:
        with self._lock:
            name = self._account_names.get(account_id)
        if name is None:
            name = conn.execute(
                select(t.accounts.c.name).where(t.accounts.c.id == account_id)
            ).scalar_one()
            with self._lock:
                self._account_names[account_id] = name
        return name

    # -- instance keys ----------------------------------------------------------------------

    def _instance_key(
        self, conn: Connection, account_id: int, instance_id: str, create: bool = False
    ) -> int | None:
        with self._lock:
            key = self._instance_keys.get((account_id, instance_id))
        if key is not None:
            return key
        c = t.instances.c
        key = conn.execute(
            select(c.key).where(c.account_id == account_id, c.instance_id == instance_id)
        ).scalar_one_or_none()
        if key is None and create:
            upsert(
                conn,
                t.instances,
                [{"account_id": account_id, "instance_id": instance_id, "name": "", "status": ""}],
                keys=["account_id", "instance_id"],
                update=[],
            )
            key = conn.execute(
                select(c.key).where(c.account_id == account_id, c.instance_id == instance_id)
            ).scalar_one()
        if key is not None:
            with self._lock:
                self._instance_keys[(account_id, instance_id)] = key
        return key

    def instance_key(self, account: str, instance_id: str, create: bool = False) -> int | None:
        """The integer key the metric tables use for an instance (``create`` makes a stub row)."""
        account_id = self.ensure_account(account)
        with self.engine.begin() as conn:
            return self._instance_key(conn, account_id, instance_id, create=create)


def _instance_values(inst: Instance) -> dict[str, Any]:
    return {
        "name": inst.name or "",
        "status": inst.status or "",
        "billing_mode": inst.billing_mode,
        "end_time": inst.end_time,
        "gpu_count": inst.gpu_num or 0,
        "cpu_num": inst.cpu_num,
        "memory": inst.memory,
        "product_id": inst.product_id,
        "product_name": inst.product_name,
        "cluster_id": inst.cluster_id,
        "cluster_name": inst.cluster_name,
        "kind": inst.kind,
        "error_state": inst.error_state,
        "spot_status": inst.spot_status,
        "created_at": inst.created_at,
        "last_started_at": inst.last_started_at,
        "last_stopped_at": inst.last_stopped_at,
        "envs": inst.env,
    }


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _instance_record(account: str, row: Any) -> InstanceRecord:
    m = row._mapping
    return InstanceRecord(
        account=account,
        instance_id=m["instance_id"],
        key=m["key"],
        name=m["name"],
        status=m["status"],
        billing_mode=m["billing_mode"],
        end_time=m["end_time"],
        gpu_count=m["gpu_count"],
        cpu_num=m["cpu_num"],
        memory=m["memory"],
        product_id=m["product_id"],
        product_name=m["product_name"],
        cluster_id=m["cluster_id"],
        cluster_name=m["cluster_name"],
        kind=m["kind"],
        error_state=m["error_state"],
        spot_status=m["spot_status"],
        created_at=m["created_at"],
        last_started_at=m["last_started_at"],
        last_stopped_at=m["last_stopped_at"],
        first_seen=m["first_seen"],
        last_seen=m["last_seen"],
        disappeared_at=m["disappeared_at"],
        envs=dict(m["envs"] or {}),
    )


class CoreRepo(StoreBase):
    """Instances, events, balance, bills, products, tasks and collector runs."""

    # -- instances --------------------------------------------------------------------------

    def upsert_instances(
        self, account: str, instances: Sequence[Instance], now: datetime, complete: bool = True
    ) -> list[Event]:
        """Record a listing of the account's instances; return the events it implies.

        History rows and events are written only on a real change of a tracked field. With
        ``complete=True`` (the listing holds every instance), known instances missing from it are
        marked disappeared; a disappeared instance that shows up again "appears" again.
        """
        if now.tzinfo is None:
            raise ValueError("upsert_instances needs an aware datetime")
        account_id = self.ensure_account(account)
        c = t.instances.c
        events: list[Event] = []
        history: list[dict[str, Any]] = []
        seen: set[str] = set()
        only_seen: list[int] = []
        new_rows: list[dict[str, Any]] = []

        def event(kind: str, instance_id: str, old: Any = None, new: Any = None) -> None:
            events.append(
                Event(account, now, kind, "instance", instance_id, _text(old), _text(new))
            )

        with self.engine.begin() as conn:
            existing = {
                row.instance_id: row
                for row in conn.execute(select(t.instances).where(c.account_id == account_id))
            }
            for inst in instances:
                if inst.id in seen:
                    continue
                seen.add(inst.id)
                values = _instance_values(inst)
                old = existing.get(inst.id)
                if old is None or old.first_seen is None:
                    values.update(first_seen=now, last_seen=now, disappeared_at=None)
                    if old is None:  # inserted together below, history once keys are known
                        new_rows.append(
                            {"account_id": account_id, "instance_id": inst.id, **values}
                        )
                    else:  # a stub created by a metrics upsert before the first listing
                        conn.execute(update(t.instances).where(c.key == old.key).values(**values))
                        history.append({"instance_key": old.key, "ts": now, **_tracked(values)})
                    event(APPEARED, inst.id, None, values["status"])
                    continue
                key = old.key
                changes = {f: values[f] for f in TRACKED if getattr(old, f) != values[f]}
                reappeared = old.disappeared_at is not None
                if reappeared:
                    event(APPEARED, inst.id, None, values["status"])
                if changes or reappeared:
                    history.append({"instance_key": key, "ts": now, **_tracked(values)})
                if "status" in changes:
                    event(STATUS_CHANGED, inst.id, old.status, values["status"])
                if "error_state" in changes and values["error_state"] is not None:
                    event(ERROR_ENTERED, inst.id, old.error_state, values["error_state"])
                if "billing_mode" in changes:
                    event(BILLING_MODE_CHANGED, inst.id, old.billing_mode, values["billing_mode"])
                if "end_time" in changes:
                    event(END_TIME_MOVED, inst.id, old.end_time, values["end_time"])
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
                    if instance_id in seen or old.disappeared_at is not None:
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
        query = select(t.instances).where(c.account_id == account_id, c.first_seen.is_not(None))
        if not include_disappeared:
            query = query.where(c.disappeared_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(c.instance_id)).all()
        return [_instance_record(account, row) for row in rows]

    def instance(self, account: str, instance_id: str) -> InstanceRecord | None:
        account_id = self.ensure_account(account)
        c = t.instances.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.instances).where(c.account_id == account_id, c.instance_id == instance_id)
            ).first()
        return None if row is None else _instance_record(account, row)

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

    # -- events -----------------------------------------------------------------------------

    def _write_events(self, conn: Connection, account_id: int, events: Iterable[Event]) -> None:
        rows = [
            {
                "account_id": account_id,
                "ts": e.ts,
                "kind": e.kind,
                "resource_kind": e.resource_kind,
                "resource_id": e.resource_id,
                "old": e.old,
                "new": e.new,
            }
            for e in events
        ]
        if rows:
            conn.execute(insert(t.events), rows)

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

    # -- balance ----------------------------------------------------------------------------

    def add_balance(self, account: str, balance: Balance, now: datetime) -> None:
        """One balance sample at ``now`` (a second sample in the same second replaces it)."""
        account_id = self.ensure_account(account)
        row = {
            "account_id": account_id,
            "ts": to_epoch(now),
            "available": balance.available_usd,
            "cash": balance.cash_usd,
            "credit_limit": balance.credit_limit_usd,
            "pending_charges": balance.pending_charges_usd,
            "outstanding_invoices": balance.outstanding_invoices_usd,
            "source": balance.source or "",
        }
        with self.engine.begin() as conn:
            upsert(conn, t.balance_samples, [row], keys=["account_id", "ts"])

    def latest_balance(self, account: str) -> BalanceSample | None:
        samples = self.balance_samples(account, latest_only=True)
        return samples[0] if samples else None

    def balance_samples(
        self,
        account: str,
        start: datetime | None = None,
        end: datetime | None = None,
        latest_only: bool = False,
    ) -> list[BalanceSample]:
        """Balance samples in ``[start, end)``, oldest first (or only the latest one)."""
        account_id = self.ensure_account(account)
        b = t.balance_samples.c
        query = select(t.balance_samples).where(b.account_id == account_id)
        if start is not None:
            query = query.where(b.ts >= to_epoch(start))
        if end is not None:
            query = query.where(b.ts < to_epoch(end))
        query = query.order_by(b.ts.desc()).limit(1) if latest_only else query.order_by(b.ts)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            BalanceSample(
                account=account,
                ts=from_epoch(r.ts),
                available_usd=r.available,
                cash_usd=r.cash,
                credit_limit_usd=r.credit_limit,
                pending_charges_usd=r.pending_charges,
                outstanding_invoices_usd=r.outstanding_invoices,
                source=r.source,
            )
            for r in rows
        ]

    # -- bills ------------------------------------------------------------------------------

    def upsert_usage_bills(
        self,
        account: str,
        cycle_type: str,
        bills: Sequence[UsageBill],
        product_category: str | None = None,
    ) -> int:
        """Upsert pay-as-you-go bills; returns the number of rows new or changed.

        Key: (account, cycle type, category, ownerID, productId, startTime); the current period's
        amount grows between fetches and is updated in place. ``category`` is the request's
        ``productCategory`` when given (pass it: ``spend(category="gpu")`` then means exactly the
        bills fetched with ``productCategory=gpu``), else the bill's own ``category``.
        """
        account_id = self.ensure_account(account)
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for bill in bills:
            if bill.start_time is None:
                continue
            row = {
                "account_id": account_id,
                "cycle_type": cycle_type,
                "category": product_category or bill.category or "",
                "owner_id": bill.owner_id or "",
                "product_id": bill.product_id or "",
                "start_ts": to_epoch(bill.start_time),
                "end_ts": to_epoch(bill.end_time) if bill.end_time else None,
                "product_name": bill.product_name,
                "billing_method": bill.billing_method,
                "bill_num0": float(bill.bill_num0) if bill.bill_num0 is not None else None,
                "amount": bill.amount,
                "voucher_amount": bill.voucher_amount,
                "pay_amount": bill.pay_amount
                if bill.pay_amount is not None
                else bill.pay_amount_display,
            }
            rows[_bill_key(row, USAGE_KEY)] = row
        return self._upsert_changed(t.usage_bills, USAGE_KEY, list(rows.values()))

    def upsert_fixed_term_bills(self, account: str, bills: Sequence[FixedTermBill]) -> int:
        """Upsert subscription bills (key: account, category, ownerID, productId, startTime)."""
        account_id = self.ensure_account(account)
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for bill in bills:
            if bill.start_time is None:
                continue
            row = {
                "account_id": account_id,
                "category": bill.product_category or "",
                "owner_id": bill.owner_id or "",
                "product_id": bill.product_id or "",
                "start_ts": to_epoch(bill.start_time),
                "end_ts": to_epoch(bill.end_time) if bill.end_time else None,
                "product_name": bill.product_name,
                "trade_mode": bill.trade_mode,
                "trade_type": bill.trade_type,
                "cycle": bill.cycle,
                "bill_num": bill.bill_num,
                "base_price": bill.base_price,
                "amount": bill.amount,
                "voucher_amount": bill.voucher_amount,
                "pay_amount": bill.pay_amount
                if bill.pay_amount is not None
                else bill.pay_amount_display,
                "create_ts": to_epoch(bill.create_time) if bill.create_time else None,
            }
            rows[_bill_key(row, FIXED_KEY)] = row
        return self._upsert_changed(t.fixed_term_bills, FIXED_KEY, list(rows.values()))

    def _upsert_changed(self, table: Any, keys: Sequence[str], rows: list[dict[str, Any]]) -> int:
        """Upsert only the rows that are new or differ from what is stored; count them."""
        if not rows:
            return 0
        cols = list(rows[0])
        account_id = rows[0]["account_id"]
        starts = [r["start_ts"] for r in rows]
        with self.engine.begin() as conn:
            stored = {
                _bill_key(dict(r._mapping), keys): dict(r._mapping)
                for r in conn.execute(
                    select(*(table.c[c] for c in cols)).where(
                        table.c.account_id == account_id,
                        table.c.start_ts >= min(starts),
                        table.c.start_ts <= max(starts),
                    )
                )
            }
            changed = [r for r in rows if stored.get(_bill_key(r, keys)) != _normalised(table, r)]
            upsert(conn, table, changed, keys=keys)
        return len(changed)

    def bills(
        self,
        account: str,
        cycle_type: str | None = "Hour",
        start: datetime | None = None,
        end: datetime | None = None,
        owner_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Usage bills as dicts (money as Decimal USD), by start time; for reports and tests."""
        account_id = self.ensure_account(account)
        u = t.usage_bills.c
        query = select(t.usage_bills).where(u.account_id == account_id)
        if cycle_type is not None:
            query = query.where(u.cycle_type == cycle_type)
        if start is not None:
            query = query.where(u.start_ts >= to_epoch(start))
        if end is not None:
            query = query.where(u.start_ts < to_epoch(end))
        if owner_id is not None:
            query = query.where(u.owner_id == owner_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query.order_by(u.start_ts))]

    def fixed_term_bills(self, account: str) -> list[dict[str, Any]]:
        account_id = self.ensure_account(account)
        f = t.fixed_term_bills.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.fixed_term_bills).where(f.account_id == account_id).order_by(f.start_ts)
            )
            return [dict(r._mapping) for r in rows]

    def spend(
        self,
        account: str,
        start: datetime,
        end: datetime,
        category: str = "gpu",
        owner_id: str | None = None,
    ) -> Decimal | None:
        """Money paid in hourly bills starting in ``[start, end)``; None when no bill is stored.

        ``category=None`` sums every category. The paid amount is ``payAmount`` (after vouchers).
        """
        account_id = self.ensure_account(account)
        u = t.usage_bills.c
        query = select(func.sum(u.pay_amount), func.count()).where(
            u.account_id == account_id,
            u.cycle_type == "Hour",
            u.start_ts >= to_epoch(start),
            u.start_ts < to_epoch(end),
        )
        if category is not None:
            query = query.where(u.category == category)
        if owner_id is not None:
            query = query.where(u.owner_id == owner_id)
        with self.engine.connect() as conn:
            total, count = conn.execute(query).one()
        if not count:
            return None
        return total if total is not None else Decimal(0)

    def running_hours(
        self, account: str, instance_id: str, start: datetime, end: datetime
    ) -> float | None:
        """Hours the instance was billed by usage in ``[start, end)`` (number of hourly GPU bills
        with a positive quantity or amount); None when no hourly bill is stored for the account in
        the window (unknown, rather than zero)."""
        account_id = self.ensure_account(account)
        u = t.usage_bills.c
        window = and_(
            u.account_id == account_id,
            u.cycle_type == "Hour",
            u.start_ts >= to_epoch(start),
            u.start_ts < to_epoch(end),
        )
        billed = (u.bill_num0 > 0) | (u.pay_amount > 0) | (u.amount > 0)
        with self.engine.connect() as conn:
            any_bill = conn.execute(select(func.count()).where(window)).scalar_one()
            if not any_bill:
                return None
            hours = conn.execute(
                select(func.count(func.distinct(u.start_ts))).where(
                    window, u.owner_id == instance_id, u.category == "gpu", billed
                )
            ).scalar_one()
        return float(hours)

    def gpu_hours_by_owner(
        self,
        account: str,
        start: datetime,
        end: datetime,
        cycle_type: str = "Hour",
        category: str = "gpu",
    ) -> dict[str, float]:
        """Sum of ``billNum0`` per ``ownerID`` (instance) over bills starting in ``[start, end)``.

        For GPU bills ``billNum0`` is "number of cards x billing time" (wire-format §2.6; the
        time unit is taken to be hours, unconfirmed), so dividing by the GPU count gives hours.
        """
        account_id = self.ensure_account(account)
        u = t.usage_bills.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(u.owner_id, func.sum(u.bill_num0))
                .where(
                    u.account_id == account_id,
                    u.cycle_type == cycle_type,
                    u.category == category,
                    u.start_ts >= to_epoch(start),
                    u.start_ts < to_epoch(end),
                    u.owner_id != "",
                )
                .group_by(u.owner_id)
            )
            return {owner: float(total or 0) for owner, total in rows}

    def recent_hourly_bill_usd(
        self, account: str, instance_id: str, now: datetime, lookback_hours: int = 3
    ) -> Decimal | None:
        """The instance's latest complete hourly GPU bill (ended by ``now``, within the lookback)."""
        account_id = self.ensure_account(account)
        u = t.usage_bills.c
        now_ts = to_epoch(now)
        with self.engine.connect() as conn:
            latest = conn.execute(
                select(func.max(u.start_ts)).where(
                    u.account_id == account_id,
                    u.cycle_type == "Hour",
                    u.category == "gpu",
                    u.owner_id == instance_id,
                    u.start_ts >= now_ts - lookback_hours * 3600,
                    func.coalesce(u.end_ts, u.start_ts + 3600) <= now_ts,
                )
            ).scalar_one_or_none()
            if latest is None:
                return None
            total = conn.execute(
                select(func.sum(u.pay_amount)).where(
                    u.account_id == account_id,
                    u.cycle_type == "Hour",
                    u.category == "gpu",
                    u.owner_id == instance_id,
                    u.start_ts == latest,
                )
            ).scalar_one()
        return total if total is not None else Decimal(0)

    # -- products ---------------------------------------------------------------------------

    def upsert_products(
        self,
        account: str,
        products: Sequence[Product],
        cluster_id: str | None,
        now: datetime | None = None,
    ) -> int:
        """Store product prices as listed for ``cluster_id`` ("" or None: no cluster filter)."""
        account_id = self.ensure_account(account)
        rows = {
            p.id: {
                "account_id": account_id,
                "product_id": p.id,
                "cluster_id": cluster_id or "",
                "name": p.name or "",
                "price_per_hour": p.price_usd_per_hour,
                "spot_price_per_hour": p.spot_price_usd_per_hour,
                "monthly_prices": {
                    str(mp.month): str(mp.price_usd)
                    for mp in p.monthly_price
                    if mp.month is not None and mp.price_usd is not None
                },
                "available_deploy": p.available_deploy,
                "updated_at": now,
            }
            for p in products
        }
        with self.engine.begin() as conn:
            return upsert(
                conn,
                t.products,
                list(rows.values()),
                keys=["account_id", "product_id", "cluster_id"],
            )

    @overload
    def product_price(
        self, account: str, product_id: str | None, cluster_id: str | None = None
    ) -> ProductPrice | None: ...

    @overload
    def product_price(
        self, account: str, product_id: str | None, cluster_id: str | None, billing_mode: str | None
    ) -> Decimal | None: ...

    def product_price(
        self,
        account: str,
        product_id: str | None,
        cluster_id: str | None = None,
        billing_mode: Any = _PRICES,
    ) -> ProductPrice | Decimal | None:
        """Prices of a product in a cluster (falling back to the listing without a cluster
        filter, then to the most recently updated listing of any cluster).

        With three arguments: the :class:`ProductPrice` record. With a ``billing_mode`` as
        fourth argument: the per-GPU hourly price in USD for that mode (see
        :meth:`hourly_price_usd`).
        """
        if billing_mode is not _PRICES:
            return self.hourly_price_usd(account, product_id, cluster_id, billing_mode)
        return self._product_prices(account, product_id, cluster_id)

    def hourly_price_usd(
        self,
        account: str,
        product_id: str | None,
        cluster_id: str | None,
        billing_mode: str | None = "onDemand",
    ) -> Decimal | None:
        """Listed per-GPU hourly price: the spot price for ``spot`` (the on-demand price when no
        spot price is listed), the on-demand price otherwise; None for ``monthly`` (prepaid) and
        for unknown products."""
        if billing_mode == "monthly":
            return None
        price = self._product_prices(account, product_id, cluster_id)
        if price is None:
            return None
        if billing_mode == "spot" and price.spot_price_usd_per_hour:
            return price.spot_price_usd_per_hour
        return price.price_usd_per_hour

    def _product_prices(
        self, account: str, product_id: str | None, cluster_id: str | None
    ) -> ProductPrice | None:
        if not product_id:
            return None
        account_id = self.ensure_account(account)
        p = t.products.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.products).where(p.account_id == account_id, p.product_id == product_id)
            ).all()
        if not rows:
            return None
        by_cluster = {r.cluster_id: r for r in rows}
        row = by_cluster.get(cluster_id or "") or by_cluster.get("")
        if row is None:
            row = max(rows, key=lambda r: (r.updated_at is not None, r.updated_at or 0))
        return ProductPrice(
            product_id=row.product_id,
            cluster_id=row.cluster_id,
            name=row.name,
            price_usd_per_hour=row.price_per_hour,
            spot_price_usd_per_hour=row.spot_price_per_hour,
            monthly_prices_usd={int(k): Decimal(v) for k, v in (row.monthly_prices or {}).items()},
            available_deploy=row.available_deploy,
            updated_at=row.updated_at,
        )

    # -- training tasks ---------------------------------------------------------------------

    def upsert_training_tasks(
        self, account: str, tasks: Sequence[TrainingTask], now: datetime
    ) -> list[Event]:
        """Store training tasks; an event for each task that reached a terminal status.

        A task first seen already terminal produces an event only if the account's tasks were
        synced before (so the first sync does not replay history).
        """
        account_id = self.ensure_account(account)
        c = t.training_tasks.c
        events: list[Event] = []
        meta_key = f"training_synced:{account_id}"
        with self.engine.begin() as conn:
            synced_before = self._meta(conn, meta_key) is not None
            stored = {
                r.task_id: r
                for r in conn.execute(
                    select(c.task_id, c.status, c.first_seen, c.status_changed_at).where(
                        c.account_id == account_id
                    )
                )
            }
            rows = []
            for task in {tk.task_id: tk for tk in tasks}.values():
                old = stored.get(task.task_id)
                changed = old is None or old.status != task.task_status
                if task.terminal and (
                    (old is not None and old.status != task.task_status)
                    or (old is None and synced_before)
                ):
                    events.append(
                        Event(
                            account,
                            now,
                            TASK_FINISHED,
                            "training_task",
                            task.task_id,
                            old.status if old else None,
                            task.task_status,
                        )
                    )
                rows.append(
                    {
                        "account_id": account_id,
                        "task_id": task.task_id,
                        "name": task.task_name or "",
                        "task_type": task.task_type,
                        "status": task.task_status,
                        "terminal": task.terminal,
                        "created_at": task.created_at,
                        "first_seen": old.first_seen if old else now,
                        "last_seen": now,
                        "status_changed_at": (
                            now if changed or old is None else old.status_changed_at
                        ),
                        "models": [m.model_dump() for m in task.models],
                    }
                )
            upsert(conn, t.training_tasks, rows, keys=["account_id", "task_id"])
            self._set_meta(conn, meta_key, now.isoformat())
            self._write_events(conn, account_id, events)
        return events

    def training_tasks(self, account: str) -> list[TrainingTaskRecord]:
        account_id = self.ensure_account(account)
        c = t.training_tasks.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.training_tasks).where(c.account_id == account_id).order_by(c.task_id)
            ).all()
        return [
            TrainingTaskRecord(
                account=account,
                task_id=r.task_id,
                name=r.name,
                task_type=r.task_type,
                status=r.status,
                terminal=r.terminal,
                created_at=r.created_at,
                first_seen=r.first_seen,
                last_seen=r.last_seen,
                status_changed_at=r.status_changed_at,
            )
            for r in rows
        ]

    # -- watched async tasks ----------------------------------------------------------------

    def watch_task(self, account: str, task_id: str, label: str, now: datetime) -> None:
        """Register an async task id to poll (the API cannot list them). Re-adding relabels."""
        account_id = self.ensure_account(account)
        row = {
            "account_id": account_id,
            "task_id": task_id,
            "label": label or "",
            "status": "",
            "terminal": False,
            "added_at": now,
        }
        with self.engine.begin() as conn:
            upsert(conn, t.watched_tasks, [row], keys=["account_id", "task_id"], update=["label"])

    def watched_tasks(self, account: str, include_terminal: bool = False) -> list[WatchedTask]:
        account_id = self.ensure_account(account)
        c = t.watched_tasks.c
        query = select(t.watched_tasks).where(c.account_id == account_id)
        if not include_terminal:
            query = query.where(c.terminal.is_(False))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(c.added_at, c.task_id)).all()
        return [
            WatchedTask(
                account=account,
                task_id=r.task_id,
                label=r.label,
                status=r.status,
                terminal=r.terminal,
                reason=r.reason,
                task_type=r.task_type,
                progress_percent=r.progress_percent,
                added_at=r.added_at,
                last_checked=r.last_checked,
                status_changed_at=r.status_changed_at,
            )
            for r in rows
        ]

    def update_async_task(self, account: str, task: AsyncTask, now: datetime) -> Event | None:
        """Record a poll of a watched task; returns an event when it just became terminal."""
        account_id = self.ensure_account(account)
        c = t.watched_tasks.c
        where = and_(c.account_id == account_id, c.task_id == task.task_id)
        with self.engine.begin() as conn:
            old = conn.execute(select(c.status, c.terminal).where(where)).first()
            if old is None:
                upsert(
                    conn,
                    t.watched_tasks,
                    [{"account_id": account_id, "task_id": task.task_id, "added_at": now}],
                    keys=["account_id", "task_id"],
                    update=[],
                )
            values: dict[str, Any] = {
                "status": task.status,
                "terminal": task.terminal,
                "reason": task.reason,
                "task_type": task.task_type,
                "progress_percent": task.progress_percent,
                "last_checked": now,
            }
            if old is None or old.status != task.status:
                values["status_changed_at"] = now
            conn.execute(update(t.watched_tasks).where(where).values(**values))
            event = None
            if task.terminal and (old is None or not old.terminal):
                event = Event(
                    account,
                    now,
                    TASK_FINISHED,
                    "async_task",
                    task.task_id,
                    old.status if old else None,
                    task.status,
                )
                self._write_events(conn, account_id, [event])
        return event

    # -- collector runs ---------------------------------------------------------------------

    def record_run(
        self,
        account: str,
        collector: str,
        started: datetime,
        finished: datetime,
        outcome: str,
        counts: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """One collector run: outcome ``ok``, ``partial`` or ``failed``, counts, error text."""
        if outcome not in RUN_OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(RUN_OUTCOMES)}, got {outcome!r}")
        account_id = self.ensure_account(account)
        with self.engine.begin() as conn:
            if outcome != "failed":
                first_key = f"first_success:{account_id}:{collector}"
                if self._meta(conn, first_key) is None:  # kept when old runs are pruned
                    self._set_meta(conn, first_key, str(to_epoch(finished)))
            conn.execute(
                insert(t.collector_runs).values(
                    account_id=account_id,
                    collector=collector,
                    started=started,
                    finished=finished,
                    outcome=outcome,
                    counts=counts or {},
                    error=error,
                )
            )

    def last_success(
        self, account: str, collector: str, include_partial: bool = True
    ) -> datetime | None:
        """When ``collector`` last finished ``ok`` (or ``partial``) for the account."""
        account_id = self.ensure_account(account)
        c = t.collector_runs.c
        outcomes = ["ok", "partial"] if include_partial else ["ok"]
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.max(c.finished)).where(
                    c.account_id == account_id,
                    c.collector == collector,
                    c.outcome.in_(outcomes),
                )
            ).scalar_one_or_none()

    def first_success(self, account: str, collector: str) -> datetime | None:
        """When ``collector`` first finished ``ok`` or ``partial`` for the account (kept in
        ``store_meta``, so retention of old runs does not move it): how far back the collected
        history reaches."""
        account_id = self.ensure_account(account)
        c = t.collector_runs.c
        with self.engine.connect() as conn:
            value = self._meta(conn, f"first_success:{account_id}:{collector}")
            if value is not None:
                return from_epoch(int(value))
            return conn.execute(
                select(func.min(c.finished)).where(
                    c.account_id == account_id,
                    c.collector == collector,
                    c.outcome.in_(["ok", "partial"]),
                )
            ).scalar_one_or_none()

    def last_runs(self, account: str) -> dict[str, CollectorRun]:
        """The latest run of each collector of the account."""
        account_id = self.ensure_account(account)
        c = t.collector_runs.c
        latest = (
            select(c.collector, func.max(c.id).label("id"))
            .where(c.account_id == account_id)
            .group_by(c.collector)
            .subquery()
        )
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.collector_runs).join(latest, latest.c.id == c.id)).all()
        return {
            r.collector: CollectorRun(
                account,
                r.collector,
                r.started,
                r.finished,
                r.outcome,
                dict(r.counts or {}),
                r.error,
            )
            for r in rows
        }

    # -- meta -------------------------------------------------------------------------------

    def _meta(self, conn: Connection, key: str) -> str | None:
        return conn.execute(
            select(t.store_meta.c.value).where(t.store_meta.c.key == key)
        ).scalar_one_or_none()

    def _set_meta(self, conn: Connection, key: str, value: str) -> None:
        upsert(conn, t.store_meta, [{"key": key, "value": value}], keys=["key"])


USAGE_KEY = ("account_id", "cycle_type", "category", "owner_id", "product_id", "start_ts")
FIXED_KEY = ("account_id", "category", "owner_id", "product_id", "start_ts")


def _bill_key(row: dict[str, Any], keys: Sequence[str]) -> tuple[Any, ...]:
    return tuple(row[k] for k in keys)


def _normalised(table: Any, row: dict[str, Any]) -> dict[str, Any]:
    """A row as it reads back from the database (money rounded to micro-dollars)."""
    out = {}
    for name, value in row.items():
        if isinstance(table.c[name].type, Money):
            value = micros_to_usd(usd_to_micros(value))
        out[name] = value
    return out


def _tracked(values: dict[str, Any]) -> dict[str, Any]:
    return {f: values[f] for f in TRACKED}
