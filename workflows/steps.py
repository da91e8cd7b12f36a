"""The governed step behind `AgentWorkflow.act`: derive, decide, approve, dispatch, record.

- **Derived, not declared.** The action, the resource and the policy context come from
  the tool's declaration and its arguments (`ToolSpec.derive`). An action or resource the
  author passes that differs from the tool's, or a context key that contradicts an
  argument, is refused: the step is recorded as denied under `misdeclared-step` (the
  claim in the decision's payload) and raises ActionMisdeclared. The decision records the
  context and its digest; the tool checks both (`activities.dispatch`).
- **Re-checked at dispatch.** The tool activity checks, on every try, that no kill switch
  covers the step, that its approval has not expired and that the policy in force does
  not now ask for more. A kill switch raises ActionHalted. Since the `dispatch-recheck`
  patch, a tightened policy or an expired approval governs the step anew: a new step
  (decided by today's policy, possibly asking approval again) that keeps the refused
  step's idempotency key, so its target still sees one effect.

Deterministic. Older histories never carry a dispatch refusal, so they never reach the
patch; a misdeclared step is a decision like any other (one `decide_step`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, ClassVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, JsonValue

    from tether.activities.dispatch import KILL_SWITCH
    from tether.activities.governance import GovernanceActivities
    from tether.activities.payloads import DecideInput, StepRef, ToolCall
    from tether.activities.tools import ToolSpec
    from tether.errors import ErrorType
    from tether.governance.approvals import ApprovalDecision
    from tether.governance.derive import MISDECLARED_RULE
    from tether.governance.types import Decision, Tier
    from tether.verification.events import canonical_json, digest
    from tether.workflows.edits import EDIT_PATCH, ApprovalEdits
    from tether.workflows.errors import (
        ActionAmbiguous,
        ActionDenied,
        ActionHalted,
        ActionMisdeclared,
    )
    from tether.workflows.tool_calls import ToolSteps, effect_key

LOCAL = timedelta(seconds=30)
EFFECT_PATCH = "stable-effect-key"
TOOL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=10)
ONCE = RetryPolicy(maximum_attempts=1)
"""Side-effecting tools that do not honour an idempotency key are never retried."""
DISPATCH_PATCH = "dispatch-recheck"
"""Runs since this patch govern anew a step refused at dispatch (tightened policy,
expired approval) and raise ActionHalted for one a kill switch refused."""


def dispatch_refusal(cause: BaseException | None) -> tuple[str, str, str] | None:
    """(check, why, engaged_by) when a tool refused to run at dispatch, else None."""
    if not isinstance(cause, ApplicationError) or cause.type != ErrorType.DISPATCH_REFUSED:
        return None
    details: Sequence[Any] = cause.details or ()
    check = str(details[0]) if details else ""
    engaged_by = str(details[1]) if len(details) > 1 else ""
    return check, cause.message, engaged_by


class GovernedCalls(ApprovalEdits, ToolSteps):
    """Mixed into `AgentWorkflow`, which numbers the steps (`_ref`)."""

    governed: ClassVar[bool] = True
    _inputs: list[str]
    _step_offset: int

    def _ref(self) -> StepRef:
        raise NotImplementedError  # AgentWorkflow's

    async def _govern(
        self,
        spec: ToolSpec,
        args: BaseModel,
        *,
        action: str | None = None,
        resource: str | None = None,
        context: dict[str, JsonValue] | None = None,
        effect: str = "",
        regoverns: int = 0,
        floor: Decision | None = None,
    ) -> Any:
        """decide → (notify | wait for approval | deny) → execute the tool → record."""
        ref = self._ref()
        args_json: dict[str, JsonValue] = args.model_dump(mode="json")
        if workflow.patched(EFFECT_PATCH):
            key = effect or effect_key(
                workflow.info(), ref.step, spec.name, args_json, carried=self._step_offset > 0
            )
            ref = ref.model_copy(update={"effect": key})
        step = spec.derive(args_json, action=action, resource=resource, context=context)
        claimed: dict[str, JsonValue] = {
            "action": action,
            "resource": resource,
            "context": dict(context or {}),
        }
        action, resource = step.action, step.resource
        summary = canonical_json(args_json)
        decision = await workflow.execute_local_activity_method(
            GovernanceActivities.decide_step,
            DecideInput(
                ref=ref,
                action=action,
                resource=resource,
                context=step.context,
                args_digest=digest(args_json),
                args_summary=summary[:500],
                governed=self.governed,
                inputs=list(self._inputs),
                effect_key=ref.effect,
                tool=spec.name,
                refused=step.problem,
                claimed=claimed if step.problem else {},
                regoverns=regoverns,
                floor=floor,
            ),
            start_to_close_timeout=LOCAL,
        )
        if decision.tier is Tier.DENY:
            if decision.rule == MISDECLARED_RULE:
                raise ActionMisdeclared(decision.reason, decision.rule)
            raise ActionDenied(
                f"policy denies {action!r} on {resource!r}: {decision.reason}", decision.rule
            )
        grants: list[ApprovalDecision] = []
        if decision.tier is Tier.APPROVE:
            grants = await self._await_approval(
                ref, action, resource, args_json, summary, decision, spec
            )
            if grants:
                # The approval covers the arguments as approved: read them again now, and
                # if they changed while the request waited, govern them as a new step.
                dispatched: dict[str, JsonValue] = args.model_dump(mode="json")
                if digest(dispatched) != grants[0].args_digest:
                    await self._record_invalidated(ref, action, resource, decision, dispatched)
                    return await self._govern(
                        spec, args, context=_extras(context, dispatched), floor=floor
                    )
                edit = next((g for g in grants if g.edits), None)
                if edit is not None and workflow.patched(EDIT_PATCH):
                    args_json, decision, grants = await self._decide_edit(
                        ref, action, resource, spec, args_json, step.context, decision, edit
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
            result = await self._run_tool(spec, call, TOOL_RETRY if spec.idempotent else ONCE)
        except ActivityError as exc:
            if spec.side_effect and isinstance(exc.cause, ActivityTimeoutError):
                await self._record_ambiguous(call, decision)
                raise ActionAmbiguous(
                    f"{action!r} on {resource!r} timed out after it was dispatched; whether it "
                    f"took effect is unknown. Check the target system (idempotency key "
                    f"{ref.effect_key()!r}) before acting again"
                ) from None
            refusal = dispatch_refusal(exc.cause)
            if refusal is None or not workflow.patched(DISPATCH_PATCH):
                raise
            check, why, engaged_by = refusal
            if check == KILL_SWITCH:
                raise ActionHalted(
                    f"{action!r} on {resource!r} was halted at dispatch: {why}", why, engaged_by
                ) from None
            return await self._govern(
                spec,
                spec.args_type.model_validate(call.args),
                context=_extras(context, call.args),
                effect=ref.effect_key(),
                regoverns=ref.step,
                floor=floor,
            )
        self._inputs.append(f"step:{ref.step}:{digest(result.model_dump(mode='json'))}")
        if decision.tier is Tier.NOTIFY:
            await self._notify(ref, action, resource, spec, args_json, decision, result)
        return result


def _extras(
    context: dict[str, JsonValue] | None, args: dict[str, JsonValue]
) -> dict[str, JsonValue]:
    """The context keys an author added beyond the arguments: what a step governed anew
    for (possibly changed) arguments keeps; the arguments give the rest again."""
    return {k: v for k, v in (context or {}).items() if k not in args}
