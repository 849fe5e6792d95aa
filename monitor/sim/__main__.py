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
    args = parser.parse_args(argv)
    try:
        quirks = Quirks.of(args.quirk)
    except QuirkError as exc:
        parser.error(str(exc))

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
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
