"""The composition root: configuration -> clients, store, collectors, rules, notifier.

The only place that reads the environment and wires concrete implementations together. Below it,
everything takes what it needs (including the clock) as arguments.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import structlog

from monitor.actions.execute import ActReport, act
from monitor.actions.plan import plan_actions
from monitor.actions.settings import ActSettings
from monitor.clock import Clock, SystemClock
from monitor.collect.collectors import COLLECTORS, AccountContext, CollectSettings
from monitor.collect.envs import env_keys
from monitor.collect.runner import RunReport, run_all_accounts
from monitor.config import (
    Config,
    Schedules,
    find_config_path,
    resolve_api_key,
    resolve_channel_url,
)
from monitor.errors import ConfigError
from monitor.evaluate import CycleReport, Evaluator, Planner, to_silence
from monitor.facts import StoreFacts
from monitor.logs import register_secret
from monitor.notify import (
    CONSOLE_CHANNEL,
    Channel,
    DeliveryResult,
    Notice,
    Notifier,
    Route,
    Router,
)
from monitor.novita.client import NovitaClient
from monitor.rules import RuleSet, load_rules
from monitor.rules.tree import MAPPING_FIELDS, CompareNode, metric_windows
from monitor.store.db import Store, open_store

T = TypeVar("T")

log = structlog.get_logger("monitor.app")

#: TEST ONLY: ``NOVITA_MONITOR_TEST_CRASH_AFTER`` makes the process end abruptly at one point, as
#: a SIGKILL would, for the end-to-end tests of crash safety: ``evaluate`` right after an
#: evaluation committed its alert states and notifications, before delivering them (the outbox
#: loses nothing); ``claim`` right after an action's claim is committed, before its API call;
#: ``call`` right after the API answered, before the outcome is recorded (reconciled by
#: reading, never called again). Never set it in production.
TEST_CRASH_ENV = "NOVITA_MONITOR_TEST_CRASH_AFTER"
#: the exit status of that test crash
TEST_CRASH_STATUS = 86
#: ledger states ``once`` counts as failures (refused and breaker-skipped ones are only printed)
FAILED_ACTION_STATES = frozenset({"failed", "outcome_unknown"})
#: how often the daemon looks for a scheduled report that has come due (seconds)
REPORTS_CHECK_S = 60.0


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run the daemon's (or a command's) top coroutine on uvloop when it is installed (it is a
    dependency on Linux and macOS): its event loop and socket handling cost less CPU per request
    than asyncio's (bench collect: a few percent of a cycle at 1000 instances). Falls back to
    the standard loop elsewhere."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def settle_heap() -> None:
    """Move everything alive after start-up (modules, schemas, compiled statements, the
    caches the first cycle filled) out of the garbage collector's sight (``gc.freeze``).

    A full collection otherwise re-scans that whole long-lived heap, which stalls the event
    loop for ~100 ms in the middle of a collection cycle (bench collect at 1000 instances:
    CPU per steady cycle 1.7 -> 1.4 s). Call once, after the first cycle."""
    gc.collect()
    gc.freeze()


def load_config(explicit: str | None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    path = find_config_path(explicit, env, Path.cwd())
    if path is None:
        raise ConfigError(
            "no configuration file found: pass --config FILE, set NOVITA_MONITOR_CONFIG, or "
            "create ./novita-monitor.yaml (see README, Configuration)"
        )
    return Config.load(path, env=env)


def collect_settings(config: Config, rules_window_s: int = 0) -> CollectSettings:
    m = config.metrics
    return CollectSettings(
        metrics_interval_s=int(m.interval_s),
        metrics_lag_s=int(m.lag_s),
        backfill_min_s=int(m.backfill_min_s),
        backfill_max_s=int(m.backfill_max_s),
        rules_window_s=rules_window_s,
        retention_raw_days=config.retention.raw_days,
        retention_rollup_days=config.retention.rollup_days,
    )


def schedule_intervals(schedules: Schedules) -> dict[str, int]:
    """Collector name -> interval in seconds (the defaults live in ``config.Schedules``)."""
    return {name: int(getattr(schedules, name)) for name in COLLECTORS}


def intervals(config: Config) -> dict[str, int]:
    return schedule_intervals(config.schedules)


def task_intervals(config: Config) -> dict[str, int]:
    """The collectors' intervals plus the retention job's (rollups, then deletes): every task
    the daemon schedules per account."""
    return {**intervals(config), "retention": int(config.schedules.retention)}


def load_ruleset(config: Config) -> RuleSet:
    """The configuration's rules, checked against its channel names (raises RuleError)."""
    return load_rules(config.rule_paths, known_channels=config.channel_names)


