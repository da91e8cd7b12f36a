"""Approval requests and the rules an approval attempt must pass.

Pure and deterministic: the workflow's update validator and signal handler call
`check_approval` with the workflow's own clock, and the CLI calls it before sending, so
both sides refuse the same attempts with the same words.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from tether.errors import ApprovalError, InvalidNameError, PolicyError
from tether.governance.agents import AGENT_PREFIX as AGENT_PREFIX  # callers import it here
from tether.governance.agents import is_agent
from tether.governance.names import canonical_identity, identity_key


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    ESCALATED = "escalated"
    """The stage's deadline passed; the request moved to the next approver role."""
    HALTED = "halted"
    """A kill switch ended the wait (runs since the `halted-outcome` patch; before it a
    halt was recorded as rejected). Nobody decided: the approver is who engaged it."""
    CLOSED = "closed"
    """The run ended (terminated, timed out, failed, cancelled) while the request waited:
    closed by `tether.runtime.sweep`, nobody decided, it no longer counts against the cap."""


class ApprovalStage(BaseModel):
    """One link of an escalation chain: who may approve, and how many must."""

    model_config = ConfigDict(frozen=True)

    role: str
    quorum: int = 1
    """Distinct people of `role` who must approve; one rejection rejects."""
    members: list[str] = Field(default_factory=list)


_STAGE = re.compile(r"^(?P<role>[^#>\s]+)(?:#(?P<quorum>[1-9][0-9]?))?$")


def parse_chain(approver: str) -> list[tuple[str, int]]:
    """Parse a policy's approver field: `ROLE[#QUORUM][>ROLE[#QUORUM]...]`.

    `role:ap-approver>role:controller` escalates to controllers when the first stage's
    deadline passes; `role:treasury#2` needs two distinct treasury approvers.
    """
    stages: list[tuple[str, int]] = []
    for part in approver.split(">"):
        match = _STAGE.match(part.strip())
        if match is None:
            raise PolicyError(
                f"approver {approver!r}: stage {part!r} is not ROLE or ROLE#N (N from 1 to "
                "99); write e.g. 'role:ap-approver#2>role:controller'"
            )
        stages.append((match["role"], int(match["quorum"] or 1)))
    return stages


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
    stage: int = 0
    """Index in `stages` of the approver role now asked."""
    stages: list[ApprovalStage] = Field(default_factory=list)
    quorum: int = 1
    approved_by: list[str] = Field(default_factory=list)
    """Approvals collected so far in this stage (quorum counts distinct people)."""
    tool: str = ""
    title: str = ""
    """The headline a person reads, from the tool's title template (else empty)."""
    key_fields: dict[str, str] = Field(default_factory=dict)
    """The tool's key fields as a person reads them (label to formatted value), in order."""
    editable: list[str] = Field(default_factory=list)
    """Arguments the approver may change (quorum of one only); the edit is decided anew."""
    args: dict[str, JsonValue] = Field(default_factory=dict)
    """The full arguments, kept when some are editable (the edited digest is over them)."""
    requested_at: datetime | None = None
    """When the step asked (the workflow's clock); the inbox shows the request's age."""
    edit_of: str = ""
    """Set on a request re-opened for edited arguments: the request that was edited."""

    @property
    def headline(self) -> str:
        return self.title or f"{self.action} on {self.resource}"


class ApprovalDecision(BaseModel):
    """An approver's answer, sent as the `decide` update or the `approve` signal.

    The binding fields echo the request, and the approving service signs them all
    (`governance.signing`): a decision covers one step, one argument digest and one
    policy version, and its nonce is consumed once.
    """

    model_config = ConfigDict(frozen=True)

    request_id: str
    approver: str
    approve: bool
    comment: str = ""
    workflow_id: str = ""
    run_id: str = ""
    step: int = 0
    args_digest: str = ""
    policy_version: str = ""
    issued_at: str = ""
    nonce: str = ""
    key_id: str = ""
    signature: str = ""
    edits: dict[str, JsonValue] = Field(default_factory=dict)
    """Approve with edits: the changed arguments (only ones the tool marks editable)."""
    edited_digest: str = ""
    """Digest of the arguments with `edits` applied: what the approval binds (and signs)."""

    @classmethod
    def for_request(
        cls,
        pending: PendingApproval,
        approver: str,
        approve: bool,
        comment: str,
        nonce: str,
        edits: dict[str, JsonValue] | None = None,
        edited_digest: str = "",
    ) -> ApprovalDecision:
        """An unsigned decision bound to `pending` (and, with `edits`, to the edited args)."""
        return cls(
            edits=dict(edits or {}),
            edited_digest=edited_digest,
            request_id=pending.request_id,
            approver=approver,
            approve=approve,
            comment=comment,
            workflow_id=pending.workflow_id,
            run_id=pending.run_id,
            step=pending.step,
            args_digest=pending.args_digest,
            policy_version=pending.policy_version,
            nonce=nonce,
        )


class HaltRequest(BaseModel):
    """The `halt` signal: a kill switch ends a pending approval wait as halted."""

    reason: str
    engaged_by: str = "kill-switch"


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
    try:
        approver = canonical_identity(decision.approver, "approver")
    except InvalidNameError as exc:
        raise ApprovalError(f"{exc}; send the approver's canonical name") from None
    if approver != decision.approver:
        raise ApprovalError(
            f"approver {decision.approver!r} is not written canonically; send {approver!r}"
        )
    if is_agent(approver):
        raise ApprovalError(
            f"{decision.approver!r} is an agent identity; agents never approve actions"
        )
    if approver in (identity_key(pending.requested_by), identity_key(pending.agent)):
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


def check_binding(pending: PendingApproval, decision: ApprovalDecision) -> None:
    """Raise ApprovalError when a (signed) decision was issued for another request."""
    for field in ("workflow_id", "run_id", "step", "args_digest", "policy_version"):
        want, got = getattr(pending, field), getattr(decision, field)
        if want != got:
            raise ApprovalError(
                f"the decision by {decision.approver!r} was issued for {field} {got!r}, but "
                f"request {pending.request_id!r} is for {want!r}; an approval covers one "
                "step, one set of arguments and one policy version — decide this request anew"
            )
    if decision.approver in pending.approved_by:
        raise ApprovalError(
            f"{decision.approver!r} has already approved request {pending.request_id!r}; "
            f"its quorum of {pending.quorum} needs distinct people"
        )


def check_edits(pending: PendingApproval, decision: ApprovalDecision) -> None:
    """Raise ApprovalError when `decision` edits what it may not; None when it may."""
    if not decision.edits and not decision.edited_digest:
        return
    if not decision.approve:
        raise ApprovalError(
            f"the rejection by {decision.approver!r} carries edits; reject without edits, "
            "or approve with them"
        )
    if not decision.edits or not decision.edited_digest:
        raise ApprovalError(
            f"the edit by {decision.approver!r} names no changed argument or no edited "
            "digest; send both through the approving service"
        )
    if pending.quorum > 1:
        raise ApprovalError(
            f"request {pending.request_id!r} needs {pending.quorum} approvers; an edit needs "
            "a quorum of one — approve as asked or reject with the change you want"
        )
    for name in decision.edits:
        if name not in pending.editable:
            allowed = ", ".join(pending.editable) or "none"
            raise ApprovalError(
                f"argument {name!r} of request {pending.request_id!r} is not editable "
                f"(editable: {allowed}); approve as asked or reject"
            )
