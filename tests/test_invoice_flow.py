"""The spine end to end on the real dev server: ask, decide, notify, approve, deny, record."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from ap.workflows import InvoiceResult
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.worker import Worker

from tests.conftest import bank_of, pending_status, start_invoice
from tether.core.config import Settings
from tether.governance.approvals import ApprovalDecision, ApprovalOutcome, ApprovalStatus
from tether.governance.signing import sign_decision
from tether.runtime.approvals import signing_key
from tether.worker import Runtime


async def _start(
    client: Client, settings: Settings, invoice: str, started_by: str = "user:bob"
) -> WorkflowHandle[Any, InvoiceResult]:
    text = f"Invoice {invoice} from a vendor"
    return await start_invoice(client, settings, invoice, started_by=started_by, text=text)


async def test_small_invoice_is_paid_automatically(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker
) -> None:
    handle = await _start(client, settings, "INV-1001")
    result = await handle.result()
    assert result.status == "paid" and result.receipt_id
    assert bank_of(runtime).payments("INV-1001") == 1
    kinds = [(e.kind, e.tier, e.outcome) for e in runtime.ledger.events(handle.id)]
    assert kinds == [
        ("model.call", "", "succeeded"),
        ("decision", "auto", "allowed"),
        ("tool.dispatched", "auto", "dispatched"),
        ("tool.executed", "auto", "succeeded"),
    ]
    decision = runtime.ledger.events(handle.id)[1]
    assert decision.rule == "ap-pay-small"
    assert decision.policy_version == runtime.policy.version
    assert runtime.ledger.verify().ok


async def test_medium_invoice_runs_and_notifies(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker
) -> None:
    handle = await _start(client, settings, "INV-1002")
    result = await handle.result()
    assert result.status == "paid"
    kinds = [e.kind for e in runtime.ledger.events(handle.id)]
    assert kinds == ["model.call", "decision", "tool.dispatched", "tool.executed", "notify"]


async def test_bank_change_is_denied_and_nothing_is_paid(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker
) -> None:
    handle = await _start(client, settings, "INV-1004")
    result = await handle.result()
    assert result.status == "denied"
    assert "ap-no-bank-changes" in result.message
    assert bank_of(runtime).payments("INV-1004") == 0
    events = runtime.ledger.events(handle.id)
    assert [(e.kind, e.tier, e.rule) for e in events][-1] == (
        "decision",
        "deny",
        "ap-no-bank-changes",
    )


async def test_large_invoice_waits_for_a_signed_approval(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker
) -> None:
    handle = await _start(client, settings, "INV-1003", started_by="user:bob")
    status = await pending_status(handle, tries=200)
    assert status.pending is not None
    pending = status.pending
    assert runtime.approvals.get(pending.request_id).status is ApprovalStatus.PENDING
    key = signing_key(settings)

    def signed(approver: str, approve: bool = True, comment: str = "") -> ApprovalDecision:
        decision = ApprovalDecision.for_request(
            pending, approver, approve, comment, nonce=uuid.uuid4().hex
        )
        return sign_decision(decision, key)

    # bob holds the approver role but started the workflow; mallory lacks the role.
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("decide", signed("user:bob"))
    assert "cannot approve" in str(refused.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as unauthorised:
        await handle.execute_update("decide", signed("user:mallory"))
    assert "does not hold 'role:ap-approver'" in str(unauthorised.value.cause)
    # alice holds it, but an unsigned decision is only words.
    with pytest.raises(WorkflowUpdateFailedError) as unsigned:
        await handle.execute_update(
            "decide",
            ApprovalDecision(request_id=pending.request_id, approver="user:alice", approve=True),
        )
    assert "not signed" in str(unsigned.value.cause)
    assert bank_of(runtime).payments("INV-1003") == 0

    outcome = await handle.execute_update(
        "decide", signed("user:alice", comment="ok"), result_type=ApprovalOutcome
    )
    assert outcome.status is ApprovalStatus.APPROVED
    result = await handle.result()
    assert result.status == "paid"
    assert bank_of(runtime).payments("INV-1003") == 1
    assert runtime.approvals.get(pending.request_id).status is ApprovalStatus.APPROVED
    kinds = [(e.kind, e.actor) for e in runtime.ledger.events(handle.id)]
    assert ("approval.requested", "user:bob") in kinds
    assert ("approval.decided", "user:alice") in kinds
    refused_by = [a for k, a in kinds if k == "approval.refused"]
    # The unsigned "user:alice" is filed as unverified: nothing vouches for the name.
    assert refused_by == ["user:bob", "user:mallory", "unverified"]
    refusals = [e for e in runtime.ledger.events(handle.id) if e.kind == "approval.refused"]
    claimed = [e.payload["claimed_by"] for e in refusals]
    assert claimed == ["user:bob", "user:mallory", "user:alice"]
    assert [bool(e.payload["signed_by"]) for e in refusals] == [True, True, False]
    assert runtime.ledger.verify().ok
