"""Typed models of the Novita API payloads, parsed at the edge.

Lenient where the real API is (see ``shared/novita-api/wire-format.md``):

* numbers may arrive as JSON strings or numbers (``gpuNum``, ``cpuNum``, ``endTime``, money);
* ``""`` means null (``billingMode``, ``spotStatus``, ...);
* ``endTime`` ``"-1"``, ``"0"`` or ``""`` means "no expiry";
* unknown statuses (e.g. the undocumented ``pending``) and unknown keys are kept/ignored, never fatal;
* timestamps are Unix seconds (strings or ints); ISO 8601 is accepted too, because the metric point
  format is unconfirmed (wire-format §6 question 5). All become aware UTC datetimes.

Money is ``Decimal`` US dollars. Three wire scales exist (wire-format §1.4):

* balance and bill amounts: 1/10000 USD (:data:`Money10k`);
* product prices (``price``, ``monthlyPrice[].price``, ``spotPrice``): 1/100000 USD (:data:`Money100k`);
* bill ``payAmountDisplay``: already USD (:data:`MoneyUSD`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, model_validator

# ---------------------------------------------------------------------------------------------
# Lenient scalars


def _blank_to_none(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str) and value.strip() == "":
        return None
    return value


def parse_int(value: Any) -> int | None:
    value = _blank_to_none(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        try:
            return int(Decimal(str(value).strip()))
        except (InvalidOperation, ValueError) as exc:
            raise ValueError(f"expected an integer, got {value!r}") from exc


def parse_float(value: Any) -> float | None:
    value = _blank_to_none(value)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"expected a number, got {value!r}") from exc


def _decimal(value: Any) -> Decimal | None:
    value = _blank_to_none(value)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected an amount, got {value!r}")
    try:
        return Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ValueError(f"expected an amount, got {value!r}") from exc


def money_from_units(value: Any, units_per_usd: int) -> Decimal | None:
    """Wire amount in ``1/units_per_usd`` USD -> Decimal USD (exact)."""
    amount = _decimal(value)
    if amount is None:
        return None
    return amount / Decimal(units_per_usd)


@lru_cache(maxsize=65536)
def _timestamp_from_text(text: str) -> datetime | None:
    # cached: a collection cycle parses the same few minute stamps for every instance and series
    return _parse_timestamp(text)


def parse_timestamp(value: Any) -> datetime | None:
    """Unix seconds (str or int), or ISO 8601 -> aware UTC datetime. Blank -> None."""
    if type(value) is str:
        return _timestamp_from_text(value)
    return _parse_timestamp(value)


def _parse_timestamp(value: Any) -> datetime | None:
    value = _blank_to_none(value)
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ValueError(f"expected Unix seconds or ISO 8601, got {value!r}") from exc
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if seconds > 1e11:  # milliseconds: tolerate, the unit is unconfirmed for metric points
        seconds /= 1000.0
    return datetime.fromtimestamp(seconds, tz=UTC)


NO_EXPIRY = frozenset({"-1", "0", ""})


def parse_end_time(value: Any) -> datetime | None:
    """``endTime``: "-1", "0" or "" (or -1/0) mean "no expiry" -> None."""
    if value is None:
        return None
    if str(value).strip() in NO_EXPIRY:
        return None
    parsed = parse_timestamp(value)
    if parsed is not None and parsed.timestamp() <= 0:
        return None
    return parsed


def parse_str(value: Any) -> str | None:
    value = _blank_to_none(value)
    return None if value is None else str(value)


def _text(value: Any) -> Any:
    """null -> "", a number -> its string (ids and names are strings on the wire, mostly)."""
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_text)]
Id = Annotated[str, BeforeValidator(_id)]
LenientInt = Annotated[int | None, BeforeValidator(parse_int)]
LenientFloat = Annotated[float | None, BeforeValidator(parse_float)]
OptStr = Annotated[str | None, BeforeValidator(parse_str)]
Timestamp = Annotated[datetime | None, BeforeValidator(parse_timestamp)]
EndTime = Annotated[datetime | None, BeforeValidator(parse_end_time)]
Money10k = Annotated[Decimal | None, BeforeValidator(lambda v: money_from_units(v, 10_000))]
Money100k = Annotated[Decimal | None, BeforeValidator(lambda v: money_from_units(v, 100_000))]
MoneyUSD = Annotated[Decimal | None, BeforeValidator(_decimal)]


def parse_bool(value: Any) -> bool | None:
    """``true``/``false`` as JSON booleans, 0/1, or their strings; blank -> None."""
    value = _blank_to_none(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


LenientBool = Annotated[bool | None, BeforeValidator(parse_bool)]


def _precise(amount: Decimal | None, precision: int | None) -> Decimal | None:
    """``amount`` divided by the wire's ``pricePrecision`` (absent, 0 or 1: unchanged).

    The console divides ``discountPrice0`` and ``basePrice`` by ``pricePrecision`` before the
    1/10000 scale (wire-format §7.2); the OpenAPI docs do not mention it."""
    if amount is None or not precision or precision == 1:
        return amount
    return amount / Decimal(precision)


class WireModel(BaseModel):
    """Base: unknown keys ignored, fields filled by alias (wire name) or by Python name."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


