"""The policy-impact page: a proposed policy's impact on the decisions the ledger recorded.

For operations staff (the kill-switch roles): paste a proposed policy (the page starts
from the one in force), pick a window, and see what it would change before anyone
pushes it, the report `tether policy impact` prints (verification.impact), beside the
proposed text. Nothing is pushed or written; the post carries the CSRF token because it
runs a whole-ledger analysis.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from tether.console.app import Forbidden, Viewer, form_of, render, state, viewer
from tether.errors import TetherError
from tether.governance.policy import PolicyEngine
from tether.verification.impact import ImpactReport, impact

router = APIRouter()
Who = Annotated[Viewer, Depends(viewer)]
WINDOWS = ("1d", "7d", "30d", "90d")


def _allowed(who: Viewer) -> None:
    if not who.may_kill:
        raise Forbidden(
            f"Policy impact is for operations staff. You are signed in as {who.person}, "
            "who holds no operations role; ask an operator to review the proposed policy."
        )


@router.get("/policy/impact", response_class=HTMLResponse)
async def impact_page(request: Request, who: Who) -> Response:
    _allowed(who)
    current = await run_in_threadpool(state(request).policy)
    return render(
        request,
        "policy_impact.html",
        who,
        current=current.version,
        proposed=current.policy_text,
        since="30d",
        windows=WINDOWS,
        report=None,
        error="",
    )


@router.post("/policy/impact", response_class=HTMLResponse)
async def impact_of_proposed(request: Request, who: Who) -> Response:
    fields = await form_of(request, who)
    _allowed(who)
    console = state(request)
    proposed = fields.get("policy", "")
    since = fields.get("since", "30d")
    current = await run_in_threadpool(console.policy)

    def analyse() -> ImpactReport:
        engine = PolicyEngine.from_texts(current.model_text, proposed, source="proposed policy")
        return impact(console.ledger, engine, since=since)

    report: ImpactReport | None = None
    error = ""
    try:
        report = await run_in_threadpool(analyse)
    except TetherError as exc:  # a proposed policy that does not load, a bad window
        error = str(exc)
    return render(
        request,
        "policy_impact.html",
        who,
        400 if error else 200,
        current=current.version,
        proposed=proposed,
        since=since,
        windows=WINDOWS,
        report=report,
        error=error,
    )
