"""``novita-monitor demo`` as a user runs it (issue 11 §1): a real process, the simulator and the
daemon's pipeline on one simulated clock. The story's elements appear in their order, the
summary's figures are the database's (``--db``), the exit status is 0, and Ctrl-C (SIGINT)
ends it early with the summary, exit 0. Time bounds are deadlines for real work, not
benchmarks."""

from __future__ import annotations

import re
import signal
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from monitor.demo import DEMO_KEY
from monitor.rules.durations import parse_duration
from monitor.store.types import micros_to_usd
from tests.helpers import Process, query

#: generous: the demo is meant to end within 90 s of wall time on a quiet machine
DEADLINE_S = 240


def _index(lines: list[str], pattern: str, after: int = -1) -> int:
    """The first line after ``after`` matching ``pattern`` (a regex)."""
    for i, line in enumerate(lines):
        if i > after and re.search(pattern, line):
            return i
    raise AssertionError(f"no line matching {pattern!r} after line {after}:\n" + "\n".join(lines))


def _usd(text: str) -> Decimal:
    return Decimal(text.replace("$", "").replace(",", ""))


def _at(stored: str | None, default: datetime) -> datetime:
    return default if stored is None else datetime.fromisoformat(stored)


def _summary(lines: list[str]) -> dict[str, str]:
    """The summary's lines by their label (``alerts raised``, ``actions``, ``money saved``)."""
    start = _index(lines, r"^== summary")
    out = {"head": lines[start]}
    for line in lines[start + 1 :]:
        label, sep, rest = line.partition(": ")
        if sep:
            out.setdefault(label, rest)
    return out


def _check_summary_against_the_database(lines: list[str], db: Path) -> None:
    summary = _summary(lines)
    alerts = query(db, "SELECT rule, state, firing_since FROM alerts")
    raised = [a for a in alerts if a[2] is not None]
    head = re.match(r"(\d+) \(", summary["alerts raised"])
    assert head is not None and int(head.group(1)) == len(raised)
    firing = sum(1 for a in alerts if a[1] == "firing")
    resolved = sum(1 for a in alerts if a[1] == "resolved")
    assert summary["alerts raised"].endswith(f"; {firing} firing, {resolved} resolved")
    for rule in {a[0] for a in raised}:
        count = sum(1 for a in raised if a[0] == rule)
        assert f"{rule} {count}" in summary["alerts raised"]

    actions = query(db, "SELECT action, state FROM actions")
    assert summary["actions"].startswith(f"{len(actions)} (")
    for action, state in set(actions):
        count = actions.count((action, state))
        assert re.search(rf"{action}: [^;]*\b{count} {state}\b", summary["actions"])

    # the savings, from the ledger's raw rows: each stop still stopped saves its hourly price;
    # realized = hours stopped so far x that price (what `status` and `actions` show)
    stops = query(
        db,
        "SELECT saving_per_hour_usd, saving_since, saving_until FROM actions "
        "WHERE action = 'stop' AND state = 'succeeded' AND saving_since IS NOT NULL",
    )
    (end,) = query(db, "SELECT max(last_eval_at) FROM alerts")[0]
    end_at = datetime.fromisoformat(end)
    # money columns hold micro-dollars
    per_hour = sum((micros_to_usd(p) for p, _s, until in stops if until is None), Decimal(0))
    realized = sum(
        (
            micros_to_usd(p)
            * Decimal(str((_at(until, end_at) - _at(since, end_at)).total_seconds() / 3600))
            for p, since, until in stops
        ),
        Decimal(0),
    )
    saved = re.match(
        r"(\$[\d,.]+)/h while stopped, (\$[\d,.]+) per day; (\$[\d,.]+) realized so far",
        summary["money saved"],
    )
    assert saved is not None, summary["money saved"]
    assert _usd(saved.group(1)) == round(per_hour, 2)
    assert _usd(saved.group(2)) == round(per_hour * 24, 2)
    assert abs(_usd(saved.group(3)) - realized) <= Decimal("0.005")


