"""Following an approval message's link: `GET /r/<token>` (`governance.links`).

A link opens its request's page for the person it was sent to, once, after sign-in; it
never decides anything (deciding is the request page's signed form). In order:

1. a token this console did not sign, or cannot read: a plain page says so (400);
2. a token past the request's deadline: "expired" (410);
3. nobody signed in: to `/login?next=/r/<token>`, back here after sign-in;
4. someone else signed in: "sent to another person" (403), and the link stays unused;
5. the token used before: "already used" (410); else it is marked used (atomically),
   recorded in the ledger (`approval.link_followed`, by whom, under the request's step)
   and the person lands on `/requests/<id>`, which shows the request or its decided state.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from tether.activities.governance import approval_event
from tether.console.app import ConsoleState, Viewer, render, state, viewer
from tether.errors import ApprovalError
from tether.governance.links import LinkClaim, LinkProblem, LinkRefused, LinkStore, verify_link

router = APIRouter()

STATUS = {
    LinkProblem.FORGED: 400,
    LinkProblem.EXPIRED: 410,
    LinkProblem.USED: 410,
    LinkProblem.OTHER_PERSON: 403,
}
TITLES = {
    LinkProblem.FORGED: "This link is not valid",
    LinkProblem.EXPIRED: "This link has expired",
    LinkProblem.USED: "This link was already used",
    LinkProblem.OTHER_PERSON: "This link is for someone else",
}


def links(request: Request) -> LinkStore:
    """The used-links table of this console (made on first use)."""
    found = getattr(request.app.state, "links", None)
    if not isinstance(found, LinkStore):
        found = LinkStore(state(request).ledger.engine)
        request.app.state.links = found
    return found


@router.get("/r/{token}", response_class=HTMLResponse)
async def follow(request: Request, token: str) -> Response:
    console = state(request)
    secret = console.settings.approval_link_secret.get_secret_value()
    try:
        claim = verify_link(secret, token)
    except LinkRefused as exc:
        return _refused(request, None, exc)
    who = await viewer(request)  # SignInRequired: to the sign-in page, then back here
    try:
        if who.person != claim.person:
            raise LinkRefused(
                LinkProblem.OTHER_PERSON,
                f"this link was sent to another approver, and you are signed in as "
                f"{who.person}; open the request from your inbox, or sign out and follow "
                "the link as the person it was sent to",
            )
        await run_in_threadpool(links(request).consume, token, claim)
    except LinkRefused as exc:
        return _refused(request, who, exc)
    await run_in_threadpool(_record, console, token, claim)
    return RedirectResponse(f"/requests/{quote(claim.request_id, safe='')}", status_code=303)


def _record(console: ConsoleState, token: str, claim: LinkClaim) -> None:
    """`approval.link_followed` under the request's step: who opened it from a message."""
    try:
        pending = console.approvals.get(claim.request_id)
    except ApprovalError:  # a request this console's store never held: nothing to file under
        return
    used = hashlib.sha256(token.encode()).hexdigest()[:16]
    console.ledger.append(
        approval_event(
            pending,
            "approval.link_followed",
            "opened",
            claim.person,
            {"approver_role": pending.approver_role},
            key_suffix=f".{used}",
        )
    )


def _refused(request: Request, who: Viewer | None, exc: LinkRefused) -> Response:
    return render(
        request,
        "link.html",
        who,
        STATUS[exc.problem],
        title=TITLES[exc.problem],
        message=f"{str(exc)[0].upper()}{str(exc)[1:]}.",
        problem=exc.problem.value,
    )
