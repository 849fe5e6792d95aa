"""Built-in conditions, registered by name with their own parameter models.

Each answers ``Result(match, values)`` for one resource: ``match`` None means the data needed
is missing (too short a window, no balance yet, too little history), which neither fires nor
resolves an alert. The numbers in ``values`` are what a notification prints.

Every condition reads facts through ``ctx.facts`` for the *whole account* (cached), so one
evaluation makes a handful of aggregate queries whatever the number of instances.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field, model_validator

from monitor import economics
from monitor.rules.context import EvalContext, Resource, Result, and3, money, or3
from monitor.rules.durations import Duration
from monitor.rules.facts import GpuAgg, InstanceFact, TaskFact, WindowAgg
from monitor.rules.model import SEVERITY_RANK, StrictModel
from monitor.rules.registry import conditions

HOUR = economics.HOUR_S
#: the default "stuck" statuses: transitional ones, less the stops and removals (which a
#: user asked for and which cost nothing)
TRANSITIONAL = tuple(
    sorted(economics.TRANSITIONAL_STATUSES - {"toStop", "stopping", "toRemove", "removing"})
)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _instance(resource: Resource) -> InstanceFact:
    assert isinstance(resource.obj, InstanceFact)
    return resource.obj


# --------------------------------------------------------------------------------------------
# idle_gpu


class IdleGpuParams(StrictModel):
    threshold: float = Field(
        5, ge=0, le=100, description="GPU utilisation % below which a GPU is idle"
    )
    window: Duration = Field(timedelta(minutes=30), description="how long it must stay below")
    gpu_memory_threshold: float | None = Field(
        None, ge=0, le=100, description="also require GPU memory use % below this"
    )
    mode: Literal["all", "any"] = Field("all", description="all GPUs idle, or any GPU idle")
    min_uptime: Duration = Field(
        timedelta(0), description="instances younger than this are left alone"
    )
    metric_lag: Duration = Field(timedelta(seconds=60), description="how late metrics arrive")
    min_coverage: float = Field(
        0.9, gt=0, le=1, description="share of the window samples must cover"
    )
    cpu_threshold: float | None = Field(
        None,
        ge=0,
        le=100,
        description="also require CPU use (% per core) below this: data loading, preprocessing "
        "and checkpoint uploads keep the CPU busy while the GPU waits",
    )

    @model_validator(mode="after")
    def _window_positive(self) -> IdleGpuParams:
        if self.window <= timedelta(0):
            raise ValueError("window must be longer than 0 (expected e.g. 30m)")
        if self.metric_lag >= self.window:
            raise ValueError("metric_lag must be shorter than window")
        return self


def _judge_idle(
    util: WindowAgg | GpuAgg | None,
    mem: WindowAgg | GpuAgg | None,
    threshold: float,
    mem_threshold: float | None,
    needed_s: float,
) -> bool | None:
    """Idle: every utilisation sample under the threshold and the window covered. Busy evidence
    wins over gaps (one busy sample = not idle); gaps alone = unknown (never idle, never
    resolved). GPU memory, when the platform reports it, vetoes idleness (one sample at or above
    its threshold = not idle); its absence does not block (Novita often sends it empty)."""
    if util is not None and util.max >= threshold:
        return False
    if mem_threshold is not None and mem is not None and mem.max >= mem_threshold:
        return False
    if util is None or util.covered_s < needed_s:
        return None
    return True


def _uptime_start(ctx: EvalContext, inst: InstanceFact) -> datetime | None:
    return inst.last_started_at or inst.created_at or ctx.facts.history_start(ctx.account)


def _covers(agg: WindowAgg | None, needed_s: float) -> bool:
    return agg is not None and agg.covered_s >= needed_s


def _busy_at(params: IdleGpuParams | UnderusedGpusParams, ctx: EvalContext) -> float | None:
    """Of an instance whose GPUs' average reaches the threshold, "every GPU idle" needs only to
    know that it does (see ``WindowAgg.partial``); under a ``not`` its figures are an alert's."""
    all_idle = isinstance(params, IdleGpuParams) and params.mode == "all"
    return params.threshold if all_idle and not ctx.negated else None


