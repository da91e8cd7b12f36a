"""Approvals inside a governed workflow: signed, action-bound, escalating, with quorum.

`ApprovalsMixin` is a base of `AgentWorkflow`; it owns the `decide` update, the
`approve` signal (same payload) and the `halt` signal.

Contract (runs since the `signed-approvals` patch; older histories replay the first
version, kept below as `_await_approval_v1`):
- A request covers one step: workflow, run, step, digest of the action's arguments and
  the policy version. A decision counts only when the approving service signed all of
  them (`governance.signing`) with a key the workers trust; each signed decision is
  consumed once (its nonce).
- Separation of duties: the requester, the human who started the run and any agent
  identity never approve; approvers hold the role the policy names for the stage.
- Stages escalate: when a stage's deadline passes, the next approver role of the chain
  is asked; after the last one the request expires (rejected). A stage with quorum N
  needs N distinct approvers; one rejection rejects, its reason reaches the caller.
- Every refused attempt — unauthorised, self-approval, replayed, expired, forged,
  malformed — is recorded in the ledger by the handler itself: a refused update fails
  *after* it is accepted into history (no validator rejects it silently).
- Beyond the agent's cap of open requests the agent is paused until requests close;
  it is never approved automatically.
- `halt` (sent by the kill switch) ends a pending or paused wait as halted: since the
  `halted-outcome` patch the request closes as `halted` (approver: who engaged the switch,
  comment: the switch's reason) and the step raises ActionHalted, a subclass of
  ActionRejected; older histories replay the halt as a rejection.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue, ValidationError

    from tether.activities.governance import (
        ApprovalContext,
        CloseApprovalInput,
        GovernanceActivities,
        PrepareApprovalInput,
        approval_event,
    )
    from tether.activities.messages import ApprovalMessageInput, MessageActivities
    from tether.activities.payloads import StepRef
    from tether.activities.tools import ToolSpec
    from tether.errors import ApprovalError, ErrorType
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
    from tether.governance.presentation import key_values
    from tether.governance.signing import signer_of, verify_decision
    from tether.governance.types import Decision
    from tether.verification.events import LedgerEvent, digest
    from tether.workflows.errors import ActionHalted, ActionRejected

HALTED_PATCH = "halted-outcome"
"""Runs since this patch record a kill switch's halt as its own outcome, not a rejection."""
LOCAL = timedelta(seconds=30)
DEFAULT_APPROVAL_TIMEOUT = timedelta(hours=24)
MESSAGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
"""Approval messages retry until their activity gives up on a channel (its budget)."""


