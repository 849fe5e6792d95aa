"""The log pipeline: JSON or console by stream, stdlib routed through it, secrets never shown."""

from __future__ import annotations

import io
import json
import logging
import warnings
from datetime import datetime

import pytest

from monitor.logs import (
    clear_secrets,
    configure_logging,
    get_logger,
    redact_text,
    register_secret,
    reset_logging,
)

SECRET = "sk_live_Zq81mPz0Abc"


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _clean():
    yield
    reset_logging()
    clear_secrets()


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


class TestFormatSelection:
    def test_auto_is_json_when_not_a_terminal(self):
        out = io.StringIO()
        configure_logging("auto", "info", stream=out)

        get_logger("monitor.test").info("collected", instances=3)

        (line,) = json_lines(out)
        assert line["event"] == "collected"
        assert line["instances"] == 3
        assert line["level"] == "info"
        assert line["logger"] == "monitor.test"
        assert line["timestamp"].endswith("Z")
        assert datetime.fromisoformat(line["timestamp"]).utcoffset().total_seconds() == 0

    def test_json_renders_money_times_and_paths_as_text(self):
        from datetime import UTC, timedelta
        from decimal import Decimal
        from pathlib import Path

        out = io.StringIO()
        configure_logging("json", "info", stream=out)

        get_logger("x").info(
            "values",
            cost=Decimal("4.20"),
            at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
            took=timedelta(seconds=90),
            path=Path("/var/lib/x.db"),
        )

        line = json_lines(out)[0]
        assert line["cost"] == "4.20"
        assert line["at"] == "2026-01-02T03:04:00+00:00"
        assert line["took"] == 90.0
        assert line["path"] == "/var/lib/x.db"

    def test_auto_is_console_on_a_terminal(self):
        out = FakeTTY()
        configure_logging("auto", "info", stream=out)

        get_logger("monitor.test").info("collected", instances=3)

        text = out.getvalue()
        assert "collected" in text and "instances" in text
        with pytest.raises(json.JSONDecodeError):
            json.loads(text.splitlines()[0])

    def test_json_forced_on_a_terminal(self):
        out = FakeTTY()
        configure_logging("json", "info", stream=out)

        get_logger("x").info("hello")

        assert json_lines(out)[0]["event"] == "hello"

    def test_console_forced_off_a_terminal(self):
        out = io.StringIO()
        configure_logging("console", "info", stream=out)

        get_logger("x").info("hello", n=1)

        assert "hello" in out.getvalue() and "n=1" in out.getvalue()
        assert "\x1b[" not in out.getvalue()  # no colours when not a terminal

    def test_unknown_format_is_rejected(self):
        with pytest.raises(ValueError, match="unknown log format"):
            configure_logging("xml", "info", stream=io.StringIO())  # type: ignore[arg-type]


class TestLevelsAndStdlib:
    def test_level_filters_structlog_and_stdlib(self):
        out = io.StringIO()
        configure_logging("json", "warning", stream=out)

        get_logger("a").info("hidden")
        logging.getLogger("b").info("hidden too")
        get_logger("a").warning("shown")
        logging.getLogger("b").error("shown %s", "too")

        assert [(e["logger"], e["event"]) for e in json_lines(out)] == [
            ("a", "shown"),
            ("b", "shown too"),
        ]

    def test_stdlib_records_get_the_same_shape(self):
        out = io.StringIO()
        configure_logging("json", "info", stream=out)

        logging.getLogger("apscheduler.scheduler").warning("job %s missed", "collect")

        (line,) = json_lines(out)
        assert line["event"] == "job collect missed"
        assert line["level"] == "warning"
        assert line["logger"] == "apscheduler.scheduler"
        assert line["timestamp"].endswith("Z")

    def test_chatty_libraries_are_quiet_unless_debug(self):
        out = io.StringIO()
        configure_logging("json", "info", stream=out)
        logging.getLogger("httpx").info("HTTP Request: GET /x 200")
        assert json_lines(out) == []

        configure_logging("json", "debug", stream=out)
        logging.getLogger("httpx").info("HTTP Request: GET /x 200")
        assert [e["event"] for e in json_lines(out)] == ["HTTP Request: GET /x 200"]

    def test_library_handlers_are_taken_back(self):
        """uvicorn's default config gives its loggers their own handlers and no propagation."""
        own = io.StringIO()
        uvicorn_error = logging.getLogger("uvicorn.error")
        uvicorn_error.addHandler(logging.StreamHandler(own))
        uvicorn_error.propagate = False
        out = io.StringIO()

        configure_logging("json", "info", stream=out)
        uvicorn_error.warning("port busy")

        assert own.getvalue() == ""
        assert json_lines(out)[0]["logger"] == "uvicorn.error"

    def test_reconfiguring_replaces_the_handler(self):
        first, second = io.StringIO(), io.StringIO()
        configure_logging("json", "info", stream=first)
        configure_logging("json", "info", stream=second)

        get_logger("x").info("once")

        assert first.getvalue() == ""
        assert len(json_lines(second)) == 1


