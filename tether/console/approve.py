"""Approver pages: the inbox, a request, deciding it (the notify feed is `feed`).

A person's identity comes from the session only, never from a form field or the URL; the
workflow is the authority on every decision (`decide_request` sends the signed update and
the workflow records any refusal), and the console offers a request only to the people
`governance.approvals.check_approval` would accept.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import JsonValue
from starlette.concurrency import run_in_threadpool
from temporalio.service import RPCError

from tether.console.app import ConsoleState, Forbidden, Viewer, form_of, render, state, viewer
from tether.console.details import (
    age,
    argument_rows,
    cleared,
    edit_rows,
    edit_value,
    influences,
    model_content,
    policy_words,
    spend,
    tool_formats,
    urgency,
    why_not,
)
from tether.errors import ApprovalError, ConnectError, TetherError
from tether.governance.approvals import ApprovalStatus, PendingApproval
from tether.runtime.approvals import decide_request, signing_key
from tether.verification.events import LedgerEvent
from tether.verification.forensics import timeline

router = APIRouter()
Who = Annotated[Viewer, Depends(viewer)]


@router.get("/inbox", response_class=HTMLResponse)
async def inbox(request: Request, who: Who) -> Response:
    console = state(request)
    now = datetime.now(UTC)
    pending = await run_in_threadpool(console.approvals.list, ApprovalStatus.PENDING)
    mine = [p for p in pending if not why_not(p, who.person, now)]
    # Approvals towards a quorum live in the workflow until it closes: ask it.
    quorum = [p for p in mine if p.quorum > 1]
    live = {p.request_id: p for p in await asyncio.gather(*(_live(request, p) for p in quorum))}
    mine = [live.get(p.request_id, p) for p in mine]
    mine = sorted((p for p in mine if not why_not(p, who.person, now)), key=urgency)
    ages = {p.request_id: age(p.requested_at, now) for p in mine}
    return render(request, "inbox.html", who, requests=mine, now=now, ages=ages)


async def _live(request: Request, pending: PendingApproval) -> PendingApproval:
    """The workflow's own view of an open request (quorum so far), else the store's."""
    if pending.status is not ApprovalStatus.PENDING:
        return pending
    from tether.workflows.agent import AgentStatus

    try:
        client = await state(request).client()
        handle = client.get_workflow_handle(pending.workflow_id, run_id=pending.run_id)
        status = await handle.query("status", result_type=AgentStatus)
    except (RPCError, TetherError):
        return pending
    if status.pending is not None and status.pending.request_id == pending.request_id:
        live: PendingApproval = status.pending.model_copy(update={"status": pending.status})
        return live
    return pending


def _offered(pending: PendingApproval, person: str, now: datetime) -> tuple[bool, str]:
    """(may see the page, why they may not decide); seeing needs a say in the request."""
    problem = why_not(pending, person, now)
    involved = person in pending.approvers and person not in (pending.requested_by, pending.agent)
    return (not problem or involved), problem


@router.get("/requests/{request_id}", response_class=HTMLResponse)
async def request_page(request: Request, request_id: str, who: Who) -> Response:
    console = state(request)
    try:
        stored = await run_in_threadpool(console.approvals.get, request_id)
    except ApprovalError:
        return _not_offered(request, who, request_id)
    pending = await _live(request, stored)
    visible, problem = _offered(pending, who.person, datetime.now(UTC))
    if not visible:
        return _not_offered(request, who, request_id)
    result = ""
    if request.query_params.get("counted"):
        result = "Your approval counted; the quorum needs more approvers."
    elif request.query_params.get("again") and pending.status is not ApprovalStatus.PENDING:
        result = "Already decided: your decision was counted once."
    return await _request_view(request, who, pending, problem, result=result)


def _not_offered(request: Request, who: Viewer, request_id: str) -> Response:
    return render(
        request,
        "error.html",
        who,
        404,
        title="Not in your inbox",
        message=f"Request {request_id!r} is not waiting for your decision.",
    )


async def _request_view(
    request: Request,
    who: Viewer,
    pending: PendingApproval,
    problem: str,
    *,
    result: str = "",
    refused: str = "",
    status_code: int = 200,
    edits: dict[str, str] | None = None,
) -> Response:
    console = state(request)
    events = await run_in_threadpool(console.ledger.events, pending.workflow_id)
    events = [e for e in events if e.run_id == pending.run_id]
    decided = next((e for e in reversed(events) if _decides(e, pending)), None)
    if pending.status is ApprovalStatus.PENDING:
        decided = None
    edited = next(
        (e for e in events if e.step == pending.step and e.kind == "approval.edited"), None
    )
    roles, content_roles = who.roles, console.settings.console_content_roles
    content = await run_in_threadpool(
        model_content,
        events,
        pending.step,
        console.ledger.blob,
        lambda data_class: cleared(data_class, roles, content_roles),
    )
    return render(
        request,
        "request.html",
        who,
        status_code,
        p=pending,
        decided=decided,
        decided_comment=str(decided.payload.get("comment") or "") if decided else "",
        args=argument_rows(pending.args_summary),
        influences=influences(events, pending.step),
        content=content,
        why=policy_words(pending),
        edited=edited,
        changes=edit_rows(edited, await run_in_threadpool(tool_formats, pending.tool, console.app)),
        edits=edits or {},
        steps=list(zip(events, timeline(events), strict=True)),
        spend=spend(events),
        problem=problem,
        result=result,
        refused=refused,
        now=datetime.now(UTC),
    )


@router.post("/requests/{request_id}/decide", response_class=HTMLResponse)
async def decide(request: Request, request_id: str, who: Who) -> Response:
    fields = await form_of(request, who)
    console = state(request)
    verdict = fields.get("verdict", "")
    comment = fields.get("comment", "").strip()
    try:
        pending = await run_in_threadpool(console.approvals.get, request_id)
    except ApprovalError:
        return _not_offered(request, who, request_id)
    if verdict not in ("approve", "reject"):
        raise Forbidden(f"verdict {verdict!r} is neither 'approve' nor 'reject'")
    page = f"/requests/{quote(request_id, safe='')}"
    # This person's own decision posted again (a resubmitted form) counted once: answer
    # with the request's page and record no refusal. Anyone else's attempt goes on to
    # the workflow, which refuses and records it.
    if pending.status is not ApprovalStatus.PENDING:
        decided = await run_in_threadpool(_decided, console, pending)
        if decided is not None and who.person in _people(decided.actor):
            return RedirectResponse(f"{page}?again=1", status_code=303)
    elif verdict == "approve" and who.person in (await _live(request, pending)).approved_by:
        return RedirectResponse(f"{page}?counted=1", status_code=303)
    if verdict == "reject" and not comment:
        if not _offered(pending, who.person, datetime.now(UTC))[0]:
            return _not_offered(request, who, request_id)
        return await _request_view(
            request,
            who,
            pending,
            "",
            refused="A rejection needs a reason: the agent is told it.",
            status_code=400,
        )
    edits, bad = _edits(pending, fields) if verdict == "approve" else ({}, "")
    if bad:
        if not _offered(pending, who.person, datetime.now(UTC))[0]:
            return _not_offered(request, who, request_id)
        typed = {k.removeprefix("edit."): v for k, v in fields.items() if k.startswith("edit.")}
        return await _request_view(
            request, who, pending, "", refused=bad, status_code=400, edits=typed
        )
    try:
        client = await console.client()
        key = await run_in_threadpool(signing_key, console.settings)
        outcome = await decide_request(
            client,
            console.approvals,
            console.ledger,
            request_id,
            approver=who.person,
            approve=verdict == "approve",
            comment=comment,
            key=key,
            edits=edits or None,
        )
    except ConnectError as exc:
        return render(
            request, "error.html", who, 503, title="Temporal unreachable", message=str(exc)
        )
    except (ApprovalError, TetherError) as exc:
        # The workflow refused (and recorded) it; the refused may not see the request.
        return render(request, "error.html", who, 403, title="Decision refused", message=str(exc))
    for _ in range(60):  # the workflow closes the request (store, then ledger) right after
        if outcome.status is ApprovalStatus.PENDING:
            break
        latest = await run_in_threadpool(console.approvals.get, request_id)
        if latest.status is not ApprovalStatus.PENDING:
            recorded = await run_in_threadpool(_decided, console, latest)
            if recorded is not None:
                break
        await asyncio.sleep(0.05)
    # Post/redirect/get: reloading the page that follows never posts the decision again.
    counted = "?counted=1" if outcome.status is ApprovalStatus.PENDING else ""
    return RedirectResponse(page + counted, status_code=303)


def _edits(pending: PendingApproval, fields: dict[str, str]) -> tuple[dict[str, JsonValue], str]:
    """The arguments the approver changed (`edit.<name>` fields), typed like the originals;
    or what is wrong with them. Fields the tool does not mark editable are never read."""
    edits: dict[str, JsonValue] = {}
    for name in pending.editable:
        raw = fields.get(f"edit.{name}")
        if raw is None or name not in pending.args:
            continue
        original = pending.args[name]
        try:
            value = edit_value(raw, original)
        except ValueError:
            return {}, f"{name.replace('_', ' ')}: {raw!r} is not a valid value; correct it"
        if value != original:
            edits[name] = value
    return edits, ""


def _people(actor: str) -> list[str]:
    """The people a decided event names (a quorum's approvers are listed with commas)."""
    return [p.strip() for p in actor.split(",") if p.strip()]


def _decided(console: ConsoleState, pending: PendingApproval) -> LedgerEvent | None:
    """The ledger's record of how `pending` was decided (who, when, comment), if any."""
    found = [e for e in console.ledger.events(pending.workflow_id) if _decides(e, pending)]
    return found[-1] if found else None


def _decides(e: LedgerEvent, pending: PendingApproval) -> bool:
    """Whether `e` records how `pending` was decided (a step edited and asked anew holds
    two requests: each has its own decision)."""
    return (
        e.kind == "approval.decided"
        and (e.run_id, e.step) == (pending.run_id, pending.step)
        and e.payload.get("request_id", pending.request_id) == pending.request_id
    )
