"""A seeded, clock-driven model of a Novita GPU account (instances, balance, bills, tasks).

State is small: per instance only its run intervals, billing span and a few fields. Metric values
are pure functions of (seed, instance, profile, time) (see :mod:`monitor.sim.profiles`), usage
bills are computed per period on demand from the run intervals and the product prices, and the
balance is ``initial - usage charges up to now - fixed-term charges (purchases, renewals,
conversions)``. Usage is debited continuously (to the second); usage bills are issued for
completed hours only.

Actions behave as on the platform (wire-format §2.10, §7), as far as the sources tell:

* transitions take time: ``stop``: ``toStop`` -> ``stopping`` after 30 s -> ``exited`` after
  60 s (billing ends at ``exited``); ``start``: ``toStart`` -> ``starting`` after 10 s ->
  ``running`` after 30 s; ``restart`` and ``delete`` likewise (:data:`STOP_STEPS` ...). They
  are scheduled at simulated times and applied lazily whenever the model is read, so jumping
  the clock applies them at the right moments. A stop may be made never to complete (fault
  switch ``stuck_stop``, :mod:`monitor.sim.faults`): the instance stays ``stopping`` and
  keeps billing.
* ``renewInstance {instanceId, month}`` moves ``endTime`` on by ``month`` calendar months and
  charges a fixed-term bill for that period (``tradeType`` ``monthly_re_buy``, ``startTime``
  the old ``endTime``); ``transToMonthlyInstance`` makes a pay-as-you-go instance ``monthly``
  with ``endTime`` = now + ``month`` months and a ``monthly_new_buy`` bill; ``setAutoRenew``
  sets ``autoRenew``/``autoRenewMonth``. ``month`` must be a count the product lists in its
  ``monthlyPrice`` (:data:`monitor.sim.catalog.MONTHLY_DISCOUNT`: 1, 3, 6, 12), else 400
  ``VALIDATOR_PARAM``; a renew or convert the balance cannot pay is 400
  ``BALANCE_NOT_ENOUGH`` and charges nothing.
* An auto-renewed subscription is charged 3 days before its ``endTime`` (the console's words,
  wire-format §7.4), or, when the balance was short then, at ``endTime``; when that charge
  fails too, it falls back to pay-as-you-go ("switch to pay-as-you-go if payment fails"):
  ``billingMode`` becomes ``onDemand``, ``endTime`` ``"-1"``, and its running hours are billed
  by usage from the old ``endTime`` on. A subscription without auto-renew stops (``exited``)
  at ``endTime`` and cannot be started again until renewed (``EXPIRED_OR_BALANCE_NOT_ENOUGH``).
* A stop of a ``monthly`` instance (the reading taken here; no source says otherwise): the
  platform accepts it and the instance goes to ``exited`` as any other, but the prepaid term
  runs on: ``endTime`` does not move, nothing is refunded or saved, it may be started again
  until ``endTime``, and its auto-renewal is still charged (the subscription, not the
  container, is what renews; the costlier reading, so a monitor assuming the opposite is
  caught out). At ``endTime`` without renewal it lapses (stays ``exited``).

Scenario ``demo`` (ids are fixed; other tests rely on them; ``T`` is the clock's time at start):

==================== ===== ================================================ ==========================
id                   GPUs  what it shows                                    billing / status
==================== ===== ================================================ ==========================
demo-trainer         2     busy trainer, short data-loading dips            onDemand, running 3.5 h
demo-inference       1     bursty inference server                          onDemand, running 30 h
demo-notebook        1     forgotten idle notebook, GPU ~1 %                onDemand, running 5 h
demo-multigpu        8     GPUs 0-5 busy, GPUs 6 and 7 idle                 spot, running 10 h
demo-subscription    1     used subscription, endTime T+3 days              monthly, running
demo-lapsing         1     idle subscription, endTime T+2 days              monthly, running
demo-allmonth        1     busy, running continuously for 40 days           onDemand (subscription
                                                                            candidate)
demo-stuck           1     stuck in ``pulling`` since T-45 min              onDemand, pulling
demo-error           1     running with a ``statusError``, GPU idle         onDemand, running 2 h
demo-stopped         1     ran T-3 d .. T-2 d                               onDemand, exited, endTime "0"
demo-pending         1     undocumented ``pending`` status                  billingMode "", endTime "0"
==================== ===== ================================================ ==========================

The balance is set so that the runway at the current burn rate is 40 hours. Training tasks: 23,
including ``FAILED`` and ``CANCELED`` ones. Async tasks: ``async-ok`` (``TASK_STATUS_SUCCEED``),
``async-fail`` (``TASK_STATUS_FAILED``), ``async-slow`` (``TASK_STATUS_PROCESSING`` until T+10 min,
then succeeds).

Scenario ``fleet``: ``instances`` generated instances ``fleet-00000``.. from the seed, a mix of
the profiles above, mostly running; balance set for a 100-hour runway.
"""

from __future__ import annotations

import bisect
import calendar
import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitor.clock import Clock
from monitor.sim import catalog
from monitor.sim.profiles import PROFILES, key_of
from monitor.sim.quirks import Quirks

HOUR = 3600
DAY = 86400

