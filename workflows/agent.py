"""`AgentWorkflow`: the base class of governed workflows, with `ask` and `act`.

    @workflow.defn(name="PayInvoice")
    class PayInvoiceWorkflow(AgentWorkflow):
        agent = "agent:ap-clerk"

        @workflow.run
        async def run(self, inp: InvoiceInput) -> InvoiceResult:
            fields = await self.ask(InvoiceFields, task="extract", prompt=inp.text)
            receipt = await self.act(PaymentTools.pay_vendor, Payment(...))

Contract: deterministic. Steps are numbered in call order; a step's decision is a local
activity whose result is in history, so replay never re-asks policy. Approvals arrive as
the `decide` update (validated: holder of the approver role, not the requester, request
open, deadline not passed) or the `approve` signal with the same payload (refused
attempts are recorded in the ledger). The human who started the run is read from the
memo key `started_by`, set by `tether.start_task`.

Effects survive operator actions (since the `stable-effect-key` patch): the idempotency
key a side-effecting tool passes to its target (`tool_context().idempotency_key`) is
derived from the workflow id, the run the execution began with, the step and the tool
and its arguments (`effect_key`), not from the run id, so the same step with the same
arguments keeps its key across `temporal workflow reset`, workflow retries and, when the
run continues with `self.continue_as_new(...)` (which carries the step count on), across
continue-as-new. The decision records the key; every record of a reset run carries
`original_run_id`, the run it was reset from. Model calls are `workflows.model_calls`
(outages waited out, heartbeats), their recovery ladder `workflows.recovery`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import ClassVar, NoReturn, TypeVar, overload

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, JsonValue, ValidationError

    from tether.activities.payloads import (
        ModelCallInput,
        ModelCallResult,
        StepRef,
    )
    from tether.activities.tools import spec_of
    from tether.core.gateway_config import DATA_CLASSES
    from tether.errors import ErrorType
    from tether.governance.approvals import PendingApproval
    from tether.governance.types import Decision
    from tether.workflows.errors import (
        ActionMisdeclared,
        BudgetExceeded,
        ModelOutputInvalid,
    )
    from tether.workflows.recovery import Check, RecoveryLadder
    from tether.workflows.steps import EFFECT_PATCH, GovernedCalls

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)

LOCAL = timedelta(seconds=30)
STEP_OFFSET = "tether_step_offset"
"""Memo key: the steps of the runs before this one (`AgentWorkflow.continue_as_new`)."""


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
    waiting: str = ""
    """Why the run waits out an outage, e.g. "waiting for model endpoint since …: …"."""
    waiting_since: datetime | None = None


class AgentWorkflow(GovernedCalls, RecoveryLadder):
    """Base class: subclass it, set `agent`, decorate with `@workflow.defn(name=...)`."""

    agent: ClassVar[str] = "agent:unnamed"
    governed: ClassVar[bool] = True

    def __init__(self) -> None:
        self._step_offset = workflow.memo_value(STEP_OFFSET, default=0, type_hint=int)
        self._step = self._step_offset
        self._agent = type(self).agent
        self._usage = Usage()
        self._budget = Budget()
        self._init_approvals()
        self._init_waits()
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
        reset = workflow.patched(EFFECT_PATCH) and info.original_execution_run_id
        return StepRef(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            workflow_type=info.workflow_type,
            step=self._step,
            agent=self._agent,
            started_by=self.started_by,
            tenant=self.tenant,
            original_run_id=reset if reset and reset != info.run_id else "",
        )

    async def continue_as_new(self, arg: BaseModel) -> NoReturn:
        """Continue as new with `arg` once every handler finished, carrying the step
        count (memo `tether_step_offset`) and the memo: the next run numbers its steps
        on, so its side effects never take this run's idempotency keys."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        memo = {**workflow.memo(), STEP_OFFSET: self._step}
        workflow.continue_as_new(arg, memo=memo)

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
        (ActionRejected when not approved). An outage of every eligible endpoint is
        waited out (`workflows.model_calls`: status `waiting`, `model.waiting` in the
        ledger) for the task's outage budget. A call no endpoint may take, or that an
        endpoint refuses, or that none answered within the budget raises an
        ApplicationError typed NoEligibleEndpoint, ModelRequestRejected or
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
                    type=ErrorType.INVALID_SENSITIVITY,
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

    @overload
    async def act(
        self,
        tool: Callable[..., Awaitable[R]],
        args: BaseModel,
        /,
        *,
        action: str | None = None,
        resource: str | None = None,
        context: dict[str, JsonValue] | None = None,
        floor: Decision | None = None,
    ) -> R: ...

    @overload
    async def act(
        self,
        action: str | None = None,
        /,
        *,
        tool: Callable[..., Awaitable[R]],
        args: BaseModel,
        resource: str | None = None,
        context: dict[str, JsonValue] | None = None,
        floor: Decision | None = None,
    ) -> R: ...

    async def act(
        self,
        first: Callable[..., Awaitable[R]] | str | None = None,
        second: BaseModel | None = None,
        /,
        *,
        tool: Callable[..., Awaitable[R]] | None = None,
        args: BaseModel | None = None,
        action: str | None = None,
        resource: str | None = None,
        context: dict[str, JsonValue] | None = None,
        floor: Decision | None = None,
    ) -> R:
        """`act(Tools.method, Args(...))`: decide → (notify | wait for approval | deny) →
        execute the tool → record (`workflows.steps`).

        The action, resource and policy context are the tool's (`@tool(action=...,
        resource=..., context=...)`) over these arguments. `context` may add keys, never
        contradict an argument; an `action` or `resource` given (the older form
        `act("payments.pay", resource=..., tool=..., args=...)`) must be the tool's.
        Otherwise the step is refused and recorded: ActionMisdeclared. `floor`: the step
        is decided no lower than this (an adapter's `requires_approval`).
        """
        if isinstance(first, str):
            action = first
        elif first is not None:
            tool = first
        args = second if second is not None else args
        if tool is None or args is None:
            raise ActionMisdeclared(
                f"act() needs a tool and its arguments, got tool={tool!r}, args={args!r}; "
                "call act(Tools.method, Args(...))"
            )
        result: R = await self._govern(
            spec_of(tool), args, action=action, resource=resource, context=context, floor=floor
        )
        return result

    @workflow.query(name="status")
    def status(self) -> AgentStatus:
        return AgentStatus(
            agent=self._agent,
            step=self._step,
            usage=self._usage,
            pending=self._pending,
            paused=self._paused,
            waiting=self._waiting.describe() if self._waiting else "",
            waiting_since=self._waiting.since if self._waiting else None,
        )
