"""The model gateway's activity and its embedded default, the scripted provider.

Contract: `call_model` is retryable (Temporal's retry policy is the only retry loop);
each call appends one `model.call` event keyed by step and attempt purpose (the rung of
the recovery ladder: first, repair, alternate), carrying digests of prompt and output,
never the text itself, and every routing attempt (endpoint, reason, outcome, status,
latency, tokens). The provider is `activities.gateway.Gateway` over the configured
endpoints, or the scripted provider when none is configured. A call no endpoint answered
is recorded as `model.failed` (once per Temporal try, with its attempts) and raised as
`NoEligibleEndpoint` or `ModelRequestRejected` (non-retryable) or `ModelUnavailable`
(retryable).

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
import hashlib
import json
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field, JsonValue
from temporalio import activity
from temporalio.exceptions import ApplicationError

from tether.activities.payloads import (
    BudgetBreachDetails,
    ModelAttempt,
    ModelCallInput,
    ModelCallResult,
)
from tether.errors import ErrorType, TetherError
from tether.governance.budget import Breach, Budgets
from tether.governance.kill import KillSwitches
from tether.verification.events import LedgerEvent, digest
from tether.verification.ledger import Ledger


class ModelProvider(Protocol):
    name: str

    async def complete(self, request: ModelCallInput) -> ModelCallResult: ...


class ScriptEntry(BaseModel):
    task: str
    match: str = ""
    """A substring the prompt must contain; empty matches any prompt of the task."""
    output: JsonValue = None
    repair_output: JsonValue = None
    """Answer to a repair attempt; defaults to `output`."""


class Pricing(BaseModel):
    """A provider's price list, in US dollars per 1000 tokens."""

    usd_per_1k_input: float = 0.0
    usd_per_1k_output: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.usd_per_1k_input + output_tokens * self.usd_per_1k_output
        ) / 1000

    @classmethod
    def per_million(cls, input_usd: float, output_usd: float) -> Pricing:
        """From prices per million tokens (how `tether.toml` and providers state them)."""
        return cls(usd_per_1k_input=input_usd / 1000, usd_per_1k_output=output_usd / 1000)


class GatewayFailure(Exception):
    """A call no endpoint answered. `kind` is the error type `call_model` raises:

    - `NoEligibleEndpoint` (non-retryable): no endpoint may receive this call;
    - `ModelRequestRejected` (non-retryable): an endpoint refused the request itself (4xx);
    - `ModelUnavailable` (retryable): eligible endpoints exist, none answered.
    """

    def __init__(
        self, kind: str, message: str, attempts: list[ModelAttempt], retryable: bool
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.attempts = attempts
        self.retryable = retryable


def estimate_tokens(text: str) -> int:
    """The token estimate used where a provider reports none: four characters a token."""
    return max(1, len(text) // 4)


class Script(BaseModel):
    model: str = "scripted-1"
    entries: list[ScriptEntry] = Field(default_factory=list)
    pricing: Pricing = Field(default_factory=Pricing)


class ScriptError(TetherError):
    """The model script cannot be read or is not valid; the message names the file."""


class ScriptedProvider:
    """Deterministic answers from a script: the first entry whose task and match fit."""

    name = "scripted"

    def __init__(self, script: Script) -> None:
        self.script = script
        self.pricing = script.pricing

    @classmethod
    def from_file(cls, path: Path) -> ScriptedProvider:
        try:
            return cls(Script.model_validate_json(path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise ScriptError(f"cannot read model script {str(path)!r}: {exc.strerror}") from None
        except ValueError as exc:
            raise ScriptError(f"model script {str(path)!r} is not valid: {exc}") from None

    def entry_for(self, request: ModelCallInput) -> ScriptEntry | None:
        """The first entry whose task and match fit `request`, or None."""
        for entry in self.script.entries:
            if entry.task == request.task and entry.match in request.prompt:
                return entry
        return None

    async def complete(self, request: ModelCallInput) -> ModelCallResult:
        if self.name in request.exclude_endpoints:
            raise GatewayFailure(
                ErrorType.NO_ELIGIBLE_ENDPOINT,
                f"the scripted provider is the only model and this {request.task!r} call "
                "excludes it; configure [[models.endpoints]] for another model",
                [],
                retryable=False,
            )
        entry = self.entry_for(request)
        if entry is None:
            raise ApplicationError(
                f"the model script has no entry for task {request.task!r} matching this "
                f"prompt; add one (prompt starts {request.prompt[:60]!r})",
                type="ScriptMiss",
                non_retryable=True,
            )
        out = (
            entry.repair_output
            if request.repair_error and entry.repair_output is not None
            else entry.output
        )
        text = out if isinstance(out, str) else json.dumps(out)
        # A real provider stops at max_output_tokens; so does the script.
        text = text[: request.max_output_tokens * 4]
        input_tokens = estimate_tokens(request.prompt)
        output_tokens = estimate_tokens(text)
        return ModelCallResult(
            call_id="",
            provider=self.name,
            model=self.script.model,
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=self.pricing.cost(input_tokens, output_tokens),
            tokens_estimated=True,
            endpoint=self.name,
            attempts=[
                ModelAttempt(
                    endpoint=self.name,
                    reason="embedded default",
                    outcome="ok",
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                )
            ],
            finish_reason="stop",
        )


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
            raise ApplicationError(
                failure.message,
                [a.model_dump(mode="json") for a in failure.attempts],
                type=failure.kind,
                non_retryable=not failure.retryable,
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
            payload=payload,
        )
