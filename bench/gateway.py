"""`python -m bench gateway`: what the model gateway adds to a model call, against its peers.

Against one local OpenAI-compatible test server (tests/model_server.py, its own process,
loopback only), in one run, the same chat completion is sent by:

- `direct`:  plain httpx (one `AsyncClient` with httpx's default limits, body built and
             answer parsed by hand);
- `pooled`:  plain httpx the same way, over the gateway's connection layout (httpx
             clients of 16 connections, the least busy leased), so `gateway` minus
             `pooled` is what the gateway's own logic adds;
- `gateway`: our `Gateway.complete` — eligibility, routing, breaker, concurrency slot,
             bounded streaming read, response checks, usage and cost, the attempt record;
- `litellm`: LiteLLM's in-process `Router` over the same two deployments, retries off,
             with the same ordering and a fallback.

at each level: `C` is C calls in flight against a server that answers at once; `C@MS` is
C calls in flight against a server that takes MS milliseconds per answer, as a model does
(a second is quick for a chat completion). At `C@MS` the lanes start spread over one
answer time, so the answers do not arrive in lock-step. Variants alternate in rounds (so
drift hits all alike). Added latency is a variant's p50 (p99) minus direct's p50 (p99).
Targets: the gateway adds at most 0.2 ms at p50 and 1 ms at p99, and at most a fifth of
what LiteLLM adds.

The default levels are `1`, `100` and `100@1000`. At `100` the server answers at once, so
the client's event loop is never idle and every call queues behind the other 99: any CPU a
peer spends per call comes back about a hundredfold as latency (direct httpx alone then
takes hundreds of milliseconds on a small machine). That level measures a saturated
client; `100@1000` is a hundred model calls in flight, as a busy worker runs them.

Before measuring, everything set up (LiteLLM's import is some 380,000 objects, whose full
collection takes about 0.2 s) is moved out of the garbage collector's generations with
`gc.freeze()`, as a long-running worker would do after start-up; otherwise each full
collection stalls every call in flight, whichever peer happens to be running.

Failover: the preferred endpoint answers 503 on every call (its breaker kept closed, so
every call fails over); the cost of failing over is the failover call's latency minus the
failed attempt's (a direct call to the failing endpoint). Target: at most 50 ms more.

LiteLLM is an optional peer (the dev extra installs it); its cost map is read locally
(`LITELLM_LOCAL_MODEL_COST_MAP`), so nothing is fetched.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
from pydantic import JsonValue

from bench.workflow import percentile
from tether.activities.gateway import Gateway
from tether.activities.openai_http import ClientShards, request_body
from tether.activities.payloads import ModelCallInput, StepRef
from tether.core.gateway_config import EndpointConfig, ModelsConfig

ROOT = Path(__file__).resolve().parent.parent
TARGET_ADDED_P50_MS = 0.2
TARGET_ADDED_P99_MS = 1.0
TARGET_SHARE_OF_LITELLM = 0.2
TARGET_FAILOVER_MS = 50.0
HEALTHY, FAILING = "healthy", "always-503"

Call = Callable[[], Awaitable[None]]


@contextmanager
def test_server() -> Any:
    """The fault-injecting server in its own process; yields its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.model_server", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError(f"the test model server did not start (said {line!r})")
        yield int(line)
    finally:
        proc.terminate()
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def parse_level(level: str | int) -> tuple[int, int]:
    """`C` or `C@MS` → (calls in flight, the server's answer time in ms); ValueError names
    a level that is neither."""
    text = str(level).strip()
    concurrency, at, latency = text.partition("@")
    try:
        parsed = int(concurrency), int(latency if at else 0)
    except ValueError:
        parsed = (0, -1)
    if parsed[0] < 1 or parsed[1] < 0:
        raise ValueError(
            f"level {text!r} is not C or C@MS; give calls in flight (a positive whole number), "
            "optionally '@' and the model's answer time in ms, e.g. 100@1000"
        )
    return parsed


