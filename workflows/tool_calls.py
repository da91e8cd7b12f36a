"""The tool side of `AgentWorkflow.act`: effect keys, tool outages, ambiguity, notify.

- `effect_key`: the idempotency key of a step's side effect, stable across reset,
  workflow retries and continue-as-new (see `workflows.agent`).
- `_run_tool`: the tool activity (Temporal retries an idempotent tool, `TOOL_RETRY`);
  since the `tool-outage-wait` patch an idempotent tool that still fails for a transient
  reason (every try timed out, or a connection or timeout error) is waited out like a
  model outage (`workflows.outage`: `tool.waiting`, the status says so) for the tool's
  `outage_budget` (one hour by default), then its last error ends the step. A tool that
  is not idempotent runs once: its timeout stays `ActionAmbiguous`.
- `_notify`: the notify tier's sinks and review window (`workflows.review`).

Deterministic.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, JsonValue

    from tether.activities.governance import GovernanceActivities
    from tether.activities.payloads import NotifyInput, StepRef, ToolCall
    from tether.activities.tools import ToolSpec
    from tether.governance.types import Decision
    from tether.verification.events import digest
    from tether.workflows.outage import DEFAULT_OUTAGE_BUDGET_SECONDS, OutageWaits
    from tether.workflows.review import notify_step

LOCAL = timedelta(seconds=30)
TOOL_OUTAGE_PATCH = "tool-outage-wait"
TRANSIENT_TOOL_ERRORS = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ConnectionError",
        "ConnectionRefusedError",
        "ConnectionResetError",
        "PoolTimeout",
        "ReadTimeout",
        "RemoteProtocolError",
        "TimeoutError",
        "WriteTimeout",
    }
)
"""Error types (exception class names) of a tool's target being unreachable for now."""


def effect_key(
    info: workflow.Info, step: int, tool: str, args: dict[str, JsonValue], carried: bool
) -> str:
    """The idempotency key of a side effect: workflow id, the run the execution began
    with, step, and a digest of tool and arguments.

    The first run is `first_execution_run_id` (kept by resets, workflow retries and
    continue-as-new); a run continued as new without its step count carried on
    (`carried`; e.g. a plain `workflow.continue_as_new` or a cron run) numbers its steps
    from 1 again, so it keys them by its own original run (`original_execution_run_id`,
    kept by resets) instead."""
    origin = info.first_execution_run_id or info.run_id
    if info.continued_run_id and info.attempt == 1 and not carried:
        origin = info.original_execution_run_id or info.run_id
    facts = digest({"tool": tool, "args": args}).removeprefix("sha256:")[:16]
    return f"{info.workflow_id}:{origin}:{step}:{facts}:effect"


def transient_tool_failure(cause: BaseException | None) -> bool:
    """The tool failed because its target is unreachable for now, not because of the call."""
    if isinstance(cause, ActivityTimeoutError):
        return True
    return isinstance(cause, ApplicationError) and cause.type in TRANSIENT_TOOL_ERRORS


class ToolSteps(OutageWaits):
    """Mixed into `AgentWorkflow`."""

    async def _run_tool(self, spec: ToolSpec, call: ToolCall, retry: RetryPolicy) -> Any:
        """The tool activity; an idempotent tool's outage is waited out (see the module)."""
        waits = workflow.patched(TOOL_OUTAGE_PATCH) and spec.idempotent
        budget = getattr(spec, "outage_budget", None)
        budget_s = budget.total_seconds() if budget else DEFAULT_OUTAGE_BUDGET_SECONDS
        wait = None
        while True:
            try:
                result = await workflow.execute_activity(
                    spec.activity_name,
                    call,
                    result_type=spec.result_type,
                    start_to_close_timeout=spec.timeout,
                    heartbeat_timeout=spec.heartbeat,
                    retry_policy=retry,
                )
            except ActivityError as exc:
                if waits and transient_tool_failure(exc.cause):
                    cause = exc.cause
                    reason = cause.message if isinstance(cause, FailureError) else exc.message
                    if wait is None:
                        wait = await self._begin_wait(
                            call.ref,
                            "tool",
                            f"tool {spec.name!r}",
                            call.action,
                            reason,
                            {"tool": spec.name, "outage_budget_s": budget_s},
                        )
                    if await self._pause(wait, 0.0, budget_s):
                        continue
                    await self._end_wait(call.ref, wait, "gave_up")
                    raise
                await self._end_wait(call.ref, wait, "ended")
                raise
            await self._end_wait(call.ref, wait, "resumed")
            return result

    async def _record_ambiguous(self, call: ToolCall, decision: Decision) -> None:
        ref = call.ref
        await workflow.execute_local_activity_method(
            GovernanceActivities.record_event,
            ref.event(
                "tool.ambiguous",
                action=call.action,
                resource=call.resource,
                decision=decision,
                actor=ref.agent,
                outcome="ambiguous",
                payload={
                    "tool": call.tool,
                    "args_digest": digest(call.args),
                    "idempotency_key": ref.effect_key(),
                },
            ),
            start_to_close_timeout=LOCAL,
        )

    async def _record_invalidated(
        self,
        ref: StepRef,
        action: str,
        resource: str,
        decision: Decision,
        dispatched: dict[str, JsonValue],
    ) -> None:
        await workflow.execute_local_activity_method(
            GovernanceActivities.record_event,
            ref.event(
                "approval.invalidated",
                action=action,
                resource=resource,
                decision=decision,
                actor=ref.agent,
                outcome="invalidated",
                payload={
                    "why": "the arguments changed after approval; they need approval again",
                    "args_digest": digest(dispatched),
                },
            ),
            start_to_close_timeout=LOCAL,
        )

    # -- notify tier ---------------------------------------------------------------------

    async def _notify(
        self,
        ref: StepRef,
        action: str,
        resource: str,
        spec: ToolSpec,
        args_json: dict[str, JsonValue],
        decision: Decision,
        result: BaseModel,
    ) -> None:
        """Tell the notify sinks, then open the step's review window (`workflows.review`)."""
        notice = NotifyInput(
            ref=ref,
            action=action,
            resource=resource,
            decision=decision,
            result_digest=digest(result.model_dump(mode="json")),
        )
        await notify_step(notice, spec, args_json)
