"""Keeping notification secrets out of logs.

A channel URL may hold a token or a password. This package never logs a URL (only the channel
name and scheme), but apprise and urllib3 log on their own: apprise's JSON plugin writes the POST
URL at DEBUG, urllib3 the request path. :func:`protect` installs a filter on those loggers that
replaces every secret fragment of the registered URLs with ``***``, and :func:`redact` cleans the
error texts this package records. The daemon's log pipeline may redact too; this is the seam
that does not depend on it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

from monitor.logs import register_secret

__all__ = ["MASK", "protect", "redact", "secret_fragments"]

MASK = "***"

# Loggers that may print a URL or a request path.
_LOGGERS = ("apprise", "urllib3.connectionpool", "requests", "smtplib")

# apprise query options that never hold a secret (their values are words like "text", "POST").
_PLAIN_QUERY_KEYS = {"format", "mode", "method", "overflow", "retry", "wait", "optional", "cto"}


def secret_fragments(url: str) -> set[str]:
    """Every piece of ``url`` that could be a secret (generous: over-redacting costs nothing)."""
    out = {url}
    try:
        parts = urlsplit(url)
        out.update(p for p in (parts.username, parts.password) if p)
        if parts.password:
            out.add(f"{parts.username or ''}:{parts.password}")
        host = parts.hostname or ""
        # apprise puts tokens in the host position (tgram://TOKEN/..., slack://A/B/C).
        if host and "." not in host and host != "localhost" and len(host) >= 4:
            out.add(host)
        for segment in parts.path.split("/"):
            if len(segment) >= 6 or (len(segment) >= 4 and any(c.isdigit() for c in segment)):
                out.add(segment)
        for key, value in parse_qsl(parts.query, keep_blank_values=False):
            if key.lower() not in _PLAIN_QUERY_KEYS and len(value) >= 4:
                out.add(value)
    except ValueError:
        pass
    out.update({unquote(f) for f in out})
    return {f for f in out if f}


def _surely_secret(fragment: str) -> bool:
    if "://" in fragment:
        return True
    return (
        len(fragment) >= 12
        and any(c.isdigit() for c in fragment)
        and any(c.isalpha() for c in fragment)
    )


class _Redactor(logging.Filter):
    """A logging filter that rewrites records whose text contains a registered secret."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def add(self, fragments: Iterable[str]) -> None:
        with self._lock:
            merged = set(self._secrets) | set(fragments)
            # Longest first, so a whole URL is masked before its parts.
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def clean(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        cleaned = self.clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_REDACTOR = _Redactor()
_install_lock = threading.Lock()


def protect(urls: Iterable[str | None]) -> None:
    """Register the secrets of ``urls`` and make sure the third-party loggers are filtered."""
    fragments: set[str] = set()
    for url in urls:
        if url:
            fragments |= secret_fragments(url)
            with contextlib.suppress(ValueError):
                register_secret(urlsplit(url).password)
    _REDACTOR.add(fragments)
    # The daemon's log pipeline masks these everywhere; only what is surely a secret goes there,
    # so that ordinary words of a URL path ("services", "hooks") stay readable in other lines.
    for fragment in fragments:
        if _surely_secret(fragment):
            register_secret(fragment)
    with _install_lock:
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            if _REDACTOR not in logger.filters:  # checked each time: a logging reset may drop it
                logger.addFilter(_REDACTOR)


def redact(text: str, urls: Iterable[str | None] = ()) -> str:
    """``text`` with the secrets of ``urls`` and of every protected URL masked."""
    for url in urls:
        if url:
            for fragment in sorted(secret_fragments(url), key=len, reverse=True):
                text = text.replace(fragment, MASK)
    return _REDACTOR.clean(text)