USER_ID = "sim-user-0001"

STOP_STEPS = ((0, "toStop", None), (30, "stopping", None), (60, "exited", "close"))
#: a stop that never completes (fault switch ``stuck_stop``): it stays ``stopping``
STUCK_STOP_STEPS = STOP_STEPS[:-1]
START_STEPS = ((0, "toStart", None), (10, "starting", None), (30, "running", "open"))
RESTART_STEPS = ((0, "toRestart", None), (10, "restarting", None), (30, "running", None))
DELETE_STEPS = ((0, "toRemove", "close"), (10, "removing", None), (30, "removed", None))

#: an auto-renewed subscription is charged this long before its endTime (the console: "auto-charge
#: 3 days before expiry", wire-format §7.4); if that charge fails, once more at endTime
RENEW_LEAD = 3 * DAY

STOPPABLE = {"running", "pulling", "pending", "creating", "toStart", "starting", "restarting"}


def error_body(status: int, reason: str, message: str) -> dict[str, Any]:
    """The go-kratos error envelope the API answers errors with (wire-format §1.6)."""
    return {"code": status, "reason": reason, "message": message, "metadata": {}}


class SimError(Exception):
    """A business error the API answers with the ``{code, reason, message, metadata}`` envelope."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class SimInstance:
    id: str
    name: str
    cluster_id: str
    product_id: str
    gpu_num: int
    billing_mode: str  # "onDemand" | "monthly" | "spot" | ""
    status: str
    created_at: int
    profiles: list[tuple[int, str]]  # (since, profile), ascending
    runs: list[list[int | None]] = field(default_factory=list)  # [start, end or None]
    end_time: int | None = None  # subscription expiry (Unix s)
    no_expiry: str = "-1"  # how endTime reads without expiry: "-1" or "0" (both occur)
    status_error: tuple[str, str] = ("", "")
    idle_gpus: frozenset[int] = frozenset()
    #: ``[start, end)`` spans whose metric samples are never published (a monitoring outage)
    metric_outages: tuple[tuple[int, int], ...] = ()
    paygo_from: int = 0
    paygo_until: int | None = None
    #: earlier, closed pay-as-you-go spans ``(from, until)`` (an instance converted to a
    #: subscription that later fell back to pay-as-you-go has two)
    paygo_past: list[tuple[int, int]] = field(default_factory=list)
    #: the subscription ran out without renewal (it stays ``monthly`` with its old ``endTime``)
    lapsed: bool = False
    auto_renew: bool = False
    auto_renew_month: int = 1
    auto_renew_from: int = 0  # when auto-renew was last switched on
    renew_tried: int | None = None  # the endTime whose early renewal charge was attempted
    last_stopped_at: int | None = None
    transitions: list[tuple[int, str, str | None]] = field(default_factory=list)
    image_url: str = "nvcr.io/nvidia/pytorch:24.05-py3"
    keep_data_day: int = 7
    #: quirk ``price-basis=per-instance``: the listed price is for the whole instance
    per_instance_price: bool = False
    #: environment variables beyond the default ``PYTHONUNBUFFERED=1`` (``/_sim/instances``)
    envs: dict[str, str] = field(default_factory=dict)

    @property
    def product(self) -> catalog.GpuProduct:
        return catalog.gpu_product(self.product_id)

    @property
    def cpu_num(self) -> int:
        return self.product.cpu_per_gpu * self.gpu_num

    @property
    def memory(self) -> int:
        return self.product.memory_per_gpu * self.gpu_num

    @property
    def last_started_at(self) -> int | None:
        return self.runs[-1][0] if self.runs else None

    def profile_at(self, t: int) -> str:
        # the last change at or before t (a bisection: a backtest's trace has hundreds)
        at = bisect.bisect_right(self.profiles, (t, "\uffff"))
        return self.profiles[max(at - 1, 0)][1]

    def metrics_missing_at(self, t: int) -> bool:
        """Inside a metrics outage: the API never publishes samples for ``t``."""
        return any(a <= t < b for a, b in self.metric_outages)

    @property
    def price_units(self) -> int:
        """How many times the listed price is charged: the GPU count, or 1 when the price is
        for the whole instance (quirk ``price-basis=per-instance``)."""
        return 1 if self.per_instance_price else self.gpu_num

    def price_per_gpu_hour(self) -> int:
        """The listed hourly price (1/100000 USD) at which this instance's usage is billed: per
        GPU, or per instance under ``price-basis=per-instance``."""
        if self.billing_mode == "spot":
            return catalog.spot_price(self.product_id, self.cluster_id)
        return catalog.hourly_price(self.product_id, self.cluster_id)

    def rate_10k_per_hour(self) -> float:
        """Usage cost per running hour in 1/10000 USD (charged only inside the pay-as-you-go span)."""
        return self.price_per_gpu_hour() * self.price_units / 10

    def run_seconds(self, a: int, b: int, now: int) -> int:
        """Seconds in [a, b) during which the instance ran, whatever its billing."""
        total = 0
        for start, end in self.runs:
            assert start is not None
            s = max(a, start)
            e = min(b, now, now if end is None else end)
            if e > s:
                total += e - s
        return total

    def paygo_seconds(self, a: int, b: int, now: int) -> int:
        """Seconds in [a, b) during which the instance ran and was billed by usage."""
        spans: list[tuple[int, int | None]] = [
            *self.paygo_past,
            (self.paygo_from, self.paygo_until),
        ]
        total = 0
        for span_from, span_until in spans:
            lo = max(a, span_from)
            hi = min(b, now if span_until is None else span_until)
            if hi <= lo:
                continue
            for start, end in self.runs:
                assert start is not None
                s = max(lo, start)
                e = min(hi, now if end is None else end)
                if e > s:
                    total += e - s
        return total

    def running_at(self, t: int, now: int) -> bool:
        for start, end in self.runs:
            assert start is not None
            if start <= t < (now + 1 if end is None else end):
                return True
        return False


@dataclass(slots=True)
class FixedCharge:
    """A subscription purchase, renewal or conversion (a fixed-term bill and a balance debit)."""

    time: int
    instance_id: str
    product_id: str
    cluster_id: str
    trade_type: str  # monthly_new_buy | monthly_re_buy
    start: int
    end: int
    months: int
    amount_10k: int
    base_price_10k: int


def add_months(ts: int, months: int) -> int:
    """Add calendar months to a Unix time (day clamped to the month's length)."""
    d = datetime.fromtimestamp(ts, UTC)
    month0 = d.month - 1 + months
    year, month = d.year + month0 // 12, month0 % 12 + 1
    day = min(d.day, calendar.monthrange(year, month)[1])
    return int(d.replace(year=year, month=month, day=day).timestamp())


class FleetSim:
    """The account model behind the simulated API. Thread-safe; all times come from ``clock``."""

    def __init__(
        self,
        clock: Clock,
        scenario: str = "demo",
        instances: int = 0,
        seed: int = 0,
        history_hours: int = 24,
        quirks: Quirks | Mapping[str, Any] | Iterable[str] | None = None,
    ) -> None:
        """``quirks``: the positions of the switches of :mod:`monitor.sim.quirks` (a
        :class:`Quirks`, a ``{"bill-time": "hours"}`` mapping or ``KEY=VALUE`` strings)."""
        self.quirks = Quirks.of(quirks)
        if scenario not in ("demo", "fleet"):
            raise ValueError(f"unknown scenario {scenario!r}; valid: demo, fleet")
        self.clock = clock
        self.scenario = scenario
        self.seed = seed
        self.history_hours = max(24, history_hours)
        self._lock = threading.RLock()
        self._instances: dict[str, SimInstance] = {}
        self._keys: dict[str, int] = {}
        self._pending: set[str] = set()
        #: the time everything due was last applied; actions and top-ups reset it
        self._settled_at: int | None = None
        self._fixed: list[FixedCharge] = []
        self._initial_10k = 0.0
        self.actions: list[dict[str, Any]] = []
        self.training_tasks: list[dict[str, Any]] = []
        self.async_tasks: dict[str, dict[str, Any]] = {}
        self.t0 = self.now_ts()
        if scenario == "demo":
            self._build_demo()
            runway_hours = 40.0
        else:
            self._build_fleet(instances)
            runway_hours = 100.0
        self._build_tasks()
        burn = self.burn_10k_per_hour()
        self._initial_10k = self._charged_10k(self.t0) + runway_hours * burn

    # ------------------------------------------------------------------ time and lookup

    def now_ts(self) -> int:
        return int(self.clock.now().timestamp())

    def key(self, instance_id: str) -> int:
        return self._keys[instance_id]

    def instances(self) -> list[SimInstance]:
        """Visible instances (removed ones disappear), in creation order; settles first."""
        with self._lock:
            self.settle()
            return [i for i in self._instances.values() if i.status != "removed"]

    def all_instances(self) -> list[SimInstance]:
        """Every instance ever created, removed ones included (their bills remain)."""
        with self._lock:
            self.settle()
            return list(self._instances.values())

    def instance(self, instance_id: str) -> SimInstance:
        with self._lock:
            self.settle()
            inst = self._instances.get(instance_id)
            if inst is None or inst.status == "removed":
                raise SimError(400, "RESOURCE_NOT_FOUND", f"instance {instance_id!r} not found")
            return inst

    # ------------------------------------------------------------------ building

    def _add(self, inst: SimInstance) -> SimInstance:
        inst.per_instance_price = self.quirks.per_instance_price
        self._instances[inst.id] = inst
        self._keys[inst.id] = key_of(self.seed, inst.id)
        return inst

    def add_built(self, inst: SimInstance, subscription_end: int | None = None) -> SimInstance:
        """Add an instance built elsewhere (the backtest's scenarios, :mod:`monitor.sim.scenarios`);
        with ``subscription_end``, a 1-month subscription bought a month before it."""
        with self._lock:
            self._add(inst)
            if subscription_end is not None:
                self._subscription(inst, subscription_end)
            self._settled_at = None
            return inst

    def _subscription(
        self, inst: SimInstance, end_time: int, months: int = 1, buy_time: int | None = None
    ) -> None:
        start = add_months(end_time, -months)
        inst.end_time = end_time
        inst.paygo_from = inst.paygo_until = start
        self._charge_fixed(inst, buy_time or start, start, end_time, months, "monthly_new_buy")
        self._pending.add(inst.id)  # watched for expiry

    def _build_demo(self) -> None:
        t = self.t0
        hour_t = t - t % HOUR

        def mk(iid: str, gpus: int, product: str, mode: str, status: str, since: int, **kw: Any):
            profile = kw.pop("profile", "trainer")
            running = status == "running"
            runs: list[list[int | None]] = [[since, None]] if running else []
            return self._add(
                SimInstance(
                    id=iid,
                    name=kw.pop("name", iid.removeprefix("demo-")),
                    cluster_id=kw.pop("cluster", "1"),
                    product_id=product,
                    gpu_num=gpus,
                    billing_mode=mode,
                    status=status,
                    created_at=kw.pop("created", since),
                    profiles=[(0, profile)],
                    runs=runs,
                    paygo_from=since,
                    **kw,
                )
            )

        mk("demo-trainer", 2, "4090.16c62g", "onDemand", "running", t - int(3.5 * HOUR))
        mk(
            "demo-inference",
            1,
            "l40s.16c62g",
            "onDemand",
            "running",
            t - 30 * HOUR,
            profile="inference",
            cluster="2",
        )
        mk(
            "demo-notebook",
            1,
            "4090.16c62g",
            "onDemand",
            "running",
            t - 5 * HOUR,
            profile="idle",
            name="jupyter-notebook",
        )
        mk(
            "demo-multigpu",
            8,
            "a100.16c100g",
            "spot",
            "running",
            t - 10 * HOUR,
            profile="partial",
            idle_gpus=frozenset({6, 7}),
        )
        sub_end = hour_t + 3 * DAY
        sub = mk(
            "demo-subscription", 1, "h100.16c200g", "monthly", "running", add_months(sub_end, -1)
        )
        self._subscription(sub, sub_end)
        lapse_end = hour_t + 2 * DAY
        lapsing = mk(
            "demo-lapsing",
            1,
            "4090.16c62g",
            "monthly",
            "running",
            add_months(lapse_end, -1),
            profile="idle",
            cluster="3",
        )
        self._subscription(lapsing, lapse_end)
        mk("demo-allmonth", 1, "4090.16c62g", "onDemand", "running", t - 40 * DAY)
        mk(
            "demo-stuck",
            1,
            "3090.16c62g",
            "onDemand",
            "pulling",
            t - 45 * 60,
            image_url="registry.example.com/team/huge-image:latest",
        )
        mk(
            "demo-error",
            1,
            "4090.16c62g",
            "onDemand",
            "running",
            t - 2 * HOUR,
            profile="idle",
            status_error=("error", "container exited with code 137 (OOMKilled); restarting"),
        )
        stopped = mk(
            "demo-stopped", 1, "3090.16c62g", "onDemand", "exited", t - 3 * DAY, no_expiry="0"
        )
        stopped.runs = [[t - 3 * DAY, t - 2 * DAY]]
        stopped.last_stopped_at = t - 2 * DAY
        mk("demo-pending", 1, "4090.16c62g", "", "pending", t - 10 * 60, no_expiry="0")

    def _build_fleet(self, n: int) -> None:
        rng = random.Random(self.seed)
        t = self.t0
        span = self.history_hours * HOUR
        kinds = [
            ("trainer", 50),
            ("inference", 15),
            ("idle", 10),
            ("partial", 8),
            ("subscription", 6),
            ("exited", 4),
            ("pulling", 2),
            ("error", 2),
            ("pending", 1),
            ("stuck-long", 2),
        ]
        names = [k for k, _ in kinds]
        weights = [w for _, w in kinds]
        for idx in range(n):
            kind = rng.choices(names, weights)[0]
            product = rng.choice(catalog.GPU_PRODUCTS).id
            cluster_id = rng.choice(catalog.CLUSTERS).id
            gpus = rng.choice((1, 1, 1, 2, 2, 4, 8))
            since = t - rng.randint(HOUR // 2, span + 2 * DAY)
            profile = kind if kind in PROFILES else rng.choice(("trainer", "inference", "idle"))
            mode = rng.choices(("onDemand", "spot"), (85, 15))[0]
            status = "running"
            idle: frozenset[int] = frozenset()
            if kind == "partial":
                gpus = rng.choice((4, 8))
                idle = frozenset(range(gpus - rng.randint(1, gpus // 2), gpus))
            inst = SimInstance(
                id=f"fleet-{idx:05d}",
                name=f"{profile}-{idx}",
                cluster_id=cluster_id,
                product_id=product,
                gpu_num=gpus,
                billing_mode=mode,
                status=status,
                created_at=since,
                profiles=[(0, profile)],
                runs=[[since, None]],
                paygo_from=since,
                idle_gpus=idle,
            )
            if kind == "subscription":
                inst.billing_mode = "monthly"
                end = t - t % HOUR + rng.randint(1, 27) * DAY  # bought 1 month before
                inst.runs = [[add_months(end, -1), None]]
                inst.created_at = add_months(end, -1)
                self._add(inst)
                self._subscription(inst, end)
                continue
            if kind == "exited":
                inst.status = "exited"
                inst.no_expiry = rng.choice(("-1", "0"))
                stop = rng.randint(since + 60, t - 60) if since + 60 < t - 60 else since + 60
                inst.runs = [[since, stop]]
                inst.last_stopped_at = stop
            elif kind in ("pulling", "stuck-long"):
                inst.status = "pulling"
                inst.runs = []
                inst.created_at = t - rng.randint(60, 3 * HOUR if kind == "pulling" else 9 * HOUR)
            elif kind == "pending":
                inst.status, inst.billing_mode, inst.no_expiry, inst.runs = "pending", "", "0", []
            elif kind == "error":
                inst.status_error = ("error", "health check failed: CUDA error: device-side assert")
            self._add(inst)

    def _build_tasks(self) -> None:
        rng = random.Random(self.seed + 7)
        statuses = ["SUCCESS"] * 14 + ["FAILED", "CANCELED", "TRAINING", "TRAINING", "QUEUING"]
        statuses += ["FAILED", "SUCCESS", "CANCELED", "UNKNOWN"]
        count = 23 if self.scenario == "demo" else 60
        for i in range(count):
            status = statuses[i % len(statuses)]
            created = self.t0 - (count - i) * 5 * HOUR - rng.randint(0, HOUR)
            models = []
            if status == "SUCCESS":
                models = [{"model_name": f"lora-{i:03d}.safetensors", "model_status": "SERVING"}]
            self.training_tasks.append(
                {
                    "task_name": f"train-{i:03d}",
                    "task_id": f"train-task-{i:03d}",
                    "task_type": "subject" if i % 3 else "style",
                    "task_status": status,
                    "created_at": created,
                    "models": models,
                }
            )
        self.async_tasks = {
            "async-ok": {"status": "TASK_STATUS_SUCCEED", "reason": "", "done_at": self.t0 - 60},
            "async-fail": {
                "status": "TASK_STATUS_FAILED",
                "reason": "image generation failed: invalid model",
                "done_at": self.t0 - 30,
            },
            "async-slow": {"status": "TASK_STATUS_SUCCEED", "reason": "", "done_at": self.t0 + 600},
        }

    # ------------------------------------------------------------------ money

    def _charge_fixed(
        self, inst: SimInstance, when: int, start: int, end: int, months: int, trade: str
    ) -> FixedCharge:
        listed = catalog.monthly_price(inst.product_id, inst.cluster_id, months)
        amount = listed * inst.price_units // 10
        charge = FixedCharge(
            time=when,
            instance_id=inst.id,
            product_id=inst.product_id,
            cluster_id=inst.cluster_id,
            trade_type=trade,
            start=start,
            end=end,
            months=months,
            amount_10k=amount,
            # the unit price: one month of one GPU (of the instance, price-basis=per-instance)
            base_price_10k=catalog.monthly_price(inst.product_id, inst.cluster_id, 1) // 10,
        )
        self._fixed.append(charge)
        return charge

    def _charged_10k(self, now: int) -> float:
        usage = sum(
            i.rate_10k_per_hour() * i.paygo_seconds(-(2**62), now, now) / HOUR
            for i in self._instances.values()
        )
        fixed = sum(c.amount_10k for c in self._fixed if c.time <= now)
        return usage + fixed

    def balance_10k(self) -> int:
        """Available balance, 1/10000 USD."""
        with self._lock:
            self.settle()
            return round(self._initial_10k - self._charged_10k(self.now_ts()))

    def burn_10k_per_hour(self) -> float:
        """Current usage cost per hour of everything running on pay-as-you-go, 1/10000 USD."""
        with self._lock:
            return sum(
                i.rate_10k_per_hour()
                for i in self.instances()
                if i.runs and i.runs[-1][1] is None and i.paygo_until is None
            )

    def fixed_charges(self) -> list[FixedCharge]:
        with self._lock:
            self.settle()
            now = self.now_ts()
            return [c for c in self._fixed if c.time <= now]

    # ------------------------------------------------------------------ lazy state changes

    def settle(self) -> None:
        """Apply every scheduled status change and subscription expiry due by now."""
        with self._lock:
            now = self.now_ts()
            if now == self._settled_at:  # every request of a cycle asks at the same instant
                return
            for iid in list(self._pending):
                inst = self._instances[iid]
                self._apply_due(inst, now)
                if not inst.transitions and not self._active_subscription(inst):
                    self._pending.discard(iid)
            self._settled_at = now

    def renewal_due(self, inst: SimInstance) -> int | None:
        """When the model will next try to charge an auto-renewal of ``inst``: 3 days before
        its ``endTime`` (not before auto-renew was switched on), or at ``endTime`` when that
        early charge failed; None without an active auto-renewed subscription."""
        if not self._active_subscription(inst) or not inst.auto_renew:
            return None
        assert inst.end_time is not None
        if inst.renew_tried == inst.end_time:
            return inst.end_time
        return max(inst.end_time - RENEW_LEAD, inst.auto_renew_from)

    @staticmethod
    def _active_subscription(inst: SimInstance) -> bool:
        """A subscription whose term has not lapsed, running or stopped (a stopped one's
        prepaid term runs on, and its auto-renewal is still charged)."""
        return (
            inst.billing_mode == "monthly"
            and inst.end_time is not None
            and not inst.lapsed
            and inst.status != "removed"
        )

    def _apply_due(self, inst: SimInstance, now: int) -> None:
        while True:
            expiry = inst.end_time if self._active_subscription(inst) else None
            renew_at = self.renewal_due(inst)
            step_at = inst.transitions[0][0] if inst.transitions else None
            candidates = [x for x in (expiry, renew_at, step_at) if x is not None and x <= now]
            if not candidates:
                return
            at = min(candidates)
            if step_at is not None and step_at == at:
                _, status, effect = inst.transitions.pop(0)
                self._set_status(inst, status, effect, at)
                continue
            assert inst.end_time is not None
            if renew_at == at:  # early (or, that failed, at expiry): renew if the money is there
                inst.renew_tried = inst.end_time
                if self._balance_at(at) >= self._renew_cost(inst, inst.auto_renew_month):
                    self._renew(inst, inst.auto_renew_month, at)
                    continue
                if at < inst.end_time:
                    continue
                self._fall_back_to_paygo(inst, at)
                continue
            inst.lapsed = True
            inst.transitions.clear()
            self._set_status(inst, "exited", "close", at)

    def _fall_back_to_paygo(self, inst: SimInstance, at: int) -> None:
        """An auto-renewal that could not be paid, at ``endTime``: the console's "switch to
        pay-as-you-go if payment fails" (wire-format §7.4). The instance keeps its status;
        from ``at`` on its running hours are billed by usage."""
        inst.paygo_past.append((inst.paygo_from, inst.paygo_until or inst.paygo_from))
        inst.paygo_from, inst.paygo_until = at, None
        inst.billing_mode = "onDemand"
        inst.end_time = None
        inst.no_expiry = "-1"
        inst.auto_renew = False
        inst.renew_tried = None

    def _balance_at(self, t: int) -> float:
        return self._initial_10k - self._charged_10k(t)

    def _set_status(self, inst: SimInstance, status: str, effect: str | None, at: int) -> None:
        inst.status = status
        if effect == "open" and not (inst.runs and inst.runs[-1][1] is None):
            inst.runs.append([at, None])
            inst.status_error = ("", "")
        elif effect == "close" and inst.runs and inst.runs[-1][1] is None:
            inst.runs[-1][1] = at
            inst.last_stopped_at = at

    def _schedule(self, inst: SimInstance, steps: tuple[tuple[int, str, str | None], ...]) -> None:
        now = self.now_ts()
        inst.transitions = [(now + offset, status, effect) for offset, status, effect in steps]
        self._pending.add(inst.id)
        self._apply_due(inst, now)

    # ------------------------------------------------------------------ actions

    def action_entry(self, action: str, body: Any) -> dict[str, Any]:
        """A new entry of the action log (``GET /_sim/actions``), not yet logged: ``time``
        (the simulated clock, ISO 8601), ``path`` (the action's name, e.g. ``renewInstance``),
        ``body`` (the request's JSON), and, once answered, ``status`` (HTTP), ``answer`` (the
        JSON body sent back), ``result`` (``"ok"`` or the error's ``reason``), ``message``,
        ``performed`` (whether the model carried it out), ``fault`` (the fault switch that
        shaped the answer, if any), ``answered`` (false until the answer was sent: an answer
        held back by ``action_delay`` or ``timeout_rate`` is in ``status``/``answer`` already)."""
        return {
            "answered": False,
            "time": self.clock.now().isoformat(),
            "path": action,
            "body": body,
            "status": None,
            "answer": None,
            "result": None,
            "message": "",
            "performed": False,
            "fault": None,
        }

    def log_action(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.actions.append(entry)

    def perform(
        self,
        action: str,
        body: Any,
        *,
        stuck: bool = False,
        entry: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run one POST action and return the response body (``{}`` on success); a business
        error raises :class:`SimError`. Logs it (see :meth:`action_entry`) unless the caller
        passes its own ``entry`` to fill in (the HTTP app logs every action it receives, those
        refused before reaching the model too). ``stuck``: a stop that never completes."""
        with self._lock:
            self.settle()
            own = entry is None
            if entry is None:
                entry = self.action_entry(action, body)
            try:
                handler = getattr(self, f"_act_{action}", None)
                if handler is None:
                    raise SimError(404, "API_NOT_FOUND", f"unknown action {action!r}")
                if not isinstance(body, dict):
                    raise SimError(400, "INVALID_REQUEST_BODY", "body must be a JSON object")
                result: dict[str, Any] = (
                    self._act_stop(body, stuck=True)
                    if stuck and action == "stop"
                    else handler(body)
                )
            except SimError as exc:
                self._settled_at = None
                entry.update(
                    status=exc.status,
                    result=exc.reason,
                    message=exc.message,
                    answer=error_body(exc.status, exc.reason, exc.message),
                )
                if own:
                    self.log_action(entry)
                raise
            self._settled_at = None  # the action may have scheduled changes
            entry.update(status=200, result="ok", answer=result, performed=True)
            if own:
                self.log_action(entry)
            return result

    def _target(self, body: dict[str, Any]) -> SimInstance:
        iid = body.get("instanceId")
        if not isinstance(iid, str) or not iid:
            raise SimError(400, "VALIDATOR_PARAM", "instanceId is required")
        return self.instance(iid)

    @staticmethod
    def _months(body: dict[str, Any], name: str = "month") -> int:
        """A month count the products list in ``monthlyPrice`` (wire-format §7.8), else 400
        ``VALIDATOR_PARAM`` naming the counts offered."""
        month = body.get(name)
        offered = sorted(catalog.MONTHLY_DISCOUNT)
        if isinstance(month, bool) or not isinstance(month, int) or month not in offered:
            raise SimError(
                400,
                "VALIDATOR_PARAM",
                f"{name} must be one of the month counts offered "
                f"({', '.join(map(str, offered))}), got {month!r}",
            )
        return month

    def _act_stop(self, body: dict[str, Any], stuck: bool = False) -> dict[str, Any]:
        inst = self._target(body)
        if inst.status not in STOPPABLE:
            raise SimError(
                400, "DEPENDENT_RESOURCE_STATE", f"instance is {inst.status}, cannot stop"
            )
        self._schedule(inst, STUCK_STOP_STEPS if stuck else STOP_STEPS)
        return {}

    def _act_start(self, body: dict[str, Any]) -> dict[str, Any]:
        inst = self._target(body)
        if inst.status != "exited":
            raise SimError(
                400, "DEPENDENT_RESOURCE_STATE", f"instance is {inst.status}, cannot start"
            )
        if inst.billing_mode == "monthly" and (inst.end_time or 0) <= self.now_ts():
            raise SimError(400, "EXPIRED_OR_BALANCE_NOT_ENOUGH", "subscription has expired")
        self._schedule(inst, START_STEPS)
        return {}

    def _act_restart(self, body: dict[str, Any]) -> dict[str, Any]:
        inst = self._target(body)
        if inst.status != "running":
            raise SimError(
                400, "DEPENDENT_RESOURCE_STATE", f"instance is {inst.status}, cannot restart"
            )
        self._schedule(inst, RESTART_STEPS)
        return {}

    def _act_delete(self, body: dict[str, Any]) -> dict[str, Any]:
        inst = self._target(body)
        if inst.billing_mode == "monthly" and (inst.end_time or 0) > self.now_ts():
            raise SimError(
                400,
                "PREPAID_INSTANCE_NOT_SUPPORT_RELEASE",
                "prepaid instance does not support release before it expires",
            )
        if inst.status in ("toRemove", "removing"):
            raise SimError(400, "DEPENDENT_RESOURCE_STATE", "instance is already being removed")
        self._schedule(inst, DELETE_STEPS)
        return {}

    def renewal_cost_10k(self, inst: SimInstance, months: int) -> int:
        """What renewing ``inst`` for ``months`` costs (1/10000 USD)."""
        return self._renew_cost(inst, months)

    def _renew_cost(self, inst: SimInstance, months: int) -> int:
        listed = catalog.monthly_price(inst.product_id, inst.cluster_id, months)
        return listed * inst.price_units // 10

    def _renew(self, inst: SimInstance, months: int, when: int) -> FixedCharge:
        """Move ``endTime`` on by ``months`` (a lapsed subscription: from ``when``) and charge
        the renewal (a ``monthly_re_buy`` bill for the new period)."""
        assert inst.end_time is not None
        start = max(inst.end_time, when) if inst.lapsed else inst.end_time
        inst.lapsed = False
        inst.end_time = add_months(start, months)
        self._pending.add(inst.id)  # watched for expiry again
        return self._charge_fixed(inst, when, start, inst.end_time, months, "monthly_re_buy")

    def _act_renewInstance(self, body: dict[str, Any]) -> dict[str, Any]:
        inst = self._target(body)
        months = self._months(body)
        if inst.status in ("toCreate", "creating", "pulling"):
            raise SimError(
                400, "CREATING_INSTANCE_NOT_SUPPORT_RENEWAL", "instance is still being created"
            )
        if inst.billing_mode != "monthly" or inst.end_time is None:
            raise SimError(
                400,
                "UNSUPPORTED_BILLING_MODE",
                f"renewal needs a subscription instance, this one is {inst.billing_mode!r}",
            )
        now = self.now_ts()
        if self._balance_at(now) < self._renew_cost(inst, months):
            raise SimError(400, "BALANCE_NOT_ENOUGH", "insufficient balance")
        self._renew(inst, months, now)  # a lapsed subscription stays stopped until started
        return {}

    def _act_transToMonthlyInstance(self, body: dict[str, Any]) -> dict[str, Any]:
        inst = self._target(body)
        months = self._months(body)
        if inst.billing_mode != "onDemand":
            raise SimError(
                400,
                "UNSUPPORTED_BILLING_MODE",
                f"only pay-as-you-go instances can be converted, this one is {inst.billing_mode!r}",
            )
        if inst.status in ("toCreate", "creating", "pulling", "pending"):
            raise SimError(400, "DEPENDENT_RESOURCE_STATE", f"instance is {inst.status}")
        now = self.now_ts()
        if self._balance_at(now) < self._renew_cost(inst, months):
            raise SimError(400, "BALANCE_NOT_ENOUGH", "insufficient balance")
        inst.billing_mode = "monthly"
        inst.paygo_until = now
        inst.end_time = add_months(now, months)
        self._charge_fixed(inst, now, now, inst.end_time, months, "monthly_new_buy")
        self._pending.add(inst.id)
        return {}

    def _act_setAutoRenew(self, body: dict[str, Any]) -> dict[str, Any]:
        ids = body.get("instanceIds")
        if not isinstance(ids, list) or not ids:
            raise SimError(400, "VALIDATOR_PARAM", "instanceIds must be a non-empty list")
        auto = body.get("autoRenew")
        if not isinstance(auto, bool):
            raise SimError(400, "VALIDATOR_PARAM", "autoRenew must be a boolean")
        months = self._months(body, "autoRenewMonth") if auto else 1
        targets = [self.instance(str(i)) for i in ids]
        for inst in targets:
            if inst.billing_mode != "monthly":
                raise SimError(
                    400, "UNSUPPORTED_BILLING_MODE", f"{inst.id} is not a subscription instance"
                )
        now = self.now_ts()
        for inst in targets:
            if auto and not inst.auto_renew:
                inst.auto_renew_from = now
            inst.auto_renew, inst.auto_renew_month = auto, months
        return {}

    # ------------------------------------------------------------------ control

    def top_up(self, amount_10k: int) -> None:
        """Add credit (1/10000 USD); negative amounts take it away. The balance may go negative:
        the simulator does not stop instances when money runs out."""
        with self._lock:
            self._initial_10k += amount_10k
            self._settled_at = None  # an expiry may now renew

    def set_quirks(self, changes: Any) -> None:
        """Move switches at run time (see :mod:`monitor.sim.quirks`; money switches rewrite
        the simulated past too). Raises :class:`~monitor.sim.quirks.QuirkError`."""
        with self._lock:
            self.quirks = self.quirks.updated(changes)
            for inst in self._instances.values():
                inst.per_instance_price = self.quirks.per_instance_price
            self._settled_at = None

    def add_instance(
        self,
        instance_id: str,
        *,
        name: str | None = None,
        gpus: int = 1,
        product: str = "4090.16c62g",
        billing_mode: str = "onDemand",
        profile: str = "idle",
        running_for: int = 5 * HOUR,
        envs: Mapping[str, str] | None = None,
        cluster: str = "1",
    ) -> SimInstance:
        """A new running instance (``POST /_sim/instances``), started ``running_for`` seconds
        ago with ``profile`` all along (its metrics and usage bills cover that past), its
        environment carrying ``envs``. ``billing_mode`` ``onDemand`` or ``spot`` (a
        subscription: the demo's ``demo-subscription`` and ``demo-lapsing``). For tests of what
        may be acted on: protected instances (``NOVITA_MONITOR_PROTECT=true``), names matching
        a protect pattern, spot ones. Raises ``ValueError`` naming what is wrong."""
        if not instance_id or not isinstance(instance_id, str):
            raise ValueError("id must be a non-empty string")
        if billing_mode not in ("onDemand", "spot"):
            raise ValueError(f"billing_mode must be onDemand or spot, got {billing_mode!r}")
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
        if not isinstance(gpus, int) or isinstance(gpus, bool) or not 1 <= gpus <= 8:
            raise ValueError(f"gpus must be an integer from 1 to 8, got {gpus!r}")
        if not isinstance(running_for, int) or running_for < 0:
            raise ValueError(f"running_for must be seconds >= 0, got {running_for!r}")
        try:
            catalog.hourly_price(product, cluster)
        except KeyError:
            raise ValueError(f"unknown product {product!r} or cluster {cluster!r}") from None
        env = {str(k): str(v) for k, v in (envs or {}).items()}
        with self._lock:
            if instance_id in self._instances:
                raise ValueError(f"instance {instance_id!r} exists already")
            since = self.now_ts() - running_for
            inst = self._add(
                SimInstance(
                    id=instance_id,
                    name=name or instance_id,
                    cluster_id=cluster,
                    product_id=product,
                    gpu_num=gpus,
                    billing_mode=billing_mode,
                    status="running",
                    created_at=since,
                    profiles=[(0, profile)],
                    runs=[[since, None]],
                    paygo_from=since,
                    envs=env,
                )
            )
            self._settled_at = None
            return inst

    def set_profile(self, instance_id: str, profile: str) -> None:
        """Change an instance's utilization profile from now on (history is kept)."""
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
        with self._lock:
            inst = self.instance(instance_id)
            inst.profiles.append((self.now_ts(), profile))

    def async_task(self, task_id: str) -> dict[str, Any]:
        task = self.async_tasks.get(task_id)
        if task is None:
            raise SimError(404, "TASK_NOT_FOUND", f"task {task_id!r} not found")
        now = self.now_ts()
        status = task["status"] if now >= task["done_at"] else "TASK_STATUS_PROCESSING"
        progress = 100 if now >= task["done_at"] else 40
        return {
            "status": status,
            "reason": task["reason"] if status == "TASK_STATUS_FAILED" else "",
            "eta": max(0, task["done_at"] - now),
            "progress_percent": progress,
            "done_at": task["done_at"],
        }
