"""A notifier for other modules' tests: records messages instead of sending them.

It has the same ``deliver`` / ``send_test`` surface as :class:`~monitor.notify.Notifier`, so the
alert lifecycle and end-to-end tests can assert on what would have been sent, and make chosen
channels fail to exercise the "recorded as failed" path.
"""

from __future__ import annotations

from collections.abc import Iterable

from monitor.notify.model import DeliveryResult, Message

__all__ = ["RecordingNotifier"]


class RecordingNotifier:
    """Keeps every message in ``messages``; channels in ``failing`` report a failed delivery."""

    def __init__(self, failing: Iterable[str] = ()) -> None:
        self.failing = set(failing)
        self.messages: list[Message] = []
        self.results: list[DeliveryResult] = []

    async def deliver(self, messages: Iterable[Message]) -> list[DeliveryResult]:
        out = []
        for message in messages:
            failed = message.channel in self.failing
            if not failed:
                self.messages.append(message)
            out.append(
                DeliveryResult(
                    channel=message.channel,
                    ok=not failed,
                    attempts=1,
                    error="failing on purpose" if failed else None,
                    fingerprints=message.fingerprints,
                )
            )
        self.results += out
        return out

    async def send_test(self, channel_name: str) -> DeliveryResult:
        (result,) = await self.deliver(
            [Message(channel_name, "[test] novita-monitor", "test", "info", ())]
        )
        return result
