"""Activities: the only worker-side code with I/O. One class per external dependency."""

from tether.activities.governance import CloseApprovalInput, GovernanceActivities
from tether.activities.models import ModelActivities, ModelProvider, Script, ScriptedProvider
from tether.activities.payloads import (
    DecideInput,
    ModelCallInput,
    ModelCallResult,
    NotifyInput,
    StepRef,
    ToolCall,
)
from tether.activities.tools import (
    REGISTRY,
    ToolActivities,
    ToolContext,
    ToolSpec,
    spec_of,
    tool,
    tool_context,
)

__all__ = [
    "REGISTRY",
    "CloseApprovalInput",
    "DecideInput",
    "GovernanceActivities",
    "ModelActivities",
    "ModelCallInput",
    "ModelCallResult",
    "ModelProvider",
    "NotifyInput",
    "Script",
    "ScriptedProvider",
    "StepRef",
    "ToolActivities",
    "ToolCall",
    "ToolContext",
    "ToolSpec",
    "spec_of",
    "tool",
    "tool_context",
]
