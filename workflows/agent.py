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
memo key `started_by`, set by `tether.start_task`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import ClassVar, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, JsonValue, ValidationError

    from tether.activities.governance import GovernanceActivities
    from tether.activities.models import ModelActivities
    from tether.activities.payloads import (
        BudgetBreachDetails,
        DecideInput,
        ModelCallInput,
        ModelCallResult,
        NotifyInput,
        StepRef,
        ToolCall,
    )
    from tether.activities.tools import ToolSpec, spec_of
    from tether.core.gateway_config import CALL_MODEL_TIMEOUT_SECONDS, DATA_CLASSES
    from tether.errors import ErrorType
    from tether.governance.approvals import ApprovalDecision, PendingApproval
    from tether.governance.types import Decision, Tier
    from tether.verification.events import canonical_json, digest
    from tether.workflows.approvals import ApprovalsMixin, request_id_of
    from tether.workflows.errors import (
        ActionAmbiguous,
        ActionDenied,
        BudgetExceeded,
        ModelOutputInvalid,
    )
    from tether.workflows.recovery import CALL_FAILURES, Check, RecoveryLadder
    from tether.workflows.review import notify_step

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
    estimated_calls: int = 0
    """Model calls whose tokens were estimated (the provider reported no usage)."""


class AgentStatus(BaseModel):
    agent: str
    step: int
    usage: Usage
    pending: PendingApproval | None = None
    paused: bool = False
    """The agent is over its cap of open approval requests and waits."""


