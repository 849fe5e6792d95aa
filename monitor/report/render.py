"""The report rendered three ways: a text table, JSON, and one self-contained HTML file whose
charts are inline SVG (no external asset, no script). Each chart element carries its figure in
``data-value`` (the JSON report's number, or ``unknown``) and in its ``<title>``.

No figure is computed here: the numbers are the model's, rounded for display (money at 4
places in JSON and in ``data-value``, 2 on screen; hours at 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from monitor.report.model import AccountReport, Report

FORMATS = ("text", "json", "html")
#: the media type and file suffix of each format (for ``--output`` and attachments)
MEDIA = {"text": ("text/plain", "txt"), "json": ("application/json", "json"),
         "html": ("text/html", "html")}  # fmt: skip
UNKNOWN = "unknown"


def _num(value: Decimal | float | None, places: int = 4) -> float | None:
    return None if value is None else round(float(value), places)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat().replace("+00:00", "Z")


def _money(value: Decimal | float | None) -> str:
    if value is None:
        return UNKNOWN
    v = float(value)
    return f"-${-v:,.2f}" if v < 0 else f"${v:,.2f}"


def _hours(value: float | None) -> str:
    return UNKNOWN if value is None else f"{value:,.2f}"


# -- JSON ---------------------------------------------------------------------------------------


def _account_json(acc: AccountReport) -> dict[str, Any]:
    return {
        "name": acc.name,
        "spend_usd": _num(acc.spend_usd),
        "spend_by_day": [{"day": d.day.date().isoformat(), "usd": _num(d.usd)} for d in acc.days],
        "spend_by_instance": [
            {
                "id": i.id,
                "name": i.name,
                "product": i.product,
                "gpu_count": i.gpu_count,
                "billing_mode": i.billing_mode,
                "usd": _num(i.spend_usd),
                "billed_hours": _num(i.billed_hours, 2),
                "idle_gpu_hours": _num(i.idle_gpu_hours, 2),
                "idle_cost_usd": _num(i.idle_cost_usd),
            }
            for i in acc.instances
        ],
        "spend_by_product": [
            {"id": p.id, "name": p.name, "usd": _num(p.usd)} for p in acc.products
        ],
        "idle": {
            "from": _iso(acc.idle_from),
            "gpu_hours": _num(acc.idle_gpu_hours, 2),
            "cost_usd": _num(acc.idle_cost_usd),
        },
        "savings": {
            "realized_usd": _num(acc.savings_usd),
            "by_rule": [
                {"rule": s.rule, "realized_usd": _num(s.realized_usd)} for s in acc.savings_by_rule
            ],
        },
        "alerts": [
            {
                "rule": a.rule,
                "severity": a.severity,
                "resource_id": a.resource_id,
                "resource_name": a.resource_name,
                "state": a.state,
                "firing_since": _iso(a.firing_since),
                "resolved_at": _iso(a.resolved_at),
                "summary": a.summary,
            }
            for a in acc.alerts
        ],
        "subscription_advice": [
            {
                "instance_id": a.instance_id,
                "name": a.name,
                "hourly_usd": a.hourly_usd,
                "monthly_price_usd": a.monthly_price_usd,
                "break_even_hours": a.break_even_hours,
                "monthly_saving_usd": a.monthly_saving_usd,
            }
            for a in acc.advice
        ],
        "data_problems": list(acc.problems),
    }


def to_json(report: Report) -> dict[str, Any]:
    return {
        "generated_at": _iso(report.generated_at),
        "start": _iso(report.start),
        "end": _iso(report.end),
        "idle_threshold_percent": report.idle_threshold,
        "accounts": [_account_json(a) for a in report.accounts],
    }


def _idle_cost(billing_mode: str | None, usd: Decimal | float | None) -> str:
    """A prepaid subscription's idle hours cost nothing more: shown as such, not unknown."""
    return "prepaid" if billing_mode == "monthly" else _money(usd)


# -- text ---------------------------------------------------------------------------------------


def render_text(report: Report) -> str:
    lines = [
        f"novita-monitor report {report.start:%Y-%m-%d %H:%M} - {report.end:%Y-%m-%d %H:%M} UTC"
    ]
    for acc in report.accounts:
        lines += ["", f"account {acc.name}: spent {_money(acc.spend_usd)}"]
        lines.append("  spend by day (UTC)")
        lines += [f"    {d.day:%Y-%m-%d}  {_money(d.usd):>12}" for d in acc.days]
        lines.append("  spend by instance")
        lines.append(
            f"    {'ID':<22} {'NAME':<20} {'SPENT':>12} {'BILLED H':>9} {'IDLE GPU-H':>10} "
            f"{'IDLE COST':>12}"
        )
        for i in acc.instances:
            lines.append(
                f"    {i.id[:22]:<22} {i.name[:20]:<20} {_money(i.spend_usd):>12} "
                f"{_hours(i.billed_hours):>9} {_hours(i.idle_gpu_hours):>10} "
                f"{_idle_cost(i.billing_mode, i.idle_cost_usd):>12}"
            )
        lines.append("  spend by product")
        lines += [f"    {p.name[:40]:<40} {_money(p.usd):>12}" for p in acc.products]
        since = f" (minutes since {_iso(acc.idle_from)})" if acc.idle_from else ""
        lines.append(
            f"  idle GPU-hours{since}: {_hours(acc.idle_gpu_hours)}, "
            f"costing {_money(acc.idle_cost_usd)} (billed by the hour; prepaid excluded)"
        )
        lines.append(f"  savings realized by actions: {_money(acc.savings_usd)}")
        lines += [f"    {s.rule}: {_money(s.realized_usd)}" for s in acc.savings_by_rule]
        lines.append(f"  alerts raised: {len(acc.alerts)}")
        lines += [
            f"    [{a.severity}] {a.summary or f'{a.rule}: {a.resource_id}'} "
            f"(fired {_iso(a.firing_since)}, {a.state})"
            for a in acc.alerts
        ]
        lines.append("  subscription advice")
        for a in acc.advice:
            lines.append(
                f"    {a.instance_id} {a.name}: break-even {_hours(a.break_even_hours)} h/month, "
                f"monthly saving {_money(a.monthly_saving_usd)}"
            )
        if acc.problems:
            lines.append(f"  UNKNOWN FIGURES: {'; '.join(acc.problems)}")
    return "\n".join(lines) + "\n"


