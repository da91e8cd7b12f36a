"""The landing page, which depends on what the person does, and a requester's own requests.

`/` sends each person to the page they use most: approvers (holders of a role some policy
rule asks to approve) to their inbox, kill-switch holders to the kill switch, auditors to
the runs, everyone else to the requests they started. `/my-requests` lists the approval
requests of the runs the signed-in person started (`requested_by`), open ones first, with
how each was decided and the decider's comment: a requester cannot open the request page
(it is for approvers only), so this is where they learn the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from tether.console.app import ConsoleState, Viewer, render, state, viewer
from tether.console.details import urgency
from tether.governance.approvals import ApprovalStatus, PendingApproval

router = APIRouter()
Who = Annotated[Viewer, Depends(viewer)]
LIMIT = 200
"""The newest requests a person's list shows."""


def landing(who: Viewer) -> str:
    """The page `/` opens for `who`."""
    if who.may_approve:
        return "/inbox"
    if who.may_kill:
        return "/kill"
    if who.may_audit:
        return "/runs"
    return "/my-requests"


@router.get("/")
async def home(who: Who) -> Response:
    return RedirectResponse(landing(who), status_code=303)


@dataclass(frozen=True)
class Asked:
    """One of the person's requests, with when it was asked and how it ended."""

    request: PendingApproval
    asked_at: str
    decided_by: str
    decided_at: str
    comment: str


def _asked(console: ConsoleState, person: str) -> list[Asked]:
    mine = [p for p in console.approvals.list(None) if p.requested_by == person]
    rows: list[Asked] = []
    events_of: dict[str, list[tuple[str, int | None, str, str, str]]] = {}
    for p in mine:
        if p.workflow_id not in events_of:
            events_of[p.workflow_id] = [
                (e.kind, e.step, e.recorded_at, e.actor, str(e.payload.get("comment") or ""))
                for e in console.ledger.events(p.workflow_id)
                if e.run_id == p.run_id and e.kind in ("approval.requested", "approval.decided")
            ]
        asked_at = decided_by = decided_at = comment = ""
        for kind, step, at, actor, said in events_of[p.workflow_id]:
            if step != p.step:
                continue
            if kind == "approval.requested" and not asked_at:
                asked_at = at
            elif kind == "approval.decided" and p.status is not ApprovalStatus.PENDING:
                decided_by, decided_at, comment = actor, at, said
        rows.append(Asked(p, asked_at, decided_by, decided_at, comment))
    open_ = sorted(
        (r for r in rows if r.request.status is ApprovalStatus.PENDING),
        key=lambda r: urgency(r.request),
    )
    closed = sorted(
        (r for r in rows if r.request.status is not ApprovalStatus.PENDING),
        key=lambda r: r.decided_at or r.asked_at,
        reverse=True,
    )
    return (open_ + closed)[:LIMIT]


@router.get("/my-requests", response_class=HTMLResponse)
async def my_requests(request: Request, who: Who) -> Response:
    rows = await run_in_threadpool(_asked, state(request), who.person)
    return render(request, "mine.html", who, rows=rows, now=datetime.now(UTC))