def _gpu_fleet(ctx: EvalContext) -> frozenset[str]:
    """The account's running GPU instances: the ones whose utilisation ``idle_gpu`` reads (it
    is false on every other instance before reading anything)."""
    return ctx.facts.memo(
        ("gpu-fleet", ctx.account),
        lambda: frozenset(
            i.id
            for i in ctx.facts.instances(ctx.account)
            if i.status == "running" and i.gpu_count > 0
        ),
    )


def _gpu_utils(params: IdleGpuParams, ctx: EvalContext) -> dict[str, WindowAgg]:
    """The GPUs' utilisation over the window, for the running GPU instances (every idle_gpu
    rule reads the same instances, so a longer window extends a shorter one)."""
    return ctx.facts.metric_window(
        ctx.account,
        "gpu_util",
        ctx.now - params.window,
        ctx.now,
        _gpu_fleet(ctx),
        busy_at=_busy_at(params, ctx),
    )


def _idle_gpus(
    params: IdleGpuParams | UnderusedGpusParams, ctx: EvalContext, inst: InstanceFact
) -> tuple[list[bool | None], WindowAgg | None, bool]:
    """Per-GPU idle verdicts (or one verdict from the across-GPU series), the util aggregate,
    and whether the verdicts are per GPU."""
    start, end = ctx.now - params.window, ctx.now
    needed = params.min_coverage * (params.window - params.metric_lag).total_seconds()
    mem_th = params.gpu_memory_threshold
    whole = isinstance(params, IdleGpuParams)  # the across-GPU series counts (underused: per GPU)
    all_idle = isinstance(params, IdleGpuParams) and params.mode == "all"
    utils = _gpu_utils(params, ctx) if isinstance(params, IdleGpuParams) else {}
    util = utils.get(inst.id)
    if util is not None and util.partial and ctx.active:
        # this rule's alert ends here: its notice shows the whole window's figures
        util = ctx.facts.metric_window(ctx.account, "gpu_util", start, end, (inst.id,)).get(inst.id)
    if all_idle and util is not None and util.max >= params.threshold:
        # the GPUs' average reached the threshold, so some GPU did: not every GPU is idle
        return [False], util, False
    # per-GPU rows are many: read them once, for the instances that can still qualify and
    # have several GPUs (one GPU's series is the across-GPU one, kept in finer steps), or one
    # whose across-GPU series does not cover the window
    candidates = ctx.facts.memo(
        ("gpu-candidates", ctx.account, start, end, whole, all_idle, params.threshold, needed),
        lambda: frozenset(
            i.id
            for i in ctx.facts.instances(ctx.account)
            if i.status == "running"
            and (
                i.gpu_count > 1
                or (whole and i.gpu_count == 1 and not _covers(utils.get(i.id), needed))
            )
            and not (all_idle and utils.get(i.id) and utils[i.id].max >= params.threshold)
        ),
    )
    per_gpu = ctx.facts.per_gpu_window(ctx.account, "gpu_util", start, end, candidates).get(inst.id)
    if per_gpu:
        mems: dict[str, GpuAgg] = {}
        if mem_th is not None:
            gpu_mem = ctx.facts.per_gpu_window(ctx.account, "gpu_mem", start, end, candidates)
            mems = {g.gpu_id: g for g in gpu_mem.get(inst.id, [])}
        verdicts = [
            _judge_idle(g, mems.get(g.gpu_id), params.threshold, mem_th, needed) for g in per_gpu
        ]
        return verdicts, util, True
    if not whole:
        return [None], None, False  # no per-GPU samples: nothing to say per GPU
    mem = None
    if mem_th is not None and (util is None or util.max < params.threshold):
        # memory can only veto what utilisation calls idle: read it for those instances only
        quiet = ctx.facts.memo(
            ("gpu-quiet", ctx.account, start, end, params.threshold),
            lambda: frozenset(
                i.id
                for i in ctx.facts.instances(ctx.account)
                if i.id not in utils or utils[i.id].max < params.threshold
            ),
        )
        mem = ctx.facts.metric_window(ctx.account, "gpu_mem", start, end, quiet).get(inst.id)
    return [_judge_idle(util, mem, params.threshold, mem_th, needed)], util, False