def test_the_demo_tells_the_whole_story_in_order_and_its_summary_is_the_database(
    tmp_path: Path,
) -> None:
    db = tmp_path / "demo.db"
    demo = Process(["demo", "--db", str(db)])
    try:
        assert demo.proc.wait(timeout=DEADLINE_S) == 0, "\n".join(demo.lines)
    finally:
        demo.stop()
    lines = demo.lines
    text = "\n".join(lines)
    assert "Traceback" not in text
    assert DEMO_KEY not in text  # the key is never printed

    # progress: simulated time ticking
    assert len([x for x in lines if re.match(r"^\[\d\d:\d\d UTC \+\d:\d\d\] balance ", x)]) >= 5

    # the forgotten notebook: announced (with its idle time and cost), then stopped, with the
    # saving; the busy trainer left alone after that
    announced = _index(
        lines,
        r"action #\d+ stop jupyter-notebook \(demo-notebook\), rule stop-idle-gpus: announced "
        r"\(due \d\d:\d\d UTC\): .*idle for \d+ min \(\$\d+\.\d\d so far\)",
    )
    assert "will stop jupyter-notebook at" in text[: text.index(lines[announced])]
    stopped = _index(
        lines,
        r"action #\d+ stop jupyter-notebook \(demo-notebook\), rule stop-idle-gpus: succeeded: "
        r"saves \$\d+\.\d\d/h \(\$\d+\.\d\d a day\) while stopped",
        announced,
    )
    _index(lines, r"stopped jupyter-notebook \(demo-notebook\).*saves \$\d+\.\d\d/h", announced)
    _index(lines, r"left alone: trainer \(demo-trainer\) is busy, GPU [\d.]+ %", stopped)
    assert not re.search(r"action #\d+ \w+ trainer \(demo-trainer\)", text)

    # the runway alert, then (after the top-up) its resolution
    runway = _index(lines, r"\[warning\] balance-runway: ")
    _index(lines, r"^- demo: balance \$[\d,.]+, burning \$[\d.]+/h: runway [\d.]+ h", runway)
    # the expiring subscription: the renewal refused with its reason, then planned and
    # awaiting approval once the balance can pay it
    refused = _index(
        lines,
        r"action #\d+ renew subscription \(demo-subscription\), rule renew-used-subscriptions: "
        r"refused: renew costs \$[\d,.]+: the balance",
    )
    top_up = _index(lines, r"story: the user tops the balance up", refused)
    _index(lines, r"\[resolved\] balance-runway", top_up)
    _index(
        lines,
        r"action #\d+ renew subscription \(demo-subscription\), rule renew-used-subscriptions: "
        r"awaiting_approval: renew for 1 month \(\$[\d,.]+\)",
        top_up,
    )
    # the failed training task; the subscription advice with its monthly saving
    _index(lines, r"\[warning\] failed-task: ")
    _index(lines, r"^- train-\d+ \(train-task-\d+\): training task FAILED")
    advice = _index(lines, r"\[info\] subscription-candidate: .*save \$[\d,.]+/month")
    _index(lines, r"^- allmonth \(demo-allmonth\): .*saves \$[\d,.]+/month", advice)

    # the closing summary, last, with the database's figures
    summary = _index(lines, r"^== summary \(over 1h of simulated time")
    assert summary > max(stopped, top_up)
    assert lines[-1] == f"database: {db}"
    _check_summary_against_the_database(lines, db)
    assert query(db, "SELECT count(*) FROM actions WHERE instance_id = 'demo-trainer'") == [(0,)]
    notebook = "SELECT count(*) FROM actions WHERE instance_id = 'demo-notebook' AND state = "
    assert query(db, notebook + "'succeeded' AND saving_per_hour_usd > 0") == [(1,)]


def test_ctrl_c_ends_the_demo_early_with_the_summary_and_status_0(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    # a slow pace, so the interrupt lands mid-run
    demo = Process(["demo", "--db", str(db), "--speed", "30", "--for", "3h"])
    try:
        demo.wait_for(
            "the first evaluation's actions",
            lambda: any(re.search(r"\+0:00\] action #", x) for x in demo.lines),
            DEADLINE_S,
        )
        demo.proc.send_signal(signal.SIGINT)
        assert demo.proc.wait(timeout=60) == 0, "\n".join(demo.lines)
    finally:
        demo.stop()
    lines = demo.lines
    assert "Traceback" not in "\n".join(lines)
    head = lines[_index(lines, r"^== summary \(interrupted after ")]
    ran = re.search(r"interrupted after (\S+) of simulated time", head)
    assert ran is not None and parse_duration(ran.group(1)) < timedelta(hours=3)
    _check_summary_against_the_database(lines, db)


def test_bad_arguments_are_one_line_errors_with_status_2(tmp_path: Path) -> None:
    existing = tmp_path / "old.db"
    existing.write_text("")
    for args, expected in [
        (["--for", "soon"], "--for 'soon'"),
        (["--speed", "0"], "expected a number above 0"),
        (["--db", str(existing)], "the file exists"),
    ]:
        run = Process(["demo", *args])
        assert run.proc.wait(timeout=60) == 2, run.lines
        run.stop()
        assert any(expected in x for x in run.lines), (args, run.lines)
        assert "Traceback" not in "\n".join(run.lines)
