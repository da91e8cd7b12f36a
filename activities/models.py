"""The model gateway's activity, `call_model` (providers: `activities.providers`).

Contract: `call_model` is retryable (Temporal's retry policy is the only retry loop);
each call appends one `model.call` event keyed by step and attempt purpose (the rung of
the recovery ladder: first, repair, alternate), carrying digests of prompt and output,
never the text itself, and every routing attempt (endpoint, reason, outcome, status,
latency, tokens). The provider is `activities.gateway.Gateway` over the configured
endpoints, or the scripted provider when none is configured. A call no endpoint answered
is recorded as `model.failed` (once per Temporal try, with its attempts) and raised as
`NoEligibleEndpoint` or `ModelRequestRejected` (non-retryable) or `ModelUnavailable`
(retryable; its second detail is `UnavailableDetails`: when an endpoint takes calls
again and the outage budget of the task). A call made by a workflow that waits out
outages itself (`waits_out_outages`) fails at once, non-retryably, when every eligible
endpoint refused it without an HTTP attempt (breakers open, cooling down): retrying
before the breaker's probe time cannot help, and the workflow sleeps until then.

The activity heartbeats while it runs (a few times per heartbeat timeout), so a worker
that dies mid-call is noticed within the timeout and the call retried on another worker.

Before the provider runs, `call_model` refuses a call a kill switch covers (non-retryable
`KillSwitchEngaged`, recorded as `model.killed`) and reserves the call's worst-case
tokens and cost against its agent's budgets, keyed like the call (so a retry reserves
nothing twice). A breach raises non-retryable `BudgetExceeded` (on-breach deny) or
`BudgetApprovalNeeded` (on-breach approve, details name the approver role), recorded as
`budget.breach`. After the call the reservation settles to the actual usage; a failed
call releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator

from pydantic import JsonValue
from temporalio import activity
from temporalio.exceptions import ApplicationError

from tether.activities.payloads import BudgetBreachDetails, ModelCallInput, ModelCallResult
from tether.activities.providers import (
    GatewayFailure,
    ModelProvider,
    Pricing,
    Script,
    ScriptedProvider,
    ScriptEntry,
    ScriptError,
    estimate_tokens,
)
from tether.errors import ErrorType
from tether.governance.budget import Breach, Budgets
from tether.governance.kill import KillSwitches
from tether.verification.events import LedgerEvent, digest
from tether.verification.ledger import Ledger

__all__ = [
    "GatewayFailure",
    "ModelActivities",
    "ModelProvider",
    "Pricing",
    "Script",
    "ScriptEntry",
    "ScriptError",
    "ScriptedProvider",
    "estimate_tokens",
]


@contextlib.asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeat from a background task while the body runs (outside an activity: no-op)."""
    if not activity.in_activity():
        yield
        return
    timeout = activity.info().heartbeat_timeout
    every = max(0.2, timeout.total_seconds() / 4) if timeout else 1.0

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class ModelActivities:
    def __init__(
        self,
        provider: ModelProvider,
        ledger: Ledger,
        *,
        kills: KillSwitches | None = None,
        budgets: Budgets | None = None,
        pricing: Pricing | None = None,
    ) -> None:
        self.provider = provider
        self.ledger = ledger
        self.kills = kills
        self.budgets = budgets
        self.pricing = pricing or getattr(provider, "pricing", None) or Pricing()

    def worst_case(self, request: ModelCallInput) -> tuple[int, float]:
        """Tokens and cost a call can reach: its prompt estimate plus every output token,
        at the prices of the dearest endpoint the call may go to."""
        prompt = estimate_tokens(request.prompt + request.repair_error)
        out = request.max_output_tokens
        pricing = self.pricing
        worst = getattr(self.provider, "worst_case_pricing", None)
        if callable(worst):
            pricing = worst(request)
        return prompt + out, pricing.cost(prompt, out)

    @activity.defn(name="call_model")
    async def call_model(self, request: ModelCallInput) -> ModelCallResult:
        async with heartbeating():
            return await self._call_model(request)

    async def _call_model(self, request: ModelCallInput) -> ModelCallResult:
        purpose = request.rung or ("repair" if request.repair_error else "first")
        key = request.ref.key(f"model.{purpose}")
        if self.kills is not None:
            await asyncio.to_thread(self._refuse_if_killed, request, purpose)
        if self.budgets is not None:
            await asyncio.to_thread(self._reserve, self.budgets, request, purpose, key)
        try:
            result = await self.provider.complete(request)
        except GatewayFailure as failure:
            if self.budgets is not None:
                self.budgets.release(key)
            await asyncio.to_thread(self._record_failure, request, purpose, failure)
            outage = failure.outage
            waits = request.waits_out_outages and outage is not None and outage.refused_only
            details: list[JsonValue] = [[a.model_dump(mode="json") for a in failure.attempts]]
            if outage is not None:
                details.append(outage.model_dump(mode="json"))
            raise ApplicationError(
                failure.message,
                *details,
                type=failure.kind,
                non_retryable=not failure.retryable or waits,
            ) from None
        except BaseException:  # failed or cancelled: give the reservation back, re-raise
            if self.budgets is not None:
                self.budgets.release(key)
            raise
        if self.budgets is not None:
            await asyncio.to_thread(
                self.budgets.settle,
                key,
                result.input_tokens + result.output_tokens,
                result.cost_usd,
            )
        call_id = (
            "mc-" + hashlib.sha256(request.ref.key(f"model.{purpose}").encode()).hexdigest()[:16]
        )
        result = result.model_copy(update={"call_id": call_id})
        await asyncio.to_thread(
            self.ledger.append,
            LedgerEvent(
                idempotency_key=request.ref.key(f"model.call.{purpose}"),
                kind="model.call",
                workflow_id=request.ref.workflow_id,
                run_id=request.ref.run_id,
                step=request.ref.step,
                agent=request.ref.agent,
                action=f"model.{request.task}",
                actor=request.ref.agent,
                outcome="succeeded",
                payload={
                    **request.ref.links(),
                    "call_id": call_id,
                    "provider": result.provider,
                    "model": result.model,
                    "sensitivity": request.sensitivity,
                    "schema": request.schema_name,
                    "prompt_digest": digest(request.prompt),
                    "output_digest": digest(result.text),
                    "input_tokens": result.input_tokens,
                    "output_tokens": result.output_tokens,
                    "tokens_estimated": result.tokens_estimated,
                    "cost_usd": result.cost_usd,
                    "repair_of_error": request.repair_error[:500],
                    "rung": purpose,
                    "endpoint": result.endpoint,
                    "finish_reason": result.finish_reason,
                    "truncated": result.truncated,
                    "tool_calls": [c.name for c in result.tool_calls],
                    "attempts": [a.model_dump(mode="json") for a in result.attempts],
                },
            ),
            [request.prompt, result.text],
        )
        return result

    def _record_failure(
        self, request: ModelCallInput, purpose: str, failure: GatewayFailure
    ) -> None:
        """`model.failed`: every attempt of a call no endpoint answered (one per try)."""
        attempt = activity.info().attempt if activity.in_activity() else 1
        self.ledger.append(
            self._event(
                request,
                f"model.failed.{purpose}.{attempt}",
                "model.failed",
                "failed",
                actor=request.ref.agent,
                payload={
                    "error": failure.kind,
                    "retryable": failure.retryable,
                    "retry_in_s": failure.outage.retry_in_s if failure.outage else 0.0,
                    "message": failure.message[:500],
                    "sensitivity": request.sensitivity,
                    "rung": purpose,
                    "try": attempt,
                    "prompt_digest": digest(request.prompt),
                    "attempts": [a.model_dump(mode="json") for a in failure.attempts],
                },
            )
        )

    def _refuse_if_killed(self, request: ModelCallInput, purpose: str) -> None:
        assert self.kills is not None
        ref, action = request.ref, f"model.{request.task}"
        killed = self.kills.blocking(ref.tenant, ref.agent, action)
        if killed is None:
            return
        self.ledger.append(
            self._event(
                request,
                f"model.killed.{purpose}",
                "model.killed",
                "refused",
                rule=killed.rule,
                payload={"reason": killed.describe(), "tenant": ref.tenant},
            )
        )
        raise ApplicationError(
            f"{action!r} by {ref.agent!r} refused: {killed.describe()}; release it with "
            f"'tether kill release {killed.kind.value} {killed.value}' to run again",
            BudgetBreachDetails(rule=killed.rule, reason=killed.describe()).model_dump(mode="json"),
            type=ErrorType.KILL_SWITCH_ENGAGED,
            non_retryable=True,
        )

    def _reserve(self, budgets: Budgets, request: ModelCallInput, purpose: str, key: str) -> None:
        tokens, cost = self.worst_case(request)
        got = budgets.reserve(
            request.ref.agent, tokens, cost, key, force=bool(request.budget_override)
        )
        if not isinstance(got, Breach):
            if got.forced:
                self.ledger.append(
                    self._event(
                        request,
                        f"budget.override.{purpose}",
                        "budget.override",
                        "overspent",
                        payload={
                            "request_id": request.budget_override,
                            "reserved_tokens": tokens,
                            "reserved_cost_usd": cost,
                        },
                    )
                )
            return
        b = got.budget
        approve = b.on_breach.value == "approve"
        self.ledger.append(
            self._event(
                request,
                f"budget.breach.{purpose}",
                "budget.breach",
                "needs-approval" if approve else "denied",
                rule=f"budget:{b.subject}",
                payload={
                    "reason": got.describe(),
                    "budget": b.model_dump(mode="json"),
                    "used_tokens": got.used_tokens,
                    "used_cost_usd": got.used_cost_usd,
                    "requested_tokens": tokens,
                    "requested_cost_usd": cost,
                },
            )
        )
        message = f"model call {request.task!r} of {request.ref.agent!r}: {got.describe()}"
        if approve:
            raise ApplicationError(
                message,
                BudgetBreachDetails(
                    subject=b.subject,
                    rule=f"budget:{b.subject}",
                    approver_role=b.approver_role,
                    approvers=got.approvers,
                    reason=got.describe(),
                    requested_tokens=tokens,
                    requested_cost_usd=cost,
                ).model_dump(mode="json"),
                type=ErrorType.BUDGET_APPROVAL_NEEDED,
                non_retryable=True,
            )
        raise ApplicationError(
            f"{message}; raise it with 'tether budget set {b.subject} ...' or wait for the "
            "window to roll",
            type=ErrorType.BUDGET_EXCEEDED,
            non_retryable=True,
        )

    @staticmethod
    def _event(
        request: ModelCallInput,
        key: str,
        kind: str,
        outcome: str,
        *,
        rule: str = "",
        actor: str = "",
        payload: dict[str, JsonValue],
    ) -> LedgerEvent:
        ref = request.ref
        return LedgerEvent(
            idempotency_key=ref.key(key),
            kind=kind,
            workflow_id=ref.workflow_id,
            run_id=ref.run_id,
            step=ref.step,
            agent=ref.agent,
            action=f"model.{request.task}",
            tier="deny" if outcome in ("refused", "denied") else "",
            rule=rule,
            actor=actor or ("budget" if kind.startswith("budget") else "kill-switch"),
            outcome=outcome,
            payload={**ref.links(), **payload},
        )
