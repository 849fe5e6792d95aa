"""A stop in the middle of a delivery: the notification stays ``pending`` (the evaluation had
committed it with its alert states), and the outbox sends it at its next attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from monitor.clock import ManualClock
from monitor.collect.scheduler import Scheduler
from monitor.notify.testing import RecordingNotifier
from tests.helpers import open_app


class HangingNotifier:
    """A channel that never answers: the delivery is under way when the stop comes."""

    def __init__(self) -> None:
        self.delivering = asyncio.Event()

    async def deliver(self, messages: Iterable[Any]) -> list[Any]:
        self.delivering.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send_test(self, channel_name: str) -> Any:
        raise NotImplementedError


async def test_a_delivery_cut_by_the_stop_stays_pending(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    notifier = HangingNotifier()
    app = open_app(tmp_path, sim_app, clock, notifier_factory=lambda _router, _clock: notifier)
    try:
        await app.collect()
        scheduler = Scheduler()
        evaluation = scheduler.track("first-cycle:evaluate", app.evaluate(), graceful=True)
        await notifier.delivering.wait()

        await scheduler.stop(grace_s=0.01)  # the grace runs out: the delivery is cancelled

        assert evaluation.done() and evaluation.result() is None
        pending = app.store.notifications(status="pending")
        assert pending and pending == app.store.notifications()  # none sent, none failed
        # the interrupted attempt counts: the next one is due after the first backoff
        assert [(n.attempts, n.next_attempt_at) for n in pending] == [
            (1, clock.now() + timedelta(minutes=1))
        ]
    finally:
        await app.aclose()

    # after a restart, the outbox sends it when it is due, once
    clock.advance(60)
    recorder = RecordingNotifier()
    app = open_app(tmp_path, sim_app, clock, notifier_factory=lambda _router, _clock: recorder)
    try:
        (result,) = await app.deliver()
        assert result.ok and result.attempts == 2
        assert [m.title for m in recorder.messages] == [pending[0].title]
        assert app.store.notifications(status="pending") == []
        assert await app.deliver() == []
    finally:
        await app.aclose()
