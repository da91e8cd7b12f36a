"""Workflows: deterministic sequencing only. Authors subclass `AgentWorkflow`."""

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

ALL_WORKFLOWS = [
    PayInvoiceWorkflow,
    AgentLoopWorkflow,
    GovernedStepsWorkflow,
    UngovernedStepsWorkflow,
]

__all__ = [
    "ALL_WORKFLOWS",
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
    "StepsInput",
    "UngovernedStepsWorkflow",
    "Usage",
]
