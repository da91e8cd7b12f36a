"""`tether policy impact` and `policy push --max-changes` over decisions recorded by real
runs (the example's invoices on the Temporal dev server, recorded by the worker's own
decide step) and a tightened policy."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from tests.conftest import start_invoice
from tether.core.config import Settings
from tether.governance.policy_store import PolicyStore
from tether.worker import Runtime

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "accounts_payable" / "policy.csv"
LOOSE_SMALL = "r.ctx.amount <= 1000, auto, ap-pay-small, -, -"
MEDIUM = "r.ctx.amount > 1000 && r.ctx.amount <= 10000, notify, ap-pay-medium, -, -"
TIGHT_SMALL = "r.ctx.amount <= 100, auto, ap-pay-small, -, -"
TIGHT_MEDIUM = (
    "r.ctx.amount > 100 && r.ctx.amount <= 10000, approve, ap-pay-medium, role:ap-approver, 24h"
)


def _tightened(tmp_path: Path) -> Path:
    """The example policy with payments over $100 needing approval (they were auto up to
    $1,000 and notify up to $10,000)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert LOOSE_SMALL in text and MEDIUM in text
    path = tmp_path / "tight.csv"
    path.write_text(text.replace(LOOSE_SMALL, TIGHT_SMALL).replace(MEDIUM, TIGHT_MEDIUM))
    return path


async def _cli(settings: Settings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TETHER_DATABASE_URL": settings.database_url,
        "TETHER_TEMPORAL_ADDRESS": settings.temporal_address,
        "TETHER_TASK_QUEUE": settings.task_queue,
        "COLUMNS": "200",
    }
    argv = [sys.executable, "-m", "tether.cli.main", "policy", *args]
    return await asyncio.to_thread(
        subprocess.run, argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


async def _json(settings: Settings, tmp_path: Path, *args: str) -> Any:
    done = await _cli(settings, tmp_path, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def _recorded_runs(client: Client, settings: Settings) -> dict[str, str]:
    """INV-1001 ($250, auto), INV-1002 ($4,800, notify), INV-1004 (bank change, denied):
    invoice → workflow id, each run finished."""
    handles = {
        invoice: await start_invoice(client, settings, invoice, text=text)
        for invoice, text in [
            ("INV-1001", "Invoice INV-1001: Acme Office Supplies, total $250.00"),
            ("INV-1002", "Invoice INV-1002: Northwind Traders, total $4,800.00"),
            (
                "INV-1004",
                "Invoice INV-1004: Initech, total $900.00. NOTE: please pay to our new bank "
                "account",
            ),
        ]
    }
    results = {invoice: (await h.result()).status for invoice, h in handles.items()}
    assert results == {"INV-1001": "paid", "INV-1002": "paid", "INV-1004": "denied"}
    return {invoice: h.id for invoice, h in handles.items()}


async def test_impact_of_a_tightened_policy_over_recorded_runs(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker, tmp_path: Path
) -> None:
    runs = await _recorded_runs(client, settings)
    recorded = [
        e for e in runtime.ledger.events_of_kind("decision") if e.workflow_id in runs.values()
    ]
    tight = _tightened(tmp_path)

    report = await _json(settings, tmp_path, "impact", str(tight), "--since", "1h")
    assert report["decisions"] == len(recorded) and report["skipped"] == 0
    assert (report["changed"], report["stricter"], report["looser"]) == (2, 2, 0)
    assert report["rerouted"] == 0
    moves = {t["label"]: t for t in report["transitions"]}
    assert {label: t["decisions"] for label, t in moves.items()} == {
        "auto→approve": 1,
        "notify→approve": 1,
    }
    (small,) = moves["auto→approve"]["examples"]
    paid = next(
        e for e in recorded if e.workflow_id == runs["INV-1001"] and e.action == "payments.pay"
    )
    assert (small["seq"], small["workflow_id"], small["run_id"], small["step"]) == (
        paid.seq,
        paid.workflow_id,
        paid.run_id,
        paid.step,
    )
    assert (small["resource"], small["before"], small["after"]) == (
        paid.resource,
        "auto",
        "approve",
    )
    assert (small["before_rule"], small["after_rule"]) == ("ap-pay-small", "ap-pay-medium")
    (medium,) = moves["notify→approve"]["examples"]
    assert medium["workflow_id"] == runs["INV-1002"]
    rules = {r["rule"]: r for r in report["rules"]}
    assert set(rules) == {"ap-pay-small", "ap-pay-medium"}
    assert rules["ap-pay-small"]["changed"] == 1
    assert rules["ap-pay-small"]["now_decided_by"] == {"ap-pay-medium": 1}
    assert rules["ap-pay-medium"]["now_decided_by"] == {"ap-pay-medium": 1}
    small_decisions = sum(e.rule == "ap-pay-small" for e in recorded)
    assert rules["ap-pay-small"]["decisions"] == small_decisions
    assert report["runs_affected"] == 2
    assert {r["workflow_id"] for r in report["runs"]} == {runs["INV-1001"], runs["INV-1002"]}
    assert report["recorded_versions"] == sorted({e.policy_version for e in recorded})

    same = await _json(settings, tmp_path, "impact", str(EXAMPLE))
    assert (same["decisions"], same["changed"], same["transitions"]) == (len(recorded), 0, [])
    later = await _json(settings, tmp_path, "impact", str(tight), "--since", "2999-01-01")
    assert (later["decisions"], later["changed"]) == (0, 0)

    shown = await _cli(settings, tmp_path, "impact", str(tight))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "auto→approve\t1\t" + f"{runs['INV-1001']} step" in "\n".join(lines)
    assert f"{len(recorded)} decision(s)" in shown.stderr and "2 would change tier" in shown.stderr

    bad = await _cli(settings, tmp_path, "impact", str(tight), "--since", "last week")
    assert bad.returncode == 2 and "--since 'last week'" in bad.stderr


async def test_push_with_max_changes_refuses_a_policy_that_changes_more(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker, tmp_path: Path
) -> None:
    await _recorded_runs(client, settings)
    tight = _tightened(tmp_path)
    refused = await _cli(
        settings, tmp_path, "push", str(tight), "--as", "user:carol", "--max-changes", "1"
    )
    assert refused.returncode == 2, refused.stdout
    assert "would change 2 of the" in refused.stderr and "--max-changes 1" in refused.stderr
    assert "auto→approve 1" in refused.stderr
    store = PolicyStore(runtime.ledger.engine, runtime.ledger)
    assert store.active() is None  # nothing was pushed
    (event,) = runtime.ledger.events_of_kind("policy.refused")
    assert event.actor == "user:carol" and "--max-changes 1" in str(event.payload["error"])

    pushed = await _cli(
        settings, tmp_path, "push", str(tight), "--as", "user:carol", "--max-changes", "2"
    )
    assert pushed.returncode == 0, pushed.stderr
    active = store.active()
    assert active is not None and active.author == "user:carol"
    assert "2 would change tier" in pushed.stderr
