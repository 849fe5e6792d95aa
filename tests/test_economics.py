"""The one module that computes cost, hours, runway and savings: its figures and their bounds."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from monitor import economics as e

D = Decimal
H = timedelta(hours=1)
DAY = timedelta(days=1)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def bill(
    start: datetime,
    hours: float,
    *,
    gpus: int = 1,
    price: str = "0.35",
    unit: int = 3600,
    period: timedelta = DAY,
    owner: str = "i-1",
    unit_price: bool = True,
    inclusive_end: bool = True,
) -> e.Bill:
    """A usage bill for ``hours`` of running with ``gpus`` cards at ``price`` per card-hour,
    ``billNum0`` counted in ``unit`` (3600: card-seconds, as the console suggests)."""
    card_hours = hours * gpus
    amount = D(price) * D(str(card_hours))
    end = start + period - timedelta(seconds=1) if inclusive_end else start + period
    return e.Bill(
        owner_id=owner,
        start=start,
        end=end,
        amount=amount,
        pay_amount=amount,
        unit_price=D(price) if unit_price else None,
        bill_num0=card_hours * unit,
    )


# -- billNum0's unit never decides alone -------------------------------------------------------


@pytest.mark.parametrize("unit", [1, 60, 3600])
def test_card_hours_come_from_money_and_billnum0_only_confirms_them(unit: int) -> None:
    figure = e.bill_card_hours(bill(T0, 10, gpus=2, unit=unit))
    assert figure.hours == pytest.approx(20)
    assert figure.unit == unit
    assert figure.problem is None


def test_card_hours_disagreeing_with_billnum0_are_unknown_and_say_why() -> None:
    b = bill(T0, 10)
    wrong = e.Bill(**{**b.__dict__, "bill_num0": 10 * 3600 * 2.0})  # twice the money's hours
    figure = e.bill_card_hours(wrong)
    assert figure.hours is None
    assert figure.problem is not None and figure.problem.kind == "bill_unit_mismatch"
    assert "billNum0=72000" in figure.problem.raw


def test_without_a_unit_price_billnum0_needs_the_unit_other_bills_showed() -> None:
    b = bill(T0, 5, unit_price=False)
    assert e.bill_card_hours(b).hours is None
    assert e.bill_card_hours(b, unit_hint=3600).hours == pytest.approx(5)
    shown = e.card_hours_by_owner([], [bill(T0 - DAY, 24), b], T0 - DAY, T0 + DAY, T0 + DAY)
    assert shown.unit == 3600
    assert shown.hours["i-1"] == pytest.approx(29)


# -- windows count bills in proportion ------------------------------------------------------


@pytest.mark.parametrize("hour", [0.5, 5, 23.5])
def test_a_24_7_instance_reads_full_time_at_any_hour_of_the_day(hour: float) -> None:
    now = T0 + timedelta(days=30, hours=hour)
    day0 = datetime(now.year, now.month, now.day, tzinfo=UTC)
    # 30 full daily bills before today, and today's partial bill as read at ``now``
    bills = [bill(day0 - (i + 1) * DAY, 24) for i in range(31)]
    bills.append(bill(day0, hour))
    window = timedelta(days=7)
    got = e.card_hours_by_owner([], bills, now - window, now, as_of=now)
    hours, problem = e.running_hours(got.hours["i-1"], 1, window)
    assert problem is None
    assert hours == pytest.approx(7 * 24, rel=1e-6)
    assert e.per_month(hours, window) == pytest.approx(e.MONTH_HOURS)


def test_hours_beyond_the_window_are_unknown_not_a_number() -> None:
    hours, problem = e.running_hours(87600.0, 1, timedelta(days=30), "i-1")
    assert hours is None
    assert problem is not None and problem.kind == "hours_out_of_bounds"
    assert "window_hours=720.00" in problem.raw


def test_spend_counts_each_bill_by_its_overlap() -> None:
    hourly = [bill(T0 + i * H, 1, period=H) for i in range(48)]  # $0.35 each
    assert e.spend(D(0), hourly, T0 + 24 * H, T0 + 48 * H, T0 + 48 * H) == D("0.35") * 24
    # half of the first hour's bill
    assert e.spend(D(0), hourly, T0 + timedelta(minutes=30), T0 + 2 * H, T0 + 48 * H) == D("0.525")
    # the bills wholly inside, summed by the store, plus the edges in proportion
    assert e.spend(D(10), hourly[:1], T0 + timedelta(minutes=30), T0 + 2 * H, T0 + 48 * H) == D(
        "10.175"
    )


def test_bills_summed_inside_a_window_are_cross_checked_per_owner() -> None:
    inside = e.BillTotals("i-1", priced=6, priced_hours=144.0, priced_num=144 * 3600.0)
    edge = bill(T0 - timedelta(hours=12), 24)  # half of it in the window
    got = e.card_hours_by_owner([inside], [edge], T0, T0 + 7 * DAY, T0 + 7 * DAY)
    assert got.unit == 3600 and got.hours["i-1"] == pytest.approx(144 + 12)
    doubled = e.BillTotals("i-2", priced=6, priced_hours=144.0, priced_num=2 * 144 * 3600.0)
    bad = e.card_hours_by_owner([doubled], [], T0, T0 + 7 * DAY, T0 + 7 * DAY)
    assert bad.hours == {"i-2": None}
    assert [p.kind for p in bad.problems] == ["bill_unit_mismatch"]
    # bills without a unit price count through the unit the others showed
    mixed = e.BillTotals("i-3", priced=1, priced_hours=24.0, priced_num=24 * 3600.0, unpriced=1,
                         unpriced_num=10 * 3600.0)  # fmt: skip
    assert e.card_hours_by_owner([mixed], [], T0, T0 + DAY, T0 + DAY).hours["i-3"] == 34.0


# -- hourly cost, monthly price, break-even --------------------------------------------------


def test_hourly_cost_is_listed_times_gpus_unless_the_bills_say_otherwise() -> None:
    args = {"status": "running", "billing_mode": "onDemand", "gpu_count": 2}
    listed = e.hourly_cost(**args, listed_unit_usd=D("0.35"), billed_usd=D("0.69"))
    assert (listed.usd, listed.source) == (D("0.70"), "listed")
    # the listed price turns out to be for the whole instance: the bills win
    billed = e.hourly_cost(**args, listed_unit_usd=D("0.35"), billed_usd=D("0.35"))
    assert (billed.usd, billed.source) == (D("0.35"), "billed")
    for status in ("pulling", "exited", "starting"):
        cost = e.hourly_cost(**{**args, "status": status}, listed_unit_usd=D(1), billed_usd=None)
        assert cost.usd is None and cost.source == "not_billing"
    monthly = e.hourly_cost(
        **{**args, "billing_mode": "monthly"}, listed_unit_usd=D(1), billed_usd=None
    )
    assert monthly.source == "not_billing"


def test_an_hourly_cost_beyond_bounds_is_unknown() -> None:
    cost = e.hourly_cost(
        status="running",
        billing_mode="onDemand",
        gpu_count=1,
        listed_unit_usd=D("0.35"),
        billed_usd=D("350"),
        max_listed_unit_usd=D("2.5"),
        resource_id="i-1",
    )
    assert cost.usd is None and cost.problem is not None
    assert cost.problem.kind == "hourly_cost_out_of_bounds"


def test_billed_hourly_cost_of_a_partly_run_hour_is_still_per_hour() -> None:
    assert e.billed_hourly_cost(D("0.35"), 1.0, 2) == D("0.70")  # 2 cards for half an hour


def test_monthly_price_follows_the_basis_the_bills_showed_and_is_bounded() -> None:
    assert e.price_units(D("0.70"), D("0.35"), 2) == 2  # per GPU
    assert e.price_units(D("0.35"), D("0.35"), 2) == 1  # per instance: the bills said so
    assert e.price_units(None, D("0.35"), 2) == 2  # no cost known: per GPU, as listed
    per_gpu, problem = e.monthly_price(
        monthly_unit_usd=D("179"), on_demand_unit_usd=D("0.35"), units=D(2)
    )
    assert problem is None and per_gpu == D("358")
    per_instance, _ = e.monthly_price(
        monthly_unit_usd=D("179"), on_demand_unit_usd=D("0.35"), units=D(1)
    )
    assert per_instance == D("179")
    assert e.break_even_hours(per_gpu, D("0.70")) == e.break_even_hours(per_instance, D("0.35"))
    # a 10x scale error (the console's reading vs ours) puts the ratio at 51 h: unknown
    wrong, problem = e.monthly_price(
        monthly_unit_usd=D("17.9"), on_demand_unit_usd=D("0.35"), units=D(1), resource_id="i-1"
    )
    assert wrong is None and problem is not None and problem.kind == "monthly_price_implausible"


def test_monthly_saving_and_break_even() -> None:
    assert e.break_even_hours(D("179"), D("0.35")) == pytest.approx(511.43, rel=1e-3)
    assert e.monthly_saving(D("0.35"), 730.0, D("179")) == D("76.5")
    assert e.monthly_saving(None, 730.0, D("179")) is None


# -- burn and runway -------------------------------------------------------------------------


def test_burn_is_unknown_when_a_billing_cost_is() -> None:
    known = e.HourlyCost(D("0.35"), "listed")
    idle = e.HourlyCost(None, "not_billing")
    assert e.burn_rate([known, idle]) == D("0.35")
    assert e.burn_rate([known, e.HourlyCost(None, "unknown")]) is None
    assert e.burn_rate([idle]) == 0


def test_runway_without_burn_in_arrears_and_plain() -> None:
    assert e.runway(D(10), D(0), [], T0) == e.Runway(None, "no_burn", False)
    arrears = e.runway(D("-1.97"), D(1), [], T0)
    assert (arrears.hours, arrears.in_arrears) == (0.0, True)
    assert e.runway(D(10), D("0.5"), [], T0).hours == pytest.approx(20)
    assert e.runway(None, D(1), [], T0).reason == "unknown_balance"
    assert e.runway(D(10), None, [], T0).reason == "unknown_burn"


def test_runway_subtracts_an_auto_renewal_due_inside_it() -> None:
    end = T0 + timedelta(days=3, hours=24)  # charged 3 days early: in 24 h
    charge = e.renewal_charge(
        instance_id="i-sub",
        billing_mode="monthly",
        end_time=end,
        auto_renew=True,
        auto_renew_months=1,
        monthly_usd=D(199),
        now=T0,
    )
    assert charge == e.Charge(T0 + 24 * H, D(199), "i-sub")
    # $250 at $1/h: $226 left after 24 h, $27 after the charge: 51 h in all
    got = e.runway(D(250), D(1), [charge], T0)
    assert got.hours == pytest.approx(51)
    assert got.charges_usd == D(199)
    # the balance runs dry before the charge: it does not count
    assert e.runway(D(10), D(1), [charge], T0).hours == pytest.approx(10)
    # a charge that empties the balance ends the runway at its time, even with no burn
    assert e.runway(D(150), D(0), [charge], T0).hours == pytest.approx(24)
    unknown = e.Charge(T0 + 24 * H, None, "i-sub")
    assert e.runway(D(250), D(1), [unknown], T0).reason == "unknown_charge"
    assert (
        e.renewal_charge(
            instance_id="i",
            billing_mode="monthly",
            end_time=end,
            auto_renew=False,
            auto_renew_months=1,
            monthly_usd=D(199),
            now=T0,
        )
        is None
    )


# -- idle ------------------------------------------------------------------------------------


def minutes(values: list[float | None], end: datetime) -> list[tuple[datetime, float | None]]:
    """Samples newest first, the last value at ``end``."""
    n = len(values)
    return [(end - (n - 1 - i) * timedelta(minutes=1), v) for i, v in enumerate(values)][::-1]


def test_idle_since_is_the_start_of_the_current_idle_stretch() -> None:
    now = T0 + 10 * H
    samples = minutes([80, 70] + [1] * 300, now)  # busy, then 5 h idle
    since = e.idle_since(samples, 5, not_before=None)
    assert since == now - timedelta(minutes=299)
    assert e.cost_since(D("0.35"), since, now) == D("0.35") * D(str(299 / 60))
    assert e.idle_since(minutes([1, 1, 80], now), 5, not_before=None) is None
    # bounded by the last start / stored history
    assert e.idle_since(samples, 5, not_before=now - H) == now - H


def test_a_gap_ends_the_idle_stretch() -> None:
    now = T0 + 10 * H
    before_gap = minutes([1] * 60, now - 2 * H)
    after_gap = minutes([1] * 30, now)
    assert e.idle_since(after_gap + before_gap, 5, not_before=None) == now - timedelta(minutes=29)
    assert e.idle_since(minutes([1, None, 1], now), 5, not_before=None) == now


def test_stale_collectors() -> None:
    now = T0
    last = {"instances": now - timedelta(seconds=100), "bills": None, "metrics": now}
    got = e.stale(last, {"instances": 60, "bills": 3600, "metrics": 60, "tasks": 60}, 1.5, now)
    assert got == ["instances", "bills"]


# -- one source ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1] / "monitor"
#: definitions that belong to the economics module alone
ONLY_IN_ECONOMICS = {"MONTH_HOURS", "TRANSITIONAL_STATUSES", "BILLABLE_STATUSES", "BILL_TOLERANCE"}


def test_only_the_economics_module_defines_the_money_constants() -> None:
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.name == "economics.py" or "sim" in path.parts:
            continue  # the simulator keeps its own ground truth on purpose
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                offenders += [f"{path.name}:{node.lineno} {n}" for n in names & ONLY_IN_ECONOMICS]
    assert offenders == []


def test_no_runway_is_computed_outside_the_economics_module() -> None:
    """A division by a burn rate is a runway: only ``economics.runway`` may do it."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.name == "economics.py" or "sim" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                text = ast.unparse(node.right).lower()
                if "burn" in text or "hourly" in text or "price" in text:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert offenders == []


