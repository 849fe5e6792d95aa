"""Where wire becomes the store's records: the API's payloads (``monitor.novita.models``) turned
into what the store's write methods take.

The store never imports the wire models (a test walks its imports): each collector converts
here. Listings that run to thousands of items per cycle (instances, bills, metric minutes)
become plain mappings keyed by the store's field names and are written with Core statements;
a balance becomes a :class:`~monitor.store.models.BalanceSample` (one per cycle).

Of an instance's environment only the keys the monitor reads are kept (``env_keys``, see
:mod:`monitor.collect.envs`): the other values never reach the store. Listing items that
arrived but did not parse become :class:`~monitor.store.models.DataProblem` records.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from monitor.collect.envs import DEFAULT_ENV_KEYS, keep_envs
from monitor.novita.client import BadItem
from monitor.novita.models import (
    AsyncTask,
    Balance,
    FixedTermBill,
    Instance,
    InstanceMetrics,
    MetricPoint,
    Product,
    TrainingTask,
    UsageBill,
)
from monitor.store.metrics import MINUTE, MinuteRows
from monitor.store.models import BalanceSample, DataProblem
from monitor.store.records import SERIES
from monitor.store.types import pack_gpus, to_epoch


def instance_row(inst: Instance, env_keys: frozenset[str] = DEFAULT_ENV_KEYS) -> dict[str, Any]:
    """One listed instance: ``instance_id`` and the store's ``LISTED_FIELDS``; of its
    environment, only ``env_keys``."""
    return {
        "instance_id": inst.id,
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
        "envs": keep_envs(inst.env, env_keys),
        "auto_renew": inst.auto_renew,
        "auto_renew_month": inst.auto_renew_month,
        "keep_data_day": inst.keep_data_day,
    }


def instance_rows(
    instances: Iterable[Instance], env_keys: frozenset[str] = DEFAULT_ENV_KEYS
) -> list[dict[str, Any]]:
    return [instance_row(inst, env_keys) for inst in instances]


#: the data problem kind of a listing item that arrived but did not parse
UNPARSABLE_ITEM = "unparsable_item"


def listing_problems(bad: Iterable[BadItem]) -> list[DataProblem]:
    """Listing items that did not parse, as data problems (``resource_id`` ``""`` when the
    item's id could not be read)."""
    return [
        DataProblem(kind=UNPARSABLE_ITEM, resource_id=b.resource_id or "", field=b.field, raw=b.raw)
        for b in bad
    ]


def _paid(bill: UsageBill | FixedTermBill) -> Any:
    """What was paid: ``payAmount``, else the display figure (the API sends one or the other)."""
    return bill.pay_amount if bill.pay_amount is not None else bill.pay_amount_display


def usage_bill_rows(
    bills: Iterable[UsageBill], product_category: str | None = None
) -> list[dict[str, Any]]:
    """Pay-as-you-go bills as the store keeps them (``USAGE_BILL_FIELDS``). ``category`` is the
    request's ``productCategory`` when given, else the bill's own; bills without a start time
    have no key and are dropped."""
    return [
        {
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
            "pay_amount": _paid(bill),
            "unit_price": bill.unit_price_usd,
        }
        for bill in bills
        if bill.start_time is not None
    ]


def fixed_term_bill_rows(bills: Iterable[FixedTermBill]) -> list[dict[str, Any]]:
    """Subscription bills as the store keeps them (``FIXED_TERM_BILL_FIELDS``); ``base_price``
    in USD (divided by ``pricePrecision`` where sent)."""
    return [
        {
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
            "base_price": bill.base_price_usd,
            "amount": bill.amount,
            "voucher_amount": bill.voucher_amount,
            "pay_amount": _paid(bill),
            "create_ts": to_epoch(bill.create_time) if bill.create_time else None,
        }
        for bill in bills
        if bill.start_time is not None
    ]


def balance_sample(balance: Balance, now: datetime) -> BalanceSample:
    return BalanceSample(
        ts=now,
        available_usd=balance.available_usd,
        cash_usd=balance.cash_usd,
        credit_limit_usd=balance.credit_limit_usd,
        pending_charges_usd=balance.pending_charges_usd,
        outstanding_invoices_usd=balance.outstanding_invoices_usd,
        source=balance.source or "",
    )


def product_rows(products: Iterable[Product]) -> list[dict[str, Any]]:
    """Products' prices as the store keeps them (``PRODUCT_FIELDS``); monthly prices by number
    of months (entries without a month or a price dropped)."""
    return [
        {
            "product_id": p.id,
            "name": p.name or "",
            "price_usd_per_hour": p.price_usd_per_hour,
            "spot_price_usd_per_hour": p.spot_price_usd_per_hour,
            "monthly_prices_usd": {
                mp.month: mp.price_usd
                for mp in p.monthly_price
                if mp.month is not None and mp.price_usd is not None
            },
            "available_deploy": p.available_deploy,
        }
        for p in products
    ]


def training_task_rows(tasks: Iterable[TrainingTask]) -> list[dict[str, Any]]:
    """Training tasks as the store keeps them (``TRAINING_TASK_FIELDS``)."""
    return [
        {
            "task_id": task.task_id,
            "name": task.task_name or "",
            "task_type": task.task_type,
            "status": task.task_status,
            "terminal": task.terminal,
            "created_at": task.created_at,
            "models": [m.model_dump() for m in task.models],
        }
        for task in tasks
    ]


def async_task_row(task: AsyncTask) -> dict[str, Any]:
    """A poll of a watched task as the store keeps it (``ASYNC_TASK_FIELDS``)."""
    return {
        "task_id": task.task_id,
        "status": task.status,
        "terminal": task.terminal,
        "reason": task.reason,
        "task_type": task.task_type,
        "progress_percent": task.progress_percent,
    }


# -- metrics ----------------------------------------------------------------------------------


def _gpu_sort_key(gpu_id: str) -> tuple[int, Any]:
    return (0, int(gpu_id)) if gpu_id.isdigit() else (1, gpu_id)


def _per_minute(points: Iterable[MetricPoint], scale: float = 1.0) -> dict[int, float]:
    """A series as minute -> value; several points in one minute are averaged."""
    out: dict[int, float] = {}
    extra: dict[int, list[float]] | None = None
    for ts, value in points:
        minute = ts - ts % MINUTE
        if minute in out:
            if extra is None:
                extra = {}
            extra.setdefault(minute, [out[minute]]).append(value * scale)
        else:
            out[minute] = value * scale
    if extra:
        for minute, values in extra.items():
            out[minute] = sum(values) / len(values)
    return out


def minute_rows(metrics: InstanceMetrics, cpu_num: int | None) -> MinuteRows:
    """The series of one metrics response merged into one stored row per minute (what
    ``Store.upsert_metrics`` takes).

    Several points of a series in the same minute are averaged; CPU is divided by ``cpu_num``
    (the API sums it over cores: wire-format §6, unconfirmed); per-GPU series are ordered by
    GPU id (numerically when numeric). Values are in the stored form (tenths, packed bytes),
    computed here once rather than decoded and encoded again in the store.
    """
    scalars = {
        "gpu_util": _per_minute(metrics.gpu_utilization.avg),
        "gpu_mem": _per_minute(metrics.gpu_mem_utilization.avg),
        "cpu": _per_minute(
            metrics.cpu_utilization, 1.0 / cpu_num if cpu_num and cpu_num > 1 else 1.0
        ),
        "mem": _per_minute(metrics.mem_utilization),
        "disk": _per_minute(metrics.root_disk_utilization),
    }
    vectors = {
        name: [
            _per_minute(gpu.items)
            for gpu in sorted(gpu_series.gpu_ids, key=lambda g: _gpu_sort_key(g.gpu_id))
        ]
        for name, gpu_series in (
            ("gpu_utils", metrics.gpu_utilization),
            ("gpu_mems", metrics.gpu_mem_utilization),
        )
    }
    minutes: set[int] = set()
    for values in scalars.values():
        minutes.update(values)
    for per_gpu in vectors.values():
        for values in per_gpu:
            minutes.update(values)
    out: MinuteRows = {}
    for minute in minutes:
        row: dict[str, Any] = {}
        for series in SERIES:
            value = scalars[series].get(minute)
            row[series] = None if value is None else round(value * 10)
        for name, per_gpu in vectors.items():
            vec = [values.get(minute) for values in per_gpu]
            row[name] = pack_gpus(vec) if any(v is not None for v in vec) else None
        out[minute] = row
    return out