def _log_everything(secret: str) -> None:
    """Every path by which a secret could reach the output."""
    log = get_logger("monitor.test")
    log.info(f"calling with {secret}")
    log.info("request", url=f"https://h/x?k={secret}", nested={"a": [1, {"b": secret}]})
    log.info("object", obj=_Leaky(secret))
    log.info("positional %s", secret)
    try:
        raise RuntimeError(f"API said no to {secret}")
    except RuntimeError as exc:
        log.exception("collector failed")
        log.error("as value", error=exc)
        logging.getLogger("httpx").error("stdlib failed with %s", secret, exc_info=True)
    logging.getLogger("apprise").warning("posting to %s", f"json://u:{secret}@h/")
    logging.getLogger("apprise").warning("extra", extra={"detail": secret})
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"deprecated key {secret}", UserWarning, stacklevel=1)


class _Leaky:
    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __repr__(self) -> str:
        return f"_Leaky({self.secret})"


class TestRedaction:
    @pytest.mark.parametrize("fmt", ["json", "console"])
    def test_registered_secret_never_appears(self, fmt):
        out = io.StringIO()
        configure_logging(fmt, "info", stream=out)
        register_secret(SECRET)

        _log_everything(SECRET)

        text = out.getvalue()
        assert SECRET not in text
        assert text.count("***") >= 11
        assert "API said no to ***" in text  # the exception text is kept, redacted
        assert "Traceback" in text

    def test_console_on_a_terminal_with_colours(self):
        out = FakeTTY()
        configure_logging("auto", "info", stream=out)
        register_secret(SECRET)

        _log_everything(SECRET)

        assert SECRET not in out.getvalue()
        assert "***" in out.getvalue()

    def test_secret_registered_after_configuration_and_as_secretstr(self):
        from pydantic import SecretStr

        out = io.StringIO()
        configure_logging("json", "info", stream=out)
        get_logger("x").info("before")
        register_secret(SecretStr("another-secret-value"))

        get_logger("x").info("leak another-secret-value")

        assert json_lines(out)[-1]["event"] == "leak ***"

    def test_secret_keys_and_authorization_patterns(self):
        out = io.StringIO()
        configure_logging("json", "info", stream=out)

        get_logger("x").info(
            "sent",
            api_key="k-123456",
            access_token="t-123456",
            password="p",
            headers={"Authorization": "Bearer abcdef123456", "Accept": "json"},
            max_tokens=512,
            api_key_env="NOVITA_API_KEY",
            note="curl -H 'Authorization: Bearer abcdef123456' and bearer zyxw98765432",
        )

        (line,) = json_lines(out)
        assert line["api_key"] == "***"
        assert line["access_token"] == "***"
        assert line["password"] == "***"
        assert line["headers"] == {"Authorization": "***", "Accept": "json"}
        assert line["max_tokens"] == 512
        assert line["api_key_env"] == "NOVITA_API_KEY"
        assert "abcdef123456" not in line["note"] and "zyxw98765432" not in line["note"]

    def test_stdlib_record_with_secret_in_traceback(self):
        out = io.StringIO()
        configure_logging("json", "info", stream=out)
        register_secret(SECRET)

        try:
            {}[SECRET]
        except KeyError:
            logging.getLogger("uvicorn.error").exception("lookup failed")

        (line,) = json_lines(out)
        assert "KeyError" in line["exception"]
        assert SECRET not in json.dumps(line)

    def test_short_values_are_not_registered(self):
        register_secret("ab")
        register_secret("")
        register_secret(None)

        assert redact_text("ab cd") == "ab cd"

    def test_longest_secret_wins(self):
        register_secret("abcd1234")
        register_secret("abcd1234-suffix")

        assert redact_text("x abcd1234-suffix y abcd1234") == "x *** y ***"