def _cpu_idle(
    params: IdleGpuParams, ctx: EvalContext, inst: InstanceFact, values: dict[str, object]
) -> bool | None:
    """The CPU side of "idle": every CPU sample (per core) of the window under
    ``cpu_threshold``, the window covered as for the GPU; one busy sample = not idle, gaps =
    unknown."""
    assert params.cpu_threshold is not None
    needed = params.min_coverage * (params.window - params.metric_lag).total_seconds()
    cpu = ctx.facts.metric_window(ctx.account, "cpu", ctx.now - params.window, ctx.now).get(inst.id)
    values["cpu_threshold"] = params.cpu_threshold
    if cpu is not None:
        values["cpu_max"] = round(cpu.max, 2)
    return _judge_idle(cpu, None, params.cpu_threshold, None, needed)


def _young(ctx: EvalContext, inst: InstanceFact, min_uptime: timedelta) -> bool:
    """Started less than ``min_uptime`` ago (an unknown start is not young: it is unknown)."""
    started = _uptime_start(ctx, inst)
    return started is not None and ctx.now - started < min_uptime


def _idle_candidates(params: IdleGpuParams, ctx: EvalContext) -> frozenset[str]:
    """Where ``idle_gpu`` may hold: running GPU instances old enough, less (``mode: all``)
    those whose GPUs' average reached the threshold over the window (the window the condition
    reads, so read once)."""
    utils = _gpu_utils(params, ctx) if _busy_at(params, ctx) is not None else {}
    out = []
    for inst in ctx.facts.instances(ctx.account):
        if inst.status != "running" or inst.gpu_count <= 0:
            continue
        started = _uptime_start(ctx, inst)
        if started is None:
            out.append(inst.id)  # unknown, whatever its GPUs did
        elif ctx.now - started >= params.min_uptime:
            util = utils.get(inst.id)
            if util is None or util.max < params.threshold:
                out.append(inst.id)
    return frozenset(out)


@conditions.register(
    "idle_gpu",
    IdleGpuParams,
    resources=("instance",),
    needs=("instances", "metrics"),
    candidates=_idle_candidates,
)
def idle_gpu(params: IdleGpuParams, ctx: EvalContext, resource: Resource) -> Result:
    """A running GPU instance whose GPU utilisation stayed under a threshold for a window.

    Only running instances with GPUs qualify, and only after ``min_uptime`` since their last
    start (or creation, or the start of stored history). The window must be covered by samples
    (``min_coverage`` of it, up to ``now - metric_lag``); a gap is never idle.
    """
    inst = _instance(resource)
    values: dict[str, object] = {
        "kind": "idle_gpu",
        "threshold": params.threshold,
        "window_minutes": params.window.total_seconds() / 60,
        "gpu_count": inst.gpu_count,
        "unit": "%",
        "cost_per_hour_usd": money(inst.hourly_cost_usd),
    }
    if inst.status != "running":
        # what ends the alert is the instance no longer running (stopped, by us or anyone),
        # not its GPU getting busy: the resolved notice says so
        values["instance_status"] = inst.status
        return Result(False, values)
    if inst.gpu_count <= 0:
        return Result(False, values)
    started = _uptime_start(ctx, inst)
    if started is None:
        return Result(None, values)
    if ctx.now - started < params.min_uptime:
        return Result(False, values)
    verdicts, util, _ = _idle_gpus(params, ctx, inst)
    match = and3(verdicts) if params.mode == "all" else or3(verdicts)
    if util is not None and not util.partial:  # a partial one's figures are of part of it
        values["value"] = round(util.max, 2)
        values["gpu_util_avg"] = round(util.avg, 2)
    if params.cpu_threshold is not None and match is not False:
        match = and3([match, _cpu_idle(params, ctx, inst, values)])
    values["idle_gpus"] = (
        sum(1 for v in verdicts if v)
        if len(verdicts) > 1
        else (inst.gpu_count if verdicts[0] else 0)
    )
    if match:
        # how long it has truly been idle: from the first idle sample of the current stretch
        # (bounded by the last start and the stored history), not from the window's start
        # traced once per evaluation for the instances whose window stayed under the
        # threshold (a superset of the idle ones), not for the whole fleet
        quiet = ctx.facts.memo(
            ("quiet", ctx.account, params.window, params.threshold, ctx.now),
            lambda: frozenset(
                iid for iid, agg in _gpu_utils(params, ctx).items() if agg.max < params.threshold
            ),
        )
        since = ctx.facts.idle_since(ctx.account, params.threshold, ctx.now, quiet).get(inst.id)
        if since is not None:
            values["idle_since"] = _iso(since)
            values["idle_minutes"] = round((ctx.now - since).total_seconds() / 60)
            values["cost_so_far_usd"] = money(
                economics.cost_since(inst.hourly_cost_usd, since, ctx.now)
            )
    return Result(match, values)


