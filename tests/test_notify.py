"""Notifications: routing, grouping, templates, and real apprise delivery to local sinks."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

import monitor.notify
from monitor.clock import ManualClock
from monitor.errors import ConfigError
from monitor.notify import (
    CONSOLE,
    Channel,
    DeliveryResult,
    Message,
    Notice,
    Notifier,
    Renderer,
    Route,
    Router,
    build_messages,
    dispatch,
    format_duration,
    format_hours,
    format_money,
    format_number,
    validate_template,
)
from monitor.notify.testing import RecordingNotifier
from tests.receivers import JsonSink, SmtpSink

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def json_sink() -> Iterator[JsonSink]:
    with JsonSink() as sink:
        yield sink


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


class Sleeps:
    """A no-op sleep that remembers what it was asked to wait."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def idle(n: int, name: str, per_hour: str, so_far: str, util: float, **kw: object) -> Notice:
    fields: dict = dict(
        fingerprint=f"fp-idle-{n}",
        rule="idle-gpu",
        severity="warning",
        state="firing",
        account="main",
        resource_kind="instance",
        resource_id=f"i-{n:04d}",
        resource_name=name,
        summary="GPU idle",
        values={
            "kind": "idle_gpu",
            "value": util,
            "threshold": 5,
            "unit": "%",
            "gpu_count": 1,
            "idle_gpus": 1,
            "idle_minutes": 45,
            "cost_per_hour_usd": Decimal(per_hour),
            "cost_so_far_usd": Decimal(so_far),
        },
        labels={"team": "ml"},
        started_at=NOW - timedelta(minutes=45),
    )
    fields.update(kw)
    return Notice(**fields)


def three_idle() -> list[Notice]:
    return [
        idle(1, "notebook", "1.40", "1.05", 1.2),
        idle(2, "notebook-2", "2.10", "3.00", 0),
        idle(3, "dev-box", "0.70", "0.50", 3.5),
    ]


def low_balance(severity: str = "critical", state: str = "firing") -> Notice:
    return Notice(
        fingerprint=f"fp-balance-{severity}",
        rule="low-balance",
        severity=severity,
        state=state,  # type: ignore[arg-type]
        account="main",
        resource_kind="account",
        resource_id="acct-1",
        resource_name="main",
        summary="balance runway under 24 h",
        values={
            "kind": "low_balance",
            "balance_usd": Decimal("52.3"),
            "burn_rate_usd_per_hour": Decimal("2.86"),
            "runway_hours": 18.25,
            "value": 18.3,
            "threshold": 24,
            "unit": "h",
        },
        labels={"team": "finance"},
    )


def resolved_idle() -> Notice:
    return idle(
        9,
        "old-notebook",
        "1.00",
        "2.00",
        60,
        state="resolved",
        summary="GPU busy again",
        started_at=NOW - timedelta(hours=3),
    )


# formatting


def test_money_hours_and_numbers_are_formatted_for_people() -> None:
    assert format_money(Decimal("4.2")) == "$4.20"
    assert format_money(1234.5) == "$1,234.50"
    assert format_money(Decimal("-3")) == "-$3.00"
    assert format_money("0.0042") == "$0.0042"
    assert format_hours(38.5) == "38.5 h"
    assert format_hours(Decimal("18.25")) == "18.3 h"
    assert format_number(1.2, "%") == "1.2%"
    assert format_number(5, "%") == "5%"
    assert format_number(Decimal("52.3"), "$") == "$52.30"
    assert format_number(3, "GB") == "3 GB"
    assert format_duration(timedelta(minutes=45)) == "45 min"
    assert format_duration(timedelta(hours=3)) == "3 h"
    assert format_duration(timedelta(hours=5, minutes=10)) == "5 h 10 min"
    assert format_duration(timedelta(days=3, hours=2)) == "3 d 2 h"


# routing


