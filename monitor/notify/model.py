"""The values that flow through notification: what the engine hands in, what goes out.

``Notice`` is the engine's side of the contract (one alert transition or repeat); ``Message`` is
one grouped text per channel; ``DeliveryResult`` is what the lifecycle records afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal
from urllib.parse import urlsplit

from monitor.config import CONSOLE_CHANNEL

__all__ = [
    "CONSOLE",
    "CONSOLE_CHANNEL",
    "SEVERITY_RANK",
    "Attachment",
    "Channel",
    "DeliveryResult",
    "Message",
    "Notice",
    "Route",
    "Value",
    "severity_rank",
]

Value = int | float | Decimal | str | bool | None
State = Literal["firing", "resolved"]

SEVERITY_RANK: dict[str, int] = {"info": 1, "warning": 2, "critical": 3}


def severity_rank(severity: str) -> int:
    """Order severities (unknown ones sort lowest) so the worst leads a grouped message."""
    return SEVERITY_RANK.get(severity.lower(), 0)


@dataclass(frozen=True)
class Notice:
    """One alert to tell people about: a transition (firing/resolved) or a repeat.

    ``values`` carries the concrete numbers messages quote. Well-known keys: ``value``,
    ``threshold``, ``unit`` ("%", "$", "h", ...), ``cost_per_hour_usd``, ``cost_so_far_usd``,
    ``runway_hours``, ``monthly_saving_usd``, ``balance_usd``, ``gpu_count``, ``days_left``.
    Unknown keys are allowed and reachable from templates.

    ``channels`` is the rule's ``notify`` list; ``None`` means "the configured defaults".
    ``template`` is the rule's Jinja2 override for this notice's line in a message.
    """

    fingerprint: str
    rule: str
    severity: str
    state: State
    account: str
    resource_kind: str
    resource_id: str
    resource_name: str
    summary: str
    values: Mapping[str, Value] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    channels: list[str] | None = None
    started_at: datetime | None = None
    template: str | None = None


@dataclass(frozen=True)
class Channel:
    """A named notification target. ``url`` is an apprise URL (a str or a ``SecretStr``).

    The URL is kept out of ``repr`` so that printing or logging a channel never shows it.
    ``url=None`` is the console: messages are printed to the notifier's stream.
    """

    name: str
    url: str | None = field(default=None, repr=False)
    send_resolved: bool = True

    def __post_init__(self) -> None:
        # Accept pydantic's SecretStr (what the config hands out) and keep the plain string.
        reveal = getattr(self.url, "get_secret_value", None)
        if callable(reveal):
            object.__setattr__(self, "url", reveal())

    @property
    def scheme(self) -> str:
        """The URL scheme (``json``, ``mailto``, ...), the only part of a URL that is logged."""
        if self.url is None:
            return CONSOLE_CHANNEL
        return urlsplit(self.url).scheme or "?"


CONSOLE = Channel(name=CONSOLE_CHANNEL, url=None, send_resolved=True)


@dataclass(frozen=True)
class Route:
    """Send notices that match to more channels.

    ``match`` keys: ``severity``, ``rule``, ``account``, ``resource_kind``, ``state``; any other key
    is a label name. A value is one string or a list of accepted strings. All keys must match.
    """

    match: Mapping[str, str | list[str]]
    channels: list[str]


@dataclass(frozen=True)
class Attachment:
    """A file a message carries where its channel takes attachments (e-mail, ...); channels
    that take none get the message's body only (a scheduled report's text summary)."""

    name: str
    content: bytes = field(repr=False)
    media_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Message:
    """One grouped message for one channel in one evaluation cycle.

    ``kind`` is an apprise notify type: ``failure`` (critical firing), ``warning``, ``info``, or
    ``success`` (only resolved notices). ``fingerprints`` lists every alert the message tells of.
    """

    channel: str
    title: str
    body: str
    kind: str
    fingerprints: tuple[str, ...]
    attachment: Attachment | None = None


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one message: delivered or not, after how many attempts, and why not."""

    channel: str
    ok: bool
    attempts: int
    error: str | None
    fingerprints: tuple[str, ...]
    at: datetime | None = None
