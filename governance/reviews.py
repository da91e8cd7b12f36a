"""Review windows of notify-tier actions, and the rules a flag must pass.

A notify-tier action runs at once; afterwards a review window stays open until `until`.
A reviewer who flags the action within it triggers the compensation the tool declared.

Pure and deterministic: the `ReviewWindow` workflow's update validator calls
`check_flag` with the workflow's clock, and `tether review flag` calls it before
sending, so both sides refuse the same flags with the same words.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from tether.errors import ReviewError
from tether.governance.agents import is_agent


class ReviewStatus(StrEnum):
    OPEN = "open"
    FLAGGED = "flagged"
    """Flagged; the compensation is running, or the tool declares none."""
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation-failed"
    CLOSED = "closed"
    """The window ended without a flag."""


class ReviewWindow(BaseModel):
    """One open (or past) review window: what the index stores and people list."""

    model_config = ConfigDict(frozen=True)

    review_id: str
    """The id of the `ReviewWindow` workflow: `<workflow_id>-review-<step>`."""
    workflow_id: str
    run_id: str
    step: int
    agent: str
    action: str
    resource: str
    tool: str
    compensation: str = ""
    """The tool a flag runs; empty when the tool declares none."""
    rule: str
    policy_version: str
    reviewer_role: str = ""
    reviewers: list[str] = Field(default_factory=list)
    """Who may flag when `reviewer_role` is set; anyone but an agent otherwise."""
    until: datetime
    status: ReviewStatus = ReviewStatus.OPEN
    flagged_by: str = ""
    reason: str = ""


class ReviewFlag(BaseModel):
    """A reviewer's flag, sent as the `flag` update of the review window."""

    model_config = ConfigDict(frozen=True)

    reviewer: str
    reason: str = ""


class ReviewOutcome(BaseModel):
    """What the review window answers to an accepted flag, once compensation ran."""

    review_id: str
    status: ReviewStatus
    reviewer: str
    compensation: str = ""
    detail: str = ""


def review_id(workflow_id: str, step: int) -> str:
    """The id of the review window of `step` in `workflow_id`."""
    return f"{workflow_id}-review-{step}"


def check_flag(window: ReviewWindow, flag: ReviewFlag, now: datetime) -> None:
    """Raise ReviewError when `flag` may not flag `window`; return None when it may."""
    if window.status is not ReviewStatus.OPEN:
        raise ReviewError(
            f"review window {window.review_id!r} is already {window.status.value}; nothing to flag"
        )
    if now >= window.until:
        raise ReviewError(
            f"review window {window.review_id!r} closed at {window.until.isoformat()}; "
            "a flag after the window cannot trigger compensation, raise it with the owner"
        )
    if not flag.reviewer.strip():
        raise ReviewError("a flag needs a reviewer; pass --as user:you")
    if is_agent(flag.reviewer):  # the policy's agents are never among `reviewers` either
        raise ReviewError(f"{flag.reviewer!r} is an agent identity; agents never flag actions")
    if window.reviewer_role and flag.reviewer not in window.reviewers:
        raise ReviewError(
            f"{flag.reviewer!r} does not hold {window.reviewer_role!r}, which review window "
            f"{window.review_id!r} needs; ask one of {', '.join(window.reviewers) or 'nobody'}"
        )
