"""The shipped rules end to end: the simulator's demo scenario -> collectors -> store -> rules ->
alert states -> grouped messages -> REAL apprise delivery to local receivers (json://, mailto://).

Time is the shared ManualClock: the simulator and the monitor move together, step by step, and
every step (``monitor.pipeline.Pipeline``) runs the collectors that are due (as the daemon's
scheduler would), one evaluation and the delivery of what is due.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.clock import ManualClock
from monitor.config import shipped_rules_dir
from monitor.evaluate import CycleReport
from monitor.novita.client import RetryPolicy
from monitor.pipeline import Pipeline
from tests.helpers import open_app
from tests.receivers import JsonSink, SmtpSink

NOTEBOOK = "demo-notebook"
TRAINER = "demo-trainer"


@pytest.fixture
def sink() -> Iterator[JsonSink]:
    with JsonSink() as s:
        yield s


STRICT = "idle-gpu-at-20"


def strict_rule(tmp_path: Path) -> str:
    """The shipped rules plus an idle rule whose threshold (20 %) is above the trainer's dips."""
    path = tmp_path / "strict.yaml"
    path.write_text(
        f"rules:\n  - name: {STRICT}\n    resource: instance\n    when:\n"
        "      idle_gpu: {window: 30m, threshold: 20, min_uptime: 15m}\n"
        "    severity: info\n    repeat_interval: 4h\n"
    )
    return f"rules: [{shipped_rules_dir()}, {path}]\n"


def channels(sink: JsonSink, mail: SmtpSink | None = None) -> str:
    text = f'channels:\n  ops: "{sink.url}"\n'
    if mail is not None:
        text += f'  mail: "{mail.mailto_url()}"\n'
    return text + f"default_channels: [ops{', mail' if mail else ''}]\n"


def firing(cycle: CycleReport) -> set[tuple[str, str]]:
    return {(a.rule, a.resource_id) for a in cycle.firing}


def active(cycle: CycleReport, rule: str) -> set[str]:
    """Resources with a pending or firing alert of ``rule``."""
    return {
        s.resource_id
        for s in cycle.result.states.values()
        if s.rule == rule and s.state in ("pending", "firing")
    }


def sent(cycles: list[CycleReport]) -> list[Any]:
    return [d for c in cycles for d in c.deliveries]


