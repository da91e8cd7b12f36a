"""tether.testing: the author's fixtures and kit, used as an author would, on the example app
this repository's tether.toml declares (a real dev server, the project's policy and script)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from ap.bank import Bank
from ap.workflows import InvoiceInput, PayInvoiceWorkflow

from tether.core.config import Settings
from tether.errors import ApprovalError, TetherError
from tether.governance.reviews import ReviewStatus
from tether.testing import Kit, ScriptEntry
from tether.testing.plugin import asyncio_plugin_problem
from tether.verification.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent


def invoice(number: str, text: str = "") -> InvoiceInput:
    return InvoiceInput(invoice_id=number, text=text or f"Invoice {number}")


def test_settings_are_the_projects_with_a_fresh_database_and_queue(
    tether_settings: Settings, tmp_path: Path
) -> None:
    assert tether_settings.policy_path == ROOT / "examples/accounts_payable/policy.csv"
    assert tether_settings.model_script == ROOT / "examples/accounts_payable/script.json"
    assert tether_settings.app.workflows == ["ap.workflows:PayInvoiceWorkflow"]
    assert tether_settings.database_url == f"sqlite:///{tmp_path / 'tether' / 'tether.db'}"
    assert tether_settings.task_queue.startswith("tether-test-")
    # Keys are the test's own too: another test's checkpoint key never signs this one's.
    for key in (tether_settings.approval_key, tether_settings.checkpoint_key):
        assert key.is_relative_to(tmp_path), key


def test_the_testing_extra_requires_the_pytest_asyncio_the_kit_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    testing = project["project"]["optional-dependencies"]["testing"]
    assert "pytest-asyncio>=0.24" in testing
    lines = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    pins = dict(line.split("==", 1) for line in lines if "==" in line and line[:1] != "#")
    assert asyncio_plugin_problem(pins["pytest-asyncio"]) == ""
    assert asyncio_plugin_problem(importlib.metadata.version("pytest-asyncio")) == ""
    old = asyncio_plugin_problem("0.23.8")
    assert "pytest-asyncio >= 0.24, not '0.23.8'" in old and "pip install" in old
    assert "pip install" in asyncio_plugin_problem(None)


async def test_an_auto_run_is_recorded(tether_kit: Kit, tether_ledger: Ledger) -> None:
    result = await tether_kit.run(
        PayInvoiceWorkflow.run, invoice("INV-1001"), as_user="user:bob", workflow_id="auto-1"
    )
    assert (result.status, result.amount) == ("paid", 250.0)
    [decision] = tether_kit.events("auto-1", "decision")
    assert (decision.tier, decision.rule) == ("auto", "ap-pay-small")
    assert tether_kit.events("auto-1") == tether_ledger.events("auto-1")
    assert Bank(tether_ledger.engine).payments("INV-1001") == 1


async def test_approval_by_another_person_after_self_approval_is_refused(
    tether_kit: Kit,
) -> None:
    handle = await tether_kit.start(PayInvoiceWorkflow.run, invoice("INV-1003"), as_user="user:bob")
    # Straight after the start: approve waits for the request to exist.
    with pytest.raises(ApprovalError, match="cannot approve"):
        await tether_kit.approve(handle, as_user="user:bob")
    pending = await tether_kit.wait_for_approval(handle)
    assert (pending.rule, pending.requested_by) == ("ap-pay-large", "user:bob")
    outcome = await tether_kit.approve(pending, as_user="user:alice", comment="checked")
    assert outcome.approver == "user:alice"
    result = await handle.result()
    assert (result.status, result.receipt_id is not None) == ("paid", True)
    [refused] = tether_kit.events(handle, "approval.refused")
    assert refused.actor == "user:bob"
    decided = tether_kit.events(handle, "approval.decided")
    assert [(e.actor, e.outcome) for e in decided] == [("user:alice", "approved")]


async def test_rejection_reaches_the_workflow(tether_kit: Kit) -> None:
    handle = await tether_kit.start(PayInvoiceWorkflow.run, invoice("INV-1003"), as_user="user:bob")
    await tether_kit.reject(handle, as_user="user:alice", reason="not our vendor")
    result = await handle.result()
    assert result.status == "rejected" and "not our vendor" in result.message
    assert Bank(tether_kit.ledger.engine).payments("INV-1003") == 0


async def test_a_flag_right_after_the_run_waits_for_the_window(tether_kit: Kit) -> None:
    result = await tether_kit.run(
        PayInvoiceWorkflow.run, invoice("INV-1002"), as_user="user:bob", workflow_id="flag-1"
    )
    assert result.status == "paid"
    outcome = await tether_kit.flag_review("flag-1", as_user="user:carol", reason="wrong vendor")
    assert (outcome.status, outcome.compensation) == (ReviewStatus.COMPENSATED, "refund_vendor")
    [refund] = Bank(tether_kit.ledger.engine).refunds("INV-1002")
    assert refund.amount == 4800.0
    window = await tether_kit.wait_for_review("flag-1")
    assert (window.status, window.flagged_by) == (ReviewStatus.COMPENSATED, "user:carol")


async def test_a_scripted_run_leaves_the_workers_other_runs_alone(tether_kit: Kit) -> None:
    large = ScriptEntry(
        task="extract",
        output={"invoice_id": "INV-1001", "vendor": "acme-office", "amount": 25000.0},
    )
    scripted = await tether_kit.start(
        PayInvoiceWorkflow.run, invoice("INV-1001"), as_user="user:bob", script=[large]
    )
    plain = await tether_kit.start(PayInvoiceWorkflow.run, invoice("INV-1001"), as_user="user:bob")
    assert (await plain.result()).amount == 250.0
    assert (await tether_kit.wait_for_approval(scripted)).rule == "ap-pay-large"
    await tether_kit.approve(scripted, as_user="user:alice")
    assert (await scripted.result()).amount == 25000.0
    models = {
        h.id: tether_kit.events(h, "model.call")[0].payload["model"] for h in (scripted, plain)
    }
    assert models == {scripted.id: "scripted-test", plain.id: "scripted-ap-1"}


async def test_a_run_script_without_a_fitting_entry_falls_back_to_the_project(
    tether_kit: Kit,
) -> None:
    tether_kit.script_model("fallback-1", ScriptEntry(task="extract", match="nowhere", output=1))
    result = await tether_kit.run(
        PayInvoiceWorkflow.run, invoice("INV-1001"), as_user="user:bob", workflow_id="fallback-1"
    )
    assert result.amount == 250.0
    assert tether_kit.events("fallback-1", "model.call")[0].payload["model"] == "scripted-ap-1"


async def test_waiting_for_an_approval_a_run_never_asks_for_fails_fast(tether_kit: Kit) -> None:
    handle = await tether_kit.start(PayInvoiceWorkflow.run, invoice("INV-1001"), as_user="user:bob")
    with pytest.raises(AssertionError, match=r"ended \(COMPLETED\) without an open approval"):
        await tether_kit.wait_for_approval(handle, timeout=20)


async def test_a_kit_used_from_another_event_loop_says_how_to_configure(
    tether_kit: Kit,
) -> None:
    async def build() -> Kit:
        return Kit(tether_kit.client, tether_kit.settings, tether_kit.runtime)

    elsewhere = await asyncio.to_thread(asyncio.run, build())  # built in a loop of its own
    with pytest.raises(TetherError, match="asyncio_default_test_loop_scope"):
        await elsewhere.start(PayInvoiceWorkflow.run, invoice("INV-1001"), as_user="user:bob")


async def test_the_time_skipping_kit_lets_a_deadline_pass(tether_time_kit: Kit) -> None:
    result = await tether_time_kit.run(
        PayInvoiceWorkflow.run, invoice("INV-1003"), as_user="user:bob", workflow_id="skip-1"
    )
    assert result.status == "rejected" and "expired" in result.message
    decided = tether_time_kit.events("skip-1", "approval.decided")
    assert [(e.actor, e.outcome) for e in decided] == [("deadline", "expired")]


def test_the_plugin_is_inert_in_a_project_that_uses_none_of_it(tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text("def test_plain() -> None:\n    assert True\n")
    pytest_run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    listed = subprocess.run(
        [*pytest_run, "--fixtures"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for name in ("tether_env", "tether_kit", "tether_worker", "tether_time_kit"):
        assert name in listed.stdout
    plain = subprocess.run(pytest_run, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and "1 passed" in plain.stdout, plain.stdout + plain.stderr
    # Loading the plugin imports neither the Temporal SDK nor Tether's runtime.
    probe = "import sys, tether.testing.plugin; print(sorted(m for m in sys.modules " + (
        "if m.split('.')[0] == 'temporalio' or m.startswith('tether.worker')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


def test_the_kit_exports_a_deliberate_surface() -> None:
    import tether.testing

    assert tether.testing.__all__ == [
        "Kit",
        "RunScripts",
        "ScriptEntry",
        "find_config",
        "project_settings",
        "running_kit",
    ]
    for name in tether.testing.__all__:
        assert getattr(tether.testing, name).__name__ == name