# --------------------------------------------------------------------------------------------
# underused_gpus


class UnderusedGpusParams(StrictModel):
    threshold: float = Field(5, ge=0, le=100)
    window: Duration = timedelta(hours=1)
    gpu_memory_threshold: float | None = Field(None, ge=0, le=100)
    min_idle: int = Field(1, ge=1, description="at least this many idle GPUs")
    include_all_idle: bool = Field(False, description="also match when every GPU is idle")
    min_uptime: Duration = timedelta(0)
    metric_lag: Duration = timedelta(seconds=60)
    min_coverage: float = Field(0.9, gt=0, le=1)


def _underused_candidates(params: UnderusedGpusParams, ctx: EvalContext) -> frozenset[str]:
    """Where ``underused_gpus`` may hold: running multi-GPU instances not too young."""
    return frozenset(
        inst.id
        for inst in ctx.facts.instances(ctx.account)
        if inst.status == "running"
        and inst.gpu_count >= 2
        and not _young(ctx, inst, params.min_uptime)
    )


@conditions.register(
    "underused_gpus",
    UnderusedGpusParams,
    resources=("instance",),
    needs=("instances", "metrics"),
    candidates=_underused_candidates,
)
def underused_gpus(params: UnderusedGpusParams, ctx: EvalContext, resource: Resource) -> Result:
    """A running multi-GPU instance with some GPUs idle over the window: a downsizing hint.

    Needs per-GPU samples. Reports the idle count and what the idle GPUs cost per hour.
    """
    inst = _instance(resource)
    values: dict[str, object] = {
        "kind": "underused_gpus",
        "threshold": params.threshold,
        "gpu_count": inst.gpu_count,
        "window_minutes": params.window.total_seconds() / 60,
    }
    if inst.status != "running" or inst.gpu_count < 2:
        return Result(False, values)
    started = _uptime_start(ctx, inst)
    if started is None:
        return Result(None, values)
    if ctx.now - started < params.min_uptime:
        return Result(False, values)
    verdicts, _, per_gpu = _idle_gpus(params, ctx, inst)
    if not per_gpu:
        return Result(None, values)
    idle = sum(1 for v in verdicts if v)
    busy = sum(1 for v in verdicts if v is False)
    values["idle_gpus"] = idle
    per_hour = economics.share_of_cost(inst.hourly_cost_usd, idle, inst.gpu_count)
    values["cost_per_hour_usd"] = money(per_hour)
    values["idle_cost_per_month_usd"] = money(economics.per_month_cost(per_hour))
    if idle >= params.min_idle and (params.include_all_idle or busy > 0):
        return Result(True, values)
    if idle + (len(verdicts) - idle - busy) >= params.min_idle and busy > 0:
        return Result(None, values)  # unknown GPUs could still make it match
    return Result(False, values)


# --------------------------------------------------------------------------------------------
# low_balance


class BalanceLevel(StrictModel):
    severity: Literal["info", "warning", "critical"]
    usd: float | None = Field(None, description="fire when the balance is below this many USD")
    runway_hours: float | None = Field(
        None, gt=0, description="fire when the balance lasts fewer hours than this"
    )
    clear_above_usd: float | None = None
    clear_above_runway_hours: float | None = None

    @model_validator(mode="after")
    def _some_threshold(self) -> BalanceLevel:
        if self.usd is None and self.runway_hours is None:
            raise ValueError("a level needs usd and/or runway_hours")
        return self


class LowBalanceParams(StrictModel):
    usd: float | None = Field(None, description="fire when the balance is below this many USD")
    runway_hours: float | None = Field(
        None, gt=0, description="fire when the balance lasts fewer hours than this at the burn rate"
    )
    clear_above_usd: float | None = Field(None, description="clear only above this (default +10 %)")
    clear_above_runway_hours: float | None = None
    clear_margin: float = Field(0.1, ge=0, description="default clear band above each threshold")
    levels: list[BalanceLevel] = Field(
        default_factory=list, description="several thresholds, each with its own severity"
    )

    @model_validator(mode="after")
    def _some_threshold(self) -> LowBalanceParams:
        if self.usd is None and self.runway_hours is None and not self.levels:
            raise ValueError("low_balance needs usd, runway_hours or levels")
        return self