def test_a_rule_without_notify_goes_to_the_default_channels() -> None:
    router = Router(
        [Channel("ops", "json://127.0.0.1:1/"), Channel("mail", "mailto://127.0.0.1:2")],
        default_channels=["ops"],
    )
    assert router.channels_for(idle(1, "a", "1", "1", 1)) == ["ops"]
    assert router.channels_for(idle(1, "a", "1", "1", 1, channels=["mail"])) == ["mail"]


def test_routes_add_channels_by_severity_and_labels() -> None:
    router = Router(
        [Channel(n, f"json://127.0.0.1:1/{n}") for n in ("ops", "pager", "finance")],
        default_channels=["ops"],
        routes=[
            Route(match={"severity": "critical"}, channels=["pager"]),
            Route(
                match={"team": ["finance", "billing"], "severity": "critical"}, channels=["finance"]
            ),
        ],
    )
    assert router.channels_for(idle(1, "a", "1", "1", 1)) == ["ops"]
    assert router.channels_for(low_balance("critical")) == ["ops", "pager", "finance"]
    assert router.channels_for(low_balance("warning")) == ["ops"]


def test_with_no_channel_configured_notices_go_to_the_console() -> None:
    router = Router()
    assert router.channels_for(idle(1, "a", "1", "1", 1)) == ["console"]
    assert router.channel("console") is CONSOLE
    (message,) = build_messages(three_idle(), router, NOW)
    assert message.channel == "console"


def test_a_channel_unknown_at_runtime_is_dropped_not_fatal() -> None:
    router = Router([Channel("ops", "json://127.0.0.1:1/")], default_channels=["ops"])
    notice = idle(1, "a", "1", "1", 1, channels=["gone", "ops"])
    assert router.channels_for(notice) == ["ops"]
    assert router.channels_for(idle(1, "a", "1", "1", 1, channels=["gone"])) == ["console"]


def test_router_rejects_unknown_channel_names_in_its_configuration() -> None:
    with pytest.raises(ConfigError, match="nope"):
        Router([Channel("ops", "json://x/")], default_channels=["nope"])
    with pytest.raises(ConfigError, match="pager"):
        Router([Channel("ops", "json://x/")], routes=[Route({"severity": "critical"}, ["pager"])])


def test_a_channel_repr_never_shows_its_url() -> None:
    channel = Channel("ops", "json://user:hunter2@127.0.0.1/")
    assert "hunter2" not in repr(channel)
    assert channel.scheme == "json"


# grouping and templates


def test_the_hourly_waste_says_which_idle_gpus_it_covers() -> None:
    """A prepaid (monthly) instance idles at no extra cost by the hour: its GPUs count as
    idle, and the headline says the hourly figure covers the others only."""
    prepaid = idle(4, "lapsing", "0", "0", 2.0)
    prepaid.values.update(cost_per_hour_usd=None, cost_so_far_usd=None, gpu_count=2, idle_gpus=2)
    router = Router([Channel("ops", "json://127.0.0.1:1/")], default_channels=["ops"])
    (message,) = build_messages([*three_idle(), prepaid], router, NOW)
    assert message.title == "[warning] idle-gpu: 5 GPUs idle, $4.20/h wasted on 3 of them"
    (only_priced,) = build_messages(three_idle(), router, NOW)
    assert only_priced.title == "[warning] idle-gpu: 3 GPUs idle, $4.20/h wasted"


def test_three_idle_instances_make_one_message_with_a_line_each() -> None:
    router = Router([Channel("ops", "json://127.0.0.1:1/")], default_channels=["ops"])
    (message,) = build_messages(three_idle(), router, NOW)
    assert message.channel == "ops"
    assert message.title == "[warning] idle-gpu: 3 GPUs idle, $4.20/h wasted"
    assert message.kind == "warning"
    assert sorted(message.fingerprints) == ["fp-idle-1", "fp-idle-2", "fp-idle-3"]
    lines = message.body.splitlines()
    assert lines[0] == message.title
    # each figure once, labelled: no "value", no repeated price, no "vs threshold"
    assert lines[1] == "- notebook-2 (i-0002): GPU 0% for 45 min (under 5%), $2.10/h, $3.00 so far"
    assert "- notebook (i-0001): GPU 1.2% for 45 min (under 5%), $1.40/h, $1.05 so far" in lines
    assert "- dev-box (i-0003): GPU 3.5% for 45 min (under 5%), $0.70/h, $0.50 so far" in lines
    assert len([line for line in lines if line.startswith("- ")]) == 3


