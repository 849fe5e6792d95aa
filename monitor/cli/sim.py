"""``novita-monitor simulator``: the simulated Novita API on a local port."""

from __future__ import annotations

import inspect

import click

from monitor.cli.common import ensure_port_free, handle_errors
from monitor.errors import UserError


@click.command()
@click.option("--port", type=int, default=8765, show_default=True, help="Port on 127.0.0.1.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--scenario", type=click.Choice(["demo", "fleet"]), default="demo", show_default=True)
@click.option("--instances", type=int, default=20, show_default=True, help="Fleet size (fleet).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--api-key", default=None, help="Accept only this key (default: any non-empty key).")
@click.option("--latency-ms", type=float, default=0.0, show_default=True)
@click.option(
    "--max-concurrency", type=int, default=0, help="Requests served at once (0: no limit)."
)
@click.option("--rate-limit", type=float, default=0.0, help="Requests per second (0: no limit).")
@click.option("--error-rate", type=float, default=0.0, help="Share of requests answered 500/503.")
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="Simulated seconds per wall second. A daemon follows this clock only when started with "
    "`run --clock http://127.0.0.1:PORT/_sim/clock` (without it the daemon keeps wall time "
    "while the simulated balance drains SPEED times faster).",
)
@click.option(
    "--quirk",
    "quirks",
    multiple=True,
    metavar="KEY=VALUE",
    help="Answer one open question of the API docs one way (repeatable); see below.",
)
@handle_errors
def simulator(
    port: int,
    host: str,
    scenario: str,
    instances: int,
    seed: int,
    api_key: str | None,
    latency_ms: float,
    max_concurrency: int,
    rate_limit: float,
    error_rate: float,
    speed: float,
    quirks: tuple[str, ...],
) -> None:
    """Serve a simulated Novita API (same paths and wire format) on a local port.

    The ground truth of the scenario is at GET /_sim/truth; quirks can also be changed at run
    time with POST /_sim/quirks. Quirks (KEY=VALUES):
    """
    from monitor.sim.quirks import QuirkError, Quirks
    from monitor.sim.server import run_simulator

    try:
        chosen = Quirks.of(quirks)
    except QuirkError as exc:
        raise UserError(f"--quirk: {exc}") from None
    ensure_port_free(host, port)
    if api_key:
        from monitor.logs import register_secret

        register_secret(api_key)
    run_simulator(
        port=port,
        scenario=scenario,
        instances=instances,
        seed=seed,
        api_key=api_key,
        latency_ms=latency_ms,
        max_concurrency=max_concurrency,
        rate_limit=rate_limit,
        error_rate=error_rate,
        speed=speed,
        host=host,
        quirks=chosen,
    )


def _quirk_help() -> str:
    import textwrap

    from monitor.sim.quirks import SWITCHES

    # \b keeps click from re-wrapping the list into one paragraph
    lines = ["\b"]
    for s in SWITCHES:
        lines.append(f"{s.key}={'|'.join(s.values)} (default {s.default})")
        lines.extend(textwrap.wrap(s.meaning, 72, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines)


simulator.help = inspect.cleandoc(simulator.help or "") + "\n\n" + _quirk_help()

COMMANDS = [simulator]
