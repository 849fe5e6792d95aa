"""The quirk switches (monitor.sim.quirks) on the wire, the ground truth (/_sim/truth), and the
client's readings of what the switches change (page base, timestamps, CPU, lag)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from monitor.cli import cli
from monitor.clock import ManualClock
from monitor.novita import client as novita_client
from monitor.novita.client import NovitaClient
from monitor.novita.models import Product
from monitor.sim import FleetSim, create_app
from monitor.sim.quirks import SWITCHES, QuirkError, Quirks
from tests.conftest import T0

GPU = "/gpu-instance/openapi/v1"
NOW = int(T0.timestamp())

Http = Callable[..., Any]


def make_sim(**quirks: str) -> FleetSim:
    return FleetSim(ManualClock(T0), scenario="demo", seed=0, quirks=quirks or None)


@pytest.fixture
def http() -> Callable[[FleetSim], httpx.AsyncClient]:
    def open_(sim: FleetSim) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(sim)),
            base_url="http://sim",
            headers={"Authorization": "Bearer k"},
        )

    return open_


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def hour_bills(client: httpx.AsyncClient, owner: str) -> list[dict[str, Any]]:
    body = await get(
        client,
        "/openapi/v1/billing/bill/list",
        cycleType="Hour",
        productCategory="gpu",
        ownerId=owner,
        startTime=NOW - 3 * 3600,
        endTime=NOW,
    )
    return body["bills"]


# ------------------------------------------------------------------------------ the switches


def test_every_switch_has_its_default_and_parses() -> None:
    assert Quirks().as_dict() == {s.key: s.default for s in SWITCHES}
    assert Quirks().bill_time == "seconds"  # the likelier reading (wire-format §7.1)
    q = Quirks.of(["bill-time=hours", "page-base=0"])
    assert q.changed() == {"bill-time": "hours", "page-base": "0"}
    assert Quirks.of({"metric-lag": 120}).lag_s == 120
    assert {s.key for s in SWITCHES} == {
        "bill-time",
        "monthly-price",
        "price-basis",
        "price-precision",
        "page-base",
        "metric-ts",
        "cpu",
        "metric-lag",
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            ["bill-time=days"],
            "quirk bill-time: invalid value 'days'; expected one of seconds|hours",
        ),
        (["colour=red"], "unknown quirk 'colour'; known: bill-time, monthly-price"),
        (["bill-time"], "quirk 'bill-time': expected KEY=VALUE"),
    ],
)
def test_a_bad_switch_is_named(given: list[str], message: str) -> None:
    with pytest.raises(QuirkError) as err:
        Quirks.of(given)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_simulator_help_lists_every_switch_with_its_default() -> None:
    result = CliRunner().invoke(cli, ["simulator", "--help"])
    assert result.exit_code == 0
    for s in SWITCHES:
        assert f"{s.key}={'|'.join(s.values)} (default {s.default})" in result.output


def test_simulator_refuses_an_unknown_switch_in_one_line() -> None:
    result = CliRunner().invoke(cli, ["simulator", "--quirk", "cpu=both"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --quirk: quirk cpu: invalid value 'both'; expected one of summed|per-core"
    ]


def test_module_entry_point_refuses_an_unknown_switch() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "monitor.sim", "--quirk", "page-base=2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "quirk page-base: invalid value '2'; expected one of 1|0" in proc.stderr


async def test_switches_at_run_time(http: Any) -> None:
    sim = make_sim()
    async with http(sim) as c:
        assert (await get(c, "/_sim/quirks"))["bill-time"] == "seconds"
        r = await c.post("/_sim/quirks", json={"bill-time": "hours", "metric-ts": "iso"})
        assert r.status_code == 200 and r.json()["metric-ts"] == "iso"
        assert sim.quirks.bill_time == "hours"
        r = await c.post("/_sim/quirks", json={"metric-ts": "ns"})
        assert r.status_code == 400 and "metric-ts" in r.json()["message"]
        assert sim.quirks.metric_ts == "iso"  # unchanged by the refused request


# ------------------------------------------------------------------------------ bills


@pytest.mark.parametrize("precision", ["1", "10000"])
@pytest.mark.parametrize("bill_time", ["seconds", "hours"])
async def test_usage_bills_card_time_and_unit_price(
    http: Any, bill_time: str, precision: str
) -> None:
    sim = make_sim(**{"bill-time": bill_time, "price-precision": precision})
    async with http(sim) as c:
        bills = await hour_bills(c, "demo-trainer")  # 2 GPUs at $0.35
    assert len(bills) == 3
    for bill in bills:
        assert "billNumUnit" not in bill  # invented; no source sends it
        assert bill["billNum0"] == ("7200" if bill_time == "seconds" else "2.0000")
        assert bill["pricePrecision"] == int(precision)
        # the unit price is per card-hour whatever billNum0's unit: amount = card-hours x price
        unit_usd = Decimal(bill["discountPrice0"]) / int(precision) / 10000
        assert unit_usd == Decimal("0.35") and bill["basePrice0"] == bill["discountPrice0"]
        assert Decimal(bill["amount"]) / 10000 == 2 * unit_usd
        assert bill["billingMethod"] == 1


async def test_spot_bills_have_billing_method_4(http: Any) -> None:
    async with http(make_sim()) as c:
        bills = await hour_bills(c, "demo-multigpu")
    assert bills and {b["billingMethod"] for b in bills} == {4}


async def test_fixed_term_base_price_scaled_by_precision(http: Any) -> None:
    sim = make_sim(**{"price-precision": "10000"})
    async with http(sim) as c:
        body = await get(
            c,
            "/openapi/v1/billing/bill/monthly/list",
            category="gpu",
            ownerId="demo-lapsing",
            startTime=NOW - 30 * 86400,
            endTime=NOW,
        )
    (bill,) = body["bills"]
    assert bill["pricePrecision"] == 10000
    # one month of one GPU: the whole charge of this 1-GPU, 1-month subscription
    assert Decimal(bill["basePrice"]) / 10000 / 10000 == Decimal(bill["amount"]) / 10000


async def test_price_basis_per_instance_bills_the_listed_price_once(http: Any) -> None:
    per_gpu, per_instance = make_sim(), make_sim(**{"price-basis": "per-instance"})
    async with http(per_gpu) as c:
        gpu_bills = await hour_bills(c, "demo-multigpu")
        product = await get(c, f"{GPU}/products", clusterId="1", productName="A100")
    async with http(per_instance) as c:
        inst_bills = await hour_bills(c, "demo-multigpu")
        same_product = await get(c, f"{GPU}/products", clusterId="1", productName="A100")
    assert product == same_product  # the listing is the same; what it means differs
    spot = Decimal(product["data"][0]["spotPrice"]) / 100000  # $0.645
    assert Decimal(gpu_bills[0]["amount"]) / 10000 == 8 * spot
    assert Decimal(inst_bills[0]["amount"]) / 10000 == spot
    # still 8 cards, each at an eighth of the price
    assert inst_bills[0]["billNum0"] == str(8 * 3600)
    truth = {i["id"]: i for i in per_instance_truth(per_instance)["instances"]}
    assert truth["demo-multigpu"]["hourly_cost_usd"] == float(spot)


def per_instance_truth(sim: FleetSim) -> dict[str, Any]:
    from monitor.sim.truth import truth_json

    return truth_json(sim)


@pytest.mark.parametrize("form", ["total", "per-month"])
async def test_monthly_price_total_or_per_month(http: Any, form: str) -> None:
    async with http(make_sim(**{"monthly-price": form})) as c:
        body = await get(c, f"{GPU}/products", clusterId="1", productName="4090")
    prices = {m["month"]: m["price"] for m in body["data"][0]["monthlyPrice"]}
    one = prices[1]
    assert one == 17885000  # $0.35 x 730 h x 0.70, in 1/100000 USD
    per_month_12 = 15330000  # $0.35 x 730 h x 0.60 a month in a 12-month term
    if form == "total":
        assert prices[12] == 12 * per_month_12 and prices[3] % 3 == 0
    else:
        assert prices[12] == per_month_12 < one
    assert "pricePrecision" not in body["data"][0]  # products never carry it


# ------------------------------------------------------------------------------ pages, metrics


@pytest.mark.parametrize("base", ["0", "1"])
async def test_page_base(http: Any, base: str) -> None:
    async with http(make_sim(**{"page-base": base})) as c:
        pages = [
            [i["id"] for i in (await get(c, f"{GPU}/gpu/instances", pageSize=4, pageNum=n))[
                "instances"
            ]]
            for n in range(4)
        ]  # fmt: skip
        storage = [
            len((await get(c, f"{GPU}/networkstorages/list", pageSize=2, pageNo=n))["data"])
            for n in range(3)
        ]
    if base == "1":
        assert pages[0] == pages[1] and len(pages[3]) == 3
        assert storage == [2, 2, 1]
    else:
        assert pages[0] != pages[1] and len(pages[2]) == 3 and pages[3] == []
        assert storage == [2, 1, 0]


@pytest.mark.parametrize(
    ("form", "first"),
    [("s", str(NOW - 600)), ("ms", str((NOW - 600) * 1000)), ("iso", "2026-11-20T11:50:00Z")],
)
async def test_metric_timestamp_forms(http: Any, form: str, first: str) -> None:
    async with http(make_sim(**{"metric-ts": form})) as c:
        body = await get(
            c,
            "/openapi/v1/metrics/gpu/instance",
            instanceId="demo-trainer",
            startTime=NOW - 600,
            endTime=NOW,
            interval=60,
        )
    assert body["gpuUtilization"]["avg"][0]["timestamp"] == first
    assert body["cpuUtilization"][0]["timestamp"] == first


@pytest.mark.parametrize(("cpu", "lag"), [("summed", "60"), ("per-core", "120")])
async def test_cpu_form_and_metric_lag(http: Any, cpu: str, lag: str) -> None:
    async with http(make_sim(cpu=cpu, **{"metric-lag": lag})) as c:
        body = await get(
            c,
            "/openapi/v1/metrics/gpu/instance",
            instanceId="demo-trainer",  # 32 cores, busy
            startTime=NOW - 3600,
            endTime=NOW,
            interval=60,
        )
    values = [p["value"] for p in body["cpuUtilization"]]
    assert int(body["cpuUtilization"][-1]["timestamp"]) == NOW - int(lag)
    if cpu == "summed":
        assert max(values) > 100 and max(values) <= 3200
    else:
        assert max(values) <= 100 and min(values) > 0


async def test_instances_carry_auto_renew_and_data_retention(http: Any) -> None:
    sim = make_sim()
    async with http(sim) as c:
        listed = {i["id"]: i for i in (await get(c, f"{GPU}/gpu/instances", pageSize=50))[
            "instances"
        ]}  # fmt: skip
        one = await get(c, f"{GPU}/gpu/instance", instanceId="demo-lapsing")
    for inst in (listed["demo-lapsing"], one):
        assert inst["autoRenew"] is False and inst["autoRenewMonth"] == 1
        assert inst["keepDataDay"] == 7


# ------------------------------------------------------------------------------ truth


async def test_truth_of_the_demo(http: Any) -> None:
    sim = make_sim()
    async with http(sim) as c:
        truth = await get(c, "/_sim/truth")
        summary = await get(c, "/_sim/summary")
    acc = truth["account"]
    assert acc["balance_usd"] == summary["balance_usd"]
    assert acc["burn_usd_per_hour"] == pytest.approx(summary["burn_usd_per_hour"])
    assert acc["runway_hours"] == pytest.approx(40.0)  # the demo's design
    assert acc["in_arrears"] is False and acc["runway_reason"] is None
    by_id = {i["id"]: i for i in truth["instances"]}
    allmonth = by_id["demo-allmonth"]
    assert allmonth["running_hours_30d"] == 720.0 and allmonth["usage_hours_30d"] == 720.0
    assert allmonth["monthly_price_usd"] == 178.85
    assert allmonth["cost_30d_usd"] == pytest.approx(720 * 0.35)
    # steady use (all month) scaled to an average month of 730 h
    assert allmonth["monthly_saving_usd"] == pytest.approx(730 * 0.35 - 178.85)
    assert allmonth["break_even_hours"] == pytest.approx(511.0)
    # only the instance that runs all month would save by subscribing
    assert [i for i, t in by_id.items() if (t["monthly_saving_usd"] or 0) > 0] == ["demo-allmonth"]
    notebook = by_id["demo-notebook"]
    assert notebook["idle_since"] == "2026-11-20T07:00:00Z" and notebook["hourly_cost_usd"] == 0.35
    assert by_id["demo-trainer"]["idle_since"] is None
    assert by_id["demo-multigpu"]["idle_gpu_ids"] == [6, 7]
    assert by_id["demo-multigpu"]["monthly_saving_usd"] is None  # spot
    sub = by_id["demo-subscription"]
    assert sub["hourly_cost_usd"] is None and sub["billing_now"] is False
    assert sub["usage_hours_30d"] == 0.0 and sub["running_hours_30d"] > 600
    assert sub["monthly_saving_usd"] is None
    stuck = by_id["demo-stuck"]
    assert stuck["status"] == "pulling" and stuck["hourly_cost_usd"] is None
    stopped = by_id["demo-stopped"]
    assert stopped["running_hours_30d"] == 24.0 and stopped["hourly_cost_usd"] is None
    assert by_id["demo-pending"]["billing_mode"] is None


async def test_truth_since_and_the_hours_that_pass(http: Any) -> None:
    sim = make_sim()
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    async with http(sim) as c:
        clock.advance(2 * 3600)
        truth = await get(c, "/_sim/truth", since="2026-11-20T12:00:00Z")
        same = await get(c, "/_sim/truth", since=str(NOW))
    assert truth["instances"] == same["instances"]
    by_id = {i["id"]: i for i in truth["instances"]}
    trainer = by_id["demo-trainer"]
    assert trainer["running_hours_since"] == 2.0 and trainer["card_hours_since"] == 4.0
    assert trainer["cost_since_usd"] == pytest.approx(1.4)
    assert trainer["running_hours_30d"] == 5.5
    assert by_id["demo-stopped"]["running_hours_since"] == 0.0


async def test_truth_runway_no_burn_arrears_and_renewals(http: Any) -> None:
    sim = make_sim()
    async with http(sim) as c:
        for iid in ("demo-trainer", "demo-inference", "demo-notebook", "demo-multigpu"):
            assert (await c.post(f"{GPU}/gpu/instance/stop", json={"instanceId": iid})).is_success
        for iid in ("demo-allmonth", "demo-error"):
            assert (await c.post(f"{GPU}/gpu/instance/stop", json={"instanceId": iid})).is_success
        sim.clock.advance(120)  # type: ignore[attr-defined]
        acc = (await get(c, "/_sim/truth"))["account"]
        assert acc["burn_usd_per_hour"] == 0
        assert (acc["runway_hours"], acc["runway_reason"]) == (None, "no_burn")

        # a burn of $0.35/h; auto-renew switched on 2 days before expiry: charged at once
        # (3 days before endTime has passed), the next charge 3 days before the new endTime
        assert await c.post(f"{GPU}/gpu/instance/start", json={"instanceId": "demo-notebook"})
        sim.clock.advance(60)  # type: ignore[attr-defined]
        before = (await get(c, "/_sim/truth"))["account"]["balance_usd"]
        r = await c.post(
            f"{GPU}/gpu/instance/setAutoRenew",
            json={"instanceIds": ["demo-lapsing"], "autoRenew": True, "autoRenewMonth": 1},
        )
        assert r.is_success
        assert (await c.post("/_sim/topup", json={"usd": 300})).is_success
        truth = await get(c, "/_sim/truth")
        acc = truth["account"]
        lapsing = next(i for i in truth["instances"] if i["id"] == "demo-lapsing")
        renewal = lapsing["monthly_price_usd"]
        assert renewal == 188.048  # cluster 3's 4090 ($0.368/h) x 730 h x 0.70
        assert acc["balance_usd"] == pytest.approx(before + 300 - renewal, abs=0.01)
        assert lapsing["auto_renew"] is True
        end = datetime.fromisoformat(lapsing["end_time"])
        assert end - sim.clock.now() > timedelta(days=29)  # renewed a month on
        hours_to_charge = (end - timedelta(days=3) - sim.clock.now()) / timedelta(hours=1)
        burn = acc["burn_usd_per_hour"]
        assert burn == pytest.approx(0.35)
        assert acc["balance_usd"] / burn > hours_to_charge  # the charge falls inside the runway
        # what is left by then does not cover the charge: the runway ends with it
        assert acc["balance_usd"] - burn * hours_to_charge < renewal
        assert acc["runway_hours"] == pytest.approx(hours_to_charge, abs=1e-3)
        assert (await c.post("/_sim/topup", json={"usd": 200})).is_success
        acc = (await get(c, "/_sim/truth"))["account"]
        left = acc["balance_usd"] - burn * hours_to_charge - renewal
        assert left > 0
        assert acc["runway_hours"] == pytest.approx(hours_to_charge + left / burn, abs=1e-3)

        r = await c.post("/_sim/topup", json={"usd": -(acc["balance_usd"] + 5)})
        acc = (await get(c, "/_sim/truth"))["account"]
        assert acc["balance_usd"] == pytest.approx(-5.0, abs=0.01)
        assert (acc["runway_hours"], acc["in_arrears"], acc["runway_reason"]) == (
            0.0,
            True,
            "in_arrears",
        )


async def test_truth_metrics_are_the_wire_values_in_plain_form(http: Any) -> None:
    sim = make_sim(cpu="per-core", **{"metric-ts": "iso"})
    async with http(sim) as c:
        wire = await get(
            c,
            "/openapi/v1/metrics/gpu/instance",
            instanceId="demo-multigpu",
            startTime=NOW - 600,
            endTime=NOW,
            interval=60,
        )
        truth = await get(
            c, "/_sim/truth/metrics", instanceId="demo-multigpu", start=NOW - 600, end=NOW
        )
        missing = await c.get("/_sim/truth/metrics", params={"instanceId": "demo-multigpu"})
    points = truth["points"]
    assert [p["ts"] for p in points] == list(range(NOW - 600, NOW + 1, 60))  # lag not applied
    by_ts = {p["ts"]: p for p in points}
    for avg, cpu in zip(wire["gpuUtilization"]["avg"], wire["cpuUtilization"], strict=True):
        ts = int(datetime.fromisoformat(avg["timestamp"].replace("Z", "+00:00")).timestamp())
        assert avg["value"] == pytest.approx(by_ts[ts]["gpu_util"], abs=0.006)
        assert cpu["value"] == pytest.approx(by_ts[ts]["cpu_per_core"], abs=0.006)
    assert all(p["gpu_utils"][6] <= 2 and p["gpu_utils"][7] <= 2 for p in points)
    assert missing.status_code == 400


# ------------------------------------------------------------------------------ the client


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _add(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    info = warning = debug = error = _add

    def readings(self) -> list[tuple[str, str]]:
        return [(kw["what"], kw["value"]) for e, kw in self.events if e == "novita.reading"]


@pytest.fixture
def fresh_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once per process: each test starts with nothing logged yet."""
    monkeypatch.setattr(novita_client, "READINGS", set())


