"""Closing the approval requests of runs that ended without deciding them.

A run terminated, timed out, failed or cancelled while its request waited never closes
that request itself: it would stay pending forever, count against its agent's cap of
open requests and offer a decision nobody can make. `close_ended` asks Temporal about
each pending request's run and closes those whose run is over (status `closed`, ledger
`approval.closed` with the run's status). It runs when requests are listed
(`tether approvals list`), when a decision cannot reach its run, and on every worker
every `approval_pause_seconds` (`sweep_forever`), so a paused agent's cap frees up.

Idempotent: closing a closed request changes nothing and its ledger key is per request
and stage, so many workers may sweep at once.
"""

from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from tether.activities.governance import approval_event
from tether.governance.approvals import ApprovalStatus, PendingApproval
from tether.governance.store import ApprovalStore
from tether.verification.ledger import Ledger

log = logging.getLogger("tether.approvals")
ENDED_BY = "run-ended"
"""The actor of an `approval.closed` event: nobody decided."""


async def run_status(client: Client, pending: PendingApproval) -> str:
    """The request's run status name (`RUNNING`, `TERMINATED`, ...), `GONE` when Temporal
    no longer knows the run; RPCError for anything else (unreachable)."""
    handle = client.get_workflow_handle(pending.workflow_id, run_id=pending.run_id)
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return "GONE"
        raise
    status = described.status
    return status.name if status is not None else "UNKNOWN"


def close_one(store: ApprovalStore, ledger: Ledger, pending: PendingApproval, status: str) -> None:
    """Close `pending` because its run ended with `status`, and record it."""
    store.close(pending.request_id, ApprovalStatus.CLOSED, ENDED_BY)
    ledger.append(
        approval_event(
            pending,
            "approval.closed",
            ApprovalStatus.CLOSED.value,
            ENDED_BY,
            {
                "run_status": status.lower(),
                "comment": f"the run ended ({status.lower()}) before anyone decided",
            },
        )
    )


async def close_ended(
    client: Client, store: ApprovalStore, ledger: Ledger
) -> list[PendingApproval]:
    """Close every pending request whose run has ended; return those closed."""
    closed: list[PendingApproval] = []
    for pending in store.list(ApprovalStatus.PENDING):
        try:
            status = await run_status(client, pending)
        except RPCError as exc:  # Temporal unreachable: the next sweep tries again
            log.warning("cannot ask about %s: %s", pending.workflow_id, exc.message)
            continue
        if status != WorkflowExecutionStatus.RUNNING.name:
            close_one(store, ledger, pending, status)
            closed.append(pending)
    return closed


async def sweep_forever(
    client: Client, store: ApprovalStore, ledger: Ledger, seconds: float
) -> None:
    """`close_ended` every `seconds` until cancelled (a failed sweep is logged, not fatal)."""
    while True:
        await asyncio.sleep(seconds)
        try:
            for pending in await close_ended(client, store, ledger):
                log.info("closed %s: its run ended", pending.request_id)
        except Exception:  # a database outage must not end the sweep
            log.exception("approval sweep failed; retrying in %s s", seconds)
