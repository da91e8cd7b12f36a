"""A test workflow for the model gateway: one validated `ask`, its outcome classified."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from tether.workflows.agent import AgentWorkflow, Usage
    from tether.workflows.errors import ModelOutputInvalid


class Echo(BaseModel):
    """What the test server answers: the prompt's start and which endpoint answered."""

    echo: str
    endpoint: str


class GatewayAskInput(BaseModel):
    prompt: str
    sensitivity: str = "internal"
    fallback: Echo | None = None
    approver: str = ""
    forbid_endpoint: str = ""
    """A declared check: output from this endpoint is refused."""
    classify: bool = False
    """Return failures as a classified outcome instead of failing the run."""


class GatewayAskResult(BaseModel):
    outcome: str
    """`ok`, or the error type that ended the ask."""
    output: Echo | None = None
    usage: Usage


@workflow.defn(name="GatewayTestAsk")
class GatewayAskWorkflow(AgentWorkflow):
    agent = "agent:ap-clerk"

    @workflow.run
    async def run(self, inp: GatewayAskInput) -> GatewayAskResult:
        forbid = inp.forbid_endpoint

        def check(out: Echo) -> str | None:
            return f"answers from {forbid!r} are refused" if out.endpoint == forbid else None

        try:
            out = await self.ask(
                Echo,
                task="extract",
                prompt=inp.prompt,
                sensitivity=inp.sensitivity,
                max_output_tokens=200,
                check=check if forbid else None,
                fallback=inp.fallback,
                approver=inp.approver,
            )
        except (ModelOutputInvalid, ApplicationError) as exc:
            if not inp.classify:
                raise
            return GatewayAskResult(outcome=exc.type or "error", usage=self._usage)
        return GatewayAskResult(outcome="ok", output=out, usage=self._usage)