class ApprovalsMixin:
    """Approval state and handlers; `AgentWorkflow` calls `_init_approvals` first."""

    _step: int
    _agent: str

    def _init_approvals(self) -> None:
        self._pending: PendingApproval | None = None
        self._v2 = True
        """False while replaying a wait opened before signed approvals existed."""
        self._decision: ApprovalDecision | None = None
        self._refused: list[tuple[ApprovalDecision, str]] = []
        self._trusted: list[str] = []
        self._nonces: set[str] = set()
        self._grants: list[ApprovalDecision] = []
        self._rejection: ApprovalDecision | None = None
        self._halt: HaltRequest | None = None
        self._paused = False
        self._editing: ToolSpec | None = None
        """The tool whose request is open, when an approver may edit its arguments."""
        self._closed: tuple[str, str] = ("", "")
        """Action and resource of the last request, for refusals recorded after it closed."""

    # -- the wait ------------------------------------------------------------------------

    async def _await_approval(
        self,
        ref: StepRef,
        action: str,
        resource: str,
        args_json: dict[str, JsonValue],
        summary: str,
        decision: Decision,
        spec: ToolSpec | None = None,
        edit_of: str = "",
    ) -> list[ApprovalDecision]:
        """Wait for the approvals `decision` asks for; return the signed grants.

        `spec` (a tool's) gives the request its title, key fields and editable arguments;
        `edit_of` names the request whose edit this one decides anew (it is not editable).
        Raises ActionRejected when rejected, expired after the last stage, or halted.
        """
        if not workflow.patched("signed-approvals"):
            self._v2 = False
            await self._await_approval_v1(ref, action, resource, args_json, summary, decision)
            return []
        self._v2 = True
        self._closed = (action, resource)
        context = await self._prepare(ref, action, resource, decision)
        self._trusted = context.trusted_keys
        first = _request(ref, action, resource, args_json, summary, decision).model_copy(
            update={"requested_at": workflow.now()}
        )
        if spec is not None:
            first = first.model_copy(update=_presentation(spec, args_json, editable=not edit_of))
        if edit_of:
            first = first.model_copy(update={"request_id": edit_of + "-e", "edit_of": edit_of})
        self._editing = spec if spec is not None and spec.editable and not edit_of else None
        timeout = timedelta(seconds=decision.timeout_seconds or 0) or DEFAULT_APPROVAL_TIMEOUT
        for index, stage in enumerate(context.stages):
            pending = first.model_copy(
                update={
                    "request_id": first.request_id + (f"-s{index}" if index else ""),
                    "approver_role": stage.role,
                    "approvers": stage.members,
                    "deadline": workflow.now() + timeout,
                    "stage": index,
                    "stages": context.stages,
                    "quorum": stage.quorum,
                }
            )
            self._pending, self._grants, self._rejection = pending, [], None
            await workflow.execute_local_activity_method(
                GovernanceActivities.open_approval, pending, start_to_close_timeout=LOCAL
            )
            messages = None
            if context.messages and workflow.patched("approval-messages"):
                # Beside the wait, never in its way: a failing channel only retries.
                messages = workflow.start_activity_method(
                    MessageActivities.send_approval_messages,
                    ApprovalMessageInput(pending=pending),
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=MESSAGE_RETRY,
                )
            quorum = pending.quorum
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: (
                        self._halt is not None
                        or self._rejection is not None
                        or len(self._grants) >= quorum  # noqa: B023 (awaited right here)
                    ),
                    timeout=timeout,
                )
            if messages is not None:
                _settle(messages)
            last = index == len(context.stages) - 1
            status, approver, comment = self._verdict(pending.quorum, last)
            closing = CloseApprovalInput(
                pending=self._pending or pending, status=status, approver=approver, comment=comment
            )
            await workflow.execute_local_activity_method(
                GovernanceActivities.close_approval,
                closing,
                start_to_close_timeout=LOCAL,
            )
            self._pending = None
            if status is ApprovalStatus.APPROVED:
                return list(self._grants)
            if status is ApprovalStatus.HALTED:
                raise ActionHalted(
                    f"{action!r} on {resource!r} was halted by a kill switch: {comment}",
                    comment,
                    approver,
                )
            if status is not ApprovalStatus.ESCALATED:
                raise ActionRejected(
                    f"{action!r} on {resource!r} was not approved: {status.value} by "
                    f"{approver!r}" + (f" ({comment})" if comment else ""),
                    comment,
                )
        raise ActionRejected(f"{action!r} on {resource!r} has no approver stage", "")

    def _verdict(self, quorum: int, last: bool) -> tuple[ApprovalStatus, str, str]:
        if self._halt is not None:
            if workflow.patched(HALTED_PATCH):
                return ApprovalStatus.HALTED, self._halt.engaged_by, self._halt.reason
            return ApprovalStatus.REJECTED, self._halt.engaged_by, self._halt.reason
        if self._rejection is not None:
            return ApprovalStatus.REJECTED, self._rejection.approver, self._rejection.comment
        if len(self._grants) >= quorum:
            approvers = ", ".join(g.approver for g in self._grants)
            comments = "; ".join(g.comment for g in self._grants if g.comment)
            return ApprovalStatus.APPROVED, approvers, comments
        if last:
            return ApprovalStatus.EXPIRED, "deadline", "deadline passed"
        return ApprovalStatus.ESCALATED, "deadline", "deadline passed; escalated"

    async def _prepare(
        self, ref: StepRef, action: str, resource: str, decision: Decision
    ) -> ApprovalContext:
        """Stages and trusted keys; waits (paused) while the agent is over its cap."""
        while True:
            context: ApprovalContext = await workflow.execute_local_activity_method(
                GovernanceActivities.prepare_approval,
                PrepareApprovalInput(ref=ref, action=action, resource=resource, decision=decision),
                start_to_close_timeout=LOCAL,
            )
            if context.halted:
                self._paused = False
                if workflow.patched(HALTED_PATCH):
                    raise ActionHalted(
                        f"{action!r} on {resource!r} was halted by a kill switch: {context.halted}",
                        context.halted,
                    )
                raise ActionRejected(
                    f"{action!r} on {resource!r} was halted: {context.halted}", context.halted
                )
            if not context.paused:
                self._paused = False
                return context
            self._paused = True
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._halt is not None,
                    timeout=timedelta(seconds=context.pause_seconds),
                )
            if self._halt is not None:
                self._paused = False
                if workflow.patched(HALTED_PATCH):
                    raise ActionHalted(
                        f"{action!r} on {resource!r} was halted by a kill switch while the "
                        f"agent was paused: {self._halt.reason}",
                        self._halt.reason,
                        self._halt.engaged_by,
                    )
                raise ActionRejected(
                    f"{action!r} on {resource!r} was halted while the agent was paused: "
                    f"{self._halt.reason}",
                    self._halt.reason,
                )

    # -- handlers ------------------------------------------------------------------------

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
        if pending is None:
            return decision, (
                f"workflow {workflow.info().workflow_id!r} has no open approval request "
                f"{decision.request_id!r}; a decision is used once — list open requests with "
                "'tether approvals list'"
            )
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
        claimed = decision.approver if decision else _field(raw, "approver") or "unknown"
        signed_by = signer_of(decision, self._trusted) if decision else ""
        # Filed under the claimed name only when a trusted key vouches for it.
        actor = claimed if signed_by else "unverified"
        request_id = decision.request_id if decision else _field(raw, "request_id")
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
                action=self._closed[0],
                resource=self._closed[1],
                actor=actor,
                outcome="refused",
                payload=detail,
            )
        await workflow.execute_local_activity_method(
            GovernanceActivities.record_event, event, start_to_close_timeout=LOCAL
        )

    @workflow.update(name="decide")
    async def decide(self, raw: JsonValue) -> ApprovalOutcome:
        if self._pending is not None and not self._v2:
            return self._decide_v1(ApprovalDecision.model_validate(raw))
        decision, why = self._admit(raw)
        if why or decision is None:
            await self._record_refusal(decision, raw, why, "update")
            raise ApplicationError(why, type=ErrorType.APPROVAL_REFUSED, non_retryable=True)
        return self._accept(decision)

    @decide.validator
    def _validate_decide(self, raw: JsonValue) -> None:
        # Only waits opened before signed approvals reject here (as they always did);
        # since then every attempt is accepted into history so its refusal is recorded.
        if self._pending is not None and not self._v2:
            self._check_v1(ApprovalDecision.model_validate(raw))

    @workflow.signal(name="approve")
    async def approve_signal(self, raw: JsonValue) -> None:
        if self._pending is not None and not self._v2:
            self._signal_v1(raw)
            return
        decision, why = self._admit(raw)
        if why or decision is None:
            await self._record_refusal(decision, raw, why, "signal")
            return
        self._accept(decision)

    @workflow.signal(name="halt")
    def halt(self, request: HaltRequest) -> None:
        self._halt = request

    # -- the first version, kept so workflows started before it replay -------------------

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
        pending = _request(ref, action, resource, args_json, summary, decision).model_copy(
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


def _settle(messages: workflow.ActivityHandle[object]) -> None:
    """Stop sending a decided request's messages. Their outcome never fails the run (the
    activity records each delivery and failure in the ledger itself), so nothing waits
    for the cancellation; the callback only retrieves how it ended."""
    messages.add_done_callback(_retrieved)
    if not messages.done():
        messages.cancel()


def _retrieved(task: asyncio.Future[object]) -> None:
    if not task.cancelled() and isinstance(task.exception(), ActivityError):
        workflow.logger.debug("approval messages ended early: %s", task.exception())


def request_id_of(ref: StepRef) -> str:
    """The id of the approval request a step opens first."""
    return "apr-" + digest(ref.key("approval"))[7:19]


def _request(
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


def _presentation(
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


def _field(raw: JsonValue, name: str) -> str:
    value = raw.get(name) if isinstance(raw, dict) else None
    return value if isinstance(value, str) else ""