async def test_demo_scenario_alerts_the_right_resources_once_grouped(
    tmp_path: Path, sim_app: Any, demo_sim: Any, clock: ManualClock, sink: JsonSink
) -> None:
    with SmtpSink() as mail:
        extra = channels(sink, mail) + strict_rule(tmp_path)
        app = open_app(tmp_path, sim_app, clock, extra=extra)
        run = Pipeline(app, clock)
        try:
            first = await run.step()
            fired = firing(first)
            # the forgotten notebook fires at the first evaluation (backfilled history)
            assert ("idle-gpu", NOTEBOOK) in fired
            assert ("idle-gpu", TRAINER) not in fired
            assert ("balance-runway", "main") in fired
            # pulling since 45 min before the monitor started: stuck at once (since creation)
            assert ("instance-error", "demo-stuck") in fired
            assert {("subscription-expiring-idle", "demo-lapsing")} <= fired
            assert any(
                r.startswith("subscription-expiring") and i == "demo-subscription" for r, i in fired
            )
            failed = {i for r, i in fired if r == "failed-task"}
            assert failed and all(i.startswith("train-task-") for i in failed)
            assert sorted((d.channel, d.ok) for d in first.deliveries) == [
                ("mail", True),
                ("ops", True),
            ]

            # one grouped message per channel, with concrete numbers
            (body,) = sink.bodies
            text = body["message"]
            assert body["type"] == "warning"
            assert f"{len(first.firing)} alerts firing" in body["title"]
            assert "jupyter-notebook (demo-notebook)" in text
            assert "$0.35/h" in text and "(under 5%)" in text and " so far" in text
            # the pulling instance is not billed: the runway counts only the running ones
            assert "runway 40.0 h" in text and "balance $" in text
            assert "lapsing (demo-lapsing)" in text and "expires in 2 d" in text
            for task in failed:
                assert f"({task})" in text
            assert TRAINER not in text
            (letter,) = mail.messages
            assert letter.rcpt_tos == ["ops@example.com"]
            assert letter.subject == body["title"]
            assert "jupyter-notebook (demo-notebook)" in letter.text

            # three simulated hours, every 3 minutes (metrics are collected for every minute):
            # the trainer's data-loading dips come and go, it never goes pending, not even for
            # the stricter rule whose threshold is above the dips; nothing is sent again
            later = await run.advance(180, every=3)
            for rule in ("idle-gpu", STRICT):
                assert all(TRAINER not in active(c, rule) for c in later)
                assert all(NOTEBOOK in active(c, rule) for c in later)
            dips = [
                s.gpu_util
                for s in app.store.samples(
                    "main", TRAINER, clock.now() - timedelta(hours=3), clock.now()
                )
                if s.gpu_util is not None
            ]
            # one dip to ~10 % per 30-minute segment: below the strict rule's 20 %, above 5 %
            assert len(dips) >= 170 and sum(1 for u in dips if u < 20) >= 6
            assert sum(dips) / len(dips) > 70
            again = Counter(
                fp
                for d in sent(later)
                for fp in d.fingerprints
                if fp in {a.fingerprint for a in first.firing}
            )
            assert again == Counter(), "an alert already notified was sent again"
            # the only news in those hours: the instance in the odd `pending` status, stuck for
            # 30 minutes since its creation (9 min before the start), in one message per channel
            news = [c for c in later if c.deliveries]
            assert [(c.now - first.now, sorted(firing(c) - fired)) for c in news] == [
                (timedelta(minutes=21), [("instance-error", "demo-pending")])
            ]
            assert sorted(d.channel for d in news[0].deliveries) == ["mail", "ops"]
            assert len(sink.bodies) == len(mail.messages) == 2
            assert sink.bodies[1]["title"].startswith(
                "[warning] instance-error: 1 instance in error or stuck"
            )
            assert "(demo-pending)" in sink.bodies[1]["message"]
        finally:
            await app.aclose()

        # a restart: a new App on the same database evaluates without re-sending anything
        app = open_app(tmp_path, sim_app, clock, extra=extra)
        try:
            restart = await app.evaluate()
            assert ("idle-gpu", NOTEBOOK) in firing(restart)
            assert restart.deliveries == []
            before = len(sink.bodies)

            # repeat_interval (4h for idle-gpu): the reminder goes out 4 h after the first notice
            run = Pipeline(app, clock)
            await run.step()
            reminders = await run.advance(55, every=5)
            assert len(sink.bodies) == before
            await run.advance(5, every=5)  # T0 + 4h
            assert clock.now() - first.now == timedelta(hours=4)
            body = sink.bodies[-1]
            assert (
                "idle-gpu" in body["title"]
                and "jupyter-notebook (demo-notebook)" in body["message"]
            )
            assert "balance-runway" not in body["message"]  # its interval is 6h
            assert len(sink.bodies) == before + 1 and len(mail.messages) == before + 1
            assert reminders  # (the 55 quiet minutes really ran)
        finally:
            await app.aclose()


async def test_the_used_subscription_is_told_apart_from_the_lapsing_one(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink
) -> None:
    app = open_app(tmp_path, sim_app, clock, extra=channels(sink))
    try:
        fired = firing(await Pipeline(app, clock).step())
    finally:
        await app.aclose()
    assert ("subscription-expiring-idle", "demo-lapsing") in fired
    assert ("subscription-expiring-used", "demo-subscription") in fired


async def test_stopping_the_idle_instance_resolves_its_alert(
    tmp_path: Path, sim_app: Any, demo_sim: Any, clock: ManualClock, sink: JsonSink
) -> None:
    app = open_app(tmp_path, sim_app, clock, extra=channels(sink))
    run = Pipeline(app, clock)
    try:
        first = await run.step()
        assert ("idle-gpu", NOTEBOOK) in firing(first)
        assert len(sink.bodies) == 1
        demo_sim.perform("stop", {"instanceId": NOTEBOOK})
        # toStop -> stopping (30 s) -> exited (60 s); billing and the alert end with it
        cycles = await run.advance(3)
    finally:
        await app.aclose()
    resolved = [
        t
        for c in cycles
        for t in c.result.transitions
        if t.resource_id == NOTEBOOK and t.to_state == "resolved"
    ]
    assert len(resolved) == 1 and resolved[0].rule == "idle-gpu"
    notices = [b for b in sink.bodies[1:] if NOTEBOOK in b["message"]]
    assert len(notices) == 1
    (notice,) = notices
    assert notice["type"] == "success"
    assert "[resolved] idle-gpu" in notice["title"]
    assert "jupyter-notebook (demo-notebook)" in notice["message"]
    assert "demo-error" not in notice["message"]  # still idle, still firing, not resolved


