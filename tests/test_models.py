"""Parsing of payloads copied from wire-format.md's examples, quirks included."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from monitor.novita.models import (
    AsyncTaskResult,
    BalanceDetail,
    Cluster,
    CpuProduct,
    FixedTermBill,
    Instance,
    InstanceList,
    InstanceMetrics,
    NetworkStorage,
    Product,
    TrainingTask,
    UsageBill,
    UserInfo,
    parse_end_time,
    parse_int,
    parse_timestamp,
)

WIRE = Path(__file__).parent / "fixtures" / "wire"


def wire(name: str) -> Any:
    return json.loads((WIRE / f"{name}.json").read_text())


def ts(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


# ------------------------------------------------------------------------------- account


def test_balance_detail_strings_in_ten_thousandths_of_a_dollar() -> None:
    balance = BalanceDetail.model_validate(wire("balance_detail")).to_balance()
    assert balance.available_usd == Decimal("100")
    assert balance.cash_usd == Decimal("80")
    assert balance.credit_limit_usd == Decimal("20")
    assert balance.pending_charges_usd == Decimal("0")
    assert balance.source == "balance_detail"


def test_balance_detail_without_available_balance_refuses_to_invent_one() -> None:
    detail = BalanceDetail.model_validate({"cashBalance": "1"})
    with pytest.raises(ValueError, match="availableBalance"):
        detail.to_balance()


def test_v3_user_credit_balance_is_an_int_in_ten_thousandths() -> None:
    info = UserInfo.model_validate(wire("user"))
    assert info.credit_balance == Decimal("49.7975")
    assert info.allow_features == ["upload_model"]
    balance = info.to_balance()
    assert balance.available_usd == Decimal("49.7975")
    assert balance.source == "v3_user"


# ------------------------------------------------------------------------------- instances


def test_instance_list_quirks() -> None:
    listing = InstanceList.model_validate(wire("instances_list"))
    assert listing.total == 4
    by_id = {i.id: i for i in listing.instances}

    ondemand = by_id["inst-ondemand"]
    assert (ondemand.cpu_num, ondemand.memory, ondemand.gpu_num) == (16, 62, 2)  # strings
    assert ondemand.end_time is None  # "-1": pay-as-you-go, no expiry
    assert ondemand.billing_mode == "onDemand"
    assert ondemand.spot_status is None  # "" -> None
    assert ondemand.spot_reclaim_time is None  # "0" before a reclaim
    assert ondemand.created_at == ts(1764547200)
    assert ondemand.last_stopped_at is None  # ""
    assert ondemand.status_error is not None and ondemand.error_state is None  # blanks
    assert ondemand.env == {"MONITOR_PROTECT": "1"}
    assert ondemand.product_id == "4090.16c62g"

    monthly = by_id["inst-monthly"]
    assert (monthly.cpu_num, monthly.gpu_num) == (8, 1)  # ints accepted too
    assert monthly.status == "pending" and monthly.status_known  # undocumented, known
    assert monthly.end_time == ts(1767225599)
    assert monthly.status_error is None

    blank = by_id["inst-blank"]
    assert blank.cpu_num is None and blank.memory is None and blank.gpu_num == 0
    assert blank.billing_mode is None  # "" as null
    assert blank.end_time is None  # "0"
    assert blank.status == "someNewStatus" and not blank.status_known  # tolerated

    spot = by_id["inst-spot"]
    assert spot.end_time is None  # ""
    assert spot.billing_mode == "spot"
    assert spot.spot_reclaim_time == ts(1764640000)


def test_instance_get_tolerates_extra_keys_and_array_node() -> None:
    inst = Instance.model_validate(wire("instance_get"))
    assert inst.id == "inst-ondemand"
    assert inst.gpu_num == 2
    assert not hasattr(inst, "node")  # unknown keys ignored, never fatal


def test_instance_without_id_is_rejected() -> None:
    with pytest.raises(ValueError):
        Instance.model_validate({"name": "x"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("-1", None),
        ("0", None),
        ("", None),
        (-1, None),
        (0, None),
        (None, None),
        ("1767225599", ts(1767225599)),
        (1767225599, ts(1767225599)),
    ],
)
def test_end_time_sentinels(raw: Any, expected: datetime | None) -> None:
    assert parse_end_time(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [("12", 12), (12, 12), ("", None), (None, None), ("3.0", 3)]
)
def test_lenient_int(raw: Any, expected: int | None) -> None:
    assert parse_int(raw) == expected


def test_timestamps_are_aware_utc() -> None:
    assert parse_timestamp("1764547200") == ts(1764547200)
    assert parse_timestamp("2025-12-01T00:00:00Z") == ts(1764547200)
    assert parse_timestamp(1764547200000) == ts(1764547200)  # milliseconds tolerated
    assert parse_timestamp("1764547200").tzinfo is not None  # type: ignore[union-attr]


# ------------------------------------------------------------------------------- metrics


def test_metrics_parse_and_cpu_is_normalised_per_core() -> None:
    metrics = InstanceMetrics.model_validate(wire("metrics"))
    assert [p.value for p in metrics.cpu_utilization] == [800, 1600]  # as received, summed
    assert [p.value for p in metrics.cpu_per_core(16)] == [50, 100]
    assert metrics.cpu_per_core(None)[0].value == 800  # unknown cpuNum: unchanged
    assert metrics.gpu_utilization.avg[0].value == 80
    assert metrics.gpu_utilization.avg[0].timestamp == ts(1764547200)
    assert [s.gpu_id for s in metrics.gpu_utilization.gpu_ids] == ["0", "1"]
    assert metrics.gpu_utilization.gpu_ids[1].items[0].value == 79
    assert metrics.gpu_mem_utilization.avg[0].value == 40.5
    assert metrics.gpu_mem_utilization.gpu_ids == []  # gpuIds absent


def test_metrics_empty_series() -> None:
    metrics = InstanceMetrics.model_validate(wire("metrics_empty"))
    assert metrics.cpu_utilization == []
    assert metrics.gpu_utilization.avg == [] and metrics.gpu_utilization.gpu_ids == []


# ------------------------------------------------------------------------------- bills


def test_usage_bill_numbers_as_numbers() -> None:
    (bill,) = [UsageBill.model_validate(b) for b in wire("usage_bills")["bills"]]
    assert bill.pay_amount == Decimal("1")  # "10000" in 1/10000 USD
    assert bill.pay_amount_display == Decimal("1")  # already USD: the two scales agree
    assert bill.amount == Decimal("1")
    assert bill.billing_method == 1
    assert bill.owner_id == "<instanceId>"  # response spells it ownerID
    assert bill.start_time == ts(1764547200)
    assert bill.end_time == ts(1764633599)


def test_usage_bill_numbers_as_strings_and_extra_keys() -> None:
    (bill,) = [UsageBill.model_validate(b) for b in wire("usage_bills_strings")["bills"]]
    assert bill.pay_amount == Decimal("100")
    assert bill.pay_amount_display == Decimal("100")
    assert bill.billing_method == 1


def test_fixed_term_bill() -> None:
    (bill,) = [FixedTermBill.model_validate(b) for b in wire("fixed_term_bills")["bills"]]
    assert bill.pay_amount == Decimal("100")
    assert bill.base_price == Decimal("100")
    assert bill.pay_amount_display == Decimal("100")
    assert bill.trade_type == "monthly_re_buy"
    assert bill.cycle == "2025-12"
    assert bill.bill_num == 1
    assert bill.create_time == ts(1764547200)


# ------------------------------------------------------------------------------- catalogue


def test_products_prices_in_hundred_thousandths() -> None:
    first, second = [Product.model_validate(p) for p in wire("products")["data"]]
    assert first.price_usd_per_hour == Decimal("0.35")  # 35000 / 100000
    assert first.spot_price_usd_per_hour == Decimal("0.14")
    assert first.monthly_price_usd(1) == Decimal("0.00123")
    assert first.monthly_price_usd(3) is None
    assert first.regions == ["US-01 (Dallas)"]
    assert first.inventory_state == "low"
    assert second.price_usd_per_hour == Decimal("3.5")  # a string this time
    assert second.spot_price_usd_per_hour == Decimal("1.2")  # an int this time
    assert second.monthly_price_usd(1) == Decimal("1500")
    assert second.cpu_per_gpu == 16


def test_three_money_scales_side_by_side() -> None:
    """The same wire number means three different amounts depending on the endpoint."""
    raw = "10000"
    assert BalanceDetail.model_validate({"availableBalance": raw}).available_balance == 1
    assert Product.model_validate({"id": "p", "price": raw}).price_usd_per_hour == Decimal("0.1")
    assert UsageBill.model_validate({"payAmountDisplay": raw}).pay_amount_display == 10000


def test_cpu_products_clusters_storage() -> None:
    (cpu,) = [CpuProduct.model_validate(p) for p in wire("cpu_products")["data"]]
    assert cpu.cpu_num == 4 and cpu.price_usd_per_hour == Decimal("0.025")
    (cluster,) = [Cluster.model_validate(c) for c in wire("clusters")["data"]]
    assert cluster.id == "5" and cluster.support_network_storage is True
    assert cluster.available_gpu_type == ["RTX 4090 24GB"]
    (storage,) = [NetworkStorage.model_validate(s) for s in wire("network_storages")["data"]]
    assert storage.storage_id == "uuid" and storage.storage_size_gb == 10
    assert storage.price_raw == "100"  # unit undocumented: never turned into dollars


# ------------------------------------------------------------------------------- tasks


def test_training_task() -> None:
    (task,) = [TrainingTask.model_validate(t) for t in wire("training")["tasks"]]
    assert task.task_id == "t1" and task.task_status == "FAILED" and task.terminal
    assert task.created_at == ts(1699325415)  # an int here
    assert task.models[0].model_status == "DEPLOYING"


def test_async_task_result() -> None:
    result = AsyncTaskResult.model_validate(wire("async_task"))
    assert result.task.task_id == "a1"
    assert result.task.terminal
    assert result.task.reason is None  # "" on success
    assert result.task.progress_percent == 100


def test_null_names_and_numeric_ids_are_tolerated() -> None:
    inst = Instance.model_validate({"id": 5, "name": None, "status": None})
    assert (inst.id, inst.name, inst.status) == ("5", "", "")
    cluster = Cluster.model_validate({"id": 5, "name": None})
    assert cluster.id == "5"
    task = TrainingTask.model_validate({"task_id": 7, "task_status": ""})
    assert (task.task_id, task.task_status) == ("7", "UNKNOWN")


def test_product_regions_rendered_as_an_object() -> None:
    assert Product.model_validate({"id": "p", "regions": {}}).regions == []
    assert Product.model_validate({"id": "p", "regions": {"a": "US-01"}}).regions == ["US-01"]
