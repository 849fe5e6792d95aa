"""The simulator's price list: clusters, GPU and CPU products, network storage.

Prices are kept in the wire unit of the product endpoints, 1/100000 USD per GPU-hour
(``35000`` = $0.35), and differ by cluster (wire-format §2.9: "product prices differ by cluster").
The monthly price is per GPU per subscription period, in the same unit. Under the quirk
``price-basis=per-instance`` every price here is read as the whole instance's (see
:mod:`monitor.sim.quirks`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cluster:
    id: str
    name: str
    price_factor: float  # multiplies the base price of every product in this cluster


@dataclass(frozen=True, slots=True)
class GpuProduct:
    id: str
    name: str
    base_price: int  # 1/100000 USD per GPU-hour, in the reference cluster "1"
    cpu_per_gpu: int
    memory_per_gpu: int  # GB
    vram_gb: int


CLUSTERS: tuple[Cluster, ...] = (
    Cluster("1", "US-01 (Dallas)", 1.0),
    Cluster("2", "EU-01 (Frankfurt)", 1.1),
    Cluster("3", "AS-01 (Singapore)", 1.05),
)

GPU_PRODUCTS: tuple[GpuProduct, ...] = (
    GpuProduct("4090.16c62g", "RTX 4090 24GB", 35000, 16, 62, 24),
    GpuProduct("3090.16c62g", "RTX 3090 24GB", 21000, 16, 62, 24),
    GpuProduct("l40s.16c62g", "L40S 48GB", 86000, 16, 62, 48),
    GpuProduct("a100.16c100g", "A100 SXM 80GB", 129000, 16, 100, 80),
    GpuProduct("h100.16c200g", "H100 SXM 80GB", 249000, 16, 200, 80),
)

# Discount of a subscription against 730 on-demand hours a month, by number of months.
MONTHLY_DISCOUNT: dict[int, float] = {1: 0.70, 3: 0.67, 6: 0.64, 12: 0.60}
SPOT_FACTOR = 0.5
HOURS_PER_MONTH = 730


def cluster(cluster_id: str) -> Cluster:
    for c in CLUSTERS:
        if c.id == cluster_id:
            return c
    raise KeyError(cluster_id)


def gpu_product(product_id: str) -> GpuProduct:
    for p in GPU_PRODUCTS:
        if p.id == product_id:
            return p
    raise KeyError(product_id)


def _round100(value: float) -> int:
    return round(value / 100.0) * 100


def hourly_price(product_id: str, cluster_id: str) -> int:
    """On-demand price in 1/100000 USD per GPU-hour in one cluster."""
    return _round100(gpu_product(product_id).base_price * cluster(cluster_id).price_factor)


def spot_price(product_id: str, cluster_id: str) -> int:
    return _round100(hourly_price(product_id, cluster_id) * SPOT_FACTOR)


def monthly_price(product_id: str, cluster_id: str, months: int) -> int:
    """Subscription price per GPU for ``months`` months (the total), 1/100000 USD: a whole
    number of months at :func:`monthly_price_per_month`, so both readings of the wire's
    ``monthlyPrice`` (quirk ``monthly-price``) give exact figures."""
    return monthly_price_per_month(product_id, cluster_id, months) * months


def monthly_price_per_month(product_id: str, cluster_id: str, months: int) -> int:
    """One month's price per GPU in a ``months``-month subscription, 1/100000 USD."""
    hourly = hourly_price(product_id, cluster_id)
    discount = MONTHLY_DISCOUNT.get(months, MONTHLY_DISCOUNT[1])
    return _round100(hourly * HOURS_PER_MONTH * discount)


@dataclass(frozen=True, slots=True)
class CpuProduct:
    id: str
    name: str
    cpu_num: int
    memory_size: int
    price: int  # 1/100000 USD per hour


CPU_PRODUCTS: tuple[CpuProduct, ...] = (
    CpuProduct("cpu.4c8g", "CPU 4 vCPU 8GB", 4, 8, 4000),
    CpuProduct("cpu.8c16g", "CPU 8 vCPU 16GB", 8, 16, 8000),
    CpuProduct("cpu.16c32g", "CPU 16 vCPU 32GB", 16, 32, 16000),
)

NETWORK_STORAGES: tuple[dict[str, object], ...] = (
    {
        "storageId": "6f1c2a9e-0c51-4b8e-9a53-1d2f7c1e0a01",
        "storageName": "datasets",
        "storageSize": 500,
        "clusterId": "1",
        "clusterName": "US-01 (Dallas)",
        "price": "100",
    },
    {
        "storageId": "6f1c2a9e-0c51-4b8e-9a53-1d2f7c1e0a02",
        "storageName": "checkpoints",
        "storageSize": 200,
        "clusterId": "2",
        "clusterName": "EU-01 (Frankfurt)",
        "price": "100",
    },
    {
        "storageId": "6f1c2a9e-0c51-4b8e-9a53-1d2f7c1e0a03",
        "storageName": "scratch",
        "storageSize": 10,
        "clusterId": "1",
        "clusterName": "US-01 (Dallas)",
        "price": "100",
    },
)