def _list_or_empty(value: Any) -> Any:
    return [] if value is None or value == "" or value == {} else value


def _names(value: Any) -> Any:
    """A list of names; the docs render product ``regions`` as ``{}`` (wire-format §2.9)."""
    if isinstance(value, dict):
        return [str(v) for v in value.values()]
    return _list_or_empty(value)


def _object_or_none(value: Any) -> Any:
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, list):  # `node` is an array in the docs, an object elsewhere
        return value[0] if value else None
    return value


# ---------------------------------------------------------------------------------------------
# Account


class Balance(WireModel):
    """Account balance in USD. ``source`` tells which endpoint answered."""

    available_usd: Decimal
    cash_usd: Decimal | None = None
    credit_limit_usd: Decimal | None = None
    pending_charges_usd: Decimal | None = None
    outstanding_invoices_usd: Decimal | None = None
    source: str = "balance_detail"


class BalanceDetail(WireModel):
    """``GET /openapi/v1/billing/balance/detail``: every field a string in 1/10000 USD."""

    available_balance: Money10k = Field(default=None, alias="availableBalance")
    cash_balance: Money10k = Field(default=None, alias="cashBalance")
    credit_limit: Money10k = Field(default=None, alias="creditLimit")
    pending_charges: Money10k = Field(default=None, alias="pendingCharges")
    outstanding_invoices: Money10k = Field(default=None, alias="outstandingInvoices")

    def to_balance(self) -> Balance:
        if self.available_balance is None:
            raise ValueError("balance detail has no availableBalance")
        return Balance(
            available_usd=self.available_balance,
            cash_usd=self.cash_balance,
            credit_limit_usd=self.credit_limit,
            pending_charges_usd=self.pending_charges,
            outstanding_invoices_usd=self.outstanding_invoices,
            source="balance_detail",
        )


class UserInfo(WireModel):
    """``GET /v3/user`` (legacy): ``credit_balance`` is an int in 1/10000 USD."""

    credit_balance: Money10k = None
    allow_features: Annotated[list[str], BeforeValidator(_list_or_empty)] = Field(
        default_factory=list
    )

    def to_balance(self) -> Balance:
        if self.credit_balance is None:
            raise ValueError("user info has no credit_balance")
        return Balance(available_usd=self.credit_balance, source="v3_user")


# ---------------------------------------------------------------------------------------------
# Instances