def _breached(
    value: float | None, threshold: float | None, clear: float | None, holding: bool
) -> bool | None:
    if threshold is None:
        return False
    if value is None:
        return None
    return value < (clear if holding and clear is not None else threshold)


@conditions.register(
    "low_balance", LowBalanceParams, resources=("account",), needs=("balance", "instances")
)
def low_balance(params: LowBalanceParams, ctx: EvalContext, resource: Resource) -> Result:
    """The balance is below a dollar threshold, or lasts fewer hours than ``runway_hours`` at
    the current burn rate. ``levels`` give several thresholds with their own severity; a firing
    level clears only above its clear level (default 10 % higher), so the boundary cannot flap.
    """
    balance = ctx.facts.balance(ctx.account)
    if balance is None:
        return Result(None)
    burn = ctx.facts.burn_rate(ctx.account)
    bal = float(balance.available_usd)
    figures = ctx.facts.runway(ctx.account, ctx.now)
    runway: float | None = figures.hours
    if runway is None and figures.reason == "no_burn":
        runway = float("inf")  # nothing bills: the balance lasts (for the comparison only)
    values: dict[str, object] = {
        "kind": "low_balance",
        "balance_usd": money(balance.available_usd),
        "burn_rate_usd_per_hour": money(burn),
        "runway_hours": None if figures.hours is None else round(figures.hours, 1),
        "runway_reason": figures.reason,
        "in_arrears": figures.in_arrears,
        "renewals_usd": money(figures.charges_usd) if figures.charges_usd else None,
    }
    levels = list(params.levels)
    if params.usd is not None or params.runway_hours is not None:
        levels.append(
            BalanceLevel(
                severity=ctx.rule_severity,  # type: ignore[arg-type]
                usd=params.usd,
                runway_hours=params.runway_hours,
                clear_above_usd=params.clear_above_usd,
                clear_above_runway_hours=params.clear_above_runway_hours,
            )
        )
    held = ctx.prior.severity if ctx.active and ctx.prior else None
    best: BalanceLevel | None = None
    unknown = False
    for level in levels:
        holding = held is not None and SEVERITY_RANK[level.severity] <= SEVERITY_RANK[held]
        margin = 1 + params.clear_margin
        clear_usd = level.clear_above_usd or (level.usd * margin if level.usd else None)
        clear_run = level.clear_above_runway_hours or (
            level.runway_hours * margin if level.runway_hours else None
        )
        hit = or3(
            [
                _breached(bal, level.usd, clear_usd, holding),
                _breached(runway, level.runway_hours, clear_run, holding),
            ]
        )
        if hit is None:
            unknown = True
        elif hit and (best is None or SEVERITY_RANK[level.severity] > SEVERITY_RANK[best.severity]):
            best = level
    if best is None:
        return Result(None if unknown else False, values)
    values["threshold_usd"] = best.usd
    values["threshold_runway_hours"] = best.runway_hours
    by_runway = (
        best.runway_hours is not None
        and runway is not None
        and (best.usd is None or runway < (best.runway_hours or 0))
    )
    values["value"] = values["runway_hours"] if by_runway else values["balance_usd"]
    values["threshold"] = best.runway_hours if by_runway else best.usd
    values["unit"] = "h" if by_runway else "$"
    return Result(True, values, severity=best.severity)


# --------------------------------------------------------------------------------------------
# expiring_subscription


class ExpiringSubscriptionParams(StrictModel):
    within: Duration = Field(timedelta(days=7), description="end_time at most this far ahead")
    lookback: Duration = Field(timedelta(days=7), description="GPU utilisation window")
    min_util: float | None = Field(
        None, ge=0, le=100, description="match only if average GPU util is at least this (used)"
    )
    max_util: float | None = Field(
        None, ge=0, le=100, description="match only if average GPU util is below this (idle)"
    )


