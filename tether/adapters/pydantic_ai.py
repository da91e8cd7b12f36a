"""pydantic-ai agents governed by Tether (extra `tether[pydantic-ai]`).

    # A module the workflow sandbox passes through (say, beside the tools): agents are
    # built once, on the worker, as pydantic-ai's Temporal integration requires.
    clerk = Agent(
        FunctionModel(...),          # or any model; runs in pydantic-ai's model activity
        name="ap_clerk",
        toolsets=[governed_toolset(PaymentTools.pay_vendor, PaymentTools.update_bank_details)],
        capabilities=[TetherGovernance(), TemporalDurability()],
    )

    @workflow.defn(name="PayInvoiceAgent")
    class PayInvoiceAgent(AgentWorkflow):
        agent = "agent:ap-clerk"
        __pydantic_ai_agents__ = [clerk]      # pydantic-ai's plugin registers its activities

        @workflow.run
        async def run(self, inp: InvoiceInput) -> str:
            result = await clerk.run(inp.text)
            return result.output

Contract:
- Tools: `governed_toolset` offers Tether `@tool`s to the model. Each call the model makes
  runs in workflow code (pydantic-ai's `temporal=False` tool metadata) and goes through
  the running workflow's `act()`: action and resource from the tool's declaration and
  the arguments, the policy's tier, notify sinks and review window, a signed approval
  bound to step and arguments, the tool activity with its idempotency key and its
  tool-side check, ledger events. A denial or a rejection is the tool's answer to the
  model (`<tool> denied by policy: …`), never an exception it cannot see. A tool listed
  in `requires_approval` (or given as `pydantic_ai.Tool(fn, requires_approval=True)`) is
  decided at least at the approve tier (`approver` names the role), whatever the policy
  says below it; a policy deny still denies.
- Models: `TetherGovernance` wraps every model request in workflow code: the request is
  a numbered step (budgets checked), its answer charged to the run's `Usage` and
  recorded as a `model.call` event with its usage (kept by `record_event`, a local
  activity, idempotent by step). With `gateway=True` the request goes through Tether's
  gateway (`call_model`: routing, failover, sensitivity rules, agent budgets, outage
  waits) instead of pydantic-ai's model activity; the gateway records the event itself.
- Deterministic: everything here runs in workflow code and calls activities.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from pydantic import BaseModel, JsonValue, TypeAdapter
from pydantic_ai import Tool
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import ModelResponse
from pydantic_ai.models import ModelRequestContext
from pydantic_ai.tools import RunContext
from pydantic_ai.toolsets import FunctionToolset
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from tether.activities.governance import GovernanceActivities, RecordWithContent
from tether.activities.payloads import ModelCallResult
from tether.activities.tools import ToolSpec, spec_of
from tether.adapters.pyai_messages import gateway_request, gateway_response
from tether.errors import ErrorType, TetherError
from tether.governance.types import Decision, Tier
from tether.verification.events import digest

LOCAL = timedelta(seconds=30)
CONTENT_PATCH = "pydantic-ai-model-content"
"""Runs since this patch keep each model call's prompt and output in the content store."""
_RESPONSE: TypeAdapter[ModelResponse] = TypeAdapter(ModelResponse)
TOOLSET_ID = "tether_governed"
REQUIRES_APPROVAL_RULE = "pydantic-ai.requires_approval"

ToolFn = Callable[..., Awaitable[BaseModel]]


def _workflow() -> Any:
    """The running `AgentWorkflow` (its `act`, `_ref`, `_charge`); a clear error elsewhere.

    Read by what it has, not by class: the sandbox imports workflow modules anew for each
    run, so this (passed-through) module never imports them."""
    if not workflow.in_workflow():
        raise TetherError(
            "a governed pydantic-ai tool or model request ran outside a workflow; run the "
            "agent inside an AgentWorkflow's run method"
        )
    instance = workflow.instance()
    if not all(hasattr(instance, name) for name in ("act", "_ref", "_charge", "_call_model")):
        raise TetherError(
            f"workflow {type(instance).__name__!r} is no AgentWorkflow; governed pydantic-ai "
            "agents run only inside a subclass of tether.AgentWorkflow"
        )
    return instance


def approve_floor(approver: str) -> Decision:
    """The decision a `requires_approval` tool is never decided below."""
    return Decision(
        tier=Tier.APPROVE,
        rule=REQUIRES_APPROVAL_RULE,
        policy_version="",
        reason="the tool requires approval (pydantic-ai requires_approval)",
        approver_role=approver,
    )


async def governed_call(
    spec: ToolSpec, fn: ToolFn, args: BaseModel, floor: Decision | None = None
) -> JsonValue:
    """One governed step for a tool call of the model: `act()` on the running workflow;
    its result as JSON, or what a denial or rejection says, which the model reads."""
    wf = _workflow()
    fields: dict[str, JsonValue] = args.model_dump(mode="json")
    try:
        resource = spec.resource.format(**fields)
    except (KeyError, IndexError) as exc:
        return f"arguments for {spec.name!r} lack {exc}"
    extra = {"floor": floor} if floor is not None else {}
    try:
        result: BaseModel = await wf.act(
            spec.action, resource=resource, tool=fn, args=args, context=fields, **extra
        )
    except ApplicationError as exc:
        # By error type, not class: the sandbox has its own copy of the workflow errors.
        if exc.type == ErrorType.ACTION_DENIED:
            return f"{spec.name} denied by policy: {exc.message}"
        if exc.type == ErrorType.ACTION_REJECTED:
            return f"{spec.name} rejected: {getattr(exc, 'reason', '') or exc.message}"
        raise
    return cast(JsonValue, result.model_dump(mode="json"))


