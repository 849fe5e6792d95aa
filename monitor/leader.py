"""One leader among the replicas sharing a PostgreSQL database.

Several ``run`` daemons of one configuration (replicas) may share one PostgreSQL database;
exactly one of them, the leader, collects, evaluates, delivers and acts. It is the holder of a
lease row (``leader_lease``, ``monitor.store.lease``; one per set of accounts,
:func:`lease_name`) that it renews every third of the lease (``leader: {lease: 15s}``);
the others (followers) step as often, find the lease live and wait. When the leader dies, its
lease expires and the next follower to step takes it over with the next ``epoch``: within
4/3 of a lease (the expiry, then at most a third of a lease to the next step).

The lease's times are the daemon's clock's (``run --clock`` follows the simulator's): replicas'
clocks must agree within a small part of the lease. Safety does not depend on it: every write
transaction of the leader checks at its commit that the row still carries its epoch (the
fence, :func:`monitor.store.lease.install_fence`), so a leader that lost its lease (paused,
cut off, its clock late) can no longer write; what it was doing is refused and rolled back.

:func:`next_lease` is the one pure step; :class:`Leadership` is what this process knows (read
by ``/readyz``); :class:`Elector` steps on a thread of its own (a long evaluation on the event
loop does not delay a renewal).

On SQLite there is no lease: one daemon per database file (``monitor.store.filelock``).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine

from monitor.clock import Clock
from monitor.errors import RuntimeFailure
from monitor.store.lease import Lease, NotLeader, read_leases, release_lease, step_lease

__all__ = [
    "Elector",
    "LeaderRunning",
    "Leadership",
    "NotLeader",
    "holder_id",
    "lease_name",
    "next_lease",
    "refuse_if_led",
]

log = structlog.get_logger("monitor.leader")


def lease_name(accounts: Iterable[str]) -> str:
    """The lease of a configuration: its account names, sorted, comma-separated. Replicas of
    one configuration share it; daemons of distinct accounts on one database each lead their
    own (and ``once`` is refused when a live lease covers one of its accounts)."""
    return ",".join(sorted(set(accounts)))


class LeaderRunning(RuntimeFailure):
    """``once`` while a live leader holds the database (``--force`` runs anyway)."""


def holder_id() -> str:
    """This process in the lease row: host, pid, and a random part (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def next_lease(current: Lease, me: str, now: datetime, lease: timedelta) -> Lease | None:
    """What ``me`` writes to the lease row ``current`` at ``now``; None: someone else leads.

    * ours (same holder): renewed to ``now + lease``, same epoch (no one took it meanwhile:
      the row is locked while this is decided);
    * never held, or expired: taken over, with the next epoch;
    * someone else's, live: None.
    """
    if current.holder == me:
        return replace(current, expires_at=now + lease)
    if not current.live(now):
        return Lease(current.name, me, current.epoch + 1, now, now + lease)
    return None


@dataclass
class Leadership:
    """What this process knows of the leadership (``/readyz`` reads it).

    ``is_leader``: this process holds the lease; ``epoch``: the lease's epoch as last seen
    (this process's own while it leads); ``holder``: the leader as last seen (None: none);
    ``leader_seen_at``: when a live lease was last seen (this process's last renewal while it
    leads), on the daemon's clock."""

    me: str
    is_leader: bool = False
    epoch: int | None = None
    holder: str | None = None
    leader_seen_at: datetime | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def token(self) -> tuple[str, int] | None:
        """(holder, epoch) while this process leads: what the fence compares the row with."""
        with self._lock:
            if not self.is_leader or self.epoch is None:
                return None
            return (self.me, self.epoch)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "is_leader": self.is_leader,
                "epoch": self.epoch,
                "holder": self.holder,
                "leader_seen_at": self.leader_seen_at,
            }

    def observe(self, lease: Lease, now: datetime) -> bool:
        """Take in the row after a step; True when this process's role changed (or it leads
        under another epoch: it lost the lease and took it again, another led meanwhile)."""
        with self._lock:
            was, was_epoch = self.is_leader, self.epoch
            live = lease.live(now)
            self.is_leader = live and lease.holder == self.me
            self.epoch = lease.epoch
            self.holder = lease.holder if live else None
            if live:
                self.leader_seen_at = now
            return was != self.is_leader or (self.is_leader and was_epoch != self.epoch)

    def observe_sole(self, now: datetime) -> None:
        """The one daemon of its database (SQLite, held by its lock file): it leads."""
        with self._lock:
            self.is_leader, self.epoch, self.holder = True, None, self.me
            self.leader_seen_at = now

    def step_down(self) -> bool:
        """Stop leading (the lease could not be renewed in time); True when it led."""
        with self._lock:
            was, self.is_leader = self.is_leader, False
            return was