async def test_an_api_outage_fires_the_monitor_alert_and_holds_the_others(
    tmp_path: Path, sim_app: Any, demo_sim: Any, clock: ManualClock, sink: JsonSink
) -> None:
    app = open_app(tmp_path, sim_app, clock, extra=channels(sink))

    async def no_wait(_s: float) -> None:
        return None

    app.contexts[0].client.retry = RetryPolicy(sleep=no_wait)
    run = Pipeline(app, clock)
    try:
        first = await run.step()
        before = {(a.rule, a.resource_id): a.state for a in first.firing}
        assert ("idle-gpu", NOTEBOOK) in before
        sim_app.state.faults.error_rate = 1.0
        # while the API fails, the notebook is stopped and the balance drained to $10: with fresh
        # data the idle alert would resolve and low-balance would fire; with stale data neither
        demo_sim.perform("stop", {"instanceId": NOTEBOOK})
        demo_sim.top_up(-(demo_sim.balance_10k() - 10 * 10_000))
        outage = await run.advance(10)
        states = outage[-1].result.states.values()
        monitor = [s for s in states if s.rule == "monitor-cannot-see-account"]
        assert [(s.state, s.severity) for s in monitor] == [("firing", "critical")]
        changed = [
            (t.rule, t.resource_id, t.to_state) for c in outage for t in c.result.transitions
        ]
        assert {(r, s) for r, _, s in changed} == {("monitor-cannot-see-account", "firing")}
        assert {(a.rule, a.resource_id) for a in outage[-1].firing} == set(before) | {
            (monitor[0].rule, monitor[0].resource_id)
        }
        runway = next(a for a in outage[-1].firing if a.rule == "balance-runway")
        assert runway.severity == "warning"  # not escalated on stale data
        (outage_body,) = sink.bodies[1:]
        assert outage_body["type"] == "failure"
        assert "monitor-cannot-see-account" in outage_body["title"]
        assert "cannot see the account: " in outage_body["message"]
        assert "instances" in outage_body["message"]
        assert "idle-gpu" not in outage_body["message"]

        # the API comes back: fresh data resolves the monitor alert and the notebook's, fires
        # low-balance and escalates the runway alert to critical
        sim_app.state.faults.error_rate = 0.0
        run.last.clear()  # everything is overdue
        back = await run.step()
        moved = {(t.rule, t.resource_id, t.to_state) for t in back.result.transitions}
        assert {
            ("idle-gpu", NOTEBOOK, "resolved"),
            ("monitor-cannot-see-account", monitor[0].resource_id, "resolved"),
            ("low-balance", "main", "firing"),
        } <= moved
        assert ("low-balance", "main") in firing(back)
        runway = next(a for a in back.firing if a.rule == "balance-runway")
        assert runway.severity == "critical"
        (recovery,) = sink.bodies[2:]
        assert recovery["type"] == "failure"  # the worst firing severity: critical
        assert "2 alerts firing: balance-runway, low-balance; 2 resolved" in recovery["title"]
        assert "[warning] low-balance: balance running low" in recovery["message"]
        assert "(under $20.00)" in recovery["message"]
        assert "[critical] balance-runway" in recovery["message"]
        assert "jupyter-notebook (demo-notebook)" in recovery["message"]
        assert "monitor-cannot-see-account" in recovery["message"]
        resolved_part = recovery["message"].split("Resolved:")[1]
        assert "[resolved] idle-gpu: 1 instance back to normal" in resolved_part
        assert "[resolved] monitor-cannot-see-account" in resolved_part
    finally:
        await app.aclose()
