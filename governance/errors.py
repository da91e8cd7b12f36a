"""Errors of the control plane.

TetherError
└── GovernanceError
    ├── PolicyError          the model or policy file cannot be loaded
    └── ApprovalError        an approval attempt is not acceptable
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