def test_one_message_per_channel_grouped_by_rule_worst_first_resolved_apart() -> None:
    router = Router(
        [Channel("ops", "json://127.0.0.1:1/"), Channel("pager", "json://127.0.0.1:2/")],
        default_channels=["ops"],
        routes=[Route({"severity": "critical"}, ["pager"])],
    )
    notices = [*three_idle(), low_balance(), resolved_idle()]
    ops, pager = build_messages(notices, router, NOW)
    assert (ops.channel, pager.channel) == ("ops", "pager")
    assert ops.kind == "failure"
    assert ops.title == "[critical] 4 alerts firing: low-balance, idle-gpu; 1 resolved"
    body = ops.body
    assert body.index("[critical] low-balance") < body.index("[warning] idle-gpu")
    assert "- main (acct-1): balance $52.30, burning $2.86/h: runway 18.3 h (under 24.0 h)" in body
    resolved = body[body.index("Resolved:") :]
    assert "[resolved] idle-gpu: 1 instance back to normal" in resolved
    assert "- old-notebook (i-0009): busy again: GPU 60%; was idle 45 min, cost $2.00" in resolved
    assert "old-notebook" not in body[: body.index("Resolved:")]
    assert pager.fingerprints == ("fp-balance-critical",)
    assert pager.title.startswith("[critical] low-balance: balance running low")


def test_send_resolved_false_drops_resolved_notices_for_that_channel() -> None:
    router = Router(
        [
            Channel("chat", "json://127.0.0.1:1/"),
            Channel("mail", "mailto://x", send_resolved=False),
        ],
        default_channels=["chat", "mail"],
    )
    chat, mail = build_messages([*three_idle(), resolved_idle()], router, NOW)
    assert "fp-idle-9" in chat.fingerprints and "Resolved:" in chat.body
    assert "fp-idle-9" not in mail.fingerprints and "Resolved:" not in mail.body
    # A channel with only resolved notices to tell gets no message at all.
    (only,) = build_messages([resolved_idle()], router, NOW)
    assert only.channel == "chat"
    assert only.kind == "success"
    assert only.title == "[resolved] idle-gpu: 1 instance back to normal"


def test_a_rules_template_override_replaces_its_lines_only() -> None:
    router = Router()
    custom = "{{ name }} idle at {{ value|num(unit) }}, burning {{ cost_per_hour_usd|money }}/h ({{ labels.team }})"
    notices = [idle(1, "notebook", "1.40", "1.05", 1.2, template=custom), low_balance()]
    (message,) = build_messages(notices, router, NOW)
    assert "- notebook idle at 1.2%, burning $1.40/h (ml)" in message.body
    assert "- main (acct-1): balance $52.30, burning $2.86/h: runway 18.3 h" in message.body


def test_a_broken_override_falls_back_to_the_default_line() -> None:
    notice = idle(1, "notebook", "1.40", "1.05", 1.2, template="{{ name | nosuchfilter }}")
    (message,) = build_messages([notice], Router(), NOW)
    assert "- notebook (i-0001): GPU 1.2% for 45 min (under 5%)" in message.body
    assert validate_template("{{ name") is not None
    assert validate_template("{{ name }} {{ value|money }}") is None