class Elector:
    """Steps the lease every ``lease / 3`` (in the clock's time, so ``speed`` times faster in
    wall time) on a thread, and calls ``on_change(is_leader)`` when the role changes."""

    def __init__(
        self,
        engine: Engine,
        leadership: Leadership,
        clock: Clock,
        lease_s: float,
        on_change: Callable[[bool], None],
        name: str,
        speed: float = 1.0,
    ) -> None:
        self.engine = engine
        self.leadership = leadership
        self.clock = clock
        self.lease = timedelta(seconds=lease_s)
        self.on_change = on_change
        self.interval_s = lease_s / 3 / speed
        self.name = name
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._expires_at: datetime | None = None  # our own lease, while we lead
        self._first = True

    def step(self) -> None:
        """One step: renew, take over, or see who leads; logs and reports role changes."""
        me = self.leadership.me
        now = self.clock.now()
        try:
            row, _wrote = step_lease(
                self.engine, self.name, lambda cur: next_lease(cur, me, now, self.lease)
            )
        except Exception as exc:  # the database down: keep the role until the lease ends
            log.warning("lease_step_failed", error=f"{type(exc).__name__}: {exc}")
            if self._expires_at is not None and self.clock.now() >= self._expires_at:
                self._expires_at = None
                if self.leadership.step_down():
                    log.error("leadership_lost", reason="lease expired before it was renewed")
                    self.on_change(False)
            return
        seen = self.leadership.holder
        changed = self.leadership.observe(row, now)
        self._expires_at = row.expires_at if self.leadership.is_leader else None
        if changed and self.leadership.is_leader:
            log.info("leader_elected", holder=me, epoch=row.epoch, lease_s=self.lease.seconds)
        elif changed:
            log.error("leadership_lost", holder=row.holder, epoch=row.epoch)
        if not self.leadership.is_leader and (self._first or self.leadership.holder != seen):
            log.info("follower", leader=self.leadership.holder, epoch=row.epoch)
        self._first = False
        if changed:
            self.on_change(self.leadership.is_leader)

    def start(self) -> None:
        def loop() -> None:
            while True:
                self.step()
                if self._stopping.wait(self.interval_s):
                    return

        self._thread = threading.Thread(target=loop, name="leader-elector", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        """Stop stepping; ``release``: end our lease now, so a follower takes over at once."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        token = self.leadership.token()
        if release and token is not None:
            try:
                release_lease(self.engine, self.name, token[0], token[1], self.clock.now())
            except Exception as exc:
                log.warning("lease_release_failed", error=f"{type(exc).__name__}: {exc}")
            self.leadership.step_down()
            log.info("lease_released", holder=token[0], epoch=token[1])


def refuse_if_led(engine: Engine, now: datetime, accounts: Iterable[str]) -> None:
    """``once`` on accounts a live daemon leads: raise :class:`LeaderRunning` (the daemon
    already collects, evaluates, acts and delivers; ``once --force`` runs anyway)."""
    mine = set(accounts)
    for lease in read_leases(engine):
        if lease.live(now) and mine & set(lease.name.split(",")):
            raise LeaderRunning(
                f"a novita-monitor daemon ({lease.holder}, epoch {lease.epoch}) leads this "
                f"database for accounts {lease.name} until "
                f"{lease.expires_at.isoformat(timespec='seconds')} (its lease, renewed while it "
                "runs): it already collects, evaluates, acts and delivers; stop it first, or "
                "pass --force"
            )
