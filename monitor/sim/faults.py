"""Fault injection for the simulated API: what a real gateway and a flaky backend do to requests.

:class:`Faults` is a plain dataclass the test (or ``POST /_sim/faults``) may change while the
server runs. Besides the random faults (``error_rate``, ``timeout_rate``, ``malformed_rate``)
and ``fail_next`` (the next requests to a path answered with an error *before* reaching the
model), three switches shape the answers to actions (POST), each counted down as it fires:

* :meth:`Faults.fail_after` (``action_5xx_after``): the action is carried out, then answered
  5xx (default 500 ``UNKNOWN``): the client cannot know it happened (an "outcome unknown");
* :meth:`Faults.error_body_next` (``action_error_body``): a 2xx whose body is an error (by
  default ``{"code": 1, "reason": "OPERATION_LIMIT", "message": ...}``; any JSON object, e.g.
  ``{"error": "..."}``); by default the action is not carried out (``performed: true`` carries
  it out first);
* :meth:`Faults.stick_stop` (``stuck_stop``): a stop (of one instance, or of any) is accepted
  but never completes: the instance stays ``stopping`` (and keeps billing);
* :meth:`Faults.delay_next` (``action_delay``): the action is carried out, then its answer is
  held ``seconds`` of real time (to stop or kill a client mid-call).

The first two and the last fire only on actions the model carries out (or, for an error body with
``performed: false``, would be asked to); a stop refused by the model does not use up a
``stuck_stop``. Latency uses a real ``asyncio.sleep``: it models the network, and the benchmark
depends on it. The rate limit is a token bucket on real monotonic time (a network property, not a
simulated one); an excess request gets 429 ``RATE_LIMIT_EXCEEDED`` without ``Retry-After``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypeVar


@dataclass
class ForcedFailure:
    path_prefix: str
    status: int
    reason: str
    count: int


@dataclass
class AfterFailure:
    """``action_5xx_after``: carry the action out, then answer ``status``/``reason``."""

    path_prefix: str
    count: int
    status: int = 500
    reason: str = "UNKNOWN"


#: the error body of ``action_error_body`` when none is given
DEFAULT_ERROR_BODY: dict[str, Any] = {
    "code": 1,
    "reason": "OPERATION_LIMIT",
    "message": "injected: the operation was refused",
}


@dataclass
class ErrorBody:
    """``action_error_body``: answer HTTP ``status`` (2xx) with ``body``, an error."""

    path_prefix: str
    count: int
    body: Any = field(default_factory=lambda: dict(DEFAULT_ERROR_BODY))
    performed: bool = False
    status: int = 200


@dataclass
class Delay:
    """``action_delay``: carry the action out, then hold its answer ``seconds`` (real time)."""

    path_prefix: str
    count: int
    seconds: float


@dataclass
class StuckStop:
    """``stuck_stop``: the next ``count`` stops (of ``instance_id``; ``""``: of any instance)
    never complete."""

    instance_id: str
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
    after: list[AfterFailure] = field(default_factory=list)
    error_bodies: list[ErrorBody] = field(default_factory=list)
    stuck_stops: list[StuckStop] = field(default_factory=list)
    delays: list[Delay] = field(default_factory=list)
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

    def fail_after(
        self, path_prefix: str, count: int = 1, status: int = 500, reason: str = "UNKNOWN"
    ) -> None:
        """Carry out the next ``count`` actions whose path starts with ``path_prefix``, then
        answer each with ``status`` (5xx) and ``reason``."""
        if not 500 <= status <= 599:
            raise ValueError(f"action_5xx_after: status must be a 5xx, got {status}")
        with self._lock:
            self.after.append(AfterFailure(path_prefix, _count(count), status, reason))

    def error_body_next(
        self,
        path_prefix: str,
        body: Any = None,
        count: int = 1,
        performed: bool = False,
        status: int = 200,
    ) -> None:
        """Answer the next ``count`` actions whose path starts with ``path_prefix`` with HTTP
        ``status`` (2xx) and the error ``body`` (default :data:`DEFAULT_ERROR_BODY`); carried
        out first when ``performed``."""
        if not 200 <= status <= 299:
            raise ValueError(f"action_error_body: status must be a 2xx, got {status}")
        if body is None:
            body = dict(DEFAULT_ERROR_BODY)
        if not isinstance(body, dict):
            raise ValueError("action_error_body: body must be a JSON object")
        with self._lock:
            self.error_bodies.append(
                ErrorBody(path_prefix, _count(count), body, bool(performed), status)
            )

    def stick_stop(self, instance_id: str | None = None, count: int = 1) -> None:
        """The next ``count`` stops of ``instance_id`` (None: of any instance) never complete."""
        with self._lock:
            self.stuck_stops.append(StuckStop(instance_id or "", _count(count)))

    def delay_next(self, path_prefix: str, seconds: float, count: int = 1) -> None:
        """Carry out the next ``count`` actions whose path starts with ``path_prefix``, then
        hold each answer ``seconds`` of real time (a slow platform: a client may give up, a
        daemon may be stopped or killed while it waits)."""
        if not 0 < seconds <= 3600:
            raise ValueError(f"action_delay: seconds must be in (0, 3600], got {seconds}")
        with self._lock:
            self.delays.append(Delay(path_prefix, _count(count), float(seconds)))

    def take_delay(self, path: str) -> Delay | None:
        with self._lock:
            return _take(self.delays, lambda f: path.startswith(f.path_prefix))

    def take_after(self, path: str) -> AfterFailure | None:
        with self._lock:
            return _take(self.after, lambda f: path.startswith(f.path_prefix))

    def peek_error_body(self, path: str) -> ErrorBody | None:
        """The error body the next action on ``path`` would get, nothing used up."""
        with self._lock:
            return next((f for f in self.error_bodies if path.startswith(f.path_prefix)), None)

    def take_error_body(self, path: str) -> ErrorBody | None:
        with self._lock:
            return _take(self.error_bodies, lambda f: path.startswith(f.path_prefix))

    def stop_sticks(self, instance_id: str) -> bool:
        """Whether a stop of ``instance_id`` would stick (nothing used up: see
        :meth:`take_stuck_stop`)."""
        with self._lock:
            return any(s.instance_id in ("", instance_id) for s in self.stuck_stops)

    def take_stuck_stop(self, instance_id: str) -> bool:
        with self._lock:
            return _take(self.stuck_stops, lambda s: s.instance_id in ("", instance_id)) is not None

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
        switches = {
            "fail_next",
            "action_5xx_after",
            "action_error_body",
            "stuck_stop",
            "action_delay",
        }
        unknown = set(values) - set(self.TUNABLE) - switches
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
        for item in _items(values.get("action_5xx_after")):
            self.fail_after(
                str(item["path_prefix"]),
                int(item.get("count", 1)),
                int(item.get("status", 500)),
                str(item.get("reason", "UNKNOWN")),
            )
        for item in _items(values.get("action_error_body")):
            self.error_body_next(
                str(item["path_prefix"]),
                item.get("body"),
                int(item.get("count", 1)),
                _flag(item.get("performed", False)),
                int(item.get("status", 200)),
            )
        for item in _items(values.get("action_delay")):
            self.delay_next(
                str(item["path_prefix"]), float(item["seconds"]), int(item.get("count", 1))
            )
        for item in _items(values.get("stuck_stop")):
            self.stick_stop(item.get("instance_id") or None, int(item.get("count", 1)))

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
            out["action_5xx_after"] = [
                {"path_prefix": f.path_prefix, "count": f.count, "status": f.status,
                 "reason": f.reason}
                for f in self.after
            ]  # fmt: skip
            out["action_error_body"] = [
                {"path_prefix": f.path_prefix, "count": f.count, "body": f.body,
                 "performed": f.performed, "status": f.status}
                for f in self.error_bodies
            ]  # fmt: skip
            out["action_delay"] = [
                {"path_prefix": f.path_prefix, "count": f.count, "seconds": f.seconds}
                for f in self.delays
            ]
            out["stuck_stop"] = [
                {"instance_id": f.instance_id, "count": f.count} for f in self.stuck_stops
            ]
        return out


def _count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    return count


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"performed must be true or false, got {value!r}")
    return value


def _items(value: Any) -> list[dict[str, Any]]:
    """A switch's value in ``POST /_sim/faults``: one object or a list of them."""
    if not value:
        return []
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"expected an object, got {item!r}")
    return items


class _Counted(Protocol):
    count: int


T = TypeVar("T", bound=_Counted)


def _take(entries: list[T], match: Callable[[T], bool]) -> T | None:
    """Use up one count of the first entry that matches (dropped at zero); caller holds the lock."""
    for entry in entries:
        if match(entry) and entry.count > 0:
            entry.count -= 1
            if entry.count == 0:
                entries.remove(entry)
            return entry
    return None


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
