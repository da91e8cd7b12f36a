"""Approvals inside a governed workflow: signed, action-bound, escalating, with quorum.

`ApprovalsMixin` is a base of `AgentWorkflow`; it owns the `decide` update, the
`approve` signal (same payload) and the `halt` signal. Attempts are admitted or
refused by `workflows.approval_intake`; requests are built by `workflows.approval_requests`.

Contract (runs since the `signed-approvals` patch; older histories replay the first
version, kept in `workflows.approvals_v1`):
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
- A request is decided once: since the `decided-once` patch an attempt that arrives after
  the request is decided (granted to quorum, rejected or halted) is refused and recorded
  like any refused attempt, so the loser of an approve/reject race is told it lost.
- `halt` (sent by the kill switch) ends a pending or paused wait as halted: since the
  `halted-outcome` patch the request closes as `halted` (approver: who engaged the switch,
  comment: the switch's reason) and the step raises ActionHalted, a subclass of
  ActionRejected; older histories replay the halt as a rejection. Since the `halt-proof`
  patch a halt counts only when an engaged kill switch in the store covers the step: the
  signal only queues the claim, and the waiting step checks it (`confirm_halt`, a local
  activity run by the wait, never by the handler); the switch, not the signal, names who
  engaged it, and a halt no switch backs is refused, recorded (`halt.refused`), and the
  wait goes on until its deadline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue

    from tether.activities.governance import (
        ApprovalContext,
        CloseApprovalInput,
        ConfirmHaltInput,
        GovernanceActivities,
        PrepareApprovalInput,
    )
    from tether.activities.messages import ApprovalMessageInput, MessageActivities
    from tether.activities.payloads import StepRef
    from tether.activities.tools import ToolSpec
    from tether.errors import ErrorType
    from tether.governance.approvals import (
        ApprovalDecision,
        ApprovalOutcome,
        ApprovalStatus,
        HaltRequest,
        PendingApproval,
    )
    from tether.governance.types import Decision
    from tether.workflows.approval_intake import ApprovalIntake
    from tether.workflows.approval_requests import (
        approval_request,
        presentation,
        settle,
    )
    from tether.workflows.errors import ActionHalted, ActionRejected

HALTED_PATCH = "halted-outcome"
"""Runs since this patch record a kill switch's halt as its own outcome, not a rejection."""
HALT_PROOF_PATCH = "halt-proof"
"""Runs since this patch count a halt only when an engaged kill switch covers the step."""
LOCAL = timedelta(seconds=30)
DEFAULT_APPROVAL_TIMEOUT = timedelta(hours=24)
MESSAGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
"""Approval messages retry until their activity gives up on a channel (its budget)."""


class ApprovalsMixin(ApprovalIntake):
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
        self._closed: dict[str, str] = {}
        self._halt_claims: list[HaltRequest] = []
        """`halt` signals not yet checked against the kill switches (`halt-proof`)."""
        self._halt_scope: tuple[StepRef, str, str] | None = None
        """The step (ref, action, resource) whose wait a halt would end, while it waits."""
        self._paused = False
        self._editing: ToolSpec | None = None
        """The tool whose request is open, when an approver may edit its arguments."""
        self._last_step: tuple[str, str] = ("", "")
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
        self._last_step = (action, resource)
        self._halt_scope = (ref, action, resource)
        try:
            return await self._await_stages(
                ref, action, resource, args_json, summary, decision, spec, edit_of
            )
        finally:
            self._halt_scope = None

    async def _await_stages(
        self,
        ref: StepRef,
        action: str,
        resource: str,
        args_json: dict[str, JsonValue],
        summary: str,
        decision: Decision,
        spec: ToolSpec | None,
        edit_of: str,
    ) -> list[ApprovalDecision]:
        context = await self._prepare(ref, action, resource, decision)
        self._trusted = context.trusted_keys
        first = approval_request(ref, action, resource, args_json, summary, decision).model_copy(
            update={"requested_at": workflow.now()}
        )
        if spec is not None:
            first = first.model_copy(update=presentation(spec, args_json, editable=not edit_of))
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
            await self._wait(
                lambda: (
                    self._halt is not None
                    or self._rejection is not None
                    or len(self._grants) >= quorum  # noqa: B023 (awaited right here)
                ),
                timeout,
            )
            if messages is not None:
                settle(messages)
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
            self._closed[closing.pending.request_id] = f"{status.value} by {approver!r}"
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
            await self._wait(
                lambda: self._halt is not None, timedelta(seconds=context.pause_seconds)
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
        if workflow.patched(HALT_PROOF_PATCH):
            self._halt_claims.append(request)  # the waiting step checks it (`_wait`)
        else:
            self._halt = request

    async def _wait(self, done: Callable[[], bool], longest: timedelta) -> None:
        """Wait until `done()` or `longest` passed; a halt claim that arrives meanwhile is checked
        here, by the step itself (never in the signal handler, so replay sees the same
        commands in the same order), and the wait goes on when no switch backs it."""
        deadline = workflow.now() + longest
        while True:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: done() or bool(self._halt_claims),
                    timeout=deadline - workflow.now(),
                )
            if done() or not self._halt_claims:
                return
            while self._halt_claims and self._halt is None:
                self._halt = await self._confirm_halt(self._halt_claims.pop(0))
            self._halt_claims.clear()
            if done() or workflow.now() >= deadline:
                return

    async def _confirm_halt(self, claim: HaltRequest) -> HaltRequest | None:
        """The halt an engaged kill switch proves for the waiting step, else None (the
        activity records the refused claim as `halt.refused`)."""
        scope = self._halt_scope
        info = workflow.info()
        confirmed: HaltRequest | None = await workflow.execute_local_activity_method(
            GovernanceActivities.confirm_halt,
            ConfirmHaltInput(
                ref=scope[0] if scope else None,
                action=scope[1] if scope else "",
                resource=scope[2] if scope else "",
                claim=claim,
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                step=self._step,
                agent=self._agent,
                request_id=self._pending.request_id if self._pending else "",
            ),
            start_to_close_timeout=LOCAL,
        )
        return confirmed