def test_facts_and_economics_import_no_collector_command_or_wire_code() -> None:
    """Dependencies point one way: the facts read the store through its methods and the
    economics is pure; neither reaches down to the collectors or the wire, nor up to a
    command (``status`` is built on the facts, never the other way)."""
    from tests.test_store_imports import _imports

    checks = {
        ROOT / "facts.py": ("monitor.collect", "monitor.cli", "monitor.status", "monitor.novita"),
        ROOT / "economics.py": (
            "monitor.store", "monitor.collect", "monitor.cli", "monitor.status",
            "monitor.novita", "monitor.rules", "monitor.facts", "sqlalchemy",
        ),
    }  # fmt: skip
    bad = [
        f"{path.name}:{line}: {module}"
        for path, forbidden in checks.items()
        for line, module in _imports(path)
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    ]
    assert bad == []
    # and the facts read no table directly (only through the store's methods)
    assert "monitor.store.tables" not in {m for _, m in _imports(ROOT / "facts.py")}


def test_the_stores_bill_sums_are_the_economics_bill_totals_field_for_field() -> None:
    """The facts pass the store's sums to the economics positionally (the evaluation builds
    thousands): the two records must keep the same fields in the same order."""
    from dataclasses import fields

    from monitor.economics import BillTotals
    from monitor.store.money import BillSums

    assert BillSums._fields == tuple(f.name for f in fields(BillTotals))
