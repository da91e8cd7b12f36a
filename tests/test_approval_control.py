"""Control-plane findings of the outside red team, on the real dev server.

Approve and reject sent at once (each attempt answered truthfully and recorded), a
hand-made `halt` (refused unless a kill switch backs it), name variants of the requester
(one person, one name), and who is an agent (the policy's roles, everywhere).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client
from temporalio.worker import Worker

from tests import test_approvals as base
from tests.approval_app import PayAmountInput, PayAmountResult, PayAmountWorkflow
from tests.conftest import bank_of, new_id, replayer_for
from tests.test_approvals import POLICY, _events, _pay, _pending, _refused, _signed
from tests.test_cli import tether
from tether.core.config import Settings
from tether.errors import ApprovalError, InvalidNameError, PolicyError
from tether.governance.agents import is_agent
from tether.governance.approvals import (
    ApprovalDecision,
    ApprovalOutcome,
    ApprovalStatus,
    HaltRequest,
    PendingApproval,
    check_approval,
)
from tether.governance.lint import lint
from tether.governance.policy import PolicyEngine
from tether.governance.policy_store import PolicyStore
from tether.runtime.approvals import decide_request
from tether.runtime.client import start_task
from tether.runtime.sweep import close_ended
from tether.worker import Runtime

MODEL = Settings().policy_model.read_text()
# The approval tests' fixtures: policy, runtime, worker, the approving service's key.
approval_settings, app, app_worker, key = (
    base.approval_settings,
    base.app,
    base.app_worker,
    base.key,
)


async def test_approve_and_reject_at_once_each_attempt_is_answered_truthfully_and_recorded(
    client: Client,
    approval_settings: Settings,
    app: Runtime,
    app_worker: Worker,
    key: Ed25519PrivateKey,
) -> None:
    for _ in range(3):
        handle = await _pay(client, approval_settings, 20000)
        pending = await _pending(handle)
        answers = await asyncio.gather(
            decide_request(
                client,
                app.approvals,
                app.ledger,
                pending.request_id,
                approver="user:alice",
                approve=True,
                key=key,
            ),
            decide_request(
                client,
                app.approvals,
                app.ledger,
                pending.request_id,
                approver="user:dave",
                approve=False,
                comment="no",
                key=key,
            ),
            return_exceptions=True,
        )
        won = [a for a in answers if isinstance(a, ApprovalOutcome)]
        lost = [a for a in answers if isinstance(a, ApprovalError)]
        assert len(won) == 1 and len(lost) == 1, answers
        winner = won[0].approver
        loser = ({"user:alice", "user:dave"} - {winner}).pop()
        assert "already decided" in str(lost[0]) and repr(loser) in str(lost[0])
        result = await handle.result()
        want = {ApprovalStatus.APPROVED: "paid", ApprovalStatus.REJECTED: "rejected"}
        assert result.status == want[won[0].status]
        [decided] = await _events(app, handle.id, "approval.decided", 1)
        assert (decided.outcome, decided.actor) == (won[0].status.value, winner)
        [refused] = await _events(app, handle.id, "approval.refused", 1)
        assert refused.actor == loser and "already decided" in str(refused.payload["why"])


async def test_a_hand_made_halt_is_refused_recorded_and_decides_nothing(
    client: Client,
    approval_settings: Settings,
    app: Runtime,
    app_worker: Worker,
    key: Ed25519PrivateKey,
) -> None:
    handle = await _pay(client, approval_settings, 20000)
    pending = await _pending(handle)
    await handle.signal("halt", HaltRequest(reason="looks odd", engaged_by="user:alice"))
    [refused] = await _events(app, handle.id, "halt.refused", 1)
    assert refused.actor == "user:alice" and "no engaged kill switch" in str(refused.payload)
    assert (await _pending(handle)).request_id == pending.request_id
    assert app.approvals.get(pending.request_id).status is ApprovalStatus.PENDING
    await handle.execute_update("decide", _signed(pending, "user:dave", key))
    assert (await handle.result()).status == "paid"
    [decided] = await _events(app, handle.id, "approval.decided", 1)
    assert (decided.outcome, decided.actor) == ("approved", "user:dave")
    await _replays(handle)


async def _replays(handle: Any) -> None:
    """The run's history (with the new patches' markers) replays on today's code."""
    history = await handle.fetch_history()
    await replayer_for(PayAmountWorkflow).replay_workflow(history)


async def test_a_name_variant_of_the_requester_never_approves(
    client: Client,
    approval_settings: Settings,
    app: Runtime,
    app_worker: Worker,
    key: Ed25519PrivateKey,
) -> None:
    with pytest.raises(InvalidNameError, match="'user:bob '"):
        await _start(client, approval_settings, "user:bob ")
    # Through start_task the memo holds the canonical name.
    started = await _start(client, approval_settings, "user:Bob")
    first = await _pending(started)
    assert first.requested_by == "user:bob"
    await started.execute_update("decide", _signed(first, "user:alice", key, approve=False))
    # A run started by a raw client (or before names were canonical) keeps its spelling;
    # separation of duties compares the person, not the spelling.
    for variant in ("user:Bob", "user:bob ", "\uff35\uff33\uff25\uff32:\uff22\uff2f\uff22"):
        raw = await client.start_workflow(
            "PayAmountTest",
            PayAmountInput(amount=20000),
            id=new_id("pay"),
            task_queue=approval_settings.task_queue,
            memo={"started_by": variant, "tenant": "default"},
            result_type=PayAmountResult,
        )
        pending = await _pending(raw)
        with pytest.raises(ApprovalError, match="cannot approve"):
            await decide_request(
                client,
                app.approvals,
                app.ledger,
                pending.request_id,
                approver="User:BOB",
                approve=True,
                key=key,
            )
        why = await _refused(raw, _signed(pending, "user:Bob", key))
        assert "not written canonically; send 'user:bob'" in why
        await raw.execute_update("decide", _signed(pending, "user:alice", key, approve=False))
        assert (await raw.result()).status == "rejected"
    assert bank_of(app).payments("INV-T") == 0


