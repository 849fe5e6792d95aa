"""Readiness: is this daemon's view of the accounts fresh enough to be trusted?

``/readyz`` (:mod:`monitor.web`) answers what a :data:`ReadinessCheck` says. The daemon's
check is :func:`collections_fresh`: ready when no collector of any account is stale, by the
same notion ``status`` and the rules use (``StoreFacts.stale_store_collectors``: a collector
whose last success is older than ``stale_after`` x its interval, or that never succeeded).

The seam for replicas: a daemon takes its check as a parameter
(``monitor.daemon.Daemon(readiness=...)``). A follower replica (leader election, later) passes
one that answers ``Readiness(True, "follower, sees a live leader")`` while it sees a live
leader, and not ready otherwise; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from monitor.facts import StoreFacts

__all__ = ["Readiness", "ReadinessCheck", "collections_fresh", "not_started"]


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
