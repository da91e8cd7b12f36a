"""A worker process: health endpoint, JSON logs, and a graceful SIGTERM that lets the
running activity finish before the process exits."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from tests.conftest import bank_of, free_port, payment_in_flight, spawn_worker, start_invoice
from tether.core.config import Settings
from tether.errors import HealthError
from tether.runtime.health import HealthServer
from tether.worker import Runtime, build_worker


async def _status(http: httpx.AsyncClient, url: str) -> int:
    try:
        return (await http.get(url)).status_code
    except httpx.TransportError:
        return 0


async def test_health_endpoint_answers_live_and_ready() -> None:
    ready = False
    server = HealthServer(lambda: ready, "127.0.0.1", 0)
    port = await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/livez")).json() == {"status": "live"}
            assert (await http.get("/readyz")).status_code == 503
            ready = True
            assert (await http.get("/readyz")).json() == {"status": "ready"}
            missing = await http.get("/nope")
            assert missing.status_code == 404 and "/readyz" in missing.json()["error"]
            assert (await http.post("/livez")).status_code == 405
    finally:
        await server.close()
    other = HealthServer(lambda: True, "127.0.0.1", 0)
    taken = await other.start()
    try:
        busy = HealthServer(lambda: True, "127.0.0.1", taken)
        with pytest.raises(HealthError, match=f"port {taken} .*TETHER_HEALTH_PORT"):
            await busy.start()
    finally:
        await other.close()


async def test_sigterm_drains_the_running_activity(
    client: Client, settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "worker.log"
    proc = spawn_worker(
        settings,
        log,
        TETHER_BANK_SETTLE_SECONDS="3",
        TETHER_HEALTH_PORT=str(port),
        TETHER_LOG_FORMAT="json",
        TETHER_SHUTDOWN_GRACE_SECONDS="60",
    )
    ready = f"http://127.0.0.1:{port}/readyz"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(600):
                if await _status(http, ready) == 200:
                    break
                await asyncio.sleep(0.05)
            assert await _status(http, ready) == 200, log.read_text()
            assert await _status(http, f"http://127.0.0.1:{port}/livez") == 200
            handle = await start_invoice(client, settings, "INV-1001", prefix="drain")
            # The bank holds the payment activity for 3 s: stop the worker inside it.
            await payment_in_flight(runtime, "INV-1001", log)
            proc.send_signal(signal.SIGTERM)
            draining = 0
            while proc.poll() is None:
                draining = draining or (await _status(http, ready) == 503)
                await asyncio.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert draining, "readyz never reported the drain"
    # The draining worker finished the payment and recorded it before it exited.
    kinds = [e.kind for e in runtime.ledger.events(handle.id)]
    assert "tool.executed" in kinds, log.read_text()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    messages = [(entry["level"], entry["message"]) for entry in lines]
    assert any(m.startswith("shutting down") for _, m in messages), messages
    assert ("INFO", "worker stopped") in messages
    assert all({"time", "level", "name", "message"} <= set(entry) for entry in lines)

    async with build_worker(client, settings, runtime):
        result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.status == "paid"
    assert bank_of(runtime).payments("INV-1001") == 1
    assert [e.kind for e in runtime.ledger.events(handle.id)].count("tool.executed") == 1
    assert runtime.ledger.verify().ok
