"""The notify feed: actions taken under `notify`, and flagging one inside its review window.

Each row reads like the inbox: the step's title (the tool's template over its recorded
arguments, e.g. "Pay $4,500.00 to initech for INV-1002"), its key fields, the run, the
rule and the time left in its review window. A flag is two posts, like the kill switch:
the first (a non-blank reason, checked on the server) shows what the compensation will
undo and flags nothing; *Flag and undo* on that page (`confirm=1`) flags, through
`runtime.review.flag_review`, which applies the same rule as the review window and
records a refusal.
"""

from __future__ import annotations

import json
from contextlib import suppress
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, JsonValue
from starlette.concurrency import run_in_threadpool

from tether.console.app import ConsoleState, Forbidden, Viewer, form_of, render, state, viewer
from tether.errors import ReviewError, TetherError
from tether.governance.feed import Notification
from tether.governance.presentation import key_values
from tether.governance.reviews import ReviewFlag, ReviewWindow, check_flag, review_id
from tether.runtime.review import flag_review

router = APIRouter()
Who = Annotated[Viewer, Depends(viewer)]


class FeedRow(BaseModel):
    """One action taken under notify, as the feed and the flag's confirmation show it."""

    note: Notification
    window: ReviewWindow | None = None
    problem: str = ""
    """Why the signed-in person may not flag it ("" when they may)."""
    title: str
    key_fields: list[tuple[str, str]] = []


def _args(console: ConsoleState, note: Notification) -> dict[str, JsonValue]:
    """The step's arguments as its policy decision recorded them ({} when not JSON)."""
    for e in console.ledger.events(note.workflow_id):
        if e.kind == "decision" and e.run_id == note.run_id and e.step == note.step:
            try:
                parsed = json.loads(str(e.payload.get("args_summary") or ""))
            except json.JSONDecodeError:
                return {}
            return parsed if isinstance(parsed, dict) else {}
    return {}


def _row(console: ConsoleState, note: Notification, person: str, now: datetime) -> FeedRow:
    from tether.activities.tools import REGISTRY

    window, problem = None, "no review window"
    if note.review_id:
        try:
            window = console.feed.get_review(note.review_id)
            check_flag(window, ReviewFlag(reviewer=person), now)
            problem = ""
        except ReviewError as exc:
            problem = str(exc)
    title, fields = f"{note.action} on {note.resource}", []
    spec = REGISTRY.get(window.tool) if window is not None else None
    if spec is None and window is not None:
        with suppress(TetherError):  # no app: the row reads as action on resource
            console.app()  # importing the app's tool modules registers them
        spec = REGISTRY.get(window.tool)
    if spec is not None:
        args = _args(console, note)
        title = spec.title_of(args) or title
        fields = key_values(spec.key_fields, args)
    return FeedRow(note=note, window=window, problem=problem, title=title, key_fields=fields)


@router.get("/feed", response_class=HTMLResponse)
async def feed(request: Request, who: Who) -> Response:
    console = state(request)

    def load() -> list[FeedRow]:
        now = datetime.now(UTC)
        return [_row(console, n, who.person, now) for n in console.feed.list_feed(100)]

    rows = await run_in_threadpool(load)
    return render(request, "feed.html", who, rows=rows, now=datetime.now(UTC))


def _done(request: Request, who: Viewer, code: int, message: str) -> Response:
    return render(request, "done.html", who, code, title="Flag", message=message, back="/feed")


@router.post("/feed/flag", response_class=HTMLResponse)
async def flag(request: Request, who: Who) -> Response:
    fields = await form_of(request, who)
    console = state(request)
    workflow_id = fields.get("workflow_id", "")
    try:
        step = int(fields.get("step", ""))
    except ValueError:
        raise Forbidden(f"step {fields.get('step')!r} is not a number") from None
    reason = fields.get("reason", "").strip()
    if not reason:
        return _done(
            request,
            who,
            400,
            "A flag needs a reason: it is recorded with the compensation it starts.",
        )
    if fields.get("confirm") != "1":
        return await _confirm(request, who, workflow_id, step, reason)
    try:
        client = await console.client()
        outcome = await flag_review(
            client,
            console.feed,
            console.ledger,
            workflow_id,
            step,
            reviewer=who.person,
            reason=reason,
        )
    except (ReviewError, TetherError) as exc:
        return _done(request, who, 403, f"Refused: {exc}")
    return _done(request, who, 200, f"Flagged: {outcome.status.value}. {outcome.detail}")


async def _confirm(
    request: Request, who: Viewer, workflow_id: str, step: int, reason: str
) -> Response:
    """What flagging this step will undo; nothing is flagged yet."""
    console = state(request)

    def load() -> FeedRow | None:
        wanted = review_id(workflow_id, step)
        found = [n for n in console.feed.list_feed(1000, workflow_id) if n.review_id == wanted]
        return _row(console, found[0], who.person, datetime.now(UTC)) if found else None

    row = await run_in_threadpool(load)
    if row is None or row.window is None:
        return _done(request, who, 404, f"Step {step} of run {workflow_id!r} has no review window.")
    if row.problem:
        return _done(request, who, 403, f"Refused: {row.problem}")
    return render(request, "feed_confirm.html", who, row=row, reason=reason, now=datetime.now(UTC))