def test_missing_values_render_as_nothing_rather_than_failing() -> None:
    bare = Notice("fp", "failed-tasks", "warning", "firing", "main", "task", "t-1", "", "FAILED")
    (message,) = build_messages([bare], Router(), NOW)
    # no condition kind: a plain headline, never one guessed from the rule's name
    assert message.title == "[warning] failed-tasks: 1 task"
    assert message.body.splitlines()[1] == "- t-1: FAILED"


def test_savings_and_expiry_are_quoted_in_dollars_and_days() -> None:
    def notice(rule: str, n: int, values: dict) -> Notice:
        return Notice(
            f"fp-{rule}-{n}",
            rule,
            "info",
            "firing",
            "main",
            "instance",
            f"i-{n}",
            f"box-{n}",
            "see below",
            values=values,
        )

    def candidate(saving: str) -> dict:
        return {
            "kind": "subscription_candidate",
            "value": 730,
            "unit": "h",
            "break_even_hours": 511.4,
            "hourly_cost_usd": Decimal("0.35"),
            "monthly_price_usd": Decimal("179"),
            "monthly_saving_usd": Decimal(saving),
        }

    candidates = [
        notice("subscription-candidates", 1, candidate("310.5")),
        notice("subscription-candidates", 2, candidate("89.5")),
    ]
    (message,) = build_messages(candidates, Router(), NOW)
    assert message.title == (
        "[info] subscription-candidates: 2 instances cheaper as a subscription, save $400.00/month"
    )
    assert (
        "- box-1 (i-1): runs 730.0 h/month (break-even 511.4 h): $179.00/month instead of "
        "$0.35/h saves $310.50/month" in message.body
    )
    expiring = [
        notice(
            "expiring-subscriptions",
            3,
            {
                "kind": "expiring_subscription",
                "days_left": 2.5,
                "util_avg": 71,
                "lookback_days": 7,
                "monthly_price_usd": Decimal(179),
                "auto_renew": False,
            },
        )
    ]
    (message,) = build_messages(expiring, Router(), NOW)
    assert message.title == "[info] expiring-subscriptions: 1 subscription expiring"
    assert (
        "- box-3 (i-3): expires in 2.5 d, GPU 71% over 7 d, $179.00/month, auto-renew off"
        in message.body
    )


def test_a_template_directory_overrides_the_defaults(tmp_path) -> None:
    (tmp_path / "title.j2").write_text("ALERT {{ firing_count }}")
    (message,) = build_messages(three_idle(), Router(), NOW, Renderer(tmp_path))
    assert message.title == "ALERT 3"
    assert "$1.05 so far" in message.body


# delivery


async def test_real_delivery_to_a_json_receiver(json_sink: JsonSink) -> None:
    channels = [Channel("ops", json_sink.url)]
    results: list[DeliveryResult] = []
    notifier = Notifier(channels, ManualClock(NOW), sleep=Sleeps(), on_result=results.append)
    messages = build_messages(three_idle(), Router(channels, ["ops"]), NOW)
    (result,) = await notifier.deliver(messages)
    assert result.ok and result.attempts == 1 and result.error is None
    assert result.at == NOW
    assert sorted(result.fingerprints) == ["fp-idle-1", "fp-idle-2", "fp-idle-3"]
    assert results == [result]
    (body,) = json_sink.bodies
    assert body["title"] == "[warning] idle-gpu: 3 GPUs idle, $4.20/h wasted"
    assert body["type"] == "warning"
    for text in ("notebook (i-0001)", "notebook-2 (i-0002)", "dev-box (i-0003)", "$2.10/h"):
        assert text in body["message"]
    assert "GPU 1.2% for 45 min (under 5%)" in body["message"]


async def test_real_delivery_by_mail_to_an_smtp_receiver(smtp_sink: SmtpSink) -> None:
    channels = [Channel("mail", smtp_sink.mailto_url(to="ops@example.com"))]
    notifier = Notifier(channels, ManualClock(NOW), sleep=Sleeps())
    messages = build_messages([*three_idle(), low_balance()], Router(channels, ["mail"]), NOW)
    (result,) = await notifier.deliver(messages)
    assert result.ok, result.error
    (mail,) = smtp_sink.messages
    assert mail.rcpt_tos == ["ops@example.com"]
    assert mail.subject == "[critical] 4 alerts firing: low-balance, idle-gpu"
    assert "notebook-2 (i-0002): GPU 0% for 45 min (under 5%)" in mail.text
    assert "runway 18.3 h" in mail.text


