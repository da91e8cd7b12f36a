"""Control plane: casbin policy decides a tier for every action; approvals are checked here.

A plain library: no Temporal import, unit-testable in microseconds.
"""

from tether.errors import ApprovalError, GovernanceError, PolicyError, TetherError
from tether.governance.approvals import (
    ApprovalDecision,
    ApprovalOutcome,
    ApprovalStatus,
    PendingApproval,
    check_approval,
)
from tether.governance.policy import PolicyEngine, PolicyRule, parse_policy
from tether.governance.types import NO_MATCH_RULE, Decision, DecisionRequest, Tier

__all__ = [
    "NO_MATCH_RULE",
    "ApprovalDecision",
    "ApprovalError",
    "ApprovalOutcome",
    "ApprovalStatus",
    "Decision",
    "DecisionRequest",
    "GovernanceError",
    "PendingApproval",
    "PolicyEngine",
    "PolicyError",
    "PolicyRule",
    "TetherError",
    "Tier",
    "check_approval",
    "parse_policy",
]
