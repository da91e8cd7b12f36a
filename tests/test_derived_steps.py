"""Decisions the author cannot bend, on the real dev server: the action, resource and
policy context of a governed step come from the tool and its arguments (an author's
contradicting claim is refused and recorded, and the tool refuses a decision taken for
anything else), and a decided step is re-checked when its tool is dispatched (a kill
switch refuses it, a tightened policy or an expired approval governs it anew)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from tests.conftest import new_id, replayer_for
from tests.derive_app import (
    DecideAndCallWorkflow,
    DeriveRefundWorkflow,
    HeldRefundWorkflow,
    ProbeInput,
    RefundInput,
    RefundResult,
    SupportTools,
)
from tether.activities.tools import tool
from tether.core.config import Settings
from tether.errors import ErrorType
from tether.governance.approvals import PendingApproval
from tether.governance.derive import MISDECLARED_RULE
from tether.runtime.approvals import decide_request, signing_key
from tether.runtime.client import start_task
from tether.verification.events import RecordedEvent, digest
from tether.worker import Runtime, build_worker
from tether.workflows import AgentStatus

POLICY = """\
p, role:support, order/:id, orders.read, True, auto, read, -, -
p, role:support, order/:id, refunds.issue, r.ctx.amount <= {small}, auto, refund-small, -, -
p, role:support, order/:id, refunds.issue, r.ctx.amount > {small}, approve, refund-large, \
role:lead, {timeout}
g, agent:support-bot, role:support
g2, user:lee, role:lead
{extra}"""


def policy(small: int = 100, timeout: str = "60s", extra: str = "") -> str:
    return POLICY.format(small=small, timeout=timeout, extra=extra)


@pytest.fixture
def tools() -> SupportTools:
    return SupportTools()


@pytest.fixture
def derive_settings(settings: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "support.csv"
    path.write_text(policy())
    return settings.model_copy(update={"policy_path": path})


@pytest.fixture
def app(derive_settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime.from_settings(derive_settings)
    yield runtime
    runtime.ledger.engine.dispose()


@pytest.fixture
async def app_worker(
    client: Client, derive_settings: Settings, app: Runtime, tools: SupportTools
) -> AsyncIterator[Worker]:
    w = build_worker(
        client,
        derive_settings,
        app,
        extra_workflows=[DeriveRefundWorkflow, HeldRefundWorkflow, DecideAndCallWorkflow],
        extra_tools=[tools],
    )
    async with w:
        yield w


async def _start(
    client: Client, settings: Settings, inp: RefundInput, workflow: str = "DeriveRefund"
) -> WorkflowHandle[Any, RefundResult]:
    return await start_task(
        client,
        workflow,
        inp,
        workflow_id=new_id(workflow.lower()),
        task_queue=settings.task_queue,
        started_by="user:dana",
        result_type=RefundResult,
    )


async def _until(what: str, check: Any, tries: int = 400) -> Any:
    for _ in range(tries):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def _pending(handle: WorkflowHandle[Any, Any], not_id: str = "") -> PendingApproval:
    async def asked() -> PendingApproval | None:
        status: AgentStatus = await handle.query("status", result_type=AgentStatus)
        pending = status.pending
        return pending if pending is not None and pending.request_id != not_id else None

    found: PendingApproval = await _until(f"{handle.id} asks for approval", asked)
    return found


async def _approve(client: Client, settings: Settings, app: Runtime, pending: Any) -> None:
    await decide_request(
        client,
        app.approvals,
        app.ledger,
        pending.request_id,
        approver="user:lee",
        approve=True,
        key=signing_key(settings),
    )


async def _held(handle: WorkflowHandle[Any, Any]) -> None:
    async def holding() -> bool:
        held: bool = await handle.query("holding", result_type=bool)
        return held

    await _until(f"{handle.id} holds its step before dispatch", holding)


def _events(app: Runtime, workflow_id: str, kind: str) -> list[RecordedEvent]:
    return [e for e in app.ledger.events(workflow_id) if e.kind == kind]


# -- derived, not declared -------------------------------------------------------------------


async def test_act_derives_action_resource_and_context_from_the_tool(
    client: Client,
    derive_settings: Settings,
    app: Runtime,
    app_worker: Worker,
    tools: SupportTools,
) -> None:
    handle = await _start(client, derive_settings, RefundInput(amount=900))
    pending = await _pending(handle)
    assert (pending.action, pending.resource, pending.rule) == (
        "refunds.issue",
        "order/A-1",
        "refund-large",
    )
    [decided] = _events(app, handle.id, "decision")
    assert decided.payload["context"] == {"amount": 900.0}
    assert decided.payload["context_digest"] == digest({"amount": 900.0})
    assert decided.payload["tool"] == "derive_issue_refund"
    await _approve(client, derive_settings, app, pending)
    assert (await handle.result()).status == "refunded"

    # The older form, whose claims agree with the tool, still runs; so do added keys.
    legacy = await _start(client, derive_settings, RefundInput(mode="legacy", amount=50))
    assert (await legacy.result()).status == "refunded"
    added = RefundInput(mode="added", amount=50, context={"channel": "email", "amount": 50})
    more = await _start(client, derive_settings, added)
    assert (await more.result()).status == "refunded"
    [with_extra] = _events(app, more.id, "decision")
    assert with_extra.payload["context"] == {"amount": 50.0, "channel": "email"}
    assert [a.amount for a in tools.refunds] == [900.0, 50.0, 50.0]


@pytest.mark.parametrize(
    ("mode", "claimed"),
    [
        ("wrong_action", "act() was given the action 'orders.read'"),
        ("wrong_resource", "act() was given the resource 'order/A-2'"),
        ("understated", "act() context amount=5 contradicts the argument amount=900.0"),
    ],
)
async def test_a_claim_that_contradicts_the_tool_is_refused_and_recorded(
    client: Client,
    derive_settings: Settings,
    app: Runtime,
    app_worker: Worker,
    tools: SupportTools,
    mode: str,
    claimed: str,
) -> None:
    handle = await _start(client, derive_settings, RefundInput(mode=mode, amount=900))
    result = await handle.result()
    assert (result.status, result.rule) == ("denied", MISDECLARED_RULE)
    assert result.error_type == ErrorType.ACTION_MISDECLARED
    assert claimed in result.message
    [decided] = _events(app, handle.id, "decision")
    assert (decided.tier, decided.rule, decided.outcome) == ("deny", MISDECLARED_RULE, "denied")
    # The ledger names what was done (the tool's) and what the author claimed.
    assert (decided.action, decided.resource) == ("refunds.issue", "order/A-1")
    assert claimed in str(decided.payload["refused"])
    assert decided.payload["context"] == {"amount": 900.0}
    assert isinstance(decided.payload["claimed"], dict)
    assert not [e for e in app.ledger.events(handle.id) if e.kind.startswith("tool.")]
    assert tools.refunds == []


@pytest.mark.parametrize(
    ("action", "resource", "context", "refusal"),
    [
        ("orders.read", "order/A-1", {"amount": 900.0}, "for the action 'orders.read'"),
        ("refunds.issue", "order/A-2", {"amount": 900.0}, "on the resource 'order/A-2'"),
        ("refunds.issue", "order/A-1", {"amount": 5}, "on the context {'amount': 5}"),
    ],
)
async def test_the_tool_refuses_a_decision_taken_for_anything_else(
    client: Client,
    derive_settings: Settings,
    app: Runtime,
    app_worker: Worker,
    tools: SupportTools,
    action: str,
    resource: str,
    context: dict[str, Any],
    refusal: str,
) -> None:
    """The backstop behind act(): a workflow that asks the policy itself, about another
    action, resource or context, and then calls the tool activity gets nothing done."""
    probe = ProbeInput(
        action=action, resource=resource, context=context, args={"order_id": "A-1", "amount": 900}
    )
    workflow_id = new_id("probe")
    with pytest.raises(WorkflowFailureError) as failed:
        await client.execute_workflow(
            "DeriveProbe", probe, id=workflow_id, task_queue=derive_settings.task_queue
        )
    cause = failed.value.cause.__cause__
    assert isinstance(cause, ApplicationError) and cause.type == ErrorType.TOOL_REFUSED
    assert refusal in cause.message
    [refused] = _events(app, workflow_id, "tool.refused")
    assert refused.payload["check"] == "decision" and refusal in str(refused.payload["why"])
    assert tools.refunds == []


class Args(BaseModel):
    vendor: str
    amount: float


def test_a_tool_declares_its_context_by_name_and_type() -> None:
    with pytest.raises(TypeError, match="context field 'amont' is not an argument field"):

        @tool(action="a.b", resource="v/{vendor}", context={"amont": float})
        async def misspelt(args: Args) -> Args:
            return args

    with pytest.raises(TypeError, match="context field 'vendor' is declared float"):

        @tool(action="a.b", resource="v/{vendor}", context={"vendor": float})
        async def typed(args: Args) -> Args:
            return args

    with pytest.raises(TypeError, match=r"resource 'v/\{name\}' names 'name'"):

        @tool(action="a.b", resource="v/{name}")
        async def unnamed(args: Args) -> Args:
            return args


# -- re-checked at dispatch ------------------------------------------------------------------


async def test_a_kill_switch_engaged_between_approval_and_dispatch_refuses_the_tool(
    client: Client,
    derive_settings: Settings,
    app: Runtime,
    app_worker: Worker,
    tools: SupportTools,
) -> None:
    handle = await _start(client, derive_settings, RefundInput(amount=900), "DeriveHeldRefund")
    await _approve(client, derive_settings, app, await _pending(handle))
    await _held(handle)
    app.kills.engage("agent", "agent:support-bot", reason="incident 7", engaged_by="user:ops")
    await handle.signal("go")
    result = await handle.result()
    assert (result.status, result.error_type) == ("halted", ErrorType.ACTION_HALTED)
    assert "halted at dispatch" in result.message and "incident 7" in result.message
    [refused] = _events(app, handle.id, "tool.refused")
    assert refused.payload["check"] == "kill_switch"
    assert "incident 7" in str(refused.payload["why"])
    assert tools.refunds == []
    await replayer_for(HeldRefundWorkflow).replay_workflow(await handle.fetch_history())


async def test_a_kill_switch_engaged_before_a_retry_refuses_the_retry(
    client: Client,
    derive_settings: Settings,
    app: Runtime,
    app_worker: Worker,
    tools: SupportTools,
) -> None:
    tools.fail_first = 1
    tools.while_failing = lambda: (
        app.kills.engage("action", "refunds.issue", reason="stop refunds", engaged_by="user:ops"),
        None,
    )[1]
    handle = await _start(client, derive_settings, RefundInput(amount=50))
    result = await handle.result()
    assert result.status == "halted" and "stop refunds" in result.message
    assert [e.outcome for e in app.ledger.events(handle.id) if e.kind.startswith("tool.")] == [
        "dispatched",
        "failed",
        "refused",
    ]
    assert tools.refunds == []


async def test_a_policy_tightened_between_decision_and_dispatch_governs_the_step_anew(
    client: Client,
    derive_settings: Settings,
    app: Runtime,
    app_worker: Worker,
    tools: SupportTools,
) -> None:
    handle = await _start(client, derive_settings, RefundInput(amount=50), "DeriveHeldRefund")
    await _held(handle)
    [first] = _events(app, handle.id, "decision")
    assert (first.tier, first.rule) == ("auto", "refund-small") and first.step is not None
    derive_settings.policy_path.write_text(policy(small=10))  # $50 now needs a lead
    assert app.policies.reload()
    await handle.signal("go")

    pending = await _pending(handle)
    [refused] = _events(app, handle.id, "tool.refused")
    assert refused.step == first.step and refused.payload["check"] == "policy_changed"
    assert "refund-large" in str(refused.payload["why"])
    again = _events(app, handle.id, "decision")[1]
    assert (again.step, again.tier, again.rule) == (first.step + 1, "approve", "refund-large")
    assert again.policy_version == app.policies.current().version != first.policy_version
    assert again.payload["regoverns"] == first.step
    assert tools.refunds == []
    await _approve(client, derive_settings, app, pending)
    assert (await handle.result()).status == "refunded"
    # Governed anew, the step is still the same effect: its target sees the same key.
    assert tools.keys == [first.payload["idempotency_key"]]
    assert again.payload["idempotency_key"] == first.payload["idempotency_key"]
    # The governed-anew path (the dispatch-recheck patch) replays deterministically.
    history = await handle.fetch_history()
    await replayer_for(HeldRefundWorkflow).replay_workflow(history)


async def test_a_policy_that_now_denies_the_step_denies_it_at_dispatch(
    client: Client,
    derive_settings: Settings,
    app: Runtime,
    app_worker: Worker,
    tools: SupportTools,
) -> None:
    handle = await _start(client, derive_settings, RefundInput(amount=50), "DeriveHeldRefund")
    await _held(handle)
    deny = "p, role:support, order/:id, refunds.issue, True, deny, refunds-frozen, -, -\n"
    derive_settings.policy_path.write_text(policy(extra=deny))
    assert app.policies.reload()
    await handle.signal("go")
    result = await handle.result()
    assert (result.status, result.rule) == ("denied", "refunds-frozen")
    [refused] = _events(app, handle.id, "tool.refused")
    assert refused.payload["check"] == "policy_changed"
    assert [(d.tier, d.rule) for d in _events(app, handle.id, "decision")] == [
        ("auto", "refund-small"),
        ("deny", "refunds-frozen"),
    ]
    assert tools.refunds == []


async def test_a_policy_change_that_asks_no_more_lets_the_tool_run(
    client: Client,
    derive_settings: Settings,
    app: Runtime,
    app_worker: Worker,
    tools: SupportTools,
) -> None:
    handle = await _start(client, derive_settings, RefundInput(amount=50), "DeriveHeldRefund")
    await _held(handle)
    unrelated = "p, role:support, order/:id, orders.cancel, True, auto, cancel, -, -\n"
    derive_settings.policy_path.write_text(policy(extra=unrelated))
    assert app.policies.reload()
    await handle.signal("go")
    assert (await handle.result()).status == "refunded"
    assert _events(app, handle.id, "tool.refused") == []
    assert len(tools.refunds) == 1


async def test_an_approval_that_expired_before_dispatch_is_asked_again(
    client: Client,
    derive_settings: Settings,
    app: Runtime,
    app_worker: Worker,
    tools: SupportTools,
) -> None:
    derive_settings.policy_path.write_text(policy(timeout="4s"))
    assert app.policies.reload()
    handle = await _start(client, derive_settings, RefundInput(amount=900), "DeriveHeldRefund")
    first = await _pending(handle)
    await _approve(client, derive_settings, app, first)
    await _held(handle)
    [decided] = _events(app, handle.id, "approval.decided")
    granted = datetime.fromisoformat(decided.recorded_at)

    async def past_validity() -> bool:
        return datetime.now(UTC) > granted + timedelta(seconds=6)

    await _until("the approval is older than its rule's 4 s", past_validity, tries=400)
    await handle.signal("go")
    second = await _pending(handle, not_id=first.request_id)
    [refused] = _events(app, handle.id, "tool.refused")
    assert refused.payload["check"] == "approval_expired"
    assert second.step == first.step + 1
    assert tools.refunds == []
    await _approve(client, derive_settings, app, second)
    assert (await handle.result()).status == "refunded"
    assert len(tools.refunds) == 1
