"""Real local receivers for notification tests: an HTTP JSON sink and an SMTP sink.

apprise talks to the network through ``requests`` and ``smtplib``, so the only honest way to test
delivery is a real socket. Both sinks listen on 127.0.0.1 on an ephemeral port, in a thread, and
record what they receive. Other tests import them::

    from tests.receivers import JsonSink, SmtpSink

    with JsonSink() as sink:
        ...  # deliver to sink.url
        assert sink.bodies[0]["title"] == ...
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["JsonSink", "ReceivedMail", "ReceivedRequest", "SmtpSink"]


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request the sink answered (including the ones it failed on purpose)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body, or the raw text when it was not JSON
    status: int


class JsonSink:
    """A local HTTP server recording POSTed JSON bodies; apprise's ``json://`` target.

    ``fail_next(n, status=500)`` makes the next ``n`` requests answer ``status`` (they are still
    recorded in ``requests`` but not in ``bodies``). ``hold()`` makes requests wait until
    ``release()``, to test timeouts.
    """

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self._gate = threading.Event()
        self._gate.set()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace")
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw
                sink._gate.wait(timeout=30)
                with sink._lock:
                    status = sink._failures.pop(0) if sink._failures else 200
                    sink.requests.append(
                        ReceivedRequest(
                            method="POST",
                            path=self.path,
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                            status=status,
                        )
                    )
                payload = b'{"ok": true}' if status < 300 else b'{"ok": false}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Silence the default stderr access log."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """The apprise URL of this sink."""
        return f"json://127.0.0.1:{self.port}/"

    @property
    def bodies(self) -> list[Any]:
        """The JSON bodies of the requests answered with success, in order."""
        with self._lock:
            return [r.body for r in self.requests if r.status < 300]

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        with self._lock:
            self._failures.extend([status] * n)

    def recover(self) -> None:
        """Forget the failures still queued by :meth:`fail_next`: answer 200 again."""
        with self._lock:
            self._failures.clear()

    def hold(self) -> None:
        """Make requests hang until :meth:`release` (simulates a stalled receiver)."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def start(self) -> JsonSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> JsonSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class ReceivedMail:
    """One message the SMTP sink accepted."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage = field(repr=False)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def text(self) -> str:
        """The decoded text of every text/* part, joined (plain and HTML alike)."""
        parts = []
        for part in self.message.walk():
            if part.get_content_maintype() == "text":
                parts.append(part.get_content())
        return "\n".join(parts)


class _Recorder:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._sink._lock:
            self._sink.messages.append(
                ReceivedMail(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=list(envelope.rcpt_tos),
                    message=message,
                )
            )
        return "250 Message accepted for delivery"


class _EphemeralController(Controller):
    """aiosmtpd's Controller bound to port 0: learns its real port before its self-check."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 recording every message; apprise's ``mailto://`` target."""

    def __init__(self) -> None:
        self.messages: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._controller = _EphemeralController(_Recorder(self), hostname="127.0.0.1", port=0)

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def mailto_url(self, to: str = "ops@example.com", sender: str = "monitor@example.com") -> str:
        """A plain-SMTP (no TLS, no login) apprise URL pointing at this sink, text body."""
        return f"mailto://127.0.0.1:{self.port}?from={sender}&to={to}&mode=insecure&format=text"

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
