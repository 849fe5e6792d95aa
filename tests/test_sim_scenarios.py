"""The backtest's scenarios (``monitor.sim.scenarios``): seeded traces of work and idle gaps, the
profiles the simulator serves for them, metric outages, the balance."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from monitor.clock import ManualClock
from monitor.sim import scenarios, wire
from monitor.sim.scenarios import DEFAULT_START, MINUTE


def test_traces_are_seeded_contiguous_and_cover_the_horizon() -> None:
    a = scenarios.build("standard", days=3, instances=30, seed=4)
    assert a == scenarios.build("standard", days=3, instances=30, seed=4)
    assert a != scenarios.build("standard", days=3, instances=30, seed=5)
    for plan in a.instances:
        segs = plan.segments
        assert segs[0].start == a.start and segs[-1].end == a.end
        assert all(x.end == y.start for x, y in itertools.pairwise(segs))
        assert all(x.activity != y.activity for x, y in itertools.pairwise(segs))
        if plan.kind == "subscription":
            assert plan.billing_mode == "monthly" and plan.subscription_end is not None
            assert any(s.work for s in segs) == plan.wanted


def test_hard_has_long_pauses_short_inference_gaps_grace_breaks_and_outages() -> None:
    hard = scenarios.build("hard", days=3, instances=40)
    kinds = {p.kind for p in hard.instances}
    assert {"grace", "bursty", "workday"} <= kinds
    bursty = [p for p in hard.instances if p.kind == "bursty"]
    gaps = [s.end - s.start for p in bursty for s in p.segments if not s.work]
    # the daytime gaps are never longer than the restart cost (nights are)
    assert min(gaps) >= 5 * MINUTE and sorted(gaps)[len(gaps) // 2] <= 10 * MINUTE
    pauses = [
        s.end - s.start
        for p in hard.instances
        if p.kind == "workday"
        for s in p.segments
        if s.activity == "dataload"
    ]
    assert any(15 * MINUTE <= d <= 25 * MINUTE for d in pauses)
    grace = next(p for p in hard.instances if p.kind == "grace")
    breaks = [s.end - s.start for s in grace.segments[1:-1] if not s.work]
    assert breaks and all(48 * MINUTE <= b < 57 * MINUTE for b in breaks if b < 2 * 3600)
    watched = [p for p in hard.instances if p.kind != "subscription"]
    assert sum(1 for p in watched if p.outages) > len(watched) / 2
    assert all(b - a == 3600 for p in watched for a, b in p.outages)
    assert hard.error_rate > 0


def test_the_simulator_serves_the_trace_and_hides_outages() -> None:
    plan = scenarios.build("hard", days=2, instances=10)
    clock = ManualClock(DEFAULT_START)
    sim = scenarios.install(plan, clock)
    assert sim.balance_10k() > 0
    p = next(
        p for p in plan.instances if p.outages and any(s.activity == "dataload" for s in p.segments)
    )
    load = next(s for s in p.segments if s.activity == "dataload")
    clock.set(datetime.fromtimestamp(load.end + 120, UTC))
    inst = sim.instance(p.id)
    body = wire.metrics_json(sim, inst, load.start, load.end - 60, 60)
    gpus = [float(x["value"]) for x in body["gpuUtilization"]["avg"]]
    cpus = [float(x["value"]) / inst.cpu_num for x in body["cpuUtilization"]]
    missing = [a for a, b in p.outages if a < load.end and b > load.start]
    if not missing:
        assert gpus and max(gpus) < 5 and min(cpus) > 50  # GPU waits, CPU works
    # an outage publishes nothing
    a, b = p.outages[0]
    clock.set(datetime.fromtimestamp(max(b + 120, load.end + 120), UTC))
    inside = wire.metrics_json(sim, sim.instance(p.id), a, b - 60, 60)
    assert inside["cpuUtilization"] == [] and inside["gpuUtilization"]["avg"] == []
    around = wire.metrics_json(sim, sim.instance(p.id), a - 600, b + 60, 60)
    served = [int(x["timestamp"]) for x in around["cpuUtilization"]]
    expected = [t for t in range(-(-(a - 600) // 60) * 60, b + 61, 60) if not a <= t < b]
    assert served == expected and len(served) >= 10
