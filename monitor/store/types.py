"""Column types and conversions shared by the tables and the repository.

Why these exist:

* ``UTCDateTime``: SQLite has no time zones; PostgreSQL has ``timestamptz``. This type takes aware
  datetimes only (a naive one is a bug upstream) and always returns aware UTC datetimes.
* ``Money``: SQLite stores ``NUMERIC`` as a float, which would lose cents. Amounts are kept as exact
  integers of micro-dollars (1e-6 USD, finer than every wire scale), so ``SUM`` stays exact in SQL on
  both databases.
* Metric values are stored as integer tenths of a percent (``encode_pct``) and per-GPU vectors as
  one byte per GPU (``pack_gpus``): small integers are what makes a minute of an instance fit in
  a few dozen bytes on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Text
from sqlalchemy.types import TypeDecorator

MICROS = Decimal(1_000_000)
#: byte meaning "no value for this GPU in this sample"
GPU_MISSING = 255


def to_epoch(when: datetime) -> int:
    """Aware datetime -> integer Unix seconds (floor)."""
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: the store takes aware UTC datetimes")
    return int(when.timestamp() // 1)


def from_epoch(seconds: int | float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def as_utc(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: the store takes aware UTC datetimes")
    return when.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out, on SQLite and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        value = as_utc(value)
        if value is not None and dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def usd_to_micros(value: Decimal | None) -> int | None:
    if value is None:
        return None
    return int((Decimal(value) * MICROS).to_integral_value(rounding=ROUND_HALF_EVEN))


def micros_to_usd(value: int | None) -> Decimal | None:
    if value is None:
        return None
    return Decimal(int(value)) / MICROS


class Money(TypeDecorator[Decimal]):
    """Decimal USD in the API, integer micro-dollars in the database."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> int | None:
        return usd_to_micros(value)

    def process_result_value(self, value: int | None, dialect: Any) -> Decimal | None:
        return micros_to_usd(value)


class EpochSeconds(TypeDecorator[datetime]):
    """Aware datetime in the API, integer Unix seconds in the database (floored).

    For keys of tables that grow with time (balance samples): an integer key is smaller than a
    timestamp on SQLite and sorts the same. Integers are accepted as bound values too, so a
    query may compare with epoch seconds directly."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | int | None, dialect: Any) -> int | None:
        if value is None or isinstance(value, int):
            return value
        return to_epoch(value)

    def process_result_value(self, value: int | None, dialect: Any) -> datetime | None:
        return None if value is None else from_epoch(value)


class JSONObject(TypeDecorator[dict[str, Any]]):
    """A JSON object that reads as ``{}`` where the column is NULL (rows written before the
    column was filled, stub rows): callers iterate the dict without a None check, as they did
    when the store's mappers coerced it."""

    impl = JSON
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> dict[str, Any]:
        return {} if value is None else dict(value)


class JSONList(TypeDecorator[list[Any]]):
    """A JSON array that reads as ``[]`` where the column is NULL (see :class:`JSONObject`)."""

    impl = JSON
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> list[Any]:
        return [] if value is None else list(value)


class TextOrEmpty(TypeDecorator[str]):
    """Text that reads as ``""`` where the column is NULL (see :class:`JSONObject`)."""

    impl = Text
    cache_ok = True

    def process_result_value(self, value: str | None, dialect: Any) -> str:
        return "" if value is None else value


class MonthlyPrices(TypeDecorator[dict[int, Decimal]]):
    """Months -> Decimal USD in the API; JSON ``{"1": "123.45"}`` (strings: exact) in the
    database, the form revisions 0001-0002 wrote."""

    impl = JSON
    cache_ok = True

    def process_bind_param(
        self, value: dict[int, Decimal] | None, dialect: Any
    ) -> dict[str, str] | None:
        if value is None:
            return None
        return {str(int(k)): str(v) for k, v in value.items()}

    def process_result_value(
        self, value: dict[str, Any] | None, dialect: Any
    ) -> dict[int, Decimal]:
        if value is None:
            return {}
        return {int(k): Decimal(str(v)) for k, v in value.items()}


def encode_pct(value: float | None) -> int | None:
    """Percent (float) -> integer tenths of a percent, the stored form of metric values."""
    if value is None:
        return None
    return round(value * 10)


def decode_pct(value: int | float | None) -> float | None:
    if value is None:
        return None
    return value / 10.0


def pack_gpus(values: Sequence[float | None]) -> bytes | None:
    """Per-GPU percents -> one byte each (rounded, clamped to 0..100; 255 = missing)."""
    if not values:
        return None
    return bytes(
        [
            GPU_MISSING if v is None else 0 if v <= 0 else 100 if v >= 100 else int(v + 0.5)
            for v in values
        ]
    )


def unpack_gpus(blob: bytes | None) -> list[float | None]:
    if not blob:
        return []
    return [None if b == GPU_MISSING else float(b) for b in bytes(blob)]
