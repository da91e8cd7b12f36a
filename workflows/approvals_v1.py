"""The first version of the approval wait, kept so workflows started before signed approvals replay.

`ApprovalsV1Mixin` is a base of `ApprovalsMixin`. Runs started before the
`signed-approvals` patch wait here: one stage, unsigned decisions checked by the update
validator, refused signals recorded after the wait wakes. Nothing new runs this code;
its commands must stay exactly as they were (the stored histories replay it).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue, ValidationError

    from tether.activities.governance import (
        CloseApprovalInput,
        GovernanceActivities,
        approval_event,
    )
    from tether.activities.payloads import StepRef
    from tether.errors import ApprovalError
    from tether.governance.approvals import (
        ApprovalDecision,
        ApprovalOutcome,
        ApprovalStatus,
        PendingApproval,
        check_approval,
    )
    from tether.governance.types import Decision
    from tether.workflows.approval_requests import approval_request
    from tether.workflows.errors import ActionRejected

LOCAL = timedelta(seconds=30)


class ApprovalsV1Mixin:
    """The pre-`signed-approvals` wait and handlers; state comes from `_init_approvals`."""

    _pending: PendingApproval | None
    _decision: ApprovalDecision | None
    _refused: list[tuple[ApprovalDecision, str]]

    async def _await_approval_v1(
        self,
        ref: StepRef,
        action: str,
        resource: str,
        args_json: dict[str, JsonValue],
        summary: str,
        decision: Decision,
    ) -> None:
        timeout = timedelta(seconds=decision.timeout_seconds or 86400)
        pending = approval_request(ref, action, resource, args_json, summary, decision).model_copy(
            update={"deadline": workflow.now() + timeout}
        )
        self._pending, self._decision = pending, None
        await workflow.execute_local_activity_method(
            GovernanceActivities.open_approval, pending, start_to_close_timeout=LOCAL
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
            await self._record_refused_v1(pending)
        decided = self._decision
        if decided is None:
            status, approver, comment = ApprovalStatus.EXPIRED, "deadline", "deadline passed"
        else:
            status = ApprovalStatus.APPROVED if decided.approve else ApprovalStatus.REJECTED
            approver, comment = decided.approver, decided.comment
        self._pending = pending.model_copy(update={"status": status})
        await workflow.execute_local_activity_method(
            GovernanceActivities.close_approval,
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

    async def _record_refused_v1(self, pending: PendingApproval) -> None:
        while self._refused:
            attempt, why = self._refused.pop(0)
            await workflow.execute_local_activity_method(
                GovernanceActivities.record_event,
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

    def _check_v1(self, decision: ApprovalDecision) -> None:
        if self._pending is None or self._decision is not None:
            raise ApprovalError(
                f"workflow {workflow.info().workflow_id!r} has no open approval request "
                f"{decision.request_id!r}; list open requests with 'tether approvals list'"
            )
        check_approval(self._pending, decision, workflow.now())

    def _decide_v1(self, decision: ApprovalDecision) -> ApprovalOutcome:
        self._decision = decision
        status = ApprovalStatus.APPROVED if decision.approve else ApprovalStatus.REJECTED
        return ApprovalOutcome(
            request_id=decision.request_id,
            status=status,
            approver=decision.approver,
            comment=decision.comment,
        )

    def _signal_v1(self, raw: JsonValue) -> None:
        try:
            decision = ApprovalDecision.model_validate(raw)
        except ValidationError:
            return
        try:
            self._check_v1(decision)
        except ApprovalError as exc:
            self._refused.append((decision, str(exc)))
            return
        self._decision = decision