#: Statuses documented by Novita, plus ``pending`` (seen live, undocumented). Others are kept as-is.
KNOWN_STATUSES = frozenset(
    {
        "toCreate", "creating", "pulling", "running", "toStart", "starting", "toStop",
        "stopping", "exited", "toRestart", "restarting", "toRemove", "removing", "removed",
        "toReset", "resetting", "migrating", "freezing", "pending",
    }
)  # fmt: skip
BILLING_MODES = frozenset({"onDemand", "monthly", "spot"})


class StatusError(WireModel):
    state: OptStr = None
    message: OptStr = None


class EnvVar(WireModel):
    key: Text = ""
    value: Text = ""


class Instance(WireModel):
    """One GPU/CPU instance, from the list or the get endpoint."""

    id: Id
    name: Text = ""
    cluster_id: OptStr = Field(default=None, alias="clusterId")
    cluster_name: OptStr = Field(default=None, alias="clusterName")
    status: Text = ""
    image_url: OptStr = Field(default=None, alias="imageUrl")
    cpu_num: LenientInt = Field(default=None, alias="cpuNum")
    memory: LenientInt = None
    gpu_num: Annotated[int, BeforeValidator(lambda v: parse_int(v) or 0)] = Field(
        default=0, alias="gpuNum"
    )
    product_id: OptStr = Field(default=None, alias="productId")
    product_name: OptStr = Field(default=None, alias="productName")
    kind: OptStr = None
    billing_mode: OptStr = Field(default=None, alias="billingMode")
    end_time: EndTime = Field(default=None, alias="endTime")
    created_at: Timestamp = Field(default=None, alias="createdAt")
    last_started_at: Timestamp = Field(default=None, alias="lastStartedAt")
    last_stopped_at: Timestamp = Field(default=None, alias="lastStoppedAt")
    spot_status: OptStr = Field(default=None, alias="spotStatus")
    spot_reclaim_time: EndTime = Field(default=None, alias="spotReclaimTime")
    status_error: Annotated[StatusError | None, BeforeValidator(_object_or_none)] = Field(
        default=None, alias="statusError"
    )
    envs: Annotated[list[EnvVar], BeforeValidator(_list_or_empty)] = Field(default_factory=list)
    # subscription auto-renew (wire-format §7.4: charged about 3 days before endTime)
    auto_renew: LenientBool = Field(default=None, alias="autoRenew")
    auto_renew_month: LenientInt = Field(default=None, alias="autoRenewMonth")
    # days a stopped instance's local data is kept (wire-format §7.5)
    keep_data_day: LenientInt = Field(default=None, alias="keepDataDay")

    @property
    def status_known(self) -> bool:
        return self.status in KNOWN_STATUSES

    @property
    def error_state(self) -> str | None:
        """The platform's error state/message, when it reports one."""
        if self.status_error is None:
            return None
        return self.status_error.state or self.status_error.message

    @property
    def env(self) -> dict[str, str]:
        return {e.key: e.value for e in self.envs}


class InstanceList(WireModel):
    instances: Annotated[list[Instance], BeforeValidator(_list_or_empty)] = Field(
        default_factory=list
    )
    total: LenientInt = None


# ---------------------------------------------------------------------------------------------
# Metrics


class MetricPoint(NamedTuple):
    """One sample of a series: Unix seconds and a percent. A plain tuple, not a pydantic
    model: a collection cycle parses tens of thousands of them (checked in ``_points``)."""

    ts: int
    value: float

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.ts, tz=UTC)


@lru_cache(maxsize=65536)
def _epoch_from_text(text: str) -> int | None:
    # cached: a collection cycle parses the same few minute stamps for every instance and series
    parsed = _parse_timestamp(text)
    return None if parsed is None else int(parsed.timestamp())


def _epoch(value: Any) -> int | None:
    """A point's timestamp as whole Unix seconds (the forms :func:`parse_timestamp` takes)."""
    if type(value) is str:
        return _epoch_from_text(value)
    parsed = _parse_timestamp(value)
    return None if parsed is None else int(parsed.timestamp())


