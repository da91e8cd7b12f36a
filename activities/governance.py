"""Control-plane activities: decide, open and close approvals, record.

The notify tier's sinks are `activities.notify.NotifyActivities`.

All run as *local* activities from `workflows.agent`: their results land in workflow
history (so a replay reproduces a decision without asking today's policy) and they cost
no task-queue round trip. Each writes its ledger event idempotently by step and kind, so a
retried local activity records nothing twice. Synchronous: they run in the worker's
thread pool because SQLAlchemy here is synchronous.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field, JsonValue
from temporalio import activity

from tether.activities.payloads import DecideInput, StepRef
from tether.core import telemetry
from tether.errors import PolicyError
from tether.governance.approvals import (
    ApprovalStage,
    ApprovalStatus,
    HaltRequest,
    PendingApproval,
    parse_chain,
)
from tether.governance.derive import MISDECLARED_RULE
from tether.governance.kill import KillSwitches
from tether.governance.policy import PolicyEngine
from tether.governance.reload import PolicyHolder
from tether.governance.store import ApprovalStore
from tether.governance.types import Decision, DecisionRequest, Tier
from tether.verification.events import LedgerEvent, digest
from tether.verification.ledger import Ledger


class RecordWithContent(BaseModel):
    event: LedgerEvent
    content: list[JsonValue] = []


class CloseApprovalInput(BaseModel):
    pending: PendingApproval
    status: ApprovalStatus
    approver: str = ""
    comment: str = ""


class PrepareApprovalInput(BaseModel):
    ref: StepRef
    action: str
    resource: str
    decision: Decision


class ConfirmHaltInput(BaseModel):
    """A `halt` signal's claim, with the waiting step it would end (`ref` None: no wait)."""

    ref: StepRef | None = None
    action: str = ""
    resource: str = ""
    claim: HaltRequest
    workflow_id: str = ""
    run_id: str = ""
    step: int = 0
    agent: str = ""
    request_id: str = ""


class ApprovalContext(BaseModel):
    """What a workflow needs before it opens an approval request."""

    stages: list[ApprovalStage] = Field(default_factory=list)
    trusted_keys: list[str] = Field(default_factory=list)
    """Hex Ed25519 public keys of the approving services the workers trust."""
    paused: bool = False
    """The agent has its cap of open requests: wait `pause_seconds`, then ask again."""
    pause_seconds: int = 30
    halted: str = ""
    """A kill switch covers this step: why. The request is never opened."""
    messages: bool = False
    """Approval message channels are configured: send each opened request out."""


