"""Tools: ordinary async functions an agent may call, each run as a Temporal activity.

    class PaymentTools:
        @tool(action="payments.pay", resource="vendor/{vendor}", side_effect=True)
        async def pay_vendor(self, args: Payment) -> Receipt: ...

`ToolActivities` turns bound tools into activities named `tool.<name>` (stable wire
names). Each run records its outcome in the ledger in the same activity, idempotently by
step, so governance costs no extra round trip. A side-effecting tool reads
`tool_context().idempotency_key` — derived from workflow id, the run the execution began
with, step, tool and arguments (`workflows.tool_calls.effect_key`), so it survives a
reset — and must pass it to the system it changes, so a retry never repeats the effect.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast, get_type_hints

from pydantic import BaseModel, JsonValue
from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError

from tether.activities.dispatch import COVERED, DispatchChecks, Refusal
from tether.activities.payloads import StepRef, ToolCall
from tether.errors import ErrorType
from tether.governance.derive import DerivedStep, check_template, declared_context, derive_step
from tether.governance.kill import KillSwitches
from tether.governance.presentation import (
    check_fields,
    compile_template,
    render_title,
)
from tether.governance.reload import PolicyHolder
from tether.verification.events import digest
from tether.verification.ledger import Ledger

F = TypeVar("F", bound=Callable[..., Awaitable[BaseModel]])

TOOL_ATTR = "__tether_tool__"


@dataclass(frozen=True)
class ToolSpec:
    name: str
    action: str
    resource: str
    """A `str.format` template over the tool's arguments, e.g. 'vendor/{vendor}'."""
    args_type: type[BaseModel]
    result_type: type[BaseModel]
    side_effect: bool
    idempotent: bool
    """The tool honours its idempotency key, so a retry cannot repeat the effect."""
    timeout: timedelta
    heartbeat: timedelta
    """The tool activity heartbeats; a worker that dies is noticed after this long."""
    compensation: str | None = None
    """The tool that undoes this one when a reviewer flags it (notify tier). It takes the
    same args type and reads the undone step's key from `tool_context().compensates`."""
    outage_budget: timedelta = timedelta(hours=1)
    """How long a run waits out this (idempotent) tool's outage before the step fails."""
    title: str = ""
    """How a person reads a call: a template over the arguments (`governance.presentation`),
    e.g. 'Pay {amount:$} to {vendor} for {invoice_id}'."""
    key_fields: tuple[str, ...] = ()
    """Arguments an approver sees first (`name` or `name:FORMAT`), e.g. ('amount:$',)."""
    editable: tuple[str, ...] = ()
    """Arguments an approver may change before approving; the edit is decided anew."""
    context: tuple[tuple[str, type], ...] | None = None
    """The argument fields that go into the policy context, with their types; None: all."""

    @property
    def context_fields(self) -> dict[str, type] | None:
        return None if self.context is None else dict(self.context)

    def derive(
        self,
        args: dict[str, JsonValue],
        *,
        action: str | None = None,
        resource: str | None = None,
        context: Mapping[str, JsonValue] | None = None,
    ) -> DerivedStep:
        """The decision request of a call with `args` (`governance.derive.derive_step`);
        `action`, `resource` and `context` are what the author claimed, checked."""
        return derive_step(
            self.name,
            self.action,
            self.resource,
            self.context_fields,
            args,
            claimed_action=action,
            claimed_resource=resource,
            extra_context=context,
        )

    def title_of(self, args: dict[str, JsonValue]) -> str:
        return render_title(self.title, args)

    @property
    def activity_name(self) -> str:
        return f"tool.{self.name}"


REGISTRY: dict[str, ToolSpec] = {}
"""Every tool declared so far, by name: the agent loop offers tools from here."""


