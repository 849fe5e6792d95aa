"""The simulator's quirk switches: one per reading of the API that no source settles.

Each switch is one open question of ``shared/novita-api/wire-format.md`` (§1.4, §1.5, §2.5, §6,
§7). The simulator answers it one way or the other, so the monitor can be tested against every
reading it must survive (``tests/test_quirk_matrix.py``): its figures must equal the scenario's
ground truth (``GET /_sim/truth``) or be explicitly unknown, never a wrong number.

Money switches (``bill-time``, ``monthly-price``, ``price-basis``, ``price-precision``) change
what the wire says *about* the same charges, except ``price-basis=per-instance``, which also
changes what is charged: the instance is then billed at the listed price whatever its GPU
count, so its bills tell the truth. Wire switches (``page-base``, ``metric-ts``, ``cpu``,
``metric-lag``) change only the form of the answers.

Set them with ``novita-monitor simulator --quirk KEY=VALUE`` (repeatable), with
``FleetSim(..., quirks={"bill-time": "hours"})`` in tests, or at run time with
``POST /_sim/quirks {"bill-time": "hours"}``. Money switches changed at run time rewrite the
simulated past as well (charges are computed from the model on demand): set them before the
first request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any


class QuirkError(ValueError):
    """An unknown quirk key or value; the message is one line naming what is accepted."""


@dataclass(frozen=True, slots=True)
class Switch:
    key: str
    values: tuple[str, ...]
    default: str
    meaning: str


#: every switch, in the order ``simulator --help`` lists them. The default is the likelier
#: reading where a source leans one way (``bill-time``: the console shows storage rows as
#: ``billNum0/3600/24`` GB-day and serverless rows as GPU x seconds, wire-format §7.1), else the
#: reading the monitor was built on.
SWITCHES: tuple[Switch, ...] = (
    Switch(
        "bill-time",
        ("seconds", "hours"),
        "seconds",
        "usage bills' billNum0 counts card-seconds or card-hours (docs: 'cards x billing time')",
    ),
    Switch(
        "monthly-price",
        ("total", "per-month"),
        "total",
        "product monthlyPrice[].price for m months is the total for the m months, or the "
        "price of one month of that term",
    ),
    Switch(
        "price-basis",
        ("per-gpu", "per-instance"),
        "per-gpu",
        "product price/spotPrice/monthlyPrice is per GPU, or for the whole instance whatever "
        "its GPU count (and the instance is billed so)",
    ),
    Switch(
        "price-precision",
        ("1", "10000"),
        "1",
        "bills send pricePrecision=N and their discountPrice0, basePrice0 and fixed-term "
        "basePrice are N times the 1/10000 USD figure (products never carry it)",
    ),
    Switch(
        "page-base",
        ("1", "0"),
        "1",
        "pageNum/pageNo count pages from 1 (pageNum=0 reads as page 1) or from 0",
    ),
    Switch(
        "metric-ts",
        ("s", "ms", "iso"),
        "s",
        "metric point timestamps as Unix seconds, Unix milliseconds or ISO 8601 (all strings)",
    ),
    Switch(
        "cpu",
        ("summed", "per-core"),
        "summed",
        "cpuUtilization summed over cores (up to 100 x cpuNum) or the per-core average (0-100)",
    ),
    Switch(
        "metric-lag",
        ("60", "120"),
        "60",
        "seconds by which the newest metric point trails now",
    ),
)

_BY_KEY = {s.key: s for s in SWITCHES}


def _attr(key: str) -> str:
    return key.replace("-", "_")


@dataclass(frozen=True, slots=True)
class Quirks:
    """One position of every switch (the field is the key with ``_`` for ``-``)."""

    bill_time: str = "seconds"
    monthly_price: str = "total"
    price_basis: str = "per-gpu"
    price_precision: str = "1"
    page_base: str = "1"
    metric_ts: str = "s"
    cpu: str = "summed"
    metric_lag: str = "60"

    # -- typed views used by the wire code

    @property
    def bill_seconds(self) -> bool:
        return self.bill_time == "seconds"

    @property
    def per_instance_price(self) -> bool:
        return self.price_basis == "per-instance"

    @property
    def precision(self) -> int:
        return int(self.price_precision)

    @property
    def first_page(self) -> int:
        return int(self.page_base)

    @property
    def lag_s(self) -> int:
        return int(self.metric_lag)

    # -- building

    @classmethod
    def of(cls, value: Quirks | Mapping[str, Any] | Iterable[str] | None) -> Quirks:
        """``None``, a :class:`Quirks`, a ``{key: value}`` mapping or ``KEY=VALUE`` strings."""
        if value is None:
            return cls()
        if isinstance(value, Quirks):
            return value
        return cls().updated(value)

    def updated(self, changes: Mapping[str, Any] | Iterable[str]) -> Quirks:
        """A copy with ``changes`` applied; :class:`QuirkError` names the first bad one."""
        pairs = changes.items() if isinstance(changes, Mapping) else map(_split, changes)
        out: dict[str, str] = {}
        for key, raw in pairs:
            switch = _BY_KEY.get(str(key).strip())
            if switch is None:
                raise QuirkError(
                    f"unknown quirk {key!r}; known: {', '.join(s.key for s in SWITCHES)}"
                )
            value = str(raw).strip()
            if value not in switch.values:
                raise QuirkError(
                    f"quirk {switch.key}: invalid value {value!r}; "
                    f"expected one of {'|'.join(switch.values)}"
                )
            out[_attr(switch.key)] = value
        return replace(self, **out)

    def as_dict(self) -> dict[str, str]:
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    def changed(self) -> dict[str, str]:
        """The switches not in their default position."""
        default = Quirks().as_dict()
        return {k: v for k, v in self.as_dict().items() if default[k] != v}


def _split(text: str) -> tuple[str, str]:
    key, sep, value = str(text).partition("=")
    if not sep:
        raise QuirkError(f"quirk {text!r}: expected KEY=VALUE, e.g. bill-time=hours")
    return key.strip(), value.strip()


def help_text() -> str:
    """The switches, their values and defaults, one per line (for ``--help``)."""
    return "\n".join(
        f"{s.key}={'|'.join(s.values)} (default {s.default}): {s.meaning}" for s in SWITCHES
    )


assert Quirks().as_dict() == {s.key: s.default for s in SWITCHES}, "defaults out of step"
