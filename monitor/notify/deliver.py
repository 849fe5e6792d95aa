"""Delivering messages through apprise: retried, bounded in time, never raising.

Each message goes through its own ``apprise.Apprise`` holding only its channel's URL, so one
channel's failure or slowness cannot touch another's; channels are delivered concurrently and each
has an overall timeout. apprise reports failure by a false result from ``notify()`` (it does not
raise), so that result is what decides success. Failed sends are retried with exponential backoff
through an injected ``sleep`` (tests pass a no-op). Logs name the channel and its URL scheme,
never the URL.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol, TextIO

from monitor.clock import Clock
from monitor.logs import get_logger
from monitor.notify.model import CONSOLE, Channel, DeliveryResult, Message, Notice
from monitor.notify.redaction import protect, redact
from monitor.notify.render import Renderer, build_messages
from monitor.notify.routing import Router

__all__ = ["Delivers", "Notifier", "ResultCallback", "dispatch"]

log = get_logger("monitor.notify")

ResultCallback = Callable[[DeliveryResult], Awaitable[None] | None]

_NOTIFY_TYPES = ("info", "success", "warning", "failure")


class Delivers(Protocol):
    """What the alert lifecycle needs: :class:`Notifier`, or ``RecordingNotifier`` in tests."""

    async def deliver(self, messages: Iterable[Message]) -> list[DeliveryResult]: ...

    async def send_test(self, channel_name: str) -> DeliveryResult: ...


async def dispatch(
    notices: Iterable[Notice],
    router: Router,
    notifier: Delivers,
    now: datetime,
    renderer: Renderer | None = None,
) -> list[DeliveryResult]:
    """One evaluation cycle's notifications: group into messages, deliver, return the results."""
    return await notifier.deliver(build_messages(notices, router, now, renderer))


