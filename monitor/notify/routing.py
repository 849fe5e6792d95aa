"""Which channels hear about which notice.

A notice goes to its rule's ``notify`` channels (or the configured defaults when the rule names
none), plus every route whose ``match`` fits it. When that leaves nothing (no channel configured
at all, or a rule and the defaults both empty), the notice is printed to the console instead of
being lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from monitor.errors import ConfigError
from monitor.logs import get_logger
from monitor.notify.model import CONSOLE, Channel, Notice, Route

__all__ = ["Router"]

log = get_logger("monitor.notify")

_NOTICE_FIELDS = ("severity", "rule", "account", "resource_kind", "state")


class Router:
    """Decides the channels of each notice. Channel names are checked once, here."""

    def __init__(
        self,
        channels: Mapping[str, Channel] | Iterable[Channel] = (),
        default_channels: Iterable[str] | None = None,
        routes: Iterable[Route] = (),
    ) -> None:
        if isinstance(channels, Mapping):
            self.channels: dict[str, Channel] = dict(channels)
        else:
            self.channels = {c.name: c for c in channels}
        self.default_channels = list(default_channels or [])
        self.routes = list(routes)
        known = set(self.channels) | {CONSOLE.name}
        unknown = [n for n in self.default_channels if n not in known]
        for route in self.routes:
            unknown += [n for n in route.channels if n not in known]
        if unknown:
            raise ConfigError(
                f"unknown notification channel(s): {', '.join(sorted(set(unknown)))} "
                f"(configured: {', '.join(sorted(self.channels)) or 'none'})"
            )

    def channel(self, name: str) -> Channel:
        """The channel called ``name``; ``console`` always exists."""
        if name in self.channels:
            return self.channels[name]
        if name == CONSOLE.name:
            return CONSOLE
        raise KeyError(name)

    def channels_for(self, notice: Notice) -> list[str]:
        """Channel names for ``notice``, in a stable order, without duplicates."""
        wanted = list(self.default_channels if notice.channels is None else notice.channels)
        for route in self.routes:
            if _matches(route, notice):
                wanted += route.channels
        names: list[str] = []
        for name in wanted:
            if name in names:
                continue
            if name not in self.channels and name != CONSOLE.name:
                log.warning(
                    "notify.unknown_channel",
                    channel=name,
                    rule=notice.rule,
                    fingerprint=notice.fingerprint,
                )
                continue
            names.append(name)
        return names or [CONSOLE.name]


def _matches(route: Route, notice: Notice) -> bool:
    for key, accepted in route.match.items():
        if key in _NOTICE_FIELDS:
            actual: str | None = str(getattr(notice, key))
        else:
            actual = notice.labels.get(key)
        options = [accepted] if isinstance(accepted, str) else list(accepted)
        if actual is None or actual not in [str(o) for o in options]:
            return False
    return True
