"""Decision-ready requests over real HTTP: titled inbox rows, a request page that shows
what the model read and produced (by data class), and approving with edits — the edit is
decided by policy again, the signed approval binds the edited arguments, the bank pays the
edited amount once and the ledger records the edit.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
from ap.bank import PaymentRow
from ap.workflows import InvoiceResult
from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from tests.console_helpers import awaiting_approval, csrf_of, serve, sign_in, stored
from tether.core.config import Settings
from tether.errors import ApprovalError
from tether.governance.approvals import PendingApproval
from tether.runtime.approvals import decide_request, signing_key
from tether.worker import Runtime

pytest_plugins = ["tests.console_fixtures"]


def browser(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, follow_redirects=False, timeout=60)


def paid(runtime: Runtime, invoice: str) -> list[float]:
    """The amounts the demo bank paid for `invoice`."""
    with Session(runtime.ledger.engine) as session:
        rows = session.scalars(select(PaymentRow).where(PaymentRow.invoice_id == invoice))
        return [r.amount for r in rows]


def kinds(runtime: Runtime, workflow_id: str) -> list[str]:
    return [e.kind for e in runtime.ledger.events(workflow_id)]


async def decide_form(
    http: httpx.AsyncClient, pending: PendingApproval, **fields: str
) -> httpx.Response:
    page = await http.get(f"/requests/{pending.request_id}")
    assert page.status_code == 200, page.text
    return await http.post(
        f"/requests/{pending.request_id}/decide", data={"csrf": csrf_of(page.text), **fields}
    )


async def test_inbox_rows_are_titled_and_the_request_shows_what_the_model_read(
    client: Client, csettings: Settings, crt: Runtime, cworker: Worker, base_url: str
) -> None:
    handle, pending = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    assert pending.title == "Pay $25,000.00 to globex for INV-1003"
    assert pending.key_fields["amount"] == "$25,000.00"
    assert pending.editable == ["amount"] and pending.requested_at is not None
    async with browser(base_url) as alice:
        await sign_in(alice, "user:alice")
        inbox = (await alice.get("/inbox")).text
        link = re.search(rf'href="/requests/{pending.request_id}"[^>]*>([^<]*)</a>', inbox)
        assert link and link.group(1) == "Pay $25,000.00 to globex for INV-1003"
        assert ">Decide<" not in inbox
        for column in ("Amount and key fields", "Agent", "Requested by", "Age", "Rule"):
            assert column in inbox
        assert "just now" in inbox and "ap-pay-large" in inbox
        page = (await alice.get(f"/requests/{pending.request_id}")).text
        assert '<h1 id="headline">Pay $25,000.00 to globex for INV-1003</h1>' in page
        assert "amount is more than 10000" in page  # the rule's reason in words
        # The invoice text the model read and the fields it produced (confidential data;
        # the test settings clear role:ap-approver for it).
        assert "confidential data" in page
        assert "Extract the invoice fields as JSON." in page and "Invoice INV-1003" in page
        assert "&#34;vendor&#34;: &#34;globex&#34;" in page or '"vendor": "globex"' in page
        assert 'name="edit.amount" value="25000.0"' in page
        assert 'name="edit.vendor"' not in page
    # Without a clearance for confidential content, the same approver sees it withheld.
    with serve(csettings.model_copy(update={"console_content_roles": {}})) as url:
        async with browser(url) as alice:
            await sign_in(alice, "user:alice")
            page = (await alice.get(f"/requests/{pending.request_id}")).text
            assert "Hidden: your roles are not cleared for confidential content." in page
            assert "Invoice INV-1003" not in page
    await handle.cancel()


async def test_approve_with_an_edit_pays_the_edited_amount_once_and_records_it(
    client: Client, csettings: Settings, crt: Runtime, cworker: Worker, base_url: str
) -> None:
    handle, pending = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    async with browser(base_url) as alice:
        await sign_in(alice, "user:alice")
        bad = await decide_form(alice, pending, verdict="approve", **{"edit.amount": "lots"})
        assert bad.status_code == 400 and "is not a valid value" in bad.text
        # A field the tool does not mark editable is never read from the form.
        done = await decide_form(
            alice,
            pending,
            verdict="approve",
            comment="credit note of 1k applied",
            **{"edit.amount": "24,000", "edit.vendor": "evil-corp"},
        )
        assert done.status_code == 303, done.text
        result: InvoiceResult = await handle.result()
        assert result.status == "paid" and result.receipt_id
        assert paid(crt, "INV-1003") == [24000.0]
        page = (await alice.get(done.headers["location"])).text
        assert "Edited before approval" in page and "<ins>$24,000.00</ins>" in page
    events = crt.ledger.events(handle.id)
    (edited,) = [e for e in events if e.kind == "approval.edited"]
    assert edited.actor == "user:alice"
    assert edited.payload["original_digest"] == pending.args_digest
    assert edited.payload["edits"] == {"amount": 24000.0}
    assert edited.payload["original"] == {"amount": 25000.0}
    redo = [e for e in events if e.kind == "decision" and e.payload.get("edited")]
    assert len(redo) == 1 and redo[0].rule == "ap-pay-large"
    assert redo[0].payload["args_digest"] == edited.payload["edited_digest"]
    (executed,) = [e for e in events if e.kind == "tool.executed"]
    assert executed.payload["args_digest"] == edited.payload["edited_digest"]


async def test_an_edit_never_lowers_the_tier_and_a_raise_past_it_is_decided_anew(
    client: Client, csettings: Settings, crt: Runtime, cworker: Worker, base_url: str
) -> None:
    # Lowered to 500 (policy alone would pay that automatically): still approve-tier.
    low, first = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    async with browser(base_url) as alice:
        await sign_in(alice, "user:alice")
        answer = await decide_form(alice, first, verdict="approve", **{"edit.amount": "500"})
        assert answer.status_code == 303
    assert (await low.result()).status == "paid"
    redo = [e for e in crt.ledger.events(low.id) if e.payload.get("edited")]
    assert [(e.tier, e.rule, e.payload["policy_tier"]) for e in redo] == [
        ("approve", "ap-pay-large", "auto")
    ]
    assert "never lowers the tier" in str(redo[0].payload["reason"])
    # Raised to 150k: the controllers' rule applies, so a controller must approve it too.
    high, second = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    async with browser(base_url) as alice:
        await sign_in(alice, "user:alice")
        answer = await decide_form(alice, second, verdict="approve", **{"edit.amount": "150000"})
        assert answer.status_code == 303
    again = await _reopened(high, second)
    assert again.rule == "ap-pay-huge" and again.edit_of == second.request_id
    assert again.approvers == ["user:olga"] and again.editable == []
    assert again.title == "Pay $150,000.00 to globex for INV-1003"
    assert paid(crt, "INV-1003") == [500.0]  # the first run's; nothing for the raise yet
    async with browser(base_url) as olga:
        await sign_in(olga, "user:olga")
        assert "Pay $150,000.00 to globex" in (await olga.get("/inbox")).text
        answer = await decide_form(olga, await stored(crt, again), verdict="approve")
        assert answer.status_code == 303
    assert (await high.result()).status == "paid"
    assert sorted(paid(crt, "INV-1003")) == [500.0, 150000.0]
    # Each request of the step, the edited one and the one asked anew, has its record.
    recorded = kinds(crt, high.id)
    assert recorded.count("approval.requested") == 2 and recorded.count("approval.decided") == 2


async def test_a_forged_edit_is_refused_and_recorded(
    client: Client, csettings: Settings, crt: Runtime, cworker: Worker
) -> None:
    handle, pending = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    key = signing_key(csettings)
    try:
        await decide_request(
            client,
            crt.approvals,
            crt.ledger,
            pending.request_id,
            approver="user:alice",
            approve=True,
            key=key,
            edits={"vendor": "evil-corp"},
        )
    except ApprovalError as exc:
        assert "'vendor'" in str(exc) and "not editable" in str(exc)
    else:
        raise AssertionError("an edit of a field the tool does not mark editable counted")
    refused = [e for e in crt.ledger.events(handle.id) if e.kind == "approval.refused"]
    assert len(refused) == 1 and "not editable" in str(refused[0].payload["why"])
    assert paid(crt, "INV-1003") == []
    await handle.cancel()


async def _reopened(
    handle: WorkflowHandle[Any, InvoiceResult], edited: PendingApproval
) -> PendingApproval:
    from tether.workflows.agent import AgentStatus

    for _ in range(200):
        status: AgentStatus = await handle.query("status", result_type=AgentStatus)
        if status.pending is not None and status.pending.request_id != edited.request_id:
            return status.pending
        await asyncio.sleep(0.05)
    raise AssertionError("the raised edit was not re-requested")