@conditions.register(
    "expiring_subscription",
    ExpiringSubscriptionParams,
    resources=("instance",),
    needs=("instances", "metrics"),
)
def expiring_subscription(
    params: ExpiringSubscriptionParams, ctx: EvalContext, resource: Resource
) -> Result:
    """A monthly (subscription) instance whose ``end_time`` is within ``within``, with its
    average GPU utilisation over ``lookback``: ``min_util`` says "renew, it is used",
    ``max_util`` says "let it lapse". Time not sampled while the instance was not running
    counts as 0 % (a stopped subscription is not used)."""
    inst = _instance(resource)
    if inst.billing_mode != "monthly" or inst.end_time is None:
        return Result(False)
    left = inst.end_time - ctx.now
    values: dict[str, object] = {
        "kind": "expiring_subscription",
        "auto_renew": inst.auto_renew,
        "end_time": _iso(inst.end_time),
        "days_left": round(left.total_seconds() / 86400, 1),
        "hours_left": round(left.total_seconds() / HOUR, 1),
        "monthly_price_usd": money(inst.monthly_price_usd),
    }
    if left <= timedelta(0) or left > params.within:
        return Result(False, values)
    if params.min_util is None and params.max_util is None:
        return Result(True, values)
    start = ctx.now - params.lookback
    # the lookback starts no earlier than the stored metrics: an unwatched day is not an idle one
    history = ctx.facts.metrics_start(ctx.account)
    if history is not None and history > start:
        start = history
    span = (ctx.now - start).total_seconds()
    # the lookback is long and few instances expire: read the window for those only, all of
    # them in one query (the same id list for every instance of the account, so it is cached)
    expiring = ctx.facts.memo(
        ("expiring", ctx.account, params.within),
        lambda: frozenset(
            i.id
            for i in ctx.facts.instances(ctx.account)
            if i.billing_mode == "monthly"
            and i.end_time is not None
            and timedelta(0) < i.end_time - ctx.now <= params.within
        ),
    )
    agg = ctx.facts.metric_window(ctx.account, "gpu_util", start, ctx.now, expiring).get(inst.id)
    if span <= 0 or (agg is None and inst.status == "running"):
        return Result(None, values)
    util = 0.0 if agg is None else agg.avg * min(1.0, agg.covered_s / span)
    values["util_avg"] = round(util, 1)
    values["unit"] = "%"
    values["lookback_days"] = round(span / 86400, 1)
    checks: list[bool | None] = []
    if params.min_util is not None:
        checks.append(util >= params.min_util)
        values["threshold"] = params.min_util
    if params.max_util is not None:
        checks.append(util < params.max_util)
        values["threshold"] = params.max_util
    values["value"] = values["util_avg"]
    return Result(and3(checks), values)


# --------------------------------------------------------------------------------------------
# failed_task


class FailedTaskParams(StrictModel):
    training_statuses: list[str] = Field(default_factory=lambda: ["FAILED", "CANCELED"])
    async_statuses: list[str] = Field(default_factory=lambda: ["TASK_STATUS_FAILED"])
    within: Duration | None = Field(
        timedelta(hours=24), description="tasks that ended longer ago are ignored; null = all"
    )
    error_state: bool = Field(True, description="instances the platform reports in error")
    stuck_after: Duration | None = Field(
        timedelta(minutes=30), description="instances in a transitional status this long"
    )
    stuck_statuses: list[str] = Field(default_factory=lambda: list(TRANSITIONAL))


