"""Time, injected.

Nothing below the composition root calls ``datetime.now()``: it is handed a :class:`Clock`.
``SystemClock`` reads the wall clock; ``ManualClock`` is moved by tests, the simulator, the demo
and a backtest.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, an aware UTC datetime."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to. Thread-safe (the simulator serves from threads)."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float = 0, **kwargs: float) -> datetime:
        delta = timedelta(seconds=seconds, **kwargs)
        if delta < timedelta(0):
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        with self._lock:
            self._now = when.astimezone(UTC)


class ScaledClock:
    """Wall-clock time running ``speed`` times faster from ``start`` (the simulator's ``--speed``)."""

    def __init__(
        self, speed: float = 1.0, start: datetime | None = None, base: Clock | None = None
    ):
        self._base = base or SystemClock()
        self._origin = self._base.now()
        self._start = start or self._origin
        self.speed = speed
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._start + (self._base.now() - self._origin) * self.speed

    def advance(self, seconds: float = 0, **kwargs: float) -> datetime:
        with self._lock:
            self._start += timedelta(seconds=seconds, **kwargs)
        return self.now()

    def set(self, when: datetime) -> None:
        with self._lock:
            self._origin = self._base.now()
            self._start = when.astimezone(UTC)