async def _start(client: Client, settings: Settings, started_by: str) -> Any:
    return await start_task(
        client,
        "PayAmountTest",
        PayAmountInput(amount=20000),
        workflow_id=new_id("pay"),
        task_queue=settings.task_queue,
        started_by=started_by,
        result_type=PayAmountResult,
    )


async def test_a_terminated_runs_request_is_closed_recorded_and_leaves_the_cap(
    client: Client,
    approval_settings: Settings,
    app: Runtime,
    app_worker: Worker,
    key: Ed25519PrivateKey,
    tmp_path: Path,
) -> None:
    first = [await _pay(client, approval_settings, 20000) for _ in range(2)]
    pendings = [await _pending(h) for h in first]
    for handle in first:
        await handle.terminate("stuck")
    third = await _pay(client, approval_settings, 20000)
    await _events(app, third.id, "agent.paused", 1)  # the cap (2) counts the ended runs
    # Listing notices the ended runs and closes their requests.
    listed = await tether(approval_settings, tmp_path, "approvals", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    open_ids = {p["request_id"] for p in json.loads(listed.stdout)}
    assert not open_ids & {p.request_id for p in pendings}
    for pending, handle in zip(pendings, first, strict=True):
        assert app.approvals.get(pending.request_id).status is ApprovalStatus.CLOSED
        [closed] = await _events(app, handle.id, "approval.closed", 1)
        assert (closed.outcome, closed.payload["run_status"]) == ("closed", "terminated")
    # The paused agent asks again, within its cap now.
    third_pending = await _pending(third)
    await third.execute_update("decide", _signed(third_pending, "user:alice", key))
    assert (await third.result()).status == "paid"
    # A decision on a closed request is told so.
    with pytest.raises(ApprovalError, match="is closed"):
        await decide_request(
            client,
            app.approvals,
            app.ledger,
            pendings[0].request_id,
            approver="user:alice",
            approve=True,
            key=key,
        )


async def test_a_decision_that_cannot_reach_its_ended_run_closes_the_request(
    client: Client,
    approval_settings: Settings,
    app: Runtime,
    app_worker: Worker,
    key: Ed25519PrivateKey,
) -> None:
    handle = await _pay(client, approval_settings, 20000)
    pending = await _pending(handle)
    await handle.terminate("stuck")
    with pytest.raises(ApprovalError, match=r"no longer accepts decisions.*is closed"):
        await decide_request(
            client,
            app.approvals,
            app.ledger,
            pending.request_id,
            approver="user:alice",
            approve=True,
            key=key,
        )
    assert app.approvals.get(pending.request_id).status is ApprovalStatus.CLOSED
    assert await close_ended(client, app.approvals, app.ledger) == []


BOT_POLICY = POLICY + "g, svc:bot, role:ap-agent\ng2, svc:bot, role:ap-approver\n"


def test_who_is_an_agent_is_decided_by_the_policy_roles_everywhere(
    app: Runtime, tmp_path: Any
) -> None:
    engine = PolicyEngine.from_texts(MODEL, BOT_POLICY, "bot")
    assert is_agent("svc:bot", engine.agents) and not is_agent("user:alice", engine.agents)
    # The approval path: svc:bot is never an approver, so its approval is refused.
    assert "svc:bot" not in engine.members("role:ap-approver")
    pending = PendingApproval(
        request_id="apr-1",
        workflow_id="w",
        run_id="r",
        step=1,
        agent="agent:ap-clerk",
        action="payments.pay",
        resource="vendor/globex",
        args_summary="",
        args_digest="d",
        reason="",
        rule="big",
        policy_version=engine.version,
        requested_by="user:bob",
        approver_role="role:ap-approver",
        approvers=engine.members("role:ap-approver"),
        deadline=datetime.now(UTC) + timedelta(hours=1),
    )
    decision = ApprovalDecision(request_id="apr-1", approver="svc:bot", approve=True)
    with pytest.raises(ApprovalError, match="'svc:bot' does not hold"):
        check_approval(pending, decision, datetime.now(UTC))
    # Lint flags it (an error: the policy is refused at load and push).
    [finding] = [f for f in lint(MODEL, BOT_POLICY) if f.check == "agent-approver"]
    assert finding.severity == "error" and "'svc:bot'" in finding.message
    # `policy push` calls the same subject an agent.
    store = PolicyStore(app.ledger.engine, app.ledger)
    with pytest.raises(PolicyError, match="'svc:bot' is an agent identity"):
        store.push(MODEL, POLICY + "g, svc:bot, role:ap-agent\n", "svc:bot")
