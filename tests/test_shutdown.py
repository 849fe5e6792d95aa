"""A stop in the middle of a delivery: the notification stays ``pending``, the state the outbox
of "Remedies" (issue 9) is to resend at the next start. Nothing resends it yet."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from monitor.clock import ManualClock
from monitor.collect.scheduler import Scheduler
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
    finally:
        await app.aclose()