def _points(value: Any) -> list[MetricPoint]:
    """A series; points without a usable time or value are skipped. The hot loop of a
    collection cycle (tens of thousands of points), hence the type checks by hand."""
    out: list[MetricPoint] = []
    for raw in _list_or_empty(value) or []:
        if type(raw) is not dict:
            continue
        stamp, value = raw.get("timestamp"), raw.get("value")
        ts = _epoch(stamp)
        if type(value) is not float:
            value = float(value) if type(value) is int else parse_float(value)
        if ts is not None and value is not None:
            out.append(_new_point(MetricPoint, (ts, value)))
    return out


_new_point = tuple.__new__


#: the series parsed by ``_points`` alone (PlainValidator: no second pass over each point)
Points = Annotated[list[MetricPoint], PlainValidator(_points)]


class GpuIdSeries(WireModel):
    gpu_id: Text = Field(default="", alias="gpuId")
    items: Points = Field(default_factory=list)


class GpuSeries(WireModel):
    avg: Points = Field(default_factory=list)
    gpu_ids: Annotated[list[GpuIdSeries], BeforeValidator(_list_or_empty)] = Field(
        default_factory=list, alias="gpuIds"
    )


def _gpu_series(value: Any) -> Any:
    return {} if value is None or value == "" else value


class InstanceMetrics(WireModel):
    """``GET /openapi/v1/metrics/gpu/instance``. Series may be empty.

    ``cpu_utilization`` is as received: summed over cores (up to 100 x cpuNum). From
    :meth:`~monitor.novita.client.NovitaClient.get_metrics` it is empty until the answers have
    shown it summed (a value above 100): a per-core average cannot be told from a quiet summed
    series. Use :meth:`cpu_per_core` for the normalised value.
    """

    cpu_utilization: Points = Field(default_factory=list, alias="cpuUtilization")
    mem_utilization: Points = Field(default_factory=list, alias="memUtilization")
    root_disk_utilization: Points = Field(default_factory=list, alias="rootDiskUtilization")
    gpu_utilization: Annotated[GpuSeries, BeforeValidator(_gpu_series)] = Field(
        default_factory=GpuSeries, alias="gpuUtilization"
    )
    gpu_mem_utilization: Annotated[GpuSeries, BeforeValidator(_gpu_series)] = Field(
        default_factory=GpuSeries, alias="gpuMemUtilization"
    )

    def sample_count(self) -> int:
        """Points in every series, per-GPU ones included."""
        series = (self.cpu_utilization, self.mem_utilization, self.root_disk_utilization)
        gpus = (self.gpu_utilization, self.gpu_mem_utilization)
        return sum(map(len, series)) + sum(
            len(g.avg) + sum(len(s.items) for s in g.gpu_ids) for g in gpus
        )

    def cpu_per_core(self, cpu_num: int | None) -> list[MetricPoint]:
        """CPU utilization per core (0-100). Unknown ``cpu_num`` leaves values unchanged."""
        if not cpu_num or cpu_num <= 1:
            return list(self.cpu_utilization)
        return [MetricPoint(p.ts, p.value / cpu_num) for p in self.cpu_utilization]


# ---------------------------------------------------------------------------------------------
# Bills


class UsageBill(WireModel):
    """``GET /openapi/v1/billing/bill/list`` item (pay-as-you-go). Amounts in USD."""

    user_id: OptStr = Field(default=None, alias="userId")
    start_time: Timestamp = Field(default=None, alias="startTime")
    end_time: Timestamp = Field(default=None, alias="endTime")
    billing_method: LenientInt = Field(default=None, alias="billingMethod")
    product_name: OptStr = Field(default=None, alias="productName")
    product_id: OptStr = Field(default=None, alias="productId")
    category: OptStr = None
    owner_id: OptStr = Field(default=None, alias="ownerID")
    bill_num0: MoneyUSD = Field(default=None, alias="billNum0")  # a quantity, not money
    discount_price0: Money10k = Field(default=None, alias="discountPrice0")
    amount: Money10k = None
    voucher_amount: Money10k = Field(default=None, alias="voucherAmount")
    pay_amount: Money10k = Field(default=None, alias="payAmount")
    pay_amount_display: MoneyUSD = Field(default=None, alias="payAmountDisplay")
    price_precision: LenientInt = Field(default=None, alias="pricePrecision")

    @property
    def unit_price_usd(self) -> Decimal | None:
        """USD per card-hour: ``discountPrice0`` / ``pricePrecision`` at the 1/10000 scale.
        ``amount`` / this = the card-hours charged, whatever unit ``billNum0`` counts time in
        (the docs leave it open; the console's code suggests seconds, wire-format §7.1)."""
        return _precise(self.discount_price0, self.price_precision)


