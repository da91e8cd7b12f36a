"""`python -m bench NAME [--json]`: run one benchmark; figures beside their peers."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from pydantic import JsonValue

from bench.ledger import run_ledger
from bench.plot import histogram_svg
from bench.workflow import run_workflow

RESULTS = Path("bench/results")


def _workflow(args: argparse.Namespace) -> dict[str, JsonValue]:
    result, latencies = asyncio.run(run_workflow(args.workflows, args.concurrency))
    series = {k: [x * 1000 for x in v] for k, v in latencies.items()}
    plot = histogram_svg(
        series, "Workflow latency: governed vs ungoverned", "ms", RESULTS / "workflow.svg"
    )
    result["plot"] = str(plot)
    return result


def _ledger(args: argparse.Namespace) -> dict[str, JsonValue]:
    postgres = args.postgres or os.environ.get("TETHER_TEST_DATABASE_URL")
    return run_ledger(args.events, args.writers, postgres, args.tree_size, args.verify_events)


BENCHMARKS = {"workflow": _workflow, "ledger": _ledger}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--workflows", type=int, default=200, help="workflow: per variant")
    parser.add_argument("--concurrency", type=int, default=20, help="workflow: in flight")
    parser.add_argument("--events", type=int, default=2000, help="ledger: appends per case")
    parser.add_argument("--writers", type=int, default=4, help="ledger: concurrent writers")
    parser.add_argument("--postgres", help="ledger: also measure this PostgreSQL URL")
    parser.add_argument("--tree-size", type=int, default=1_000_000, help="ledger: proof tree")
    parser.add_argument(
        "--verify-events", type=int, default=100_000, help="ledger: chain length to verify"
    )
    args = parser.parse_args(argv)
    result = BENCHMARKS[args.name](args)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
