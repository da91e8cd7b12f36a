"""Control-plane activities: decide, open and close approvals, notify, record.

All run as *local* activities from `workflows.agent`: their results land in workflow
history (so a replay reproduces a decision without asking today's policy) and they cost
no task-queue round trip. Each writes its ledger event idempotently by step and kind, so a
retried local activity records nothing twice. Synchronous: they run in the worker's
thread pool because SQLAlchemy here is synchronous.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, JsonValue
from temporalio import activity

from activities.payloads import DecideInput, NotifyInput
from governance.approvals import ApprovalStatus, PendingApproval
from governance.policy import PolicyEngine
from governance.store import ApprovalStore
from governance.types import Decision, DecisionRequest, Tier
from verification.ledger import Ledger, LedgerEvent

log = logging.getLogger("tether.notify")


class CloseApprovalInput(BaseModel):
    pending: PendingApproval
    status: ApprovalStatus
    approver: str = ""
    comment: str = ""


class GovernanceActivities:
    def __init__(self, policy: PolicyEngine, ledger: Ledger, approvals: ApprovalStore) -> None:
        self.policy = policy
        self.ledger = ledger
        self.approvals = approvals

    @activity.defn(name="decide_step")
    def decide_step(self, inp: DecideInput) -> Decision:
        if inp.governed:
            decision = self.policy.decide(
                DecisionRequest(
                    agent=inp.ref.agent,
                    action=inp.action,
                    resource=inp.resource,
                    context=inp.context,
                )
            )
        else:
            decision = Decision(
                tier=Tier.AUTO, rule="ungoverned", policy_version="", reason="governance is off"
            )
        self.ledger.append(
            LedgerEvent(
                idempotency_key=inp.ref.key("decision"),
                kind="decision",
                workflow_id=inp.ref.workflow_id,
                run_id=inp.ref.run_id,
                step=inp.ref.step,
                agent=inp.ref.agent,
                action=inp.action,
                resource=inp.resource,
                tier=decision.tier.value,
                rule=decision.rule,
                policy_version=decision.policy_version,
                actor="policy",
                outcome={Tier.DENY: "denied", Tier.APPROVE: "needs-approval"}.get(
                    decision.tier, "allowed"
                ),
                payload={
                    "reason": decision.reason,
                    "args_digest": inp.args_digest,
                    "args_summary": inp.args_summary,
                    "context": inp.context,
                    "started_by": inp.ref.started_by,
                    "inputs": list(inp.inputs),
                    "workflow_type": inp.ref.workflow_type,
                },
            )
        )
        return decision

    @activity.defn(name="open_approval")
    def open_approval(self, pending: PendingApproval) -> None:
        self.approvals.open(pending)
        self._approval_event(pending, "approval.requested", "pending", pending.requested_by, "")

    @activity.defn(name="close_approval")
    def close_approval(self, inp: CloseApprovalInput) -> None:
        self.approvals.close(inp.pending.request_id, inp.status, inp.approver)
        self._approval_event(
            inp.pending, "approval.decided", inp.status.value, inp.approver, inp.comment
        )

    @activity.defn(name="record_event")
    def record_event(self, event: LedgerEvent) -> None:
        self.ledger.append(event)

    @activity.defn(name="notify")
    def notify(self, inp: NotifyInput) -> None:
        log.info(
            "notify: %s did %s on %s under rule %s (workflow %s, step %d)",
            inp.ref.agent,
            inp.action,
            inp.resource,
            inp.decision.rule,
            inp.ref.workflow_id,
            inp.ref.step,
        )
        self.ledger.append(
            LedgerEvent(
                idempotency_key=inp.ref.key("notify"),
                kind="notify",
                workflow_id=inp.ref.workflow_id,
                run_id=inp.ref.run_id,
                step=inp.ref.step,
                agent=inp.ref.agent,
                action=inp.action,
                resource=inp.resource,
                tier=inp.decision.tier.value,
                rule=inp.decision.rule,
                policy_version=inp.decision.policy_version,
                actor="notify",
                outcome="sent",
                payload={"sinks": ["log"], "result_digest": inp.result_digest},
            )
        )

    def _approval_event(
        self, pending: PendingApproval, kind: str, outcome: str, actor: str, comment: str
    ) -> None:
        self.ledger.append(
            approval_event(
                pending,
                kind,
                outcome,
                actor,
                {
                    "approver_role": pending.approver_role,
                    "args_digest": pending.args_digest,
                    "deadline": pending.deadline.isoformat() if pending.deadline else None,
                    "comment": comment,
                },
            )
        )


def approval_event(
    pending: PendingApproval,
    kind: str,
    outcome: str,
    actor: str,
    payload: dict[str, JsonValue],
    key_suffix: str = "",
) -> LedgerEvent:
    """A ledger event about an approval request (requested, decided, refused attempt)."""
    return LedgerEvent(
        idempotency_key=f"{pending.workflow_id}:{pending.run_id}:{pending.step}:{kind}{key_suffix}",
        kind=kind,
        workflow_id=pending.workflow_id,
        run_id=pending.run_id,
        step=pending.step,
        agent=pending.agent,
        action=pending.action,
        resource=pending.resource,
        tier=Tier.APPROVE.value,
        rule=pending.rule,
        policy_version=pending.policy_version,
        actor=actor,
        outcome=outcome,
        payload={"request_id": pending.request_id, **payload},
    )