class FixedTermBill(WireModel):
    """``GET /openapi/v1/billing/bill/monthly/list`` item (subscriptions). Amounts in USD."""

    user_id: OptStr = Field(default=None, alias="userId")
    start_time: Timestamp = Field(default=None, alias="startTime")
    end_time: Timestamp = Field(default=None, alias="endTime")
    product_name: OptStr = Field(default=None, alias="productName")
    product_id: OptStr = Field(default=None, alias="productId")
    product_category: OptStr = Field(default=None, alias="productCategory")
    owner_id: OptStr = Field(default=None, alias="ownerID")
    trade_mode: OptStr = Field(default=None, alias="tradeMode")
    trade_type: OptStr = Field(default=None, alias="tradeType")
    base_price: Money10k = Field(default=None, alias="basePrice")
    bill_num: LenientInt = Field(default=None, alias="billNum")
    amount: Money10k = None
    voucher_amount: Money10k = Field(default=None, alias="voucherAmount")
    pay_amount: Money10k = Field(default=None, alias="payAmount")
    pay_amount_display: MoneyUSD = Field(default=None, alias="payAmountDisplay")
    create_time: Timestamp = Field(default=None, alias="createTime")
    cycle: OptStr = None
    price_precision: LenientInt = Field(default=None, alias="pricePrecision")

    @property
    def base_price_usd(self) -> Decimal | None:
        """``basePrice`` / ``pricePrecision`` at the 1/10000 scale (wire-format §7.2)."""
        return _precise(self.base_price, self.price_precision)


# ---------------------------------------------------------------------------------------------
# Products, clusters, storage


class MonthlyPrice(WireModel):
    month: LenientInt = None
    price_usd: Money100k = Field(default=None, alias="price")


def _product_precision(data: Any) -> Any:
    """Product prices divided by a ``pricePrecision`` sent with them.

    No source shows ``pricePrecision`` on products (bills carry it; the console divides
    ``monthlyPrice`` by a precision from its internal API, wire-format §7.3). Should a product
    carry one other than 0 or 1, its ``price``, ``spotPrice`` and ``monthlyPrice[].price`` are
    divided by it before the 1/100000 scale, as the console does for bills."""
    if not isinstance(data, dict):
        return data
    try:
        precision = parse_int(data.get("pricePrecision"))
    except ValueError:
        return data
    if not precision or precision == 1:
        return data

    def scaled(value: Any) -> Any:
        amount = _decimal(value)
        return value if amount is None else amount / Decimal(precision)

    out = dict(data)
    for key in ("price", "spotPrice"):
        if key in out:
            out[key] = scaled(out[key])
    monthly = out.get("monthlyPrice")
    if isinstance(monthly, list):
        out["monthlyPrice"] = [
            {**m, "price": scaled(m.get("price"))} if isinstance(m, dict) else m for m in monthly
        ]
    return out


