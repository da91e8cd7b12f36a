"""`tether` as people use it: one-line errors for bad input, approvals through the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ap.workflows import InvoiceResult
from temporalio.client import Client
from temporalio.worker import Worker

from tests.conftest import bank_of, start_invoice
from tether.core.config import Settings
from tether.verification.events import LedgerEvent
from tether.worker import Runtime


async def tether(
    settings: Settings, cwd: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "TETHER_DATABASE_URL": settings.database_url,
        "TETHER_TEMPORAL_ADDRESS": settings.temporal_address,
        "TETHER_TASK_QUEUE": settings.task_queue,
        "TETHER_APPROVAL_KEY": str(settings.approval_key),
        "COLUMNS": "200",
        **env,
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tether.cli.main", *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


async def test_bad_input_gets_one_line_and_loses_nothing(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    runtime.ledger.append(LedgerEvent(idempotency_key="before", kind="decision"))
    before = runtime.ledger.events()

    line = one_line(await tether(settings, tmp_path, "run", "NoSuchWorkflow"))
    assert "'NoSuchWorkflow'" in line and "PayInvoice" in line
    line = one_line(await tether(settings, tmp_path, "run", "PayInvoice", "--input", "{bad"))
    assert "'{bad'" in line and "not valid JSON" in line
    line = one_line(
        await tether(settings, tmp_path, "run", "PayInvoice", "--input", '{"invoice_id": 5}')
    )
    assert "InvoiceInput" in line
    line = one_line(
        await tether(settings, tmp_path, "approvals", "approve", "apr-nope", "--as", "user:alice")
    )
    assert "'apr-nope'" in line and "tether approvals list" in line
    bad = tmp_path / "bad.csv"
    bad.write_text("p, role:x, vendor/:n, pay, True, maybe, r1, -, -\n")
    line = one_line(await tether(settings, tmp_path, "policy", "check", str(bad)))
    assert f"{bad}:1" in line and "'maybe'" in line
    line = one_line(
        await tether(
            settings,
            tmp_path,
            "policy",
            "explain",
            "--agent",
            "a",
            "--action",
            "b",
            "--resource",
            "c",
            TETHER_POLICY_PATH=str(bad),
        )
    )
    assert "'maybe'" in line
    line = one_line(await tether(settings, tmp_path, "audit", "show", "no-such-run"))
    assert "'no-such-run'" in line
    (tmp_path / "tether.toml").write_text("dev_port = 'seven'\n")
    broken = str(tmp_path / "tether.toml")
    line = one_line(await tether(settings, tmp_path, "approvals", "list", TETHER_CONFIG=broken))
    assert "dev_port" in line
    assert runtime.ledger.events() == before
    assert runtime.ledger.verify().ok


async def test_policy_explain_json(settings: Settings, tmp_path: Path) -> None:
    done = await tether(
        settings,
        tmp_path,
        "policy",
        "explain",
        "--agent",
        "agent:ap-clerk",
        "--action",
        "payments.pay",
        "--resource",
        "vendor/acme",
        "--context",
        '{"amount": 25000}',
        "--json",
    )
    assert done.returncode == 0, done.stderr
    decision = json.loads(done.stdout)
    assert decision["tier"] == "approve" and decision["rule"] == "ap-pay-large"
    assert decision["policy_version"].startswith("sha256:")


async def _pending_id(settings: Settings, tmp_path: Path, workflow_id: str) -> str:
    for _ in range(100):
        done = await tether(settings, tmp_path, "approvals", "list", "--json")
        assert done.returncode == 0, done.stderr
        mine = [p for p in json.loads(done.stdout) if p["workflow_id"] == workflow_id]
        if mine:
            return str(mine[0]["request_id"])
        await asyncio.sleep(0.1)
    raise AssertionError("no pending request appeared")


async def _start(client: Client, settings: Settings) -> Any:
    return await start_invoice(client, settings, "INV-1003", prefix="cli")


async def test_approve_through_the_cli(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker, tmp_path: Path
) -> None:
    handle = await _start(client, settings)
    request_id = await _pending_id(settings, tmp_path, handle.id)
    listed = await tether(settings, tmp_path, "approvals", "list")
    assert request_id in listed.stdout and "payments.pay" in listed.stdout
    # `tether status` says what the run waits for.
    shown = await tether(settings, tmp_path, "status", handle.id)
    assert shown.returncode == 0, shown.stderr
    assert f"{handle.id}: running (PayInvoice)" in shown.stdout
    assert f"waiting for approval {request_id}: payments.pay on vendor/globex" in shown.stdout
    as_json = json.loads((await tether(settings, tmp_path, "status", handle.id, "--json")).stdout)
    assert as_json["state"] == "running" and as_json["pending"]["request_id"] == request_id
    line = one_line(await tether(settings, tmp_path, "status", "no-such-run"))
    assert "no run 'no-such-run'" in line

    line = one_line(
        await tether(settings, tmp_path, "approvals", "approve", request_id, "--as", "user:bob")
    )
    assert "'user:bob'" in line and "cannot approve" in line
    refused = [e for e in runtime.ledger.events(handle.id) if e.kind == "approval.refused"]
    assert [(e.actor, e.payload["via"]) for e in refused] == [("user:bob", "update")]

    done = await tether(
        settings,
        tmp_path,
        "approvals",
        "approve",
        request_id,
        "--as",
        "user:alice",
        "--comment",
        "ok",
    )
    assert done.returncode == 0, done.stderr
    assert "approved by user:alice" in done.stdout
    result: InvoiceResult = await handle.result()
    assert result.status == "paid"
    listed = await tether(settings, tmp_path, "approvals", "list", "--json")
    assert all(p["request_id"] != request_id for p in json.loads(listed.stdout))
    line = one_line(
        await tether(settings, tmp_path, "approvals", "reject", request_id, "--as", "user:alice")
    )
    assert request_id in line


async def test_reject_through_the_cli_reaches_the_workflow(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker, tmp_path: Path
) -> None:
    handle = await _start(client, settings)
    request_id = await _pending_id(settings, tmp_path, handle.id)
    done = await tether(
        settings,
        tmp_path,
        "approvals",
        "reject",
        request_id,
        "--as",
        "user:alice",
        "--reason",
        "duplicate invoice",
    )
    assert done.returncode == 0, done.stderr
    result: InvoiceResult = await handle.result()
    assert result.status == "rejected" and "duplicate invoice" in result.message
    assert bank_of(runtime).payments("INV-1003") == 0


async def test_run_and_audit_verify(
    settings: Settings, runtime: Runtime, worker: Worker, tmp_path: Path
) -> None:
    done = await tether(
        settings,
        tmp_path,
        "run",
        "PayInvoice",
        "--input",
        '{"invoice_id": "INV-1001", "text": "Invoice INV-1001"}',
        "--as",
        "user:carol",
        "--id",
        "cli-run-1",
    )
    assert done.returncode == 0, done.stderr
    assert '"status": "paid"' in done.stdout
    assert any(e.rule == "ap-pay-small" for e in runtime.ledger.events("cli-run-1"))
    ok = await tether(settings, tmp_path, "audit", "verify")
    assert ok.returncode == 0 and "ledger intact" in ok.stdout
    with runtime.ledger.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("UPDATE ledger_events SET outcome = 'x' WHERE seq = 2"))
    broken = await tether(settings, tmp_path, "audit", "verify")
    assert broken.returncode == 1 and "entry 2" in broken.stderr


async def test_demo_end_to_end(tmp_path: Path, settings: Settings) -> None:
    db = tmp_path / "demo.db"
    done = await tether(
        settings,
        tmp_path,
        "demo",
        TETHER_DATABASE_URL=f"sqlite:///{db}",
        TETHER_TEMPORAL_ADDRESS="127.0.0.1:1",  # the demo starts its own server
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for word in (
        "tier=auto",
        "tier=notify",
        "tier=approve",
        "tier=deny",
        "refused",
        "approved by user:alice",
        "ledger verified",
    ):
        assert word in done.stdout, word
    from tether.core.db import make_engine
    from tether.verification.ledger import Ledger

    ledger = Ledger(make_engine(f"sqlite:///{db}"))
    try:
        assert ledger.verify().ok
        rules = {e.rule for e in ledger.events() if e.kind == "decision"}
        assert rules == {"ap-pay-small", "ap-pay-medium", "ap-pay-large", "ap-no-bank-changes"}
    finally:
        ledger.engine.dispose()
