"""Scheduled reports: due times anchored at midnight UTC and recorded in the database, so a
restart neither skips nor resends one; delivered through apprise to real local receivers (an
e-mail carries the report as an attachment, a webhook gets the text summary)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.app import App
from monitor.clock import ManualClock
from monitor.config import Config
from monitor.errors import ConfigError
from monitor.pipeline import Pipeline
from monitor.report.schedule import ANCHOR, MAX_CATCH_UP, due_step, latest_due
from monitor.store.db import open_store
from tests.helpers import ENV, open_app, write_config
from tests.receivers import JsonSink, SmtpSink
from tests.test_report import BACKENDS, database_url

D = timedelta(days=1)
W = timedelta(days=7)


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def test_due_times_are_anchored_at_midnight_utc_weekly_on_mondays() -> None:
    assert ANCHOR.weekday() == 0 and ANCHOR.hour == 0
    assert latest_due(W, at(20, 12)) == at(16)  # Friday 20th: the Monday before
    assert latest_due(W, at(23)) == at(23)  # at the due time itself
    assert latest_due(D, at(20, 23, 59)) == at(20)
    assert latest_due(timedelta(hours=6), at(20, 13)) == at(20, 12)


def test_a_schedule_first_seen_starts_at_its_next_due_time() -> None:
    step = due_step(None, W, at(20, 12))
    assert step.baseline == at(16) and step.due == ()
    assert due_step(at(16), W, at(22, 23, 59)).due == ()
    assert due_step(at(16), W, at(23)).due == (at(23),)


def test_missed_due_times_are_caught_up_oldest_first_within_a_cap() -> None:
    step = due_step(at(1), D, at(4, 0, 5))
    assert step.due == (at(2), at(3), at(4)) and step.missed == ()
    long = due_step(at(1), D, at(20, 1))
    assert len(long.due) == MAX_CATCH_UP and long.due[-1] == at(20)
    assert long.missed == tuple(at(d) for d in range(2, 20 - MAX_CATCH_UP + 1))


def test_the_reports_section_is_checked(tmp_path: Path) -> None:
    ok = Config.load(
        write_config(
            tmp_path, extra="reports:\n  - {every: 7d, format: html, channels: [console]}\n"
        ),
        env=ENV,
    )
    (schedule,) = ok.reports
    assert schedule.every == 7 * 86400 and schedule.key == "every-604800s-html-console"
    for bad, expected in [
        ("{every: 90m, channels: [console]}", "whole number of hours"),
        ("{every: 1d, channels: [finance]}", "unknown channel 'finance'"),
        ("{every: 1d, format: pdf, channels: [console]}", "format"),
        ("{every: 1d}", "channels"),
    ]:
        with pytest.raises(ConfigError) as err:
            Config.load(write_config(tmp_path, extra=f"reports:\n  - {bad}\n"), env=ENV)
        assert expected in str(err.value) + "".join(map(str, err.value.problems)), bad


@pytest.fixture
def mail() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def hook() -> Iterator[JsonSink]:
    with JsonSink() as sink:
        yield sink


def schedule_config(
    tmp_path: Path, mail: SmtpSink, hook: JsonSink, channels: str = "finance, chat, hook"
) -> str:
    """E-mail (takes attachments), a Rocket.Chat webhook (takes none) and a JSON webhook
    (takes them), the two webhooks on one local sink (Rocket.Chat posts to ``/hooks/...``)."""
    rocket = tmp_path / "chat-url"
    rocket.write_text(f"rocket://abc123/def456@127.0.0.1:{hook.port}/%23finance")
    rocket.chmod(0o600)
    return (
        f'channels:\n  finance: "{mail.mailto_url(to="finance@example.com")}"\n'
        f"  chat: {{url_file: {rocket}}}\n"
        f'  hook: "{hook.url}"\n'
        "default_channels: [console]\n"
        "rules: []\n"
        f"reports:\n  - {{every: 1d, format: html, channels: [{channels}], name: daily}}\n"
    )


def received(hook: JsonSink, chat: bool) -> list[Any]:
    """What the Rocket.Chat webhook (``chat``) or the JSON webhook received."""
    return [
        r.body for r in hook.requests if r.status < 300 and r.path.startswith("/hooks/") == chat
    ]


def attachments(message: Any) -> list[tuple[str, str, bytes]]:
    return [
        (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
        for part in message.iter_attachments()
    ]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_scheduled_report_goes_out_once_per_due_time_across_restarts(
    tmp_path: Path,
    sim_app: Any,
    clock: ManualClock,
    mail: SmtpSink,
    hook: JsonSink,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extra = schedule_config(tmp_path, mail, hook)
    database = database_url(backend, monkeypatch)

    def start() -> App:  # the daemon (re)starting on the same database
        return open_app(tmp_path, sim_app, clock, extra=extra, database=database)

    app = start()
    try:
        await Pipeline(app, clock, collectors=["instances", "usage_bills", "products"]).step()
        assert app.report_step() == []  # first sight, T0 = Fri 20th 12:00: a baseline only
        assert [r.kind for r in app.store.report_runs("daily")] == ["baseline"]
        clock.set(at(20, 23, 59))
        assert app.report_step() == []
        clock.set(at(21, 0, 1))
        (made,) = app.report_step()
        assert made.due_at == at(21) and made.channels == ("finance", "chat", "hook")
        results = await app.deliver()
        assert sorted((r.channel, r.ok) for r in results) == [
            ("chat", True),
            ("finance", True),
            ("hook", True),
        ]
    finally:
        await app.aclose()

    # the e-mail carries the HTML report, its body the text summary
    (message,) = mail.messages
    assert message.rcpt_tos == ["finance@example.com"]
    assert "novita-monitor report 2026-11-20 - 2026-11-21 00:00 UTC" in message.subject
    ((name, media, content),) = attachments(message.message)
    assert name == "novita-monitor-report-2026-11-21.html" and media == "text/html"
    html = content.decode()
    assert html.startswith("<!DOCTYPE html>") and 'data-chart="spend-by-day"' in html
    summary = message.message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert summary.startswith("Cost report 2026-11-20 - 2026-11-21 00:00 UTC")
    assert "main: spent $" in summary
    # a chat webhook that takes no attachment gets the text summary alone
    (chat,) = received(hook, chat=True)
    text = chat["text"].replace("\\", "")  # apprise escapes it as Markdown
    assert text.startswith("# novita-monitor report 2026-11-20")
    assert summary.strip() in text and "<!DOCTYPE" not in json.dumps(chat)
    # apprise's JSON webhook takes attachments: the summary, and the report as a file
    (body,) = received(hook, chat=False)
    assert body["title"].startswith("novita-monitor report 2026-11-20")
    assert body["message"].strip() == summary.strip()
    ((attached),) = body["attachments"]
    assert attached["filename"] == name and base64.b64decode(attached["base64"]) == content

    # a restart at the same moment resends nothing
    app = start()
    try:
        assert app.report_step() == []
        assert await app.deliver() == []
    finally:
        await app.aclose()
    assert len(mail.messages) == 1 and len(hook.bodies) == 2

    # down over two due times: the restart sends both, oldest first, and no other
    clock.set(at(23, 7))
    app = start()
    try:
        made_now = app.report_step()
        assert [m.due_at for m in made_now] == [at(22), at(23)]
        await app.deliver()
        assert app.report_step() == []
    finally:
        await app.aclose()
    subjects = [m.subject for m in mail.messages]
    assert [s.split(" - ")[1] for s in subjects] == [
        "2026-11-21 00:00 UTC",
        "2026-11-22 00:00 UTC",
        "2026-11-23 00:00 UTC",
    ]
    assert len(received(hook, chat=True)) == len(received(hook, chat=False)) == 3
    store = open_store(app.config.database_url)  # one row per due time
    try:
        runs = [(r.kind, r.due_at) for r in store.report_runs("daily")]
        assert runs == [("baseline", at(20)), ("report", at(21)), ("report", at(22)),
                        ("report", at(23))]  # fmt: skip
        assert len([n for n in store.notifications() if n.kind == "report"]) == 9
    finally:
        store.close()


async def test_a_failed_delivery_is_retried_by_the_outbox_not_produced_again(
    tmp_path: Path, sim_app: Any, clock: ManualClock, mail: SmtpSink, hook: JsonSink
) -> None:
    extra = schedule_config(tmp_path, mail, hook, channels="finance, hook")
    app = open_app(tmp_path, sim_app, clock, extra=extra)
    try:
        (job,) = [j for j in app.extra_jobs() if j.name == "reports"]  # the daemon's job
        await job.fn()
        clock.set(at(21, 0, 1))
        hook.fail_next(1)
        await job.fn()  # produces the report and delivers it
        assert len(mail.messages) == 1 and hook.bodies == []
        clock.advance(120)  # after the outbox's backoff
        assert app.report_step() == []
        (retry,) = await app.deliver()  # the delivery job's next run
        assert retry.channel == "hook" and retry.ok
    finally:
        await app.aclose()
    assert len(mail.messages) == 1 and len(hook.bodies) == 1


def test_no_reports_job_without_a_reports_section(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    app = open_app(tmp_path, sim_app, clock)
    try:
        assert "reports" not in [j.name for j in app.extra_jobs()]
    finally:
        app.store.close()
