"""Running collectors: one run, one account's cycle, every account's cycle.

A run is timed, its outcome (ok, partial, failed) and error are recorded in the store's
``collector_runs`` table, and it never raises: one failing collector or account never stops the
others. Time comes from the clock handed in.

Catch-up after an outage: when the instance listing succeeds after a failed one (the API answers
again), every other collector of the account whose latest run failed is asked to run now
(``AccountContext.wake``: the daemon's scheduler moves their next run to now), so each runs
within one ``instances`` interval of the API's return instead of at its next slot (a daily one
would otherwise go stale after the others recovered, and the "cannot see the account" alert
would resolve, fire again and resolve).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import structlog

from monitor.clock import Clock
from monitor.collect.collectors import COLLECTORS, TASKS, AccountContext, PartialFailure, _describe

#: the collector whose success after a failure means the API answers again
HEARTBEAT = "instances"

log = structlog.get_logger("monitor.collect")


@dataclass
class RunReport:
    account: str
    collector: str
    started: datetime
    finished: datetime
    outcome: str  # ok | partial | failed
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0


async def run_collector(ctx: AccountContext, name: str, clock: Clock) -> RunReport:
    collector = TASKS[name]
    recovering = name == HEARTBEAT and ctx.wake is not None and _failed_last(ctx, name)
    started = clock.now()
    t0 = time.perf_counter()
    counts: dict[str, int] = {}
    error: str | None = None
    try:
        counts = await collector(ctx, started)
        outcome = "ok"
    except PartialFailure as exc:
        counts, outcome, error = exc.counts, "partial", "; ".join(exc.errors[:20])
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # recorded on the run, never propagated: others go on
        outcome, error = "failed", _describe(exc)
    finished = clock.now()
    report = RunReport(
        account=ctx.account,
        collector=name,
        started=started,
        finished=finished,
        outcome=outcome,
        counts=counts,
        error=error,
        duration_s=time.perf_counter() - t0,
    )
    try:
        ctx.store.record_run(ctx.account, name, started, finished, outcome, counts, error)
    except Exception as exc:  # the database itself failing: log, keep going
        log.error("record_run_failed", account=ctx.account, collector=name, error=_describe(exc))
    if recovering and outcome == "ok":
        _wake_failed(ctx)
    # one line per run at debug when it went well: the evaluation's line sums the cycle up
    level = "debug" if outcome == "ok" else "warning"
    getattr(log, level)(
        "collector_run",
        account=ctx.account,
        collector=name,
        outcome=outcome,
        duration_s=round(report.duration_s, 3),
        error=error,
        **counts,
    )
    return report


def _last_runs(ctx: AccountContext) -> dict[str, Any]:
    """The latest run of each collector of the account ({} when the database fails: then no
    catch-up, the schedule goes on)."""
    try:
        return dict(ctx.store.last_runs(ctx.account))
    except Exception as exc:
        log.error("last_runs_failed", account=ctx.account, error=_describe(exc))
        return {}


def _failed_last(ctx: AccountContext, name: str) -> bool:
    run = _last_runs(ctx).get(name)
    return run is not None and run.outcome == "failed"


def _wake_failed(ctx: AccountContext) -> None:
    """Ask for every collector of the account whose latest run failed to run now."""
    behind = sorted(
        n
        for n, run in _last_runs(ctx).items()
        if n in COLLECTORS and n != HEARTBEAT and run.outcome == "failed"
    )
    if behind and ctx.wake is not None:
        log.info("collectors_catch_up", account=ctx.account, collectors=behind)
        ctx.wake(behind)


#: collectors that read the instance list the ``instances`` collector stores in the same cycle
#: (metrics does too, but starts at once: see ``collect_metrics``)
NEEDS_INSTANCES = frozenset({"products"})


async def run_cycle(
    ctx: AccountContext, clock: Clock, names: Iterable[str] | None = None
) -> list[RunReport]:
    """Every collector once for one account, all started at once; those that read the
    instance list wait for the ``instances`` collector of this cycle, and metrics is told
    about it (``AccountContext.listing``).

    Starting the others at once lets their round trips and their parsing overlap the
    instance listing (two round trips and a thousand rows on the critical path) instead of
    following it."""
    wanted = list(names) if names is not None else list(COLLECTORS)
    listing: asyncio.Task[RunReport] | None = None
    if "instances" in wanted:
        listing = asyncio.ensure_future(run_collector(ctx, "instances", clock))
    cycle_ctx = replace(ctx, listing=listing)

    async def after_listing(name: str) -> RunReport:
        if listing is not None and name in NEEDS_INSTANCES:
            await asyncio.wait([listing])
        return await run_collector(cycle_ctx, name, clock)

    rest = [n for n in wanted if n != "instances"]
    try:
        others = await asyncio.gather(*(after_listing(n) for n in rest))
        return ([await listing] if listing is not None else []) + list(others)
    finally:
        if listing is not None and not listing.done():  # cancelled: the listing goes too
            listing.cancel()


async def run_all_accounts(
    contexts: list[AccountContext], clock: Clock, names: Iterable[str] | None = None
) -> list[RunReport]:
    wanted = list(names) if names is not None else None
    per_account = await asyncio.gather(*(run_cycle(c, clock, wanted) for c in contexts))
    return [r for reports in per_account for r in reports]
