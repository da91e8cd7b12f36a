"""Workflows: deterministic sequencing only. Authors subclass `AgentWorkflow`.

`TETHER_WORKFLOWS` are the workflows Tether itself runs (the agent loop, the review
window of notify-tier actions, the scheduled checkpoint); every worker registers them
beside the app's own.
"""

from tether.workflows.agent import AgentStatus, AgentWorkflow, Budget, Usage
from tether.workflows.agent_loop import (
    AgentLoopInput,
    AgentLoopResult,
    AgentLoopWorkflow,
    AgentTurn,
)
from tether.workflows.checkpoint import CheckpointWorkflow
from tether.workflows.errors import (
    ActionAmbiguous,
    ActionDenied,
    ActionHalted,
    ActionMisdeclared,
    ActionRejected,
    BudgetExceeded,
    ModelOutputInvalid,
)
from tether.workflows.review import ReviewWindowWorkflow

TETHER_WORKFLOWS: list[type] = [AgentLoopWorkflow, ReviewWindowWorkflow, CheckpointWorkflow]

__all__ = [
    "TETHER_WORKFLOWS",
    "ActionAmbiguous",
    "ActionDenied",
    "ActionHalted",
    "ActionMisdeclared",
    "ActionRejected",
    "AgentLoopInput",
    "AgentLoopResult",
    "AgentLoopWorkflow",
    "AgentStatus",
    "AgentTurn",
    "AgentWorkflow",
    "Budget",
    "BudgetExceeded",
    "CheckpointWorkflow",
    "ModelOutputInvalid",
    "ReviewWindowWorkflow",
    "Usage",
]
