"""The rules benchmark at a tiny size: its generated store makes the right rules fire, and it
prints its report as the last line (no timing asserted)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from monitor.bench_rules import MIX, build, evaluate_once, plan_fleet
from monitor.store import open_store


def test_fleet_follows_the_mix() -> None:
    fleet = plan_fleet(len(MIX) + 3, days=1, rng=random.Random(1))
    assert [p.kind for p in fleet] == [*MIX, *MIX[:3]]
    assert len({p.instance.id for p in fleet}) == len(fleet)
    by_kind = {p.kind: p for p in fleet}
    assert by_kind["busy8"].instance.gpu_num == 8
    assert by_kind["expiring_idle"].instance.billing_mode == "monthly"
    assert by_kind["expiring_idle"].instance.end_time is not None
    assert by_kind["error"].instance.error_state == "error"
    assert not by_kind["pulling"].has_metrics


def test_generated_store_fires_the_expected_rules(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'bench.db'}")
    try:
        built = build(store, len(MIX), days=1, seed=3, echo=lambda _line: None)
        kinds = {p.instance.id: p.kind for p in plan_fleet(len(MIX), 1, random.Random(3))}
        with_metrics = sum(1 for k in kinds.values() if k not in ("pulling", "error"))
        assert built["metric_rows"] == with_metrics * 1440
        assert built["rollup_rows"] > 0  # the completed hours were rolled up
        seconds, queries, result, _ = evaluate_once(store)
        firing: dict[str, set[str]] = defaultdict(set)
        for state in result.firing():
            firing[state.rule].add(state.resource_id)

        def of(*wanted: str) -> set[str]:
            return {iid for iid, kind in kinds.items() if kind in wanted}

        assert firing["idle-gpu"] == of("idle")
        assert firing["underused-gpus"] == of("underused")
        assert firing["instance-error"] == of("pulling", "error")
        # with one day of metrics in a 7-day lookback, even the busy one averages under 20 %
        expiring = firing["subscription-expiring-idle"] | firing["subscription-expiring-used"]
        assert expiring == of("expiring_idle", "expiring_busy")
        assert of("expiring_idle") <= firing["subscription-expiring-idle"]
        assert not firing["idle-gpu"] & of("busy", "busy8", "spot", "underused")
        assert firing["failed-task"] == {"bench-task-failed"}
        assert "monitor-cannot-see-account" not in firing  # the collector runs are fresh
        assert not firing["subscription-candidate"] & of("spot", "monthly", "expiring_busy")
        assert seconds > 0 and queries > 0
        # a second run from a clean alert table does the same work and gets the same answer
        _, again, result2, _ = evaluate_once(store)
        assert again <= queries
        assert {(s.rule, s.resource_id) for s in result2.firing()} == {
            (s.rule, s.resource_id) for s in result.firing()
        }
    finally:
        store.close()


def test_report_is_the_last_line(tmp_path: Path) -> None:
    from monitor.bench_rules import bench_rules

    lines: list[str] = []
    report = bench_rules(5, 1, seed=2, runs=2, echo=lines.append, workdir=tmp_path, logs=None)
    last = json.loads(lines[-1])
    assert last == report
    assert {"instances", "days", "eval_s", "per_instance_ms", "setup_s"} <= set(last)
    assert (last["instances"], last["days"], last["runs"]) == (5, 1, 2)
    assert abs(last["per_instance_ms"] - last["eval_s"] * 1000 / 5) < 0.01
    assert len(last["eval_runs_s"]) == 2
    assert last["firing_by_rule"]["idle-gpu"] == 1  # the fourth instance of the mix is idle
    assert list(tmp_path.iterdir()) == []  # the temporary database is gone


def test_with_the_stop_rule_both_figures_are_reported_side_by_side(tmp_path: Path) -> None:
    from monitor.bench_rules import bench_rules

    lines: list[str] = []
    report = bench_rules(
        20, 1, seed=2, runs=2, echo=lines.append, workdir=tmp_path, logs=None, with_stop_rule=True
    )
    assert json.loads(lines[-1]) == report
    assert len(report["eval_runs_s"]) == len(report["eval_with_stop_runs_s"]) == 2
    ratio = report["eval_with_stop_s"] / report["eval_s"]  # of the rounded medians: close
    assert abs(report["stop_rule_ratio"] - ratio) <= 0.01 * ratio + 0.001
    # the two idle pay-as-you-go instances of the mix are announced (the idle subscription,
    # "expiring_idle", is refused: a stop saves nothing on prepaid time)
    assert report["stops_planned"] == 2
    assert report["firing_by_rule"].get("stop-idle-gpus") is None  # the shipped rules' result
    runs = [x for x in lines if "with the stop rule" in x]
    assert len(runs) == 2 and all("2 stops planned" in x for x in runs)
    # and the minute after a first evaluation, without and with the stop rule, interleaved
    assert len(report["eval_steady_runs_s"]) == len(report["eval_with_stop_steady_runs_s"]) == 2
    steady = report["eval_with_stop_steady_s"] / report["eval_steady_s"]
    assert abs(report["stop_rule_ratio_steady"] - steady) <= 0.01 * steady + 0.001
    assert len([x for x in lines if "the minute after" in x]) == 2
    assert report["stop_rule_ratio_cpu"] > 0 and report["stop_rule_ratio_steady_cpu"] > 0
    # and the same rule without its actions, interleaved with the first evaluations
    assert len(report["eval_with_stop_alerts_runs_s"]) == 2
    alerts = report["eval_with_stop_alerts_s"] / report["eval_s"]
    assert abs(report["stop_rule_alerts_ratio"] - alerts) <= 0.01 * alerts + 0.001
    assert report["stop_rule_alerts_ratio_cpu"] > 0
    assert len(report["eval_with_stop_alerts_steady_runs_s"]) == 2
    alerts_steady = report["eval_with_stop_alerts_steady_s"] / report["eval_steady_s"]
    assert (
        abs(report["stop_rule_alerts_ratio_steady"] - alerts_steady) <= 0.01 * alerts_steady + 0.001
    )
    assert report["stop_rule_alerts_ratio_steady_cpu"] > 0
    assert len([x for x in lines if "the stop rule stripped of its actions" in x]) == 2


def test_the_steady_evaluation_is_the_one_after_a_first(tmp_path: Path) -> None:
    """What ``stop_rule_ratio_steady`` times: an evaluation a minute after a first one, whose
    alerts are firing and whose stops are planned already: no transition, no notice, no new
    ledger row, the same alerts firing."""
    from monitor.bench_rules import ACCOUNT, STOP_RULE, build, evaluate_once
    from monitor.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    rule = tmp_path / "stop.yaml"
    rule.write_text(STOP_RULE)
    try:
        build(store, 20, 1, 2, lambda _: None)
        first = evaluate_once(store, rule).result
        planned = len(store.actions(ACCOUNT))
        assert first.transitions and first.notifications_due and planned == 3
        then = evaluate_once(store, rule, steady=True).result
        assert then.transitions == [] and then.notifications_due == []
        assert len(store.actions(ACCOUNT)) == planned
        assert {s.fingerprint for s in then.firing()} == {s.fingerprint for s in first.firing()}
    finally:
        store.close()


def test_the_alerts_only_rule_alerts_as_the_stop_rule_and_plans_nothing(tmp_path: Path) -> None:
    """What ``stop_rule_alerts_ratio`` times: the stop rule's alerts (the same instances,
    the same figures), without a ledger row or an announcement."""
    from monitor.bench_rules import ACCOUNT, STOP_RULE, alerts_only, build, evaluate_once
    from monitor.store import open_store

    assert "actions" in STOP_RULE and "actions" not in alerts_only(STOP_RULE)
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    rule, bare = tmp_path / "stop.yaml", tmp_path / "bare.yaml"
    rule.write_text(STOP_RULE)
    bare.write_text(alerts_only(STOP_RULE))
    try:
        build(store, 20, 1, 2, lambda _: None)

        def stop_alerts(result: object) -> dict[str, object]:
            return {
                s.resource_id: dict(s.values)
                for s in result.firing()  # type: ignore[attr-defined]
                if s.rule == "stop-idle-gpus"
            }

        alone = evaluate_once(store, bare).result
        assert store.actions(ACCOUNT) == []
        notices = [n for n in alone.notifications_due if n.rule == "stop-idle-gpus"]
        with_actions = evaluate_once(store, rule).result
        assert len(store.actions(ACCOUNT)) == 3
        assert stop_alerts(alone) == stop_alerts(with_actions) and len(stop_alerts(alone)) == 3
        assert len(notices) == 3
    finally:
        store.close()


def test_each_variant_takes_each_place_in_the_sequence(tmp_path: Path, monkeypatch) -> None:
    """Whichever of three consecutive evaluations comes last runs a few points slower: the
    order of the variants is rotated from run to run, the first evaluations' and the steady
    ones' alike, so over three runs each variant is first, second and third once."""
    import monitor.bench_rules as bench

    seen: list[tuple[str, bool]] = []
    timed = bench.evaluate_once

    def recording(store, rule=None, steady=False):  # type: ignore[no-untyped-def]
        name = "without" if rule is None else "alerts" if "alerts-only" in rule.name else "with"
        seen.append((name, steady))
        return timed(store, rule, steady)

    monkeypatch.setattr(bench, "evaluate_once", recording)
    bench.bench_rules(
        20, 1, seed=2, runs=3, echo=lambda _: None, workdir=tmp_path, logs=None, with_stop_rule=True
    )
    assert len(seen) == 18  # 3 runs x (3 first + 3 steady)
    for steady in (False, True):
        order = [name for name, s in seen if s is steady]
        triples = [order[i : i + 3] for i in range(0, 9, 3)]
        assert all(sorted(t) == ["alerts", "with", "without"] for t in triples)
        for place in range(3):
            assert sorted(t[place] for t in triples) == ["alerts", "with", "without"]
