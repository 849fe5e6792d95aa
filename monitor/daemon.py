"""The foreground daemon: ``novita-monitor run``.

Signals: SIGTERM/SIGINT stop at any moment, the first cycle included: collectors are cancelled
at once (their GET requests in flight with them; a write already handed to the store finishes),
the evaluation (which records and delivers notifications) gets up to ``grace_s`` (8 s) to
finish, and the process exits with status 0 well inside the 10 s a service manager allows.
SIGHUP reloads the configuration and the rules: an invalid new file (hostile YAML included: it
is refused before it costs much, see ``monitor.yamlsrc``) is rejected with a logged error and
the running configuration stays. A valid one ends the old schedule as a stop does (collectors
in flight cancelled, and due again at once on the new schedule).

Notifications are an outbox (``monitor.notify.outbox``): each evaluation commits its alert
states and notifications together, and a delivery step (after each evaluation, and every
``schedules.deliver``) sends what is due; a delivery cut short by a stop or a crash stays
``pending`` and is sent after the restart.

One daemon per SQLite database file: the daemon holds ``<database>.lock`` (``flock``) for its
whole life, and a second one refuses to start (``monitor.store.filelock``). On PostgreSQL,
several daemons (replicas) may share the database: each starts as a follower, steps the lease
(``monitor.leader``), and only the leader runs the first cycle and the schedule; a leader that
loses its lease stops its schedule and follows again (its writes are fenced meanwhile), and a
clean stop releases the lease so a follower takes over at once. ``Daemon.leadership`` is what
this process knows of it (``is_leader``, ``epoch``, ``holder``, ``leader_seen_at``: for
``/readyz``); on SQLite the one daemon always leads (``epoch`` None).

``clock_url`` (``run --clock URL``, for tests and the demo only) makes the daemon follow a
simulator's clock (``GET /_sim/clock``): its ``now`` is the simulator's time, re-read every
few seconds, and its schedules run at the simulator's speed (an interval of 60 s runs every
second at ``--speed 60``).

HTTP (``http: {listen: HOST:PORT}``, on by default at 127.0.0.1:9464; ``http: false``: off):
``/metrics``, ``/healthz`` and ``/readyz`` (:mod:`monitor.web`) are served on the daemon's
event loop from the moment the database is open until the stop; the registry
(:mod:`monitor.exporter`) outlives reloads, so its counters do too. A port that cannot be bound
ends the start in one line. A reload does not move the endpoint: a changed ``http:`` takes
effect at the next start (logged).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from monitor.app import App, settle_heap, task_intervals
from monitor.clock import Clock, FollowedClock, SystemClock, read_clock
from monitor.collect.runner import run_collector
from monitor.collect.scheduler import STOP_GRACE_S, Scheduler
from monitor.config import Config, HttpSettings
from monitor.errors import RuntimeFailure, UserError
from monitor.exporter import FleetFigures, new_registry, read_figures
from monitor.health import (
    Readiness,
    ReadinessCheck,
    collections_fresh,
    follower_ready,
    not_started,
)
from monitor.leader import Elector, Leadership, NotLeader, holder_id, lease_name
from monitor.store.db import create_store_engine
from monitor.store.filelock import DatabaseLock
from monitor.store.lease import install_fence
from monitor.web import HttpServer, build_app

log = structlog.get_logger("monitor.daemon")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: how often a followed clock is read again (wall seconds)
CLOCK_SYNC_S = 5.0


class Daemon:
    def __init__(
        self,
        config_path: Path,
        clock: Clock | None = None,
        app_factory: Callable[[Config], App] | None = None,
        grace_s: float = STOP_GRACE_S,
        clock_url: str | None = None,
        dry_run: bool = False,
        readiness: ReadinessCheck | None = None,
    ) -> None:
        """``readiness``: how ``/readyz`` answers (default :meth:`collections_ready`; the seam
        for a follower replica, see :mod:`monitor.health`)."""
        self.config_path = config_path
        self.clock: Clock = clock or SystemClock()
        self._app_factory = app_factory or (lambda cfg: App.open(cfg, self.clock, dry_run=dry_run))
        self.grace_s = grace_s
        self.clock_url = clock_url
        self.speed = 1.0  # the clock's speed: schedules run this many times faster
        self.app: App | None = None
        self.scheduler = Scheduler()
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._role = asyncio.Event()  # the elector saw this process's role change
        #: what this process knows of the leadership (on SQLite: it leads, epoch None)
        self.leadership = Leadership(holder_id())
        self._replica = False  # PostgreSQL: one leader among replicas, by the lease
        self._config_lease_s: float | None = None  # the lease's length (a follower's /readyz)
        self._elector: Elector | None = None
        self._lock: DatabaseLock | None = None
        self._active = False  # the schedule runs (this process leads)
        self._active_epoch: int | None = None  # the lease's epoch the schedule runs under
        self._lease: str | None = None  # the lease's name: the first configuration's accounts
        self._settled = False
        self.readiness: ReadinessCheck = readiness or self.collections_ready
        self.exporter = new_registry(self.figures)
        self.http: HttpServer | None = None
        self._http_settings: HttpSettings | None = None

    # -- what the HTTP endpoint reads ----------------------------------------------------------

    def figures(self) -> FleetFigures | None:
        """The fleet's figures for ``/metrics``, read from the running app's store at its
        clock's now (None before the app is open)."""
        app = self.app
        if app is None:
            return None
        now = app.clock.now()
        rules = [(r.name, r.severity) for r in app.ruleset] if app.ruleset is not None else []
        return read_figures(app.facts_at(now), app.store, now, rules)

    def collections_ready(self) -> Readiness:
        """Ready when no collector of any account is stale (``status``' notion); a follower
        replica, while it sees a live leader."""
        app = self.app
        if app is None:
            return not_started()
        now = app.clock.now()
        if self._replica and not self.leadership.is_leader:
            seen = self.leadership.snapshot()
            lease = self._config_lease_s or 15.0
            return follower_ready(seen["holder"], seen["leader_seen_at"], now, lease)
        return collections_fresh(app.facts_at(now), [c.account for c in app.contexts], now)

    def _adopt(self, app: App) -> App:
        app.on_run = self.exporter.runs.observe
        return app

    async def _start_http(self, config: Config) -> None:
        self._http_settings = config.http
        if config.http is None:
            log.info("http_off")
            return
        host, port = config.http.address
        line = config.line_for("http", "listen") or config.line_for("http")
        where = f"{config.path}:{line}: http.listen" if line else "http.listen"
        exporter = self.exporter
        server = HttpServer(
            build_app(exporter.registry, lambda: self.readiness(), exporter.fleet.refresh)
        )
        await server.start(host, port, where)
        self.http = server
        log.info(
            "http_listening",
            url=server.url,
            endpoints=["/metrics", "/healthz", "/readyz"],
        )

    async def _stop_http(self) -> None:
        if self.http is not None:
            await self.http.stop()
            self.http = None

    def _wall(self, when: datetime) -> datetime:
        """The wall-clock time at which the daemon's clock reads ``when``."""
        ahead = (when - self.clock.now()).total_seconds() / self.speed
        return SystemClock().now() + timedelta(seconds=ahead)

    def _wake(self, account: str, names: Iterable[str]) -> None:
        self.scheduler.run_soon(f"{account}:{name}" for name in names)

    def _schedule(self, app: App) -> None:
        every = task_intervals(app.config)
        for ctx in app.contexts:  # a catch-up after an outage (monitor.collect.runner)
            ctx.wake = partial(self._wake, ctx.account)
        for name, interval in every.items():
            for ctx in app.contexts:

                async def job(ctx=ctx, name=name) -> None:
                    app.record_runs([await run_collector(ctx, name, self.clock)])

                # due one interval after its last success (a reload keeps the rhythm)
                last = app.store.last_success(ctx.account, name)
                first = last + timedelta(seconds=interval) if last else self.clock.now()
                self.scheduler.add(
                    f"{ctx.account}:{name}",
                    interval / self.speed,
                    job,
                    first_run=self._wall(first),
                )
        for extra in app.extra_jobs():
            self.scheduler.add(
                extra.name, extra.interval_s / self.speed, extra.fn, graceful=extra.graceful
            )
        if isinstance(self.clock, FollowedClock) and self.clock_url is not None:
            self.scheduler.add("clock-sync", CLOCK_SYNC_S, self._sync_clock)

    async def _sync_clock(self) -> None:
        """Read the followed clock again (a simulator moved by hand is followed)."""
        assert isinstance(self.clock, FollowedClock) and self.clock_url is not None
        try:
            now, speed = await asyncio.to_thread(read_clock, self.clock_url)
        except ValueError as exc:
            log.warning("clock_sync_failed", url=self.clock_url, error=str(exc))
            return
        self.clock.sync(now, speed)
        if speed != self.speed:
            log.warning("clock_speed_changed", old=self.speed, new=speed)

    async def _follow_clock(self, url: str) -> None:
        """Take the daemon's time from the clock at ``url`` (a simulator's, test-and-demo)."""
        try:
            now, speed = await asyncio.to_thread(read_clock, url)
        except ValueError as exc:
            raise RuntimeFailure(f"--clock: {exc}") from None
        self.clock = FollowedClock(now, speed)
        self.speed = speed
        log.info("following_clock", url=url, now=now.isoformat(), speed=speed)

    async def _do_reload(self) -> None:
        try:
            config = Config.load(self.config_path)
            new_app = self._adopt(self._open_app(config))  # loads and checks the rules
        except UserError as exc:
            log.error("reload_rejected", path=str(self.config_path), error=str(exc))
            return
        except Exception as exc:
            log.error("reload_failed", path=str(self.config_path), error=repr(exc))
            return
        if config.http != self._http_settings:
            log.warning("http_change_needs_restart", running=self._describe_http())
        old = self.app
        await self.scheduler.stop(self.grace_s)
        self.scheduler = Scheduler()
        self.app = new_app
        if self._active:
            self._schedule(new_app)
        else:
            self._schedule_follower()
        self.scheduler.start()
        if old is not None:
            await old.aclose()
        log.info("reloaded", path=str(self.config_path), jobs=len(self.scheduler.job_ids()))

    async def _unless_stopped(self, task: asyncio.Task[Any]) -> bool:
        """Wait for ``task`` or a stop request, whichever comes first; True if ``task`` ended
        (its exception, if any, is raised). A stop leaves the task to ``Scheduler.stop``."""
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done() and not self._stop.is_set():
            task.result()
            return True
        return False

    async def _first_cycle(self, app: App) -> bool:
        """One full cycle (every collector) and one evaluation before the schedule starts: no
        rule judges an account the monitor has not looked at yet. False when stopped first."""
        collect = self.scheduler.track("first-cycle:collect", app.collect())
        if not await self._unless_stopped(collect):
            return False
        evaluate = self.scheduler.track("first-cycle:evaluate", app.evaluate(), graceful=True)
        if not await self._unless_stopped(evaluate):
            return False
        app.log_cycle(evaluate.result())
        return True

    def _open_app(self, config: Config) -> App:
        """The app of ``config``; on PostgreSQL, its store's writes fenced by the lease."""
        app = self._app_factory(config)
        if app.store.dialect == "postgresql":
            if self._lease is None:
                self._replica = True
                self._lease = lease_name(a.name for a in config.accounts)
            elif self._lease != lease_name(a.name for a in config.accounts):
                log.warning(
                    "lease_kept",
                    lease=self._lease,
                    why="the accounts changed: this replica leads or follows the lease of its "
                    "first configuration's accounts until it is restarted",
                )
            install_fence(app.store.engine, self._lease, self.leadership.token)
        return app

    def _schedule_follower(self) -> None:
        """A follower's only job: following the clock (``--clock``)."""
        if isinstance(self.clock, FollowedClock) and self.clock_url is not None:
            self.scheduler.add("clock-sync", CLOCK_SYNC_S, self._sync_clock)

    def _lock_database(self, config: Config) -> None:
        """SQLite: take the database file's lock (a second daemon refuses to start)."""
        lock = DatabaseLock.for_url(config.database_url)
        if lock is not None:
            lock.acquire("run")
            self._lock = lock

    def _start_elector(self, config: Config) -> None:
        loop = asyncio.get_running_loop()
        self._config_lease_s = float(config.leader.lease)

        def on_change(_leads: bool) -> None:  # on the elector's thread
            loop.call_soon_threadsafe(self._role.set)

        self._elector = Elector(
            create_store_engine(config.database_url),
            self.leadership,
            self.clock,
            float(config.leader.lease),
            on_change=on_change,
            name=self._lease or "",
            speed=self.speed,
        )
        log.info(
            "replica_started",
            holder=self.leadership.me,
            lease=self._lease,
            lease_s=config.leader.lease,
        )
        self._elector.start()

    async def _activate(self, app: App) -> None:
        """Lead: the first cycle, then the schedule (unless stopped or no longer leading)."""
        await self.scheduler.stop(self.grace_s)  # a follower's (the clock's sync)
        self.scheduler = Scheduler()
        epoch = self.leadership.epoch
        fenced = False
        try:
            if not await self._first_cycle(app):
                return  # stopped
        except NotLeader as exc:  # the lease was lost during the first cycle
            log.warning("first_cycle_fenced", error=str(exc))
            fenced = True
        if fenced or not self.leadership.is_leader or self.leadership.epoch != epoch:
            # follow until the elector reports the change (a fenced write means the lease
            # is no longer ours: its next step sees it)
            self._schedule_follower()
            self.scheduler.start()
            return
        if not self._settled:
            settle_heap()  # what the first cycle built (caches, statements) lives on
            self._settled = True
        self._schedule(app)
        self.scheduler.start()
        self._active = True
        self._active_epoch = epoch
        log.info(
            "started",
            config=str(self.config_path),
            accounts=[c.account for c in app.contexts],
            jobs=len(self.scheduler.job_ids()),
            holder=self.leadership.me,
            epoch=epoch,
        )

    async def _follow_role(self) -> None:
        """The elector saw the role change: start leading, or stop the schedule and follow."""
        assert self.app is not None
        leads, epoch = self.leadership.is_leader, self.leadership.epoch
        if self._active and (not leads or epoch != self._active_epoch):
            # lost (or lost and taken again: another led meanwhile, start afresh)
            await self.scheduler.stop(self.grace_s)
            self.scheduler = Scheduler()
            self._schedule_follower()
            self.scheduler.start()
            self._active = False
            log.warning("following", leader=self.leadership.holder, epoch=epoch)
        if leads and not self._active:
            await self._activate(self.app)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # first of all: a stop asked for while the configuration loads or the database migrates
        # is seen at the first await, before any request is sent
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        try:
            if self.clock_url is not None:
                await self._follow_clock(self.clock_url)
            config = Config.load(self.config_path)
            self.app = self._adopt(
                self._open_app(config)
            )  # the database's folder and file made first
            self._lock_database(config)
            # once the database is open: a start that fails there says so in one line
            await self._start_http(config)
        except BaseException:
            await self._stop_http()
            if self.app is not None:
                await self.app.aclose()
                self.app = None
            self._remove_signal_handlers(loop)
            raise
        try:
            if not self._replica:  # the one daemon of its SQLite file leads
                self.leadership.observe_sole(self.clock.now())
                await self._activate(self.app)
            else:  # a replica: follows until it holds the lease
                self._schedule_follower()
                self.scheduler.start()
                self._start_elector(config)
            while not self._stop.is_set():
                stop = asyncio.create_task(self._stop.wait())
                reload = asyncio.create_task(self._reload.wait())
                role = asyncio.create_task(self._role.wait())
                await asyncio.wait({stop, reload, role}, return_when=asyncio.FIRST_COMPLETED)
                for t in (stop, reload, role):
                    t.cancel()
                if self._role.is_set() and not self._stop.is_set():
                    self._role.clear()
                    await self._follow_role()
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    await self._do_reload()
        finally:
            log.info("stopping")
            await self._stop_http()  # not ready any more: scrapes end before the store closes
            await self.scheduler.stop(self.grace_s)
            if self._elector is not None:  # after the schedule: our last writes were fenced
                await asyncio.to_thread(self._elector.stop)
                self._elector.engine.dispose()
            if self.app is not None:
                await self.app.aclose()
            if self._lock is not None:
                self._lock.release()
            self._remove_signal_handlers(loop)
            log.info("stopped")

    def _describe_http(self) -> str:
        return self.http.url or "" if self.http is not None else "off"

    @staticmethod
    def _remove_signal_handlers(loop: asyncio.AbstractEventLoop) -> None:
        for sig in (*_STOP_SIGNALS, signal.SIGHUP):
            loop.remove_signal_handler(sig)
