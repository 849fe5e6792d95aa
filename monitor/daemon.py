"""The foreground daemon: ``novita-monitor run``.

Signals: SIGTERM/SIGINT stop gracefully (jobs in flight get up to 8 s to finish, well inside the
10 s a service manager allows); SIGHUP reloads the configuration and the rules: an invalid new
file is rejected with a logged error and the running configuration stays.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import partial
from pathlib import Path

import structlog

from monitor.app import App, intervals, settle_heap
from monitor.clock import Clock, SystemClock
from monitor.collect.runner import run_collector
from monitor.collect.scheduler import Scheduler
from monitor.config import Config
from monitor.errors import UserError

log = structlog.get_logger("monitor.daemon")


class Daemon:
    def __init__(
        self,
        config_path: Path,
        clock: Clock | None = None,
        app_factory: Callable[[Config], App] | None = None,
    ) -> None:
        self.config_path = config_path
        self.clock = clock or SystemClock()
        self._app_factory = app_factory or (lambda cfg: App.open(cfg, self.clock))
        self.app: App | None = None
        self.scheduler = Scheduler()
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()

    def _wake(self, account: str, names: Iterable[str]) -> None:
        self.scheduler.run_soon(f"{account}:{name}" for name in names)

    def _schedule(self, app: App) -> None:
        every = {**intervals(app.config), "retention": int(app.config.schedules.retention)}
        for ctx in app.contexts:  # a catch-up after an outage (monitor.collect.runner)
            ctx.wake = partial(self._wake, ctx.account)
        for name, interval in every.items():
            for ctx in app.contexts:

                async def job(ctx=ctx, name=name) -> None:
                    await run_collector(ctx, name, self.clock)

                # due one interval after its last success (a reload keeps the rhythm)
                last = app.store.last_success(ctx.account, name)
                first = last + timedelta(seconds=interval) if last else self.clock.now()
                self.scheduler.add(f"{ctx.account}:{name}", interval, job, first_run=first)
        for job_name, seconds, fn in app.extra_jobs():
            self.scheduler.add(job_name, seconds, fn)

    async def _do_reload(self) -> None:
        try:
            config = Config.load(self.config_path)
            new_app = self._app_factory(config)  # loads and validates the rules too
        except UserError as exc:
            log.error("reload_rejected", path=str(self.config_path), error=str(exc))
            return
        except Exception as exc:
            log.error("reload_failed", path=str(self.config_path), error=repr(exc))
            return
        old = self.app
        await self.scheduler.stop()
        self.scheduler = Scheduler()
        self.app = new_app
        self._schedule(new_app)
        self.scheduler.start()
        if old is not None:
            await old.aclose()
        log.info("reloaded", path=str(self.config_path), jobs=len(self.scheduler.job_ids()))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        config = Config.load(self.config_path)
        self.app = self._app_factory(config)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        # one full cycle (every collector) and one evaluation before the schedule starts: no
        # rule judges an account the monitor has not looked at yet
        await self.app.collect()
        await self.app.evaluate()
        settle_heap()  # what the first cycle built (caches, compiled statements) lives on
        self._schedule(self.app)
        self.scheduler.start()
        log.info(
            "started",
            config=str(self.config_path),
            accounts=[c.account for c in self.app.contexts],
            jobs=len(self.scheduler.job_ids()),
        )
        try:
            while not self._stop.is_set():
                stop = asyncio.create_task(self._stop.wait())
                reload = asyncio.create_task(self._reload.wait())
                await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
                for t in (stop, reload):
                    t.cancel()
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    await self._do_reload()
        finally:
            log.info("stopping")
            await self.scheduler.stop()
            if self.app is not None:
                await self.app.aclose()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            log.info("stopped")
