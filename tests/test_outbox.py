"""The outbox (issue 9 §1): one evaluation writes its alert states, notifications and planned
actions in ONE transaction; a delivery step sends what is due, retrying with backoff until it
expires. Real apprise delivery to a local receiver, a real database (a SQLite file, and the
test PostgreSQL database when ``NOVITA_MONITOR_TEST_PG_URL`` is set), time on a ManualClock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from sqlalchemy import event
from sqlalchemy.engine import make_url

from monitor.actions.execute import ActOutcome, ActReport
from monitor.app import App
from monitor.clock import ManualClock
from monitor.evaluate import Evaluator
from monitor.notify import Notice
from monitor.pipeline import Pipeline
from monitor.rules import EvalResult
from monitor.rules.lifecycle import fingerprint
from monitor.store.models import ActionRecord
from monitor.store.testing import pg_url, reset_database
from tests.helpers import open_app
from tests.receivers import JsonSink

NOTEBOOK = "demo-notebook"

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(pg_url() is None, reason="NOVITA_MONITOR_TEST_PG_URL not set"),
        ],
    ),
]


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """None (the SQLite file of ``open_app``) or the emptied test PostgreSQL database (its
    password through PGPASSWORD: a configured URL may not hold one)."""
    if request.param == "sqlite":
        return None
    url = pg_url()
    assert url is not None
    reset_database(url)
    parsed = make_url(url)
    if parsed.password:
        monkeypatch.setenv("PGPASSWORD", str(parsed.password))
    return parsed._replace(password=None).render_as_string(hide_password=False)


@pytest.fixture
def sink() -> Iterator[JsonSink]:
    with JsonSink() as s:
        yield s


def channel(sink: JsonSink, extra: str = "") -> str:
    return f'channels:\n  ops: "{sink.url}"\ndefault_channels: [ops]\n' + extra


class Boom(RuntimeError):
    pass


def fail(*_args: Any, **_kwargs: Any) -> Any:
    raise Boom("the database went away")


# -- one transaction --------------------------------------------------------------------------


async def test_a_failure_while_writing_notifications_leaves_the_alert_states_unchanged(
    tmp_path: Path,
    sim_app: Any,
    clock: ManualClock,
    sink: JsonSink,
    database: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = open_app(tmp_path, sim_app, clock, extra=channel(sink), database=database)
    try:
        await app.collect()
        assert app.evaluator is not None
        with monkeypatch.context() as patch:
            patch.setattr(app.store, "insert_notifications", fail)
            with pytest.raises(Boom):
                app.evaluate_only()
        # nothing of the evaluation was kept: the next one decides again, notices included
        assert app.store.load_alerts() == []
        assert app.store.notifications() == []

        report = app.evaluate_only()
        alerts = app.store.load_alerts()
        assert NOTEBOOK in {a.resource_id for a in alerts if a.state == "firing"}
        assert all(a.last_notified_at == clock.now() for a in alerts if a.state == "firing")
        (row,) = app.store.notifications()
        assert report.notifications == [row.id]
        assert (row.status, row.channel, row.kind, row.attempts) == ("pending", "ops", "firing", 0)
        assert row.title and "alerts firing" in row.title and row.notify_type == "warning"
        assert row.body and "jupyter-notebook (demo-notebook)" in row.body
        assert row.next_attempt_at == clock.now()
        assert row.expires_at == clock.now() + timedelta(hours=24)  # notify.expire_after
        assert sink.bodies == []  # decided, not delivered

        (result,) = await app.deliver()
        assert result.ok and result.attempts == 1
        (body,) = sink.bodies
        assert body["title"] == row.title and body["type"] == "warning"
        (sent,) = app.store.notifications()
        assert (sent.status, sent.attempts, sent.sent_at) == ("sent", 1, clock.now())
        assert await app.deliver() == []  # nothing due any more
    finally:
        await app.aclose()


def stop_planner(calls: list[EvalResult]) -> Any:
    """A stand-in for engineer B's planner: one ledger row and one announcement for the
    forgotten notebook's idle alert."""

    def plan(result: EvalResult, facts: Any, now: Any) -> tuple[list[ActionRecord], list[Notice]]:
        calls.append(result)
        alert = next(
            (s for s in result.firing() if s.rule == "idle-gpu" and s.resource_id == NOTEBOOK),
            None,
        )
        if alert is None:
            return [], []
        key = f"idle-gpu|stop|{NOTEBOOK}|run-1"
        row = ActionRecord(
            account=alert.account,
            rule=alert.rule,
            action="stop",
            instance_id=NOTEBOOK,
            intent_key=key,
            idempotency_key=key,
            state="announced",
            planned_at=now,
            due_at=now + timedelta(minutes=15),
            facts={"values": {k: str(v) for k, v in alert.values.items()}},
        )
        notice = Notice(
            fingerprint=alert.fingerprint,
            rule=alert.rule,
            severity="warning",
            state="firing",
            account=alert.account,
            resource_kind="instance",
            resource_id=NOTEBOOK,
            resource_name=alert.resource_name,
            summary="will stop it at 12:15 unless it becomes busy",
        )
        return [row], [notice]

    return plan