@pytest.fixture
async def sim_client() -> AsyncIterator[Callable[..., NovitaClient]]:
    made: list[NovitaClient] = []

    def make(sim: FleetSim, log: Log) -> NovitaClient:
        client = NovitaClient(
            "k",
            "http://sim",
            transport=httpx.ASGITransport(app=create_app(sim)),
            logger=log,
            clock=sim.clock,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.mark.parametrize("base", ["0", "1"])
async def test_client_reads_every_instance_and_names_the_page_base_once(
    sim_client: Any, fresh_readings: None, base: str
) -> None:
    sim, log = make_sim(**{"page-base": base}), Log()
    client = sim_client(sim, log)
    for _ in range(3):
        got = await client.list_instances(page_size=4)
        assert len({i.id for i in got}) == 11
    assert client.readings["page_base"] == base
    assert log.readings() == [("page_base", base)]
    # a second client of the same process says nothing new
    other_log = Log()
    other = sim_client(sim, other_log)
    await other.list_instances(page_size=4)
    assert other.readings["page_base"] == base and other_log.readings() == []


async def test_client_parses_auto_renew_and_data_retention(sim_client: Any) -> None:
    sim = make_sim()
    client = sim_client(sim, Log())
    listed = {i.id: i for i in await client.list_instances()}
    one = await client.get_instance("demo-lapsing")
    for inst in (listed["demo-lapsing"], one):
        assert (inst.auto_renew, inst.auto_renew_month, inst.keep_data_day) == (False, 1, 7)


@pytest.mark.parametrize("form", ["s", "ms", "iso"])
async def test_client_reads_each_timestamp_form_and_names_it(
    sim_client: Any, fresh_readings: None, form: str
) -> None:
    sim, log = make_sim(**{"metric-ts": form}), Log()
    client = sim_client(sim, log)
    start = T0 - timedelta(minutes=10)
    for _ in range(2):
        m = await client.get_metrics("demo-trainer", start, T0, interval_s=60)
        assert m.gpu_utilization.avg[0].timestamp == start
    assert client.readings["metric_timestamp"] == form
    assert log.readings().count(("metric_timestamp", form)) == 1


async def test_client_withholds_cpu_until_it_is_shown_summed(
    sim_client: Any, fresh_readings: None
) -> None:
    sim, log = make_sim(), Log()
    client = sim_client(sim, log)
    start = T0 - timedelta(minutes=10)
    quiet = await client.get_metrics("demo-notebook", start, T0, interval_s=60)
    # 16 cores at 1-3 % each: a summed series below 100 looks like a per-core one
    assert quiet.cpu_utilization == [] and client.readings["cpu"] == "unknown"
    busy = await client.get_metrics("demo-trainer", start, T0, interval_s=60)
    assert max(p.value for p in busy.cpu_utilization) > 100
    assert client.readings["cpu"] == "summed"
    quiet = await client.get_metrics("demo-notebook", start, T0, interval_s=60)
    assert quiet.cpu_utilization and max(p.value for p in quiet.cpu_utilization) < 100
    assert log.readings() == [
        ("metric_timestamp", "s"),
        ("metric_lag", "60s+"),
        ("cpu", "unknown"),
        ("cpu", "summed"),
    ]


async def test_client_never_takes_per_core_cpu_for_summed(
    sim_client: Any, fresh_readings: None
) -> None:
    sim = make_sim(cpu="per-core", **{"metric-lag": "120"})
    client = sim_client(sim, Log())
    for iid in ("demo-trainer", "demo-allmonth", "demo-notebook"):
        m = await client.get_metrics(iid, T0 - timedelta(hours=1), T0, interval_s=60)
        assert m.cpu_utilization == []
    assert client.readings["cpu"] == "unknown"
    assert client.readings["metric_lag"] == "120s+" and client.metric_lag_s == 120


def test_product_prices_divided_by_a_price_precision_sent_with_them() -> None:
    plain = Product.model_validate(
        {"id": "p", "price": 35000, "spotPrice": "17500", "monthlyPrice": [{"price": 17885000}]}
    )
    scaled = Product.model_validate(
        {
            "id": "p",
            "price": 350000000,
            "spotPrice": "175000000",
            "pricePrecision": "10000",
            "monthlyPrice": [{"price": 178850000000, "month": 1}],
        }
    )
    assert plain.price_usd_per_hour == scaled.price_usd_per_hour == Decimal("0.35")
    assert scaled.spot_price_usd_per_hour == Decimal("0.175")
    assert scaled.monthly_price_usd(1) == Decimal("178.85")
    assert scaled.price_precision == 10000


def test_quirk_positions_do_not_leak_between_models() -> None:
    a, b = make_sim(**{"price-basis": "per-instance"}), make_sim()
    assert a.instance("demo-multigpu").price_units == 1
    assert b.instance("demo-multigpu").price_units == 8


def test_auto_renewal_is_charged_three_days_early_or_at_expiry() -> None:
    sim = make_sim()
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    for inst in sim.instances():  # nothing burns: the balance moves by the renewals alone
        if inst.billing_mode in ("onDemand", "spot") and inst.status == "running":
            sim.perform("stop", {"instanceId": inst.id})
    sim.perform("renewInstance", {"instanceId": "demo-lapsing", "month": 1})
    end = sim.instance("demo-lapsing").end_time or 0
    sim.perform(
        "setAutoRenew", {"instanceIds": ["demo-lapsing"], "autoRenew": True, "autoRenewMonth": 1}
    )
    assert sim.renewal_due(sim.instance("demo-lapsing")) == end - 3 * 86400
    sim.top_up(10_000_000)  # $1000: enough for both renewals and the burn
    clock.set(datetime.fromtimestamp(end - 3 * 86400 - 60, T0.tzinfo))
    assert sim.instance("demo-lapsing").end_time == end
    clock.advance(120)
    inst = sim.instance("demo-lapsing")
    assert inst.end_time is not None and inst.end_time > end
    charges = [c for c in sim.fixed_charges() if c.instance_id == "demo-lapsing"]
    assert charges[-1].time == end - 3 * 86400 and charges[-1].start == end

    # short of money 3 days early: tried again at endTime (where a top-up has made it enough)
    end = inst.end_time
    sim.top_up(-sim.balance_10k() - 10_000)  # -$1
    clock.set(datetime.fromtimestamp(end - 86400, T0.tzinfo))
    assert sim.instance("demo-lapsing").end_time == end  # the early charge failed
    assert sim.renewal_due(sim.instance("demo-lapsing")) == end
    sim.top_up(5_000_000)
    clock.set(datetime.fromtimestamp(end + 60, T0.tzinfo))
    inst = sim.instance("demo-lapsing")
    assert inst.status == "running" and (inst.end_time or 0) > end
    charges = [c for c in sim.fixed_charges() if c.instance_id == "demo-lapsing"]
    assert charges[-1].time == end


def test_simulator_command_serves_the_switches_it_was_given() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monitor",
            "simulator",
            "--port",
            "0",
            "--quirk",
            "bill-time=hours",
            "--quirk",
            "metric-ts=iso",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # "listening on http://127.0.0.1:PORT"
        assert line.startswith("listening on http://127.0.0.1:"), line
        url = line.removeprefix("listening on ")
        quirks = httpx.get(f"{url}/_sim/quirks", timeout=10).json()
        assert quirks == Quirks.of(["bill-time=hours", "metric-ts=iso"]).as_dict()
        truth = httpx.get(f"{url}/_sim/truth", timeout=10).json()
        assert truth["quirks"]["bill-time"] == "hours" and truth["scenario"] == "demo"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
