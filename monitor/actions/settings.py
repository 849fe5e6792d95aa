"""The act step's settings: the config's ``actions:`` section (breakers, kill switch, dry run,
protection) plus the act step's own timings. A plain frozen value; :meth:`ActSettings.from_section`
reads whatever model the config gives it (attribute names as in the issue's ``actions:`` section).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

#: the environment variable that protects an instance from every action (value ``true``)
PROTECT_ENV = "NOVITA_MONITOR_PROTECT"


@dataclass(frozen=True)
class ActSettings:
    enabled: bool = True  # False: the kill switch (due rows are skipped, nothing is called)
    dry_run: bool = False  # True: due rows are skipped (reason "dry run"), nothing is called
    max_per_cycle: int = 3  # per account, per act step
    max_per_hour: int = 10  # per account, rolling hour
    max_per_rule_per_hour: int = 5  # per account and rule, rolling hour
    min_runway_after_charge: timedelta = timedelta(hours=24)  # (planning's guard)
    approval_ttl: timedelta = timedelta(hours=24)  # (planning sets ``expires_at`` with it)
    protect_names: tuple[str, ...] = ()  # name globs never acted on
    protect_env: str = PROTECT_ENV
    # the act step's own timings
    verify_within: timedelta = timedelta(minutes=5)  # a stop reaches exited, a renew shows...
    reconcile_after: timedelta = timedelta(minutes=5)  # an unknown outcome unseen this long: failed
    executing_timeout: timedelta = timedelta(minutes=2)  # an older ``executing`` row: a crash
    metrics_max_age: timedelta = timedelta(minutes=3)  # the newest fresh sample at least this new

    def __post_init__(self) -> None:
        for name in ("max_per_cycle", "max_per_hour", "max_per_rule_per_hour"):
            if getattr(self, name) < 0:
                raise ValueError(f"actions.{name} must be 0 or more, got {getattr(self, name)}")

    @classmethod
    def from_section(cls, section: Any) -> ActSettings:
        """From the config's ``actions`` section (any object with those attributes; absent
        ones keep their defaults). ``protect`` may carry ``names`` and ``env``."""
        if section is None:
            return cls()
        values: dict[str, Any] = {}
        for name in (
            "enabled",
            "dry_run",
            "max_per_cycle",
            "max_per_hour",
            "max_per_rule_per_hour",
            "min_runway_after_charge",
            "approval_ttl",
        ):
            value = getattr(section, name, None)
            if value is not None:
                if isinstance(value, int | float) and name in (
                    "min_runway_after_charge",
                    "approval_ttl",
                ):
                    value = timedelta(seconds=float(value))
                values[name] = value
        protect = getattr(section, "protect", None)
        if protect is not None:
            names = getattr(protect, "names", None)
            if names:
                values["protect_names"] = tuple(str(n) for n in names)
            env = getattr(protect, "env", None)
            if env:
                values["protect_env"] = str(env)
        return cls(**values)
