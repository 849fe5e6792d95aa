"""Metric samples, hourly rollups, windowed aggregates and retention.

Raw samples: one row per instance and minute (``metric_samples``). Hourly rollups
(``metric_hourly``) are computed for every *completed* hour below a watermark (``store_meta``
key ``rollup_watermark``, epoch seconds, hour-aligned) by :meth:`MetricsRepo.rollup`, which
:meth:`MetricsRepo.enforce_retention` calls before deleting raw rows older than the raw window.
Samples that arrive late for an hour already rolled up (backfill after a restart) re-roll that
hour of that instance at once, so rollups and raw data never disagree.

Windows (:meth:`MetricsRepo.metric_window`) read whole hours below the watermark from the rollups
and the rest (the edges and the recent, not yet rolled-up part) from the raw table, all
aggregated in SQL, so long lookbacks cost a few rows per hour per instance.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from itertools import groupby
from typing import Any, NamedTuple

from sqlalchemy import Connection, and_, bindparam, case, delete, func, or_, select, update

from monitor.store import tables as t
from monitor.store.base import StoreBase
from monitor.store.records import SERIES, GpuAgg, MetricRow, WindowAgg
from monitor.store.sql import insert_ignore as _insert_ignore
from monitor.store.sql import upsert
from monitor.store.types import (
    GPU_MISSING,
    decode_pct,
    from_epoch,
    pack_gpus,
    to_epoch,
    unpack_gpus,
)

MINUTE = 60
HOUR = 3600
DAY = 86400
#: an hour is rolled up once it ended at least this long ago (the API lags about a minute)
ROLLUP_DELAY_S = 300
WATERMARK = "rollup_watermark"
RAW_COLS = ("gpu_util", "gpu_mem", "cpu", "mem", "disk", "gpu_utils", "gpu_mems")
#: hourly columns holding each series' average, and its max/min when kept
HOURLY_AVG = {
    "gpu_util": "gpu_util_avg",
    "gpu_mem": "gpu_mem_avg",
    "cpu": "cpu_avg",
    "mem": "mem_avg",
    "disk": "disk_avg",
}
HOURLY_EXTREMES = {"gpu_util": ("gpu_util_max", "gpu_util_min", "gpu_util_n")}
HOURLY_EXTREMES["gpu_mem"] = ("gpu_mem_max", "gpu_mem_min", "gpu_mem_n")
HOURLY_SCALARS = [
    "instance_key", "ts", "n",
    "gpu_util_avg", "gpu_util_max", "gpu_util_min", "gpu_util_n",
    "gpu_mem_avg", "gpu_mem_max", "gpu_mem_min", "gpu_mem_n",
    "cpu_avg", "mem_avg", "disk_avg",
]  # fmt: skip


#: one instance's minutes in the stored form: minute (epoch s) -> {column of RAW_COLS: value}
MinuteRows = dict[int, dict[str, Any]]


def floor_to(ts: int, step: int) -> int:
    return ts - ts % step


_MISSING = bytes([GPU_MISSING])


def _gpu_vectors(blobs: list[bytes]) -> tuple[bytes | None, bytes | None]:
    """Per-GPU average and max of a group of packed vectors (255 = missing is skipped)."""
    blobs = [b if type(b) is bytes else bytes(b) for b in blobs if b]
    if not blobs:
        return None, None
    width = max(map(len, blobs))
    joined = b"".join(blobs)
    if len(joined) == width * len(blobs) and _MISSING not in joined:  # common case, in C
        n = len(blobs)
        columns = [joined[i::width] for i in range(width)]  # the i-th byte of every vector
        avg = bytes([int(sum(c) / n + 0.5) for c in columns])
        return avg, bytes([max(c) for c in columns])
    avgs, maxes = [], []
    for i in range(width):
        values = [b[i] for b in blobs if i < len(b) and b[i] != GPU_MISSING]
        avgs.append(int(sum(values) / len(values) + 0.5) if values else GPU_MISSING)
        maxes.append(max(values) if values else GPU_MISSING)
    return bytes(avgs), bytes(maxes)


def _hour_expr(ts: Any) -> Any:
    return ts - ts % HOUR


class MetricsRepo(StoreBase):
    """Samples, rollups, windows, retention."""

    # -- writing ----------------------------------------------------------------------------

    def upsert_metrics(self, account: str, instance_id: str, rows: MinuteRows) -> int:
        """Merge one instance's minutes into the stored rows; returns rows new or changed.

        ``rows`` maps the start of each minute (epoch seconds) to its values in the stored
        form, a dict of :data:`RAW_COLS` (integer tenths of a percent, CPU per core, per-GPU
        vectors packed with :func:`~monitor.store.types.pack_gpus`, None where a series has no
        value): what ``monitor.collect.convert.minute_rows`` makes of a metrics response.
        A series missing (None) keeps the stored value of that minute (merge, not replace), so
        re-fetching an overlapping window is idempotent and writes nothing new.
        """
        return self.upsert_metrics_many(account, [(instance_id, rows)])

    def upsert_metrics_many(self, account: str, items: Iterable[tuple[str, MinuteRows]]) -> int:
        """:meth:`upsert_metrics` for many instances in one transaction (one write lock on
        SQLite instead of one per instance); ``items`` are ``(instance_id, minute rows)``.

        The stored rows to merge with are read in one query when the windows are close (the
        steady state), one query per instance otherwise (backfills).
        """
        prepared = [(iid, rows) for iid, rows in items if rows]
        if not prepared:
            return 0
        account_id = self.ensure_account(account)
        m = t.metric_samples.c
        changed: list[dict[str, Any]] = []
        with self.engine.begin() as conn:
            watermark = self._watermark(conn)
            keyed: list[tuple[int, dict[int, dict[str, Any]]]] = []
            for instance_id, rows in prepared:
                key = self._instance_key(conn, account_id, instance_id, create=True)
                assert key is not None
                keyed.append((key, rows))
            lo = min(min(rows) for _, rows in keyed)
            hi = max(max(rows) for _, rows in keyed)
            stored: dict[tuple[int, int], Any] = {}
            if hi - lo <= 2 * HOUR:
                ranges = [([k for k, _ in keyed], lo, hi)]
            else:
                ranges = [([k], min(rows), max(rows)) for k, rows in keyed]
            for keys, start, end in ranges:
                for i in range(0, len(keys), 500):
                    for r in conn.execute(
                        select(t.metric_samples).where(
                            m.instance_key.in_(keys[i : i + 500]), m.ts >= start, m.ts <= end
                        )
                    ):
                        stored[(r.instance_key, r.ts)] = r
            for key, rows in keyed:
                for minute, new in sorted(rows.items()):
                    old = stored.get((key, minute))
                    if old is None:
                        changed.append({"instance_key": key, "ts": minute, **new})
                        continue
                    merged = {
                        col: (new[col] if new[col] is not None else getattr(old, col))
                        for col in RAW_COLS
                    }
                    if all(_same(merged[col], getattr(old, col)) for col in RAW_COLS):
                        continue
                    changed.append({"instance_key": key, "ts": minute, **merged})
            upsert(conn, t.metric_samples, changed, keys=["instance_key", "ts"])
            if watermark is not None:  # late samples below the watermark: re-roll their hours
                late: dict[int, set[int]] = defaultdict(set)  # hour -> instance keys
                for row in changed:
                    if int(row["ts"]) < watermark:
                        late[floor_to(int(row["ts"]), HOUR)].add(int(row["instance_key"]))
                for hour, hour_keys in sorted(late.items()):
                    self._rollup_range(conn, hour, hour + HOUR, instance_keys=sorted(hour_keys))
        return len(changed)

    def upsert_metrics_batch(self, account: str, batch: Iterable[tuple[str, MinuteRows]]) -> int:
        """Alias of :meth:`upsert_metrics_many` (the name the collectors use)."""
        return self.upsert_metrics_many(account, batch)

    def latest_metric_times(self, account: str) -> dict[str, datetime]:
        """Newest stored minute per instance of the account (instances without samples are
        absent). One correlated ``max`` per instance, each a primary-key lookup."""
        account_id = self.ensure_account(account)
        i, m = t.instances.c, t.metric_samples.c
        newest = select(func.max(m.ts)).where(m.instance_key == i.key).scalar_subquery().label("ts")
        with self.engine.connect() as conn:
            rows = conn.execute(select(i.instance_id, newest).where(i.account_id == account_id))
            return {iid: from_epoch(ts) for iid, ts in rows if ts is not None}

    def first_metric_time(self, account: str) -> datetime | None:
        """Oldest stored sample (raw minute or hourly rollup) of any instance of the account:
        where the monitor's knowledge of utilisation starts. One ``min`` per instance, each a
        primary-key lookup."""
        account_id = self.ensure_account(account)
        i, m, h = t.instances.c, t.metric_samples.c, t.metric_hourly.c
        raw = select(func.min(m.ts)).where(m.instance_key == i.key).scalar_subquery()
        hourly = select(func.min(h.ts)).where(h.instance_key == i.key).scalar_subquery()
        with self.engine.connect() as conn:
            rows = conn.execute(select(raw, hourly).where(i.account_id == account_id)).all()
        firsts = [ts for pair in rows for ts in pair if ts is not None]
        return from_epoch(min(firsts)) if firsts else None

    def bulk_insert_metrics(self, rows: Iterable[MetricRow], batch: int = 50_000) -> int:
        """Insert many minute rows fast, for benchmarks and fixtures: one compiled statement
        run through the driver's ``executemany``, no read-back and no merge (a row whose
        (instance, minute) exists is skipped). Call :meth:`rollup` afterwards so long windows
        can use the hourly table (hours already below the rollup watermark are re-rolled here).
        Returns the number of rows sent."""
        cols = ("instance_key", "ts", *RAW_COLS)
        total = 0
        with self.engine.begin() as conn:
            stmt = _insert_ignore(conn, t.metric_samples, ["instance_key", "ts"])
            compiled = stmt.compile(dialect=conn.dialect, column_keys=list(cols))
            order = compiled.positiontup if compiled.positional else None
            buffer: list[Any] = []
            keys: set[int] = set()
            oldest = 2**62

            def flush() -> None:
                if buffer:
                    conn.exec_driver_sql(compiled.string, buffer)
                    buffer.clear()

            for r in rows:
                minute = int(r.ts) - int(r.ts) % MINUTE
                values: dict[str, Any] = {
                    "instance_key": r.instance_key,
                    "ts": minute,
                    "gpu_util": None if r.gpu_util is None else round(r.gpu_util * 10),
                    "gpu_mem": None if r.gpu_mem is None else round(r.gpu_mem * 10),
                    "cpu": None if r.cpu is None else round(r.cpu * 10),
                    "mem": None if r.mem is None else round(r.mem * 10),
                    "disk": None if r.disk is None else round(r.disk * 10),
                    "gpu_utils": pack_gpus(r.gpu_utils),
                    "gpu_mems": pack_gpus(r.gpu_mems),
                }
                buffer.append(tuple(values[k] for k in order) if order else values)
                total += 1
                keys.add(r.instance_key)
                oldest = min(oldest, minute)
                if len(buffer) >= batch:
                    flush()
            flush()
            watermark = self._watermark(conn)
            if watermark is not None and oldest < watermark:  # history below the rollups
                self._rollup_range(conn, floor_to(oldest, HOUR), watermark, sorted(keys))
        return total

    def bulk_load_samples(self, rows: Iterable[Sequence[Any]]) -> int:
        """:meth:`bulk_insert_metrics` for rows already in the stored form, the fastest load
        (benchmarks, fixtures of millions of rows): tuples ``(instance_key, ts, gpu_util,
        gpu_mem, cpu, mem, disk, gpu_utils, gpu_mems)`` with ``ts`` minute-aligned, values in
        integer tenths of a percent and per-GPU vectors packed (:func:`pack_gpus`).

        The rows stream from the iterator straight into the driver's ``executemany`` in one
        transaction (on SQLite with ``synchronous=OFF`` meanwhile: a crash loses the load, not
        the database). Existing (instance, minute) rows are kept. Hours below the rollup
        watermark are re-rolled, as in :meth:`bulk_insert_metrics`. Returns rows sent."""
        cols = ["instance_key", "ts", *RAW_COLS]
        seen: dict[int, int] = {}  # instance key -> oldest minute
        count = 0

        def tracked() -> Iterable[Sequence[Any]]:
            nonlocal count
            last_key = None
            for row in rows:
                key = row[0]
                if key != last_key:
                    last_key = key
                    if key not in seen or row[1] < seen[key]:
                        seen[key] = row[1]
                elif row[1] < seen[key]:
                    seen[key] = row[1]
                count += 1
                yield row

        sqlite = self.engine.dialect.name == "sqlite"
        with self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            if sqlite:  # only outside a transaction
                raw.execute("PRAGMA synchronous=OFF")  # type: ignore[union-attr]
            try:
                with conn.begin():
                    self._load_samples(conn, raw, cols, tracked(), seen)
            finally:
                if sqlite:
                    raw.execute("PRAGMA synchronous=NORMAL")  # type: ignore[union-attr]
        return count

    def _load_samples(
        self,
        conn: Connection,
        raw: Any,
        cols: list[str],
        rows: Iterable[Sequence[Any]],
        seen: dict[int, int],
    ) -> None:
        stmt = _insert_ignore(conn, t.metric_samples, ["instance_key", "ts"])
        compiled = stmt.compile(dialect=conn.dialect, column_keys=cols)
        if compiled.positional and list(compiled.positiontup or []) != cols:
            order = [cols.index(k) for k in compiled.positiontup or []]
            source: Iterable[Sequence[Any]] = (tuple(r[i] for i in order) for r in rows)
        else:
            source = rows
        cursor = raw.cursor()
        try:
            if compiled.positional:
                cursor.executemany(compiled.string, source)
            else:  # named parameters (e.g. psycopg): dicts in batches
                batch: list[dict[str, Any]] = []
                for r in source:
                    batch.append(dict(zip(cols, r, strict=True)))
                    if len(batch) >= 50_000:
                        cursor.executemany(compiled.string, batch)
                        batch.clear()
                if batch:
                    cursor.executemany(compiled.string, batch)
        finally:
            cursor.close()
        watermark = self._watermark(conn)
        if watermark is not None and seen and min(seen.values()) < watermark:
            oldest = floor_to(min(seen.values()), HOUR)
            self._rollup_range(conn, oldest, watermark, sorted(seen))

    def latest_metric_ts(self, account: str, instance_id: str) -> datetime | None:
        """Start of the newest stored minute of the instance (raw samples)."""
        account_id = self.ensure_account(account)
        m = t.metric_samples.c
        with self.engine.connect() as conn:
            key = self._instance_key(conn, account_id, instance_id)
            if key is None:
                return None
            ts = conn.execute(select(func.max(m.ts)).where(m.instance_key == key)).scalar_one()
        return None if ts is None else from_epoch(ts)

    def samples(
        self, account: str, instance_id: str, start: datetime, end: datetime
    ) -> list[MetricRow]:
        """Raw minute rows in ``[start, end)``, decoded to percents (for reports and tests)."""
        account_id = self.ensure_account(account)
        m = t.metric_samples.c
        with self.engine.connect() as conn:
            key = self._instance_key(conn, account_id, instance_id)
            if key is None:
                return []
            rows = conn.execute(
                select(t.metric_samples)
                .where(m.instance_key == key, m.ts >= to_epoch(start), m.ts < to_epoch(end))
                .order_by(m.ts)
            ).all()
        return [
            MetricRow(
                instance_key=r.instance_key,
                ts=r.ts,
                gpu_util=decode_pct(r.gpu_util),
                gpu_mem=decode_pct(r.gpu_mem),
                cpu=decode_pct(r.cpu),
                mem=decode_pct(r.mem),
                disk=decode_pct(r.disk),
                gpu_utils=tuple(unpack_gpus(r.gpu_utils)),
                gpu_mems=tuple(unpack_gpus(r.gpu_mems)),
            )
            for r in rows
        ]

    # -- rollups and retention --------------------------------------------------------------

    def _watermark(self, conn: Connection) -> int | None:
        value = self._meta(conn, WATERMARK)
        return None if value is None else int(value)

    def _rollup_range(
        self, conn: Connection, start: int, end: int, instance_keys: Sequence[int] | None = None
    ) -> int:
        """(Re)compute the rollups of the hours in ``[start, end)`` from the raw rows.

        Scalar aggregates are one ``INSERT ... SELECT ... GROUP BY`` in the database; the
        per-GPU vectors (packed bytes) are aggregated here and written with one
        ``executemany`` UPDATE.
        """
        m = t.metric_samples.c
        h = t.metric_hourly.c
        if instance_keys is None:  # by key, so that both tables are read by primary key
            instance_keys = list(conn.execute(select(t.instances.c.key)).scalars())
        if not instance_keys:
            return 0
        where = [m.instance_key.in_(list(instance_keys)), m.ts >= start, m.ts < end]
        h_where = [h.instance_key.in_(list(instance_keys)), h.ts >= start, h.ts < end]
        conn.execute(delete(t.metric_hourly).where(*h_where))
        hour = _hour_expr(m.ts)

        def avg(col: Any) -> Any:
            return func.round(func.avg(col))

        scalars = (
            select(
                m.instance_key,
                hour.label("ts"),
                func.count().label("n"),
                avg(m.gpu_util),
                func.max(m.gpu_util),
                func.min(m.gpu_util),
                func.count(m.gpu_util),
                avg(m.gpu_mem),
                func.max(m.gpu_mem),
                func.min(m.gpu_mem),
                func.count(m.gpu_mem),
                avg(m.cpu),
                avg(m.mem),
                avg(m.disk),
            )
            .where(*where)
            .group_by(m.instance_key, hour)
        )
        conn.execute(t.metric_hourly.insert().from_select(HOURLY_SCALARS, scalars))
        written = conn.execute(
            select(func.count()).select_from(t.metric_hourly).where(*h_where)
        ).scalar_one()
        blobs = _driver_stream(
            conn,
            select(m.instance_key, m.ts, m.gpu_utils, m.gpu_mems)
            .where(*where, (m.gpu_utils.is_not(None)) | (m.gpu_mems.is_not(None)))
            .order_by(m.instance_key, m.ts),
        )
        updates = []
        for (key, hour_ts), group in groupby(blobs, key=lambda r: (r[0], r[1] - r[1] % HOUR)):
            rows = list(group)
            util_avg, util_max = _gpu_vectors([r[2] for r in rows])
            mem_avg, _ = _gpu_vectors([r[3] for r in rows])
            updates.append({"k": key, "h": hour_ts, "ua": util_avg, "um": util_max, "ma": mem_avg})
        if updates:
            conn.execute(
                update(t.metric_hourly)
                .where(h.instance_key == bindparam("k"), h.ts == bindparam("h"))
                .values(
                    gpu_utils_avg=bindparam("ua"),
                    gpu_utils_max=bindparam("um"),
                    gpu_mems_avg=bindparam("ma"),
                ),
                updates,
            )
        return int(written)

    def rollup(self, now: datetime, chunk_hours: int = 6) -> int:
        """Roll up every completed hour not rolled up yet; returns rollup rows written.

        Works in chunks of ``chunk_hours`` (one transaction each, bounded memory) and jumps over
        stretches without raw samples.
        """
        limit = floor_to(to_epoch(now) - ROLLUP_DELAY_S, HOUR)
        written = 0
        m = t.metric_samples.c
        while True:
            with self.engine.begin() as conn:
                watermark = self._watermark(conn)
                keys = list(conn.execute(select(t.instances.c.key)).scalars())
                query = select(func.min(m.ts)).where(m.instance_key.in_(keys))
                if watermark is not None:
                    query = query.where(m.ts >= watermark)
                first = conn.execute(query).scalar_one() if keys else None
                if first is None or floor_to(first, HOUR) >= limit:
                    # nothing (more) to roll up: an existing watermark advances to the limit
                    if watermark is not None and watermark < limit:
                        self._set_meta(conn, WATERMARK, str(limit))
                    return written
                start = floor_to(first, HOUR)
                end = min(limit, start + chunk_hours * HOUR)
                written += self._rollup_range(conn, start, end, instance_keys=keys)
                self._set_meta(conn, WATERMARK, str(end))

    def enforce_retention(
        self,
        now: datetime,
        raw_days: float = 7,
        rollup_days: float = 365,
        hourly_bill_days: float = 45,
    ) -> dict[str, int]:
        """Roll up completed hours, then delete what is older than the windows. Idempotent.

        Raw samples older than ``raw_days`` (never above the rollup watermark, so nothing is
        deleted before it is rolled up); rollups, balance samples, daily/weekly/monthly bills,
        events and closed alerts/silences/notifications older than ``rollup_days``; hourly bills
        older than ``hourly_bill_days`` (rules look back 30 days at most); collector runs older
        than ``raw_days``. Returns counts per table.
        """
        now_ts = to_epoch(now)
        counts = {"rolled_up": self.rollup(now)}
        raw_cut = floor_to(int(now_ts - raw_days * DAY), HOUR)
        long_cut = int(now_ts - rollup_days * DAY)
        bill_cut = int(now_ts - hourly_bill_days * DAY)
        long_dt = from_epoch(long_cut)
        with self.engine.begin() as conn:
            watermark = self._watermark(conn)
            raw_cut = min(raw_cut, watermark) if watermark is not None else None  # type: ignore[assignment]

            def run(name: str, stmt: Any) -> None:
                counts[name] = conn.execute(stmt).rowcount or 0

            # by instance key, so that the deletes seek the primary key instead of a full scan
            keys = list(conn.execute(select(t.instances.c.key)).scalars())
            m, h = t.metric_samples.c, t.metric_hourly.c
            if raw_cut is not None:
                run(
                    "metric_samples",
                    delete(t.metric_samples).where(m.instance_key.in_(keys), m.ts < raw_cut),
                )
            else:
                counts["metric_samples"] = 0
            run(
                "metric_hourly",
                delete(t.metric_hourly).where(h.instance_key.in_(keys), h.ts < long_cut),
            )
            run(
                "balance_samples",
                delete(t.balance_samples).where(t.balance_samples.c.ts < long_cut),
            )
            u = t.usage_bills.c
            run(
                "usage_bills",
                delete(t.usage_bills).where(
                    or_(
                        and_(u.cycle_type == "Hour", u.start_ts < bill_cut),
                        u.start_ts < long_cut,
                    )
                ),
            )
            run(
                "fixed_term_bills",
                delete(t.fixed_term_bills).where(t.fixed_term_bills.c.start_ts < long_cut),
            )
            run("events", delete(t.events).where(t.events.c.ts < long_dt))
            run(
                "collector_runs",
                delete(t.collector_runs).where(
                    t.collector_runs.c.finished < from_epoch(int(now_ts - raw_days * DAY))
                ),
            )
            a = t.alerts.c
            run("alerts", delete(t.alerts).where(a.state == "resolved", a.resolved_at < long_dt))
            run("silences", delete(t.silences).where(t.silences.c.ends_at < long_dt))
            run(
                "notifications",
                delete(t.notifications).where(t.notifications.c.created_at < long_dt),
            )
        return counts

    # -- windows ----------------------------------------------------------------------------

    def _keys(
        self, conn: Connection, account_id: int, instance_ids: Sequence[str] | None
    ) -> dict[int, str]:
        """The metric tables' keys of the account's instances (all, or those named). An
        instance's key never changes: named ones come from the keys remembered, and only
        those not remembered yet are read."""
        c = t.instances.c
        query = select(c.key, c.instance_id).where(c.account_id == account_id)
        if instance_ids is None:
            found = {r.key: r.instance_id for r in conn.execute(query)}
        else:
            with self._lock:
                remembered = {
                    iid: self._instance_keys.get((account_id, iid)) for iid in instance_ids
                }
            unknown = [iid for iid, key in remembered.items() if key is None]
            found = {key: iid for iid, key in remembered.items() if key is not None}
            if not unknown:
                return found
            new = {
                r.key: r.instance_id for r in conn.execute(query.where(c.instance_id.in_(unknown)))
            }
            found.update(new)
            if not new:
                return found
        with self._lock:
            self._instance_keys.update({(account_id, iid): key for key, iid in found.items()})
        return found

    def _split(self, conn: Connection, start: int, end: int) -> tuple[int, int]:
        """``[h0, h1)``: the whole hours of the window that the rollups cover (maybe empty)."""
        watermark = self._watermark(conn)
        if watermark is None:
            return start, start
        h0 = -(-start // HOUR) * HOUR
        h1 = min(floor_to(end, HOUR), watermark)
        if h1 <= h0:
            return start, start
        return h0, h1

    def metric_window(
        self,
        account: str,
        instance_ids: Sequence[str] | None,
        series: str,
        start: datetime,
        end: datetime,
    ) -> dict[str, WindowAgg]:
        """Aggregate ``series`` over ``[start, end)`` per instance (only those with samples).

        Each sample covers one minute; ``covered_seconds`` = count x 60, capped at the window.
        For hours read from the rollups, ``max``/``min`` of cpu, mem and disk are those of the
        hourly averages (the rollups keep true extremes for gpu_util and gpu_mem only).
        """
        parts = self.metric_partials(account, instance_ids, series, start, end)
        return window_aggs(parts, start, end)

    def metric_partials(
        self,
        account: str,
        instance_ids: Sequence[str] | None,
        series: str,
        start: datetime,
        end: datetime,
    ) -> dict[str, Partial]:
        """:meth:`metric_window` before its reduction: per instance, the exact sums of
        ``[start, end)`` (:class:`Partial`). Partials of adjacent ranges merge
        (:func:`merge_partials`): a window that extends a shorter one with the same end reads
        only the minutes the shorter one did not (two idle rules, 30 and 45 minutes)."""
        if series not in SERIES:
            raise ValueError(f"unknown series {series!r}; expected one of {SERIES}")
        account_id = self.ensure_account(account)
        s, e = to_epoch(start), to_epoch(end)
        if e <= s:
            return {}
        m = t.metric_samples.c
        h = t.metric_hourly.c
        parts: dict[int, list[Partial]] = defaultdict(list)
        with self.engine.connect() as conn:
            keys = self._keys(conn, account_id, instance_ids)
            if not keys:
                return {}
            h0, h1 = self._split(conn, s, e)
            col = m[series]
            ts_if = case((col.is_not(None), m.ts))
            for lo, hi in _raw_ranges(s, e, h0, h1):
                raw = conn.execute(
                    select(
                        m.instance_key,
                        func.sum(col),
                        func.max(col),
                        func.min(col),
                        func.count(col),
                        func.min(ts_if),
                        func.max(ts_if),
                    )
                    .where(m.instance_key.in_(list(keys)), m.ts >= lo, m.ts < hi)
                    .group_by(m.instance_key)
                )
                for key, total, mx, mn, count, first, last in raw:
                    if count:
                        parts[key].append(Partial(float(total), mx, mn, count, first, last))
            if h1 > h0:
                avg_col = h[HOURLY_AVG[series]]
                mx_col, mn_col, n_col = (
                    (h[c] for c in HOURLY_EXTREMES[series])
                    if series in HOURLY_EXTREMES
                    else (avg_col, avg_col, h.n)
                )
                n_eff = case((avg_col.is_not(None), n_col), else_=0)
                ts_h = case((avg_col.is_not(None), h.ts))
                hourly = conn.execute(
                    select(
                        h.instance_key,
                        func.sum(avg_col * n_eff),
                        func.max(mx_col),
                        func.min(mn_col),
                        func.sum(n_eff),
                        func.min(ts_h),
                        func.max(ts_h),
                    )
                    .where(h.instance_key.in_(list(keys)), h.ts >= h0, h.ts < h1)
                    .group_by(h.instance_key)
                )
                for key, total, mx, mn, count, first, last in hourly:
                    if count:
                        parts[key].append(
                            Partial(float(total), mx, mn, int(count), first, last + HOUR - MINUTE)
                        )
        return {keys[key]: merge_partials(chunks) for key, chunks in parts.items()}

    def per_gpu_window(
        self,
        account: str,
        instance_ids: Sequence[str] | None,
        start: datetime,
        end: datetime,
        series: str = "gpu_util",
    ) -> dict[str, list[GpuAgg]]:
        """Per-GPU average and max of ``gpu_util`` (or the average of ``gpu_mem``) over the window.

        Per-GPU values are packed bytes, so they are decoded here rather than in SQL; the rows
        read are still bounded (minutes at the edges, hours in the middle).
        """
        if series not in ("gpu_util", "gpu_mem"):
            raise ValueError("per-GPU series are gpu_util and gpu_mem")
        account_id = self.ensure_account(account)
        s, e = to_epoch(start), to_epoch(end)
        m = t.metric_samples.c
        h = t.metric_hourly.c
        raw_col = m.gpu_utils if series == "gpu_util" else m.gpu_mems
        sums: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))
        maxes: dict[int, dict[int, float]] = defaultdict(dict)
        with self.engine.connect() as conn:
            keys = self._keys(conn, account_id, instance_ids)
            if not keys or e <= s:
                return {}
            h0, h1 = self._split(conn, s, e)
            raw_blobs: dict[int, list[bytes]] = defaultdict(list)
            for lo, hi in _raw_ranges(s, e, h0, h1):
                query = select(m.instance_key, raw_col).where(
                    m.instance_key.in_(list(keys)), m.ts >= lo, m.ts < hi, raw_col.is_not(None)
                )
                # thousands of rows per instance-hour: read without per-row result processing
                rows = _driver_rows(conn, query.order_by(m.instance_key, m.ts))
                for key, group in groupby(rows, key=operator.itemgetter(0)):
                    raw_blobs[key] += [r[1] for r in group]
            for key, blobs in raw_blobs.items():
                if blobs and type(blobs[0]) is not bytes:  # e.g. memoryview from some drivers
                    raw_blobs[key] = [bytes(b) for b in blobs]
            for key, blobs in raw_blobs.items():
                _add_columns(blobs, sums[key], maxes[key])
            if h1 > h0:
                avg_col = h.gpu_utils_avg if series == "gpu_util" else h.gpu_mems_avg
                max_col = h.gpu_utils_max if series == "gpu_util" else h.gpu_mems_avg
                hours: dict[int, list[tuple[int, bytes, bytes]]] = defaultdict(list)
                for key, n, avg_blob, max_blob in conn.execute(
                    select(h.instance_key, h.n, avg_col, max_col).where(
                        h.instance_key.in_(list(keys)), h.ts >= h0, h.ts < h1, avg_col.is_not(None)
                    )
                ):
                    hours[key].append((n, bytes(avg_blob), bytes(max_blob or avg_blob)))
                for key, rows in hours.items():
                    _add_hourly_columns(rows, sums[key], maxes[key])
        out: dict[str, list[GpuAgg]] = {}
        for key, gpus in sums.items():
            out[keys[key]] = [
                GpuAgg(
                    index=i,
                    avg=gpus[i][0] / gpus[i][1] if gpus[i][1] else None,
                    max=maxes[key].get(i),
                    count=int(gpus[i][1]),
                )
                for i in range(max(gpus) + 1)
            ]
        return out

    def gpu_minutes(
        self, account: str, instance_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, list[tuple[datetime, float | None]]]:
        """Per instance, its minutes in ``[start, end)`` newest first, each with the highest
        utilisation of any of its GPUs that minute (the across-GPU series when no per-GPU
        sample was kept; None when neither was): what the start of an idle stretch is found
        from. Raw minutes only (the rollups lose the per-minute order)."""
        account_id = self.ensure_account(account)
        m = t.metric_samples.c
        out: dict[str, list[tuple[datetime, float | None]]] = {}
        with self.engine.connect() as conn:
            keys = self._keys(conn, account_id, list(instance_ids))
            if not keys:
                return out
            query = (
                select(m.instance_key, m.ts, m.gpu_util, m.gpu_utils)
                .where(
                    m.instance_key.in_(list(keys)),
                    m.ts >= to_epoch(start),
                    m.ts < to_epoch(end),
                )
                .order_by(m.instance_key, m.ts.desc())
            )
            # thousands of rows (a few minutes of each quiet instance): driver rows, the
            # common case (every GPU's byte present) decided in C, and each minute's time made
            # once (the instances share their minutes)
            stamps: dict[int, datetime] = {}
            for key, ts, avg, per_gpu in _driver_rows(conn, query):
                if per_gpu and _MISSING not in per_gpu:
                    top: float | None = float(max(per_gpu))
                else:
                    values = [b for b in (per_gpu or b"") if b != GPU_MISSING]
                    if values:
                        top = float(max(values))
                    else:
                        top = None if avg is None else decode_pct(avg)
                stamp = stamps.get(ts)
                if stamp is None:
                    stamp = stamps[ts] = from_epoch(ts)
                out.setdefault(keys[key], []).append((stamp, top))
        return out

    def idle_minute_counts(
        self,
        account: str,
        instance_ids: Sequence[str],
        start: datetime,
        end: datetime,
        threshold: float,
    ) -> dict[str, int]:
        """Per instance, how many of its sampled minutes in ``[start, end)`` had every GPU
        under ``threshold`` % (the busiest GPU's byte, else the across-GPU figure: the test of
        :meth:`gpu_minutes`' peaks). The hours the rollups hold are decided whole when their
        figures settle it (the busiest GPU under ``threshold`` all hour: each of its sampled
        minutes; the across-GPU figure never under it: none), so only the hours with both kinds
        of minutes are read minute by minute: a week of a thousand instances is a few
        hundred thousand hourly rows, not ten million minutes. An hour whose minutes are gone
        (past the raw retention) and cannot be settled by its figures counts nothing (an
        under-count, never an over-count)."""
        account_id = self.ensure_account(account)
        m, h = t.metric_samples.c, t.metric_hourly.c
        s, e = to_epoch(start), to_epoch(end)
        counts: dict[int, int] = defaultdict(int)

        def idle(top: int | None, per_gpu: bytes | None) -> bool:
            if per_gpu and GPU_MISSING not in per_gpu:  # the common case, at C speed
                return max(per_gpu) < threshold
            values = [b for b in (per_gpu or b"") if b != GPU_MISSING]
            peak = float(max(values)) if values else decode_pct(top)
            return peak is not None and 0 <= peak < threshold

        with self.engine.connect() as conn:
            keys = self._keys(conn, account_id, list(instance_ids))
            if not keys:
                return {}
            h0, h1 = self._split(conn, s, e)
            mixed: dict[int, list[int]] = defaultdict(list)
            if h1 > h0:
                hours = conn.execute(
                    select(
                        h.instance_key, h.ts, h.n, h.gpu_util_max, h.gpu_utils_max,
                        h.gpu_util_min, h.gpu_util_n,
                    ).where(h.instance_key.in_(list(keys)), h.ts >= h0, h.ts < h1)
                )  # fmt: skip
                for key, ts, n, top, per_gpu, low, sampled in hours:
                    if not n or sampled != n:
                        mixed[key].append(ts)  # minutes without a figure: look at each
                    elif idle(top, per_gpu):
                        counts[key] += int(n)
                    elif low is None or low < threshold * 10:
                        mixed[key].append(ts)
            minutes = select(m.instance_key, m.gpu_util, m.gpu_utils).where(
                m.instance_key.in_(list(keys))
            )
            reads = [minutes.where(m.ts >= lo, m.ts < hi) for lo, hi in _raw_ranges(s, e, h0, h1)]
            in_hours = select(m.instance_key, m.gpu_util, m.gpu_utils).where(
                m.instance_key == bindparam("key"),
                m.ts >= bindparam("lo"),
                m.ts < bindparam("hi"),
                (m.ts - m.ts % HOUR).in_(bindparam("hours", expanding=True)),
            )
            for key, stamps in mixed.items():  # one range scan of its key per instance
                stamps.sort()
                for n in range(0, len(stamps), 500):
                    part = stamps[n : n + 500]
                    reads.append(
                        in_hours.params(key=key, lo=part[0], hi=part[-1] + HOUR, hours=part)
                    )
            for read in reads:
                for key, top, per_gpu in conn.execute(read):
                    if idle(top, per_gpu):
                        counts[key] += 1
        return {keys[key]: n for key, n in counts.items()}

    def rollup_watermark(self) -> datetime | None:
        """The end of the hours the rollups hold (raw minutes after it are not rolled up)."""
        with self.engine.connect() as conn:
            mark = self._watermark(conn)
        return None if mark is None else from_epoch(mark)

    def idle_hours(
        self,
        account: str,
        instance_ids: Sequence[str],
        start: datetime,
        end: datetime,
        threshold: float,
        full_minutes: int,
    ) -> dict[str, tuple[datetime | None, datetime | None]]:
        """Per instance, the unbroken run of rolled-up hours reaching ``end`` in which every
        GPU stayed under ``threshold`` % and at least ``full_minutes`` minutes were sampled:
        ``(since, broken_at)``, the start of its oldest hour (None: the hour before ``end`` is
        not such an hour) and the start of the hour that ended it (None: the run reached
        ``start``, or an hour with no samples at all ended it). In two small queries: the hours
        that could end a run (busy by the across-GPU maximum, partly sampled, or several GPUs
        to look at one by one), then the count of hours after each run's end, so a stretch
        idle for a week costs a row or two per instance, not 168."""
        account_id = self.ensure_account(account)
        h = t.metric_hourly.c
        s, e = to_epoch(start), to_epoch(end)
        out: dict[str, tuple[datetime | None, datetime | None]] = {}
        with self.engine.connect() as conn:
            keys = self._keys(conn, account_id, list(instance_ids))
            if not keys:
                return out
            in_range = (h.instance_key.in_(list(keys)), h.ts >= s, h.ts < e)
            maybe = or_(
                h.gpu_util_max >= threshold * 10,
                h.n < full_minutes,
                func.length(h.gpu_utils_max) > 1,
            )
            broken: dict[int, int] = {}
            rows = conn.execute(
                select(h.instance_key, h.ts, h.gpu_util_max, h.gpu_utils_max, h.n).where(
                    *in_range, maybe
                )
            )
            for key, ts, top, per_gpu, n in rows:
                values = [b for b in (per_gpu or b"") if b != GPU_MISSING]
                peak = float(max(values)) if values else decode_pct(top)
                if peak is None or peak >= threshold or (n or 0) < full_minutes:
                    broken[key] = max(broken.get(key, ts), ts)
            # each instance's hours after its break: a join on (key, break) pairs, one range
            # scan of the primary key per instance. The pairs are integers written into the
            # statement: as an OR of hundreds of terms, or as hundreds of bound parameters,
            # building the statement cost more than running it
            pairs = ", ".join(f"({int(key)}, {int(broken.get(key, s - 1))})" for key in keys)
            counts = conn.exec_driver_sql(
                f"WITH since (k, after_ts) AS (VALUES {pairs}) "
                "SELECT h.instance_key, count(*), min(h.ts) FROM metric_hourly AS h "
                "JOIN since ON h.instance_key = since.k AND h.ts > since.after_ts "
                f"WHERE h.ts >= {int(s)} AND h.ts < {int(e)} GROUP BY h.instance_key"
            )
            runs = {key: (int(n), int(first)) for key, n, first in counts}
            for key, iid in keys.items():
                stop = broken.get(key)
                n, first = runs.get(key, (0, e))
                if n == 0:  # nothing idle after the break: the break (if last) or a gap
                    last = None if stop is None or stop != e - HOUR else from_epoch(stop)
                    out[iid] = (None, last)
                elif n == (e - first) // HOUR:  # consecutive from ``first`` to ``end``
                    begin = s if stop is None else stop + HOUR
                    ended = None if stop is None or first != begin else from_epoch(stop)
                    out[iid] = (from_epoch(first), ended)
                else:  # hours missing inside the run
                    out[iid] = self._run_end(conn, key, s if stop is None else stop + HOUR, e)
        return out

    def _run_end(
        self, conn: Connection, key: int, begin: int, end: int
    ) -> tuple[datetime | None, datetime | None]:
        """The run of consecutive rolled-up hours reaching ``end`` when some are missing
        (rare: the instance did not run, or the monitor did not watch): read their starts."""
        h = t.metric_hourly.c
        stamps = [
            ts
            for (ts,) in conn.execute(
                select(h.ts)
                .where(h.instance_key == key, h.ts >= begin, h.ts < end)
                .order_by(h.ts.desc())
            )
        ]
        since, expect = None, end - HOUR
        for ts in stamps:
            if ts != expect:
                break
            since, expect = ts, ts - HOUR
        return (None if since is None else from_epoch(since), None)


def _raw_ranges(s: int, e: int, h0: int, h1: int) -> list[tuple[int, int]]:
    """The parts of ``[s, e)`` read from the raw table: all of it, or the edges around the
    rollup hours ``[h0, h1)``. Separate ranges (not one OR) keep primary-key range scans."""
    if h1 <= h0:
        return [(s, e)]
    return [(lo, hi) for lo, hi in ((s, h0), (h1, e)) if hi > lo]


def _driver_result(conn: Connection, query: Any) -> Any:
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    if compiled.positional:
        args: Any = tuple(params[name] for name in compiled.positiontup or [])
    else:
        args = params
    return conn.exec_driver_sql(compiled.string, args)


def _driver_rows(conn: Connection, query: Any) -> list[Any]:
    """Rows of ``query`` as the driver returns them, without SQLAlchemy's per-row result
    processing (for columns that need none: integers, bytes). Still sent through the
    connection, so execution events see it."""
    result = _driver_result(conn, query)
    try:
        return list(result.cursor.fetchall()) if result.cursor is not None else []
    finally:
        result.close()


def _driver_stream(conn: Connection, query: Any, size: int = 10_000) -> Iterator[Any]:
    """:func:`_driver_rows` fetched ``size`` rows at a time (bounded memory)."""
    result = _driver_result(conn, query)
    try:
        while result.cursor is not None:
            part = result.cursor.fetchmany(size)
            if not part:
                break
            yield from part
    finally:
        result.close()


def _add_columns(blobs: list[bytes], sums: dict[int, list[float]], maxes: dict[int, float]) -> None:
    """Add per-GPU packed vectors to running sums/counts and maxima (missing bytes skipped)."""
    width = max(map(len, blobs))
    missing = bytes([GPU_MISSING])
    joined = b"".join(blobs)
    if min(map(len, blobs)) == width and missing not in joined:  # common case, in C
        for i in range(width):
            column = joined[i::width]  # the i-th byte of every vector
            acc = sums[i]
            acc[0] += sum(column)
            acc[1] += len(column)
            maxes[i] = max(maxes.get(i, 0.0), float(max(column)))
        return
    for blob in blobs:
        for i, b in enumerate(blob):
            if b != GPU_MISSING:
                acc = sums[i]
                acc[0] += b
                acc[1] += 1
                maxes[i] = max(maxes.get(i, 0.0), float(b))


def _add_hourly_columns(
    rows: list[tuple[int, bytes, bytes]], sums: dict[int, list[float]], maxes: dict[int, float]
) -> None:
    """Like :func:`_add_columns` for hourly rows ``(n, avg vector, max vector)``, weighting each
    hour's averages by its number of samples."""
    ns = [r[0] for r in rows]
    avgs = [r[1] for r in rows]
    width = max(len(b) for b in avgs)
    missing = bytes([GPU_MISSING])
    if all(len(b) == width and missing not in b for b in avgs):  # common case, in C
        total_n = sum(ns)
        for i, column in enumerate(zip(*avgs, strict=True)):
            acc = sums[i]
            acc[0] += sum(map(operator.mul, column, ns))
            acc[1] += total_n
    else:
        for n, blob, _ in rows:
            for i, b in enumerate(blob):
                if b != GPU_MISSING:
                    acc = sums[i]
                    acc[0] += b * n
                    acc[1] += n
    tops = [r[2] for r in rows]
    if all(len(b) == width and missing not in b for b in tops):
        for i, column in enumerate(zip(*tops, strict=True)):
            maxes[i] = max(maxes.get(i, 0.0), float(max(column)))
        return
    for blob in tops:
        for i, b in enumerate(blob):
            if b != GPU_MISSING and b > maxes.get(i, -1.0):
                maxes[i] = float(b)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bytes | memoryview) or isinstance(b, bytes | memoryview):
        return (bytes(a) if a is not None else None) == (bytes(b) if b is not None else None)
    return a == b


