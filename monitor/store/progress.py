"""How far a collector's backfill has got: one mark per (account, name), in ``store_meta``.

A collector that fetches history window by window (the usage bills: 30 days of daily bills,
8 days of hourly ones, about 70 requests on a first run) moves its mark after each window it
has stored, so a run that fails half-way is resumed from the mark instead of from the start
of the backfill (under a 25 % error rate a restarted backfill never finished). What a mark
means is the collector's business: the store keeps a time that only moves forward.
"""

from __future__ import annotations

from datetime import datetime

from monitor.store.base import StoreBase
from monitor.store.types import from_epoch, to_epoch


class ProgressRepo(StoreBase):
    """Collectors' progress marks."""

    @staticmethod
    def _mark_key(account_id: int, name: str) -> str:
        return f"collect_mark:{account_id}:{name}"

    def collect_mark(self, account: str, name: str) -> datetime | None:
        """The mark ``name`` of the account, or None when none was set."""
        account_id = self.ensure_account(account)
        with self.engine.connect() as conn:
            value = self._meta(conn, self._mark_key(account_id, name))
        return None if value is None else from_epoch(int(value))

    def set_collect_mark(self, account: str, name: str, when: datetime) -> datetime:
        """Move the mark ``name`` to ``when``, never backwards; returns the mark."""
        if when.tzinfo is None:
            raise ValueError("set_collect_mark needs an aware datetime")
        account_id = self.ensure_account(account)
        key = self._mark_key(account_id, name)
        with self.engine.begin() as conn:
            value = self._meta(conn, key)
            epoch = to_epoch(when)
            if value is not None and int(value) >= epoch:
                return from_epoch(int(value))
            self._set_meta(conn, key, str(epoch))
        return from_epoch(epoch)
