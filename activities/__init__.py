"""Activities: the only worker-side code with I/O. One class per external dependency."""

from activities.bank import Bank, BankChange, BankChangeResult, Payment, PaymentTools, Receipt
from activities.governance import CloseApprovalInput, GovernanceActivities
from activities.models import ModelActivities, ModelProvider, Script, ScriptedProvider
from activities.payloads import (
    DecideInput,
    ModelCallInput,
    ModelCallResult,
    NotifyInput,
    StepRef,
    ToolCall,
)
from activities.tools import (
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
    "Bank",
    "BankChange",
    "BankChangeResult",
    "CloseApprovalInput",
    "DecideInput",
    "GovernanceActivities",
    "ModelActivities",
    "ModelCallInput",
    "ModelCallResult",
    "ModelProvider",
    "NotifyInput",
    "Payment",
    "PaymentTools",
    "Receipt",
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