async def test_a_failing_channel_is_retried_with_backoff_then_recorded(
    json_sink: JsonSink, smtp_sink: SmtpSink
) -> None:
    json_sink.fail_next(10)
    channels = [Channel("hook", json_sink.url), Channel("mail", smtp_sink.mailto_url())]
    sleeps = Sleeps()
    recorded: list[DeliveryResult] = []
    notifier = Notifier(
        channels,
        ManualClock(NOW),
        sleep=sleeps,
        max_attempts=3,
        backoff_s=1.0,
        on_result=recorded.append,
    )
    messages = build_messages(three_idle(), Router(channels, ["hook", "mail"]), NOW)
    hook, mail = await notifier.deliver(messages)
    assert (hook.channel, hook.ok, hook.attempts) == ("hook", False, 3)
    assert "500" in (hook.error or "")
    assert sleeps.calls == [1.0, 2.0]
    assert len(json_sink.requests) == 3 and json_sink.bodies == []
    assert mail.ok and len(smtp_sink.messages) == 1
    assert sorted(r.channel for r in recorded) == ["hook", "mail"]


async def test_a_transient_failure_is_delivered_on_retry(json_sink: JsonSink) -> None:
    json_sink.fail_next(2, status=503)
    sleeps = Sleeps()
    notifier = Notifier([Channel("hook", json_sink.url)], ManualClock(NOW), sleep=sleeps)
    (result,) = await notifier.deliver([Message("hook", "t", "b", "info", ("fp",))])
    assert result.ok and result.attempts == 3
    assert sleeps.calls == [1.0, 2.0]
    assert len(json_sink.bodies) == 1


async def test_an_unreachable_receiver_fails_without_raising() -> None:
    with JsonSink() as sink:
        url = sink.url
    notifier = Notifier([Channel("gone", url)], ManualClock(NOW), sleep=Sleeps(), max_attempts=2)
    (result,) = await notifier.deliver([Message("gone", "t", "b", "info", ("fp",))])
    assert not result.ok and result.attempts == 2
    assert "connection" in (result.error or "").lower()


async def test_an_invalid_url_is_not_retried() -> None:
    sleeps = Sleeps()
    notifier = Notifier([Channel("bad", "nosuchscheme://x")], ManualClock(NOW), sleep=sleeps)
    (result,) = await notifier.deliver([Message("bad", "t", "b", "info", ())])
    assert (result.ok, result.attempts, sleeps.calls) == (False, 1, [])
    assert "invalid apprise URL" in (result.error or "")


async def test_a_stalled_channel_times_out_without_holding_up_the_others(
    json_sink: JsonSink, smtp_sink: SmtpSink
) -> None:
    with JsonSink() as stalled:
        stalled.hold()
        channels = [Channel("slow", stalled.url), Channel("mail", smtp_sink.mailto_url())]
        notifier = Notifier(channels, ManualClock(NOW), sleep=Sleeps(), timeout_s=0.5)
        messages = [Message(c.name, "t", "b", "info", ("fp",)) for c in channels]
        slow, mail = await notifier.deliver(messages)
    assert not slow.ok and "timed out" in (slow.error or "")
    assert mail.ok and len(smtp_sink.messages) == 1


async def test_console_fallback_prints_the_message() -> None:
    stream = io.StringIO()
    notifier = Notifier([], ManualClock(NOW), sleep=Sleeps(), stream=stream)
    messages = build_messages(three_idle(), Router(), NOW)
    (result,) = await notifier.deliver(messages)
    assert result.ok and result.channel == "console"
    printed = stream.getvalue()
    assert printed.startswith("[warning] idle-gpu: 3 GPUs idle, $4.20/h wasted\n")
    assert "notebook-2 (i-0002)" in printed