def _governed_tool(fn: ToolFn, floor: Decision | None) -> Tool[Any]:
    spec = spec_of(fn)

    async def call(args: BaseModel) -> JsonValue:
        return await governed_call(spec, fn, args, floor)

    # pydantic-ai reads the schema from the annotations: the tool's own arguments model.
    call.__annotations__ = {"args": spec.args_type, "return": JsonValue}
    call.__name__ = spec.name
    doc = (getattr(fn, "__doc__", None) or "").strip()
    return Tool(
        call,
        takes_ctx=False,
        name=spec.name,
        description=doc or spec.title or f"{spec.action} on {spec.resource}",
        metadata={"temporal": False, "tether_action": spec.action},
    )


def governed_toolset(
    *tools: ToolFn | Tool[Any],
    requires_approval: Iterable[str] = (),
    approver: str = "",
    id: str = TOOLSET_ID,
) -> FunctionToolset[Any]:
    """A pydantic-ai toolset of Tether tools, each call a governed step (see the module).

    `tools` are `@tool` functions or methods, or `pydantic_ai.Tool`s wrapping one
    (`Tool(fn, requires_approval=True)` asks for approval like `requires_approval`).
    """
    fns = [cast(ToolFn, t.function) if isinstance(t, Tool) else t for t in tools]
    names = [spec_of(fn).name for fn in fns]
    needs = set(requires_approval) | {
        name
        for t, name in zip(tools, names, strict=True)
        if isinstance(t, Tool) and t.requires_approval
    }
    unknown = sorted(needs - set(names))
    if unknown:
        raise TetherError(
            f"requires_approval names {unknown[0]!r}, which is not a tool of this toolset; "
            f"use one of {', '.join(sorted(names))}"
        )
    if needs and not approver:
        raise TetherError(
            f"tools {sorted(needs)!r} require approval but no approver role is given; pass "
            "approver='role:...' to governed_toolset"
        )
    built = [
        _governed_tool(fn, approve_floor(approver) if name in needs else None)
        for fn, name in zip(fns, names, strict=True)
    ]
    return FunctionToolset(built, id=id)


@dataclass
class TetherGovernance(AbstractCapability[Any]):
    """Model requests as governed, accounted steps (see the module).

    `gateway`: send requests through Tether's gateway (`task`, `sensitivity` route them)
    rather than pydantic-ai's model activity.
    """

    gateway: bool = False
    task: str = "agent"
    sensitivity: str = "internal"
    max_output_tokens: int = 1024

    async def wrap_model_request(
        self,
        ctx: RunContext[Any],
        *,
        request_context: ModelRequestContext,
        handler: Callable[[ModelRequestContext], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        if not workflow.in_workflow():
            return await handler(request_context)
        wf = _workflow()
        if self.gateway:
            return await self._through_gateway(wf, request_context)
        ref = wf._ref()
        response = await handler(request_context)
        usage = response.usage
        call_id = f"mc-{digest(ref.key('model.call')).removeprefix('sha256:')[:16]}"
        result = ModelCallResult(
            call_id=call_id,
            provider=response.provider_name or "pydantic-ai",
            model=response.model_name or "",
            text="",
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            endpoint="pydantic-ai",
            finish_reason=str(response.finish_reason or ""),
        )
        prompt, output = _jsonable(request_context.messages), _parts(response)
        event = ref.event(
            "model.call",
            action=f"model.{self.task}",
            resource="",
            decision=None,
            actor=ref.agent,
            outcome="succeeded",
            payload={
                "call_id": call_id,
                "provider": result.provider,
                "model": result.model,
                "sensitivity": self.sensitivity,
                "prompt_digest": digest(prompt),
                "output_digest": digest(output),
                "input_tokens": result.input_tokens,
                "output_tokens": result.output_tokens,
                "tokens_estimated": False,
                "cost_usd": 0.0,
                "endpoint": result.endpoint,
                "finish_reason": result.finish_reason,
                "tool_calls": [c.tool_name for c in response.tool_calls],
                "via": "pydantic-ai",
            },
        )
        if workflow.patched(CONTENT_PATCH):
            # The prompt and output go into the content store, where `audit verify` checks
            # the digests this event names.
            await workflow.execute_local_activity_method(
                GovernanceActivities.record_event_with_content,
                RecordWithContent(event=event, content=[prompt, output]),
                start_to_close_timeout=LOCAL,
            )
        else:
            await workflow.execute_local_activity_method(
                GovernanceActivities.record_event, event, start_to_close_timeout=LOCAL
            )
        wf._inputs.append(call_id)
        wf._charge(result)
        return response

    async def _through_gateway(
        self, wf: Any, request_context: ModelRequestContext
    ) -> ModelResponse:
        ref = wf._ref()
        request = gateway_request(
            ref,
            request_context,
            task=self.task,
            sensitivity=self.sensitivity,
            max_output_tokens=self.max_output_tokens,
        )
        result, _ = await wf._call_model(request)
        wf._inputs.append(result.call_id)
        wf._charge(result)
        return gateway_response(result, workflow.now())


def _parts(response: ModelResponse) -> JsonValue:
    """The answer's parts as pydantic-ai's model activity returns them (history's JSON)."""
    dumped = _RESPONSE.dump_python(response, mode="json")
    return cast(JsonValue, dumped["parts"])


def _jsonable(messages: Sequence[Any]) -> JsonValue:
    from pydantic_ai.messages import ModelMessagesTypeAdapter

    return cast(JsonValue, ModelMessagesTypeAdapter.dump_python(list(messages), mode="json"))


__all__ = [
    "REQUIRES_APPROVAL_RULE",
    "TetherGovernance",
    "approve_floor",
    "governed_call",
    "governed_toolset",
]
