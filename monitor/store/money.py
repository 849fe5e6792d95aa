"""Money: balance samples, usage and fixed-term bills (natural keys, growing amounts), product
prices, and the queries ``status`` and the rules make of them (spend, running hours, prices)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Float,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    select,
    type_coerce,
)

from monitor.store import tables as t
from monitor.store.base import StoreBase
from monitor.store.models import (
    BalanceSample,
    FixedTermBillRecord,
    ProductPrice,
    UsageBillRecord,
)
from monitor.store.sql import upsert
from monitor.store.types import Money, from_epoch, micros_to_usd, to_epoch, usd_to_micros

#: what a usage bill handed to :meth:`MoneyRepo.upsert_usage_bills` carries: the columns of
#: :class:`UsageBillRecord` but the account and the cycle type (given once per call)
USAGE_BILL_FIELDS = tuple(
    c.key for c in t.usage_bills.c if c.key not in ("account_id", "cycle_type")
)
#: the same for :meth:`MoneyRepo.upsert_fixed_term_bills`
FIXED_TERM_BILL_FIELDS = tuple(c.key for c in t.fixed_term_bills.c if c.key != "account_id")
#: the attributes of a product handed to :meth:`MoneyRepo.upsert_products`
PRODUCT_FIELDS = (
    "product_id",
    "name",
    "price_usd_per_hour",
    "spot_price_usd_per_hour",
    "monthly_prices_usd",
    "available_deploy",
)


class MoneyRepo(StoreBase):
    """Balance, bills, products."""

    # -- balance ----------------------------------------------------------------------------

    def add_balance(self, account: str, sample: BalanceSample) -> None:
        """One balance sample at ``sample.ts`` (a second sample in the same second replaces it);
        ``sample.account_id`` is ignored (the account is ``account``)."""
        account_id = self.ensure_account(account)
        row = {
            "account_id": account_id,
            "ts": sample.ts,
            "available": sample.available_usd,
            "cash": sample.cash_usd,
            "credit_limit": sample.credit_limit_usd,
            "pending_charges": sample.pending_charges_usd,
            "outstanding_invoices": sample.outstanding_invoices_usd,
            "source": sample.source or "",
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
        query = select(BalanceSample).where(b.account_id == account_id)
        if start is not None:
            query = query.where(b.ts >= to_epoch(start))
        if end is not None:
            query = query.where(b.ts < to_epoch(end))
        query = query.order_by(b.ts.desc()).limit(1) if latest_only else query.order_by(b.ts)
        return self._load(query)

    # -- bills ------------------------------------------------------------------------------

    def upsert_usage_bills(
        self, account: str, cycle_type: str, bills: Iterable[Mapping[str, Any]]
    ) -> int:
        """Upsert pay-as-you-go bills; returns the number of rows new or changed.

        Each bill is a mapping of :data:`USAGE_BILL_FIELDS` (the collector converts the API's
        payload: ``category`` is the request's ``productCategory`` when it gave one, so that
        ``category="gpu"`` means exactly the bills fetched with it). Key: (account, cycle type,
        category, ownerID, productId, start); the current period's amount grows between fetches
        and is updated in place.
        """
        account_id = self.ensure_account(account)
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for bill in bills:
            if not rows:
                _check_fields("upsert_usage_bills", bill, USAGE_BILL_FIELDS)
            row = {**bill, "account_id": account_id, "cycle_type": cycle_type}
            rows[_bill_key(row, USAGE_KEY)] = row
        return self._upsert_changed(t.usage_bills, USAGE_KEY, list(rows.values()))

    def upsert_fixed_term_bills(self, account: str, bills: Iterable[Mapping[str, Any]]) -> int:
        """Upsert subscription bills, mappings of :data:`FIXED_TERM_BILL_FIELDS` (key: account,
        category, ownerID, productId, start); ``base_price`` is USD."""
        account_id = self.ensure_account(account)
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for bill in bills:
            if not rows:
                _check_fields("upsert_fixed_term_bills", bill, FIXED_TERM_BILL_FIELDS)
            row = {**bill, "account_id": account_id}
            rows[_bill_key(row, FIXED_KEY)] = row
        return self._upsert_changed(t.fixed_term_bills, FIXED_KEY, list(rows.values()))

    def _upsert_changed(self, table: Any, keys: Sequence[str], rows: list[dict[str, Any]]) -> int:
        """Upsert only the rows that are new or differ from what is stored; count them.

        Compared in the stored form (money as integer micro-dollars, read without conversion):
        a steady-state cycle re-reads thousands of bills that have not changed."""
        if not rows:
            return 0
        cols = list(rows[0])
        money = [isinstance(table.c[c].type, Money) for c in cols]
        columns = [
            type_coerce(table.c[c], BigInteger()) if is_money else table.c[c]
            for c, is_money in zip(cols, money, strict=True)
        ]
        key_at = [cols.index(k) for k in keys]
        account_id = rows[0]["account_id"]
        starts = [r["start_ts"] for r in rows]
        # read back only rows that can match: same window, and the same cycle type and
        # category when the batch has one (daily bills must not drag in the hourly ones)
        same = [
            table.c[k] == rows[0][k]
            for k in ("cycle_type", "category")
            if k in keys and len({r[k] for r in rows}) == 1
        ]

        def stored_form(row: dict[str, Any]) -> tuple[Any, ...]:
            return tuple(
                usd_to_micros(row[c]) if is_money else row[c]
                for c, is_money in zip(cols, money, strict=True)
            )

        with self.engine.begin() as conn:
            stored = {
                tuple(r[i] for i in key_at): tuple(r)
                for r in conn.execute(
                    select(*columns).where(
                        table.c.account_id == account_id,
                        table.c.start_ts >= min(starts),
                        table.c.start_ts <= max(starts),
                        *same,
                    )
                )
            }
            changed = [r for r in rows if stored.get(_bill_key(r, keys)) != stored_form(r)]
            upsert(conn, table, changed, keys=keys)
        return len(changed)

    def bills(
        self,
        account: str,
        cycle_type: str | None = "Hour",
        start: datetime | None = None,
        end: datetime | None = None,
        owner_id: str | None = None,
    ) -> list[UsageBillRecord]:
        """Usage bills starting in ``[start, end)``, by start time; for reports and tests."""
        account_id = self.ensure_account(account)
        u = t.usage_bills.c
        query = select(UsageBillRecord).where(u.account_id == account_id)
        if cycle_type is not None:
            query = query.where(u.cycle_type == cycle_type)
        if start is not None:
            query = query.where(u.start_ts >= to_epoch(start))
        if end is not None:
            query = query.where(u.start_ts < to_epoch(end))
        if owner_id is not None:
            query = query.where(u.owner_id == owner_id)
        return self._load(query.order_by(u.start_ts))

    def fixed_term_bills(self, account: str) -> list[FixedTermBillRecord]:
        account_id = self.ensure_account(account)
        f = t.fixed_term_bills.c
        return self._load(
            select(FixedTermBillRecord).where(f.account_id == account_id).order_by(f.start_ts)
        )

    def upsert_products(
        self,
        account: str,
        products: Iterable[Mapping[str, Any]],
        cluster_id: str | None,
        now: datetime | None = None,
    ) -> int:
        """Store product prices as listed for ``cluster_id`` ("" or None: no cluster filter);
        each product a mapping of :data:`PRODUCT_FIELDS` (money as Decimal USD)."""
        account_id = self.ensure_account(account)
        c = t.products.c
        attrs = ProductPrice.__mapper__.attrs  # type: ignore[attr-defined]
        column = {f: attrs[f].columns[0].key for f in PRODUCT_FIELDS}
        rows = {
            p["product_id"]: {
                "account_id": account_id,
                **{column[f]: p[f] for f in PRODUCT_FIELDS},
                c.cluster_id.key: cluster_id or "",
                c.updated_at.key: now,
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

    def product_price(
        self, account: str, product_id: str | None, cluster_id: str | None = None
    ) -> ProductPrice | None:
        """Prices of a product in a cluster (falling back to the listing without a cluster
        filter, then to the most recently updated listing of any cluster)."""
        if not product_id:
            return None
        return pick_price(self.product_prices(account, product_id), cluster_id)

    def product_prices(self, account: str, product_id: str | None = None) -> list[ProductPrice]:
        """Every stored listing of the account (of one product when ``product_id`` is given):
        an evaluation prices all its instances from one read (:func:`pick_price`)."""
        account_id = self.ensure_account(account)
        p = t.products.c
        query = select(ProductPrice).where(p.account_id == account_id)
        if product_id is not None:
            query = query.where(p.product_id == product_id)
        return self._load(query)

    # -- reads for the economics (monitor/economics.py computes; these only fetch) ------------

    def usage_bill_sums(
        self,
        account: str,
        start: datetime,
        end: datetime,
        as_of: datetime,
        cycle_type: str,
        category: str = "gpu",
        by_owner: bool = True,
    ) -> list[BillSums]:
        """The usage bills of ``cycle_type`` overlapping ``[start, end)``, summed in SQL per
        owner (or all together: ``by_owner=False``), each bill weighted by the share of its
        period that lies in the window, the period counted only up to ``as_of`` (what a bill
        read then can have charged: the current period's is partial). A month of a thousand
        instances' bills is ~30,000 rows: never read one by one. Hour bills last an hour, Day
        bills a UTC day. The weighting is the economics' ``window_share``, written in SQL.

        Three ranges of the key (start first, revision 0006), each read once: the bills wholly
        inside (nearly all of them) summed plainly, the few at either edge weighted (the CASE
        per row costs, so only for them). The statements are built once (bound parameters)."""
        account_id = self.ensure_account(account)
        period = _period(cycle_type)
        s, e, a = to_epoch(start), to_epoch(end), to_epoch(as_of)
        last_whole = min(e, a) - period  # the last start whose period ends in the window
        ranges = [
            (s, last_whole + 1, False),
            (s - period + 1, min(s, e), True),
            (max(s, last_whole + 1), e, True),
        ]
        params = {"account_id": account_id, "cycle": cycle_type, "category": category,
                  "period": period, "s": s, "e": e, "a": a}  # fmt: skip
        sums: dict[str, list[float]] = {}
        with self.engine.connect() as conn:
            for lo, hi, weighted in ranges:
                if hi <= lo:
                    continue
                query = _bill_sums_query(by_owner, weighted)
                for key, flag, count, hours, num, paid in conn.execute(
                    query, {**params, "lo": lo, "hi": hi}
                ):
                    into = sums.setdefault(key, [0.0] * 6)
                    if flag:  # [priced, priced_hours, priced_num, unpriced, unpriced_num, paid]
                        into[0] += count
                        into[1] += float(hours or 0)
                        into[2] += float(num or 0)
                    else:
                        into[3] += count
                        into[4] += float(num or 0)
                    into[5] += float(paid or 0)
        return [
            BillSums(
                owner_id=key,
                priced=int(v[0]),
                priced_hours=v[1],
                priced_num=v[2],
                unpriced=int(v[3]),
                unpriced_num=v[4],
                paid=micros_to_usd(round(v[5])) or Decimal(0),
            )
            for key, v in sums.items()
            if v[0] or v[3]
        ]

    def usage_spend_groups(
        self,
        account: str,
        start: datetime,
        end: datetime,
        as_of: datetime,
        cycle_type: str = "Hour",
        category: str = "gpu",
    ) -> list[SpendGroup]:
        """What the usage bills of ``cycle_type`` overlapping ``[start, end)`` paid
        (``payAmount``, else ``amount``), summed in SQL per UTC day of the bill's start, owner
        and product, each bill weighted by the share of its period inside the window (counted
        up to ``as_of``, as :meth:`usage_bill_sums` weighs them): the report's spend by day,
        by instance and by product (``monitor.economics.spend_by`` adds them up)."""
        account_id = self.ensure_account(account)
        u = t.usage_bills.c
        period = _period(cycle_type)
        s, e, a = to_epoch(start), to_epoch(end), to_epoch(as_of)
        paid = cast(type_coerce(func.coalesce(u.pay_amount, u.amount), BigInteger), Float)
        day = u.start_ts - u.start_ts % 86400
        query = (
            select(day, u.owner_id, u.product_id, func.sum(paid * _share(period, s, e, a)))
            .where(
                u.account_id == account_id,
                u.cycle_type == cycle_type,
                u.category == category,
                u.owner_id != "",
                u.start_ts < e,
                u.start_ts > s - period,
            )
            .group_by(day, u.owner_id, u.product_id)
        )
        with self.engine.connect() as conn:
            return [
                SpendGroup(
                    from_epoch(int(d)),
                    owner,
                    product or "",
                    micros_to_usd(round(v or 0)) or Decimal(0),
                )
                for d, owner, product, v in conn.execute(query)
            ]

    def usage_bills_overlapping(
        self,
        account: str,
        start: datetime,
        end: datetime,
        cycle_type: str,
        category: str = "gpu",
    ) -> list[UsageBillRow]:
        """Every usage bill of ``cycle_type`` overlapping ``[start, end)`` as a row (for a few
        hours of bills; a long window wants :meth:`usage_bill_sums`)."""
        account_id = self.ensure_account(account)
        u = t.usage_bills.c
        period = 86400 if cycle_type == "Day" else 3600
        s, e = to_epoch(start), to_epoch(end)
        query = select(
            u.owner_id, u.start_ts, u.end_ts, u.amount, u.pay_amount, u.unit_price, u.bill_num0
        ).where(
            u.account_id == account_id,
            u.cycle_type == cycle_type,
            u.category == category,
            u.owner_id != "",
            u.start_ts < e,
            u.start_ts > s - period,
        )
        with self.engine.connect() as conn:
            return [
                UsageBillRow(
                    owner, from_epoch(ts), None if te is None else from_epoch(te), am, p, up, n
                )
                for owner, ts, te, am, p, up, n in conn.execute(query)
            ]

    def latest_complete_bills(
        self,
        account: str,
        now: datetime,
        lookback: timedelta,
        owner_ids: Sequence[str],
        category: str = "gpu",
    ) -> list[UsageBillRow]:
        """Each of ``owner_ids``' latest hourly bill whose hour ended by ``now`` (within
        ``lookback``): one row per owner, picked in SQL (the current hour's bill is partial);
        naming the owners lets the key's prefix (account, cycle, category, owner) find them."""
        account_id = self.ensure_account(account)
        u = t.usage_bills.c
        end, start = to_epoch(now), to_epoch(now - lookback)
        if not owner_ids:
            return []
        where = (
            u.account_id == account_id,
            u.cycle_type == "Hour",
            u.category == category,
            u.owner_id.in_(list(owner_ids)),
        )
        query = (
            select(
                u.owner_id, u.start_ts, u.end_ts, u.amount, u.pay_amount, u.unit_price, u.bill_num0
            )
            .where(*where, u.start_ts >= start, u.start_ts + 3600 <= end)
            .order_by(u.owner_id, u.start_ts.desc())
        )
        out: dict[str, UsageBillRow] = {}
        with self.engine.connect() as conn:
            for owner, ts, e, a, p, up, n in conn.execute(query):
                if owner not in out:  # the newest first
                    out[owner] = UsageBillRow(
                        owner, from_epoch(ts), None if e is None else from_epoch(e), a, p, up, n
                    )
        return list(out.values())

    def max_listed_price(self, account: str) -> Decimal | None:
        """The highest listed hourly price (per unit) of any product of the account."""
        account_id = self.ensure_account(account)
        p = t.products.c
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.max(p.price_per_hour)).where(p.account_id == account_id)
            ).scalar_one_or_none()


