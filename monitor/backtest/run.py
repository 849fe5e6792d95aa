"""``novita-monitor backtest``: a scenario (:mod:`monitor.sim.scenarios`) served by the simulator
in-process (its ASGI app through httpx), the daemon's own pipeline (:class:`monitor.pipeline.
Pipeline`: collect what is due, evaluate, act, deliver) stepped on a :class:`ManualClock` with no
wall-clock waiting, the scenario's owner starting stopped instances when their work resumes, and
the scores of :mod:`monitor.backtest.score`.

Each step: the owner's restarts due before it are made at their exact times (through the model,
as the owner would in the console), the balance drops when the scenario says, then one pipeline
step at the step's time; actions awaiting approval are approved after it (the act step of the
next cycle runs them). Between steps the act step runs on its own schedule (``act_s``; for
``hard`` every 60 s, the daemon's default) whenever an action is due: a stop runs when its grace
ends and its re-check has a sample past it, not at the next step. Notifications go to a null
console.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import io
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from monitor.backtest import score
from monitor.clock import ManualClock
from monitor.sim import scenarios
from monitor.sim.scenarios import InstancePlan, Scenario

RULES = Path(__file__).with_name("rules.yaml")
API_KEY_ENV = "NOVITA_BACKTEST_KEY"
#: collect (instances, metrics, balance), evaluate, act and deliver every this many seconds
#: (``backtest`` defaults to the scenario's own: ``scenarios.DEFAULT_CYCLE_S``)
DEFAULT_CYCLE_S = 300
#: how long after a check of a stop in progress the owner looks again (the simulator's stop
#: completes 60 s after it is asked)
STOP_SETTLES_S = 60
#: a false stop made this soon after the work began could not have seen it: the API's ~1
#: minute metric lag plus the minute a sample summarises
BLIND = timedelta(minutes=2)
#: steps between progress lines
PROGRESS_EVERY = 72
#: the metric samples' resolution (seconds), whatever the collection schedule
METRIC_RESOLUTION_S = 60
#: what a stopped instance's storage costs per GPU and hour (USD): 60 GB of local disk per GPU
#: at USD 0.005 per GB and day, an assumption of the backtest stated in its output
STORAGE_USD_PER_GPU_HOUR = Decimal("0.0125")
#: breakers sized for a fleet: the defaults (3 a cycle, 10 an hour) are for a handful
ACTIONS = {"max_per_cycle": 50, "max_per_hour": 200, "max_per_rule_per_hour": 200}


@dataclass
class Observed:
    """What the run saw, for the scores."""

    idle_firing: list[tuple[str, datetime]] = field(default_factory=list)
    runway: list[tuple[datetime, bool]] = field(default_factory=list)
    restarts: int = 0
    zero_at: datetime | None = None
    approvals: int = 0
    steps: int = 0


def _ts(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def trace_of(plan: InstancePlan, hourly_usd: Decimal | None) -> score.Trace:
    return score.Trace(
        instance_id=plan.id,
        gpu_count=plan.gpu_num,
        billing_mode=plan.billing_mode,
        spans=tuple(score.Span(_ts(s.start), _ts(s.end), s.work) for s in plan.segments),
        hourly_usd=hourly_usd,
        storage_usd_per_hour=STORAGE_USD_PER_GPU_HOUR * plan.gpu_num,
        outages=tuple((_ts(a), _ts(b)) for a, b in plan.outages),
    )


def write_config(folder: Path, cycle_s: int, rules: Sequence[Path], act_s: int) -> Path:
    from monitor.config import shipped_rules_dir

    paths = ", ".join(str(p) for p in (shipped_rules_dir(), *rules))
    every = f"{cycle_s}s"
    actions = ", ".join(f"{k}: {v}" for k, v in ACTIONS.items())
    path = folder / "backtest.yaml"
    path.write_text(
        "accounts:\n"
        "  - name: main\n"
        f"    api_key_env: {API_KEY_ENV}\n"
        "    base_url: http://localhost\n"
        f"database: sqlite:///{folder / 'backtest.db'}\n"
        f"rules: [{paths}]\n"
        f"schedules: {{instances: {every}, metrics: {every}, balance: {every}, "
        f"evaluate: {every}, act: {act_s}s, deliver: {every}, usage_bills: 1h, "
        "fixed_term_bills: 1h, training_tasks: 1d, products: 1d, retention: 1h}\n"
        f"actions: {{{actions}}}\n"
    )
    return path


class Owner:
    """The scenario's owner: starts an instance a rule stopped when its work resumes."""

    def __init__(self, scenario: Scenario, sim: Any) -> None:
        self.sim = sim
        self.plans = {p.id: p for p in scenario.instances}
        self.starts = {p.id: [s.start for s in p.segments] for p in scenario.instances}
        # (time, instance) at which work resumes after an idle gap
        self.events = sorted(
            (s.start, p.id)
            for p in scenario.instances
            for prev, s in zip(p.segments, p.segments[1:], strict=False)
            if s.work and not prev.work
        )
        self.next = 0
        self.restarts = 0

    def working(self, iid: str, t: int) -> bool:
        segs = self.plans[iid].segments
        at = bisect.bisect_right(self.starts[iid], t) - 1
        return at >= 0 and segs[at].work and t < segs[at].end

    def restart(self, iid: str) -> bool:
        """Start it if a rule stopped it (exited); True when a start was made."""
        from monitor.sim.fleet import SimError

        inst = self.sim.instance(iid)
        if inst.status != "exited":
            return False
        try:
            self.sim.perform("start", {"instanceId": iid})
        except SimError:  # a lapsed subscription cannot start: its owner cannot either
            return False
        self.restarts += 1
        return True

    def until(self, clock: ManualClock, t: int) -> None:
        """Make the restarts due up to ``t`` at their times (a stop still in progress is tried
        again when it should have completed), leaving the clock at ``t``."""
        due: list[tuple[int, str]] = []
        while self.next < len(self.events) and self.events[self.next][0] <= t:
            heapq.heappush(due, self.events[self.next])
            self.next += 1
        while due:
            at, iid = heapq.heappop(due)
            clock.set(_ts(max(at, int(clock.now().timestamp()))))
            if self.sim.instance(iid).status in ("toStop", "stopping"):
                if at + STOP_SETTLES_S <= t:
                    heapq.heappush(due, (at + STOP_SETTLES_S, iid))
                continue
            self.restart(iid)
        clock.set(_ts(t))
        # work that found its instance stopped (a stop while working, or one still completing
        # at its resume time): started now
        for inst in self.sim.instances():
            if inst.status == "exited" and inst.id in self.plans and self.working(inst.id, t):
                self.restart(inst.id)


