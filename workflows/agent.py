"""`AgentWorkflow`: the base class of governed workflows, with `ask` and `act`.

    @workflow.defn(name="PayInvoice")
    class PayInvoiceWorkflow(AgentWorkflow):
        agent = "agent:ap-clerk"

        @workflow.run
        async def run(self, inp: InvoiceInput) -> InvoiceResult:
            fields = await self.ask(InvoiceFields, task="extract", prompt=inp.text)
            receipt = await self.act("payments.pay", resource=f"vendor/{fields.vendor}",
                                     tool=PaymentTools.pay_vendor, args=Payment(...),
                                     context={"amount": fields.amount})

Contract: deterministic. Steps are numbered in call order; a step's decision is a local
activity whose result is in history, so replay never re-asks policy. Approvals arrive as
the `decide` update (validated: holder of the approver role, not the requester, request
open, deadline not passed) or the `approve` signal with the same payload (refused
attempts are recorded in the ledger). The human who started the run is read from the
memo key `started_by`, set by `tether.client.start_task`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import ClassVar, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, JsonValue, ValidationError

    from activities.governance import CloseApprovalInput, approval_event
    from activities.payloads import (
        DecideInput,
        ModelCallInput,
        ModelCallResult,
        NotifyInput,
        StepRef,
        ToolCall,
    )
    from activities.tools import spec_of
    from governance.approvals import (
        ApprovalDecision,
        ApprovalOutcome,
        ApprovalStatus,
        PendingApproval,
        check_approval,
    )
    from governance.errors import ApprovalError
    from governance.types import Decision, Tier
    from verification.ledger import LedgerEvent, canonical_json, digest
    from workflows.errors import (
        ActionAmbiguous,
        ActionDenied,
        ActionRejected,
        BudgetExceeded,
        ModelOutputInvalid,
    )

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)

LOCAL = timedelta(seconds=30)
MODEL_RETRY = RetryPolicy(maximum_attempts=5, non_retryable_error_types=["ScriptMiss"])
TOOL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=10)
ONCE = RetryPolicy(maximum_attempts=1)
"""Side-effecting tools that do not honour an idempotency key are never retried."""


class Budget(BaseModel):
    """Limits on one run; 0 means no limit."""

    max_steps: int = 0
    max_tokens: int = 0
    max_cost_usd: float = 0.0


class Usage(BaseModel):
    steps: int = 0
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class AgentStatus(BaseModel):
    agent: str
    step: int
    usage: Usage
    pending: PendingApproval | None = None


class AgentWorkflow:
    """Base class: subclass it, set `agent`, decorate with `@workflow.defn(name=...)`."""

    agent: ClassVar[str] = "agent:unnamed"
    governed: ClassVar[bool] = True

    def __init__(self) -> None:
        self._step = 0
        self._agent = type(self).agent
        self._usage = Usage()
        self._budget = Budget()
        self._pending: PendingApproval | None = None
        self._decision: ApprovalDecision | None = None
        self._refused: list[tuple[ApprovalDecision, str]] = []
        self._inputs: list[str] = []
        """Model call ids and tool results so far: what may have influenced the next step."""

    # -- identity and bookkeeping ------------------------------------------------------

    @property
    def started_by(self) -> str:
        value = workflow.memo_value("started_by", default="", type_hint=str)
        return value or "unknown"

    def _ref(self) -> StepRef:
        self._step += 1
        self._usage.steps = self._step
        if self._budget.max_steps and self._step > self._budget.max_steps:
            raise BudgetExceeded(f"step budget of {self._budget.max_steps} steps is spent")
        info = workflow.info()
        return StepRef(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            workflow_type=info.workflow_type,
            step=self._step,
            agent=self._agent,
            started_by=self.started_by,
        )

    def _charge(self, result: ModelCallResult) -> None:
        u = self._usage
        u.model_calls += 1
        u.input_tokens += result.input_tokens
        u.output_tokens += result.output_tokens
        u.cost_usd += result.cost_usd
        b = self._budget
        if b.max_tokens and u.input_tokens + u.output_tokens > b.max_tokens:
            raise BudgetExceeded(f"token budget of {b.max_tokens} is spent")
        if b.max_cost_usd and u.cost_usd > b.max_cost_usd:
            raise BudgetExceeded(f"cost budget of ${b.max_cost_usd:.4f} is spent")

    # -- ask: a validated model call -----------------------------------------------------

    async def ask(
        self, schema: type[M], *, task: str, prompt: str, sensitivity: str = "internal"
    ) -> M:
        """Call a model through the gateway; return its output validated into `schema`.

        An invalid output gets one repair attempt carrying the validation error; a second
        failure raises ModelOutputInvalid.
        """
        ref = self._ref()
        request = ModelCallInput(
            ref=ref,
            task=task,
            prompt=prompt,
            sensitivity=sensitivity,
            schema_name=schema.__name__,
            json_schema=schema.model_json_schema(),
        )
        error = ""
        for _ in range(2):
            result = await workflow.execute_activity(
                "call_model",
                request.model_copy(update={"repair_error": error}),
                result_type=ModelCallResult,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=MODEL_RETRY,
            )
            self._charge(result)
            self._inputs.append(result.call_id)
            try:
                return schema.model_validate_json(result.text)
            except ValidationError as exc:
                error = str(exc)
        raise ModelOutputInvalid(
            f"model output for task {task!r} does not fit {schema.__name__} after a repair "
            f"attempt: {error[:300]}"
        )

    # -- act: a governed tool call -------------------------------------------------------

    async def act(
        self,
        action: str,
        *,
        resource: str,
        tool: Callable[..., Awaitable[R]],
        args: BaseModel,
        context: dict[str, JsonValue] | None = None,
    ) -> R:
        """decide → (notify | wait for approval | deny) → execute the tool → record."""
        spec = spec_of(tool)
        ref = self._ref()
        args_json: dict[str, JsonValue] = args.model_dump(mode="json")
        summary = canonical_json(args_json)
        decision = await workflow.execute_local_activity(
            "decide_step",
            DecideInput(
                ref=ref,
                action=action,
                resource=resource,
                context=context or {},
                args_digest=digest(args_json),
                args_summary=summary[:500],
                governed=self.governed,
                inputs=list(self._inputs),
            ),
            result_type=Decision,
            start_to_close_timeout=LOCAL,
        )
        if decision.tier is Tier.DENY:
            raise ActionDenied(
                f"policy denies {action!r} on {resource!r}: {decision.reason}", decision.rule
            )
        if decision.tier is Tier.APPROVE:
            await self._await_approval(ref, action, resource, args_json, summary, decision)
        call = ToolCall(
            ref=ref,
            tool=spec.name,
            action=action,
            resource=resource,
            args=args_json,
            decision=decision,
            record=self.governed,
        )
        try:
            result: R = await workflow.execute_activity(
                spec.activity_name,
                call,
                result_type=spec.result_type,
                start_to_close_timeout=spec.timeout,
                heartbeat_timeout=spec.heartbeat,
                retry_policy=TOOL_RETRY if spec.idempotent else ONCE,
            )
        except ActivityError as exc:
            if spec.side_effect and isinstance(exc.cause, ActivityTimeoutError):
                await self._record_ambiguous(call, decision)
                raise ActionAmbiguous(
                    f"{action!r} on {resource!r} timed out after it was dispatched; whether it "
                    f"took effect is unknown. Check the target system (idempotency key "
                    f"{ref.key('effect')!r}) before acting again"
                ) from None
            raise
        self._inputs.append(f"step:{ref.step}:{digest(result.model_dump(mode='json'))}")
        if decision.tier is Tier.NOTIFY:
            await workflow.execute_local_activity(
                "notify",
                NotifyInput(
                    ref=ref,
                    action=action,
                    resource=resource,
                    decision=decision,
                    result_digest=digest(result.model_dump(mode="json")),
                ),
                start_to_close_timeout=LOCAL,
            )
        return result

    # -- approvals -----------------------------------------------------------------------

    async def _await_approval(
        self,
        ref: StepRef,
        action: str,
        resource: str,
        args_json: dict[str, JsonValue],
        summary: str,
        decision: Decision,
    ) -> None:
        timeout = timedelta(seconds=decision.timeout_seconds or 86400)
        pending = PendingApproval(
            request_id="apr-" + digest(ref.key("approval"))[7:19],
            workflow_id=ref.workflow_id,
            run_id=ref.run_id,
            step=ref.step,
            agent=ref.agent,
            action=action,
            resource=resource,
            args_summary=summary[:500],
            args_digest=digest(args_json),
            reason=decision.reason,
            rule=decision.rule,
            policy_version=decision.policy_version,
            requested_by=ref.started_by,
            approver_role=decision.approver_role or "",
            approvers=decision.approvers,
            deadline=workflow.now() + timeout,
        )
        self._pending, self._decision = pending, None
        await workflow.execute_local_activity(
            "open_approval", pending, start_to_close_timeout=LOCAL
        )
        expired = False
        while self._decision is None and not expired:
            remaining = (pending.deadline or workflow.now()) - workflow.now()
            try:
                await workflow.wait_condition(
                    lambda: self._decision is not None or bool(self._refused),
                    timeout=max(remaining, timedelta(seconds=1)),
                )
            except TimeoutError:
                expired = self._decision is None
            await self._record_refused(ref, pending)
        decided = self._decision
        if decided is None:
            status, approver, comment = ApprovalStatus.EXPIRED, "deadline", "deadline passed"
        else:
            status = ApprovalStatus.APPROVED if decided.approve else ApprovalStatus.REJECTED
            approver, comment = decided.approver, decided.comment
        self._pending = pending.model_copy(update={"status": status})
        await workflow.execute_local_activity(
            "close_approval",
            CloseApprovalInput(pending=pending, status=status, approver=approver, comment=comment),
            start_to_close_timeout=LOCAL,
        )
        self._pending = None
        if status is not ApprovalStatus.APPROVED:
            raise ActionRejected(
                f"{action!r} on {resource!r} was not approved: {status.value}"
                + (f" by {approver!r}" if decided else "")
                + (f" ({comment})" if comment else ""),
                comment,
            )

    async def _record_ambiguous(self, call: ToolCall, decision: Decision) -> None:
        ref = call.ref
        await workflow.execute_local_activity(
            "record_event",
            LedgerEvent(
                idempotency_key=ref.key("tool.ambiguous"),
                kind="tool.ambiguous",
                workflow_id=ref.workflow_id,
                run_id=ref.run_id,
                step=ref.step,
                agent=ref.agent,
                action=call.action,
                resource=call.resource,
                tier=decision.tier.value,
                rule=decision.rule,
                policy_version=decision.policy_version,
                actor=ref.agent,
                outcome="ambiguous",
                payload={
                    "tool": call.tool,
                    "args_digest": digest(call.args),
                    "idempotency_key": ref.key("effect"),
                },
            ),
            start_to_close_timeout=LOCAL,
        )

    async def _record_refused(self, ref: StepRef, pending: PendingApproval) -> None:
        while self._refused:
            attempt, why = self._refused.pop(0)
            await workflow.execute_local_activity(
                "record_event",
                approval_event(
                    pending,
                    "approval.refused",
                    "refused",
                    attempt.approver,
                    {"request_id": attempt.request_id, "why": why, "via": "signal"},
                    key_suffix=f".{workflow.uuid4()}",
                ),
                start_to_close_timeout=LOCAL,
            )

    def _check(self, decision: ApprovalDecision) -> PendingApproval:
        if self._pending is None or self._decision is not None:
            raise ApprovalError(
                f"workflow {workflow.info().workflow_id!r} has no open approval request "
                f"{decision.request_id!r}; list open requests with 'tether approvals list'"
            )
        check_approval(self._pending, decision, workflow.now())
        return self._pending

    @workflow.update(name="decide")
    def decide(self, decision: ApprovalDecision) -> ApprovalOutcome:
        # The validator has just run `_check` against this same state.
        self._decision = decision
        status = ApprovalStatus.APPROVED if decision.approve else ApprovalStatus.REJECTED
        return ApprovalOutcome(
            request_id=decision.request_id,
            status=status,
            approver=decision.approver,
            comment=decision.comment,
        )

    @decide.validator
    def _validate_decide(self, decision: ApprovalDecision) -> None:
        self._check(decision)

    @workflow.signal(name="approve")
    def approve_signal(self, decision: ApprovalDecision) -> None:
        try:
            self._check(decision)
        except ApprovalError as exc:
            self._refused.append((decision, str(exc)))
            return
        self._decision = decision

    @workflow.query(name="status")
    def status(self) -> AgentStatus:
        return AgentStatus(
            agent=self._agent, step=self._step, usage=self._usage, pending=self._pending
        )
