"""What an approval request says, built from one governed step (pure, deterministic).

Used by the approval wait (`workflows.approvals`, `workflows.approvals_v1`) and by the
model-call steps that ask for approval (`workflows.model_calls`).
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue

    from tether.activities.payloads import StepRef
    from tether.activities.tools import ToolSpec
    from tether.governance.approvals import PendingApproval
    from tether.governance.presentation import key_values
    from tether.governance.types import Decision
    from tether.verification.events import digest


def request_id_of(ref: StepRef) -> str:
    """The id of the approval request a step opens first."""
    return "apr-" + digest(ref.key("approval"))[7:19]


def approval_request(
    ref: StepRef,
    action: str,
    resource: str,
    args_json: dict[str, JsonValue],
    summary: str,
    decision: Decision,
) -> PendingApproval:
    """The approval request of one step, asking the decision's approver role."""
    return PendingApproval(
        request_id=request_id_of(ref),
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
    )


def presentation(
    spec: ToolSpec, args_json: dict[str, JsonValue], *, editable: bool
) -> dict[str, object]:
    """What a person reads about a tool's request: title, key fields, editable args."""
    return {
        "tool": spec.name,
        "title": spec.title_of(args_json),
        "key_fields": dict(key_values(spec.key_fields, args_json)),
        "editable": list(spec.editable) if editable else [],
        "args": dict(args_json) if editable and spec.editable else {},
    }


def settle(messages: workflow.ActivityHandle[object]) -> None:
    """Stop sending a decided request's messages. Their outcome never fails the run (the
    activity records each delivery and failure in the ledger itself), so nothing waits
    for the cancellation; the callback only retrieves how it ended."""
    messages.add_done_callback(_retrieved)
    if not messages.done():
        messages.cancel()


def _retrieved(task: asyncio.Future[object]) -> None:
    if not task.cancelled() and isinstance(task.exception(), ActivityError):
        workflow.logger.debug("approval messages ended early: %s", task.exception())


def field_of(raw: JsonValue, name: str) -> str:
    """A string field of a raw (maybe malformed) payload, else ""."""
    value = raw.get(name) if isinstance(raw, dict) else None
    return value if isinstance(value, str) else ""
