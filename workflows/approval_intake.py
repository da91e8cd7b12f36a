"""Intake of approval attempts: admit, accept, or refuse and record each one.

`ApprovalIntake` is a base of `ApprovalsMixin` (`workflows.approvals`), whose `decide`
update and `approve` signal hand every attempt here. `_admit` says why an attempt does
not count ("" when it does): malformed, no open request, already decided (since the
`decided-once` patch), a consumed nonce, the separation-of-duty and binding rules of
`governance.approvals`, a bad signature, a bad edit. Deterministic: the workflow's clock,
no I/O except the refusal's ledger record (a local activity).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue, ValidationError

    from tether.activities.governance import GovernanceActivities, approval_event
    from tether.activities.tools import ToolSpec
    from tether.errors import ApprovalError
    from tether.governance.approvals import (
        ApprovalDecision,
        ApprovalOutcome,
        ApprovalStatus,
        HaltRequest,
        PendingApproval,
        check_approval,
        check_binding,
        check_edits,
    )
    from tether.governance.signing import signer_of, verify_decision
    from tether.verification.events import LedgerEvent, digest
    from tether.workflows.approval_requests import field_of
    from tether.workflows.approvals_v1 import ApprovalsV1Mixin

LOCAL = timedelta(seconds=30)
DECIDED_ONCE_PATCH = "decided-once"
"""Runs since this patch refuse (and record) an attempt on a request already decided."""


class ApprovalIntake(ApprovalsV1Mixin):
    """Admission of decisions; the state is `ApprovalsMixin._init_approvals`'s."""

    _step: int
    _agent: str
    _nonces: set[str]
    _trusted: list[str]
    _grants: list[ApprovalDecision]
    _rejection: ApprovalDecision | None
    _halt: HaltRequest | None
    _editing: ToolSpec | None
    _closed: dict[str, str]
    _last_step: tuple[str, str]
    """Requests this run closed: how each ended (a late attempt is told so)."""

    def _admit(self, raw: JsonValue) -> tuple[ApprovalDecision | None, str]:
        """The decision and "" when it counts; otherwise why it is refused."""
        try:
            decision = ApprovalDecision.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            return None, (
                f"malformed approval decision: {where}: {first['msg']}; send request_id, "
                "approver and approve through the approving service"
            )
        pending = self._pending
        closed = self._closed.get(decision.request_id, "")
        if pending is None and closed and workflow.patched(DECIDED_ONCE_PATCH):
            return decision, self._too_late(decision, closed)
        if pending is None:
            return decision, (
                f"workflow {workflow.info().workflow_id!r} has no open approval request "
                f"{decision.request_id!r}; a decision is used once — list open requests with "
                "'tether approvals list'"
            )
        settled = self._settled(pending)
        if settled and workflow.patched(DECIDED_ONCE_PATCH):
            return decision, self._too_late(decision, settled)
        if decision.nonce and decision.nonce in self._nonces:
            return decision, (
                f"the signed decision by {decision.approver!r} (nonce {decision.nonce!r}) was "
                "already used; each decision is consumed once"
            )
        try:
            check_approval(pending, decision, workflow.now())
            problem = verify_decision(decision, self._trusted)
            if problem:
                raise ApprovalError(problem)
            check_binding(pending, decision)
            check_edits(pending, decision)
        except ApprovalError as exc:
            return decision, str(exc)
        if decision.edits:
            return decision, self._check_edited(pending, decision)
        return decision, ""

    @staticmethod
    def _too_late(decision: ApprovalDecision, how: str) -> str:
        return (
            f"approval request {decision.request_id!r} is already decided ({how}); the "
            f"{'approval' if decision.approve else 'rejection'} by {decision.approver!r} "
            "came too late and does not count"
        )

    def _settled(self, pending: PendingApproval) -> str:
        """How the open request was decided while its wait has not closed it yet, or ""."""
        if self._halt is not None:
            return f"halted by {self._halt.engaged_by!r}"
        if self._rejection is not None:
            return f"rejected by {self._rejection.approver!r}"
        if len(self._grants) >= pending.quorum:
            return "approved by " + ", ".join(repr(g.approver) for g in self._grants)
        return ""

    def _check_edited(self, pending: PendingApproval, decision: ApprovalDecision) -> str:
        """ "" when the edited arguments are valid and are what the decision signed."""
        spec = self._editing
        if spec is None:
            return f"request {pending.request_id!r} takes no edits; approve as asked or reject"
        try:
            edited = spec.args_type.model_validate({**pending.args, **decision.edits})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "arguments"
            return f"the edited arguments are not valid: {where}: {first['msg']}; edit again"
        edited_json: dict[str, JsonValue] = edited.model_dump(mode="json")
        if digest(edited_json) != decision.edited_digest:
            return (
                f"the edit by {decision.approver!r} signs digest {decision.edited_digest!r}, "
                f"but the edited arguments are {digest(edited_json)!r}; edit again"
            )
        return ""

    def _accept(self, decision: ApprovalDecision) -> ApprovalOutcome:
        self._nonces.add(decision.nonce)
        pending = self._pending
        assert pending is not None  # _admit checked it
        if decision.approve:
            self._grants.append(decision)
            self._pending = pending.model_copy(
                update={"approved_by": [*pending.approved_by, decision.approver]}
            )
            done = len(self._grants) >= pending.quorum
            status = ApprovalStatus.APPROVED if done else ApprovalStatus.PENDING
        else:
            self._rejection = decision
            status = ApprovalStatus.REJECTED
        return ApprovalOutcome(
            request_id=decision.request_id,
            status=status,
            approver=decision.approver,
            comment=decision.comment,
        )

    async def _record_refusal(
        self, decision: ApprovalDecision | None, raw: JsonValue, why: str, via: str
    ) -> None:
        claimed = decision.approver if decision else field_of(raw, "approver") or "unknown"
        signed_by = signer_of(decision, self._trusted) if decision else ""
        # Filed under the claimed name only when a trusted key vouches for it.
        actor = claimed if signed_by else "unverified"
        request_id = decision.request_id if decision else field_of(raw, "request_id")
        detail: dict[str, JsonValue] = {
            "request_id": request_id,
            "why": why,
            "via": via,
            "claimed_by": claimed,
            "signed_by": signed_by,
        }
        suffix = f".{workflow.uuid4()}"
        if self._pending is not None:
            event = approval_event(
                self._pending, "approval.refused", "refused", actor, detail, key_suffix=suffix
            )
        else:
            info = workflow.info()
            event = LedgerEvent(
                idempotency_key=f"{info.workflow_id}:{info.run_id}:approval.refused{suffix}",
                kind="approval.refused",
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                step=self._step,
                agent=self._agent,
                action=self._last_step[0],
                resource=self._last_step[1],
                actor=actor,
                outcome="refused",
                payload=detail,
            )
        await workflow.execute_local_activity_method(
            GovernanceActivities.record_event, event, start_to_close_timeout=LOCAL
        )