async def test_send_test_reaches_the_channel(json_sink: JsonSink) -> None:
    notifier = Notifier([Channel("ops", json_sink.url)], ManualClock(NOW), sleep=Sleeps())
    result = await notifier.send_test("ops")
    assert result.ok
    (body,) = json_sink.bodies
    assert "test" in body["title"] and "'ops'" in body["message"]
    unknown = await notifier.send_test("nope")
    assert not unknown.ok and "unknown channel 'nope'" in (unknown.error or "")


async def test_a_failing_result_callback_does_not_break_delivery(json_sink: JsonSink) -> None:
    def explode(result: DeliveryResult) -> None:
        raise RuntimeError("database is down")

    notifier = Notifier([Channel("ops", json_sink.url)], ManualClock(NOW), on_result=explode)
    (result,) = await notifier.deliver([Message("ops", "t", "b", "info", ())])
    assert result.ok


async def test_secrets_in_channel_urls_never_reach_the_logs(
    json_sink: JsonSink, caplog: pytest.LogCaptureFixture
) -> None:
    token = "Tk9secretWebhookToken77"
    password = "pw-Zq81secret"
    with JsonSink() as failing:
        failing.fail_next(100)
        good = f"json://bot:{password}@127.0.0.1:{json_sink.port}/hooks/{token}"
        bad = f"json://127.0.0.1:{failing.port}/hooks/{token}?apikey={password}"
        channels = [Channel("good", good), Channel("bad", bad)]
        caplog.set_level(logging.DEBUG)
        notifier = Notifier(channels, ManualClock(NOW), sleep=Sleeps(), max_attempts=2)
        with capture_logs() as events:
            results = await notifier.deliver(
                [
                    Message("good", "t", "b", "info", ("a",)),
                    Message("bad", "t", "b", "info", ("b",)),
                ]
            )
    assert [r.ok for r in results] == [True, False]
    assert any(e["event"] == "notify.failed" and e["channel"] == "bad" for e in events)
    assert any(e["event"] == "notify.delivered" and e["scheme"] == "json" for e in events)
    assert "apprise" in {r.name for r in caplog.records}  # apprise did log, at DEBUG
    everything = "\n".join(
        [str(events), caplog.text, *(r.getMessage() for r in caplog.records), str(results)]
    )
    assert token not in everything
    assert password not in everything
    # The receivers did get the real path: redaction is for logs only.
    assert json_sink.requests[-1].path == f"/hooks/{token}"
    assert failing.requests[-1].path.startswith(f"/hooks/{token}")


# the package's surface


def test_public_names_are_pinned() -> None:
    public = {n for n in dir(monitor.notify) if not n.startswith("_")}
    modules = {"deliver", "model", "outbox", "redaction", "render", "routing", "testing"}
    assert sorted(monitor.notify.__all__) == sorted(public - modules)


def test_importing_the_package_does_not_load_apprise() -> None:
    code = "import sys, monitor.notify; print('apprise' in sys.modules)"
    root = str(Path(monitor.notify.__file__).parents[2])
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "False"


def test_a_channel_accepts_the_configs_secret_strings() -> None:
    channel = Channel("ops", SecretStr("json://127.0.0.1:9/hook"))  # type: ignore[arg-type]
    assert channel.url == "json://127.0.0.1:9/hook"
    assert "hook" not in repr(channel)


async def test_dispatch_groups_and_delivers_through_any_notifier() -> None:
    recorder = RecordingNotifier(failing={"pager"})
    router = Router(
        [Channel("ops", "json://127.0.0.1:1/"), Channel("pager", "json://127.0.0.1:2/")],
        default_channels=["ops"],
        routes=[Route({"severity": "critical"}, ["pager"])],
    )
    results = await dispatch([*three_idle(), low_balance()], router, recorder, NOW)
    assert [(r.channel, r.ok) for r in results] == [("ops", True), ("pager", False)]
    (sent,) = recorder.messages
    assert sent.channel == "ops" and len(sent.fingerprints) == 4


