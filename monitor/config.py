"""The configuration file: one YAML document, validated once, with errors that point at lines.

Every model forbids unknown keys, so a typo is an error that names the file, the line and the
key. Secrets (API keys, notification URLs with tokens) are never written in the file: it names
an environment variable (``*_env``) or a file (``*_file``) and :func:`resolve_api_key` /
:func:`resolve_channel_url` read them when the daemon starts; both register what they read with
:func:`monitor.logs.register_secret` so it can never reach a log line.

Lookup (:func:`find_config_path`): ``--config``, ``$NOVITA_MONITOR_CONFIG``,
``./novita-monitor.yaml``, ``$XDG_CONFIG_HOME/novita-monitor/config.yaml`` (``~/.config``),
``/etc/novita-monitor/config.yaml``.

This module is part of the edge: :meth:`Config.load` takes the environment as a parameter
(``os.environ`` when omitted) because the default database location depends on it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from monitor.actions.settings import PROTECT_ENV
from monitor.errors import ConfigError, Problem
from monitor.logs import get_logger, register_secret
from monitor.yamlsrc import (
    LineMap,
    YamlLimits,
    format_path,
    load_yaml_with_lines,
    problems_from_validation_error,
    read_yaml_file,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "Account",
    "ActionSettings",
    "Channel",
    "Config",
    "HttpSettings",
    "LeaderSettings",
    "LogSettings",
    "MetricsSettings",
    "ProtectSettings",
    "Retention",
    "Route",
    "Schedules",
    "default_database_url",
    "find_config_path",
    "inline_url_secret",
    "is_loopback",
    "parse_duration",
    "resolve_api_key",
    "resolve_channel_url",
    "shipped_rules_dir",
    "split_listen",
]

DEFAULT_BASE_URL = "https://api.novita.ai"
CONFIG_ENV = "NOVITA_MONITOR_CONFIG"
APP_DIR = "novita-monitor"
#: In ``rules:``, the rules shipped with the package (``rules: [shipped, ./my-rules/]``); a folder
#: of that name is written ``./shipped``. Without ``rules:`` the shipped rules are loaded alone.
SHIPPED_RULES = "shipped"
#: The channel that always exists: it prints to the terminal (the daemon's stdout). Rules,
#: ``default_channels``, ``routes`` and ``notify-test --channel`` may name it without defining it;
#: a notice no rule or default routes anywhere goes there (``monitor.notify.CONSOLE``).
CONSOLE_CHANNEL = "console"
#: A secret file (``api_key_file``, ``url_file``) written ``${CREDENTIALS_DIRECTORY}/NAME`` is
#: the systemd credential NAME (``LoadCredential=NAME:...``): systemd sets this variable for
#: every command of the unit (``ExecStart``, ``ExecReload``).
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
CREDENTIALS_PREFIX = "${" + CREDENTIALS_ENV + "}/"

log = get_logger("monitor.config")


# --------------------------------------------------------------------------------------------
# small types


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> Any:
    """Seconds as a number, or a string like ``90s``, ``5m``, ``1h``, ``1d``."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(
                f"{value!r} is not a duration (expected seconds, or a number with s, m, h or d)"
            )
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name (expected letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, at most 64 characters)"
        )
    return value