def tool(
    *,
    action: str,
    resource: str,
    name: str | None = None,
    side_effect: bool = False,
    idempotent: bool = False,
    timeout: timedelta = timedelta(seconds=60),
    heartbeat: timedelta = timedelta(seconds=5),
    compensate: str | None = None,
    outage_budget: timedelta = timedelta(hours=1),
    title: str = "",
    key_fields: Sequence[str] = (),
    editable: Sequence[str] = (),
    context: Mapping[str, type] | Sequence[str] | None = None,
) -> Callable[[F], F]:
    """Declare an async function or method (taking one pydantic model) as a tool.

    `compensate` names the tool that undoes this one (e.g. `refund_vendor` for
    `pay_vendor`); `ToolActivities` checks it is bound and takes the same args type.
    `title`, `key_fields` and `editable` say how an approver reads the call and what they
    may change (see `ToolSpec`); each names fields of the arguments model, checked here.
    An editable field may not appear in `resource`: an edit changes what is done, never
    to whom (the policy decides the edit on the same resource).

    `action` and `resource` (a template over the argument fields) are what the policy
    decides on for every call; `act()` derives them, never takes them from the author.
    `context` names the argument fields that go into the policy context, with their types
    (`{"amount": float}`, or names whose type the arguments model gives); None puts every
    argument field in.
    """

    def wrap(fn: F) -> F:
        hints = get_type_hints(fn)
        params = [p for p in inspect.signature(fn).parameters if p != "self"]
        if len(params) != 1:
            raise TypeError(f"tool {fn.__name__!r} must take exactly one pydantic argument")
        args_type = hints[params[0]]
        what = f"tool {name or fn.__name__!r}"
        known = list(getattr(args_type, "model_fields", {}))
        changeable = check_fields(editable, known, f"{what} editable")
        in_resource = set(changeable) & set(re.findall(r"\{(\w+)", resource))
        if in_resource:
            raise TypeError(
                f"{what}: editable field {sorted(in_resource)[0]!r} appears in the resource "
                f"{resource!r}; an approver may change what is done, not to whom"
            )
        check_template(what, resource, known)
        spec = ToolSpec(
            name=name or fn.__name__,
            action=action,
            resource=resource,
            args_type=args_type,
            result_type=hints["return"],
            side_effect=side_effect,
            idempotent=idempotent or not side_effect,
            timeout=timeout,
            heartbeat=heartbeat,
            compensation=compensate,
            outage_budget=outage_budget,
            title=compile_template(title, known, f"{what} title"),
            key_fields=check_fields(key_fields, known, f"{what} key_fields", formats=True),
            editable=changeable,
            context=declared_context(
                what, context, {n: f.annotation for n, f in args_type.model_fields.items()}
            ),
        )
        setattr(fn, TOOL_ATTR, spec)
        # The sandbox imports a workflow module anew for every run; a tool declared in one
        # must not replace, in the shared registry, the worker's spec with the sandbox's.
        if not workflow.unsafe.in_sandbox():
            REGISTRY[spec.name] = spec
        return fn

    return wrap


def spec_of(fn: Callable[..., Awaitable[BaseModel]]) -> ToolSpec:
    spec = getattr(fn, TOOL_ATTR, None)
    if not isinstance(spec, ToolSpec):
        raise TypeError(f"{fn!r} is not a tool; decorate it with @tool(action=..., resource=...)")
    return spec


@dataclass(frozen=True)
class ToolContext:
    ref: StepRef
    idempotency_key: str
    compensates: str = ""
    """When this run compensates an earlier step: that step's effect idempotency key."""


_context: contextvars.ContextVar[ToolContext] = contextvars.ContextVar("tether_tool_context")


def tool_context() -> ToolContext:
    """The running tool's step and idempotency key."""
    return _context.get()


async def _heartbeat(every: timedelta) -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(every.total_seconds())