def test_channel_secrets_are_registered_with_the_daemons_log_pipeline() -> None:
    from monitor.logs import redact_text

    Notifier([Channel("x", "json://me:pw-short7@127.0.0.1/hooks/T0KENabc123456789")], ManualClock())
    line = redact_text("posting to /hooks/T0KENabc123456789 as me:pw-short7, via hooks")
    assert "T0KENabc123456789" not in line and "pw-short7" not in line
    assert "via hooks" in line  # plain words of the URL stay readable elsewhere


def test_an_actions_notice_is_counted_as_an_action_not_an_alert() -> None:
    """A stop announced beside the idle alerts of its rule: the title and headline count three
    alerts and one action (the demo's "21 alerts firing" when 18 were); a group holding only
    actions' notices (the act step's "stopped X") says so."""
    from dataclasses import replace as change

    announced = change(
        three_idle()[0],
        fingerprint="fp-action-stop-1",
        summary="will stop notebook at 14:30 unless it becomes busy",
        values={"action": "stop", "saving_per_hour_usd": 1.4},
    )
    (message,) = build_messages([*three_idle(), announced, low_balance()], Router(), NOW)
    assert message.title.startswith("[critical] 4 alerts firing, 1 action: ")
    assert "idle-gpu: " in message.body and "4 alerts" not in message.body
    (only,) = build_messages([announced], Router(), NOW)
    assert only.title == "[warning] idle-gpu: 1 action"


def test_an_actions_notice_goes_on_its_alerts_line_and_stands_alone_without_it() -> None:
    """One line per instance: the stop announced for an instance whose alert is in the group
    follows that alert's figures on its line; an action on an instance whose alert is not in
    the message keeps a line of its own. The counts do not change."""
    from dataclasses import replace as change

    def announced(alert: Notice) -> Notice:
        return change(
            alert,
            fingerprint=f"{alert.fingerprint}-action",
            summary=f"will stop {alert.resource_name} at 12:15 UTC unless it becomes busy",
            values={"action": "stop", "saving_per_hour_usd": 1.4},
        )

    notebook, other, dev_box = three_idle()
    lonely = announced(idle(9, "trainer", "0.70", "0", 0))
    (message,) = build_messages(
        [notebook, other, dev_box, announced(notebook), lonely], Router(), NOW
    )
    assert message.title.startswith("[warning] idle-gpu: ")
    lines = [x for x in message.body.splitlines() if x.startswith("- ")]
    assert len(lines) == 4, lines  # three alerts' lines, and the lone action's
    (mine,) = [x for x in lines if x.startswith("- notebook (i-0001): ")]
    assert mine.endswith("so far; will stop notebook at 12:15 UTC unless it becomes busy"), mine
    assert "- trainer (i-0009): will stop trainer at 12:15 UTC" in message.body
    assert sum("will stop" in x for x in lines) == 2
    (alone,) = build_messages([notebook, announced(notebook)], Router(), NOW)
    assert alone.title.startswith("[warning] idle-gpu: 1 GPU idle")  # one alert, one action


