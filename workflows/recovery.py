"""The recovery ladder of `ask`: what happens to model output that fails its schema or check.

In order, each rung recorded in the ledger (`model.rung`, with the validation error):

1. `repair`    the same model again, told the validation error;
2. `alternate` another eligible model, fresh: one that has not answered yet;
3. `fallback`  the output the author declared (`ask(..., fallback=...)`);
4. `approve`   a person decides (`ask(..., approver="role:...")`): approving takes the
               output the approver supplies as the decision's comment (JSON that fits
               the schema), else the declared fallback; rejecting fails the step.

With a declared fallback *and* an approver, the fallback is used only once approved.
When no rung yields valid output the step raises `ModelOutputInvalid`. Invalid output is
never returned: truncated answers (`finish_reason` "length") and answers that are tool
calls rather than JSON count as invalid.

Rungs are counted by intent, not by endpoint touched (since the `model-ladder-by-intent`
patch): the model asked to repair is the one that gave the answer (the repair may fail
over only to another endpoint serving that model, else it waits for it like any call in
an outage), so a repair that fails over is still the repair; the `alternate` rung goes to
a model that has not answered yet (`exclude_models`).

Model calls that fail for good (no eligible endpoint, a request an endpoint refuses, or
every endpoint unavailable for the whole outage budget: `workflows.model_calls`) raise an
ApplicationError of that type (`NoEligibleEndpoint`, `ModelRequestRejected`,
`ModelUnavailable`); on the `alternate` rung such a failure only skips the rung, and so
does a repair whose model is gone (no longer configured) or unavailable. Deterministic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, JsonValue, ValidationError

    from tether.activities.governance import GovernanceActivities
    from tether.activities.payloads import ModelCallInput, ModelCallResult, StepRef
    from tether.errors import ErrorType
    from tether.governance.approvals import ApprovalDecision
    from tether.governance.types import Decision, Tier
    from tether.verification.events import canonical_json, digest
    from tether.workflows.errors import ModelOutputInvalid
    from tether.workflows.model_calls import CALL_FAILURES, ModelCalls

M = TypeVar("M", bound=BaseModel)
LOCAL = timedelta(seconds=30)
INTENT_PATCH = "model-ladder-by-intent"

Check = Callable[[M], str | None]
"""A declared check: returns what is wrong with a valid-looking output, or None."""


def validate(schema: type[M], result: ModelCallResult, check: Check[M] | None) -> M | str:
    """The output, or why it is not acceptable."""
    if result.truncated:
        return f"the answer was cut off at the output token limit ({result.output_tokens})"
    if not result.text and result.tool_calls:
        return f"the answer is a tool call ({result.tool_calls[0].name}), not JSON"
    try:
        out = schema.model_validate_json(result.text)
    except ValidationError as exc:
        return validation_error(schema, exc)
    if check is not None:
        problem = check(out)
        if problem:
            return f"the output fails its check: {problem}"
    return out


def validation_error(schema: type[BaseModel], exc: ValidationError) -> str:
    """What is wrong, by field (type, location, message) and without the input: the text
    goes into the ledger and approval requests, where no model output may appear."""
    problems = [
        f"{'.'.join(str(part) for part in e['loc']) or '(root)'}: {e['msg']} [{e['type']}]"
        for e in exc.errors(include_input=False, include_url=False)
    ]
    return f"{len(problems)} validation error(s) for {schema.__name__}: " + "; ".join(problems)


class RecoveryLadder(ModelCalls):
    """Mixed into `AgentWorkflow`; the callables below are the workflow's own."""

    _agent: str
    _inputs: list[str]
    _ref: Callable[[], StepRef]
    _charge: Callable[[ModelCallResult], None]
    _await_approval: Callable[..., Awaitable[list[ApprovalDecision]]]

    async def _ask_ladder(
        self,
        schema: type[M],
        request: ModelCallInput,
        check: Check[M] | None,
        fallback: M | None,
        approver: str,
    ) -> M:
        ref, task = request.ref, request.task
        by_intent = workflow.patched(INTENT_PATCH)
        tried: list[str] = []
        """Endpoints that answered (before the patch: the ones `alternate` excludes)."""
        answered: list[str] = []
        """Models that answered: `alternate` goes to another one."""
        skippable = ("alternate", "repair") if by_intent else ("alternate",)
        error = ""
        rungs: list[tuple[str, ModelCallInput]] = [
            ("first", request.model_copy(update={"rung": "first"}))
        ]
        while rungs:
            rung, attempt = rungs.pop(0)
            try:
                # The request as finally sent: it carries an approved budget_override on
                # to the next rung, which must not ask (under the same step) again.
                result, attempt = await self._call_model(attempt)
            except ApplicationError as exc:
                if rung not in skippable or exc.type not in CALL_FAILURES:
                    raise
                if rung == "repair" and exc.type == ErrorType.MODEL_REQUEST_REJECTED:
                    raise
                await self._record_rung(ref, task, rung, "skipped", exc.message)
                if rung == "repair":
                    rungs.append(("alternate", self._alternate(attempt, tried, answered)))
                continue
            self._charge(result)
            self._inputs.append(result.call_id)
            if result.endpoint and result.endpoint not in tried:
                tried.append(result.endpoint)
            if by_intent and result.model and result.model not in answered:
                answered.append(result.model)
            out = validate(schema, result, check)
            if not isinstance(out, str):
                if rung != "first":
                    await self._record_rung(ref, task, rung, "recovered", "", result.call_id)
                return out
            error = out
            await self._record_rung(ref, task, rung, "invalid", error, result.call_id)
            if rung == "first":
                rungs.append(
                    (
                        "repair",
                        attempt.model_copy(
                            update={
                                "rung": "repair",
                                "repair_error": error,
                                "prefer_endpoint": result.endpoint,
                                "same_model_as": result.endpoint if by_intent else "",
                            }
                        ),
                    )
                )
            elif rung == "repair":
                rungs.append(("alternate", self._alternate(attempt, tried, answered)))
        if fallback is not None and not approver:
            await self._record_rung(ref, task, "fallback", "used", error)
            return schema.model_validate(fallback.model_dump(mode="json"))
        if approver:
            if workflow.patched("model-approval-own-step"):
                # A step of its own: its approval request (id, ledger records) is never
                # the step's budget-overspend request, which may be decided already.
                ref = self._ref()
            return await self._approve_output(schema, ref, task, error, fallback, approver)
        raise ModelOutputInvalid(
            f"model output for task {task!r} does not fit {schema.__name__} after repair, "
            f"another model and no declared fallback: {error[:300]}; declare "
            "ask(..., fallback=...) or ask(..., approver=...) to keep the run going"
        )

    @staticmethod
    def _alternate(
        attempt: ModelCallInput, tried: list[str], answered: list[str]
    ) -> ModelCallInput:
        """The `alternate` rung's call: fresh, to a model that has not answered yet."""
        return attempt.model_copy(
            update={
                "rung": "alternate",
                "repair_error": "",
                "prefer_endpoint": "",
                "same_model_as": "",
                "exclude_endpoints": list(tried),
                "exclude_models": list(answered),
            }
        )

    async def _approve_output(
        self,
        schema: type[M],
        ref: StepRef,
        task: str,
        error: str,
        fallback: M | None,
        approver: str,
    ) -> M:
        """The approve tier: a person supplies the output or approves the fallback."""
        proposed: JsonValue = fallback.model_dump(mode="json") if fallback is not None else None
        args: dict[str, JsonValue] = {
            "task": task,
            "schema": schema.__name__,
            "error": error[:300],
            "fallback": proposed,
        }
        decision = Decision(
            tier=Tier.APPROVE,
            rule="model-recovery-ladder",
            policy_version="",
            reason=(
                f"model output for {task!r} failed {schema.__name__} on every rung; approve "
                + (
                    "the declared fallback, or supply the output as the comment (JSON)"
                    if fallback is not None
                    else "with the output as the comment (JSON), or reject"
                )
            ),
            approver_role=approver,
        )
        grants = await self._await_approval(
            ref,
            f"model.{task}.output",
            f"agent/{self._agent}",
            args,
            canonical_json(args),
            decision,
        )
        for grant in grants:
            text = grant.comment.strip()
            if text.startswith("{"):
                try:
                    out = schema.model_validate_json(text)
                except ValidationError:
                    continue
                await self._record_rung(ref, task, "approve", "supplied", error, digest(text))
                return out
        if fallback is not None:
            await self._record_rung(ref, task, "approve", "fallback approved", error)
            return schema.model_validate(fallback.model_dump(mode="json"))
        raise ModelOutputInvalid(
            f"model output for task {task!r} was approved without an output that fits "
            f"{schema.__name__}; the approver's comment must be that JSON"
        )

    async def _record_rung(
        self, ref: StepRef, task: str, rung: str, outcome: str, error: str, call_id: str = ""
    ) -> None:
        await workflow.execute_local_activity_method(
            GovernanceActivities.record_event,
            ref.event(
                "model.rung",
                key=f"model.rung.{rung}.{outcome}",
                action=f"model.{task}",
                resource=f"agent/{ref.agent}",
                decision=None,
                actor=ref.agent,
                outcome=outcome,
                payload={"rung": rung, "error": error[:500], "call_id": call_id},
            ),
            start_to_close_timeout=LOCAL,
        )