class GovernanceActivities:
    def __init__(
        self,
        policy: PolicyHolder | PolicyEngine,
        ledger: Ledger,
        approvals: ApprovalStore,
        *,
        trusted_keys: list[str] | None = None,
        approval_cap: int = 20,
        pause_seconds: int = 30,
        kills: KillSwitches | None = None,
        messages: bool = False,
    ) -> None:
        self.kills = kills
        self.messages = messages
        self.policies = policy if isinstance(policy, PolicyHolder) else PolicyHolder(policy)
        self.ledger = ledger
        self.approvals = approvals
        self.trusted_keys = list(trusted_keys or [])
        self.approval_cap = approval_cap
        self.pause_seconds = pause_seconds

    @property
    def policy(self) -> PolicyEngine:
        """The policy in force now: read once per decision, so a reload applies to the next."""
        return self.policies.current()

    @activity.defn(name="decide_step")
    def decide_step(self, inp: DecideInput) -> Decision:
        killed = self._killed(inp)
        if inp.refused:
            decision = Decision(
                tier=Tier.DENY,
                rule=MISDECLARED_RULE,
                policy_version=self.policy.version,
                reason=inp.refused,
            )
        elif killed is not None:
            decision = killed
        elif inp.governed:
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
        policy_said = decision
        if inp.floor is not None and decision.tier.severity < inp.floor.tier.severity:
            why = "an edit never lowers the tier" if inp.record_as else "the step's floor"
            decision = inp.floor.model_copy(
                update={
                    "reason": f"{why}: policy says {policy_said.tier} "
                    f"under rule {policy_said.rule!r}, the step stays {inp.floor.tier} under "
                    f"{inp.floor.rule!r} ({inp.floor.reason})",
                    "policy_version": inp.floor.policy_version or policy_said.policy_version,
                }
            )
        self.ledger.append(
            inp.ref.event(
                "decision",
                key=inp.record_as,
                action=inp.action,
                resource=inp.resource,
                decision=decision,
                actor="policy",
                outcome={Tier.DENY: "denied", Tier.APPROVE: "needs-approval"}.get(
                    decision.tier, "allowed"
                ),
                payload={
                    "reason": decision.reason,
                    "args_digest": inp.args_digest,
                    "args_summary": inp.args_summary,
                    "context": inp.context,
                    "context_digest": digest(inp.context),
                    **({"tool": inp.tool} if inp.tool else {}),
                    **({"refused": inp.refused, "claimed": inp.claimed} if inp.refused else {}),
                    **({"regoverns": inp.regoverns} if inp.regoverns else {}),
                    **(
                        {"approval_timeout_s": decision.timeout_seconds}
                        if decision.timeout_seconds
                        else {}
                    ),
                    "started_by": inp.ref.started_by,
                    "inputs": list(inp.inputs),
                    "workflow_type": inp.ref.workflow_type,
                    **({"idempotency_key": inp.effect_key} if inp.effect_key else {}),
                    **(
                        {"edited": True, "policy_tier": policy_said.tier.value} if inp.floor else {}
                    ),
                },
            )
        )
        telemetry.record_decision(inp.ref.agent, inp.action, inp.resource, decision)
        return decision

    @activity.defn(name="prepare_approval")
    def prepare_approval(self, inp: PrepareApprovalInput) -> ApprovalContext:
        """The escalation chain with its members now, or `paused` over the agent's cap."""
        ref = inp.ref
        killed = self.kills.blocking(ref.tenant, ref.agent, inp.action) if self.kills else None
        if killed is not None:  # engaged while this step was decided or paused
            return ApprovalContext(halted=killed.describe())
        open_now = self.approvals.count_open(agent=ref.agent, excluding_workflow=ref.workflow_id)
        if open_now >= self.approval_cap:
            self.ledger.append(
                ref.event(
                    "agent.paused",
                    key=f"agent.paused.{open_now}",
                    action=inp.action,
                    resource=inp.resource,
                    decision=inp.decision,
                    actor="approvals",
                    outcome="paused",
                    payload={"open_requests": open_now, "cap": self.approval_cap},
                )
            )
            return ApprovalContext(paused=True, pause_seconds=self.pause_seconds)
        field = inp.decision.approver_role or ""
        try:
            chain = parse_chain(field)
        except PolicyError as exc:
            # A policy that loaded with a bad chain must not approve anything: nobody may.
            activity.logger.error("%s", exc)
            chain = [(field, 1)]
        stages = [
            ApprovalStage(role=role, quorum=quorum, members=self.policy.members(role))
            for role, quorum in chain
        ]
        return ApprovalContext(
            stages=stages,
            trusted_keys=self.trusted_keys,
            pause_seconds=self.pause_seconds,
            messages=self.messages,
        )

    def _killed(self, inp: DecideInput) -> Decision | None:
        """A deny when an engaged kill switch covers this step; read on every decision."""
        if self.kills is None:
            return None
        ref = inp.ref
        record = self.kills.blocking(ref.tenant, ref.agent, inp.action)
        if record is None:
            return None
        return Decision(
            tier=Tier.DENY, rule=record.rule, policy_version="", reason=record.describe()
        )

    @activity.defn(name="confirm_halt")
    def confirm_halt(self, inp: ConfirmHaltInput) -> HaltRequest | None:
        """The halt an engaged kill switch covering the waiting step proves, else None.

        The switch in the store names who engaged it and why, whatever the signal claims.
        A halt no switch backs is recorded as `halt.refused` and changes nothing.
        """
        ref = inp.ref
        record = (
            self.kills.blocking(ref.tenant, ref.agent, inp.action)
            if self.kills is not None and ref is not None
            else None
        )
        if record is not None:
            return HaltRequest(reason=record.describe(), engaged_by=record.engaged_by)
        claimed = inp.claim.engaged_by
        why = (
            f"halt claimed by {claimed!r} ({inp.claim.reason!r}) is backed by no engaged kill "
            "switch covering this step; engage one with 'tether kill engage'"
            if ref is not None
            else f"halt claimed by {claimed!r} arrived while no approval waits; nothing to halt"
        )
        self.ledger.append(
            LedgerEvent(
                idempotency_key=f"{inp.workflow_id}:{inp.run_id}:halt.refused."
                f"{activity.info().activity_id}",
                kind="halt.refused",
                workflow_id=inp.workflow_id,
                run_id=inp.run_id,
                step=inp.step,
                agent=inp.agent,
                action=inp.action,
                resource=inp.resource,
                actor=claimed,
                outcome="refused",
                payload={"request_id": inp.request_id, "why": why, "reason": inp.claim.reason},
            )
        )
        return None

    @activity.defn(name="open_approval")
    def open_approval(self, pending: PendingApproval) -> None:
        self.approvals.open(pending)
        self._approval_event(pending, "approval.requested", "pending", pending.requested_by, "")

    @activity.defn(name="close_approval")
    def close_approval(self, inp: CloseApprovalInput) -> None:
        self.approvals.close(inp.pending.request_id, inp.status, inp.approver)
        requested = self.ledger.get(approval_key(inp.pending, "approval.requested"))
        if requested is not None:
            since = datetime.fromisoformat(requested.recorded_at)
            waited = (datetime.now(UTC) - since).total_seconds()
            telemetry.approval_wait(waited, inp.status.value, inp.pending.agent)
        self._approval_event(
            inp.pending, "approval.decided", inp.status.value, inp.approver, inp.comment
        )

    @activity.defn(name="record_event_with_content")
    def record_event_with_content(self, inp: RecordWithContent) -> None:
        """`record_event`, with the content its digests name kept in the content store
        (an adapter's model call: the prompt and output that `audit verify` checks)."""
        self.ledger.append(inp.event, inp.content)

    @activity.defn(name="record_event")
    def record_event(self, event: LedgerEvent) -> None:
        if event.kind.endswith(".waiting") and self.ledger.get(event.idempotency_key) is None:
            # A run begins or ends waiting out an outage (`workflows.outage`): counted
            # once, when the event is new (a retried record counts nothing twice).
            telemetry.run_waiting(event.kind.split(".")[0], 1 if event.outcome == "waiting" else -1)
        self.ledger.append(event)

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


def approval_key(pending: PendingApproval, kind: str) -> str:
    """The idempotency key of `pending`'s `kind` event at its current stage."""
    stage = f".s{pending.stage}" if pending.stage else ""
    if pending.edit_of:  # a step's edit asked anew is a request of its own
        stage = ".edited" + stage
    return f"{pending.workflow_id}:{pending.run_id}:{pending.step}:{kind}{stage}"


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
        idempotency_key=approval_key(pending, kind) + key_suffix,
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
