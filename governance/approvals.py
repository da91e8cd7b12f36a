"""Approval requests and the rules an approval attempt must pass.

Pure and deterministic: the workflow's update validator and signal handler call
`check_approval` with the workflow's own clock, and the CLI calls it before sending, so
both sides refuse the same attempts with the same words.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from governance.errors import ApprovalError


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class PendingApproval(BaseModel):
    """A governed step waiting for a person."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    workflow_id: str
    run_id: str
    step: int
    agent: str
    action: str
    resource: str
    args_summary: str
    args_digest: str
    reason: str
    rule: str
    policy_version: str
    requested_by: str
    """The human who started the workflow; never an eligible approver."""
    approver_role: str
    approvers: list[str] = Field(default_factory=list)
    deadline: datetime | None = None
    status: ApprovalStatus = ApprovalStatus.PENDING


class ApprovalDecision(BaseModel):
    """An approver's answer, sent as the `decide` update or the `approve` signal."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    approver: str
    approve: bool
    comment: str = ""


class ApprovalOutcome(BaseModel):
    """What the workflow answers to an accepted decision."""

    request_id: str
    status: ApprovalStatus
    approver: str
    comment: str = ""


def check_approval(pending: PendingApproval, decision: ApprovalDecision, now: datetime) -> None:
    """Raise ApprovalError when `decision` may not decide `pending`; return None when it may."""
    if decision.request_id != pending.request_id:
        raise ApprovalError(
            f"approval request {decision.request_id!r} is not waiting in workflow "
            f"{pending.workflow_id!r}; list open requests with 'tether approvals list'"
        )
    if pending.status is not ApprovalStatus.PENDING:
        raise ApprovalError(
            f"approval request {pending.request_id!r} is already {pending.status.value}; "
            "nothing to decide"
        )
    if pending.deadline is not None and now >= pending.deadline:
        raise ApprovalError(
            f"approval request {pending.request_id!r} expired at {pending.deadline.isoformat()}"
        )
    if decision.approver in (pending.requested_by, pending.agent):
        raise ApprovalError(
            f"{decision.approver!r} asked for request {pending.request_id!r} and cannot "
            "approve it; another holder of "
            f"{pending.approver_role!r} must decide"
        )
    if decision.approver not in pending.approvers:
        raise ApprovalError(
            f"{decision.approver!r} does not hold {pending.approver_role!r}, which request "
            f"{pending.request_id!r} needs; ask one of {', '.join(pending.approvers) or 'nobody'}"
        )
