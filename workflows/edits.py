"""Approve with edits: an approver changed arguments the tool marks editable.

`ApprovalEdits` is a base of `AgentWorkflow` (over `ApprovalsMixin`). Since the
`approval-edits` patch, a granted approval that carries edits (checked on arrival by
`ApprovalsMixin._admit`: editable fields only, valid for the arguments model, digest
signed) makes the step:

1. record `approval.edited` (original and edited digests, the edits, who);
2. decide the edited action by policy again (`decision.edited`), never below the
   original's tier (`DecideInput.floor`);
3. deny → `ActionDenied`; the same approve rule and approver role → the editor's signed
   approval (bound to the edited digest) stands; another approve rule (an edit that
   crosses into a higher tier) → a new request for the edited arguments (`<id>-e`,
   not editable), decided by that rule's approvers.

Deterministic. Older histories never carry edits, so they never reach the patch.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue

    from tether.activities.governance import GovernanceActivities
    from tether.activities.payloads import DecideInput, StepRef
    from tether.activities.tools import ToolSpec
    from tether.governance.approvals import ApprovalDecision
    from tether.governance.types import Decision, Tier
    from tether.verification.events import canonical_json, digest
    from tether.workflows.approvals import ApprovalsMixin
    from tether.workflows.errors import ActionDenied

LOCAL = timedelta(seconds=30)
EDIT_PATCH = "approval-edits"


class ApprovalEdits(ApprovalsMixin):
    """Mixed into `AgentWorkflow`."""

    _inputs: list[str]

    async def _decide_edit(
        self,
        ref: StepRef,
        action: str,
        resource: str,
        spec: ToolSpec,
        args_json: dict[str, JsonValue],
        context: dict[str, JsonValue],
        decision: Decision,
        edit: ApprovalDecision,
    ) -> tuple[dict[str, JsonValue], Decision, list[ApprovalDecision]]:
        """The edited arguments, their decision and the approvals that cover them."""
        edited: dict[str, JsonValue] = spec.args_type.model_validate(
            {**args_json, **edit.edits}
        ).model_dump(mode="json")
        # Policy context the author derived from an edited argument follows the edit.
        new_context = {k: edited[k] if k in edit.edits else v for k, v in context.items()}
        await workflow.execute_local_activity_method(
            GovernanceActivities.record_event,
            ref.event(
                "approval.edited",
                action=action,
                resource=resource,
                decision=decision,
                actor=edit.approver,
                outcome="edited",
                payload={
                    "request_id": edit.request_id,
                    "original_digest": digest(args_json),
                    "edited_digest": digest(edited),
                    "original": {k: args_json.get(k) for k in edit.edits},
                    "edits": dict(edit.edits),
                    "comment": edit.comment,
                },
            ),
            start_to_close_timeout=LOCAL,
        )
        summary = canonical_json(edited)
        redo: Decision = await workflow.execute_local_activity_method(
            GovernanceActivities.decide_step,
            DecideInput(
                ref=ref,
                action=action,
                resource=resource,
                context=new_context,
                args_digest=digest(edited),
                args_summary=summary[:500],
                inputs=list(self._inputs),
                effect_key=ref.effect,
                floor=decision,
                record_as="decision.edited",
            ),
            start_to_close_timeout=LOCAL,
        )
        if redo.tier is Tier.DENY:
            raise ActionDenied(
                f"policy denies the edited {action!r} on {resource!r}: {redo.reason}", redo.rule
            )
        if (redo.rule, redo.approver_role) == (decision.rule, decision.approver_role):
            return edited, redo, [edit]
        grants = await self._await_approval(
            ref, action, resource, edited, summary, redo, spec, edit_of=edit.request_id
        )
        return edited, redo, grants
