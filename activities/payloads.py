"""Payloads between workflows and activities. Every field added later gets a default."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, JsonValue

from tether.governance.approvals import ApprovalDecision
from tether.governance.reviews import ReviewFlag, ReviewStatus, ReviewWindow
from tether.governance.types import Decision
from tether.verification.events import LedgerEvent


class StepRef(BaseModel):
    """Where a governed step sits: enough to replay it and to key its records."""

    workflow_id: str
    run_id: str
    workflow_type: str = ""
    step: int
    agent: str
    started_by: str = ""
    tenant: str = "default"
    """From the workflow memo key `tenant`; kill switches may stop one tenant."""
    original_run_id: str = ""
    """Set in a run made by an operator's reset: the run it was reset from (the chain's
    original). Every ledger event of the step carries it (`links`)."""
    effect: str = ""
    """The idempotency key of this step's side effect, stable across reset, continue-as-new
    and retries of the run (see `workflows.tool_calls.effect_key`); empty: `key("effect")`."""

    def key(self, kind: str) -> str:
        """Idempotency key of this step's `kind` ledger record (of this run)."""
        return f"{self.workflow_id}:{self.run_id}:{self.step}:{kind}"

    def effect_key(self) -> str:
        """Idempotency key of this step's side effect, what the tool passes to its target."""
        return self.effect or self.key("effect")

    def links(self) -> dict[str, JsonValue]:
        """What ties this step's records to other runs: the run a reset started from."""
        return {"original_run_id": self.original_run_id} if self.original_run_id else {}

    def event(
        self,
        kind: str,
        *,
        action: str,
        resource: str,
        decision: Decision | None,
        actor: str,
        outcome: str,
        payload: dict[str, JsonValue],
        key: str = "",
    ) -> LedgerEvent:
        """A ledger event about this step, keyed `key(key or kind)`, under `decision`."""
        return LedgerEvent(
            idempotency_key=self.key(key or kind),
            kind=kind,
            workflow_id=self.workflow_id,
            run_id=self.run_id,
            step=self.step,
            agent=self.agent,
            action=action,
            resource=resource,
            tier=decision.tier.value if decision else "",
            rule=decision.rule if decision else "",
            policy_version=decision.policy_version if decision else "",
            actor=actor,
            outcome=outcome,
            payload={**self.links(), **payload},
        )


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
    effect_key: str = ""
    """The idempotency key the step's tool will pass to its target (recorded with the
    decision: a reset run's step shows the same key as the original's)."""
    floor: Decision | None = None
    """An approver's edit of an approved step is decided anew, never below this decision's
    tier (the original's): a lower answer keeps the original decision."""
    record_as: str = ""
    """Ledger key suffix of this decision (default `decision`; an edit's `decision.edited`)."""
    tool: str = ""
    """The tool whose declaration and arguments gave action, resource and context."""
    refused: str = ""
    """Set when `act()` was told another action, resource or context than the tool and its
    arguments give: why. The step is denied under `misdeclared-step`, the claim recorded."""
    claimed: dict[str, JsonValue] = Field(default_factory=dict)
    """With `refused`: what the author passed (action, resource, context)."""
    regoverns: int = 0
    """Set when this step governs anew a step whose decision no longer held at dispatch."""


class ToolCall(BaseModel):
    ref: StepRef
    tool: str
    action: str
    resource: str
    args: dict[str, JsonValue]
    decision: Decision | None = None
    record: bool = True
    approvals: list[ApprovalDecision] = Field(default_factory=list)
    """The signed approvals of an approve-tier step; the tool checks them before running."""
    compensates: str = ""
    """Set when this call compensates an earlier step: that step's effect idempotency key."""
    compensates_step: str = ""
    """With `compensates`: the compensated step's ledger key prefix (`workflow:run:step`);
    empty: `compensates` without its `:effect` suffix (windows opened before stable keys)."""


class ModelTool(BaseModel):
    """A tool offered to the model (OpenAI function calling)."""

    name: str
    description: str = ""
    parameters: dict[str, JsonValue] = Field(default_factory=dict)


class ModelToolCall(BaseModel):
    """A tool call the model answered with; `arguments` parsed from its JSON."""

    id: str = ""
    name: str
    arguments: dict[str, JsonValue] = Field(default_factory=dict)


class ModelAttempt(BaseModel):
    """One routing choice and what came of it."""

    endpoint: str
    reason: str
    """Why this endpoint: the routing rank, a preference or failover after another."""
    outcome: str
    """`ok`, or the failure: timeout, connect, reset, rate_limited, server_error,
    client_error, auth, oversized, invalid_response, empty_choices, unknown_tool,
    stalled, breaker_open, cooling_down."""
    status: int = 0
    """HTTP status, 0 when none arrived."""
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    retry_after_s: float = 0.0
    detail: str = ""