def _rules_window(ruleset: RuleSet) -> int:
    """The longest metric window any rule reads (seconds): the first-sight backfill covers it."""
    windows = [w for rule in ruleset for w in metric_windows(rule.when)]
    return int(max(windows, default=timedelta(0)).total_seconds())


def _label_keys(node: Any) -> set[str]:
    """The ``labels.KEY`` keys the comparisons of a ``when`` tree read (an instance's labels
    are its environment variables)."""
    if isinstance(node, CompareNode):
        head, _, key = node.field.partition(".")
        return {key} if key and head in MAPPING_FIELDS["instance"] else set()
    children = list(getattr(node, "children", ()))
    if getattr(node, "child", None) is not None:
        children.append(node.child)
    return {k for child in children for k in _label_keys(child)}


def stored_env_keys(config: Config, ruleset: RuleSet) -> frozenset[str]:
    """What of an instance's environment is stored (``monitor.collect.envs``): the protection
    flag (``actions.protect.env``), the configuration's ``instance_env_keys`` and the keys the
    rules read."""
    rule_keys = (k for rule in ruleset for k in _label_keys(rule.when))
    return env_keys(config.actions.protect.env, config.instance_env_keys, rule_keys)


def claim_abandoned(claimed_by: str | None) -> bool:
    """An ``executing`` row claimed by a process of this host that no longer runs (``by`` is
    ``host:pid``, :attr:`App.actor`): it crashed mid-action, reconcile the row now."""
    host, _, pid = (claimed_by or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def build_router(config: Config, env: Mapping[str, str]) -> Router:
    channels = {
        name: Channel(
            name,
            resolve_channel_url(name, ch, env).get_secret_value(),
            send_resolved=ch.send_resolved,
        )
        for name, ch in config.channels.items()
    }
    routes = [Route(r.match, list(r.channels)) for r in config.routes]
    return Router(channels, list(config.default_channels), routes)


@dataclass
class OnceResult:
    """What ``once`` did: collector runs, the evaluation, the act step's rows (when the act
    hook exists), the deliveries."""

    reports: list[RunReport]
    cycle: CycleReport | None
    actions: list[Any] = field(default_factory=list)
    deliveries: list[DeliveryResult] = field(default_factory=list)

    @property
    def failed_actions(self) -> list[Any]:
        return [a for a in self.actions if a.state in FAILED_ACTION_STATES]

    @property
    def failed_deliveries(self) -> list[DeliveryResult]:
        return [d for d in self.deliveries if not d.ok]

    def summary_lines(self) -> list[str]:
        lines = []
        if self.cycle is not None:
            firing = self.cycle.firing
            lines.append(f"{len(firing)} alert(s) firing")
            for a in sorted(firing, key=lambda a: (a.account, a.rule, a.resource_id)):
                name = f" ({a.resource_name})" if a.resource_name else ""
                lines.append(f"  [{a.severity}] {a.rule}: {a.resource_id}{name}: {a.summary}")
        for done in self.actions:
            reason = f": {done.reason}" if done.reason else ""
            lines.append(
                f"action {done.action} {done.instance_id} (rule {done.rule}): {done.state}{reason}"
            )
        for d in self.deliveries:
            state = (
                "delivered" if d.ok else f"FAILED (attempt {d.attempts}, retried later): {d.error}"
            )
            lines.append(f"notification to {d.channel}: {state}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": [
                {
                    "account": r.account,
                    "collector": r.collector,
                    "outcome": r.outcome,
                    "counts": r.counts,
                    "error": r.error,
                }
                for r in self.reports
            ],
            "firing": [
                {
                    "account": a.account,
                    "rule": a.rule,
                    "resource": a.resource_id,
                    "name": a.resource_name,
                    "severity": a.severity,
                    "summary": a.summary,
                }
                for a in (self.cycle.firing if self.cycle else [])
            ],
            "actions": [
                {
                    "id": a.action_id,
                    "rule": a.rule,
                    "action": a.action,
                    "instance": a.instance_id,
                    "state": a.state,
                    "reason": a.reason,
                }
                for a in self.actions
            ],
            "deliveries": [
                {"channel": d.channel, "ok": d.ok, "attempts": d.attempts, "error": d.error}
                for d in self.deliveries
            ],
        }


class Job(NamedTuple):
    """A scheduler job the daemon adds beyond the collectors (``App.extra_jobs``)."""

    name: str
    interval_s: float
    fn: Callable[[], Awaitable[object]]
    graceful: bool = False  # a stop waits for a run in flight (within the grace)


@dataclass
class App:
    """A running configuration: the store, one client per account, the clock."""

    config: Config
    clock: Clock
    store: Store
    contexts: list[AccountContext] = field(default_factory=list)
    ruleset: RuleSet | None = None
    evaluator: Evaluator | None = None
    actor: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    crash_after: str | None = None  # TEST ONLY, see TEST_CRASH_ENV
    dry_run: bool = False  # --dry-run: actions are planned and recorded, nothing is called
    #: each collector run's report goes here too (the daemon's metrics, ``monitor.exporter``)
    on_run: Callable[[RunReport], None] | None = None
    #: collector runs by outcome since the last evaluation (its log line sums them up)
    run_tally: Counter[str] = field(default_factory=Counter)

    @classmethod
    def open(
        cls,
        config: Config,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
        transport_factory: Any = None,
        rules_window_s: int = 0,
        notifier_factory: Any = None,
        planner: Planner | None = None,
        dry_run: bool = False,
    ) -> App:
        env = os.environ if env is None else env
        ruleset = load_ruleset(config)
        router = build_router(config, env)
        keys = {account.name: resolve_api_key(account, env) for account in config.accounts}
        store = open_store(config.database_url)  # one-line errors: see monitor.store.db
        app = cls(config=config, clock=clock or SystemClock(), store=store)
        app.ruleset = ruleset
        app.crash_after = env.get(TEST_CRASH_ENV) or None
        app.dry_run = dry_run
        settings = collect_settings(config, max(rules_window_s, _rules_window(ruleset)))
        try:
            for account in config.accounts:
                secret = keys[account.name].get_secret_value()
                register_secret(secret)
                transport = transport_factory(account.name) if transport_factory else None
                client = NovitaClient(
                    secret,
                    account.base_url,
                    transport=transport,
                    max_concurrency=account.max_concurrency,
                )
                app.contexts.append(AccountContext(account.name, client, store, settings))
                store.ensure_account(account.name)
        except BaseException:
            store.close()  # the clients made so far hold no connection yet
            raise
        notifier = notifier_factory(router, app.clock) if notifier_factory else None
        settings.env_keys = stored_env_keys(config, ruleset)  # every context's settings
        app.evaluator = Evaluator(
            store,
            ruleset,
            router,
            # one attempt per delivery step: the outbox retries later, with backoff
            notifier or Notifier(router.channels, app.clock, max_attempts=1),
            [c.account for c in app.contexts],
            intervals(config),
            config.stale_after,
            planner=planner if planner is not None else app.planner(),
            expire_after=timedelta(seconds=config.notify.expire_after),
        )
        return app

    def context(self, account: str | None) -> AccountContext:
        if account is None:
            if len(self.contexts) != 1:
                names = ", ".join(c.account for c in self.contexts)
                raise ConfigError(f"several accounts are configured ({names}): pass --account")
            return self.contexts[0]
        for ctx in self.contexts:
            if ctx.account == account:
                return ctx
        raise ConfigError(f"no account named {account!r} in {self.config.path}")

    async def collect(self, names: list[str] | None = None) -> list[RunReport]:
        reports = await run_all_accounts(self.contexts, self.clock, names)
        self.record_runs(reports)
        return reports

    def record_runs(self, reports: list[RunReport]) -> None:
        """Count collector runs for the next evaluation's log line, and hand each report to
        :attr:`on_run`."""
        for report in reports:
            self.run_tally[report.outcome] += 1
            if self.on_run is not None:
                self.on_run(report)

    async def evaluate(self) -> CycleReport:
        """One evaluation (alert states, notifications and planned actions committed
        together), then the delivery of what is due."""
        report = self.evaluate_only()
        # a delivery already under way (a slow channel) is not waited for: the delivery
        # job sends this evaluation's notifications at its next run
        report.deliveries = await self.deliver(wait=False)
        return report

    def evaluate_only(self) -> CycleReport:
        """One evaluation, recorded (no delivery)."""
        assert self.evaluator is not None
        report = self.evaluator.evaluate(self.clock.now())
        if self.crash_after == "evaluate":  # TEST ONLY (TEST_CRASH_ENV)
            log.warning("test_crash", after="evaluate", notifications=len(report.notifications))
            os._exit(TEST_CRASH_STATUS)
        return report

    async def deliver(self, wait: bool = True) -> list[DeliveryResult]:
        """The delivery step: pending notifications due now are sent (the outbox)."""
        assert self.evaluator is not None
        return await self.evaluator.deliver(self.clock.now(), wait)

    def planner(self) -> Planner | None:
        """The evaluation's action planner: the rules' actions become ledger rows in the
        evaluation's transaction (``monitor.actions.plan``); None when no rule asks for one."""
        if self.ruleset is None or not any(r.actions for r in self.ruleset):
            return None
        store = self.store
        return partial(
            plan_actions,
            ruleset=self.ruleset,
            settings=self.config.actions,
            held=store.held_intents,
            silences=lambda now: [to_silence(s) for s in store.list_silences(now)],
            dry_run=self.dry_run,
        )

    def act_settings(self) -> ActSettings:
        """The config's ``actions:`` section as the act step's settings."""
        settings = ActSettings.from_section(getattr(self.config, "actions", None))
        if self.dry_run:
            settings = replace(settings, dry_run=True)
        return settings

    def facts_at(self, now: datetime) -> StoreFacts:
        return StoreFacts(
            self.store,
            [c.account for c in self.contexts],
            intervals(self.config),
            self.config.stale_after,
            now=now,
        )

    async def act(self, now: datetime | None = None) -> ActReport:
        """One act step (:func:`monitor.actions.execute.act`): reconcile, execute the due
        actions, verify and close savings; its notices go to the outbox."""
        now = now if now is not None else self.clock.now()
        report = await act(
            self.store,
            {c.account: c.client for c in self.contexts},
            self.facts_at,
            self.act_settings(),
            now,
            by=self.actor,
            ruleset=self.ruleset,
            hook=self._crash_hook(),
            abandoned=claim_abandoned,
            silences=[to_silence(s) for s in self.store.list_silences(now)],
        )
        if report.notices and self.evaluator is not None:
            self.evaluator.enqueue([Notice(**n.notice_fields()) for n in report.notices], now)
        return report

    def report_step(self, now: datetime | None = None) -> list[Any]:
        """Scheduled reports (``reports:``): record and queue every one due at ``now``
        (:func:`monitor.report.schedule.produce`); the delivery step sends them."""
        from monitor.report.schedule import produce

        return produce(
            self.store,
            self.config.reports,
            self.facts_at,
            now if now is not None else self.clock.now(),
            expire_after=timedelta(seconds=self.config.notify.expire_after),
        )

    def _crash_hook(self) -> Any:
        if self.crash_after not in ("claim", "call"):
            return None
        point = self.crash_after

        def crash(at: str, _row: object) -> None:  # TEST ONLY: see TEST_CRASH_ENV
            if at == point:
                os.kill(os.getpid(), signal.SIGKILL)

        return crash

    async def once(self, names: list[str] | None = None) -> OnceResult:
        """Every collector once, one evaluation, the act step (when there is one), then the
        delivery of every notification due (the evaluation's and the act step's)."""
        reports = await self.collect(names)
        cycle = self.evaluate_only() if self.ruleset is not None else None
        acted = await self.act(self.clock.now())
        actions = acted.outcomes + acted.waiting  # a waiting stop is printed, not a failure
        deliveries = await self.deliver()
        if cycle is not None:
            cycle.deliveries = deliveries
        return OnceResult(reports, cycle, actions=actions, deliveries=deliveries)

    def log_cycle(self, report: CycleReport) -> None:
        """The cycle's one line at info: the evaluation, and the collector runs since the last
        one by outcome (each collector's "ok" run is a debug line)."""
        log.info(
            "evaluated",
            rules=len(self.ruleset.rules) if self.ruleset is not None else 0,
            firing=len(report.firing),
            notifications=len(report.notifications),
            deliveries=len(report.deliveries),
            collector_runs=dict(sorted(self.run_tally.items())),
        )
        self.run_tally.clear()

    def extra_jobs(self) -> list[Job]:
        """Scheduler jobs beyond the collectors: the rule evaluation, followed by a delivery
        (graceful: a stop lets it finish, within the grace), and the delivery step on its own
        schedule (``schedules.deliver``: retries, and what others put in the outbox)."""

        async def evaluate() -> None:
            self.log_cycle(await self.evaluate())

        async def deliver() -> None:
            await self.deliver(wait=False)  # one under way (a slow channel): skip this run

        async def act_step() -> None:
            report = await self.act()
            if report.outcomes:
                log.info("acted", **report.counts())

        async def reports() -> None:
            # in a thread: a week of a large fleet takes seconds to read, the loop goes on
            if await asyncio.to_thread(self.report_step):
                await self.deliver(wait=False)

        schedules = self.config.schedules
        jobs = [
            Job("evaluate", float(schedules.evaluate), evaluate, graceful=True),
            Job("deliver", float(schedules.deliver), deliver, graceful=True),
            # graceful: a stop never cuts an action's POST mid-call (its answer is awaited
            # within the grace, else the ledger says outcome_unknown)
            Job("act", float(schedules.act), act_step, graceful=True),
        ]
        if self.config.reports:  # due times are recorded: checking each minute is enough
            jobs.append(Job("reports", REPORTS_CHECK_S, reports, graceful=True))
        return jobs

    async def aclose(self) -> None:
        for ctx in self.contexts:
            await ctx.client.aclose()
        self.store.close()


# ---------------------------------------------------------------------------------------------
# what the commands that neither collect nor act are built from (``monitor.cli``)


@contextmanager
def open_database(config: Config) -> Iterator[Store]:
    """The configured store, closed on the way out: how every command that only reads or
    records (status, alerts, silences, the ledger) opens the database, so each fails the same
    way (one line; exit 2 for what the user must fix, 1 for what may pass on a retry:
    ``monitor.store.db.open_store``). No API key is needed for these."""
    store = open_store(config.database_url)
    try:
        yield store
    finally:
        store.close()


def notifier_for_test(
    config: Config, channel: str, clock: Clock, env: Mapping[str, str] | None = None
) -> Notifier:
    """A notifier for ``notify-test``: the one configured channel named ``channel`` (only its
    secret is resolved) or the console, one attempt, no retries. Raises ConfigError for a
    name that is neither."""
    env = os.environ if env is None else env
    if channel not in config.channel_names:
        listed = ", ".join([*sorted(config.channels), CONSOLE_CHANNEL])
        raise ConfigError(f"--channel: no channel named {channel!r} (configured: {listed})")
    channels = {}
    if channel != CONSOLE_CHANNEL:
        spec = config.channels[channel]
        url = resolve_channel_url(channel, spec, env)
        channels[channel] = Channel(
            channel, url.get_secret_value(), send_resolved=spec.send_resolved
        )
    return Notifier(channels, clock, max_attempts=1, timeout_s=30.0)
