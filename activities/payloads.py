"""Payloads between workflows and activities. Every field added later gets a default."""

from __future__ import annotations

from pydantic import BaseModel, Field, JsonValue

from governance.types import Decision


class StepRef(BaseModel):
    """Where a governed step sits: enough to replay it and to key its records."""

    workflow_id: str
    run_id: str
    workflow_type: str = ""
    step: int
    agent: str
    started_by: str = ""

    def key(self, kind: str) -> str:
        """Idempotency key of this step's `kind` record (and of its side effect)."""
        return f"{self.workflow_id}:{self.run_id}:{self.step}:{kind}"


class DecideInput(BaseModel):
    ref: StepRef
    action: str
    resource: str
    context: dict[str, JsonValue] = Field(default_factory=dict)
    args_digest: str = ""
    args_summary: str = ""
    governed: bool = True
    """False runs the step ungoverned (benchmark peer): auto, recorded as such."""
    inputs: list[str] = Field(default_factory=list)
    """What influenced this step: model call ids and earlier tool results of the run."""


class ToolCall(BaseModel):
    ref: StepRef
    tool: str
    action: str
    resource: str
    args: dict[str, JsonValue]
    decision: Decision | None = None
    record: bool = True


class ModelCallInput(BaseModel):
    ref: StepRef
    task: str
    prompt: str
    sensitivity: str = "internal"
    schema_name: str = ""
    json_schema: dict[str, JsonValue] = Field(default_factory=dict)
    repair_error: str = ""
    """Set on the repair attempt: the validation error of the previous output."""


class ModelCallResult(BaseModel):
    call_id: str
    provider: str
    model: str
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    tokens_estimated: bool = False


class NotifyInput(BaseModel):
    ref: StepRef
    action: str
    resource: str
    decision: Decision
    result_digest: str = ""
