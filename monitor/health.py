"""Readiness: is this daemon's view of the accounts fresh enough to be trusted?

``/readyz`` (:mod:`monitor.web`) answers what a :data:`ReadinessCheck` says. The daemon's
check is :func:`collections_fresh`: ready when no collector of any account is stale, by the
same notion ``status`` and the rules use (``StoreFacts.stale_store_collectors``: a collector
whose last success is older than ``stale_after`` x its interval, or that never succeeded).

Replicas (PostgreSQL, ``monitor.leader``): a follower does not collect, so its own collections
say nothing; it is ready while it sees a live leader (:func:`follower_ready`), and the leader
answers by its collections like a sole daemon. A daemon may also be given another check
(``monitor.daemon.Daemon(readiness=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from monitor.facts import StoreFacts

__all__ = ["Readiness", "ReadinessCheck", "collections_fresh", "follower_ready", "not_started"]


@dataclass(frozen=True)
class Readiness:
    """What ``/readyz`` answers: ready or not, a short reason, and details (JSON values)."""

    ready: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "reason": self.reason, **self.details}


#: how a daemon answers ``/readyz``: called at each request, on the event loop
ReadinessCheck = Callable[[], Readiness]


def not_started() -> Readiness:
    return Readiness(False, "starting: the configuration and the database are being opened")


def collections_fresh(facts: StoreFacts, accounts: Sequence[str], now: datetime) -> Readiness:
    """Ready when every account's collections are fresh at ``now``; else which are stale."""
    stale = {
        account: names
        for account in accounts
        if (names := facts.stale_store_collectors(account, now))
    }
    if not stale:
        return Readiness(True, "collections fresh")
    listed = "; ".join(f"{account}: {', '.join(names)}" for account, names in stale.items())
    return Readiness(False, f"stale collections ({listed})", {"stale": stale})


def follower_ready(
    holder: str | None, leader_seen_at: datetime | None, now: datetime, lease_s: float
) -> Readiness:
    """A follower replica: ready while a live leader was seen within two lease periods (the
    time a takeover may take), not ready otherwise (no leader: nobody collects)."""
    details = {
        "role": "follower",
        "leader": holder,
        "leader_seen_at": None if leader_seen_at is None else leader_seen_at.isoformat(),
    }
    if leader_seen_at is not None and (now - leader_seen_at).total_seconds() <= 2 * lease_s:
        return Readiness(True, "follower, sees a live leader", details)
    return Readiness(False, "follower, no live leader seen", details)
