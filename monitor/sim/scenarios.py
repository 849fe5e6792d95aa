"""Backtest scenarios: seeded fleets whose every instance carries a trace of ground truth, when it
did useful work and when it sat idle, over ``[start, start + days)``.

A trace is a list of :class:`Segment` (``start``, ``end``, ``activity``), contiguous over the
horizon. Activities and the utilization profile (:mod:`monitor.sim.profiles`) the simulator
serves for them:

========== =========== ==================================================================
activity   profile     what it is
========== =========== ==================================================================
train      trainer     GPU 88-98 % with 2-4 minute data-loading dips (work)
dataload   dataload    a long data-loading pause or CPU preprocessing: GPU ~0, CPU busy (work)
upload     upload      a checkpoint upload: GPU ~0, CPU 20-35 % (work)
infer      inference   an inference server answering bursts (work)
idle       idle        nothing: GPU and CPU idle (the gaps the rules and the oracle may stop)
========== =========== ==================================================================

The instances never stop themselves: an idle instance runs (and bills) until a rule stops it.
The scenario's owner starts a stopped instance again when its work resumes
(:mod:`monitor.backtest.run` does it at the exact time).

Scenario ``standard`` (200 instances unless told; 14 days from a Monday 06:00 UTC), kinds drawn
with these weights, sizes from (1, 1, 1, 2, 2, 4, 8) GPUs, products and clusters uniformly, 85 %
on demand and 15 % spot:

* ``workday`` (40): on each weekday (skipped with probability 0.2) a session starting at 08:00
  + U(0, 3) h lasting U(6, 11) h; idle nights and weekends.
* ``batch`` (20): jobs back to back: job length Exp(mean 20 h) clipped to [2 h, 96 h], gap to the
  next job Exp(mean 8 h) clipped to [5 min, 72 h].
* ``inference`` (15): a server answering bursts around the clock; with probability 0.3 it is
  retired on day U(2, 12) and forgotten (idle to the end).
* ``notebook`` (15): weekday sessions starting at 09:00 + U(0, 4) h lasting U(1, 4) h; with
  probability 0.5 forgotten after day U(1, 10) (idle to the end).
* ``subscription`` (10): a 1-month subscription ending on day U(2, days - 5) (at least day 1);
  used (training around the clock, to renew) with probability 0.6, else idle (to let lapse);
  auto-renew on with probability 0.3.

Each work session of ``workday``, ``batch`` and used ``subscription`` instances begins with
U(5, 20) min of CPU preprocessing, then trains in chunks of U(40, 120) min separated by U(3, 10)
min checkpoint uploads. The balance is set for twice the fleet's full-time spend over the horizon;
3 days before the end it drops to 48 h of runway at the burn of that moment.

Scenario ``hard`` (100 instances unless told; same horizon), weights: ``workday`` (25) and
``batch`` (15) whose training has data-loading pauses of U(15, 25) min every U(60, 120) min;
``bursty`` (25): inference 07:00-23:00 UTC in bursts of U(3, 15) min separated by idle gaps of
U(5, 10) min (never longer than the 10-minute restart cost), idle nights; ``grace`` (5, at least
2 instances): workday sessions with two breaks a day of U(48, 57) min, long enough to be announced
by a 45-minute window, short enough to resume within a 15-minute grace; ``notebook`` (20),
``subscription`` (10). Metric outages of 60 min (no samples ever published) start at intervals of
Exp(mean 36 h) on every instance; 2 % of API requests fail (HTTP 5xx, before reaching the model);
the balance drops to 30 h of runway 4.5 days before the end.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from monitor.clock import Clock
from monitor.sim import catalog
from monitor.sim.fleet import DAY, HOUR, FleetSim, SimInstance, add_months

MINUTE = 60
SCENARIOS = ("standard", "hard")
WORK = frozenset({"train", "dataload", "upload", "infer"})
PROFILE = {
    "train": "trainer",
    "dataload": "dataload",
    "upload": "upload",
    "infer": "inference",
    "idle": "idle",
}
#: a Monday, 06:00 UTC
DEFAULT_START = datetime(2026, 11, 2, 6, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Segment:
    start: int  # Unix seconds
    end: int
    activity: str  # a key of PROFILE

    @property
    def work(self) -> bool:
        return self.activity in WORK


@dataclass(frozen=True, slots=True)
class InstancePlan:
    id: str
    name: str
    kind: str
    gpu_num: int
    product_id: str
    cluster_id: str
    billing_mode: str  # onDemand | spot | monthly
    created_at: int
    segments: tuple[Segment, ...]
    outages: tuple[tuple[int, int], ...] = ()
    subscription_end: int | None = None
    auto_renew: bool = False
    #: a subscription the owner wants kept (it is used): letting it lapse is a missed expiry
    wanted: bool = False


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    seed: int
    start: int
    end: int
    instances: tuple[InstancePlan, ...]
    #: when the balance drops, and to how many hours of runway at the burn of that moment
    balance_drop_at: int
    balance_drop_runway_h: float
    error_rate: float = 0.0
    notes: dict[str, str] = field(default_factory=dict)


# -- traces ------------------------------------------------------------------------------------


def _u(rng: random.Random, a: float, b: float) -> int:
    return int(rng.uniform(a, b))


def _session(
    rng: random.Random, a: int, b: int, pauses: bool, preprocess: bool = True
) -> list[Segment]:
    """A training session over ``[a, b)``: preprocessing, then training chunks separated by
    checkpoint uploads (and, with ``pauses``, data-loading pauses of U(15, 25) min every
    U(60, 120) min)."""
    out: list[Segment] = []
    t = a
    if preprocess:
        pre = min(b, t + _u(rng, 5 * MINUTE, 20 * MINUTE))
        out.append(Segment(t, pre, "dataload"))
        t = pre
    next_pause = t + _u(rng, 60 * MINUTE, 120 * MINUTE)
    while t < b:
        chunk = min(b, t + _u(rng, 40 * MINUTE, 120 * MINUTE))
        while pauses and next_pause < chunk:
            out.append(Segment(t, next_pause, "train"))
            p_end = min(b, next_pause + _u(rng, 15 * MINUTE, 25 * MINUTE))
            out.append(Segment(next_pause, p_end, "dataload"))
            t = p_end
            next_pause = t + _u(rng, 60 * MINUTE, 120 * MINUTE)
            chunk = max(chunk, t)
        if t < chunk:
            out.append(Segment(t, chunk, "train"))
            t = chunk
        if t < b:
            up = min(b, t + _u(rng, 3 * MINUTE, 10 * MINUTE))
            out.append(Segment(t, up, "upload"))
            t = up
    return out


def _bursts(rng: random.Random, a: int, b: int, gaps: bool) -> list[Segment]:
    """Inference over ``[a, b)``: around the clock, or in bursts with idle gaps of U(5, 10) min."""
    if not gaps:
        return [Segment(a, b, "infer")]
    out: list[Segment] = []
    t = a
    while t < b:
        burst = min(b, t + _u(rng, 3 * MINUTE, 15 * MINUTE))
        out.append(Segment(t, burst, "infer"))
        gap = min(b, burst + _u(rng, 5 * MINUTE, 10 * MINUTE + 1))
        if burst < gap:
            out.append(Segment(burst, gap, "idle"))
        t = gap
    return out


def _fill(start: int, end: int, work: list[Segment]) -> tuple[Segment, ...]:
    """``work`` (sorted, non-overlapping, within the horizon) with idle segments in between,
    adjacent segments of the same activity merged."""
    out: list[Segment] = []
    t = start
    for seg in work:
        s, e = max(seg.start, t), min(seg.end, end)
        if e <= s:
            continue
        if s > t:
            out.append(Segment(t, s, "idle"))
        out.append(Segment(s, e, seg.activity))
        t = e
    if t < end:
        out.append(Segment(t, end, "idle"))
    merged: list[Segment] = []
    for seg in out:
        if merged and merged[-1].activity == seg.activity and merged[-1].end == seg.start:
            merged[-1] = Segment(merged[-1].start, seg.end, seg.activity)
        else:
            merged.append(seg)
    return tuple(merged)


def _weekdays(start: int, days: int) -> list[int]:
    """Midnights (UTC) of the weekdays in the horizon."""
    first = start - start % DAY
    out = []
    for d in range(days + 1):
        midnight = first + d * DAY
        if datetime.fromtimestamp(midnight, UTC).weekday() < 5:
            out.append(midnight)
    return out


def _workday(rng: random.Random, start: int, end: int, days: int, pauses: bool) -> list[Segment]:
    work: list[Segment] = []
    for midnight in _weekdays(start, days):
        if rng.random() < 0.2:
            continue
        a = midnight + 8 * HOUR + _u(rng, 0, 3 * HOUR)
        b = a + _u(rng, 6 * HOUR, 11 * HOUR)
        if b > start and a < end:
            work += _session(rng, max(a, start), min(b, end), pauses)
    return work


def _grace_day(rng: random.Random, start: int, end: int, days: int) -> list[Segment]:
    """Workday sessions with two breaks a day of U(48, 57) min (resumed within the grace)."""
    work: list[Segment] = []
    for midnight in _weekdays(start, days):
        a = midnight + 8 * HOUR + _u(rng, 0, HOUR)
        b = a + 9 * HOUR
        if a < start or b > end:
            continue
        t = a
        for brk in (a + 3 * HOUR, a + 6 * HOUR):
            work += _session(rng, t, brk, pauses=False, preprocess=t == a)
            t = brk + _u(rng, 48 * MINUTE, 57 * MINUTE)
        work += _session(rng, t, b, pauses=False, preprocess=False)
    return work


def _batch(rng: random.Random, start: int, end: int, pauses: bool) -> list[Segment]:
    work: list[Segment] = []
    t = start - _u(rng, 0, 6 * HOUR)  # a job already running at the start
    while t < end:
        length = int(min(max(rng.expovariate(1 / (20 * HOUR)), 2 * HOUR), 96 * HOUR))
        a, b = max(t, start), min(t + length, end)
        if a < b:
            work += _session(rng, a, b, pauses, preprocess=t >= start)
        gap = int(min(max(rng.expovariate(1 / (8 * HOUR)), 5 * MINUTE), 72 * HOUR))
        t += length + gap
    return work


def _notebook(rng: random.Random, start: int, end: int, days: int) -> list[Segment]:
    forgotten = start + _u(rng, 1, 10) * DAY if rng.random() < 0.5 else end
    work: list[Segment] = []
    for midnight in _weekdays(start, days):
        a = midnight + 9 * HOUR + _u(rng, 0, 4 * HOUR)
        b = a + _u(rng, 1 * HOUR, 4 * HOUR)
        if a >= start and b <= min(end, forgotten):
            work.append(Segment(a, b, "train"))
    return work


def _outages(rng: random.Random, start: int, end: int) -> tuple[tuple[int, int], ...]:
    out = []
    t = start + int(rng.expovariate(1 / (36 * HOUR)))
    while t < end:
        out.append((t, t + HOUR))
        t += HOUR + int(rng.expovariate(1 / (36 * HOUR)))
    return tuple(out)


KINDS = {
    "standard": (
        ("workday", 40),
        ("batch", 20),
        ("inference", 15),
        ("notebook", 15),
        ("subscription", 10),
    ),
    "hard": (
        ("workday", 25),
        ("batch", 15),
        ("bursty", 25),
        ("grace", 5),
        ("notebook", 20),
        ("subscription", 10),
    ),
}
DEFAULT_INSTANCES = {"standard": 200, "hard": 100}
#: the backtest's step (collect, evaluate, act) per scenario: ``standard``'s gaps are hours
#: long, so 20-minute steps cost it little (capture 0.953 against 0.958 at 15 minutes) and its
#: 14 days of 200 instances then take 538 s (15-minute steps: about 620 s); ``hard``'s gaps of
#: minutes and resumes within the grace are scored at 5 minutes
DEFAULT_CYCLE_S = {"standard": 1200, "hard": 300}
#: how often the backtest's act step runs (due actions only) between its steps: ``hard``'s work
#: resumes minutes after a grace ends (bursty servers start on the hour), so its stops run on the
#: daemon's default ``schedules.act`` of 60 s; ``standard``'s gaps are hours long, so acting at
#: its 20-minute steps costs it little (capture 0.953 against 0.957 acting every 60 s) and keeps
#: its 14 days of 200 instances under 10 minutes (acting every 60 s: 617 s)
DEFAULT_ACT_S = {"standard": 1200, "hard": 60}


def build(
    name: str,
    days: int = 14,
    instances: int | None = None,
    seed: int = 0,
    start: datetime = DEFAULT_START,
) -> Scenario:
    """The scenario ``name`` (see the module docstring), generated from ``seed``."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; valid: {', '.join(SCENARIOS)}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    n = DEFAULT_INSTANCES[name] if instances is None else instances
    if n < 1:
        raise ValueError(f"instances must be at least 1, got {n}")
    hard = name == "hard"
    rng = random.Random(f"{name}:{seed}")
    t0 = int(start.timestamp())
    end = t0 + days * DAY
    kinds = [k for k, _ in KINDS[name]]
    weights = [w for _, w in KINDS[name]]
    drawn = rng.choices(kinds, weights, k=n)
    if hard:  # at least two instances resume work within the grace
        for i in range(min(2, n)):
            drawn[i] = "grace"
    plans = []
    for idx, kind in enumerate(drawn):
        product = rng.choice(catalog.GPU_PRODUCTS).id
        cluster_id = rng.choice(catalog.CLUSTERS).id
        gpus = rng.choice((1, 1, 1, 2, 2, 4, 8))
        mode = rng.choices(("onDemand", "spot"), (85, 15))[0]
        created = t0 - _u(rng, 2 * HOUR, 3 * DAY)
        sub_end = None
        auto = wanted = False
        work: list[Segment]
        if kind == "workday":
            work = _workday(rng, t0, end, days, pauses=hard)
        elif kind == "grace":
            work = _grace_day(rng, t0, end, days)
        elif kind == "batch":
            work = _batch(rng, t0, end, pauses=hard)
        elif kind == "inference":
            retired = t0 + _u(rng, 2, 12) * DAY if rng.random() < 0.3 else end
            work = [Segment(t0, min(retired, end), "infer")]
        elif kind == "bursty":
            work = []
            for d in range(days + 1):
                midnight = t0 - t0 % DAY + d * DAY
                a, b = max(midnight + 7 * HOUR, t0), min(midnight + 23 * HOUR, end)
                if a < b:
                    work += _bursts(rng, a, b, gaps=True)
        elif kind == "notebook":
            work = _notebook(rng, t0, end, days)
        else:  # subscription
            mode = "monthly"
            sub_end = t0 - t0 % HOUR + max(1, _u(rng, 2, max(3, days - 5))) * DAY
            created = add_months(sub_end, -1)
            wanted = rng.random() < 0.6
            auto = rng.random() < 0.3
            work = _session(rng, t0, end, pauses=False, preprocess=False) if wanted else []
        segments = _fill(t0, end, work)
        outages = _outages(rng, t0, end) if hard and kind != "subscription" else ()
        plans.append(
            InstancePlan(
                id=f"{name}-{idx:04d}",
                name=f"{kind}-{idx}",
                kind=kind,
                gpu_num=gpus,
                product_id=product,
                cluster_id=cluster_id,
                billing_mode=mode,
                created_at=created,
                segments=segments,
                outages=outages,
                subscription_end=sub_end,
                auto_renew=auto,
                wanted=wanted,
            )
        )
    # hard: on a Wednesday evening, so that the workdays after it spend the balance to zero
    # (from a Friday evening the weekend's stopped fleet outlasted the run: no lead to score)
    drop_before = int(4.5 * DAY) if hard else 3 * DAY
    return Scenario(
        name=name,
        seed=seed,
        start=t0,
        end=end,
        instances=tuple(plans),
        balance_drop_at=max(t0 + DAY, end - drop_before),
        balance_drop_runway_h=30.0 if hard else 48.0,
        error_rate=0.02 if hard else 0.0,
    )


