"""Raw JSON bodies in the Novita wire format, built from ``shared/novita-api/wire-format.md``.

Deliberately independent of ``monitor.novita`` (the client's models): if the client and the
simulator shared a misunderstanding, tests of one against the other would prove nothing. Every
quirk is produced here on purpose; the list lives in :mod:`monitor.sim.app`'s docstring.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from monitor.sim import catalog, profiles
from monitor.sim.fleet import DAY, HOUR, USER_ID, FleetSim, SimError, SimInstance
from monitor.sim.quirks import Quirks

METRIC_LAG = 60  # seconds: no metric point newer than now - 60 (quirk ``metric-lag``)
DEFAULT_WINDOW = 60
DEFAULT_INTERVAL = 15
MAX_BILL_WINDOW = 31 * DAY

BILL_CYCLES = ("Hour", "Day", "Week", "Month")
USAGE_CATEGORIES = (
    "summary",
    "gpu",
    "llm",
    "serverless",
    "cloud_storage",
    "gen_api",
    "cloud_sandbox",
    "llm_dedicated_endpoint",
    "web_search",
    "bare_metal",
)
FIXED_CATEGORIES = (
    "summary",
    "gpu",
    "serverless",
    "cloud_storage",
    "local_storage",
    "image",
    "bare_metal",
)


def _s(value: int | None) -> str:
    """Unix seconds as a string, ``""`` for none (the API's null)."""
    return "" if value is None else str(int(value))


# ---------------------------------------------------------------------------------- instances


def instance_json(inst: SimInstance, detail: bool = False) -> dict[str, Any]:
    """One instance as the list (``detail=False``) or get endpoint returns it."""
    cl = catalog.cluster(inst.cluster_id)
    product = inst.product
    if inst.billing_mode == "monthly" and inst.end_time is not None:
        end_time = str(inst.end_time)
    else:
        end_time = inst.no_expiry  # "-1" or "0": both mean no expiry
    local_size = 50 * inst.gpu_num
    body: dict[str, Any] = {
        "id": inst.id,
        "name": inst.name,
        "clusterId": inst.cluster_id,
        "clusterName": cl.name,
        "status": inst.status,
        "imageUrl": inst.image_url,
        "imageAuthId": "",
        "command": "",
        "cpuNum": str(inst.cpu_num),
        "memory": str(inst.memory),
        "gpuNum": str(inst.gpu_num),
        "portMappings": [{"port": 8888, "type": "http"}, {"port": 22, "type": "tcp"}],
        "productId": inst.product_id,
        "productName": product.name,
        "rootfsSize": 60,
        "volumeMounts": [
            {
                "type": "local",
                # a string in the list response, an int in the get response (wire-format §4)
                "size": local_size if detail else str(local_size),
                "id": "",
                "mountPath": "/workspace",
            }
        ],
        "statusError": {"state": inst.status_error[0], "message": inst.status_error[1]},
        "envs": [
            {"key": "PYTHONUNBUFFERED", "value": "1"},
            *({"key": k, "value": v} for k, v in inst.envs.items()),
        ],
        "kind": "gpu",
        "billingMode": inst.billing_mode,
        "endTime": end_time,
        "spotStatus": "normal" if inst.billing_mode == "spot" else "",
        "spotReclaimTime": "0",
        "createdAt": _s(inst.created_at),
        "lastStartedAt": _s(inst.last_started_at),
        "lastStoppedAt": _s(inst.last_stopped_at),
        # read by the console, not in the OpenAPI docs (wire-format §7.4, §7.5)
        "autoRenew": inst.auto_renew,
        "autoRenewMonth": inst.auto_renew_month,
        "keepDataDay": inst.keep_data_day,
        # keys in no documentation: clients must ignore them
        "instanceGroupId": "",
        "maintainStatus": "normal",
    }
    if detail:
        body.update(
            {
                "entrypoint": "",
                "network": {"id": "", "ip": ""},
                "node": [{"maxRootfsSize": 6144}],
                "jobs": [],
                "connectComponentSSH": {
                    "sshCommand": f"ssh root@{inst.id}.sim.invalid -p 2222",
                    "password": "",
                    "isRunning": inst.status == "running",
                },
                "connectComponentJupyter": {
                    "port": 8888,
                    "address": f"https://{inst.id}-8888.sim.invalid",
                    "isRunning": inst.status == "running",
                },
                "freeStorageSize": 30,
            }
        )
    return body


def instances_page(
    sim: FleetSim,
    page_size: int,
    page_num: int,
    name: str = "",
    product_name: str = "",
    status: str = "",
) -> dict[str, Any]:
    """One page of instances. Quirk ``page-base=1`` (default): pages are 1-based and
    ``pageNum=0`` is read as page 1, so page 0 and page 1 are the same page: a client that starts
    at 0 must de-duplicate by id and stop at ``total`` or at an empty page (wire-format §1.5,
    open question 1). ``page-base=0``: page 0 is the first page.
    """
    items = sim.instances()
    if name:
        items = [i for i in items if name.lower() in i.name.lower()]
    if product_name:
        items = [i for i in items if product_name.lower() in i.product.name.lower()]
    if status:
        items = [i for i in items if i.status == status]
    chunk = _page(items, page_num, page_size, sim.quirks)
    return {"instances": [instance_json(i) for i in chunk], "total": len(items)}


def _page(items: list[Any], page_num: int, page_size: int, quirks: Quirks) -> list[Any]:
    """Page ``page_num`` of ``items``, counted from ``quirks.first_page`` (a 1-based server
    reads page 0 as page 1)."""
    if page_size <= 0:
        return []
    index = max(page_num, 1) - 1 if quirks.first_page == 1 else page_num
    return items[index * page_size : (index + 1) * page_size]


# ---------------------------------------------------------------------------------- metrics


def metric_window(
    now: int, start: int | None, end: int | None, interval: int | None
) -> tuple[int, int, int]:
    """Apply the documented silent defaults: bad or short windows become the last 60 s at 15 s.

    ``endTime`` later than now is clamped to now; a window shorter than 60 s, a missing or
    non-positive bound, or ``startTime > endTime - 60`` gives the default window. An interval
    below 15 s (or missing/invalid) becomes 15 s.
    """
    if interval is None or interval < DEFAULT_INTERVAL:
        interval = DEFAULT_INTERVAL
    if end is not None and end > now:
        end = now
    if start is None or end is None or start <= 0 or end <= 0 or start > end - DEFAULT_WINDOW:
        start, end = now - DEFAULT_WINDOW, now
    return start, end, interval


Point = dict[str, Any]


def stamp(t: int, form: str) -> str:
    """A point's ``timestamp`` in the form of quirk ``metric-ts``: Unix seconds (``s``),
    milliseconds (``ms``) or ISO 8601 UTC (``iso``), always a string."""
    if form == "ms":
        return str(t * 1000)
    if form == "iso":
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(t)


@lru_cache(maxsize=1 << 17)
def _sample(
    key: int,
    profile: str,
    gpu_num: int,
    idle_gpus: frozenset[int],
    cpu_num: int,
    t: int,
    ts_form: str = "s",
    cpu_summed: bool = True,
) -> tuple[tuple[Point, ...], tuple[Point, ...], Point, Point, Point, Point, Point]:
    """Every series' point at ``t`` for one instance: per-GPU utilization and memory, their
    averages, CPU (summed over cores, or per core: quirk ``cpu``), memory, disk.
    Deterministic, so cached: a collector re-reads the last minutes every cycle. The dicts are
    shared; never mutate them."""
    ts = stamp(t, ts_form)
    gpus: list[Point] = []
    vrams: list[Point] = []
    for g in range(gpu_num):
        idle = g in idle_gpus
        gpus.append({"timestamp": ts, "value": profiles.gpu_util(profile, key, g, t, idle)})
        vrams.append({"timestamp": ts, "value": profiles.gpu_mem_util(profile, key, g, t, idle)})
    g_avg = round(sum(p["value"] for p in gpus) / gpu_num, 2)
    v_avg = round(sum(p["value"] for p in vrams) / gpu_num, 2)
    # summed over cores: up to 100 x cpuNum (or the per-core average under cpu=per-core)
    per_core = profiles.cpu_per_core(profile, key, t)
    summed = round(per_core * cpu_num, 2) if cpu_summed else round(per_core, 2)
    return (
        tuple(gpus),
        tuple(vrams),
        {"timestamp": ts, "value": g_avg},
        {"timestamp": ts, "value": v_avg},
        {"timestamp": ts, "value": summed},
        {"timestamp": ts, "value": profiles.mem_util(profile, key, t)},
        {"timestamp": ts, "value": profiles.root_disk_util(key, t)},
    )


def metrics_json(sim: FleetSim, inst: SimInstance, start: int, end: int, interval: int) -> dict:
    """Monitor metrics for one instance; empty series unless it is running now."""
    now = sim.now_ts()
    cpu: list[Point] = []
    mem: list[Point] = []
    disk: list[Point] = []
    gpu_avg: list[Point] = []
    vram_avg: list[Point] = []
    per_gpu: list[list[Point]] = [[] for _ in range(inst.gpu_num)]
    per_vram: list[list[Point]] = [[] for _ in range(inst.gpu_num)]
    quirks = sim.quirks
    if inst.status == "running":
        key = sim.key(inst.id)
        last = min(end, now - quirks.lag_s)  # the ~1 minute lag
        t = -(-start // interval) * interval
        while t <= last:
            if inst.running_at(t, now) and not inst.metrics_missing_at(t):
                gpus, vrams, g_avg, v_avg, c, m, d = _sample(
                    key,
                    inst.profile_at(t),
                    inst.gpu_num,
                    inst.idle_gpus,
                    inst.cpu_num,
                    t,
                    quirks.metric_ts,
                    quirks.cpu == "summed",
                )
                for g in range(inst.gpu_num):
                    per_gpu[g].append(gpus[g])
                    per_vram[g].append(vrams[g])
                gpu_avg.append(g_avg)
                vram_avg.append(v_avg)
                cpu.append(c)
                mem.append(m)
                disk.append(d)
            t += interval
    running = inst.status == "running"
    return {
        "cpuUtilization": cpu,
        "memUtilization": mem,
        "rootDiskUtilization": disk,
        "gpuUtilization": {
            "avg": gpu_avg,
            "gpuIds": [{"gpuId": str(g), "items": per_gpu[g]} for g in range(inst.gpu_num)]
            if running
            else [],
        },
        "gpuMemUtilization": {
            "avg": vram_avg,
            "gpuIds": [{"gpuId": str(g), "items": per_vram[g]} for g in range(inst.gpu_num)]
            if running
            else [],
        },
    }


# ---------------------------------------------------------------------------------- balance


def balance_detail_json(sim: FleetSim) -> dict[str, Any]:
    available = sim.balance_10k()
    return {
        "availableBalance": str(available),
        "cashBalance": str(max(available, 0)),
        "creditLimit": "0",
        "pendingCharges": "0",
        "outstandingInvoices": str(max(-available, 0)),
        "currency": "USD",  # not documented
    }


def user_json(sim: FleetSim) -> dict[str, Any]:
    return {
        "credit_balance": sim.balance_10k(),  # an int here, unlike balance/detail
        "allow_features": ["upload_model"],
        "free_trial": {"gpu_instance": 0},
    }


# ---------------------------------------------------------------------------------- bills


def _period_start(cycle: str, t: int) -> int:
    d = datetime.fromtimestamp(t, UTC)
    if cycle == "Hour":
        return t - t % HOUR
    if cycle == "Day":
        return t - t % DAY
    if cycle == "Week":
        day = d.replace(hour=0, minute=0, second=0, microsecond=0)
        return int((day - timedelta(days=day.weekday())).timestamp())
    return int(d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp())


def _period_end(cycle: str, ps: int) -> int:
    if cycle == "Hour":
        return ps + HOUR
    if cycle == "Day":
        return ps + DAY
    if cycle == "Week":
        return ps + 7 * DAY
    d = datetime.fromtimestamp(ps, UTC)
    days = calendar.monthrange(d.year, d.month)[1]
    return ps + days * DAY


def periods(cycle: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Billing periods whose start lies in [start, end)."""
    ps = _period_start(cycle, start)
    if ps < start:
        ps = _period_end(cycle, ps)
    while ps < end:
        pe = _period_end(cycle, ps)
        yield ps, pe
        ps = pe


def bill_num(card_seconds: float, quirks: Quirks) -> str:
    """``billNum0`` ("number of cards x billing time", docs): card-seconds (quirk
    ``bill-time=seconds``, an integer) or card-hours (``hours``, four decimals)."""
    if quirks.bill_seconds:
        return str(round(card_seconds))
    return f"{card_seconds / HOUR:.4f}"


def precise_price(price_10k: float, quirks: Quirks) -> str:
    """A bill's unit price in 1/10000 USD times ``pricePrecision`` (quirk ``price-precision``),
    rounded to an integer as the wire sends it."""
    return str(round(price_10k * quirks.precision))


def _usage_bill(
    ps: int,
    pe: int,
    amount: int,
    card_seconds: float,
    unit_price_10k: float,
    quirks: Quirks,
    billing_method: int = 1,
    **fields: str,
) -> dict[str, Any]:
    """One usage bill. ``discountPrice0`` (and ``basePrice0``, no discount here) is the price
    of one card-hour whatever ``billNum0``'s unit, so ``amount`` = card-hours x unit price
    (within rounding) under every quirk: the bill's window and money give its card-hours
    without knowing ``billNum0``'s unit (issue 8 §2)."""
    price = precise_price(unit_price_10k, quirks)
    return {
        "userId": USER_ID,
        "startTime": str(ps),
        "endTime": str(pe - 1),
        "billingMethod": billing_method,
        "productName": fields.get("productName", ""),
        "category": fields.get("category", "gpu"),
        "ownerID": fields.get("ownerID", ""),
        "billNum0": bill_num(card_seconds, quirks),
        "billNum1": "0",
        "basePrice0": price,
        "basePrice1": "0",
        "discountPrice0": price,
        "discountPrice1": "0",
        "amount": str(amount),
        "voucherAmount": "0",
        "payAmount": str(amount),
        "payAmountDisplay": round(amount / 10000, 4),  # already USD
        "pricePrecision": quirks.precision,
        "productId": fields.get("productId", ""),
        # not documented for the OpenAPI (the console's Bill type has it): clients ignore it
        "amountDecimal": f"{amount / 10000:.4f}",
    }


def usage_bills(
    sim: FleetSim,
    cycle: str,
    category: str,
    start: int,
    end: int,
    owner_id: str = "",
    product_name: str = "",
) -> list[dict[str, Any]]:
    """Usage bills for completed hours, per instance (``gpu``) or per period (``summary``)."""
    if category not in ("gpu", "summary"):
        return []
    now = sim.now_ts()
    quirks = sim.quirks
    cutoff = now - now % HOUR  # bills exist for completed hours only
    window = [(ps, pe) for ps, pe in periods(cycle, start, min(end, cutoff)) if ps < cutoff]
    if not window:
        return []
    bills: list[dict[str, Any]] = []
    totals: dict[int, list[float]] = {}
    for inst in sim.all_instances():
        if owner_id and inst.id != owner_id:
            continue
        if product_name and product_name.lower() not in inst.product.name.lower():
            continue
        if inst.paygo_seconds(window[0][0], min(window[-1][1], cutoff), now) == 0:
            continue
        rate = inst.rate_10k_per_hour()
        # per card-hour: the listed price, or its share of the whole instance's price
        unit_price = rate / inst.gpu_num
        # pay-as-you-go 1, spot 4 (the console, wire-format §7.6)
        method = 4 if inst.billing_mode == "spot" else 1
        for ps, pe in window:
            seconds = inst.paygo_seconds(ps, min(pe, cutoff), now)
            if seconds <= 0:
                continue
            amount = round(rate * seconds / HOUR)
            card_seconds = inst.gpu_num * seconds
            if category == "summary":
                acc = totals.setdefault(ps, [0.0, 0.0])
                acc[0] += amount
                acc[1] += card_seconds
                continue
            bills.append(
                _usage_bill(
                    ps,
                    pe,
                    amount,
                    card_seconds,
                    unit_price,
                    quirks,
                    method,
                    productName=inst.product.name,
                    category="gpu",
                    ownerID=inst.id,
                    productId=inst.product_id,
                )
            )
    if category == "summary":
        for ps, pe in window:
            if ps in totals:
                total, cards = int(totals[ps][0]), totals[ps][1]
                bills.append(_usage_bill(ps, pe, total, cards, 0, quirks, category="summary"))
    return bills


def fixed_bills(
    sim: FleetSim, category: str, start: int, end: int, owner_id: str = "", product_name: str = ""
) -> list[dict[str, Any]]:
    """Fixed-term (subscription) bills created in [start, end]."""
    if category not in ("gpu", "summary"):
        return []
    out: list[dict[str, Any]] = []
    quirks = sim.quirks
    for c in sim.fixed_charges():
        if not start <= c.time <= end:
            continue
        if owner_id and c.instance_id != owner_id:
            continue
        product = catalog.gpu_product(c.product_id)
        if product_name and product_name.lower() not in product.name.lower():
            continue
        out.append(
            {
                "userId": USER_ID,
                "memberId": "",
                "startTime": str(c.start),
                "endTime": str(c.end - 1),
                "productName": product.name,
                "productCategory": "gpu",
                "ownerID": c.instance_id,
                "tradeMode": "monthly",
                "tradeType": c.trade_type,
                # one month of one GPU, times pricePrecision (quirk price-precision)
                "basePrice": precise_price(c.base_price_10k, quirks),
                "billNum": str(c.months),
                "amount": str(c.amount_10k),
                "voucherAmount": "0",
                "payAmount": str(c.amount_10k),
                "payAmountDisplay": round(c.amount_10k / 10000, 4),
                "pricePrecision": quirks.precision,
                "createTime": str(c.time),
                "cycle": datetime.fromtimestamp(c.start, UTC).strftime("%Y-%m"),
                "storageDays": "0",
                "productId": c.product_id,
                "billingMethod": 2,
            }
        )
    return out


# ---------------------------------------------------------------------------------- catalog


def _product_json(
    product: catalog.GpuProduct, cluster_id: str | None, quirks: Quirks
) -> dict[str, Any]:
    """One product. No ``pricePrecision`` here under any quirk: no source shows it on products
    (the console's division of ``monthlyPrice`` by it reads its internal API, wire-format
    §7.3); the client divides by it if it ever appears."""
    if cluster_id is None:
        ref = min(catalog.CLUSTERS, key=lambda c: catalog.hourly_price(product.id, c.id))
        regions = [c.name for c in catalog.CLUSTERS]
    else:
        ref = catalog.cluster(cluster_id)
        regions = [ref.name]
    return {
        "id": product.id,
        "name": product.name,
        "cpuPerGpu": product.cpu_per_gpu,
        "memoryPerGpu": product.memory_per_gpu,
        "diskPerGpu": 0,
        "availableDeploy": True,
        "minRootFS": 10,
        "maxRootFS": 6144,
        "minLocalStorage": 0,
        "maxLocalStorage": 1024,
        "regions": regions,
        # 1/100000 USD per GPU-hour (per instance-hour under price-basis=per-instance)
        "price": catalog.hourly_price(product.id, ref.id),
        "monthlyPrice": [
            {"price": _monthly(product.id, ref.id, m, quirks), "month": m}
            for m in sorted(catalog.MONTHLY_DISCOUNT)
        ],
        "billingMethods": ["onDemand", "monthly", "spot"],
        "spotPrice": str(catalog.spot_price(product.id, ref.id)),  # a string, unlike price
        "inventoryState": "normal",
        "gpuMemory": product.vram_gb,  # not documented
    }


def _monthly(product_id: str, cluster_id: str, months: int, quirks: Quirks) -> int:
    """``monthlyPrice[].price`` for ``months``: the total (quirk ``monthly-price=total``) or one
    month's price of that term (``per-month``)."""
    if quirks.monthly_price == "per-month":
        return catalog.monthly_price_per_month(product_id, cluster_id, months)
    return catalog.monthly_price(product_id, cluster_id, months)


def products_json(
    cluster_id: str = "", product_name: str = "", quirks: Quirks | None = None
) -> dict[str, Any]:
    """GPU products. With ``clusterId``: that cluster's prices; without: the lowest price of
    any cluster and every cluster name in ``regions``."""
    if cluster_id and cluster_id not in {c.id for c in catalog.CLUSTERS}:
        return {"data": []}
    items = [
        p
        for p in catalog.GPU_PRODUCTS
        if not product_name
        or product_name.lower() in p.name.lower()
        or product_name.lower() in p.id.lower()
    ]
    quirks = quirks or Quirks()
    return {"data": [_product_json(p, cluster_id or None, quirks) for p in items]}


def cpu_products_json(product_name: str = "") -> dict[str, Any]:
    return {
        "data": [
            {
                "id": p.id,
                "name": p.name,
                "cpuNum": p.cpu_num,
                "memorySize": p.memory_size,
                "rootfsSize": 50,
                "localVolumeSize": 0,
                "availableDeploy": True,
                "price": p.price,
            }
            for p in catalog.CPU_PRODUCTS
            if not product_name or product_name.lower() in p.name.lower()
        ]
    }


def clusters_json() -> dict[str, Any]:
    return {
        "data": [
            {
                "id": c.id,
                "name": c.name,
                "availableGpuType": [p.name for p in catalog.GPU_PRODUCTS],
                "supportNetworkStorage": c.id != "3",
                "supportInstanceNetwork": True,
            }
            for c in catalog.CLUSTERS
        ]
    }


def storages_json(page_no: int, page_size: int, quirks: Quirks | None = None) -> dict[str, Any]:
    """Network storage. ``pageNo`` counts like instances' ``pageNum`` (quirk ``page-base``)."""
    items = list(catalog.NETWORK_STORAGES)
    return {"data": _page(items, page_no, page_size, quirks or Quirks()), "total": len(items)}


# ---------------------------------------------------------------------------------- tasks


def training_json(sim: FleetSim, limit: int, cursor: str) -> dict[str, Any]:
    """Newest first; cursors are ``c_<offset>``; ``next_cursor`` is ``""`` after the last page."""
    if not cursor:
        cursor = "c_0"
    if not cursor.startswith("c_") or not cursor[2:].isdigit():
        raise SimError(400, "INVALID_REQUEST_BODY", f"invalid pagination.cursor {cursor!r}")
    offset = int(cursor[2:])
    tasks = sorted(sim.training_tasks, key=lambda t: t["created_at"], reverse=True)
    page = tasks[offset : offset + limit]
    more = offset + limit < len(tasks)
    return {
        "tasks": [dict(t) for t in page],
        "pagination": {"next_cursor": f"c_{offset + limit}" if more else ""},
    }


def async_result_json(sim: FleetSim, task_id: str) -> dict[str, Any]:
    t = sim.async_task(task_id)
    done = t["status"] == "TASK_STATUS_SUCCEED"
    return {
        "task": {
            "task_id": task_id,
            "status": t["status"],
            "reason": t["reason"],
            "task_type": "TXT_TO_IMG",
            "eta": t["eta"],
            "progress_percent": t["progress_percent"],
        },
        "images": [
            {
                "image_url": f"https://sim.invalid/{task_id}/0.png",
                "image_type": "png",
                "image_url_ttl": "3600",  # a string here, an int in the old SDK
                "nsfw_detection_result": None,
            }
        ]
        if done
        else [],
        "videos": [],
        "audios": [],
        "extra": {
            "seed": "42",
            "enable_nsfw_detection": False,
            "debug_info": {
                "submit_time_ms": str((t["done_at"] - 30) * 1000),
                "execute_time_ms": "20000",
                "complete_time_ms": str(t["done_at"] * 1000) if done else "0",
            },
        },
    }