async def test_planned_actions_are_written_with_the_alerts_and_announced(
    tmp_path: Path,
    sim_app: Any,
    clock: ManualClock,
    sink: JsonSink,
    database: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[EvalResult] = []
    app = open_app(
        tmp_path,
        sim_app,
        clock,
        extra=channel(sink),
        database=database,
        planner=stop_planner(calls),
    )
    try:
        await app.collect()
        with monkeypatch.context() as patch:
            patch.setattr(app.store, "insert_actions", fail)
            with pytest.raises(Boom):
                app.evaluate_only()
        assert app.store.load_alerts() == [] and app.store.notifications() == []
        assert app.store.actions() == []

        report = app.evaluate_only()
        assert len(calls) == 2 and report.result is calls[-1]
        (action,) = app.store.actions()
        assert report.actions == [action.id]
        assert (action.state, action.instance_id, action.due_at) == (
            "announced",
            NOTEBOOK,
            clock.now() + timedelta(minutes=15),
        )
        # the announcement joined the evaluation's grouped message
        (row,) = app.store.notifications()
        assert row.body and "will stop it at 12:15 unless it becomes busy" in row.body
        await app.deliver()
        assert "will stop it at 12:15" in sink.bodies[0]["message"]

        # planned once: the next evaluation's plan for the same intent is not inserted again
        clock.advance(60)
        app.evaluate_only()
        assert len(app.store.actions()) == 1
    finally:
        await app.aclose()


def test_the_outbox_settings_and_the_delivery_job(tmp_path: Path, sim_app: Any, clock: Any) -> None:
    from monitor.config import Config

    defaults = Config.from_yaml("accounts: [{name: main, api_key_env: K}]\n")
    assert defaults.notify.expire_after == 24 * 3600 and defaults.schedules.deliver == 15
    app = open_app(tmp_path, sim_app, clock, extra="schedules: {deliver: 30s}\n")
    try:
        jobs = {job.name: (job.interval_s, job.graceful) for job in app.extra_jobs()}
        assert jobs == {"evaluate": (60.0, True), "deliver": (30.0, True), "act": (60.0, True)}
    finally:
        app.store.close()


# -- compare-and-set --------------------------------------------------------------------------


@asynccontextmanager
async def two_apps(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink, database: str | None
) -> AsyncIterator[tuple[App, App, Evaluator, Evaluator]]:
    """Two daemons' apps on one database, the first having collected: each one's evaluator."""
    first = open_app(tmp_path, sim_app, clock, extra=channel(sink), database=database)
    second = open_app(tmp_path, sim_app, clock, extra=channel(sink), database=database)
    try:
        await first.collect()
        a, b = first.evaluator, second.evaluator
        assert a is not None and b is not None
        yield first, second, a, b
    finally:
        await first.aclose()
        await second.aclose()


async def test_two_evaluators_on_one_database_the_stale_write_is_refused(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink, database: str | None
) -> None:
    async with two_apps(tmp_path, sim_app, clock, sink, database) as (first, second, a, b):
        # both read the same (empty) alert states, both decide; the first to write wins
        seen_by_a, seen_by_b = a.decide(clock.now()), b.decide(clock.now())
        assert seen_by_b.keep and {r.fingerprint for r in seen_by_b.keep} == {
            r.fingerprint for r in seen_by_a.keep
        }
        won = a.record(seen_by_a)
        lost = b.record(seen_by_b)
        assert won.refused == set() and len(won.notifications) == 1
        assert lost.refused == {r.fingerprint for r in seen_by_b.keep}
        assert lost.notifications == []  # the loser's notices are not written: no duplicate
        assert len(first.store.notifications()) == 1
        versions = {r.fingerprint: r.version for r in first.store.load_alerts()}
        assert set(versions.values()) == {0}

        # an update: both read version 0, the first writes version 1, the second is refused
        clock.advance(60)
        seen_by_a, seen_by_b = a.decide(clock.now()), b.decide(clock.now())
        notebook = fingerprint("main", "idle-gpu", "instance", NOTEBOOK)
        assert notebook in {r.fingerprint for r in seen_by_a.keep}  # last_eval_at moves
        a.record(seen_by_a)
        with structlog.testing.capture_logs() as logs:
            lost = b.record(seen_by_b)
        assert notebook in lost.refused
        refusals = [e for e in logs if e["event"] == "alert_write_refused"]
        assert {e["fingerprint"] for e in refusals} == lost.refused
        assert any(e["resource"] == NOTEBOOK and e["rule"] == "idle-gpu" for e in refusals)
        # the loser logs no transition it did not write
        assert not [e for e in logs if e["event"] == "alert_transition"]
        stored = {r.fingerprint: r for r in first.store.load_alerts()}
        assert stored[notebook].version == 1
        assert stored[notebook].last_eval_at == clock.now()

        # the loser re-reads at its next evaluation and writes again
        clock.advance(60)
        again = b.evaluate(clock.now())
        assert again.refused == set()
        assert {r.fingerprint: r.version for r in second.store.load_alerts()}[notebook] == 2


async def test_an_alert_created_between_the_read_and_the_insert_refuses_the_evaluation(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink, database: str | None
) -> None:
    """The other writer creates the alerts after this evaluation read them absent and before
    it inserts them: the insert violates their key, and the whole evaluation is refused (no
    alert, no notice, no plan of it kept), to be judged again next time."""
    async with two_apps(tmp_path, sim_app, clock, sink, database) as (first, second, a, b):
        seen_by_a, seen_by_b = a.decide(clock.now()), b.decide(clock.now())
        raced: list[Any] = []

        def race(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.startswith("INSERT INTO alerts") and not raced:
                raced.append(a.record(seen_by_a))  # commits on its own connection

        event.listen(second.store.engine, "before_cursor_execute", race)
        with structlog.testing.capture_logs() as logs:
            lost = b.record(seen_by_b)
        assert raced and raced[0].refused == set()
        assert lost.refused == {r.fingerprint for r in seen_by_b.keep}
        assert lost.notifications == [] and lost.actions == []
        (refusal,) = [e for e in logs if e["event"] == "evaluation_refused"]
        assert "created meanwhile" in refusal["reason"]
        assert {r.version for r in first.store.load_alerts()} == {0}  # the winner's, once
        assert len(first.store.notifications()) == 1


# -- delivery: backoff, expiry ----------------------------------------------------------------


async def test_a_channel_down_for_minutes_gets_the_message_once_after_backoff(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink
) -> None:
    app = open_app(tmp_path, sim_app, clock, extra=channel(sink))
    run = Pipeline(app, clock)
    start = clock.now()
    sink.fail_next(3)  # down for the first three attempts
    try:
        first = await run.step()
        assert [(d.ok, d.attempts) for d in first.deliveries] == [(False, 1)]
        attempts_at: list[timedelta] = [timedelta(0)]
        for _ in range(10):
            clock.advance(60)
            seen = len(sink.requests)
            await run.step()
            attempts_at += [clock.now() - start] * (len(sink.requests) - seen)
    finally:
        await app.aclose()
    # attempts 1, 2, 3 fail; the waits after them are 1, 2 and 4 minutes
    assert attempts_at == [timedelta(minutes=m) for m in (0, 1, 3, 7)]
    assert [r.status for r in sink.requests] == [500, 500, 500, 200]
    (body,) = sink.bodies  # arrived once
    assert "jupyter-notebook (demo-notebook)" in body["message"]
    (row,) = app.store.notifications()
    assert (row.status, row.attempts, row.sent_at) == ("sent", 4, start + timedelta(minutes=7))
    assert row.error is None
    # the alert itself was told once: no reminder, no second notification row
    delivered = [d for c in run.cycles for d in c.deliveries if d.ok]
    assert len(delivered) == 1 and delivered[0].attempts == 4


async def test_a_notification_expires_and_is_not_sent_after(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink
) -> None:
    app = open_app(tmp_path, sim_app, clock, extra=channel(sink, "notify: {expire_after: 1h}\n"))
    start = clock.now()
    sink.fail_next(1000)
    try:
        await app.collect()
        await app.evaluate()
        (row,) = app.store.notifications()
        assert row.expires_at == start + timedelta(hours=1)
        tried = []
        for _ in range(14):  # every 5 minutes, for 70 minutes
            clock.advance(300)
            seen = len(sink.requests)
            await app.deliver()
            if len(sink.requests) > seen:
                tried.append(clock.now() - start)
        (row,) = app.store.notifications()
        assert row.status == "expired" and row.sent_at is None
        assert row.error and "apprise notify() failed" in row.error
        # looked at every 5 minutes; after attempt n the wait is 1, 2, 4, 8, 16, 30 (the cap)
        # minutes: tried at 0 (due 1), 5 (due 7), 10 (due 14), 15 (due 23), 25 (due 41), 45
        # (due 75, past the expiry at 60: expired then)
        assert [t.total_seconds() / 60 for t in tried] == [5, 10, 15, 25, 45]
        assert row.attempts == 1 + len(tried)

        sink.recover()
        clock.advance(3600)
        assert await app.deliver() == []
        assert sink.bodies == []
    finally:
        await app.aclose()


async def test_notifications_stored_before_the_outbox_are_never_resent(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink
) -> None:
    app = open_app(tmp_path, sim_app, clock, extra=channel(sink))
    try:
        # as revision 0003 left it: pending, its title in the body, no title column
        app.store.record_notification(
            channel="ops",
            kind="firing",
            fingerprints=["f"],
            created_at=clock.now() - timedelta(days=2),
            body="[warning] old\nold body",
        )
        clock.advance(60)
        assert await app.deliver() == []
        assert sink.requests == []
        (row,) = app.store.notifications()
        assert (row.status, row.attempts) == ("pending", 0)
    finally:
        await app.aclose()


# -- once: act hook and exit status -----------------------------------------------------------


async def test_once_acts_between_evaluation_and_delivery(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink
) -> None:
    app = open_app(tmp_path, sim_app, clock, extra=channel(sink))
    order: list[str] = []

    async def act(now: Any) -> ActReport:
        order.append(f"act: {len(app.store.notifications(status='pending'))} pending")
        rows = []
        for n, state in enumerate(("succeeded", "refused", "skipped", "failed", "outcome_unknown")):
            rows.append(
                ActOutcome(
                    action_id=n,
                    account="main",
                    rule="r",
                    action="stop",
                    instance_id=f"i-{state}",
                    state=state,
                    reason="breaker" if state == "skipped" else "",
                )
            )
        waiting = ActOutcome(9, "main", "r", "stop", "i-waiting", "waiting", "waiting for a sample")
        return ActReport(now, outcomes=rows, waiting=[waiting])

    app.act = act  # type: ignore[attr-defined]
    try:
        result = await app.once()
    finally:
        await app.aclose()
    assert order == ["act: 1 pending"]  # evaluated and recorded, not yet delivered
    assert [d.ok for d in result.deliveries] == [True] and len(sink.bodies) == 1
    assert [a.state for a in result.failed_actions] == ["failed", "outcome_unknown"]
    lines = result.summary_lines()
    assert "action stop i-skipped (rule r): skipped: breaker" in lines
    assert "action stop i-refused (rule r): refused" in lines
    # a stop waiting for a sample past its grace is printed, and is no failure
    assert "action stop i-waiting (rule r): waiting: waiting for a sample" in lines
    assert "notification to ops: delivered" in lines


def app_with(result_of_act: list[str]) -> Any:
    """``App.act`` for the CLI test: rows in the given states."""

    async def act(self: App, now: Any = None) -> ActReport:
        return ActReport(
            now,
            outcomes=[
                ActOutcome(
                    action_id=n,
                    account="main",
                    rule="r",
                    action="stop",
                    instance_id=f"i-{n}",
                    state=state,
                )
                for n, state in enumerate(result_of_act)
            ],
        )

    return act


@pytest.mark.parametrize(
    "states, status",
    [((), 1), (("refused", "skipped"), 0), (("succeeded", "outcome_unknown"), 1)],
    ids=["delivery-failed", "refused-and-skipped", "outcome-unknown"],
)
def test_once_exit_status(
    tmp_path: Path,
    sim_server: Any,
    sink: JsonSink,
    monkeypatch: pytest.MonkeyPatch,
    states: tuple[str, ...],
    status: int,
) -> None:
    from click.testing import CliRunner

    from monitor.cli import cli
    from tests.helpers import ENV, write_config

    config = write_config(tmp_path, base_url=sim_server.url, extra=channel(sink))
    monkeypatch.setattr(App, "act", app_with(list(states)), raising=False)
    if not states:
        sink.fail_next(1)  # the one delivery fails
    result = CliRunner().invoke(cli, ["once", "--config", str(config)], env=ENV)
    assert result.exit_code == status, result.output
    if not states:
        assert "notification to ops: FAILED (attempt 1, retried later)" in result.output
        assert sink.bodies == []
    else:
        assert "notification to ops: delivered" in result.output
        for n, state in enumerate(states):
            assert f"action stop i-{n} (rule r): {state}" in result.output


# -- a real daemon, killed between recording and delivering -----------------------------------


@pytest.fixture
def fast_sim() -> Iterator[Any]:
    from monitor.clock import ScaledClock
    from monitor.sim import FleetSim, SimServer, create_app

    with SimServer(create_app(FleetSim(ScaledClock(60.0), scenario="demo", seed=0))) as server:
        yield server


def test_a_daemon_killed_between_recording_and_delivering_delivers_after_restart(
    tmp_path: Path, fast_sim: Any, sink: JsonSink
) -> None:
    """Killed (``os._exit``, as SIGKILL) right after the first evaluation committed; the
    channel then down for the first attempts: after the restart the receiver gets each
    message, once. The daemon follows the simulator's clock at speed 60, so the backoff's
    minutes are seconds."""
    import os

    from monitor.app import TEST_CRASH_ENV, TEST_CRASH_STATUS
    from tests.helpers import API_KEY, Process, query, write_config

    db = tmp_path / "monitor.db"
    config = write_config(
        tmp_path, base_url=fast_sim.url, extra=channel(sink) + "log: {format: json}\n"
    )
    env = {**os.environ, "NOVITA_API_KEY": API_KEY}
    args = ["run", "--config", str(config), "--clock", f"{fast_sim.url}/_sim/clock"]

    crashed = Process(args, {**env, TEST_CRASH_ENV: "evaluate"})
    crashed.wait_for("the crash", lambda: crashed.proc.poll() is not None, 60)
    assert crashed.stop() == TEST_CRASH_STATUS
    decided = query(db, "SELECT id, title, status, attempts FROM notifications ORDER BY id")
    assert decided and all(status == "pending" and n == 0 for _, _, status, n in decided)
    notified = query(db, "SELECT count(*) FROM alerts WHERE last_notified_at IS NOT NULL")
    assert notified[0][0] > 0  # the alert states say "told": the outbox must make it true
    assert sink.requests == []  # today's code would never send these

    sink.fail_next(2)  # the channel is down for the first two attempts
    daemon = Process(args, env)
    try:

        def all_sent() -> bool:
            rows = query(db, "SELECT status FROM notifications")
            return bool(rows) and all(status == "sent" for (status,) in rows)

        daemon.wait_for("every notification sent", all_sent, 60)
    finally:
        assert daemon.stop() == 0
    titles = [b["title"] for b in sink.bodies]
    for nid, title, _, _ in decided:
        assert titles.count(title) == 1, f"notification {nid} received {titles.count(title)}x"
    assert len(titles) == len(set(titles)) == len(query(db, "SELECT id FROM notifications"))
    assert [r.status for r in sink.requests[:2]] == [500, 500]
    first = decided[0][0]
    ((attempts, error),) = query(
        db, f"SELECT attempts, error FROM notifications WHERE id = {first}"
    )
    assert attempts >= 2 and error is None


async def test_an_evaluation_does_not_wait_for_a_slow_delivery(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    import asyncio

    from monitor.notify.testing import RecordingNotifier

    class SlowNotifier(RecordingNotifier):
        def __init__(self) -> None:
            super().__init__()
            self.delivering = asyncio.Event()
            self.release = asyncio.Event()

        async def deliver(self, messages: Any) -> Any:
            self.delivering.set()
            await self.release.wait()
            return await super().deliver(messages)

    slow = SlowNotifier()
    app = open_app(tmp_path, sim_app, clock, notifier_factory=lambda _r, _c: slow)
    try:
        await app.collect()
        app.evaluate_only()
        under_way = asyncio.create_task(app.deliver())
        await slow.delivering.wait()
        clock.advance(60)
        report = await app.evaluate()  # does not wait for the slow channel
        assert report.deliveries == [] and not under_way.done()
        slow.release.set()
        (result,) = await under_way
        assert result.ok and len(slow.messages) == 1
    finally:
        await app.aclose()


async def test_a_write_racing_between_check_and_write_rolls_the_evaluation_back(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink
) -> None:
    """SQLite checks the versions before its write lock: a writer committing in between is
    caught by the compare-and-set itself, and nothing of the evaluation is kept."""
    import sqlite3

    from sqlalchemy import event

    app = open_app(tmp_path, sim_app, clock, extra=channel(sink))
    try:
        await app.collect()
        app.evaluate_only()
        clock.advance(3600 * 4)  # idle-gpu's reminder (repeat_interval 4h) is due
        await app.collect()
        assert app.evaluator is not None
        decision = app.evaluator.decide(clock.now())
        assert decision.notices and decision.keep
        raced: list[str] = []

        def other_writer(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            # before this process's first write of the transaction (it then holds the lock)
            first_write = statement.upper().startswith(("UPDATE ALERTS", "INSERT INTO ALERTS"))
            if first_write and not raced:
                other = sqlite3.connect(tmp_path / "monitor.db", timeout=10)
                with other:
                    other.execute("UPDATE alerts SET version = version + 1, summary = 'other'")
                other.close()
                raced.append(statement)

        event.listen(app.store.engine, "before_cursor_execute", other_writer)
        try:
            with structlog.testing.capture_logs() as logs:
                report = app.evaluator.record(decision)
        finally:
            event.remove(app.store.engine, "before_cursor_execute", other_writer)
        assert raced
        assert report.notifications == [] and report.refused >= {
            r.fingerprint for r in decision.keep
        }
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["evaluation_refused"]
        assert {a.summary for a in app.store.load_alerts()} == {"other"}  # theirs, not ours
        assert len(app.store.notifications()) == 1  # only the first evaluation's
    finally:
        await app.aclose()


async def test_an_evaluator_reads_again_only_the_alerts_another_writer_moved(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink, database: str | None
) -> None:
    """Each evaluation reads every alert's version; the rows it wrote itself (same version)
    are not read again, the others are: what it judges by is what a full read gives."""
    from monitor.evaluate import to_state

    async with two_apps(tmp_path, sim_app, clock, sink, database) as (first, _, a, b):
        store = first.store
        asked: list[list[str] | None] = []
        real = store.alert_rows

        def rows(fingerprints: Any = None) -> list[Any]:
            asked.append(None if fingerprints is None else sorted(fingerprints))
            return real(fingerprints)

        def fresh() -> dict[str, Any]:
            return {r.fingerprint: to_state(r) for r in real()}

        store.alert_rows = rows  # type: ignore[method-assign]
        a.evaluate(clock.now())
        assert asked == []  # nothing stored yet: nothing to read
        versions, states = a.read_states()
        assert states and asked == []  # all written by itself
        assert states == fresh()
        assert versions == {fp: 0 for fp in states}

        clock.advance(60)
        b.store.alert_rows = rows  # type: ignore[method-assign]
        b.evaluate(clock.now())  # another writer moves every alert
        asked.clear()
        versions, states = a.read_states()
        assert asked == [None]  # all moved: one full read
        assert states == fresh()
        assert {s.last_eval_at for s in states.values()} == {clock.now()}
        assert set(versions.values()) == {1}

        gone, moved, *_ = sorted(states)
        store.delete_alerts([gone])
        (record,) = [r for r in store.load_alerts() if r.fingerprint == moved]
        store.save_alerts([record])  # a tool's write: a new version
        asked.clear()
        versions, states = a.read_states()
        assert asked == [[moved]]
        assert gone not in states and gone not in versions
        assert states == fresh() and versions[moved] == 2


async def test_an_alert_update_writes_the_columns_that_changed_and_reads_back_whole(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink, database: str | None
) -> None:
    """A firing alert's figures and times move every minute, its name and labels do not: the
    update sets what changed, and each row read back is the state the evaluation decided."""
    from monitor.evaluate import to_state

    async with two_apps(tmp_path, sim_app, clock, sink, database) as (first, _, a, _b):
        store = first.store
        updates: list[str] = []

        def on(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("UPDATE ALERTS"):
                updates.append(statement)

        event.listen(store.engine, "before_cursor_execute", on)
        try:
            for _ in range(3):
                report = a.evaluate(clock.now())
                stored = {r.fingerprint: to_state(r) for r in store.alert_rows()}
                kept = {fp: s for fp, s in report.result.states.items() if s.state != "inactive"}
                assert stored.keys() == kept.keys()
                for fp, state in kept.items():
                    assert stored[fp].last_eval_at == clock.now() == state.last_eval_at
                    assert stored[fp].values == state.values and stored[fp].state == state.state
                    assert stored[fp].summary == state.summary
                clock.advance(60)
                await first.collect()
        finally:
            event.remove(store.engine, "before_cursor_execute", on)
        assert updates  # the second and third evaluations updated
        sets = [u.upper().split(" WHERE ")[0] for u in updates]
        assert all("LAST_EVAL_AT" in s for s in sets)
        assert not any("LABELS" in s or "RESOURCE_KIND" in s for s in sets)
