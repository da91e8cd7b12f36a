"""The reviewing service: the one path by which a person's flag reaches a review window.

The CLI and the console call `flag_review`. The window is the authority. A flag refused
before it is sent (the same rules, checked here first), one refused by a window opened
before refusals were recorded there, and one sent to a window that has ended are recorded
in the ledger (`review.refused`) here; a window refusing a flag records it itself.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from tether.activities.notify import review_event
from tether.errors import ErrorType, ReviewError
from tether.governance.feed import FeedStore
from tether.governance.reviews import ReviewFlag, ReviewOutcome, ReviewWindow, check_flag, review_id
from tether.verification.ledger import Ledger


def _refuse(ledger: Ledger, window: ReviewWindow, flag: ReviewFlag, why: str) -> ReviewError:
    ledger.append(
        review_event(
            window,
            "review.refused",
            flag.reviewer,
            {"reviewer": flag.reviewer, "reason": flag.reason, "why": why},
            key_suffix=f".{uuid.uuid4().hex}",
        )
    )
    return ReviewError(why)


async def flag_review(
    client: Client,
    feed: FeedStore,
    ledger: Ledger,
    workflow_id: str,
    step: int,
    *,
    reviewer: str,
    reason: str = "",
) -> ReviewOutcome:
    """Flag a notify-tier step; raise ReviewError (recorded) when the flag is refused.

    Returns once the window has run the compensation (or found none to run).
    """
    window = feed.get_review(review_id(workflow_id, step))
    flag = ReviewFlag(reviewer=reviewer, reason=reason)
    try:
        # The same rules the workflow applies, checked first: no round trip to refuse.
        check_flag(window, flag, datetime.now(UTC))
    except ReviewError as exc:
        raise _refuse(ledger, window, flag, str(exc)) from None
    handle = client.get_workflow_handle(window.review_id)
    try:
        outcome: ReviewOutcome = await handle.execute_update(
            "flag", flag, result_type=ReviewOutcome
        )
        return outcome
    except WorkflowUpdateFailedError as exc:
        why = str(exc.cause.message if hasattr(exc.cause, "message") else exc.cause)
        if isinstance(exc.cause, ApplicationError) and exc.cause.type == ErrorType.REVIEW_REFUSED:
            raise ReviewError(why) from None  # the window recorded it already
    except RPCError as exc:
        why = (
            f"review window {window.review_id!r} no longer accepts flags ({exc.message}); "
            f"it closed at {window.until.isoformat()}"
        )
    raise _refuse(ledger, window, flag, why)