@conditions.register(
    "failed_task",
    FailedTaskParams,
    resources=("task", "instance"),
    needs=("tasks", "instances"),
)
def failed_task(params: FailedTaskParams, ctx: EvalContext, resource: Resource) -> Result:
    """Task rules: training tasks FAILED/CANCELED and watched async tasks TASK_STATUS_FAILED
    (that ended within ``within``). Instance rules: instances in an error state, and instances
    stuck in a transitional status (pulling, creating, starting...) longer than
    ``stuck_after``, with what they cost meanwhile."""
    if isinstance(resource.obj, TaskFact):
        task = resource.obj
        wanted = params.training_statuses if task.kind == "training" else params.async_statuses
        values: dict[str, object] = {
            "kind": "failed_task",
            "status": task.status,
            "reason": task.reason,
            "task_kind": task.kind,
        }
        if task.status not in wanted:
            return Result(False, values)
        ended = task.finished_at or task.created_at
        if params.within is not None and ended is not None and ctx.now - ended > params.within:
            return Result(False, values)
        values["finished_at"] = _iso(ended)
        return Result(True, values)
    inst = _instance(resource)
    values = {
        "kind": "failed_instance",
        "status": inst.status,
        "cost_per_hour_usd": money(inst.hourly_cost_usd),
    }
    if params.error_state and inst.error_state:
        values["error"] = inst.error_state
        return Result(True, values)
    if params.stuck_after is None or inst.status not in params.stuck_statuses:
        return Result(False, values)
    if inst.status_since is None:
        return Result(None, values)
    stuck = ctx.now - inst.status_since
    values["stuck_minutes"] = values["value"] = round(stuck.total_seconds() / 60)
    values["threshold_minutes"] = values["threshold"] = params.stuck_after.total_seconds() / 60
    values["unit"] = "min"
    values["stuck_cost_usd"] = money(
        economics.cost_since(inst.hourly_cost_usd, inst.status_since, ctx.now)
    )
    return Result(stuck >= params.stuck_after, values)


# --------------------------------------------------------------------------------------------
# spend


class SpendParams(StrictModel):
    window: Duration = Field(timedelta(hours=24), description="the spend window ending now")
    above_usd: float | None = Field(None, ge=0, description="fire when spend exceeds this")
    baseline: Duration | None = Field(
        None, description="compare with the average per window over this period before it"
    )
    ratio: float = Field(1.5, gt=0, description="fire when spend > ratio x baseline average")
    min_usd: float = Field(0, ge=0, description="ignore baseline surges smaller than this")

    @model_validator(mode="after")
    def _something(self) -> SpendParams:
        if self.above_usd is None and self.baseline is None:
            raise ValueError("spend needs above_usd and/or baseline")
        if self.window <= timedelta(0):
            raise ValueError("window must be longer than 0")
        return self


@conditions.register("spend", SpendParams, resources=("account",), needs=("bills", "instances"))
def spend(params: SpendParams, ctx: EvalContext, resource: Resource) -> Result:
    """Spend over ``window`` above ``above_usd``, and/or above ``ratio`` times the average
    spend per window over the ``baseline`` period before it (e.g. the last 24 h against the
    daily average of the previous 7 days). Too little history is missing data, not zero."""
    start = ctx.now - params.window
    current = ctx.facts.spend(ctx.account, start, ctx.now)
    values: dict[str, object] = {
        "kind": "spend",
        "window_hours": params.window.total_seconds() / HOUR,
    }
    if current is None:
        return Result(None, values)
    values["spend_usd"] = values["value"] = money(current)
    values["unit"] = "$"
    checks: list[bool | None] = []
    if params.above_usd is not None:
        values["threshold_usd"] = params.above_usd
        checks.append(float(current) > params.above_usd)
    if params.baseline is not None:
        base = ctx.facts.spend(ctx.account, start - params.baseline, start)
        average = economics.average_per_window(base, params.baseline, params.window)
        values["baseline_days"] = round(params.baseline.total_seconds() / 86400, 1)
        if average is None:
            checks.append(None)
        else:
            values["baseline_usd"] = money(average)
            values["ratio"] = round(float(current / average), 2) if average > 0 else None
            values["threshold_ratio"] = params.ratio
            checks.append(
                float(current) >= params.min_usd and float(current) > params.ratio * float(average)
            )
    return Result(or3(checks), values)


# --------------------------------------------------------------------------------------------
# subscription_candidate


class SubscriptionCandidateParams(StrictModel):
    margin: float = Field(0.15, ge=0, description="required excess over break-even hours")
    lookbacks: list[Duration] = Field(
        default_factory=lambda: list(economics.ADVICE_LOOKBACKS),
        description="every lookback must exceed break-even (size for steady use)",
    )
    min_history: Duration = Field(timedelta(days=7), description="no advice with less history")


