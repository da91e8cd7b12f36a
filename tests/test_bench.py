"""The benchmarks run and report both figures of each pair (speed is never asserted here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from bench.__main__ import main
from bench.decide import run_decide
from bench.ledger import run_ledger
from bench.plot import histogram_svg
from bench.workflow import run_workflow
from tether.runtime.codec import SEALED


async def test_workflow_benchmark_reports_every_variant_and_history(client: Client) -> None:
    bench = await run_workflow(6, 3, rounds=4, client=client)
    figures: Any = json.loads(json.dumps(bench.figures()))
    assert set(figures) == {
        "benchmark",
        "workflows",
        "concurrency",
        "rounds",
        "governed",
        "ungoverned",
        "ratio",
        "target_ratio",
        "design_goal_ratio",
        "vs_plain",
        "history",
        "telemetry",
        "payload_codec",
        "machine",
    }
    assert (figures["benchmark"], figures["workflows"], figures["concurrency"]) == (
        "workflow",
        6,
        3,
    )
    assert (figures["target_ratio"], figures["design_goal_ratio"]) == (0.6, 0.85)
    assert figures["machine"]["cpus"] > 0 and figures["machine"]["python"]
    for variant in ("governed", "ungoverned"):
        part = figures[variant]
        assert set(part) == {"workflows", "throughput_per_s", "p50_ms", "p99_ms"}
        assert part["workflows"] == 6
        assert part["throughput_per_s"] > 0
        assert part["p99_ms"] >= part["p50_ms"] > 0
    assert figures["ratio"] > 0
    assert bench.governed.results == [3] * 6
    assert bench.ungoverned.results == [3] * 6
    # The plain-Temporal peer, measured in the same rounds.
    vs = figures["vs_plain"]
    assert set(vs) == {"plain", "governed", "ratio", "target_ratio"}
    assert vs["governed"] == figures["governed"] and vs["target_ratio"] == 0.8
    assert set(vs["plain"]) == {"workflows", "throughput_per_s", "p50_ms", "p99_ms"}
    assert vs["plain"]["workflows"] == 6 and vs["plain"]["p99_ms"] >= vs["plain"]["p50_ms"] > 0
    assert (
        vs["ratio"] == round(bench.governed.throughput / bench.plain.throughput, 3)
        and vs["ratio"] > 0
    )
    assert bench.plain.results == [3] * 6
    # History read from finished runs: a plain step is at least its activity's scheduled,
    # started and completed events; a governed step adds its decision to those.
    history = figures["history"]
    assert (history["steps"], set(history)) == (3, {"steps", "runs_read", "governed", "plain"})
    for variant in ("governed", "plain"):
        part = history[variant]
        assert set(part) == {"events_per_step", "bytes_per_step", "events_per_run", "bytes_per_run"}
        assert part["events_per_step"] >= 3 and part["bytes_per_step"] > 0
        assert part["events_per_run"] > 3 * part["events_per_step"]
    assert history["governed"]["events_per_step"] >= history["plain"]["events_per_step"]
    on = figures["telemetry"]
    assert on["governed_traced"]["workflows"] == 6 and on["ratio"] > 0
    assert on["target_ratio"] == 0.95
    assert bench.traced.results == [3] * 6
    # Each traced workflow exported at least its start, its run and, per step, the
    # decision and tool activities.
    assert on["spans_exported"] >= 6 * (2 + 2 * 3)
    # Sealed payloads, against the same governed variant with the codec off.
    sealed = figures["payload_codec"]
    assert set(sealed) == {"governed_sealed", "ratio", "target_ratio"}
    assert sealed["governed_sealed"]["workflows"] == 6 and sealed["ratio"] > 0
    assert sealed["target_ratio"] == 0.95
    assert bench.sealed.results == [3] * 6
    raw = await client.get_workflow_handle(bench.sealed.workflow_ids[0]).fetch_history()
    started = raw.events[0].workflow_execution_started_event_attributes
    assert started.input.payloads[0].metadata["encoding"] == SEALED


def test_ledger_benchmark_reports_pairs_and_proofs() -> None:
    measured = run_ledger(24, 3, postgres=None, tree_size=4096, verify_events=500)
    result: Any = json.loads(json.dumps(measured))
    sqlite = result["backends"]["sqlite"]
    for case in ("one_writer", "3_threads_one_worker", "3_workers"):
        assert sqlite[case]["events"] == 24
        assert sqlite[case]["raw_inserts_per_s"] > 0 and sqlite[case]["appends_per_s"] > 0
    assert sqlite["3_workers"]["processes"] == 3  # three distinct pids, none the test's own
    # the appended events (the worker processes' too) plus the bulk chain, all verified
    assert sqlite["verify"]["events"] == 3 * 24 + 500
    proofs = result["proofs"]
    assert proofs["tree_size"] == 4096 and proofs["proof_hashes"] == 12
    assert proofs["proof_bytes"] == 32 * 12


def test_decide_benchmark_reports_both_paths_and_their_agreement() -> None:
    measured = run_decide(
        sizes=[40, 120], ours=60, casbin=lambda size: 8, impact_decisions=400, impact_casbin=12
    )
    figures: Any = json.loads(json.dumps(measured))
    assert set(figures) == {"benchmark", "sizes", "stale_after_reload", "impact", "target"}
    impact = figures["impact"]
    assert impact["decisions"] == 400 and 0 < impact["changed"] <= 400
    assert impact["same_as_redecide_only"] is True and impact["disagreements"] == 0
    assert impact["casbin"]["rows"] == 12
    for path in ("ours", "redecide_only", "casbin"):
        assert impact[path]["per_second"] > 0 and impact[path]["cpu_per_second"] > 0
    assert impact["speedup"] > 0 and figures["target"]["impact_per_second"] == 50_000
    assert figures["benchmark"] == "decide" and set(figures["sizes"]) == {"40", "120"}
    assert figures["stale_after_reload"] == 0
    for size, per_size in figures["sizes"].items():
        assert per_size["rules"] == int(size)
        for kind in ("allow", "deny"):
            part = per_size[kind]
            assert part["ours"]["samples"] == 60 and part["casbin"]["samples"] == 8
            for path in ("ours", "casbin"):
                assert part[path]["p99_us"] >= part[path]["p50_us"] > 0
                assert part[path]["cpu_p99_us"] >= part[path]["cpu_p50_us"] > 0
            assert part["speedup_p50"] > 0 and part["speedup_p99"] > 0
            assert part["disagreements"] == 0


def test_histogram_svg(tmp_path: Path) -> None:
    path = histogram_svg({"a": [1.0, 2.0, 2.5], "b": [3.0]}, "t", "ms", tmp_path / "h.svg")
    svg = path.read_text()
    assert svg.startswith("<svg") and "a (n=3)" in svg and "b (n=1)" in svg


def test_unknown_benchmark_is_refused() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["nope"])
    assert exited.value.code == 2


async def test_adapters_benchmark_reports_both_variants(client: Client) -> None:
    from bench.adapters import run_adapters

    figures: Any = json.loads(json.dumps(await run_adapters(4, 2, 2, client=client)))
    assert (figures["benchmark"], figures["framework"]) == ("adapters", "pydantic-ai")
    assert figures["tool_calls_per_run"] == 5 and figures["target_added_p50_ms"] == 5.0
    for variant in ("governed", "plain_temporal"):
        part = figures[variant]
        assert part["runs"] == 4 and part["p99_ms"] >= part["p50_ms"] > 0
    assert isinstance(figures["added_p50_ms_per_tool_call"], float)