def summary_text(report: Report) -> str:
    """A few lines for a channel that takes no attachment (chat, webhook)."""
    out = [f"Cost report {report.start:%Y-%m-%d} - {report.end:%Y-%m-%d %H:%M} UTC"]
    for acc in report.accounts:
        out.append(
            f"{acc.name}: spent {_money(acc.spend_usd)}; idle GPU-hours "
            f"{_hours(acc.idle_gpu_hours)} costing {_money(acc.idle_cost_usd)}; saved "
            f"{_money(acc.savings_usd)} by actions; {len(acc.alerts)} alert(s)"
        )
        top = sorted(
            (i for i in acc.instances if i.spend_usd),
            key=lambda i: i.spend_usd or Decimal(0),
            reverse=True,
        )[:3]
        if top:
            out.append(
                "  top: " + ", ".join(f"{i.name or i.id} {_money(i.spend_usd)}" for i in top)
            )
        for a in acc.advice:
            if a.monthly_saving_usd:
                out.append(
                    f"  a subscription for {a.name or a.instance_id} would save "
                    f"{_money(a.monthly_saving_usd)}/month"
                )
    return "\n".join(out)


# -- HTML ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One bar of a chart: its label, its figure (as the JSON report has it) and geometry."""

    label: str
    value: float | None
    text: str
    x: float
    y: float
    width: float
    height: float

    @property
    def data_value(self) -> str:
        return UNKNOWN if self.value is None else repr(self.value)


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    width: int
    height: int
    bars: tuple[Bar, ...]


_LABEL_W, _BAR_H, _GAP, _PLOT_W, _VALUE_W = 200, 18, 6, 360, 110


def chart(
    chart_id: str, title: str, items: list[tuple[str, float | None]], money: bool = True
) -> Chart:
    """A horizontal bar chart: one bar per item, scaled to the largest known value; an unknown
    value gets no bar (its label says ``unknown``)."""
    top = max((v for _, v in items if v is not None and v > 0), default=0.0)
    bars = []
    for n, (label, value) in enumerate(items):
        width = 0.0 if value is None or top <= 0 else max(0.0, value) / top * _PLOT_W
        text = _money(value) if money else _hours(value)
        y = n * (_BAR_H + _GAP)
        bars.append(Bar(label, value, text, _LABEL_W, y, round(width, 2), _BAR_H))
    height = max(1, len(items)) * (_BAR_H + _GAP)
    return Chart(chart_id, title, _LABEL_W + _PLOT_W + _VALUE_W, height, tuple(bars))


def _charts(acc: AccountReport, data: dict[str, Any]) -> list[Chart]:
    return [
        chart(
            "spend-by-day",
            "Spend by day (UTC)",
            [(d["day"], d["usd"]) for d in data["spend_by_day"]],
        ),
        chart(
            "spend-by-instance",
            "Spend by instance",
            [(i["name"] or i["id"], i["usd"]) for i in data["spend_by_instance"]],
        ),
        chart(
            "spend-by-product",
            "Spend by product",
            [(p["name"], p["usd"]) for p in data["spend_by_product"]],
        ),
        chart(
            "idle-gpu-hours",
            "Idle GPU-hours by instance",
            [(i["name"] or i["id"], i["idle_gpu_hours"]) for i in data["spend_by_instance"]],
            money=False,
        ),
        chart(
            "idle-cost",
            "Idle cost by instance",
            [
                (i["name"] or i["id"], i["idle_cost_usd"])
                for i in data["spend_by_instance"]
                if i["billing_mode"] != "monthly"
            ],
        ),
    ]


def render_html(report: Report) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("monitor", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    data = to_json(report)
    accounts = [
        {"data": acc_data, "charts": _charts(acc, acc_data), "model": acc}
        for acc, acc_data in zip(report.accounts, data["accounts"], strict=True)
    ]
    return env.get_template("report.html.j2").render(
        report=data, accounts=accounts, money=_money, hours=_hours, idle_cost=_idle_cost
    )


def render(report: Report, fmt: str) -> str:
    """The report as ``fmt`` (:data:`FORMATS`)."""
    if fmt == "json":
        return json.dumps(to_json(report), indent=2) + "\n"
    if fmt == "html":
        return render_html(report)
    if fmt == "text":
        return render_text(report)
    raise ValueError(f"unknown report format {fmt!r} (expected one of: {', '.join(FORMATS)})")
