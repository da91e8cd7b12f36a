"""Payloads of the control plane: tiers, decision requests and decisions.

Pure data, no I/O. Every model here crosses the Temporal boundary, so fields added
later get defaults and nothing is typed `Any`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, JsonValue


class Tier(StrEnum):
    """What the control plane lets an agent do with one action."""

    AUTO = "auto"
    NOTIFY = "notify"
    APPROVE = "approve"
    DENY = "deny"

    @property
    def severity(self) -> int:
        """Higher is more restrictive; where several rules match, the highest wins."""
        return _SEVERITY[self]


_SEVERITY = {Tier.AUTO: 0, Tier.NOTIFY: 1, Tier.APPROVE: 2, Tier.DENY: 3}

NO_MATCH_RULE = "default-deny"
"""The rule named by a decision when no policy row matched."""


class DecisionRequest(BaseModel):
    """One question for the policy: may `agent` do `action` on `resource`?"""

    model_config = ConfigDict(frozen=True)

    agent: str
    action: str
    resource: str
    context: dict[str, JsonValue] = Field(default_factory=dict)


class Decision(BaseModel):
    """The policy's answer, with enough to explain and replay it."""

    model_config = ConfigDict(frozen=True)

    tier: Tier
    rule: str
    policy_version: str
    reason: str
    approver_role: str | None = None
    approvers: list[str] = Field(default_factory=list)
    """People holding `approver_role` when the decision was taken."""
    timeout_seconds: int | None = None
    """How long an approval may wait; when it passes the request is rejected."""