@cache
def _bill_sums_query(by_owner: bool, weighted: bool) -> Any:
    """The statement of :meth:`MoneyRepo.usage_bill_sums` for one range of bills (bound
    parameters: account_id, cycle, category, period, s, e, a, lo, hi), built once."""
    u = t.usage_bills.c
    period, s, e, a = (bindparam(n, type_=BigInteger) for n in ("period", "s", "e", "a"))
    weight: Any = _share(period, s, e, a) if weighted else literal(1.0)
    amount = type_coerce(u.amount, BigInteger)
    unit = type_coerce(u.unit_price, BigInteger)
    paid = cast(type_coerce(func.coalesce(u.pay_amount, u.amount), BigInteger), Float)
    # priced bills (a unit price: their card-hours are amount / price) and the others are
    # summed apart by grouping on the flag (cheaper per row than a CASE per column)
    priced = func.coalesce(unit > 0, False) if by_owner else literal(False)
    owner = u.owner_id if by_owner else literal("")
    columns: list[Any] = (
        [
            func.sum(cast(amount, Float) / func.nullif(unit, 0) * weight),
            func.sum(u.bill_num0 * weight),
        ]
        if by_owner
        else [literal(0), literal(0)]  # the spend needs only the money (a week: 168k rows)
    )
    query = select(owner, priced, func.count(), *columns, func.sum(paid * weight)).where(
        u.account_id == bindparam("account_id"),
        u.cycle_type == bindparam("cycle"),
        u.category == bindparam("category"),
        u.owner_id != "",
        u.start_ts >= bindparam("lo", type_=BigInteger),
        u.start_ts < bindparam("hi", type_=BigInteger),
    )
    return query.group_by(u.owner_id, priced) if by_owner else query


