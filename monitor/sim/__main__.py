"""``python -m monitor.sim --port P --scenario fleet --instances N ...``: the simulator as a process.

Prints one line ``listening on http://127.0.0.1:P`` once ready (the benchmark waits for it).
SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from monitor.sim.quirks import QuirkError, Quirks, help_text
from monitor.sim.server import run_simulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m monitor.sim",
        description=__doc__,
        epilog="quirks:\n" + help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--scenario", choices=("demo", "fleet"), default="demo")
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--max-concurrency", type=int, default=0)
    parser.add_argument("--rate-limit", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--quirk", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--accounts",
        type=int,
        default=0,
        help="serve K accounts behind one gateway (monitor.sim.gateway): --instances spread "
        "over them, account i keyed API_KEY-i (--api-key, default sim-key), seeded SEED+i-1; "
        "--latency-ms and --max-concurrency apply to the gateway as a whole",
    )
    args = parser.parse_args(argv)
    try:
        quirks = Quirks.of(args.quirk)
    except QuirkError as exc:
        parser.error(str(exc))

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    if args.accounts:
        if args.accounts < 1:
            parser.error("--accounts must be at least 1")
        if args.quirk or args.rate_limit or args.error_rate:
            parser.error("--accounts serves fleets at rest: no --quirk, --rate-limit, --error-rate")
        from monitor.sim.accounts import plan_accounts
        from monitor.sim.gateway import run_gateway

        run_gateway(
            port=args.port,
            accounts=plan_accounts(
                args.api_key or "sim-key", args.instances, args.accounts, args.seed
            ),
            scenario=args.scenario,
            latency_ms=args.latency_ms,
            max_concurrency=args.max_concurrency,
            speed=args.speed,
            host=args.host,
        )
        return
    run_simulator(
        port=args.port,
        scenario=args.scenario,
        instances=args.instances,
        seed=args.seed,
        api_key=args.api_key,
        latency_ms=args.latency_ms,
        max_concurrency=args.max_concurrency,
        rate_limit=args.rate_limit,
        error_rate=args.error_rate,
        speed=args.speed,
        host=args.host,
        quirks=quirks,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
