"""One logging pipeline for the daemon and its libraries, with secrets redacted on the way out.

structlog events and stdlib records (httpx, apscheduler, apprise, uvicorn, alembic) meet in one
``logging`` handler and go through the same chain::

    add level, logger name, ISO UTC timestamp -> exceptions to text -> redact -> JSON | console

stdlib records through the handler's :class:`structlog.stdlib.ProcessorFormatter`; structlog
events run the chain in structlog itself and are written through the handler (its stream, under
its lock), without a stdlib record each (:class:`_Writer`).

Redaction is the last step before rendering, so it sees the final text of everything: the event,
every value (recursively), exception tracebacks and stdlib messages with their arguments applied.
It replaces every secret registered with :func:`register_secret` (API keys and notification URLs
register themselves when :mod:`monitor.config` reads them), ``Authorization:``/``Bearer ...``
patterns, and the values of keys named like ``api_key``, ``token``, ``password``, ``secret``.

The process-wide state (the handler, the set of secrets) lives here and only here.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import PurePath
from typing import IO, Any, Literal

import structlog
from pydantic import SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "clear_secrets",
    "configure_logging",
    "get_logger",
    "redact_event",
    "redact_text",
    "register_secret",
    "reset_logging",
]

REDACTED = "***"
MIN_SECRET_LENGTH = 4
"""Shorter strings are not registered: redacting every ``abc`` would garble logs, not protect."""

LogFormat = Literal["auto", "json", "console"]

# Loggers that are chatty at INFO (one line per HTTP request or job run): WARNING unless debug.
_NOISY = ("httpx", "httpcore", "apscheduler", "urllib3", "requests", "alembic")
# Loggers that libraries give their own handlers (uvicorn's default LOGGING_CONFIG, alembic's
# fileConfig): those handlers would print around the pipeline, unredacted. We take them back.
_ADOPTED = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "alembic", "sqlalchemy")

# ---------------------------------------------------------------------------------------------
# secrets

_lock = threading.Lock()
_secrets: set[str] = set()
_secret_re: re.Pattern[str] | None = None

_AUTH_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?:bearer|basic|token)\s+)?[^\s\"',;}]+"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}")
_SECRET_KEY = re.compile(
    r"(?i)^(?:.*[_\-.])?(api[_-]?key|apikey|token|password|passwd|secret|authorization"
    r"|credentials?|private[_-]?key)$"
)
_PLAIN = (int, float, bool, type(None), Decimal, datetime, date, time, timedelta)


def register_secret(value: str | SecretStr | None) -> None:
    """Never let ``value`` reach a log line from now on (process-wide)."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    global _secret_re
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leftovers
        _secret_re = re.compile("|".join(re.escape(s) for s in ordered))


def clear_secrets() -> None:
    """Forget every registered secret (for tests)."""
    global _secret_re
    with _lock:
        _secrets.clear()
        _secret_re = None


