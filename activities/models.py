"""The model gateway's activity and its embedded default, the scripted provider.

Contract: `call_model` is retryable (Temporal's retry policy is the only retry loop);
each call appends one `model.call` event keyed by step and attempt purpose (first try or
repair), carrying digests of prompt and output, never the text itself.
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

from activities.payloads import ModelCallInput, ModelCallResult
from verification.ledger import Ledger, LedgerEvent, digest


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


class Script(BaseModel):
    model: str = "scripted-1"
    entries: list[ScriptEntry] = Field(default_factory=list)


class ScriptError(Exception):
    pass


class ScriptedProvider:
    """Deterministic answers from a script: the first entry whose task and match fit."""

    name = "scripted"

    def __init__(self, script: Script) -> None:
        self.script = script

    @classmethod
    def from_file(cls, path: Path) -> ScriptedProvider:
        try:
            return cls(Script.model_validate_json(path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise ScriptError(f"cannot read model script {str(path)!r}: {exc.strerror}") from None
        except ValueError as exc:
            raise ScriptError(f"model script {str(path)!r} is not valid: {exc}") from None

    async def complete(self, request: ModelCallInput) -> ModelCallResult:
        for entry in self.script.entries:
            if entry.task == request.task and entry.match in request.prompt:
                out = (
                    entry.repair_output
                    if request.repair_error and entry.repair_output is not None
                    else entry.output
                )
                text = out if isinstance(out, str) else json.dumps(out)
                return ModelCallResult(
                    call_id="",
                    provider=self.name,
                    model=self.script.model,
                    text=text,
                    input_tokens=max(1, len(request.prompt) // 4),
                    output_tokens=max(1, len(text) // 4),
                    tokens_estimated=True,
                )
        raise ApplicationError(
            f"the model script has no entry for task {request.task!r} matching this prompt; "
            f"add one (prompt starts {request.prompt[:60]!r})",
            type="ScriptMiss",
            non_retryable=True,
        )


class ModelActivities:
    def __init__(self, provider: ModelProvider, ledger: Ledger) -> None:
        self.provider = provider
        self.ledger = ledger

    @activity.defn(name="call_model")
    async def call_model(self, request: ModelCallInput) -> ModelCallResult:
        result = await self.provider.complete(request)
        purpose = "repair" if request.repair_error else "first"
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
                    "repair_of_error": request.repair_error[:500],
                },
            ),
            [request.prompt, result.text],
        )
        return result