class BillSums(NamedTuple):
    """One owner's bills wholly inside a window, summed (see
    :meth:`MoneyRepo.usage_bills_in_window`; the fields of ``monitor.economics.BillTotals``)."""

    owner_id: str
    priced: int
    priced_hours: float
    priced_num: float
    unpriced: int
    unpriced_num: float
    paid: Decimal


class SpendGroup(NamedTuple):
    """What one owner's bills of one product that started on one UTC day paid in a window
    (:meth:`MoneyRepo.usage_spend_groups`)."""

    day: datetime
    owner_id: str
    product_id: str
    paid: Decimal


def _period(cycle_type: str) -> int:
    """Seconds a usage bill of ``cycle_type`` covers: Hour bills an hour, Day bills a UTC day."""
    return 86400 if cycle_type == "Day" else 3600


def _share(period: Any, s: Any, e: Any, a: Any) -> Any:
    """The share of each bill's period inside ``[s, e)``, the period counted up to ``a``: the
    economics' ``window_share``, written in SQL (numbers or bound parameters)."""
    u = t.usage_bills.c

    def least(x: Any, y: Any) -> Any:
        return case((x < y, x), else_=y)

    def greatest(x: Any, y: Any) -> Any:
        return case((x > y, x), else_=y)

    effective_end = least(u.start_ts + period, a)
    overlap = least(effective_end, e) - greatest(u.start_ts, s)
    return case(
        (
            and_(effective_end > u.start_ts, overlap > 0),
            cast(overlap, Float) / (effective_end - u.start_ts),
        ),
        else_=0.0,
    )


