"""The auditor's commands on real runs: show, search, what-if, replay, export, verify-bundle."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ap.workflows import InvoiceResult
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from tests.conftest import start_invoice
from tether.core.config import Settings
from tether.runtime.approvals import decide_request, signing_key
from tether.verification.bundle import build_bundle, verify_bundle
from tether.verification.checkpoint import load_or_create_key
from tether.verification.trust import Trust, key_id_of
from tether.worker import Runtime


async def _json(settings: Settings, tmp_path: Path, *args: str) -> Any:
    done = await _cli(settings, tmp_path, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def _cli(settings: Settings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TETHER_DATABASE_URL": settings.database_url,
        "TETHER_TEMPORAL_ADDRESS": settings.temporal_address,
        "TETHER_TASK_QUEUE": settings.task_queue,
        "TETHER_CHECKPOINT_KEY": str(tmp_path / "keys" / "cp.pem"),
        "COLUMNS": "200",
    }
    return await _run(
        [sys.executable, "-m", "tether.cli.main", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


async def _run(
    argv: list[str], *, env: dict[str, str], cwd: Path, **_: object
) -> subprocess.CompletedProcess[str]:
    """A CLI subprocess, off the event loop so the in-process worker keeps running."""
    return await asyncio.to_thread(
        subprocess.run, argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


async def _approved_invoice(
    client: Client, settings: Settings, runtime: Runtime
) -> WorkflowHandle[Any, InvoiceResult]:
    handle = await start_invoice(client, settings, "INV-1003", prefix="audit")
    while not (pending := [p for p in runtime.approvals.list() if p.workflow_id == handle.id]):
        await asyncio.sleep(0.05)
    await decide_request(
        client,
        runtime.approvals,
        runtime.ledger,
        pending[0].request_id,
        approver="user:alice",
        approve=True,
        comment="checked",
        key=signing_key(settings),
    )
    assert (await handle.result()).status == "paid"
    return handle


async def test_show_search_and_what_if(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker, tmp_path: Path
) -> None:
    handle = await _approved_invoice(client, settings, runtime)
    shown = await _cli(settings, tmp_path, "show", handle.id)
    assert shown.returncode == 0, shown.stderr
    assert "approval.decided" in shown.stdout and "user:alice" in shown.stdout
    timeline = await _json(settings, tmp_path, "show", handle.id, "--json")
    decided = next(t for t in timeline if t["kind"] == "approval.requested")
    assert decided["duration_ms"] is not None and decided["duration_ms"] >= 0

    found = await _json(
        settings, tmp_path, "search", "--tier", "approve", "--kind", "decision", "--json"
    )
    assert [e["workflow_id"] for e in found] == [handle.id]
    assert await _json(settings, tmp_path, "search", "--since", "2999-01-01", "--json") == []
    bad = await _cli(settings, tmp_path, "search", "--since", "yesterday")
    assert bad.returncode == 2 and "'yesterday'" in bad.stderr

    strict = tmp_path / "strict.csv"
    strict.write_text(
        "p, role:ap-agent, vendor/:name, payments.pay, True, deny, freeze-all, -, -\n"
        "g, agent:ap-clerk, role:ap-agent\n"
    )
    rows = await _json(settings, tmp_path, "what-if", handle.id, "--policy", str(strict), "--json")
    assert rows == [
        {
            "seq": rows[0]["seq"],
            "step": 2,
            "agent": "agent:ap-clerk",
            "action": "payments.pay",
            "resource": "vendor/globex",
            "recorded_tier": "approve",
            "recorded_rule": "ap-pay-large",
            "new_tier": "deny",
            "new_rule": "freeze-all",
            "changed": True,
        }
    ]


async def test_replay_and_cross_check(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker, tmp_path: Path
) -> None:
    handle = await _approved_invoice(client, settings, runtime)
    done = await _cli(settings, tmp_path, "replay", handle.id)
    assert done.returncode == 0, done.stderr
    assert "reproduces" in done.stdout and "3 activity results match" in done.stdout
    with runtime.ledger.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE ledger_events SET payload = replace(payload, 'sha256:', 'sha256:0') "
                "WHERE kind = 'tool.executed' AND workflow_id = :w"
            ),
            {"w": handle.id},
        )
    done = await _cli(settings, tmp_path, "replay", handle.id)
    assert done.returncode == 1
    assert "tool result of step 2 in history does not match" in done.stderr
    missing = await _cli(settings, tmp_path, "replay", "no-such-workflow")
    assert missing.returncode == 2 and "no-such-workflow" in missing.stderr


async def test_export_and_verify_bundle_offline(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker, tmp_path: Path
) -> None:
    handle = await _approved_invoice(client, settings, runtime)
    bundle_path = tmp_path / "evidence.json"
    done = await _cli(settings, tmp_path, "export", handle.id, "-o", str(bundle_path))
    assert done.returncode == 0, done.stderr
    # Offline: no database, no server.
    offline = {
        **os.environ,
        "TETHER_DATABASE_URL": "sqlite:////nonexistent/x.db",
        "TETHER_TEMPORAL_ADDRESS": "127.0.0.1:1",
    }
    pin = load_or_create_key(tmp_path / "keys" / "cp.pem").public_key().public_bytes_raw().hex()
    unpinned = await _run(
        [sys.executable, "-m", "tether.cli.main", "audit", "verify-bundle", str(bundle_path)],
        env=offline,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert unpinned.returncode == 2 and "no pinned key" in unpinned.stderr
    verify = [sys.executable, "-m", "tether.cli.main", "audit", "verify-bundle"]
    verified = await _run(
        [*verify, str(bundle_path), "--trust-key", pin],
        env=offline,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert verified.returncode == 0, verified.stderr
    assert "bundle intact" in verified.stdout and "reproduces" in verified.stdout
    assert f"signed by pinned key {key_id_of(pin)}" in verified.stdout
    data = json.loads(bundle_path.read_text())
    kinds = {e["kind"] for e in data["manifest"]["events"]}
    assert {"policy.loaded", "decision", "approval.decided", "tool.executed"} <= kinds
    assert len(data["content"]) == 2  # the model and policy texts in force
    # Change one approver in an event: named.
    tampered = bundle_path.read_text().replace('"actor":"user:alice"', '"actor":"user:eve"', 1)
    bundle_path.write_text(tampered)
    broken = await _run(
        [*verify, str(bundle_path), "--trust-key", pin],
        env=offline,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert broken.returncode == 1
    assert "does not match its hash" in broken.stderr


async def test_any_changed_byte_breaks_a_bundle(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker, tmp_path: Path
) -> None:
    handle = await _approved_invoice(client, settings, runtime)
    history = (await handle.fetch_history()).to_json()
    key = load_or_create_key(tmp_path / "k.pem")
    raw = build_bundle(runtime.ledger, handle.id, history, key).model_dump_json().encode()
    trust = Trust.gather([key.public_key().public_bytes_raw().hex()])
    assert verify_bundle(raw, trust) == []

    @settings_(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(position=st.integers(min_value=0, max_value=len(raw) - 1), new=st.integers(0, 255))
    def flip(position: int, new: int) -> None:
        if raw[position] == new:
            return
        changed = raw[:position] + bytes([new]) + raw[position + 1 :]
        assert verify_bundle(changed, trust), f"byte {position} changed to {new} went unnoticed"

    flip()


settings_ = settings