def _path(name: str, latency_ms: int) -> str:
    """The server's endpoint for `name`: one answering after `latency_ms` when it is set."""
    return f"always-latency:{latency_ms}" if latency_ms and name == HEALTHY else name


def _endpoint(port: int, name: str, priority: int, latency_ms: int = 0) -> EndpointConfig:
    return EndpointConfig(
        name=name,
        base_url=f"http://127.0.0.1:{port}/ep/{_path(name, latency_ms)}/v1",
        model=name,
        priority=priority,
        max_concurrency=256,
        timeout_seconds=10,
    )


def _request() -> ModelCallInput:
    return ModelCallInput(
        ref=StepRef(workflow_id="bench", run_id="r", step=1, agent="agent:bench"),
        task="extract",
        prompt="Extract the invoice fields as JSON. Invoice INV-1 from acme, $250.",
        max_output_tokens=64,
    )


class Variants:
    """The three ways to make the same call, set up once."""

    def __init__(self, port: int, use_litellm: bool, latency_ms: int = 0) -> None:
        # Plain httpx as a caller writes it: its default limits (100 connections, 20 kept
        # alive) and no retries. Sized for 256 kept alive it does far worse at 100 in
        # flight: its pool checks every idle connection on each request.
        self.http = httpx.AsyncClient(trust_env=False)
        self.request = _request()
        healthy = _endpoint(port, HEALTHY, 1, latency_ms)
        failing = _endpoint(port, FAILING, 0)
        self.healthy_url = f"{healthy.base_url}/chat/completions"
        self.failing_url = f"{failing.base_url}/chat/completions"
        self.body = json.dumps(request_body(healthy, self.request)).encode()
        # Plain httpx over the gateway's own connection layout (clients of 16, the least
        # busy leased): what the gateway's logic adds, apart from how it holds connections.
        self.shards = ClientShards.for_connections(healthy.max_concurrency)
        self.gateway = Gateway(ModelsConfig(endpoints=[healthy]))
        self.failover = Gateway(
            ModelsConfig(endpoints=[failing, healthy], breaker_failures=10**9, max_attempts=2)
        )
        self.router: Any = None
        self.failover_router: Any = None
        if use_litellm:
            self.router, self.failover_router = _litellm_routers(port, latency_ms)

    async def _plain(self, http: httpx.AsyncClient) -> None:
        # What a caller of plain httpx does per call: build and encode the body, post, parse.
        body = {
            "model": HEALTHY,
            "messages": [{"role": "user", "content": self.request.prompt}],
            "max_tokens": self.request.max_output_tokens,
        }
        response = await http.post(
            self.healthy_url,
            content=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        response.raise_for_status()
        content = response.json()["choices"][0]["message"]["content"]
        assert content

    async def direct(self) -> None:
        await self._plain(self.http)

    async def pooled(self) -> None:
        shard = self.shards.lease()
        try:
            await self._plain(self.shards.clients[shard])
        finally:
            self.shards.release(shard)

    async def direct_failing(self) -> None:
        response = await self.http.post(
            self.failing_url, content=self.body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 503

    async def ours(self) -> None:
        result = await self.gateway.complete(self.request)
        assert result.text

    async def ours_failover(self) -> None:
        result = await self.failover.complete(self.request)
        assert result.endpoint == HEALTHY and len(result.attempts) == 2

    async def litellm(self) -> None:
        response = await self.router.acompletion(
            model="primary",
            messages=[{"role": "user", "content": self.request.prompt}],
            max_tokens=64,
        )
        assert response.choices[0].message.content

    async def litellm_failover(self) -> None:
        response = await self.failover_router.acompletion(
            model="failing",
            messages=[{"role": "user", "content": self.request.prompt}],
            max_tokens=64,
        )
        assert response.choices[0].message.content

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.shards.aclose()
        await self.gateway.aclose()
        await self.failover.aclose()


def _litellm_routers(port: int, latency_ms: int) -> tuple[Any, Any]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm
    from litellm.router import Router

    litellm.telemetry = False
    litellm.suppress_debug_info = True

    def deployment(group: str, name: str) -> dict[str, Any]:
        return {
            "model_name": group,
            "litellm_params": {
                "model": f"openai/{name}",
                "api_base": f"http://127.0.0.1:{port}/ep/{_path(name, latency_ms)}/v1",
                "api_key": "not-a-key",
                "max_retries": 0,
                "timeout": 10,
            },
        }

    router = Router(model_list=[deployment("primary", HEALTHY)], num_retries=0)
    failover = Router(
        model_list=[deployment("failing", FAILING), deployment("healthy", HEALTHY)],
        fallbacks=[{"failing": ["healthy"]}],
        num_retries=0,
        allowed_fails=10**9,
    )
    return router, failover


async def _batch(call: Call, count: int, concurrency: int, spread_ms: int = 0) -> list[float]:
    """`count` calls, `concurrency` at a time; each call's latency in milliseconds. The
    lanes start `spread_ms` apart in all (so answers of a slow server are spread out)."""
    latencies: list[float] = []
    queue = iter(range(count))
    lanes = min(concurrency, count)

    async def lane(index: int) -> None:
        if spread_ms:
            await asyncio.sleep(spread_ms / 1000 * index / lanes)
        for _ in queue:
            start = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(lane(i) for i in range(lanes)))
    return latencies


def _stats(latencies: list[float]) -> dict[str, JsonValue]:
    return {
        "calls": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 4),
        "p99_ms": round(percentile(latencies, 99), 4),
    }


