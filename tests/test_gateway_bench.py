"""The gateway benchmark runs all three peers and reports each figure beside its peer's.

Speed is never asserted here (bench/ measures it); this proves the benchmark measures what
it says: the same calls through direct httpx, the gateway and LiteLLM's Router.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.gateway import parse_level, run_gateway


async def test_gateway_benchmark_reports_every_peer_and_the_failover_cost() -> None:
    figures: Any = json.loads(
        json.dumps(
            await run_gateway(
                calls=40, concurrency=[1, "8@50"], rounds=2, failover_calls=20, use_litellm=True
            )
        )
    )
    assert figures["benchmark"] == "gateway" and figures["machine"]["cpus"] > 0
    assert set(figures["concurrency"]) == {"1", "8@50"}
    slow = figures["concurrency"]["8@50"]
    assert slow["server_answer_ms"] == 50 and figures["concurrency"]["1"]["server_answer_ms"] == 0
    for peer in ("direct", "pooled", "gateway", "litellm"):  # each really waited for the model
        assert slow[peer]["p50_ms"] >= 50
    for level in figures["concurrency"].values():
        for peer in ("direct", "pooled", "gateway", "litellm"):
            assert level[peer]["calls"] == 40
            assert level[peer]["p99_ms"] >= level[peer]["p50_ms"] > 0
        assert set(level["added"]) == {"pooled", "gateway", "litellm"}
        assert set(level["gateway_over_pooled"]) == {"p50_ms", "p99_ms"}
        cpu = level["cpu_per_call"]
        assert cpu["direct_us"] > 0 and cpu["gateway_us"] > 0 and cpu["litellm_us"] > 0
        assert {"gateway_added_us", "litellm_added_us"} <= set(cpu)
        assert {"added_p50_ok", "added_p99_ok", "share_p50_ok", "over_pooled_p50_ok"} <= set(
            level["verdict"]
        )
    failover = figures["failover"]
    for peer in ("failed_attempt", "gateway", "litellm"):
        assert failover[peer]["calls"] == 20
    assert isinstance(failover["gateway_extra_p50_ms"], float)
    assert isinstance(failover["gateway_ok"], bool)


def test_a_level_is_calls_in_flight_and_an_optional_answer_time() -> None:
    assert parse_level("100") == (100, 0) and parse_level("100@1000") == (100, 1000)
    assert parse_level(8) == (8, 0)
    for bad in ("0", "x", "100@", "100@-5", "@200"):
        with pytest.raises(ValueError, match="is not C or C@MS"):
            parse_level(bad)