def install(scenario: Scenario, clock: Clock) -> FleetSim:
    """A simulator holding the scenario's fleet at ``clock``'s time (the scenario's start), its
    balance set for twice the fleet's full-time spend over the horizon plus two renewals of
    every subscription."""
    sim = FleetSim(clock, scenario="fleet", instances=0, seed=scenario.seed)
    sim.scenario = scenario.name
    for plan in scenario.instances:
        first = plan.segments[0].activity
        profiles = [(0, PROFILE[first])] + [(s.start, PROFILE[s.activity]) for s in plan.segments]
        inst = SimInstance(
            id=plan.id,
            name=plan.name,
            cluster_id=plan.cluster_id,
            product_id=plan.product_id,
            gpu_num=plan.gpu_num,
            billing_mode=plan.billing_mode,
            status="running",
            created_at=plan.created_at,
            profiles=profiles,
            runs=[[plan.created_at, None]],
            paygo_from=plan.created_at,
            metric_outages=plan.outages,
            auto_renew=plan.auto_renew,
            auto_renew_from=plan.created_at,
        )
        sim.add_built(inst, subscription_end=plan.subscription_end)
    hours = (scenario.end - scenario.start) / HOUR
    renewals = sum(
        sim.renewal_cost_10k(sim.instance(p.id), 1)
        for p in scenario.instances
        if p.subscription_end is not None
    )
    target = 2 * sim.burn_10k_per_hour() * hours + 2 * renewals
    sim.top_up(int(target - sim.balance_10k()))
    return sim


def drop_balance(sim: FleetSim, runway_h: float) -> None:
    """Take credit away so that ``runway_h`` hours are left at the burn of this moment."""
    burn = sim.burn_10k_per_hour()
    sim.top_up(-int(sim.balance_10k() - burn * runway_h))
