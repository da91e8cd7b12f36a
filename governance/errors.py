"""Errors of the control plane.

TetherError
└── GovernanceError
    ├── PolicyError          the model or policy file cannot be loaded
    ├── ApprovalError        an approval attempt is not acceptable
    ├── InvalidNameError     an agent, action or resource name is refused
    └── ReviewError          a review flag is not acceptable
"""

from __future__ import annotations


class TetherError(Exception):
    """Base of every error Tether raises on purpose."""


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