class AgentWorkflow(ApprovalsMixin, RecoveryLadder):
    """Base class: subclass it, set `agent`, decorate with `@workflow.defn(name=...)`."""

    agent: ClassVar[str] = "agent:unnamed"
    governed: ClassVar[bool] = True

    def __init__(self) -> None:
        self._step = 0
        self._agent = type(self).agent
        self._usage = Usage()
        self._budget = Budget()
        self._init_approvals()
        self._inputs: list[str] = []
        """Model call ids and tool results so far: what may have influenced the next step."""

    # -- identity and bookkeeping ------------------------------------------------------

    @property
    def started_by(self) -> str:
        value = workflow.memo_value("started_by", default="", type_hint=str)
        return value or "unknown"

    @property
    def tenant(self) -> str:
        """The tenant the run belongs to, from the memo key `tenant` (kill switches use it)."""
        value = workflow.memo_value("tenant", default="", type_hint=str)
        return value or "default"

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
            tenant=self.tenant,
        )

    def _charge(self, result: ModelCallResult) -> None:
        u = self._usage
        u.model_calls += 1
        u.input_tokens += result.input_tokens
        u.output_tokens += result.output_tokens
        u.cost_usd += result.cost_usd
        u.estimated_calls += 1 if result.tokens_estimated else 0
        b = self._budget
        if b.max_tokens and u.input_tokens + u.output_tokens > b.max_tokens:
            raise BudgetExceeded(f"token budget of {b.max_tokens} is spent")
        if b.max_cost_usd and u.cost_usd > b.max_cost_usd:
            raise BudgetExceeded(f"cost budget of ${b.max_cost_usd:.4f} is spent")

    # -- ask: a validated model call -----------------------------------------------------

    async def ask(
        self,
        schema: type[M],
        *,
        task: str,
        prompt: str,
        sensitivity: str = "internal",
        max_output_tokens: int = 1024,
        check: Check[M] | None = None,
        fallback: M | None = None,
        approver: str = "",
        latency_target_ms: int = 0,
    ) -> M:
        """Call a model through the gateway; return its output validated into `schema`.

        Output that fails `schema` or `check` (a function returning what is wrong, or
        None) climbs the recovery ladder (`workflows.recovery`): a repair on the same
        model, another eligible model, the declared `fallback`, then the approve tier
        when `approver` names a role; after that ModelOutputInvalid. A kill switch in
        scope raises ActionDenied; an agent budget that would be overspent raises
        BudgetExceeded, or, when its policy is to escalate, waits for approval
        (`budget.exceed` on `agent/<agent>`) and then runs the call beyond the budget
        (ActionRejected when not approved). A call no endpoint may take or answer raises
        an ApplicationError typed NoEligibleEndpoint, ModelRequestRejected or
        ModelUnavailable.
        """
        ref = self._ref()
        request = ModelCallInput(
            ref=ref,
            task=task,
            prompt=prompt,
            sensitivity=sensitivity,
            schema_name=schema.__name__,
            json_schema=schema.model_json_schema(),
            max_output_tokens=max_output_tokens,
            latency_target_ms=latency_target_ms,
        )
        if workflow.patched("model-recovery-ladder"):
            if sensitivity not in DATA_CLASSES:  # before any activity: a clear error
                raise ApplicationError(
                    f"ask(sensitivity={sensitivity!r}) is not a data class; use one of "
                    f"{', '.join(DATA_CLASSES)}",
                    type="InvalidSensitivity",
                    non_retryable=True,
                )
            return await self._ask_ladder(schema, request, check, fallback, approver)
        error = ""
        for _ in range(2):
            result, request = await self._call_model(
                request.model_copy(update={"repair_error": error})
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
        decision = await workflow.execute_local_activity_method(
            GovernanceActivities.decide_step,
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
            start_to_close_timeout=LOCAL,
        )
        if decision.tier is Tier.DENY:
            raise ActionDenied(
                f"policy denies {action!r} on {resource!r}: {decision.reason}", decision.rule
            )
        grants: list[ApprovalDecision] = []
        if decision.tier is Tier.APPROVE:
            grants = await self._await_approval(ref, action, resource, args_json, summary, decision)
            if grants:
                # The approval covers the arguments as approved: read them again now, and
                # if they changed while the request waited, govern them as a new step.
                dispatched: dict[str, JsonValue] = args.model_dump(mode="json")
                if digest(dispatched) != grants[0].args_digest:
                    await self._record_invalidated(ref, action, resource, decision, dispatched)
                    return await self.act(
                        action, resource=resource, tool=tool, args=args, context=context
                    )
        call = ToolCall(
            ref=ref,
            tool=spec.name,
            action=action,
            resource=resource,
            args=args_json,
            decision=decision,
            record=self.governed,
            approvals=grants,
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
            await self._notify(ref, action, resource, spec, args_json, decision, result)
        return result

    async def _record_ambiguous(self, call: ToolCall, decision: Decision) -> None:
        ref = call.ref
        await workflow.execute_local_activity_method(
            GovernanceActivities.record_event,
            ref.event(
                "tool.ambiguous",
                action=call.action,
                resource=call.resource,
                decision=decision,
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

    async def _record_invalidated(
        self,
        ref: StepRef,
        action: str,
        resource: str,
        decision: Decision,
        dispatched: dict[str, JsonValue],
    ) -> None:
        await workflow.execute_local_activity_method(
            GovernanceActivities.record_event,
            ref.event(
                "approval.invalidated",
                action=action,
                resource=resource,
                decision=decision,
                actor=ref.agent,
                outcome="invalidated",
                payload={
                    "why": "the arguments changed after approval; they need approval again",
                    "args_digest": digest(dispatched),
                },
            ),
            start_to_close_timeout=LOCAL,
        )

    @workflow.query(name="status")
    def status(self) -> AgentStatus:
        return AgentStatus(
            agent=self._agent,
            step=self._step,
            usage=self._usage,
            pending=self._pending,
            paused=self._paused,
        )

    # -- model calls under kill switches and agent budgets -------------------------------

    async def _call_model(self, request: ModelCallInput) -> tuple[ModelCallResult, ModelCallInput]:
        """Run `call_model`; return its result and the request as finally sent."""
        while True:
            try:
                result = await workflow.execute_activity_method(
                    ModelActivities.call_model,
                    request,
                    start_to_close_timeout=timedelta(seconds=CALL_MODEL_TIMEOUT_SECONDS),
                    retry_policy=MODEL_RETRY,
                )
                return result, request
            except ActivityError as exc:
                cause = exc.cause
                # Histories from before the ladder take the old path (the raw error).
                ladder = workflow.patched("model-recovery-ladder")
                if ladder and isinstance(cause, ActivityTimeoutError):
                    raise ApplicationError(
                        f"model call {request.task!r} timed out on every try: {cause.message}",
                        type=ErrorType.MODEL_UNAVAILABLE,
                        non_retryable=True,
                    ) from None
                if not isinstance(cause, ApplicationError):
                    raise
                if ladder and cause.type in CALL_FAILURES:  # classified (author, ladder)
                    raise ApplicationError(
                        cause.message, type=cause.type, non_retryable=True
                    ) from None
                details = BudgetBreachDetails.model_validate(
                    cause.details[0] if cause.details else {}
                )
                if cause.type == ErrorType.KILL_SWITCH_ENGAGED:
                    raise ActionDenied(cause.message, details.rule) from None
                if cause.type == ErrorType.BUDGET_EXCEEDED:
                    raise BudgetExceeded(cause.message) from None
                if cause.type != ErrorType.BUDGET_APPROVAL_NEEDED or request.budget_override:
                    raise
                granted = await self._approve_overspend(request, details)
                request = request.model_copy(update={"budget_override": granted})

    async def _approve_overspend(
        self, request: ModelCallInput, details: BudgetBreachDetails
    ) -> str:
        """Wait for approval to overspend an agent budget; return the approved request id."""
        ref = request.ref
        args_json: dict[str, JsonValue] = {
            "task": request.task,
            "budget": details.subject,
            "requested_tokens": details.requested_tokens,
            "requested_cost_usd": details.requested_cost_usd,
        }
        decision = Decision(
            tier=Tier.APPROVE,
            rule=details.rule,
            policy_version="",
            reason=details.reason,
            approver_role=details.approver_role,
            approvers=details.approvers,
        )
        grants = await self._await_approval(
            ref,
            "budget.exceed",
            f"agent/{ref.agent}",
            args_json,
            canonical_json(args_json),
            decision,
        )
        return grants[0].request_id if grants else request_id_of(ref)

    # -- notify tier ---------------------------------------------------------------------

    async def _notify(
        self,
        ref: StepRef,
        action: str,
        resource: str,
        spec: ToolSpec,
        args_json: dict[str, JsonValue],
        decision: Decision,
        result: BaseModel,
    ) -> None:
        """Tell the notify sinks, then open the step's review window (`workflows.review`)."""
        notice = NotifyInput(
            ref=ref,
            action=action,
            resource=resource,
            decision=decision,
            result_digest=digest(result.model_dump(mode="json")),
        )
        await notify_step(notice, spec, args_json)
