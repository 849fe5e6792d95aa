"""The shipped GPU rules against the simulator's utilisation profiles (its demo fleet), stepped
minute by minute over three hours: the trainer's data-loading dips and the bursty inference
server never look idle; the multi-GPU box with two idle GPUs is a downsizing hint.

Facts are built straight from ``monitor.sim.profiles`` (no store, no HTTP): this checks the
rules' thresholds and coverage logic against the simulated behaviour, not the collectors.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from monitor.clock import ManualClock
from monitor.rules import AlertState, InMemoryFacts, InstanceFact, evaluate, load_rules
from monitor.sim import FleetSim, profiles

SHIPPED = Path(__file__).resolve().parent.parent / "monitor" / "shipped_rules"
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
HOURS = 3
GPU_IDS = ("demo-trainer", "demo-inference", "demo-notebook", "demo-multigpu")

UTIL_ONLY = """\
rules:
  - name: idle-gpu-util-only
    resource: instance
    when:
      all:
        - {field: billing_mode, op: in, value: [onDemand, spot]}
        - idle_gpu: {window: 30m, threshold: 5, min_uptime: 15m}
"""


def build_facts(sim: FleetSim, end: datetime) -> tuple[list[InstanceFact], InMemoryFacts]:
    """Minute samples (as the API serves them, one minute late) from 1 h before T0 to ``end``."""
    instances = []
    metrics: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
    gpu_metrics: dict[tuple[str, str, str], list[tuple[datetime, float]]] = {}
    for inst in sim.instances():
        if inst.id not in GPU_IDS:
            continue
        started = datetime.fromtimestamp(inst.last_started_at or inst.created_at, UTC)
        instances.append(
            InstanceFact(
                id=inst.id,
                name=inst.name,
                status=inst.status,
                billing_mode=inst.billing_mode,
                gpu_count=inst.gpu_num,
                last_started_at=started,
                hourly_cost_usd=Decimal(inst.price_per_gpu_hour() * inst.gpu_num) / 100000,
            )
        )
        key = sim.key(inst.id)
        t = T0 - timedelta(hours=1)
        while t <= end:
            ts = int(t.timestamp())
            values = []
            for g in range(inst.gpu_num):
                v = profiles.gpu_util(inst.profile_at(ts), key, g, ts, g in inst.idle_gpus)
                values.append(v)
                gpu_metrics.setdefault((inst.id, str(g), "gpu_util"), []).append((t, v))
            metrics.setdefault((inst.id, "gpu_util"), []).append((t, sum(values) / len(values)))
            t += timedelta(minutes=1)
    facts = InMemoryFacts(
        instance_list={"demo": instances},
        metrics=metrics,
        gpu_metrics=gpu_metrics,
        history_starts={"demo": T0 - timedelta(hours=1)},
        account_names=["demo"],
    )
    return instances, facts


def test_shipped_gpu_rules_against_the_simulated_demo_fleet(tmp_path: Path) -> None:
    (tmp_path / "util-only.yaml").write_text(UTIL_ONLY)
    ruleset = load_rules(
        [SHIPPED / "idle-gpu.yaml", SHIPPED / "underused-gpus.yaml", tmp_path / "util-only.yaml"]
    )
    sim = FleetSim(ManualClock(T0), scenario="demo", seed=0)
    end = T0 + timedelta(hours=HOURS)
    _, all_facts = build_facts(sim, end)
    states: dict[str, AlertState] = {}
    ever_firing: set[tuple[str, str]] = set()
    notified: list[tuple[str, str, str]] = []
    now = T0
    while now <= end:
        # the metrics API lags a minute: hide the newest sample
        result = evaluate(ruleset, all_facts, now - timedelta(minutes=1), states, [])
        states = result.states
        ever_firing |= {(s.rule, s.resource_id) for s in states.values() if s.state == "firing"}
        notified += [(n.rule, n.resource_id, n.state) for n in result.notifications_due]
        now += timedelta(minutes=1)
    assert ("idle-gpu-util-only", "demo-notebook") in ever_firing
    assert ("underused-gpus", "demo-multigpu") in ever_firing
    for busy in ("demo-trainer", "demo-inference"):
        assert not any(resource == busy for _, resource in ever_firing), busy
    # the multi-GPU box is not idle as a whole (mode all), only underused
    assert ("idle-gpu", "demo-multigpu") not in ever_firing
    # each alert was told once in three hours: no flapping, no re-sends before repeat_interval
    assert notified.count(("idle-gpu-util-only", "demo-notebook", "firing")) == 1
    assert notified.count(("underused-gpus", "demo-multigpu", "firing")) == 1
    assert not [n for n in notified if n[2] == "resolved"]