class UsageBillRow(NamedTuple):
    """The money and quantity of one usage bill, as the economics reads it."""

    owner_id: str
    start: datetime
    end: datetime | None
    amount: Decimal | None
    pay_amount: Decimal | None
    unit_price: Decimal | None
    bill_num0: float | None


USAGE_KEY = ("account_id", "cycle_type", "category", "owner_id", "product_id", "start_ts")
FIXED_KEY = ("account_id", "category", "owner_id", "product_id", "start_ts")


def _check_fields(method: str, item: Mapping[str, Any], fields: Sequence[str]) -> None:
    """The first item of a batch carries exactly ``fields`` (the converter builds them all
    alike; checking one keeps a typo from reaching the database as a bad column name)."""
    if set(item) != set(fields):
        missing = sorted(set(fields) - set(item))
        extra = sorted(set(item) - set(fields))
        raise ValueError(
            f"{method}: expected the fields {', '.join(fields)}; missing {missing}, unknown {extra}"
        )


def _bill_key(row: dict[str, Any], keys: Sequence[str]) -> tuple[Any, ...]:
    return tuple(row[k] for k in keys)


def pick_price(rows: Sequence[ProductPrice], cluster_id: str | None) -> ProductPrice | None:
    """Of one product's listings, the cluster's, else the one listed without a cluster filter,
    else the most recently updated of any cluster; None when there is none."""
    if not rows:
        return None
    by_cluster = {r.cluster_id: r for r in rows}
    row = by_cluster.get(cluster_id or "") or by_cluster.get("")
    if row is None:
        row = max(rows, key=lambda r: (r.updated_at is not None, r.updated_at or 0))
    return row
