"""A test application for derived decisions and the dispatch re-check: a support agent's
refunds, called the way an author might (rightly or not), and a run held between its
decision and the tool's dispatch (where the world may change)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, Field, JsonValue

    from tether.activities.governance import GovernanceActivities
    from tether.activities.payloads import DecideInput, StepRef, ToolCall
    from tether.activities.tools import ToolSpec, tool, tool_context
    from tether.governance.types import Decision
    from tether.verification.events import digest
    from tether.workflows.agent import AgentWorkflow
    from tether.workflows.errors import ActionDenied, ActionHalted, ActionRejected


class RefundArgs(BaseModel):
    order_id: str = "A-1"
    amount: float = Field(gt=0)


class RefundReceipt(BaseModel):
    refund_id: str
    amount: float


class OrderArgs(BaseModel):
    order_id: str


class SupportTools:
    """Counts what ran, so a test can see that a refused step did nothing."""

    def __init__(self) -> None:
        self.refunds: list[RefundArgs] = []
        self.keys: list[str] = []
        self.fail_first = 0
        """Fail this many tries of `issue_refund` (a retryable error) before it runs."""
        self.while_failing: Callable[[], None] = lambda: None
        """Called by a try that fails: what changes in the world before the retry."""

    @tool(
        action="refunds.issue",
        resource="order/{order_id}",
        context={"amount": float},
        side_effect=True,
        idempotent=True,
        name="derive_issue_refund",
    )
    async def issue_refund(self, args: RefundArgs) -> RefundReceipt:
        if self.fail_first:
            self.fail_first -= 1
            self.while_failing()
            raise RuntimeError("the payments system hiccuped")
        self.refunds.append(args)
        self.keys.append(tool_context().idempotency_key)
        return RefundReceipt(refund_id=f"rf-{len(self.refunds)}", amount=args.amount)

    @tool(action="orders.read", resource="order/{order_id}", name="derive_read_order")
    async def read_order(self, args: OrderArgs) -> OrderArgs:
        return args


Mode = Literal["derived", "wrong_action", "wrong_resource", "understated", "added", "legacy"]


class RefundInput(BaseModel):
    mode: Mode = "derived"
    amount: float = 900.0
    context: dict[str, JsonValue] = Field(default_factory=dict)


class RefundResult(BaseModel):
    status: str
    refund_id: str = ""
    message: str = ""
    rule: str = ""
    error_type: str = ""


class _Refunds(AgentWorkflow):
    """Refunds `amount` on order A-1, calling `act` as `mode` says."""

    agent = "agent:support-bot"

    async def _refund(self, inp: RefundInput) -> RefundReceipt:
        args = RefundArgs(amount=inp.amount)
        refund = SupportTools.issue_refund
        if inp.mode == "wrong_action":  # the issue's first attack: a read rule for a refund
            return await self.act("orders.read", tool=refund, args=args)
        if inp.mode == "wrong_resource":
            return await self.act(refund, args, resource="order/A-2")
        if inp.mode == "understated":  # the second: the small-refund rule for $900
            return await self.act("refunds.issue", tool=refund, args=args, context={"amount": 5})
        if inp.mode == "added":
            return await self.act(refund, args, context=inp.context)
        if inp.mode == "legacy":  # the older form, claims that agree with the tool
            return await self.act(
                "refunds.issue",
                resource="order/A-1",
                tool=refund,
                args=args,
                context={"amount": inp.amount},
            )
        return await self.act(refund, args)

    async def _outcome(self, inp: RefundInput) -> RefundResult:
        try:
            receipt = await self._refund(inp)
        except ActionHalted as exc:
            return RefundResult(status="halted", message=exc.message, error_type=exc.type or "")
        except ActionRejected as exc:
            return RefundResult(status="rejected", message=exc.message, error_type=exc.type or "")
        except ActionDenied as exc:
            return RefundResult(
                status="denied", message=exc.message, rule=exc.rule, error_type=exc.type or ""
            )
        return RefundResult(status="refunded", refund_id=receipt.refund_id)


@workflow.defn(name="DeriveRefund")
class DeriveRefundWorkflow(_Refunds):
    @workflow.run
    async def run(self, inp: RefundInput) -> RefundResult:
        return await self._outcome(inp)


@workflow.defn(name="DeriveHeldRefund")
class HeldRefundWorkflow(_Refunds):
    """Holds the step after its decision (and approval), before the tool's dispatch, until
    signalled `go`: the time in which a switch is engaged or the policy changes."""

    def __init__(self) -> None:
        super().__init__()
        self._go = False
        self._holding = False

    @workflow.signal(name="go")
    def go(self) -> None:
        self._go = True

    @workflow.query(name="holding")
    def holding(self) -> bool:
        return self._holding

    async def _run_tool(self, spec: ToolSpec, call: ToolCall, retry: RetryPolicy) -> Any:
        self._holding = not self._go
        await workflow.wait_condition(lambda: self._go)
        self._holding = False
        return await super()._run_tool(spec, call, retry)

    @workflow.run
    async def run(self, inp: RefundInput) -> RefundResult:
        return await self._outcome(inp)


class ProbeInput(BaseModel):
    action: str
    resource: str
    context: dict[str, JsonValue]
    args: dict[str, JsonValue]


@workflow.defn(name="DeriveProbe")
class DecideAndCallWorkflow:
    """Skips act(): asks the policy about whatever it likes, then calls the refund tool
    activity directly — what a hostile or buggy workflow could do."""

    @workflow.run
    async def run(self, inp: ProbeInput) -> None:
        info = workflow.info()
        ref = StepRef(
            workflow_id=info.workflow_id, run_id=info.run_id, step=1, agent="agent:support-bot"
        )
        decision: Decision = await workflow.execute_local_activity_method(
            GovernanceActivities.decide_step,
            DecideInput(
                ref=ref,
                action=inp.action,
                resource=inp.resource,
                context=inp.context,
                args_digest=digest(inp.args),
            ),
            start_to_close_timeout=timedelta(seconds=10),
        )
        call = ToolCall(
            ref=ref,
            tool="derive_issue_refund",
            action=inp.action,
            resource=inp.resource,
            args=inp.args,
            decision=decision,
        )
        await workflow.execute_activity(
            "tool.derive_issue_refund",
            call,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