def _check_env_name(value: str) -> str:
    # The value is not echoed: a user who pasted the key itself here must not see it in logs.
    if not _ENV_NAME.match(value):
        raise ValueError("not a valid environment variable name (expected letters, digits and '_')")
    if len(value) >= 20 and any(c.islower() for c in value) and any(c.isdigit() for c in value):
        raise ValueError(
            "this looks like a secret, not the name of an environment variable "
            "(expected a name such as NOVITA_API_KEY; put the secret itself in that variable)"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------
# secrets in URLs

_SECRET_SCHEMES = {
    "slack",
    "tgram",
    "discord",
    "msteams",
    "pover",
    "pbul",
    "gotify",
    "gotifys",
    "join",
    "mmost",
    "mmosts",
    "rocket",
    "rockets",
    "twilio",
    "zulip",
    "pagerduty",
    "opsgenie",
    "ifttt",
    "wxteams",
    "webex",
    "line",
    "spush",
    "pushed",
    "ntfys",
}
_SECRET_QUERY_KEYS = re.compile(
    r"(?i)^(.*[_-])?(token|key|apikey|secret|password|pass|pwd|auth|sig|signature)$"
)
_TOKENISH = re.compile(r"^[A-Za-z0-9_\-+=.~]{20,}$")


def _looks_like_token(text: str) -> bool:
    """20+ URL-safe characters with many digits or mixed case: hex, base64, UUIDs, webhook
    ids; not ``monitoring-receiver01``."""
    if not _TOKENISH.match(text):
        return False
    digits = sum(c.isdigit() for c in text)
    mixed = any(c.isupper() for c in text) and any(c.islower() for c in text)
    return digits >= 4 or (mixed and digits >= 1)


def inline_url_secret(url: str) -> str | None:
    """Why ``url`` must not be written inline (it carries a secret), or None when it is clean."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "it is not a valid URL"
    scheme = parts.scheme.lower()
    if scheme in _SECRET_SCHEMES:
        return f"{scheme}:// URLs carry a token"
    if password:
        return "it contains a password"
    host_labels = (parts.hostname or "").split(".")
    for segment in [parts.username or "", *host_labels, *parts.path.split("/")]:
        if _looks_like_token(segment):
            return "it contains what looks like a token"
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if value and (_SECRET_QUERY_KEYS.match(key) or _looks_like_token(value)):
            return "its query string contains what looks like a token"
    return None


def _secret_parts(url: str) -> list[str]:
    """The pieces of a URL that are secret, so each one is redacted from logs on its own."""
    out = [url]
    try:
        parts = urlsplit(url)
        out += [p for p in (parts.password,) if p]
        out += [s for s in [parts.username or "", *parts.path.split("/")] if _looks_like_token(s)]
        out += [v for k, v in parse_qsl(parts.query) if _SECRET_QUERY_KEYS.match(k) or len(v) >= 8]
        if parts.scheme.lower() in _SECRET_SCHEMES:
            out += [s for s in [parts.username or "", parts.hostname or ""] if len(s) >= 8]
            out += [s for s in parts.path.split("/") if len(s) >= 8]
    except ValueError:
        pass
    return out


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username:
        netloc = (
            f"{parts.username}:***@{netloc}" if parts.password else f"{parts.username}@{netloc}"
        )
    query = "?***" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost`` or a loopback address (127.0.0.0/8,
    ::1). Not ``*.localhost``: RFC 6761 reserves it, but glibc's resolver may still ask DNS."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# the models


class Account(StrictModel):
    """A Novita account the daemon watches; its key is read from an env var or a file."""

    name: Name
    api_key_env: EnvName | None = None
    api_key_file: Path | None = None
    api_key: Any = Field(default=None, exclude=True, repr=False)
    base_url: str = DEFAULT_BASE_URL
    max_concurrency: int = Field(default=8, ge=1, le=256)

    _where: tuple[str, int | None] = PrivateAttr(default=("<config>", None))

    @field_validator("api_key", mode="before")
    @classmethod
    def _no_inline_key(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                "an API key must not be written in the configuration file "
                "(expected api_key_env: VARIABLE or api_key_file: PATH)"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not a valid base URL (expected http(s)://host[:port])")
        if parts.password or parts.query:
            raise ValueError("the base URL must not contain credentials or a query string")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            # the API key goes in every request's Authorization header
            raise ValueError(
                f"{value!r} would send the API key unencrypted (expected https://, or http:// "
                "only to a loopback address: 127.0.0.1, ::1 or localhost)"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_key_source(self) -> Account:
        if (self.api_key_env is None) == (self.api_key_file is None):
            raise ValueError(
                "exactly one of api_key_env and api_key_file is required"
                + (" (both are set)" if self.api_key_env is not None else "")
            )
        return self


class Channel(StrictModel):
    """An apprise URL: inline when it has no secret, otherwise from an env var or a file."""

    url: str | None = None
    url_env: EnvName | None = None
    url_file: Path | None = None
    send_resolved: bool = True

    _where: tuple[str, int | None] = PrivateAttr(default=("<config>", None))

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _no_inline_secret(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if "://" not in value:
            raise ValueError("not an apprise URL (expected scheme://...)")
        why = inline_url_secret(value)
        if why:
            raise ValueError(
                f"this URL must not be written inline: {why} "
                "(expected url_env: VARIABLE or url_file: PATH)"
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Channel:
        count = sum(x is not None for x in (self.url, self.url_env, self.url_file))
        if count != 1:
            raise ValueError("exactly one of url, url_env and url_file is required")
        return self


def _as_strings(value: Any) -> Any:
    """``severity: 3`` or ``gpus: [1, 2]`` in YAML mean the strings labels hold."""
    if isinstance(value, (int, float, bool)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, list):
        return [_as_strings(v) for v in value]
    return value


class Route(StrictModel):
    """Extra channels for alerts that match: every key of ``match`` (``severity``, ``rule``,
    ``account``, ``resource_kind``, ``state`` or a label name) equals one of its values.
    The matching itself is :class:`monitor.notify.routing.Router`'s."""

    match: dict[str, Annotated[str | list[str], BeforeValidator(_as_strings)]] = Field(min_length=1)
    channels: list[str] = Field(min_length=1)


class Schedules(StrictModel):
    """How often each job runs, in seconds (or ``5m``-style strings)."""

    instances: Seconds = 60.0
    metrics: Seconds = 60.0
    balance: Seconds = 300.0
    usage_bills: Seconds = 3600.0
    fixed_term_bills: Seconds = 86400.0
    products: Seconds = 86400.0
    training_tasks: Seconds = 300.0
    async_tasks: Seconds = 30.0
    retention: Seconds = 3600.0
    evaluate: Seconds = 60.0
    act: Seconds = 60.0  # the act step: due actions run
    deliver: Seconds = 15.0  # the outbox: pending notifications that are due are sent

    def collectors(self) -> dict[str, float]:
        """Intervals of the collectors (not the retention, evaluation, act and delivery jobs)."""
        jobs = ("retention", "evaluate", "act", "deliver")
        return {k: v for k, v in self.model_dump().items() if k not in jobs}


class MetricsSettings(StrictModel):
    """Incremental metric fetching: the API's window is at least 60 s and lags about 1 min."""

    interval_s: Seconds = Field(default=60.0, ge=60)
    lag_s: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = 60.0
    backfill_min_s: Seconds = 3600.0
    backfill_max_s: Seconds = 86400.0

    @model_validator(mode="after")
    def _ordered(self) -> MetricsSettings:
        if self.backfill_min_s > self.backfill_max_s:
            raise ValueError("backfill_min_s must not exceed backfill_max_s")
        return self


class Retention(StrictModel):
    raw_days: int = Field(default=7, ge=1)
    rollup_days: int = Field(default=365, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Retention:
        if self.rollup_days < self.raw_days:
            raise ValueError("rollup_days must be at least raw_days")
        return self


class NotifySettings(StrictModel):
    """The outbox: a notification not delivered (the channel down) is retried with backoff
    until ``expire_after`` has passed since it was decided, then marked ``expired``."""

    expire_after: Seconds = 86400.0


class LeaderSettings(StrictModel):
    """Replicas on one PostgreSQL database (``monitor.leader``): the leader holds a lease of
    this length, renewed every third of it; a dead leader is replaced within two leases."""

    lease: Seconds = Field(default=15.0, description="the leader's lease (PostgreSQL only)")


class LogSettings(StrictModel):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"

    @field_validator("format", "level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ProtectSettings(StrictModel):
    """Instances no action ever touches: names matching a glob, or an instance environment
    variable set to ``true`` (the listing returns each instance's ``envs``)."""

    names: list[str] = Field(default_factory=list, description="instance name globs")
    env: EnvName = PROTECT_ENV


class ActionSettings(StrictModel):
    """Remedial actions (``actions:``): live once a rule asks for one, with breakers on."""

    enabled: bool = Field(True, description="false: the kill switch (plans recorded, none run)")
    dry_run: bool = Field(False, description="record and print plans, call nothing")
    max_per_cycle: int = Field(3, ge=0, description="actions per act step, per account")
    max_per_hour: int = Field(10, ge=0, description="per account, rolling hour")
    max_per_rule_per_hour: int = Field(5, ge=0, description="per rule, rolling hour")
    min_runway_after_charge: Seconds = Field(
        86400.0, description="refuse a charge leaving less runway than this"
    )
    approval_ttl: Seconds = Field(86400.0, description="unapproved actions expire after this")
    protect: ProtectSettings = Field(default_factory=ProtectSettings)


#: where the daemon serves /metrics, /healthz and /readyz unless told otherwise
DEFAULT_HTTP_LISTEN = "127.0.0.1:9464"


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) -> (host, port); ValueError saying what is
    expected. Port 0 picks a free port (tests); the bound address is logged."""
    expected = "expected HOST:PORT, e.g. 127.0.0.1:9464, 0.0.0.0:9464 or [::1]:9464"
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT ({expected})")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{value!r}: unclosed '[' ({expected})")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{value!r}: {host!r} is not an IPv6 address ({expected})") from None
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets ({expected})")
    elif not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$", host):
        raise ValueError(f"{value!r}: {host!r} is not a host name or address ({expected})")
    number = int(port)
    if number > 65535:
        raise ValueError(f"{value!r}: port {number} is out of range (expected 0-65535)")
    return host, number


class HttpSettings(StrictModel):
    """The daemon's HTTP endpoint (``http:``): ``/metrics`` (Prometheus), ``/healthz`` and
    ``/readyz`` (``monitor.web``). ``http: false`` switches it off."""

    listen: str = Field(DEFAULT_HTTP_LISTEN, description="HOST:PORT (port 0: any free port)")

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_listen(value)
        return value.strip()

    @property
    def address(self) -> tuple[str, int]:
        return split_listen(self.listen)


def _http_switch(value: Any) -> Any:
    """``http: false`` -> off (None), ``http: true`` -> the defaults; nothing else but a
    mapping (an empty ``http:`` is a mistake, not a way to switch it off)."""
    if value is False:
        return None
    if value is True:
        return {}
    if value is None:
        raise ValueError(
            "empty (expected http: {listen: HOST:PORT}, or http: false to serve nothing)"
        )
    return value


def _str_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class ReportSchedule(StrictModel):
    """A scheduled report (``reports:``): every ``every`` (a whole number of hours; due times
    anchored at midnight UTC, weekly ones on Mondays), the report over the ``since`` before the
    due time (default: ``every``) in ``format``, sent to ``channels`` (as an attachment where
    the channel takes one, else its text summary). ``name`` keeps its due times recorded
    across edits of the other keys (default: made of them)."""

    every: Seconds = 604800.0
    format: Literal["text", "json", "html"] = "html"
    channels: Annotated[list[str], BeforeValidator(_str_list)] = Field(min_length=1)
    since: Seconds | None = None
    name: Name | None = None

    @field_validator("every")
    @classmethod
    def _whole_hours(cls, value: float) -> float:
        if value < 3600 or value % 3600:
            raise ValueError("expected a whole number of hours (e.g. 24h, 1d, 7d)")
        return value

    @property
    def key(self) -> str:
        """The name its due times are recorded under."""
        if self.name:
            return self.name
        return f"every-{int(self.every)}s-{self.format}-{'+'.join(self.channels)}"


class Config(StrictModel):
    """The whole configuration file. Use :meth:`load`; ``database`` and ``rule_paths`` are
    resolved there (relative paths against the config file's folder)."""

    accounts: list[Account] = Field(min_length=1)
    database: str | None = None
    rules: Annotated[list[str] | None, BeforeValidator(_str_list)] = None
    schedules: Schedules = Field(default_factory=Schedules)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    stale_after: float = Field(default=3.0, ge=1)
    retention: Retention = Field(default_factory=Retention)
    log: LogSettings = Field(default_factory=LogSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    channels: dict[Name, Channel] = Field(default_factory=dict)
    default_channels: Annotated[list[str], BeforeValidator(_str_list)] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    actions: ActionSettings = Field(default_factory=ActionSettings)
    reports: list[ReportSchedule] = Field(default_factory=list)
    leader: LeaderSettings = Field(default_factory=LeaderSettings)
    http: Annotated[HttpSettings | None, BeforeValidator(_http_switch)] = Field(
        default_factory=HttpSettings
    )
    #: Instance environment variables to store besides the protection flag
    #: (``actions.protect.env``) and the ``labels.KEY`` the loaded rules compare; the values
    #: of every other variable of an instance's environment are never stored (users keep tokens
    #: there). See ``monitor.collect.envs``.
    instance_env_keys: Annotated[list[str], BeforeValidator(_str_list)] = Field(
        default_factory=list
    )

    _path: Path | None = PrivateAttr(default=None)
    _linemap: LineMap = PrivateAttr(default_factory=LineMap)
    _rule_paths: list[Path] = PrivateAttr(default_factory=list)

    # ---- loading

    @classmethod
    def load(cls, path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
        """Read and validate ``path``; raise :class:`ConfigError` listing every problem."""
        path = Path(path)
        try:
            # stops reading at the size cap
            text = read_yaml_file(path, error=ConfigError, limits=YamlLimits.from_env(env))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                f"cannot read configuration file {path}: {reason}",
                [Problem(str(path), None, f"cannot read the file: {reason}")],
            ) from None
        return cls.from_yaml(text, str(path), base_dir=path.resolve().parent, env=env, path=path)

    @classmethod
    def from_yaml(
        cls,
        text: str,
        filename: str = "<config>",
        *,
        base_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        path: Path | None = None,
        euid: int | None = None,
    ) -> Config:
        """Validate a YAML text (tests, the demo); relative paths resolve against ``base_dir``."""
        limits = YamlLimits.from_env(env)
        data, linemap = load_yaml_with_lines(text, filename, error=ConfigError, limits=limits)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"{filename}: invalid configuration",
                [Problem(filename, 1, "expected a mapping of keys at the top level")],
            )
        base = base_dir if base_dir is not None else Path.cwd()
        problems = _reference_problems(data, filename, linemap, base)
        cfg: Config | None = None
        try:
            cfg = cls.model_validate(data)
        except pydantic.ValidationError as exc:
            problems += problems_from_validation_error(exc, filename, linemap, data=data, model=cls)
        if problems or cfg is None:
            problems.sort(key=lambda p: p.line or 0)
            raise ConfigError(f"{filename}: invalid configuration", problems)
        cfg._path = path
        cfg._linemap = linemap
        cfg._resolve(filename, base, os.environ if env is None else env, euid, data)
        return cfg

    def _resolve(
        self,
        filename: str,
        base: Path,
        env: Mapping[str, str],
        euid: int | None,
        data: Mapping[str, Any],
    ) -> None:
        """Make paths absolute, fill in computed defaults, remember where things are."""
        for i, account in enumerate(self.accounts):
            account._where = (filename, self._linemap.line_for(("accounts", i)))
            if account.api_key_file is not None:
                account.api_key_file = _resolve(base, account.api_key_file)
        for name, channel in self.channels.items():
            channel._where = (filename, self._linemap.line_for(("channels", name)))
            if channel.url_file is not None:
                channel.url_file = _resolve(base, channel.url_file)
        if "interval_s" in (data.get("metrics") or {}):
            self.schedules.metrics = self.metrics.interval_s
        else:
            self.metrics.interval_s = self.schedules.metrics
        if self.database is None:
            self.database = default_database_url(env, os.geteuid() if euid is None else euid)
        else:
            self.database = _check_database(self.database, base)[0]
        if self.rules is None:
            self._rule_paths = [shipped_rules_dir()]
        else:
            self._rule_paths = [
                shipped_rules_dir() if entry == SHIPPED_RULES else _resolve(base, Path(entry))
                for entry in self.rules
            ]

    # ---- what the rest of the daemon reads

    @property
    def path(self) -> Path | None:
        """The file this configuration came from (None when built from a string)."""
        return self._path

    @property
    def linemap(self) -> LineMap:
        return self._linemap

    @property
    def database_url(self) -> str:
        assert self.database is not None
        return self.database

    @property
    def rule_paths(self) -> list[Path]:
        """Rule files and folders, absolute; the shipped rules when the file names none (or
        names ``shipped`` among them)."""
        return list(self._rule_paths)

    @property
    def loads_shipped_rules(self) -> bool:
        """Whether the shipped rules are among the loaded ones (no ``rules:``, or ``shipped``
        listed in it)."""
        return self.rules is None or SHIPPED_RULES in self.rules

    @property
    def channel_names(self) -> set[str]:
        """The channels rules and routes may name: the configured ones and ``console``."""
        return {CONSOLE_CHANNEL, *self.channels}

    def line_for(self, *path: str | int) -> int | None:
        """The line of a key in the file, for errors found after loading."""
        return self._linemap.line_for(path)

    def account(self, name: str) -> Account:
        for account in self.accounts:
            if account.name == name:
                return account
        raise KeyError(name)

    def describe(self) -> dict[str, Any]:
        """The configuration for a log line: references to secrets, never secrets."""
        return {
            "path": str(self._path) if self._path else None,
            "accounts": [
                {
                    "name": a.name,
                    "api_key": f"env:{a.api_key_env}"
                    if a.api_key_env
                    else f"file:{a.api_key_file}",
                    "base_url": a.base_url,
                    "max_concurrency": a.max_concurrency,
                }
                for a in self.accounts
            ],
            "database": _redact_url(self.database) if self.database else None,
            "rules": [str(p) for p in self._rule_paths],
            "schedules": self.schedules.model_dump(),
            "metrics": self.metrics.model_dump(),
            "stale_after": self.stale_after,
            "retention": self.retention.model_dump(),
            "log": self.log.model_dump(),
            "channels": {
                name: (
                    _redact_url(c.url)
                    if c.url
                    else f"env:{c.url_env}"
                    if c.url_env
                    else f"file:{c.url_file}"
                )
                for name, c in self.channels.items()
            },
            "default_channels": list(self.default_channels),
            "routes": [r.model_dump() for r in self.routes],
            "actions": self.actions.model_dump(),
            "instance_env_keys": list(self.instance_env_keys),
            "http": self.http.model_dump() if self.http is not None else False,
        }


def _reference_problems(
    data: Mapping[str, Any], filename: str, linemap: LineMap, base: Path
) -> list[Problem]:
    """Checks across keys (references, uniqueness, files that must exist), on the raw data so
    they are reported together with the structural errors."""
    problems: list[Problem] = []

    def add(path: tuple[str | int, ...], message: str) -> None:
        problems.append(Problem(filename, linemap.line_for(path), message, field=format_path(path)))

    accounts = data.get("accounts")
    seen: dict[str, int] = {}
    for i, account in enumerate(accounts if isinstance(accounts, list) else []):
        name = account.get("name") if isinstance(account, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            add(
                ("accounts", i, "name"),
                f"duplicate account name {name!r} "
                f"(expected unique names; first at accounts[{seen[name]}])",
            )
        else:
            seen[name] = i

    channels = data.get("channels")
    # ``console`` always exists: it prints to the terminal (monitor.notify).
    known = sorted(
        {CONSOLE_CHANNEL, *(str(k) for k in channels)}
        if isinstance(channels, dict)
        else {CONSOLE_CHANNEL}
    )
    expected = f"expected one of: {', '.join(known)}"
    if isinstance(channels, dict) and CONSOLE_CHANNEL in channels:
        add(
            ("channels", CONSOLE_CHANNEL),
            f"{CONSOLE_CHANNEL!r} is the built-in channel that prints to the terminal "
            "(expected another name for a channel of yours)",
        )

    def check_refs(path: tuple[str | int, ...], names: Any) -> None:
        items = (
            [(path, names)]
            if isinstance(names, str)
            else [
                ((*path, i), name)
                for i, name in enumerate(names if isinstance(names, list) else [])
            ]
        )
        for where, name in items:
            if isinstance(name, str) and name not in known:
                add(where, f"unknown channel {name!r} ({expected})")

    check_refs(("default_channels",), data.get("default_channels"))
    routes = data.get("routes")
    for r, route in enumerate(routes if isinstance(routes, list) else []):
        if isinstance(route, dict):
            check_refs(("routes", r, "channels"), route.get("channels"))

    reports = data.get("reports")
    for r, report in enumerate(reports if isinstance(reports, list) else []):
        if isinstance(report, dict):
            check_refs(("reports", r, "channels"), report.get("channels"))

    metrics = data.get("metrics")
    schedules = data.get("schedules")
    m = metrics.get("interval_s") if isinstance(metrics, dict) else None
    s = schedules.get("metrics") if isinstance(schedules, dict) else None
    try:
        m_s = parse_duration(m) if m is not None else None
        s_s = parse_duration(s) if s is not None else None
    except ValueError:
        m_s = s_s = None  # reported by the models
    if isinstance(m_s, (int, float)) and isinstance(s_s, (int, float)) and m_s != s_s:
        add(
            ("metrics", "interval_s"),
            "conflicts with schedules.metrics (expected the same value, or only one of them)",
        )
    elif m_s is None and isinstance(s_s, (int, float)) and 0 < s_s < 60:
        add(
            ("schedules", "metrics"),
            f"{s!r} is too short (expected at least 60 seconds, the API's smallest metrics window)",
        )

    database = data.get("database")
    if isinstance(database, str):
        why = _check_database(database, base)[1]
        if why:
            add(("database",), why)

    rules = data.get("rules")
    rules = [rules] if isinstance(rules, str) else rules
    seen_rules: dict[str, int] = {}
    for i, entry in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(entry, str):
            continue
        where = ("rules", i) if isinstance(data.get("rules"), list) else ("rules",)
        if entry in seen_rules:
            add(where, f"{entry!r} is listed twice (first at rules[{seen_rules[entry]}])")
            continue
        seen_rules[entry] = i
        if entry == SHIPPED_RULES:
            continue
        p = _resolve(base, Path(entry))
        if not p.exists():
            add(
                where,
                f"no such file or folder: {p} (expected a rule file or a folder of them, "
                f"relative to the config file, or {SHIPPED_RULES!r} for the shipped rules)",
            )
    return problems


def _resolve(base: Path, path: Path) -> Path:
    if str(path).startswith(CREDENTIALS_PREFIX):
        return path  # a systemd credential: resolved when read (_credential_path)
    path = path.expanduser()
    return path if path.is_absolute() else (base / path)


def _check_database(url: str, base: Path) -> tuple[str, str | None]:
    expected = "expected sqlite:///PATH or postgresql://USER@HOST/DB"
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url, f"not a database URL ({expected})"
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        return url, f"unsupported database {backend!r} ({expected})"
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg"):
        return (
            url,
            f"unsupported driver {parsed.drivername!r} (expected sqlite or postgresql+psycopg)",
        )
    if parsed.password:
        return url, (
            "the database URL must not contain a password "
            "(expected it in PGPASSWORD or a ~/.pgpass file, which PostgreSQL reads)"
        )
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        db_path = Path(parsed.database).expanduser()
        if not db_path.is_absolute():
            return parsed.set(database=str(base / db_path)).render_as_string(
                hide_password=False
            ), None
    if backend == "postgresql" and parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(
            hide_password=False
        ), None
    return url, None


def default_database_url(env: Mapping[str, str], euid: int) -> str:
    """SQLite in the state directory: /var/lib/novita-monitor for root, else XDG state."""
    if euid == 0:
        folder = Path("/var/lib") / APP_DIR
    else:
        state = env.get("XDG_STATE_HOME") or str(
            Path(env.get("HOME") or Path.home()) / ".local/state"
        )
        folder = Path(state) / APP_DIR
    return f"sqlite:///{folder / 'monitor.db'}"


def shipped_rules_dir() -> Path:
    """The rules installed with the package (``monitor/shipped_rules``)."""
    return Path(str(resources.files("monitor").joinpath("shipped_rules")))


def find_config_path(explicit: str | None, env: Mapping[str, str], cwd: Path) -> Path | None:
    """The configuration file to use, or None when there is none.

    An explicit ``--config`` or ``$NOVITA_MONITOR_CONFIG`` is returned even if it does not
    exist (loading it then says so); the conventional places are returned only if they exist.
    """
    for given in (explicit, env.get(CONFIG_ENV)):
        if given:
            p = Path(given).expanduser()
            return p if p.is_absolute() else cwd / p
    candidates = [cwd / "novita-monitor.yaml"]
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg:
        candidates.append(Path(xdg) / APP_DIR / "config.yaml")
    elif env.get("HOME"):
        candidates.append(Path(env["HOME"]) / ".config" / APP_DIR / "config.yaml")
    candidates.append(Path("/etc") / APP_DIR / "config.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------------------------
# secrets


def resolve_api_key(account: Account, env: Mapping[str, str]) -> SecretStr:
    """The account's API key from its env var or file (registered for log redaction)."""
    value = _read_secret(
        f"account {account.name!r}",
        account.api_key_env,
        account.api_key_file,
        env,
        account._where,
        "api_key",
    )
    return SecretStr(value)


def resolve_channel_url(name: str, channel: Channel, env: Mapping[str, str]) -> SecretStr:
    """The channel's apprise URL, inline or from its env var or file."""
    if channel.url is not None:
        return SecretStr(channel.url)
    value = _read_secret(
        f"channel {name!r}", channel.url_env, channel.url_file, env, channel._where, "url"
    )
    for part in _secret_parts(value):
        register_secret(part)
    return SecretStr(value)


def _credential_path(
    file: Path, env: Mapping[str, str], owner: str, what: str, where: tuple[str, int | None]
) -> Path:
    """``${CREDENTIALS_DIRECTORY}/NAME`` -> the file of systemd credential NAME."""
    text = str(file)
    if not text.startswith(CREDENTIALS_PREFIX):
        return file
    folder = (env.get(CREDENTIALS_ENV) or "").strip()
    if not folder:
        message = (
            f"{owner}: {what}_file {text} is a systemd credential, but {CREDENTIALS_ENV} is not "
            "set (systemd sets it for a unit with LoadCredential=; elsewhere write the file's "
            "path)"
        )
        raise ConfigError(message, [Problem(where[0], where[1], message)])
    return Path(folder) / text.removeprefix(CREDENTIALS_PREFIX)


def _read_secret(
    owner: str,
    env_name: str | None,
    file: Path | None,
    env: Mapping[str, str],
    where: tuple[str, int | None],
    what: str,
) -> str:
    filename, line = where
    if env_name is not None:
        value = (env.get(env_name) or "").strip()
        if not value:
            message = f"{owner}: environment variable {env_name} is not set or empty ({what}_env)"
            raise ConfigError(message, [Problem(filename, line, message)])
    else:
        assert file is not None
        file = _credential_path(file, env, owner, what, where)
        try:
            st = file.stat()
            value = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not text"
            message = f"{owner}: cannot read {what}_file {file}: {reason}"
            raise ConfigError(message, [Problem(filename, line, message)]) from None
        if not value:
            message = f"{owner}: {what}_file {file} is empty"
            raise ConfigError(message, [Problem(filename, line, message)])
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "secret file is readable by group or others; run chmod 600 on it",
                owner=owner,
                path=str(file),
                mode=oct(stat.S_IMODE(st.st_mode)),
            )
    register_secret(value)
    return value
