"""The tool side of a governed step: before a tool runs, on every try, it checks that its
recorded decision covers this call and still holds.

Covers (`ToolRefused` when not): the ledger holds a decision for the step (an approver's
edit decided anew rules: `decision.edited`) whose action is the tool's, whose resource is
the tool's template over these arguments, whose context is the one the arguments give
(its digest, `governance.derive.expected_context`), and whose arguments digest is these
arguments'; it is not a deny, and an approve-tier step carries a signed approval bound to
this step and these arguments.

Still holds (`DispatchRefused`, its first detail the check that failed):
- `kill_switch`: no engaged kill switch covers the step's tenant, agent or action;
- `approval_expired`: the approval was issued (its signed `issued_at`) no longer ago than
  the approval timeout of its rule (24 h when the rule names none);
- `policy_changed`: the decision's policy version is still in force, or the policy in
  force now gives the same or a lower tier for the recorded request. The workflow governs
  the step anew on `policy_changed` and `approval_expired`, and raises ActionHalted on a
  kill switch.

Reads the ledger, the kill switches and the policy in force; writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import JsonValue

from tether.activities.payloads import ToolCall
from tether.governance.approvals import ApprovalDecision
from tether.governance.derive import expected_context, render_resource, same_name
from tether.governance.kill import KillSwitches
from tether.governance.reload import PolicyHolder
from tether.governance.signing import verify_decision
from tether.governance.types import DecisionRequest, Tier
from tether.verification.events import RecordedEvent, digest
from tether.verification.ledger import Ledger

if TYPE_CHECKING:
    from tether.activities.tools import ToolSpec

DEFAULT_APPROVAL_VALIDITY = timedelta(hours=24)

KILL_SWITCH = "kill_switch"
APPROVAL_EXPIRED = "approval_expired"
POLICY_CHANGED = "policy_changed"
COVERED = "decision"
"""The check of `Refusal` when the recorded decision does not cover the call."""


@dataclass(frozen=True)
class Refusal:
    check: str
    why: str
    engaged_by: str = ""


class DispatchChecks:
    def __init__(
        self,
        ledger: Ledger,
        trusted_keys: list[str],
        policy: PolicyHolder | None = None,
        kills: KillSwitches | None = None,
    ) -> None:
        self.ledger = ledger
        self.trusted_keys = trusted_keys
        self.policy = policy
        self.kills = kills

    def check(self, spec: ToolSpec, call: ToolCall, now: datetime | None = None) -> Refusal | None:
        """None when the tool may run now; else why not."""
        ref = call.ref
        decided = self.ledger.get(ref.key("decision.edited")) or self.ledger.get(
            ref.key("decision")
        )
        if decided is None:
            return Refusal(
                COVERED,
                f"no decision is recorded for step {ref.step} of workflow {ref.workflow_id!r}; "
                "tools run only through act(), which asks the policy first",
            )
        problem = self._covers(spec, call, decided)
        if problem:
            return Refusal(COVERED, problem)
        grant = None
        if decided.tier == Tier.APPROVE.value:
            grant = self._grant(call)
            if grant is None:
                return Refusal(
                    COVERED,
                    f"step {ref.step} of workflow {ref.workflow_id!r} needs approval and carries "
                    "no valid signed approval for these arguments; it needs approval again",
                )
        return self._still_holds(call, decided, grant, now or datetime.now(UTC))

    def _covers(self, spec: ToolSpec, call: ToolCall, decided: RecordedEvent) -> str:
        step = call.ref.step
        args_digest = digest(call.args)
        if decided.payload.get("args_digest") != args_digest:
            return (
                f"the arguments of step {step} ({args_digest}) are not those the policy "
                f"decided ({decided.payload.get('args_digest')}); they need a decision anew"
            )
        if not same_name("action", decided.action, spec.action):
            return (
                f"the policy decided step {step} for the action {decided.action!r}, but tool "
                f"{spec.name!r} does {spec.action!r}; govern it through act(tool, args)"
            )
        try:
            resource = render_resource(spec.resource, call.args)
        except (KeyError, IndexError, ValueError):
            resource = spec.resource
        if not same_name("resource", decided.resource, resource):
            return (
                f"the policy decided step {step} on the resource {decided.resource!r}, but tool "
                f"{spec.name!r} acts on {resource!r}; govern it through act(tool, args)"
            )
        recorded = decided.payload.get("context")
        recorded = recorded if isinstance(recorded, dict) else {}
        expected = expected_context(spec.context_fields, call.args, recorded)
        if "context_digest" in decided.payload:
            if digest(expected) != decided.payload["context_digest"]:
                return (
                    f"the policy decided step {step} on the context {recorded!r}, but tool "
                    f"{spec.name!r} and its arguments give {expected!r}; the arguments "
                    "decide the context"
                )
        else:  # decided before decisions recorded their context's digest
            wrong = [k for k in recorded if k in call.args and recorded[k] != call.args[k]]
            if wrong:
                return (
                    f"the policy decided step {step} with {wrong[0]}={recorded[wrong[0]]!r}, "
                    f"but the argument is {call.args[wrong[0]]!r}; the arguments decide the "
                    "context"
                )
        if decided.tier == Tier.DENY.value:
            return f"the policy denied step {step} under rule {decided.rule!r}"
        return ""

    def _grant(self, call: ToolCall) -> ApprovalDecision | None:
        ref, args_digest = call.ref, digest(call.args)
        for grant in call.approvals:
            # An edited approval binds the edited arguments (its signed `edited_digest`).
            approved = grant.edited_digest or grant.args_digest
            bound = (grant.workflow_id, grant.run_id, grant.step, approved) == (
                ref.workflow_id,
                ref.run_id,
                ref.step,
                args_digest,
            )
            if grant.approve and bound and not verify_decision(grant, self.trusted_keys):
                return grant
        return None

    def _still_holds(
        self,
        call: ToolCall,
        decided: RecordedEvent,
        grant: ApprovalDecision | None,
        now: datetime,
    ) -> Refusal | None:
        ref = call.ref
        agent = decided.agent or ref.agent
        killed = self.kills.blocking(ref.tenant, agent, decided.action) if self.kills else None
        if killed is not None:
            return Refusal(
                KILL_SWITCH, f"at dispatch, {killed.describe()}", engaged_by=killed.engaged_by
            )
        if grant is not None and grant.issued_at:
            validity = _validity(decided, call)
            try:
                issued = datetime.fromisoformat(grant.issued_at)
            except ValueError:
                issued = datetime.min.replace(tzinfo=UTC)  # unreadable: as good as expired
            issued = issued if issued.tzinfo else issued.replace(tzinfo=UTC)
            if now > issued + validity:
                return Refusal(
                    APPROVAL_EXPIRED,
                    f"the approval by {grant.approver!r} was issued at {grant.issued_at} and "
                    f"was good for {validity}; the step needs approval again",
                )
        if self.policy is None or not decided.policy_version:
            return None
        current = self.policy.current()
        if current.version == decided.policy_version:
            return None
        context = decided.payload.get("context")
        now_says = current.decide(
            DecisionRequest(
                agent=agent,
                action=decided.action,
                resource=decided.resource,
                context=context if isinstance(context, dict) else {},
            )
        )
        if now_says.tier.severity <= Tier(decided.tier).severity:
            return None
        return Refusal(
            POLICY_CHANGED,
            f"the policy changed since step {ref.step} was decided: {current.version} gives "
            f"{now_says.tier.value} under rule {now_says.rule!r} where "
            f"{decided.policy_version} gave {decided.tier} under {decided.rule!r}; the step "
            "is governed anew",
        )


def _validity(decided: RecordedEvent, call: ToolCall) -> timedelta:
    seconds: JsonValue = decided.payload.get("approval_timeout_s")
    if not isinstance(seconds, int) and call.decision is not None:
        seconds = call.decision.timeout_seconds
    return (
        timedelta(seconds=seconds)
        if isinstance(seconds, int) and seconds > 0
        else (DEFAULT_APPROVAL_VALIDITY)
    )
