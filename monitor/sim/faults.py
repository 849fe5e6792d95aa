"""Fault injection for the simulated API: what a real gateway and a flaky backend do to requests.

:class:`Faults` is a plain dataclass the test (or ``POST /_sim/faults``) may change while the
server runs. Latency uses a real ``asyncio.sleep``: it models the network, and the benchmark
depends on it. The rate limit is a token bucket on real monotonic time (a network property, not a
simulated one); an excess request gets 429 ``RATE_LIMIT_EXCEEDED`` without ``Retry-After``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class ForcedFailure:
    path_prefix: str
    status: int
    reason: str
    count: int


@dataclass
class Faults:
    latency_ms: float = 0.0
    max_concurrency: int = 0  # 0 = unlimited; beyond it requests wait in a queue
    rate_limit_rps: float = 0.0  # 0 = unlimited
    error_rate: float = 0.0  # share of requests answered 500 UNKNOWN or 503 SERVICE_NOT_AVAILABLE
    timeout_rate: float = 0.0  # share of requests that hang for ``hang_seconds`` (after running)
    malformed_rate: float = 0.0  # share of 200 answers whose JSON body is truncated
    hang_seconds: float = 60.0  # longer than any sane client timeout
    seed: int = 0
    forced: list[ForcedFailure] = field(default_factory=list)
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    TUNABLE = (
        "latency_ms",
        "max_concurrency",
        "rate_limit_rps",
        "error_rate",
        "timeout_rate",
        "malformed_rate",
        "hang_seconds",
    )

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def fail_next(self, path_prefix: str, status: int, reason: str, count: int = 1) -> None:
        """Answer the next ``count`` requests whose path starts with ``path_prefix`` with an error."""
        with self._lock:
            self.forced.append(ForcedFailure(path_prefix, status, reason, count))

    def take_forced(self, path: str) -> ForcedFailure | None:
        with self._lock:
            for f in self.forced:
                if path.startswith(f.path_prefix) and f.count > 0:
                    f.count -= 1
                    if f.count == 0:
                        self.forced.remove(f)
                    return f
        return None

    def draw(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def pick(self, options: tuple[Any, ...]) -> Any:
        with self._lock:
            return self._rng.choice(options)

    def update(self, values: dict[str, Any]) -> None:
        """Set tunable fields from a JSON object (``POST /_sim/faults``); unknown keys are errors."""
        unknown = set(values) - set(self.TUNABLE) - {"fail_next"}
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        for name in self.TUNABLE:
            if name in values:
                kind = int if name == "max_concurrency" else float
                setattr(self, name, kind(values[name]))
        forced = values.get("fail_next")
        if forced:
            for item in forced if isinstance(forced, list) else [forced]:
                self.fail_next(
                    str(item["path_prefix"]),
                    int(item["status"]),
                    str(item["reason"]),
                    int(item.get("count", 1)),
                )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name in self.TUNABLE
        }
        with self._lock:
            out["fail_next"] = [
                {
                    "path_prefix": f.path_prefix,
                    "status": f.status,
                    "reason": f.reason,
                    "count": f.count,
                }
                for f in self.forced
            ]
        return out


class TokenBucket:
    """Requests per second with a burst of ``max(1, rate)``; ``clock`` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rate = 0.0
        self._tokens = 0.0
        self._last = clock()
        self._lock = threading.Lock()

    def allow(self, rate: float) -> bool:
        if rate <= 0:
            return True
        with self._lock:
            now = self._clock()
            capacity = max(1.0, rate)
            if rate != self._rate:
                self._rate, self._tokens = rate, capacity
            else:
                self._tokens = min(capacity, self._tokens + (now - self._last) * rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False