class ModelCallInput(BaseModel):
    ref: StepRef
    task: str
    prompt: str
    sensitivity: str = "internal"
    schema_name: str = ""
    json_schema: dict[str, JsonValue] = Field(default_factory=dict)
    repair_error: str = ""
    """Set on the repair attempt: the validation error of the previous output."""
    max_output_tokens: int = 1024
    """The provider stops there; with the prompt it bounds the call's worst-case cost."""
    budget_override: str = ""
    """The approved request id that lets this call overspend its agent's budget."""
    rung: str = ""
    """Rung of the recovery ladder (`first`, `repair`, `alternate`); empty: first or repair."""
    prefer_endpoint: str = ""
    """Try this endpoint first when it is eligible (a repair goes to the same model)."""
    exclude_endpoints: list[str] = Field(default_factory=list)
    """Endpoints this call must not use (another model for the `alternate` rung)."""
    exclude_models: list[str] = Field(default_factory=list)
    """Models this call must not use: those that answered an earlier rung (`alternate`)."""
    same_model_as: str = ""
    """Only endpoints serving the model of this endpoint (a repair goes to the model that
    gave the answer, and fails over only to another endpoint of that model)."""
    waits_out_outages: bool = False
    """The workflow waits out an outage itself (a durable timer): when every eligible
    endpoint refuses calls for now (breaker open, cooling down), `call_model` fails at once
    and non-retryably with `UnavailableDetails` instead of burning Temporal's retries."""
    latency_target_ms: int = 0
    """Endpoints slower than this (live p50) rank last; 0: the gateway's default."""
    tools: list[ModelTool] = Field(default_factory=list)
    """Tools the model may call; a call naming any other tool is refused."""


class BudgetBreachDetails(BaseModel):
    """Details of a refused model call (`KillSwitchEngaged`, `BudgetApprovalNeeded`)."""

    rule: str = ""
    subject: str = ""
    approver_role: str = ""
    approvers: list[str] = Field(default_factory=list)
    reason: str = ""
    requested_tokens: int = 0
    requested_cost_usd: float = 0.0


class UnavailableDetails(BaseModel):
    """The second detail of a `ModelUnavailable` error: how the caller may wait it out."""

    retry_in_s: float = 0.0
    """When the first eligible endpoint takes calls again (its breaker half-opens or its
    Retry-After ends); 0: unknown (the endpoints failed, their breakers are not open)."""
    outage_budget_s: float = 3600.0
    """How long a run waits out an outage of this call's task before it fails."""
    refused_only: bool = False
    """No HTTP attempt was made: every eligible endpoint refused calls for now."""
    endpoints: list[str] = Field(default_factory=list)
    """The eligible endpoints, all unavailable."""


class ModelCallResult(BaseModel):
    call_id: str
    provider: str
    model: str
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    tokens_estimated: bool = False
    endpoint: str = ""
    """The endpoint that answered (`scripted` for the embedded default)."""
    attempts: list[ModelAttempt] = Field(default_factory=list)
    """Every routing choice of this call, failed ones first, the answering one last."""
    finish_reason: str = ""
    truncated: bool = False
    """The answer stopped at `max_output_tokens`: it is never taken as valid output."""
    tool_calls: list[ModelToolCall] = Field(default_factory=list)


class NotifyInput(BaseModel):
    ref: StepRef
    action: str
    resource: str
    decision: Decision
    result_digest: str = ""
    review: bool = False
    """A review window follows: the notification announces when it ends."""
    webhook_attempts: int = 5
    """Webhook delivery attempts before the notification is recorded as partly failed."""


class NotifyResult(BaseModel):
    sinks: list[str] = Field(default_factory=list)
    """The sinks that were told."""
    failed: dict[str, str] = Field(default_factory=dict)
    """Sinks that could not be told, with the last error."""
    window_seconds: int = 0
    review_until: datetime | None = None


class CompensationRef(BaseModel):
    """The tool a flag runs to undo a step, and how to run it."""

    tool: str
    activity_name: str
    action: str = ""
    idempotent: bool = False
    timeout_seconds: float = 60.0
    heartbeat_seconds: float = 5.0


class ReviewWindowInput(BaseModel):
    """The input of the `ReviewWindow` workflow."""

    ref: StepRef
    """The reviewed step (of the parent workflow)."""
    action: str
    resource: str
    tool: str
    compensation: CompensationRef | None = None
    args: dict[str, JsonValue] = Field(default_factory=dict)
    decision: Decision
    window_seconds: int
    until: datetime
    reviewer_role: str = ""
    reviewers: list[str] = Field(default_factory=list)


class RecordReviewInput(BaseModel):
    """A review window changes state: index it and record `kind` in the ledger."""

    window: ReviewWindow
    kind: str
    status: ReviewStatus
    actor: str
    flag: ReviewFlag | None = None
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    content: list[JsonValue] = Field(default_factory=list)
