"""``novita-monitor bench collect|rules``: benchmarks (numbers printed, last line JSON).

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
@handle_errors
def bench_collect(
    instances: int, latency_ms: float, concurrency: int, seed: int, runs: int
) -> None:
    """Time a steady-state collection cycle against a simulated fleet, vs concurrency 1."""
    from monitor.bench import bench_collect as run_bench

    run_bench(instances, latency_ms, concurrency, seed, runs, echo=click.echo)


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


COMMANDS = [bench]
