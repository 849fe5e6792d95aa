"""The outbox: notifications are rows written ``pending`` in the evaluation's transaction, and
this delivery step sends the ones that are due, retrying with backoff until they expire.

Nothing is lost by a crash: a row is claimed before it is sent (the claim counts the attempt
and already sets the next one), so a crash at any point leaves it pending and due again; the
only duplicate possible is a crash between a receiver's answer and the commit recording it.

    rows = outbox_rows(messages, kind_of, now, expire_after)  # in the evaluation's transaction
    results = await Outbox(store, notifier).deliver(now)    # the delivery step

The wait before attempt ``n + 1`` is ``backoff_s * 2 ** (n - 1)``, capped at ``max_backoff_s``
(1, 2, 4 ... 30 minutes by default). One :class:`Outbox` never runs two deliveries at once
(the daemon's own schedule and the one after each evaluation share it); two processes never
send one attempt twice (the claim is a compare-and-set).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from monitor.logs import get_logger
from monitor.notify.deliver import Delivers
from monitor.notify.model import Attachment, DeliveryResult, Message

__all__ = ["DEFAULT_EXPIRE_AFTER", "Outbox", "backoff", "message_kind", "outbox_rows"]

log = get_logger("monitor.notify")

#: how long a notification is retried before it is marked ``expired`` (``notify.expire_after``)
DEFAULT_EXPIRE_AFTER = timedelta(hours=24)


def message_kind(message: Message) -> str:
    """The stored ``kind`` of a message: ``resolved`` when it tells only of resolutions."""
    return "resolved" if message.kind == "success" else "firing"


def outbox_rows(messages: Sequence[Message], now: datetime, expire_after: timedelta) -> list[Any]:
    """The ``notifications`` rows for ``messages``: pending, due now, expiring after
    ``expire_after``, each with its rendered title and body and its apprise type."""
    from monitor.store.models import NotificationRecord

    return [
        NotificationRecord(
            channel=m.channel,
            kind=message_kind(m),
            fingerprints=list(m.fingerprints),
            created_at=now,
            status="pending",
            attempts=0,
            title=m.title,
            body=m.body,
            notify_type=m.kind,
            next_attempt_at=now,
            expires_at=now + expire_after,
        )
        for m in messages
    ]


def backoff(attempts: int, base_s: float = 60.0, cap_s: float = 1800.0) -> timedelta:
    """The wait after the ``attempts``-th attempt: ``base_s * 2 ** (attempts - 1)``, capped."""
    exponent = min(max(attempts - 1, 0), 32)
    return timedelta(seconds=min(base_s * 2**exponent, cap_s))


class Outbox:
    """Sends the store's due notifications through ``notifier`` (one attempt per row per
    call: the retries are the later calls, after the backoff)."""

    def __init__(
        self,
        store: Any,
        notifier: Delivers,
        backoff_s: float = 60.0,
        max_backoff_s: float = 1800.0,
        batch: int = 200,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.batch = batch
        self._lock = asyncio.Lock()

    async def deliver(self, now: datetime, wait: bool = True) -> list[DeliveryResult]:
        """Expire what is too old, then send every pending row due at ``now`` (channels
        concurrently); one result per row sent, in the order of the rows. Never raises for
        a delivery that failed: the row stays pending until its next attempt. ``wait=False``
        returns at once (nothing sent) when a delivery is under way (a slow channel): the
        next scheduled one sends what is due then."""
        if not wait and self._lock.locked():
            return []
        async with self._lock:
            for row in self.store.expire_notifications(now):
                log.error(
                    "notify.expired",
                    notification=row.id,
                    channel=row.channel,
                    attempts=row.attempts,
                    error=row.error,
                )
            claimed = []
            for row in self.store.due_notifications(now, self.batch):
                retry_at = now + backoff(row.attempts + 1, self.backoff_s, self.max_backoff_s)
                if self.store.claim_notification(row, retry_at):
                    claimed.append(row)
            if not claimed:
                return []
            per_channel: dict[str, list[Any]] = {}
            for row in claimed:
                per_channel.setdefault(row.channel, []).append(row)
            results: dict[int, DeliveryResult] = {}

            async def send(rows: list[Any]) -> None:
                answers = await self.notifier.deliver([self._message(r) for r in rows])
                for row, answer in zip(rows, answers, strict=True):
                    # recorded as soon as this channel answered: a stop or crash after this
                    # point does not resend it
                    self.store.finish_notification(
                        int(row.id), ok=answer.ok, at=answer.at or now, error=answer.error
                    )
                    results[int(row.id)] = _counted(answer, row.attempts + 1)
                    if not answer.ok:
                        log.warning(
                            "notify.retry_later",
                            notification=row.id,
                            channel=row.channel,
                            attempts=row.attempts + 1,
                            next_attempt_in_s=backoff(
                                row.attempts + 1, self.backoff_s, self.max_backoff_s
                            ).total_seconds(),
                        )

            outcomes = await asyncio.gather(
                *(send(rows) for rows in per_channel.values()), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                    raise outcome  # cancellation: the rows stay pending, due again later
                if isinstance(outcome, Exception):
                    log.error("notify.outbox_error", error=repr(outcome))
            return [results[int(r.id)] for r in claimed if int(r.id) in results]

    def _message(self, row: Any) -> Message:
        return _message(row, self._attachment(row))

    def _attachment(self, row: Any) -> Attachment | None:
        """The report a notification attaches (``report_id``, revision 0006), if any."""
        report_id = getattr(row, "report_id", None)
        find = getattr(self.store, "report_run", None)
        if report_id is None or find is None:
            return None
        run = find(int(report_id))
        if run is None or run.content is None:
            return None
        return Attachment(
            run.filename or "report", run.content, run.media_type or "application/octet-stream"
        )


def _message(row: Any, attachment: Attachment | None = None) -> Message:
    return Message(
        channel=row.channel,
        title=row.title or "",
        body=row.body or "",
        kind=row.notify_type or "info",
        fingerprints=tuple(row.fingerprints or ()),
        attachment=attachment,
    )


def _counted(result: DeliveryResult, attempts: int) -> DeliveryResult:
    """The result with the row's attempt count (the notifier counts only its own tries)."""
    return DeliveryResult(
        channel=result.channel,
        ok=result.ok,
        attempts=attempts,
        error=result.error,
        fingerprints=result.fingerprints,
        at=result.at,
    )