class Product(WireModel):
    """A GPU product. Prices in USD: ``price_usd_per_hour`` is probably per GPU (unconfirmed).

    ``monthly_price`` holds the wire's ``monthlyPrice`` entries as sent: whether an entry for
    m months is the total or one month's price of that term is unconfirmed (wire-format §7.3).
    """

    id: Id
    name: Text = ""
    cpu_per_gpu: LenientInt = Field(default=None, alias="cpuPerGpu")
    memory_per_gpu: LenientInt = Field(default=None, alias="memoryPerGpu")
    available_deploy: bool | None = Field(default=None, alias="availableDeploy")
    regions: Annotated[list[str], BeforeValidator(_names)] = Field(default_factory=list)
    price_usd_per_hour: Money100k = Field(default=None, alias="price")
    monthly_price: Annotated[list[MonthlyPrice], BeforeValidator(_list_or_empty)] = Field(
        default_factory=list, alias="monthlyPrice"
    )
    spot_price_usd_per_hour: Money100k = Field(default=None, alias="spotPrice")
    billing_methods: Annotated[list[str], BeforeValidator(_list_or_empty)] = Field(
        default_factory=list, alias="billingMethods"
    )
    inventory_state: OptStr = Field(default=None, alias="inventoryState")
    #: as sent (rare, never seen); the prices above are already divided by it
    price_precision: LenientInt = Field(default=None, alias="pricePrecision")

    @model_validator(mode="before")
    @classmethod
    def _divide_by_precision(cls, data: Any) -> Any:
        return _product_precision(data)

    def monthly_price_usd(self, months: int = 1) -> Decimal | None:
        for mp in self.monthly_price:
            if mp.month == months:
                return mp.price_usd
        return None


class CpuProduct(WireModel):
    id: Id
    name: Text = ""
    cpu_num: LenientInt = Field(default=None, alias="cpuNum")
    memory_size: LenientInt = Field(default=None, alias="memorySize")
    available_deploy: bool | None = Field(default=None, alias="availableDeploy")
    price_usd_per_hour: Money100k = Field(default=None, alias="price")


class Cluster(WireModel):
    id: Id
    name: Text = ""
    available_gpu_type: Annotated[list[str], BeforeValidator(_list_or_empty)] = Field(
        default_factory=list, alias="availableGpuType"
    )
    support_network_storage: bool | None = Field(default=None, alias="supportNetworkStorage")


class NetworkStorage(WireModel):
    storage_id: Id = Field(alias="storageId")
    storage_name: Text = Field(default="", alias="storageName")
    storage_size_gb: LenientInt = Field(default=None, alias="storageSize")
    cluster_id: OptStr = Field(default=None, alias="clusterId")
    cluster_name: OptStr = Field(default=None, alias="clusterName")
    #: unit undocumented (wire-format §1.4): kept raw, never turned into dollars
    price_raw: OptStr = Field(default=None, alias="price")


# ---------------------------------------------------------------------------------------------
# Tasks

TRAINING_TERMINAL = frozenset({"SUCCESS", "CANCELED", "FAILED"})
ASYNC_TERMINAL = frozenset({"TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED"})


class TrainingModel(WireModel):
    model_name: OptStr = None
    model_status: OptStr = None


class TrainingTask(WireModel):
    task_id: Id
    task_name: Text = ""
    task_type: OptStr = None
    task_status: Annotated[str, BeforeValidator(lambda v: parse_str(v) or "UNKNOWN")] = "UNKNOWN"
    created_at: Timestamp = None
    models: Annotated[list[TrainingModel], BeforeValidator(_list_or_empty)] = Field(
        default_factory=list
    )

    @property
    def terminal(self) -> bool:
        return self.task_status in TRAINING_TERMINAL


class AsyncTask(WireModel):
    task_id: Id
    status: Text = ""
    reason: OptStr = None
    task_type: OptStr = None
    eta: LenientInt = None
    progress_percent: LenientFloat = None

    @property
    def terminal(self) -> bool:
        return self.status in ASYNC_TERMINAL


class AsyncTaskResult(WireModel):
    """``GET /v3/async/task-result``: only the ``task`` part matters to the monitor."""

    task: AsyncTask
