"""`ReviewWindowWorkflow`: after a notify-tier action, a window in which a reviewer may flag it.

`notify_step` is the parent's side (called by `AgentWorkflow.act`): tell the sinks, then
start the window as a child workflow `<workflow_id>-review-<step>` that outlives the run
(ParentClosePolicy.ABANDON). Guarded by `workflow.patched("notify-review-window")`, so
histories recorded before it replay unchanged.

The window waits for the `flag` update until `until`. The window is the authority: it
refuses agents, people outside the rule's approver role when the rule names one, a
malformed flag, a second flag, and a closed window. Since the `review-refusals-recorded`
patch the update handler refuses (ApplicationError `ReviewRefused`) after the update is
accepted into history, and records `review.refused` first, so a refusal sent straight
to Temporal is in the ledger too; windows opened before the patch refuse in the
validator, as they did (`tether review flag` records those). A flag sent after the
window's workflow ended reaches no code: the reviewing service records that one.

An accepted flag records `review.flagged`, runs the compensation the tool declared (its
own idempotency key: this workflow's id, run and step) and records
`compensation.executed` or `compensation.failed`; the update answers once that is done.
A window that ends unflagged records `review.closed`. Deterministic.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue, ValidationError

    from tether.activities.governance import GovernanceActivities
    from tether.activities.notify import NotifyActivities, review_event
    from tether.activities.payloads import (
        CompensationRef,
        NotifyInput,
        RecordReviewInput,
        ReviewWindowInput,
        StepRef,
        ToolCall,
    )
    from tether.activities.tools import REGISTRY, ToolSpec
    from tether.errors import ErrorType, ReviewError
    from tether.governance.reviews import (
        ReviewFlag,
        ReviewOutcome,
        ReviewStatus,
        ReviewWindow,
        check_flag,
        review_id,
    )
    from tether.verification.events import digest

LOCAL = timedelta(seconds=30)
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
"""Unbounded: the activity itself stops retrying a failing webhook (`webhook_attempts`)."""
COMPENSATION_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
ONCE = RetryPolicy(maximum_attempts=1)
PATCH = "notify-review-window"
REFUSALS_PATCH = "review-refusals-recorded"


def _compensation(spec: ToolSpec) -> CompensationRef | None:
    if spec.compensation is None:
        return None
    undo = REGISTRY.get(spec.compensation)
    if undo is None:  # the worker refuses to start with such a tool; run it and let it fail
        return CompensationRef(tool=spec.compensation, activity_name=f"tool.{spec.compensation}")
    return CompensationRef(
        tool=undo.name,
        activity_name=undo.activity_name,
        action=undo.action,
        idempotent=undo.idempotent,
        timeout_seconds=undo.timeout.total_seconds(),
        heartbeat_seconds=undo.heartbeat.total_seconds(),
    )


async def notify_step(inp: NotifyInput, spec: ToolSpec, args: dict[str, JsonValue]) -> None:
    """Tell the notify sinks of a step that ran; then open its review window."""
    if not workflow.patched(PATCH):
        await workflow.execute_local_activity_method(
            NotifyActivities.notify, inp, start_to_close_timeout=LOCAL
        )
        return
    told = await workflow.execute_local_activity_method(
        NotifyActivities.notify,
        inp.model_copy(update={"review": True}),
        start_to_close_timeout=LOCAL,
        retry_policy=NOTIFY_RETRY,
    )
    if told.review_until is None:
        return
    ref, decision = inp.ref, inp.decision
    window = ReviewWindowInput(
        ref=ref,
        action=inp.action,
        resource=inp.resource,
        tool=spec.name,
        compensation=_compensation(spec),
        args=args,
        decision=decision,
        window_seconds=told.window_seconds,
        until=told.review_until,
        reviewer_role=decision.approver_role or "",
        reviewers=list(decision.approvers),
    )
    try:
        await workflow.start_child_workflow(
            "ReviewWindow",
            window,
            id=review_id(ref.workflow_id, ref.step),
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        )
    except WorkflowAlreadyStartedError:
        # A run reusing this workflow id while the last run's window is still open.
        await workflow.execute_local_activity_method(
            GovernanceActivities.record_event,
            ref.event(
                "review.not_opened",
                action=inp.action,
                resource=inp.resource,
                decision=decision,
                actor="notify",
                outcome="not_opened",
                payload={
                    "review_id": review_id(ref.workflow_id, ref.step),
                    "why": "a review window with this id is still open (workflow id reused)",
                },
            ),
            start_to_close_timeout=LOCAL,
        )


@workflow.defn(name="ReviewWindow")
class ReviewWindowWorkflow:
    @workflow.init
    def __init__(self, inp: ReviewWindowInput) -> None:
        ref = inp.ref
        # Built here, not in `run`, so a flag validated in the first task sees the window.
        self._window = ReviewWindow(
            review_id=workflow.info().workflow_id,
            workflow_id=ref.workflow_id,
            run_id=ref.run_id,
            step=ref.step,
            agent=ref.agent,
            action=inp.action,
            resource=inp.resource,
            tool=inp.tool,
            compensation=inp.compensation.tool if inp.compensation else "",
            rule=inp.decision.rule,
            policy_version=inp.decision.policy_version,
            reviewer_role=inp.reviewer_role,
            reviewers=inp.reviewers,
            until=inp.until,
        )
        self._flag: ReviewFlag | None = None
        self._outcome: ReviewOutcome | None = None
        self._v2 = workflow.patched(REFUSALS_PATCH)

    @workflow.run
    async def run(self, inp: ReviewWindowInput) -> ReviewOutcome:
        opened = self._window
        await workflow.execute_local_activity_method(
            NotifyActivities.open_review, opened, start_to_close_timeout=LOCAL
        )
        remaining = inp.until - workflow.now()
        if self._flag is None and remaining > timedelta(0):
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._flag is not None, timeout=remaining)
        flag = self._flag
        if flag is None:
            self._window = opened.model_copy(update={"status": ReviewStatus.CLOSED})
            await self._record("review.closed", ReviewStatus.CLOSED, "review-window", None, {})
            outcome = ReviewOutcome(
                review_id=opened.review_id,
                status=ReviewStatus.CLOSED,
                reviewer="",
                detail=f"the window ended at {inp.until.isoformat()} without a flag",
            )
        else:
            outcome = await self._compensate(inp, flag)
        self._outcome = outcome
        await workflow.wait_condition(workflow.all_handlers_finished)
        return outcome

    async def _compensate(self, inp: ReviewWindowInput, flag: ReviewFlag) -> ReviewOutcome:
        await self._record("review.flagged", ReviewStatus.FLAGGED, flag.reviewer, flag, {})
        rid = self._window.review_id
        comp = inp.compensation
        if comp is None:
            return ReviewOutcome(
                review_id=rid,
                status=ReviewStatus.FLAGGED,
                reviewer=flag.reviewer,
                detail=f"tool {inp.tool!r} declares no compensation; undo it by hand",
            )
        info = workflow.info()
        ref = StepRef(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            workflow_type=info.workflow_type,
            step=inp.ref.step,
            agent=inp.ref.agent,
            started_by=flag.reviewer,
        )
        undone = inp.ref.effect_key()
        call = ToolCall(
            ref=ref,
            tool=comp.tool,
            action=comp.action or inp.action,
            resource=inp.resource,
            args=inp.args,
            decision=inp.decision,
            compensates=undone,
            compensates_step=inp.ref.key("")[:-1],
        )
        facts: dict[str, JsonValue] = {
            "tool": comp.tool,
            "compensates": undone,
            "idempotency_key": ref.key("effect"),
        }
        try:
            result: dict[str, JsonValue] = await workflow.execute_activity(
                comp.activity_name,
                call,
                result_type=dict,
                start_to_close_timeout=timedelta(seconds=comp.timeout_seconds),
                heartbeat_timeout=timedelta(seconds=comp.heartbeat_seconds),
                retry_policy=COMPENSATION_RETRY if comp.idempotent else ONCE,
            )
        except ActivityError as exc:
            error = str(exc.cause or exc)
            await self._record(
                "compensation.failed",
                ReviewStatus.COMPENSATION_FAILED,
                flag.reviewer,
                flag,
                {**facts, "error": error[:1000]},
            )
            return ReviewOutcome(
                review_id=rid,
                status=ReviewStatus.COMPENSATION_FAILED,
                reviewer=flag.reviewer,
                compensation=comp.tool,
                detail=f"{comp.tool} failed: {error[:300]}; check the target system "
                f"(idempotency key {ref.key('effect')!r}) and undo it by hand",
            )
        await self._record(
            "compensation.executed",
            ReviewStatus.COMPENSATED,
            flag.reviewer,
            flag,
            {**facts, "result_digest": digest(result)},
            [inp.args, result],
        )
        return ReviewOutcome(
            review_id=rid,
            status=ReviewStatus.COMPENSATED,
            reviewer=flag.reviewer,
            compensation=comp.tool,
            detail=f"{comp.tool} ran",
        )

    async def _record(
        self,
        kind: str,
        status: ReviewStatus,
        actor: str,
        flag: ReviewFlag | None,
        payload: dict[str, JsonValue],
        content: list[JsonValue] | None = None,
    ) -> None:
        await workflow.execute_local_activity_method(
            NotifyActivities.record_review,
            RecordReviewInput(
                window=self._window,
                kind=kind,
                status=status,
                actor=actor,
                flag=flag,
                payload=payload,
                content=content or [],
            ),
            start_to_close_timeout=LOCAL,
        )

    @workflow.update(name="flag")
    async def flag(self, raw: JsonValue) -> ReviewOutcome:
        if self._v2:
            admitted, why = self._admit(raw)
            if admitted is None:
                await self._record_refusal(raw, why)
                raise ApplicationError(why, type=ErrorType.REVIEW_REFUSED, non_retryable=True)
            flag = admitted
        else:
            flag = ReviewFlag.model_validate(raw)
        self._flag = flag
        self._window = self._window.model_copy(
            update={"status": ReviewStatus.FLAGGED, "flagged_by": flag.reviewer}
        )
        await workflow.wait_condition(lambda: self._outcome is not None)
        assert self._outcome is not None
        return self._outcome

    @flag.validator
    def _validate_flag(self, raw: JsonValue) -> None:
        # Only windows opened before the patch refuse here (so no trace is left); since
        # then every flag is accepted into history and a refusal is recorded.
        if not self._v2:
            self._check(ReviewFlag.model_validate(raw))

    def _check(self, flag: ReviewFlag) -> None:
        if self._flag is not None:
            raise ReviewError(
                f"review window {self._window.review_id!r} was already flagged by "
                f"{self._flag.reviewer!r}; nothing more to do"
            )
        check_flag(self._window, flag, workflow.now())

    def _admit(self, raw: JsonValue) -> tuple[ReviewFlag | None, str]:
        """(the flag, "") when it may flag this window, else (None, why not)."""
        try:
            flag = ReviewFlag.model_validate(raw)
        except ValidationError as exc:
            return None, f"the flag is malformed ({exc.error_count()} error(s): {exc}); " + (
                "send {'reviewer': 'user:you', 'reason': '...'}"
            )
        try:
            self._check(flag)
        except ReviewError as exc:
            return None, str(exc)
        return flag, ""

    async def _record_refusal(self, raw: JsonValue, why: str) -> None:
        reviewer = raw.get("reviewer") if isinstance(raw, dict) else None
        actor = reviewer if isinstance(reviewer, str) and reviewer else "unknown"
        reason = raw.get("reason") if isinstance(raw, dict) else None
        event = review_event(
            self._window,
            "review.refused",
            actor[:255],
            {
                "reviewer": actor[:255],
                "reason": reason[:1000] if isinstance(reason, str) else "",
                "why": why[:1000],
                "via": "update",
            },
            key_suffix=f".{workflow.uuid4()}",
        )
        await workflow.execute_local_activity_method(
            GovernanceActivities.record_event, event, start_to_close_timeout=LOCAL
        )

    @workflow.query(name="window")
    def window(self) -> ReviewWindow:
        return self._window