class Partial(NamedTuple):
    """Exact sums of one series over a range for one instance (encoded units: tenths of a
    percent): what a window's aggregate is reduced from, and what adjacent ranges merge by."""

    total: float
    max: int | None
    min: int | None
    n: int
    first: int
    last: int


def merge_partials(parts: Iterable[Partial]) -> Partial:
    """One :class:`Partial` of the union of disjoint ranges."""
    chunks = list(parts)
    if len(chunks) == 1:  # the common case: a window read in one range
        return chunks[0]
    maxes = [c.max for c in chunks if c.max is not None]
    mins = [c.min for c in chunks if c.min is not None]
    return Partial(
        sum(c.total for c in chunks),
        max(maxes) if maxes else None,
        min(mins) if mins else None,
        sum(c.n for c in chunks),
        min(c.first for c in chunks),
        max(c.last for c in chunks),
    )


class Reduced(NamedTuple):
    """A :class:`Partial` reduced to its window's figures (percent; ``covered_seconds`` =
    samples x 60 s, capped at the window's length)."""

    avg: float
    max: float | None
    min: float | None
    samples: int
    covered_seconds: int


def reduce_partial(p: Partial, span: int) -> Reduced:
    """The figures of a window of ``span`` seconds from its exact sums (``p.n`` > 0)."""
    return Reduced(
        p.total / p.n / 10.0,
        decode_pct(p.max) if p.max is not None else None,
        decode_pct(p.min) if p.min is not None else None,
        p.n,
        min(p.n * MINUTE, span),
    )


def window_aggs(
    parts: Mapping[str, Partial], start: datetime, end: datetime
) -> dict[str, WindowAgg]:
    """Each instance's :class:`WindowAgg` over ``[start, end)`` from its partial."""
    span = to_epoch(end) - to_epoch(start)
    return {
        iid: WindowAgg(
            *reduce_partial(p, span), first_ts=from_epoch(p.first), last_ts=from_epoch(p.last)
        )
        for iid, p in parts.items()
        if p.n
    }
