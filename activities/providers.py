"""Model providers: the protocol the model activity calls, its failure, prices, and the
embedded default, the scripted provider (deterministic answers from a script).

A provider's `complete` answers one call or raises `GatewayFailure` (classified: see
there); `activities.gateway.Gateway` is the provider over configured endpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field, JsonValue
from temporalio.exceptions import ApplicationError

from tether.activities.payloads import (
    ModelAttempt,
    ModelCallInput,
    ModelCallResult,
    UnavailableDetails,
)
from tether.errors import ErrorType, TetherError


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
    - `ModelUnavailable` (retryable): eligible endpoints exist, none answered; `outage`
      says when one may answer again and how long a run waits for it.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        attempts: list[ModelAttempt],
        retryable: bool,
        outage: UnavailableDetails | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.attempts = attempts
        self.retryable = retryable
        self.outage = outage


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
        if self.name in request.exclude_endpoints or self.script.model in request.exclude_models:
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
                type=ErrorType.SCRIPT_MISS,
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
