"""The replicas' lease row and the fence on every write (PostgreSQL; the decisions are
``monitor.leader``'s).

* :func:`step_lease` reads the lease row ``FOR UPDATE``, asks ``decide`` (a pure function of
  the row) what to write, and writes it, in one transaction: two replicas stepping at once are
  serialised by the row lock, so at most one of them holds a live lease, and the ``epoch``
  grows at every change of holder.
* :func:`install_fence` makes every transaction committed through an engine check, just before
  its ``COMMIT`` and in the same transaction, that the lease row still carries this process's
  holder and epoch (``SELECT ... FOR SHARE``): the one place all the store's writes go through
  (``engine.begin()``, ``Store.transaction()``, sessions), so claims, alert updates, the outbox
  and the ledger are fenced alike. A takeover (an ``UPDATE`` of the row) waits for a write being
  committed, and a write committed after a takeover sees the new epoch and is rolled back with
  :class:`NotLeader`. Reads commit nothing and are not checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, event, select, update

from monitor.errors import RuntimeFailure
from monitor.store import tables as t
from monitor.store.sql import insert_ignore

#: the holder of a lease row no one has held yet
NOBODY = ""
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Lease:
    """One lease row: ``holder`` leads until ``expires_at``; ``epoch`` counts the holders."""

    name: str
    holder: str
    epoch: int
    acquired_at: datetime
    expires_at: datetime

    def live(self, now: datetime) -> bool:
        """Held by someone at ``now``."""
        return self.holder != NOBODY and now < self.expires_at


class NotLeader(RuntimeFailure):
    """A write refused by the fence: this process does not hold the lease (or no longer)."""


def read_lease(engine: Engine, name: str) -> Lease | None:
    """The lease row ``name`` (None when no replica ever stepped)."""
    c = t.leader_lease.c
    with engine.connect() as conn:
        row = conn.execute(select(t.leader_lease).where(c.name == name)).first()
    return Lease(**row._mapping) if row is not None else None


def read_leases(engine: Engine) -> list[Lease]:
    """Every lease row (one per configuration's set of accounts)."""
    with engine.connect() as conn:
        rows = conn.execute(select(t.leader_lease).order_by(t.leader_lease.c.name)).all()
    return [Lease(**row._mapping) for row in rows]


def step_lease(
    engine: Engine, name: str, decide: Callable[[Lease], Lease | None]
) -> tuple[Lease, bool]:
    """One step of the lease ``name``: the row, locked, is handed to ``decide``; what it
    returns is written (None: nothing). Returns the row as it is after the step and whether
    ``decide``'s row was written."""
    c = t.leader_lease.c
    with engine.begin() as conn:
        blank = {"name": name, "holder": NOBODY, "epoch": 0}
        conn.execute(
            insert_ignore(conn, t.leader_lease, ["name"]).values(
                **blank, acquired_at=_NEVER, expires_at=_NEVER
            )
        )
        row = conn.execute(select(t.leader_lease).where(c.name == name).with_for_update()).one()
        current = Lease(**row._mapping)
        wanted = decide(current)
        if wanted is None:
            return current, False
        conn.execute(
            update(t.leader_lease)
            .where(c.name == name)
            .values(
                holder=wanted.holder,
                epoch=wanted.epoch,
                acquired_at=wanted.acquired_at,
                expires_at=wanted.expires_at,
            )
        )
        return wanted, True


def release_lease(engine: Engine, name: str, holder: str, epoch: int, now: datetime) -> bool:
    """End ``holder``'s lease now (a clean stop: another replica takes over at its next step,
    not one lease later). False when the row is no longer ``holder``'s at ``epoch``."""
    c = t.leader_lease.c
    with engine.begin() as conn:
        result = conn.execute(
            update(t.leader_lease)
            .where(c.name == name, c.holder == holder, c.epoch == epoch)
            .values(expires_at=now)
        )
        return result.rowcount == 1


#: the fence's check, in the committing transaction (PostgreSQL: the row lock waits for a
#: takeover in progress, and sees the latest committed row)
_FENCE_SQL = "SELECT holder, epoch FROM leader_lease WHERE name = %s FOR SHARE"


def install_fence(engine: Engine, name: str, token: Callable[[], tuple[str, int] | None]) -> None:
    """Refuse, from now on, every commit on ``engine`` unless the lease row ``name`` carries
    ``token()`` (holder, epoch); ``token()`` None (not the leader) refuses every write. The
    refused transaction is rolled back and :class:`NotLeader` raised to the writer."""
    if engine.dialect.name != "postgresql":
        raise ValueError("the lease fence is for PostgreSQL (SQLite: one daemon per file)")

    def check(conn: Any) -> None:
        mine = token()
        dbapi = conn.connection.dbapi_connection
        with dbapi.cursor() as cursor:
            cursor.execute(_FENCE_SQL, (name,))
            row = cursor.fetchone()
        found = (row[0], int(row[1])) if row is not None else None
        if mine is None or found != mine:
            held = f"held by {found[0]} at epoch {found[1]}" if found else "never taken"
            ours = f"epoch {mine[1]}" if mine else "not the leader"
            raise NotLeader(f"write refused: this replica is {ours}, the lease is {held}")

    event.listen(engine, "commit", check)
