"""Model calls of `AgentWorkflow`: kill switches, agent budgets, outages and heartbeats.

`_call_model` runs the `call_model` activity and turns its failures into what the run
does next:

- a kill switch in scope: `ActionDenied`; a budget spent: `BudgetExceeded`; a budget
  whose policy is to escalate: wait for approval (`budget.exceed`), then call again
  beyond the budget;
- `NoEligibleEndpoint` and `ModelRequestRejected` (a 4xx): non-retryable, to the ladder
  (`workflows.recovery`) and, uncaught, the end of the run;
- an outage (`ModelUnavailable`, or every try timed out) is waited out
  (`workflows.outage`): the run records `model.waiting`, its status says "waiting for
  model endpoint since …", and it sleeps until the breaker's probe time the gateway
  named, then calls again; only when the task's outage budget (`[models]
  outage_budget_seconds`, one hour by default, per task in `outage_budgets`) is spent does
  the call fail `ModelUnavailable`.

The activity heartbeats (timeout `MODEL_HEARTBEAT`), so a call on a worker that died is
retried at once on another. Runs from before the `model-outage-wait` patch replay the
old path: five tries, no heartbeat, then `ModelUnavailable`. Deterministic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue, ValidationError

    from tether.activities.models import ModelActivities
    from tether.activities.payloads import (
        BudgetBreachDetails,
        ModelCallInput,
        ModelCallResult,
        UnavailableDetails,
    )
    from tether.core.gateway_config import CALL_MODEL_TIMEOUT_SECONDS
    from tether.errors import ErrorType
    from tether.governance.approvals import ApprovalDecision
    from tether.governance.types import Decision, Tier
    from tether.verification.events import canonical_json
    from tether.workflows.approval_requests import request_id_of
    from tether.workflows.errors import ActionDenied, BudgetExceeded
    from tether.workflows.outage import DEFAULT_OUTAGE_BUDGET_SECONDS, OutageWaits

MODEL_RETRY = RetryPolicy(maximum_attempts=5, non_retryable_error_types=["ScriptMiss"])
"""Runs from before outage waits: five tries, then the call failed for good."""
MODEL_RETRY_WAITING = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_attempts=3,
    non_retryable_error_types=["ScriptMiss"],
)
"""A short burst for blips; a longer outage is waited out by the workflow itself."""
MODEL_HEARTBEAT = timedelta(seconds=5)
OUTAGE_PATCH = "model-outage-wait"
CALL_FAILURES = (
    ErrorType.NO_ELIGIBLE_ENDPOINT,
    ErrorType.MODEL_REQUEST_REJECTED,
    ErrorType.MODEL_UNAVAILABLE,
)
"""Error types of a model call that failed for good (see `activities.gateway`)."""


def outage_of(cause: BaseException | None, budget_s: float) -> UnavailableDetails | None:
    """How to wait out `cause` when it is transient (an outage), else None."""
    if isinstance(cause, ActivityTimeoutError):
        return UnavailableDetails(outage_budget_s=budget_s)
    if not isinstance(cause, ApplicationError) or cause.type != ErrorType.MODEL_UNAVAILABLE:
        return None
    if len(cause.details) > 1:
        try:
            return UnavailableDetails.model_validate(cause.details[1])
        except ValidationError:
            pass
    return UnavailableDetails(outage_budget_s=budget_s)


class ModelCalls(OutageWaits):
    """Mixed into `AgentWorkflow`; `_await_approval` is `ApprovalsMixin`'s."""

    _await_approval: Callable[..., Awaitable[list[ApprovalDecision]]]

    async def _call_model(self, request: ModelCallInput) -> tuple[ModelCallResult, ModelCallInput]:
        """Run `call_model`; return its result and the request as finally sent."""
        waits = workflow.patched(OUTAGE_PATCH)
        if waits:
            request = request.model_copy(update={"waits_out_outages": True})
        budget = DEFAULT_OUTAGE_BUDGET_SECONDS
        wait = None
        while True:
            try:
                result = await workflow.execute_activity_method(
                    ModelActivities.call_model,
                    request,
                    start_to_close_timeout=timedelta(seconds=CALL_MODEL_TIMEOUT_SECONDS),
                    heartbeat_timeout=MODEL_HEARTBEAT if waits else None,
                    retry_policy=MODEL_RETRY_WAITING if waits else MODEL_RETRY,
                )
            except ActivityError as exc:
                cause = exc.cause
                outage = outage_of(cause, budget) if waits else None
                if outage is not None:
                    budget = outage.outage_budget_s
                    reason = cause.message if isinstance(cause, FailureError) else exc.message
                    if wait is None:
                        wait = await self._begin_wait(
                            request.ref,
                            "model",
                            "model endpoint",
                            f"model.{request.task}",
                            reason,
                            {
                                "task": request.task,
                                "rung": request.rung,
                                "retry_in_s": outage.retry_in_s,
                                "outage_budget_s": budget,
                                "endpoints": list(outage.endpoints),
                            },
                        )
                    if await self._pause(wait, outage.retry_in_s, budget):
                        continue
                    await self._end_wait(request.ref, wait, "gave_up")
                    raise ApplicationError(
                        f"model call {request.task!r}: no eligible endpoint answered within "
                        f"its outage budget of {budget:g} s ({reason[:300]}); raise "
                        "[models] outage_budget_seconds, or check the endpoints",
                        type=ErrorType.MODEL_UNAVAILABLE,
                        non_retryable=True,
                    ) from None
                await self._end_wait(request.ref, wait, "ended")
                wait = None
                request = await self._after_failure(request, exc)
                continue
            await self._end_wait(request.ref, wait, "resumed")
            return result, request

    async def _after_failure(self, request: ModelCallInput, exc: ActivityError) -> ModelCallInput:
        """Raise what a non-transient failure means; an approved overspend returns the
        request to send again."""
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
            raise exc
        if ladder and cause.type in CALL_FAILURES:  # classified (author, ladder)
            raise ApplicationError(cause.message, type=cause.type, non_retryable=True) from None
        details = BudgetBreachDetails.model_validate(cause.details[0] if cause.details else {})
        if cause.type == ErrorType.KILL_SWITCH_ENGAGED:
            raise ActionDenied(cause.message, details.rule) from None
        if cause.type == ErrorType.BUDGET_EXCEEDED:
            raise BudgetExceeded(cause.message) from None
        if cause.type != ErrorType.BUDGET_APPROVAL_NEEDED or request.budget_override:
            raise exc
        granted = await self._approve_overspend(request, details)
        return request.model_copy(update={"budget_override": granted})

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