async def _measure(
    variants: dict[str, Call], calls: int, concurrency: int, rounds: int, spread_ms: int = 0
) -> dict[str, list[float]]:
    measured: dict[str, list[float]] = {name: [] for name in variants}
    per_round = max(1, calls // rounds)
    for call in variants.values():  # warm-up: connections, caches, imports
        await _batch(call, min(per_round, 50), concurrency, spread_ms)
    order = list(variants)
    cpu: dict[str, float] = dict.fromkeys(variants, 0.0)
    for index in range(rounds):
        for name in order if index % 2 == 0 else reversed(order):
            start = time.process_time()
            measured[name] += await _batch(variants[name], per_round, concurrency, spread_ms)
            cpu[name] += time.process_time() - start
    # The client process's CPU per call: the least noisy view of what each peer adds.
    for name in variants:
        measured[f"cpu:{name}"] = [cpu[name] / len(measured[name]) * 1e6]
    return measured


DEFAULT_LEVELS = ("1", "100", "100@1000")


async def run_gateway(
    calls: int = 2000,
    concurrency: Sequence[int | str] = DEFAULT_LEVELS,
    rounds: int = 4,
    failover_calls: int = 400,
    use_litellm: bool = True,
) -> dict[str, JsonValue]:
    """Run the benchmark at each level (`C` or `C@MS`, see parse_level); the figures as one
    JSON object."""
    levels = {str(level).strip(): parse_level(level) for level in concurrency}
    figures: dict[str, JsonValue] = {
        "benchmark": "gateway",
        "calls": calls,
        "rounds": rounds,
        "targets": {
            "added_p50_ms": TARGET_ADDED_P50_MS,
            "added_p99_ms": TARGET_ADDED_P99_MS,
            "share_of_litellm_added": TARGET_SHARE_OF_LITELLM,
            "failover_extra_ms": TARGET_FAILOVER_MS,
        },
        "machine": {
            "cpus": os.cpu_count() or 0,
            "load_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
    }
    with test_server() as port:
        variants: dict[int, Variants] = {}
        frozen = False
        try:
            for latency_ms in {0} | {latency for _, latency in levels.values()}:
                variants[latency_ms] = Variants(port, use_litellm, latency_ms)
            # Everything set up so far (LiteLLM's import alone is hundreds of thousands of
            # objects) lives for the whole run: out of the collector's way, as a long-running
            # worker would keep it, so no peer's calls pay for walking it.
            gc.collect()
            gc.freeze()
            frozen = True
            measured: dict[str, JsonValue] = {}
            for name, (level, latency_ms) in levels.items():
                v = variants[latency_ms]
                peers: dict[str, Call] = {"direct": v.direct, "pooled": v.pooled, "gateway": v.ours}
                if use_litellm:
                    peers["litellm"] = v.litellm
                spread = latency_ms if level > 1 else 0
                result = _compare(await _measure(peers, calls, level, rounds, spread))
                result["server_answer_ms"] = latency_ms
                measured[name] = result
            figures["concurrency"] = measured
            v = variants[0]
            failing: dict[str, Call] = {
                "failed_attempt": v.direct_failing,
                "gateway": v.ours_failover,
            }
            if use_litellm:
                failing["litellm"] = v.litellm_failover
            figures["failover"] = _failover(await _measure(failing, failover_calls, 1, rounds))
        finally:
            if frozen:
                gc.unfreeze()
            for v in variants.values():
                await v.aclose()
    return figures


def _cpu(measured: dict[str, list[float]]) -> dict[str, JsonValue]:
    """CPU µs per call of each peer in this (client) process, and what it adds to direct."""
    cpu = {k[4:]: v[0] for k, v in list(measured.items()) if k.startswith("cpu:")}
    for key in [k for k in measured if k.startswith("cpu:")]:
        del measured[key]
    base = cpu.get("direct", cpu.get("failed_attempt", 0.0))
    out: dict[str, JsonValue] = {f"{k}_us": round(v, 1) for k, v in cpu.items()}
    out.update({f"{k}_added_us": round(v - base, 1) for k, v in cpu.items() if v != base})
    return out


def _compare(measured: dict[str, list[float]]) -> dict[str, JsonValue]:
    cpu = _cpu(measured)
    out: dict[str, JsonValue] = {name: _stats(values) for name, values in measured.items()}
    out["cpu_per_call"] = cpu
    base50 = percentile(measured["direct"], 50)
    base99 = percentile(measured["direct"], 99)
    added: dict[str, dict[str, float]] = {}
    for name in measured:
        if name == "direct":
            continue
        added[name] = {
            "p50_ms": round(percentile(measured[name], 50) - base50, 4),
            "p99_ms": round(percentile(measured[name], 99) - base99, 4),
        }
    out["added"] = added  # type: ignore[assignment]
    ours = added["gateway"]
    verdict: dict[str, JsonValue] = {
        "added_p50_ok": ours["p50_ms"] <= TARGET_ADDED_P50_MS,
        "added_p99_ok": ours["p99_ms"] <= TARGET_ADDED_P99_MS,
    }
    if "pooled" in measured:  # the gateway's logic alone, same connection layout
        logic = {
            q: round(percentile(measured["gateway"], n) - percentile(measured["pooled"], n), 4)
            for q, n in (("p50_ms", 50), ("p99_ms", 99))
        }
        out["gateway_over_pooled"] = logic  # type: ignore[assignment]
        verdict["over_pooled_p50_ok"] = logic["p50_ms"] <= TARGET_ADDED_P50_MS
        verdict["over_pooled_p99_ok"] = logic["p99_ms"] <= TARGET_ADDED_P99_MS
    if "litellm" in added:
        theirs = added["litellm"]
        for q in ("p50_ms", "p99_ms"):
            share = ours[q] / theirs[q] if theirs[q] > 0 else None
            verdict[f"share_of_litellm_{q[:3]}"] = None if share is None else round(share, 4)
            verdict[f"share_{q[:3]}_ok"] = share is not None and share <= TARGET_SHARE_OF_LITELLM
    out["verdict"] = verdict
    return out


def _failover(measured: dict[str, list[float]]) -> dict[str, JsonValue]:
    _cpu(measured)
    out: dict[str, JsonValue] = {name: _stats(values) for name, values in measured.items()}
    failed = percentile(measured["failed_attempt"], 50)
    for name in measured:
        if name != "failed_attempt":
            extra = round(percentile(measured[name], 50) - failed, 4)
            out[f"{name}_extra_p50_ms"] = extra
    out["gateway_ok"] = float(out["gateway_extra_p50_ms"] or 0) <= TARGET_FAILOVER_MS  # type: ignore[arg-type]
    return out
