"""Workflows: deterministic sequencing only. Authors subclass `AgentWorkflow`."""

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from workflows.agent import AgentStatus, AgentWorkflow, Budget, Usage
from workflows.agent_loop import AgentLoopInput, AgentLoopResult, AgentLoopWorkflow, AgentTurn
from workflows.bench import GovernedStepsWorkflow, StepsInput, UngovernedStepsWorkflow
from workflows.errors import (
    ActionAmbiguous,
    ActionDenied,
    ActionRejected,
    BudgetExceeded,
    ModelOutputInvalid,
)
from workflows.invoice import InvoiceFields, InvoiceInput, InvoiceResult, PayInvoiceWorkflow
from workflows.review import ReviewWindowWorkflow

ALL_WORKFLOWS = [
    PayInvoiceWorkflow,
    AgentLoopWorkflow,
    GovernedStepsWorkflow,
    UngovernedStepsWorkflow,
    ReviewWindowWorkflow,
]

WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("cryptography")
)
"""The sandbox every worker and replayer uses. `cryptography` (a native extension that
cannot be imported twice) passes through: workflows verify approval signatures."""

__all__ = [
    "ALL_WORKFLOWS",
    "WORKFLOW_RUNNER",
    "ActionAmbiguous",
    "ActionDenied",
    "ActionRejected",
    "AgentLoopInput",
    "AgentLoopResult",
    "AgentLoopWorkflow",
    "AgentStatus",
    "AgentTurn",
    "AgentWorkflow",
    "Budget",
    "BudgetExceeded",
    "GovernedStepsWorkflow",
    "InvoiceFields",
    "InvoiceInput",
    "InvoiceResult",
    "ModelOutputInvalid",
    "PayInvoiceWorkflow",
    "ReviewWindowWorkflow",
    "StepsInput",
    "UngovernedStepsWorkflow",
    "Usage",
]
