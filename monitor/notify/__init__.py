"""Notifications: routing notices to channels, grouping them into messages, delivering them.

    notices ──► Router (rule's notify / defaults + routes; console when nothing)
            ──► build_messages (one grouped message per channel per cycle, Jinja2 templates)
            ──► outbox rows (pending, written in the evaluation's transaction)
            ──► Outbox.deliver (due rows; Notifier.deliver: apprise, never raises; a failed
                 row is retried with backoff until it expires) ──► DeliveryResult per row

``dispatch(notices, router, notifier, now)`` does both steps; ``monitor.notify.testing`` has a
``RecordingNotifier`` for tests. Only this package uses apprise, and only when it delivers:
importing ``monitor.notify`` (e.g. for ``Notice``) does not import apprise.
"""

from monitor.notify.deliver import Delivers, Notifier, ResultCallback, dispatch
from monitor.notify.model import (
    CONSOLE,
    CONSOLE_CHANNEL,
    Attachment,
    Channel,
    DeliveryResult,
    Message,
    Notice,
    Route,
    severity_rank,
)
from monitor.notify.outbox import Outbox
from monitor.notify.redaction import protect, redact, secret_fragments
from monitor.notify.render import (
    Renderer,
    build_messages,
    format_duration,
    format_hours,
    format_money,
    format_number,
    validate_template,
)
from monitor.notify.routing import Router

__all__ = [
    "CONSOLE",
    "CONSOLE_CHANNEL",
    "Attachment",
    "Channel",
    "Delivers",
    "DeliveryResult",
    "Message",
    "Notice",
    "Notifier",
    "Outbox",
    "Renderer",
    "ResultCallback",
    "Route",
    "Router",
    "build_messages",
    "dispatch",
    "format_duration",
    "format_hours",
    "format_money",
    "format_number",
    "protect",
    "redact",
    "secret_fragments",
    "severity_rank",
    "validate_template",
]