class _Failure(Exception):
    """One attempt did not deliver; ``retry`` is false when trying again cannot help."""

    def __init__(self, reason: str, retry: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


class _Attempts:
    """How many tries a delivery has made so far; survives the delivery being cancelled."""

    n = 0


class Notifier:
    """Sends :class:`Message` values to their channels and reports a result for each.

    ``channels`` are the configured channels (``console`` is always available and prints to
    ``stream``, stdout by default). ``max_attempts`` counts the first try; the wait before retry
    ``n`` is ``backoff_s * 2 ** (n - 1)``. ``timeout_s`` bounds everything one channel does in one
    :meth:`deliver` call. ``on_result`` is called (sync or async) with every result, e.g. to record
    it; its own failures are logged and swallowed.
    """

    def __init__(
        self,
        channels: Mapping[str, Channel] | Iterable[Channel],
        clock: Clock,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        max_attempts: int = 4,
        backoff_s: float = 1.0,
        timeout_s: float = 60.0,
        on_result: ResultCallback | None = None,
        stream: TextIO | None = None,
    ) -> None:
        if isinstance(channels, Mapping):
            self.channels: dict[str, Channel] = dict(channels)
        else:
            self.channels = {c.name: c for c in channels}
        self.clock = clock
        self.sleep = sleep
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.on_result = on_result
        self.stream = stream
        protect(c.url for c in self.channels.values())

    def _channel(self, name: str) -> Channel | None:
        if name in self.channels:
            return self.channels[name]
        return CONSOLE if name == CONSOLE.name else None

    async def deliver(self, messages: Iterable[Message]) -> list[DeliveryResult]:
        """Deliver every message; one result per message, in the same order. Never raises."""
        messages = list(messages)
        per_channel: dict[str, list[int]] = {}
        for index, message in enumerate(messages):
            per_channel.setdefault(message.channel, []).append(index)
        results: list[DeliveryResult | None] = [None] * len(messages)

        async def run_channel(name: str, indexes: list[int]) -> None:
            for index, result in zip(
                indexes,
                await self._deliver_channel(name, [messages[i] for i in indexes]),
                strict=True,
            ):
                results[index] = result

        outcomes = await asyncio.gather(
            *(run_channel(n, ix) for n, ix in per_channel.items()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome  # cancellation and interrupts are the caller's business
            if isinstance(outcome, Exception):
                log.error("notify.internal_error", error=redact(repr(outcome)))
        return [
            r
            if r is not None
            else self._result(messages[i], False, 0, "internal error while delivering")
            for i, r in enumerate(results)
        ]

    async def send_test(self, channel_name: str) -> DeliveryResult:
        """Send a test message to one channel (``novita-monitor notify-test``)."""
        now = self.clock.now()
        channel = self._channel(channel_name)
        scheme = channel.scheme if channel else "?"
        message = Message(
            channel=channel_name,
            title="[test] novita-monitor: notification test",
            body=(
                f"This is a test message from novita-monitor to channel {channel_name!r} "
                f"({scheme}), sent at {now:%Y-%m-%d %H:%M:%S} UTC.\n"
                "If you can read this, alerts will reach you here."
            ),
            kind="info",
            fingerprints=(),
        )
        (result,) = await self.deliver([message])
        return result

    async def _deliver_channel(self, name: str, messages: list[Message]) -> list[DeliveryResult]:
        channel = self._channel(name)
        if channel is None:
            known = ", ".join(sorted(self.channels)) or "none configured"
            results = [
                self._result(m, False, 0, f"unknown channel {name!r} (known: {known})")
                for m in messages
            ]
            for r in results:
                log.error("notify.failed", channel=name, error=r.error, attempts=0)
                await self._report(r)
            return results
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        results = []
        for message in messages:
            attempts = _Attempts()
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                result = await asyncio.wait_for(
                    self._deliver_one(channel, message, attempts), remaining
                )
            except TimeoutError:
                error = f"timed out after {self.timeout_s:g} s"
                log.error(
                    "notify.failed",
                    channel=channel.name,
                    scheme=channel.scheme,
                    attempts=attempts.n,
                    error=error,
                )
                result = self._result(message, False, attempts.n, error)
            except Exception as exc:  # never let delivery break the caller
                error = redact(f"{type(exc).__name__}: {exc}", [channel.url])
                log.error("notify.failed", channel=channel.name, scheme=channel.scheme, error=error)
                result = self._result(message, False, attempts.n, error)
            results.append(result)
            await self._report(result)
        return results

    async def _deliver_one(
        self, channel: Channel, message: Message, attempts: _Attempts
    ) -> DeliveryResult:
        error = ""
        while attempts.n < self.max_attempts:
            attempts.n += 1
            try:
                await self._attempt(channel, message)
            except _Failure as failure:
                error = failure.reason
                if not failure.retry or attempts.n >= self.max_attempts:
                    break
                delay = self.backoff_s * 2 ** (attempts.n - 1)
                log.warning(
                    "notify.retry",
                    channel=channel.name,
                    scheme=channel.scheme,
                    attempt=attempts.n,
                    delay_s=delay,
                    error=error,
                )
                await self.sleep(delay)
                continue
            log.info(
                "notify.delivered",
                channel=channel.name,
                scheme=channel.scheme,
                attempts=attempts.n,
                alerts=len(message.fingerprints),
            )
            return self._result(message, True, attempts.n, None)
        log.error(
            "notify.failed",
            channel=channel.name,
            scheme=channel.scheme,
            attempts=attempts.n,
            error=error,
        )
        return self._result(message, False, attempts.n, error)

    async def _attempt(self, channel: Channel, message: Message) -> None:
        """One try. Raises :class:`_Failure` with a redacted reason when it did not deliver."""
        if channel.url is None:
            stream = self.stream or sys.stdout
            # the body repeats the title as its first headline when there is one group
            head = "" if message.body.startswith(message.title) else f"{message.title}\n"
            stream.write(f"{head}{message.body}\n\n")
            stream.flush()
            return
        import apprise  # here, so that importing this package does not load apprise

        client = apprise.Apprise()
        try:
            added = client.add(channel.url)
        except Exception:  # apprise rejects some malformed URLs by raising
            added = False
        if not added:
            raise _Failure(
                f"invalid apprise URL for channel {channel.name!r} ({channel.scheme}://)",
                retry=False,
            )
        try:
            outcome = await client.async_notify(
                body=message.body,
                title=message.title,
                notify_type=apprise.NotifyType(
                    message.kind if message.kind in _NOTIFY_TYPES else "info"
                ),
                body_format=apprise.NotifyFormat.TEXT,
                # a service that takes no attachment sends the body alone
                attach=_attach(message),
            )
        except Exception as exc:
            raise _Failure(redact(f"{type(exc).__name__}: {exc}", [channel.url])) from None
        if not outcome:
            raise _Failure(redact(_explain(outcome), [channel.url]))

    def _result(
        self, message: Message, ok: bool, attempts: int, error: str | None
    ) -> DeliveryResult:
        return DeliveryResult(
            channel=message.channel,
            ok=ok,
            attempts=attempts,
            error=error,
            fingerprints=message.fingerprints,
            at=self._now(),
        )

    def _now(self) -> datetime | None:
        try:
            return self.clock.now()
        except Exception:
            return None

    async def _report(self, result: DeliveryResult) -> None:
        if self.on_result is None:
            return
        try:
            returned = self.on_result(result)
            if inspect.isawaitable(returned):
                await returned
        except Exception as exc:
            log.error("notify.on_result_failed", channel=result.channel, error=repr(exc))


def _attach(message: Message) -> Any:
    """The message's attachment as apprise takes it (from memory: nothing is written to
    disk), or None."""
    if message.attachment is None:
        return None
    import apprise
    from apprise.attachment.memory import AttachMemory

    files = apprise.AppriseAttachment()
    files.add(
        AttachMemory(
            content=message.attachment.content,
            name=message.attachment.name,
            mimetype=message.attachment.media_type,
        )
    )
    return files


def _explain(outcome: Any) -> str:
    """Why apprise said no: its warning lines when it kept them (apprise >= 2), else a summary."""
    reasons: list[str] = []
    logs = getattr(outcome, "logs", None)
    if callable(logs):
        try:
            for entry in logs():
                if getattr(entry, "level", "") in ("WARNING", "ERROR", "CRITICAL"):
                    reasons.append(str(entry.message))
        except Exception:
            reasons = []
    status = getattr(outcome, "status", None)
    head = (
        f"apprise notify() failed ({status.name})"
        if status is not None
        else ("apprise notify() returned False")
    )
    return f"{head}: {'; '.join(reasons)}" if reasons else head