def redact_text(text: str) -> str:
    """``text`` with registered secrets and authorization tokens replaced by ``***``."""
    pattern = _secret_re
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    if "uthoriz" in text or "UTHORIZ" in text:
        text = _AUTH_HEADER.sub(rf"\1{REDACTED}", text)
    if "earer" in text or "asic" in text or "EARER" in text or "ASIC" in text:
        text = _BEARER.sub(rf"\1\2{REDACTED}", text)
    return text


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, _PLAIN):
        return value
    if depth > 20:
        return REDACTED
    if isinstance(value, Mapping):
        return {k: _redact_item(k, v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_redact_value(v, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    # Anything else is rendered through repr() by both renderers: check what it would print.
    try:
        text = repr(value)
    except Exception:
        return value
    clean = redact_text(text)
    return value if clean == text else clean


def _redact_item(key: Any, value: Any, depth: int) -> Any:
    if (
        isinstance(key, str)
        and _SECRET_KEY.match(key)
        and value not in (None, "")
        and not isinstance(value, bool)
    ):
        return REDACTED
    return _redact_value(value, depth)


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: redact every string in the event (keys starting ``_`` are kept)."""
    out: EventDict = {}
    for key, value in event_dict.items():
        out[key] = value if key.startswith("_") else _redact_item(key, value, 0)
    return out


# ---------------------------------------------------------------------------------------------
# configuration


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Our handler, recognisable so that reconfiguring replaces it instead of adding another."""


class _Writer:
    """Where structlog's own chain ends: each rendered line is written through our handler (its
    stream, under its lock, so structlog and stdlib lines never interleave). structlog events
    skip the stdlib machinery (record, handler chain, formatter): a line costs half as much,
    and an evaluation of a thousand instances logs hundreds."""

    def __init__(self, handler: _Handler, name: str | None) -> None:
        self._handler = handler
        self.name = name

    def msg(self, message: str) -> None:
        handler = self._handler
        handler.acquire()
        try:
            handler.stream.write(message + handler.terminator)
            handler.flush()
        finally:
            handler.release()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


class _WriterFactory:
    def __init__(self, handler: _Handler) -> None:
        self._handler = handler

    def __call__(self, *args: Any) -> _Writer:
        name = args[0] if args and isinstance(args[0], str) else None
        return _Writer(self._handler, name)


def _json_default(value: Any) -> Any:
    """Money and times as their plain text (``"4.20"``, ISO 8601), anything else as repr."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (Decimal, PurePath)):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return repr(value)


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = level.upper()
    if name == "WARN":
        name = "WARNING"
    number = logging.getLevelName(name)
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    return number


def _level_filter(number: int) -> Processor:
    """Drop structlog events below ``number`` (as ``filter_by_level`` did for stdlib loggers)."""

    def drop_below(_logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        if _METHOD_LEVELS.get(method, logging.INFO) < number:
            raise structlog.DropEvent
        return event_dict

    return drop_below


_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def configure_logging(
    format: LogFormat = "auto",
    level: str | int = "info",
    stream: IO[str] | None = None,
) -> None:
    """Send structlog and stdlib logging to ``stream`` (stderr by default) through one pipeline.

    ``auto`` renders for people on a terminal and JSON lines otherwise. Logs go to stderr, not
    stdout, so commands that print JSON (``status --json``) stay parseable. Calling it again
    replaces the previous setup (SIGHUP reload).

    uvicorn and alembic install handlers of their own; this removes them so their records go
    through the pipeline too. Start uvicorn with ``log_config=None`` (and keep alembic's env.py
    free of ``fileConfig``) so they do not put them back afterwards.
    """
    stream = stream if stream is not None else sys.stderr
    tty = _is_tty(stream)
    use_json = format == "json" or (format == "auto" and not tty)
    if format not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {format!r} (expected auto, json or console)")
    number = _level_number(level)

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(default=_json_default)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=tty)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    handler = _Handler(stream)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    # structlog's events run the same chain in structlog itself and are written through the
    # same handler; stdlib records go through the handler's formatter
    structlog.configure(
        processors=[
            _level_filter(number),  # a processor, as stdlib's was: capture_logs sees all
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
        logger_factory=_WriterFactory(handler),
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        context_class=dict,
        cache_logger_on_first_use=False,
    )
    root.setLevel(number)
    for name in _NOISY:
        logging.getLogger(name).setLevel(
            logging.NOTSET if number <= logging.DEBUG else logging.WARNING
        )
    for name in _ADOPTED:
        adopted = logging.getLogger(name)
        for h in list(adopted.handlers):
            adopted.removeHandler(h)
        adopted.propagate = True
    logging.captureWarnings(True)


def reset_logging() -> None:
    """Undo :func:`configure_logging` (for tests): remove our handler, structlog defaults."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.setLevel(logging.WARNING)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.NOTSET)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def get_logger(name: str | None = None) -> Any:
    """A structlog logger named ``name`` (shown as ``logger`` in every line)."""
    return structlog.stdlib.get_logger(name)
