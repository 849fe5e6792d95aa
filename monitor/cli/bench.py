"""``novita-monitor bench collect|rules|store``: benchmarks (numbers printed, last line JSON).

A new benchmark is one more ``@bench.command(...)`` here."""

from __future__ import annotations

import click

from monitor.cli.common import handle_errors


@click.group()
def bench() -> None:
    """Benchmarks (numbers printed, last line JSON)."""


@bench.command("collect")
@click.option("--instances", type=int, default=1000, show_default=True)
@click.option("--latency-ms", type=float, default=50.0, show_default=True)
@click.option("--concurrency", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--runs", type=int, default=1, show_default=True, help="Repeat, report the median.")
@click.option(
    "--accounts",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Spread the instances over K accounts behind one simulator gateway (C requests at "
    "once in total), each account's client at concurrency C.",
)
@click.option("--no-baseline", is_flag=True, help="Skip the concurrency-1 baseline.")
@handle_errors
def bench_collect(
    instances: int,
    latency_ms: float,
    concurrency: int,
    seed: int,
    runs: int,
    accounts: int,
    no_baseline: bool,
) -> None:
    """Time a steady-state collection cycle against a simulated fleet, vs concurrency 1."""
    from monitor.bench import bench_collect as run_bench

    run_bench(
        instances,
        latency_ms,
        concurrency,
        seed,
        runs,
        echo=click.echo,
        accounts=accounts,
        baseline=not no_baseline,
    )


@bench.command("rules")
@click.option("--instances", type=int, default=1000, show_default=True)
@click.option("--days", type=int, default=7, show_default=True)
@click.option("--runs", type=int, default=1, show_default=True, help="Repeat, report the median.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--with-stop-rule",
    is_flag=True,
    help="Also time each run with the README's stop rule added (interleaved); reports both "
    "medians and their ratio.",
)
@handle_errors
def bench_rules(instances: int, days: int, runs: int, seed: int, with_stop_rule: bool) -> None:
    """Time one evaluation of the shipped rules over DAYS of history for N instances."""
    from monitor.bench_rules import bench_rules as run_bench

    run_bench(instances, days, seed=seed, runs=runs, echo=click.echo, with_stop_rule=with_stop_rule)


@bench.command("store")
@click.option("--instances", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--days", type=click.IntRange(min=1), default=60, show_default=True)
@click.option(
    "--database",
    default=None,
    help="An empty database to fill (e.g. postgresql+psycopg://...); default: a temporary "
    "SQLite file.",
)
@click.option("--seed", type=int, default=1, show_default=True)
@handle_errors
def bench_store(instances: int, days: int, database: str | None, seed: int) -> None:
    """Write DAYS of history for N instances at the default schedules, run retention and
    rollups as the daemon does, report the database's size per instance."""
    from monitor.bench_store import bench_store as run_bench

    run_bench(instances, days, database, seed=seed, echo=click.echo)


COMMANDS = [bench]
