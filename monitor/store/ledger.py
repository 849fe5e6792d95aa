"""The action ledger's storage: every remedial action as one :class:`ActionRecord` row.

Only persistence and the two concurrency guarantees the actions need (the decisions live in
``monitor.actions``):

* **one intent, one action**: ``idempotency_key`` is unique; :meth:`LedgerRepo.insert_actions`
  inserts a row only when no row holds its key, so the same renewal is never planned (so never
  paid) twice, by one process or several; a row releases its key when it ends without acting
  (:func:`releases`: :data:`RELEASING_STATES`, and a failed stop or start), so a later plan for
  the same intent may go ahead;
* **one executor per row**: :meth:`LedgerRepo.claim` moves a row to ``executing`` with a
  compare-and-set on ``version`` and commits before any API call; :meth:`LedgerRepo.finish`
  records the outcome with the same compare-and-set, so a process that lost the row (or a
  stale replica) cannot overwrite it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from monitor.store import tables as t
from monitor.store.base import StoreBase
from monitor.store.models import ActionRecord

#: every state a ledger row may be in
ACTION_STATES = frozenset(
    {
        "planned", "announced", "awaiting_approval", "approved", "rejected", "expired",
        "executing", "succeeded", "failed", "aborted", "refused", "skipped", "dry_run",
        "outcome_unknown", "undone",
    }
)  # fmt: skip
#: states in which a row may still act: the act step picks them up when due
OPEN_STATES = frozenset({"planned", "announced", "awaiting_approval", "approved"})
#: states that end a row without having acted: its idempotency key is released
RELEASING_STATES = frozenset({"rejected", "expired", "aborted", "refused", "skipped", "dry_run"})
#: states of a row that acted (or may have): they count against the breakers
ACTED_STATES = frozenset({"executing", "succeeded", "failed", "outcome_unknown", "undone"})
#: actions whose ``failed`` row releases its key too: a failure left them undone and a second
#: try cannot double them (a stop of a stopped instance is refused by the re-check), so while
#: the alert keeps firing a later evaluation plans them again, with their own grace. Money
#: actions (renew, convert, set_auto_renew) keep theirs: a charge is planned once per period.
RETRIED_AFTER_FAILURE = frozenset({"stop", "start"})


def releases(action: str, state: str) -> bool:
    """Whether a row of ``action`` entering ``state`` gives up its idempotency key."""
    return state in RELEASING_STATES or (state == "failed" and action in RETRIED_AFTER_FAILURE)


_COLUMNS = [c.name for c in t.actions.columns if c.name != "id"]


def _row(action: ActionRecord) -> dict[str, Any]:
    # the fields as the record holds them (its ``__dict__``, which SQLAlchemy's instrumented
    # attributes read too): a row built by the planner has every column set
    values = vars(action)
    row = {name: values[name] if name in values else getattr(action, name) for name in _COLUMNS}
    if row["state"] not in ACTION_STATES:
        raise ValueError(f"action state must be one of {sorted(ACTION_STATES)}")
    if releases(row["action"], row["state"]):
        row["idempotency_key"] = None
    return row


class LedgerRepo(StoreBase):
    """Actions: insert-if-absent by intent, compare-and-set claims and outcomes, reads."""

    def insert_actions(
        self, actions: Iterable[ActionRecord], conn: Connection | None = None
    ) -> list[int]:
        """Insert each action whose idempotency key no row holds; return the new rows' ids,
        ascending (skipped ones are absent). Runs in ``conn``'s transaction when given (the
        evaluation writes its alert states, notifications and plans in one transaction)."""
        if conn is None:
            with self.engine.begin() as own:
                return self.insert_actions(actions, own)
        a = t.actions.c
        rows = [_row(action) for action in actions]
        keys = [r["idempotency_key"] for r in rows if r["idempotency_key"] is not None]
        held: set[str] = set()
        for start in range(0, len(keys), 500):  # one read per 500 keys, not one per row
            chunk = keys[start : start + 500]
            held |= {k for (k,) in conn.execute(select(a.idempotency_key).where(
                a.idempotency_key.in_(chunk)))}  # fmt: skip
        fresh = []
        for row in rows:
            key = row["idempotency_key"]
            if key is not None:
                if key in held:
                    continue
                held.add(key)  # the same key twice in one batch: the first only
            fresh.append(row)
        if not fresh:
            return []
        # a concurrent writer may take a key between the read and the insert: the unique
        # constraint then fails this transaction, and the caller retries. A few statements
        # for the batch ("insertmanyvalues"); asking the ids in the rows' order would make
        # that one statement per row on SQLite (it has no sentinel to sort them by).
        result = conn.execute(insert(t.actions).returning(a.id), fresh)
        return sorted(int(i) for i in result.scalars().all())

    def held_intents(self, account: str, keys: Collection[str] | None = None) -> set[str]:
        """The idempotency keys the account's rows hold (planned, acting or acted); with
        ``keys``, those of them only (the planner asks for the intents of the alerts firing,
        not for a ledger that grows by every action ever taken)."""
        a = t.actions.c
        with self.engine.connect() as conn:
            if keys is None:
                rows = conn.execute(
                    select(a.idempotency_key).where(
                        a.account == account, a.idempotency_key.is_not(None)
                    )
                )
                return {key for (key,) in rows}
            held: set[str] = set()
            wanted = sorted(keys)
            for start in range(0, len(wanted), 500):  # one read per 500 keys
                chunk = wanted[start : start + 500]
                held |= {k for (k,) in conn.execute(select(a.idempotency_key).where(
                    a.account == account, a.idempotency_key.in_(chunk)))}  # fmt: skip
        return held

    def action(self, action_id: int) -> ActionRecord | None:
        rows = self._load(select(ActionRecord).where(t.actions.c.id == action_id))
        return rows[0] if rows else None

    def actions(
        self,
        account: str | None = None,
        states: Iterable[str] | None = None,
        *,
        due_by: datetime | None = None,
        instance_id: str | None = None,
        limit: int | None = None,
    ) -> list[ActionRecord]:
        """Ledger rows, newest first (``due_by``: only rows due at or before it, oldest due
        first, the order the act step works in)."""
        a = t.actions.c
        query = select(ActionRecord)
        if account is not None:
            query = query.where(a.account == account)
        if states is not None:
            query = query.where(a.state.in_(list(states)))
        if instance_id is not None:
            query = query.where(a.instance_id == instance_id)
        if due_by is not None:
            query = query.where(a.due_at.is_not(None), a.due_at <= due_by).order_by(a.due_at, a.id)
        else:
            query = query.order_by(a.planned_at.desc(), a.id.desc())
        if limit is not None:
            query = query.limit(limit)
        return self._load(query)

    def follow_ups(self, since: datetime, account: str | None = None) -> list[ActionRecord]:
        """Succeeded rows the act step still follows, oldest first: those finished at or after
        ``since`` (their outcome is verified within a few minutes) and stops whose saving is
        still open (``saving_since`` set, ``saving_until`` not yet)."""
        a = t.actions.c
        query = select(ActionRecord).where(
            a.state == "succeeded",
            (a.finished_at >= since) | (a.saving_since.is_not(None) & a.saving_until.is_(None)),
        )
        if account is not None:
            query = query.where(a.account == account)
        return self._load(query.order_by(a.finished_at, a.id))

    def claim(self, action: ActionRecord, by: str, now: datetime) -> ActionRecord | None:
        """Move ``action`` to ``executing`` if no one moved it since it was read (its
        ``version``), committing before the caller calls the API; None when another process
        (or an approval, a rejection) got there first."""
        return self.transition(
            action,
            "executing",
            now,
            claimed_by=by,
            started_at=now,
            attempts=action.attempts + 1,
        )

    def transition(
        self, action: ActionRecord, state: str, now: datetime, **fields: Any
    ) -> ActionRecord | None:
        """Move ``action`` to ``state`` (and set ``fields``) with a compare-and-set on its
        ``version``; a state that ends without acting releases the idempotency key. Returns
        the updated row, or None when the row changed since it was read."""
        if state not in ACTION_STATES:
            raise ValueError(f"action state must be one of {sorted(ACTION_STATES)}")
        unknown = set(fields) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown action fields: {sorted(unknown)}")
        values: dict[str, Any] = {**fields, "state": state, "version": action.version + 1}
        if releases(action.action, state):
            values["idempotency_key"] = None
        if state not in OPEN_STATES and state != "executing" and "finished_at" not in fields:
            values["finished_at"] = now
        a = t.actions.c
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t.actions)
                .where(a.id == action.id, a.version == action.version)
                .values(**values)
            )
            if result.rowcount != 1:
                return None
        return self.action(int(action.id or 0))

    def acted_since(self, account: str, since: datetime, rule: str | None = None) -> int:
        """How many of the account's actions (of ``rule``) acted since ``since``: what the
        breakers count (rolling windows)."""
        a = t.actions.c
        query = select(func.count()).where(
            a.account == account,
            a.state.in_(list(ACTED_STATES)),
            a.started_at.is_not(None),
            a.started_at >= since,
        )
        if rule is not None:
            query = query.where(a.rule == rule)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def update_savings(self, action: ActionRecord, **fields: Any) -> ActionRecord | None:
        """Set savings fields (``saving_until``, ``realized_saving_usd``) of a finished row,
        with the same compare-and-set as :meth:`transition`, keeping its state."""
        allowed = {"saving_per_hour_usd", "saving_since", "saving_until", "realized_saving_usd"}
        if set(fields) - allowed:
            raise ValueError(f"only savings fields: {sorted(allowed)}")
        a = t.actions.c
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t.actions)
                .where(a.id == action.id, a.version == action.version)
                .values(**fields, version=action.version + 1)
            )
            if result.rowcount != 1:
                return None
        return self.action(int(action.id or 0))


def states_of(actions: Sequence[ActionRecord]) -> dict[str, int]:
    """Count of rows per state (for summaries)."""
    out: dict[str, int] = {}
    for action in actions:
        out[action.state] = out.get(action.state, 0) + 1
    return out