def test_a_line_repeated_by_a_later_group_points_to_the_first() -> None:
    """Two rules on one instance (the shipped idle-gpu rule and a stop rule), both resolved
    by the stop: the second group says "as under idle-gpu" instead of the idle time and cost
    again, which a reader would add up twice. A line with other figures is shown whole."""
    from dataclasses import replace as change

    def ended(alert: Notice, rule: str) -> Notice:
        return change(
            alert,
            rule=rule,
            fingerprint=f"{alert.fingerprint}-{rule}",
            state="resolved",
            values={**alert.values, "instance_status": "exited"},
        )

    notebook, other, _ = three_idle()
    cheaper = change(other, values={**other.values, "cost_so_far_usd": Decimal("2.50")})
    notices = [
        ended(notebook, "idle-gpu"),
        ended(other, "idle-gpu"),
        ended(notebook, "stop-idle-gpus"),
        ended(cheaper, "stop-idle-gpus"),
    ]
    (message,) = build_messages(notices, Router(), NOW)
    body = message.body
    first, second = body.index("idle-gpu: 2"), body.index("stop-idle-gpus: 2")
    assert body.count("cost $1.05") == 1 and body.index("cost $1.05") < second
    assert "- notebook (i-0001): as under idle-gpu" in body[second:]
    assert body.count("cost $3.00") == 1 and body.count("cost $2.50") == 1  # not the same line
    assert first < second
    # inside one group a line is never "as under" its own rule
    twin = change(ended(notebook, "idle-gpu"), fingerprint="fp-twin")
    (same,) = build_messages([ended(notebook, "idle-gpu"), twin], Router(), NOW)
    assert "as under" not in same.body and same.body.count("cost $1.05") == 2


def test_a_group_on_instances_an_earlier_group_holds_for_the_same_condition_says_so() -> None:
    """The shipped idle rule and a stop rule on the same idle instances: both headlines say
    what is wasted per hour; the second says how many of its instances the first holds, so the
    two figures are not added up. Another condition on the same instance is not an overlap."""
    from dataclasses import replace as change

    notebook, other, dev_box = three_idle()
    stop = [
        change(n, rule="stop-idle-gpus", fingerprint=f"{n.fingerprint}-stop")
        for n in (notebook, other, dev_box)
    ]
    error = change(
        notebook,
        rule="instance-error",
        fingerprint="fp-error",
        values={"kind": "failed_instance", "status": "error"},
    )
    (message,) = build_messages([notebook, other, *stop, error], Router(), NOW)
    headlines = [x for x in message.body.splitlines() if x.startswith("[")]
    (idle,) = [h for h in headlines if "] idle-gpu:" in h]
    (stopping,) = [h for h in headlines if "] stop-idle-gpus:" in h]
    (failing,) = [h for h in headlines if "] instance-error:" in h]
    assert "also under" not in idle and "also under" not in failing
    assert stopping.endswith("/h wasted (2 instances also under idle-gpu)"), stopping
    (alone,) = build_messages(stop, Router(), NOW)
    assert "also under" not in alone.body


def test_an_actions_notice_does_not_end_with_its_alerts_age() -> None:
    """An approval request's line says what it asks; the alert's age ("; for 40 min") after it
    read as the request's, unlabelled. An alert's line keeps it."""
    from dataclasses import replace as change

    from monitor.notify.render import Renderer

    asked = change(
        low_balance(),
        rule="renew-used-subscriptions",
        summary="renew subscription: renew for 1 month ($1,272.39). See `novita-monitor actions`",
        values={"action": "renew", "cost_usd": 1272.39},
        started_at=NOW - timedelta(minutes=40),
    )
    line = Renderer().line(asked, NOW)
    assert line.endswith("See `novita-monitor actions`"), line
    assert "for 40 min" not in line
    alert = change(low_balance(), started_at=NOW - timedelta(minutes=40))
    assert Renderer().line(alert, NOW).endswith("; for 40 min")


def test_an_idle_alert_ended_by_a_stop_says_stopped_not_busy_again() -> None:
    from dataclasses import replace as change

    from monitor.notify.render import Renderer

    firing = three_idle()[0]
    stopped = change(
        firing, state="resolved", values={**firing.values, "instance_status": "exited"}
    )
    busy = change(firing, state="resolved", values={**firing.values, "value": 63.0})
    renderer = Renderer()
    assert renderer.line(stopped, NOW) == (
        "notebook (i-0001): exited, no longer running; was idle 45 min, cost $1.05"
    )
    assert "busy again: GPU 63%" in renderer.line(busy, NOW)