async def simulate(
    scenario: Scenario,
    cycle_s: int = DEFAULT_CYCLE_S,
    rules: Sequence[Path] = (RULES,),
    folder: Path | None = None,
    progress: Callable[[str], None] | None = None,
    act_s: int | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` through the pipeline; the result of :func:`report`. ``act_s``: how
    often due actions run between steps (default and at most: every step)."""
    act_s = cycle_s if act_s is None else max(1, min(act_s, cycle_s))
    from monitor.app import App
    from monitor.config import Config
    from monitor.notify.deliver import Notifier
    from monitor.novita.client import RetryPolicy
    from monitor.pipeline import Pipeline
    from monitor.sim import create_app
    from monitor.sim.faults import Faults

    started = time.monotonic()
    cpu0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix="nm-backtest-") as tmp:
        where = folder or Path(tmp)
        env = {API_KEY_ENV: "backtest-key"}
        config = Config.load(write_config(where, cycle_s, rules, act_s), env=env)
        clock = ManualClock(_ts(scenario.start))
        sim = scenarios.install(scenario, clock)
        faults = Faults(error_rate=scenario.error_rate, seed=scenario.seed)
        sim_app = create_app(sim, faults)
        null = io.StringIO()

        def quiet(router: Any, clk: Any) -> Notifier:
            return Notifier(router.channels, clk, max_attempts=1, stream=null)

        app = App.open(
            config,
            clock,
            env=env,
            transport_factory=lambda _name: httpx.ASGITransport(app=sim_app),
            notifier_factory=quiet,
        )

        async def no_wait(_s: float) -> None:
            return None

        for ctx in app.contexts:
            ctx.client.retry = RetryPolicy(sleep=no_wait)
            # the configuration ties the sample interval to the metrics schedule; the backtest
            # collects every cycle but keeps 1-minute samples
            ctx.settings.metrics_interval_s = METRIC_RESOLUTION_S
        assert app.ruleset is not None
        stop_rules = [r for r in app.ruleset if any(a.name == "stop" for a in r.actions)]
        idle_names = {r.name for r in stop_rules}
        window = _stop_window(stop_rules)
        owner = Owner(scenario, sim)
        seen = Observed()
        run = Pipeline(app, clock, keep=False)
        dropped = False
        t = scenario.start
        try:
            while t < scenario.end:
                owner.until(clock, t)
                if not dropped and t >= scenario.balance_drop_at:
                    scenarios.drop_balance(sim, scenario.balance_drop_runway_h)
                    dropped = True
                cycle = await run.step()
                null.seek(0)
                null.truncate()
                seen.steps += 1
                now = clock.now()
                firing = cycle.firing
                seen.idle_firing += [
                    (a.resource_id, a.firing_since or now) for a in firing if a.rule in idle_names
                ]
                seen.runway.append((now, any(a.rule == "balance-runway" for a in firing)))
                if dropped and seen.zero_at is None and sim.balance_10k() <= 0:
                    seen.zero_at = now
                seen.approvals += _approve_all(app, now)
                if progress and seen.steps % PROGRESS_EVERY == 0:
                    progress(
                        f"{_ts(t).isoformat()}: {seen.steps} steps, "
                        f"{time.monotonic() - started:.0f} s, cpu {time.process_time() - cpu0:.0f} s"
                    )
                # the act step on its own schedule until the next step
                for at in range(t + act_s, min(t + cycle_s, scenario.end), act_s):
                    owner.until(clock, at)
                    await run.act()
                t += cycle_s
            clock.set(_ts(scenario.end))
            seen.restarts = owner.restarts
            wall = time.monotonic() - started
            return report(scenario, sim, app, seen, window, cycle_s, act_s, wall)
        finally:
            await app.aclose()


def _stop_window(rules: Sequence[Any]) -> timedelta:
    from monitor.rules.tree import metric_windows

    windows = [w for r in rules for w in metric_windows(r.when)]
    return max(windows, default=timedelta(minutes=45))


def _approve_all(app: Any, now: datetime) -> int:
    done = 0
    for row in app.store.actions(states=["awaiting_approval"]):
        if app.store.transition(row, "approved", now, decided_at=now, due_at=now) is not None:
            done += 1
    return done


def stops_of(sim: Any, ledger: Sequence[Any], plans: dict[str, InstancePlan]) -> list[score.Stop]:
    """The stops the simulator carried out, each with the run that followed (the owner's
    restart) and the price its ledger row recorded."""
    rows: dict[str, list[Any]] = {}
    for row in ledger:
        if row.action == "stop" and row.saving_since is not None:
            rows.setdefault(row.instance_id, []).append(row)
    out = []
    for entry in sim.actions:
        if entry["path"] != "stop" or not entry["performed"]:
            continue
        iid = entry["body"]["instanceId"]
        at = datetime.fromisoformat(entry["time"])
        inst = sim.instance(iid)
        after = [r[0] for r in inst.runs if r[0] is not None and r[0] > at.timestamp()]
        mine = [r for r in rows.get(iid, []) if r.saving_since >= at - timedelta(minutes=5)]
        row = min(mine, key=lambda r: r.saving_since) if mine else None
        out.append(
            score.Stop(
                instance_id=iid,
                at=at,
                until=_ts(min(after)) if after else None,
                billing_mode=_mode_at_stop(row, plans.get(iid), inst),
                rule=row.rule if row else "",
                hourly_usd=row.saving_per_hour_usd if row else None,
            )
        )
    return out


def report(
    scenario: Scenario,
    sim: Any,
    app: Any,
    seen: Observed,
    window: timedelta,
    cycle_s: int,
    act_s: int,
    wall_s: float,
) -> dict[str, Any]:
    from monitor.sim.truth import paygo_rate_10k

    plans = {p.id: p for p in scenario.instances}
    traces = [trace_of(p, _usd(paygo_rate_10k(sim.instance(p.id)))) for p in scenario.instances]
    ledger = app.store.actions()
    stops = stops_of(sim, ledger, plans)
    renewals = [
        (c.instance_id, _ts(c.start))
        for c in sim.fixed_charges()
        if c.trade_type == "monthly_re_buy"
    ]
    subs = [
        (p.id, p.wanted, _lapsed(sim.instance(p.id)))
        for p in scenario.instances
        if p.subscription_end is not None and p.subscription_end <= scenario.end
    ]
    latencies = [
        d.total_seconds() / 60
        for d in score.detection_latencies(traces, seen.idle_firing, window, _ts(scenario.start))
    ]
    lead = score.runway_alert_lead(seen.runway, seen.zero_at)
    false = score.false_stops(traces, stops)
    capture = score.oracle_capture(traces, stops)
    net = score.net_savings_usd(traces, stops)
    oracle_net = score.oracle_savings_usd(traces)
    states: dict[str, int] = {}
    for row in ledger:
        states[f"{row.action}:{row.state}"] = states.get(f"{row.action}:{row.state}", 0) + 1
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "days": (scenario.end - scenario.start) // 86400,
        "instances": len(scenario.instances),
        "oracle_capture": None if capture is None else round(capture, 4),
        "rules_avoided_gpu_h": round(score.rules_avoided_hours(traces, stops), 2),
        "oracle_avoided_gpu_h": round(score.oracle_avoided_hours(traces), 2),
        "net_savings_usd": None if net is None else float(round(net, 2)),
        "oracle_net_savings_usd": None if oracle_net is None else float(round(oracle_net, 2)),
        "stops": len(stops),
        "restarts": seen.restarts,
        "false_stops": len(false),
        "false_stop_details": [_explain(plans[s.instance_id], s) for s in false],
        # of which within the API's metric lag of the work's start: invisible to any monitor
        "false_stops_within_metric_lag": len(score.blind_false_stops(traces, stops, BLIND)),
        "prepaid_stops": len(score.prepaid_stops(stops)),
        "actions_on_missing_data": len(score.stops_on_missing_data(traces, stops, window, 0.9)),
        "detection_latency_p50_min": _round(score.percentile(latencies, 50)),
        "detection_latency_p95_min": _round(score.percentile(latencies, 95)),
        "detections": len(latencies),
        "missed_expiries": len(score.missed_expiries(subs)),
        "duplicate_renewals": score.duplicate_renewals(renewals),
        "renewals": len(renewals),
        "runway_alert_lead_h": None if lead is None else round(lead.total_seconds() / 3600, 2),
        "balance_zero_at": None if seen.zero_at is None else seen.zero_at.isoformat(),
        "balance_drop_at": _ts(scenario.balance_drop_at).isoformat(),
        "approvals": seen.approvals,
        "ledger": dict(sorted(states.items())),
        "schedules": {
            "step_s": cycle_s,
            "instances_s": cycle_s,
            "metrics_s": cycle_s,
            "metric_resolution_s": METRIC_RESOLUTION_S,
            "balance_s": cycle_s,
            "evaluate_s": cycle_s,
            "act_s": act_s,
            "deliver_s": cycle_s,
            "usage_bills_s": 3600,
            "fixed_term_bills_s": 3600,
        },
        "actions_config": dict(ACTIONS),
        "restart_cost_min": score.RESTART_COST.total_seconds() / 60,
        "storage_usd_per_gpu_hour": float(STORAGE_USD_PER_GPU_HOUR),
        "api_error_rate": scenario.error_rate,
        "steps": seen.steps,
        "wall_s": round(wall_s, 1),
    }


def _mode_at_stop(row: Any, plan: InstancePlan | None, inst: Any) -> str:
    """The billing mode the stop acted on: the ledger row's planning snapshot (a subscription
    whose renewal failed is pay-as-you-go by then), else the scenario's."""
    from monitor.actions.recheck import snapshot

    mode = snapshot(row).get("billing_mode") if row is not None else None
    if isinstance(mode, str) and mode:
        return mode
    return plan.billing_mode if plan is not None else str(inst.billing_mode)


def _explain(plan: InstancePlan, stop: score.Stop) -> str:
    """``id (kind) at T: activity since S`` for a false stop."""
    t = int(stop.at.timestamp())
    seg = next((s for s in plan.segments if s.start <= t < s.end), None)
    what = "?" if seg is None else f"{seg.activity} since {_ts(seg.start).strftime('%H:%M:%S')}"
    return f"{plan.id} ({plan.kind}) at {stop.at.strftime('%Y-%m-%d %H:%M:%S')}: {what}"


def _usd(amount_10k: float) -> Decimal:
    return Decimal(str(round(amount_10k / 10000, 6)))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _lapsed(inst: Any) -> bool:
    """The subscription ran out: lapsed, or fell back to pay-as-you-go (its renewal failed)."""
    return bool(inst.lapsed) or inst.billing_mode != "monthly"


def backtest(
    name: str,
    days: int = 14,
    instances: int | None = None,
    seed: int = 0,
    cycle_s: int | None = None,
    rules: Sequence[Path] | None = None,
    progress: Callable[[str], None] | None = None,
    act_s: int | None = None,
) -> dict[str, Any]:
    """Build the scenario and run it (see :func:`simulate`) at ``cycle_s``, acting every
    ``act_s`` (defaults: the scenario's, ``scenarios.DEFAULT_CYCLE_S`` and ``DEFAULT_ACT_S``)."""
    scenario = scenarios.build(name, days=days, instances=instances, seed=seed)
    if cycle_s is None:
        cycle_s = scenarios.DEFAULT_CYCLE_S[name]
    if act_s is None:
        act_s = scenarios.DEFAULT_ACT_S[name]
    return asyncio.run(
        simulate(
            scenario,
            cycle_s,
            tuple(rules) if rules else (RULES,),
            progress=progress,
            act_s=act_s,
        )
    )
