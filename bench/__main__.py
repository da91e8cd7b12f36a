"""`python -m bench NAME [--json]`: run one benchmark; each figure beside its peer.

Each benchmark is a subcommand with its own options (`python -m bench NAME --help`).
Progress goes to stderr; stdout carries a table, or with `--json` one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path

_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "accounts_payable"
if str(_EXAMPLE) not in sys.path:  # the benchmarks run the example app's tools
    sys.path.insert(0, str(_EXAMPLE))

from rich.console import Console
from rich.progress import Progress

from bench.decide import casbin_samples, run_decide
from bench.gateway import DEFAULT_LEVELS, parse_level, run_gateway
from bench.ledger import run_ledger
from bench.plain import PLAIN
from bench.plot import histogram_svg
from bench.report import Report, flat_table, progress_console
from bench.workflow import GOVERNED, UNGOVERNED, run_workflow

RESULTS = Path(__file__).resolve().parent / "results"
"""Where plots go by default (git-ignored)."""


async def _workflow(args: argparse.Namespace) -> Report:
    with Progress(console=progress_console(), transient=True) as progress:
        bench = await run_workflow(
            args.workflows, args.concurrency, rounds=args.rounds, progress=progress
        )
    plot = _svg_path(args.plot)
    histogram_svg(
        {
            f"plain Temporal ({PLAIN})": [s * 1000 for s in bench.plain.latencies],
            f"ungoverned ({UNGOVERNED})": [s * 1000 for s in bench.ungoverned.latencies],
            f"governed ({GOVERNED})": [s * 1000 for s in bench.governed.latencies],
            "governed, telemetry on": [s * 1000 for s in bench.traced.latencies],
        },
        "Workflow latency: governed vs plain Temporal and ungoverned",
        "ms",
        plot,
    )
    figures = bench.figures()
    figures["plot"] = str(plot)
    return Report(figures, bench.table())


def _svg_path(path: Path) -> Path:
    """The plot is an SVG written without a plotting library; other suffixes become .svg."""
    if path.suffix.lower() == ".svg":
        return path
    svg = path.with_suffix(".svg")
    print(f"note: plots are SVG; writing {svg}", file=sys.stderr)
    return svg


async def _adapters(args: argparse.Namespace) -> Report:
    from bench.adapters import run_adapters  # needs the tether[pydantic-ai] extra

    figures = await run_adapters(args.runs, args.concurrency, args.rounds)
    return Report(figures, flat_table("Adapter benchmark (ms)", figures))


async def _ledger(args: argparse.Namespace) -> Report:
    postgres = args.postgres or os.environ.get("TETHER_TEST_DATABASE_URL")
    figures = await asyncio.to_thread(
        run_ledger, args.events, args.writers, postgres, args.tree_size, args.verify_events
    )
    return Report(figures, flat_table("Ledger benchmark", figures))


async def _decide(args: argparse.Namespace) -> Report:
    fixed: int | None = args.casbin_samples
    casbin = casbin_samples if fixed is None else (lambda size: fixed)
    with Progress(console=progress_console(), transient=True) as progress:
        figures = await asyncio.to_thread(
            run_decide,
            args.sizes,
            args.samples,
            casbin,
            progress,
            args.impact_decisions,
            args.impact_casbin,
        )
    return Report(figures, flat_table("Decision benchmark (µs)", figures))


async def _gateway(args: argparse.Namespace) -> Report:
    calls, failover = (200, 100) if args.quick else (args.calls, args.failover_calls)
    figures = await run_gateway(
        calls=calls,
        concurrency=args.concurrency,
        rounds=2 if args.quick else args.rounds,
        failover_calls=failover,
        use_litellm=not args.no_litellm,
    )
    return Report(figures, flat_table("Model gateway benchmark (ms)", figures))


Benchmark = Callable[[argparse.Namespace], Coroutine[object, object, Report]]

BENCHMARKS: dict[str, Benchmark] = {
    "workflow": _workflow,
    "ledger": _ledger,
    "decide": _decide,
    "gateway": _gateway,
    "adapters": _adapters,
}
"""Subcommand name → benchmark; each gets its options in `parser()`."""


def _level(text: str) -> str:
    try:
        parse_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = top.add_subparsers(dest="name", metavar="NAME", required=True)

    wf = sub.add_parser(
        "workflow", parents=[common], help="governed vs plain Temporal workflow throughput"
    )
    wf.add_argument("--workflows", type=int, default=200, help="workflows per variant")
    wf.add_argument("--concurrency", type=int, default=20, help="workflows in flight")
    wf.add_argument("--rounds", type=int, default=4, help="alternating rounds per variant")
    wf.add_argument(
        "--plot",
        type=Path,
        default=RESULTS / "workflow.svg",
        help="latency histogram (SVG; default bench/results/workflow.svg)",
    )

    ld = sub.add_parser("ledger", parents=[common], help="ledger appends vs raw inserts")
    ld.add_argument("--events", type=int, default=2000, help="appends per case")
    ld.add_argument("--writers", type=int, default=4, help="concurrent writers")
    ld.add_argument("--postgres", help="also measure this PostgreSQL URL")
    ld.add_argument("--tree-size", type=int, default=1_000_000, help="proof tree size")
    ld.add_argument("--verify-events", type=int, default=100_000, help="chain to verify")

    dc = sub.add_parser("decide", parents=[common], help="fast decision path vs casbin")
    dc.add_argument(
        "--sizes", type=int, nargs="+", default=[100, 1_000, 10_000], help="policy sizes (rows)"
    )
    dc.add_argument("--samples", type=int, default=20_000, help="fast-path requests per kind")
    dc.add_argument(
        "--casbin-samples",
        type=int,
        default=None,
        help="casbin requests per kind (default: 1,500,000 / rows, 40 to 1,000)",
    )
    dc.add_argument(
        "--impact-decisions",
        type=int,
        default=100_000,
        help="recorded decisions in the generated month that `policy impact` re-decides",
    )
    dc.add_argument(
        "--impact-casbin", type=int, default=1_000, help="of those, re-decided by casbin too"
    )

    gw = sub.add_parser(
        "gateway", parents=[common], help="model gateway vs direct httpx vs LiteLLM Router"
    )
    gw.add_argument("--calls", type=int, default=2000, help="calls per variant and level")
    gw.add_argument(
        "--concurrency",
        nargs="+",
        default=list(DEFAULT_LEVELS),
        type=_level,
        help="levels: C calls in flight, or C@MS against a server answering in MS ms",
    )
    gw.add_argument("--rounds", type=int, default=4, help="alternating rounds per variant")
    gw.add_argument("--failover-calls", type=int, default=400, help="failover calls per variant")
    gw.add_argument("--no-litellm", action="store_true", help="leave LiteLLM's Router out")
    gw.add_argument("--quick", action="store_true", help="a short smoke run (200 calls)")

    ad = sub.add_parser(
        "adapters", parents=[common], help="a governed pydantic-ai agent vs the same on Temporal"
    )
    ad.add_argument("--runs", type=int, default=100, help="agent runs per variant")
    ad.add_argument("--concurrency", type=int, default=1, help="runs in flight")
    ad.add_argument("--rounds", type=int, default=4, help="alternating rounds per variant")

    missing = set(BENCHMARKS) - set(sub.choices)
    assert not missing, f"benchmarks without a subcommand: {sorted(missing)}"
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = asyncio.run(BENCHMARKS[args.name](args))
    if args.json:
        print(json.dumps(report.figures))
    else:
        Console().print(report.table)
        plot = report.figures.get("plot")
        if plot:
            print(f"plot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
