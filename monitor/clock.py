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


class FollowedClock:
    """Another process's clock, followed here: the simulator's, for tests and the demo
    (``novita-monitor run --clock URL``).

    Anchored at a reading of that clock (its time and its speed), it runs ``speed`` times as
    fast as ``base`` (the wall clock) from there, so reading it costs no request;
    :meth:`sync` re-anchors it at a new reading (the daemon does every few seconds, so a
    simulator moved by hand is followed). It never goes backwards: a reading behind the time
    already given out (network delay) only slows it until it catches up.
    """

    def __init__(self, now: datetime, speed: float, base: Clock | None = None) -> None:
        if now.tzinfo is None:
            raise ValueError("FollowedClock needs an aware datetime")
        if speed <= 0:
            raise ValueError("a followed clock must run (speed > 0)")
        self._base = base or SystemClock()
        self._lock = threading.Lock()
        self._origin = self._base.now()
        self._start = now.astimezone(UTC)
        self._speed = speed
        self._given = self._start

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> datetime:
        with self._lock:
            now = self._start + (self._base.now() - self._origin) * self._speed
            self._given = max(self._given, now)
            return self._given

    def sync(self, now: datetime, speed: float) -> None:
        """Re-anchor at a new reading of the followed clock."""
        if speed <= 0:
            raise ValueError("a followed clock must run (speed > 0)")
        with self._lock:
            self._origin = self._base.now()
            self._start = now.astimezone(UTC)
            self._speed = speed


def read_clock(url: str, timeout_s: float = 5.0) -> tuple[datetime, float]:
    """Read a simulator's clock: ``GET url`` (``http://127.0.0.1:PORT/_sim/clock``) answers
    ``{"now": ISO time, "speed": factor}``. Raises ``ValueError`` naming what is wrong."""
    import httpx

    try:
        response = httpx.get(url, timeout=timeout_s)
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ValueError(f"cannot read the clock at {url}: {exc}") from None
    if not isinstance(body, dict) or "now" not in body:
        raise ValueError(f"{url} did not answer a clock (expected {{'now': ..., 'speed': ...}})")
    speed = body.get("speed")
    if not isinstance(speed, int | float) or isinstance(speed, bool) or speed <= 0:
        raise ValueError(
            f"{url}: the clock does not run on its own (speed {speed!r}; expected a number "
            "above 0: a simulator started with --speed)"
        )
    try:
        now = datetime.fromisoformat(str(body["now"]))
    except ValueError:
        raise ValueError(f"{url}: 'now' is not an ISO time: {body['now']!r}") from None
    if now.tzinfo is None:
        raise ValueError(f"{url}: 'now' has no time zone: {body['now']!r}")
    return now.astimezone(UTC), float(speed)