@conditions.register(
    "subscription_candidate",
    SubscriptionCandidateParams,
    resources=("instance",),
    needs=("instances", "products"),
)
def subscription_candidate(
    params: SubscriptionCandidateParams, ctx: EvalContext, resource: Resource
) -> Result:
    """An on-demand instance whose running hours, scaled to a month, exceed the break-even
    against the monthly price (``monthly_price / hourly_price`` hours) by ``margin`` over every
    lookback (7 and 30 days by default; a lookback reaching before the stored history is cut
    to it). Reports the expected monthly saving."""
    inst = _instance(resource)
    if inst.billing_mode != "onDemand":
        return Result(False)
    price, monthly = inst.hourly_cost_usd, inst.monthly_price_usd
    break_even = economics.break_even_hours(monthly, price)
    if break_even is None:
        return Result(None)
    values: dict[str, object] = {
        "kind": "subscription_candidate",
        "hourly_cost_usd": money(price),
        "monthly_price_usd": money(monthly),
        "break_even_hours": round(break_even, 1),
        "threshold": round(break_even * (1 + params.margin), 1),
    }
    history = ctx.facts.history_start(ctx.account)
    if history is None or ctx.now - history < params.min_history:
        return Result(None, values)

    def hours_in(start: datetime, end: datetime) -> float | None:
        hours = ctx.facts.running_hours(ctx.account, start, end)
        return None if hours is None else hours.get(inst.id, 0.0)

    # windows end where the usage bills reach (the last complete hour), not at now
    covered = ctx.facts.usage_covered_until(ctx.account)
    end = ctx.now if covered is None else min(covered, ctx.now)
    steady, by_days = economics.steady_hours_per_month(hours_in, end, history, params.lookbacks)
    for days, scaled in by_days.items():
        values[f"hours_per_month_{days}d"] = round(scaled, 1)
    if steady is None:
        return Result(None, values)  # unknown hours never make advice
    values["value"] = round(steady, 1)
    values["unit"] = "h"
    values["utilization"] = round(steady / economics.MONTH_HOURS, 3)
    values["monthly_saving_usd"] = money(economics.monthly_saving(price, steady, monthly))
    return Result(steady >= break_even * (1 + params.margin), values)


# --------------------------------------------------------------------------------------------
# collector_stale


class CollectorStaleParams(StrictModel):
    collectors: list[str] | None = Field(
        None, description="only these collectors (instances, metrics, balance, bills, tasks)"
    )


@conditions.register(
    "collector_stale", CollectorStaleParams, resources=("monitor", "account"), needs=()
)
def collector_stale(params: CollectorStaleParams, ctx: EvalContext, resource: Resource) -> Result:
    """The monitor cannot see (part of) the account: some collector's data is stale."""
    stale = ctx.facts.stale_collectors(ctx.account, ctx.now)
    if params.collectors is not None:
        stale = [c for c in stale if c in params.collectors]
    return Result(
        bool(stale),
        {"kind": "collector_stale", "collectors": ", ".join(sorted(stale)), "value": len(stale)},
    )


# --------------------------------------------------------------------------------------------
# stopped_data_expiring


class StoppedDataExpiringParams(StrictModel):
    within: Duration = Field(
        timedelta(days=2), description="warn when the data is deleted at most this far ahead"
    )


@conditions.register(
    "stopped_data_expiring",
    StoppedDataExpiringParams,
    resources=("instance",),
    needs=("instances",),
)
def stopped_data_expiring(
    params: StoppedDataExpiringParams, ctx: EvalContext, resource: Resource
) -> Result:
    """A stopped (``exited``) instance whose local data the platform deletes within
    ``within``: ``keepDataDay`` days after the stop. When the stop itself was not seen (the
    instance was already stopped when first collected), the earliest possible stop is used
    (its last start), so the warning comes early rather than late."""
    inst = _instance(resource)
    if inst.status != "exited":
        return Result(False)
    values: dict[str, object] = {
        "kind": "stopped_data_expiring",
        "keep_data_day": inst.keep_data_day,
        "status": inst.status,
    }
    seen = inst.status_since is not None and (
        inst.first_seen is None or inst.status_since > inst.first_seen
    )
    stopped = inst.status_since if seen else (inst.last_started_at or inst.created_at)
    expires = economics.data_expires_at(stopped, inst.keep_data_day)
    if expires is None:
        return Result(None, values)
    left = expires - ctx.now
    values["stopped_at"] = _iso(stopped)
    values["stopped_at_estimated"] = not seen
    values["data_expires_at"] = _iso(expires)
    values["days_left"] = round(left.total_seconds() / 86400, 1)
    values["hours_left"] = round(left.total_seconds() / HOUR, 1)
    return Result(left <= params.within, values)
