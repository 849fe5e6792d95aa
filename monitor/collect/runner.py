"""Running collectors: one run, one account's cycle, every account's cycle.

A run is timed, its outcome (ok, partial, failed) and error are recorded in the store's
``collector_runs`` table, and it never raises: one failing collector or account never stops the
others. Time comes from the clock handed in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog

from monitor.clock import Clock
from monitor.collect.collectors import COLLECTORS, TASKS, AccountContext, PartialFailure, _describe

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
    level = "info" if outcome == "ok" else "warning"
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
