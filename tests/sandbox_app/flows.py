"""Workflows of the sandbox test app: one reads the wall clock (the sandbox must refuse),
one echoes its input; a tool is declared here too (the sandbox re-imports this module for
every run, which must not re-register it)."""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from tether.activities.tools import tool


class Echo(BaseModel):
    text: str


class FlowTools:
    """A tool declared in a workflow module."""

    @tool(action="notes.write", resource="note", name="sandbox_flow_note")
    async def note(self, args: Echo) -> Echo:
        return args


@workflow.defn(name="SandboxClockTest")
class ClockWorkflow:
    @workflow.run
    async def run(self) -> str:
        return datetime.now().isoformat()  # nondeterministic: the sandbox refuses it


@workflow.defn(name="SandboxEchoTest")
class EchoWorkflow:
    @workflow.run
    async def run(self, echo: Echo) -> Echo:
        return Echo(text=f"echo: {echo.text}")