class ToolActivities:
    """Activities for the bound tools of the given objects (or plain tool functions)."""

    def __init__(
        self,
        ledger: Ledger,
        providers: list[object],
        trusted_keys: list[str] | None = None,
        *,
        policy: PolicyHolder | None = None,
        kills: KillSwitches | None = None,
    ) -> None:
        """`policy` and `kills` (the worker's) are re-checked before every try of a tool
        (`activities.dispatch`); without them only the recorded decision is checked."""
        self.ledger = ledger
        self.trusted_keys = list(trusted_keys or [])
        self.checks = DispatchChecks(ledger, self.trusted_keys, policy, kills)
        self.bound: dict[str, tuple[ToolSpec, Callable[[BaseModel], Awaitable[BaseModel]]]] = {}
        for provider in providers:
            candidates = (
                [provider]
                if callable(provider) and hasattr(provider, TOOL_ATTR)
                else [getattr(provider, n) for n in dir(provider) if not n.startswith("_")]
            )
            for member in candidates:
                spec = getattr(member, TOOL_ATTR, None)
                if isinstance(spec, ToolSpec):
                    self.bound[spec.name] = (spec, cast(Any, member))
        for spec, _ in self.bound.values():
            self._check_compensation(spec)

    def _check_compensation(self, spec: ToolSpec) -> None:
        if spec.compensation is None:
            return
        undo = self.bound.get(spec.compensation)
        if undo is None:
            raise TypeError(
                f"tool {spec.name!r} declares compensate={spec.compensation!r}, which is not a "
                "tool on this worker; pass its provider in extra_tools or fix the name"
            )
        if undo[0].args_type is not spec.args_type:
            raise TypeError(
                f"tool {spec.name!r} declares compensate={spec.compensation!r}, which takes "
                f"{undo[0].args_type.__name__}, not {spec.args_type.__name__}; a compensation "
                "takes the same args type as the tool it undoes"
            )

    def activities(self) -> list[Callable[..., Any]]:
        return [self._make(spec, fn) for spec, fn in self.bound.values()]

    def _make(
        self, spec: ToolSpec, fn: Callable[[BaseModel], Awaitable[BaseModel]]
    ) -> Callable[[ToolCall], Awaitable[BaseModel]]:
        async def run(call: ToolCall) -> BaseModel:
            args = spec.args_type.model_validate(call.args)
            attempt = activity.info().attempt
            if call.record:
                refusal = await asyncio.to_thread(self._authorise, spec, call)
                if refusal is not None:
                    info = activity.info()  # every caller's attempt is its own record
                    kind = f"tool.refused.{info.workflow_run_id}.{info.activity_id}"
                    why: dict[str, JsonValue] = {"why": refusal.why, "check": refusal.check}
                    await asyncio.to_thread(self._record, call, kind, "refused", why, [])
                    covered = refusal.check == COVERED
                    raise ApplicationError(
                        refusal.why,
                        refusal.check,
                        refusal.engaged_by,
                        type=ErrorType.TOOL_REFUSED if covered else ErrorType.DISPATCH_REFUSED,
                        non_retryable=True,
                    )
            if call.record and spec.side_effect:
                # Before the effect: if this attempt never reports back, the ledger shows the
                # action was dispatched and its outcome is unknown, not that it never ran.
                await asyncio.to_thread(
                    self._record, call, f"tool.dispatched.{attempt}", "dispatched", {}, []
                )
            token = _context.set(
                ToolContext(call.ref, call.ref.effect_key(), compensates=call.compensates)
            )
            beat = asyncio.create_task(_heartbeat(spec.heartbeat / 3))
            try:
                result = await fn(args)
            except Exception as exc:
                if call.record:
                    await asyncio.to_thread(
                        self._record,
                        call,
                        f"tool.failed.{attempt}",
                        "failed",
                        {"error": repr(exc)[:1000], "attempt": attempt},
                        [],
                    )
                raise
            finally:
                beat.cancel()
                _context.reset(token)
            if call.record:
                output: JsonValue = result.model_dump(mode="json")
                await asyncio.to_thread(
                    self._record,
                    call,
                    "tool.executed",
                    "succeeded",
                    {"result_digest": digest(output), "attempt": attempt},
                    [call.args, output],
                )
            return result

        run.__name__ = f"tool_{spec.name}"
        return activity.defn(name=spec.activity_name)(run)

    def _authorise(self, spec: ToolSpec, call: ToolCall) -> Refusal | None:
        """None when the tool may run: the backstop behind `act()` (`activities.dispatch`)."""
        if call.compensates:
            problem = self._authorise_compensation(call)
            return Refusal(COVERED, problem) if problem else None
        return self.checks.check(spec, call)

    def _authorise_compensation(self, call: ToolCall) -> str:
        """Empty when this tool is a declared compensation of a step a reviewer flagged."""
        declared = {spec.compensation for spec, _ in self.bound.values()}
        if call.tool not in declared:
            return f"tool {call.tool!r} is no tool's declared compensation; it cannot undo steps"
        step = call.compensates_step or call.compensates.removesuffix(":effect")
        if self.ledger.get(f"{step}:review.flagged") is None:
            return (
                f"no reviewer flagged the step {step!r}; a compensation runs only for a "
                "flagged step"
            )
        return ""

    def _record(
        self,
        call: ToolCall,
        kind: str,
        outcome: str,
        payload: dict[str, JsonValue],
        content: list[JsonValue],
    ) -> None:
        self.ledger.append(
            call.ref.event(
                kind.split(".")[0] + "." + kind.split(".")[1],
                key=kind,
                action=call.action,
                resource=call.resource,
                decision=call.decision,
                actor=call.ref.agent,
                outcome=outcome,
                payload={"tool": call.tool, "args_digest": digest(call.args), **payload},
            ),
            content,
        )
