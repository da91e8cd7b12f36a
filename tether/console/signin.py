"""Sign-in and sign-out: passwords and tokens (throttled), single sign-on through an OIDC
provider, and sign-out that closes the session on the server (`sessions.SessionStore`).

Every sign-in issues a fresh session (no fixation); the sign-in form is protected by the
CSRF token of the anonymous session the sign-in page hands out.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tether.console.app import form_of, render, state
from tether.console.auth import Session, check_credential
from tether.console.oidc import FLOW_COOKIE, FLOW_SECONDS, OidcError
from tether.console.sessions import human_wait

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/") -> Response:
    console = state(request)
    session = console.sessions.load(request)
    if session is not None and await run_in_threadpool(console.is_open, session):
        return RedirectResponse(_local(next), status_code=303)
    if session is None or session.person:
        request.state.issue_session = Session.new()
    return render(request, "login.html", None, next=_local(next), error="")


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    console = state(request)
    fields = await form_of(request)
    person = fields.get("person", "").strip()
    secret = fields.get("password", "")
    address = request.client.host if request.client else ""
    wait = await run_in_threadpool(console.throttle.wait_seconds, person, address)
    if wait:
        request.state.issue_session = Session.new()
        return render(
            request,
            "login.html",
            None,
            429,
            next=_local(fields.get("next", "/")),
            error=f"Too many failed sign-ins. Try again in {human_wait(wait)}.",
        )
    stored = console.settings.console_users.get(person)
    # Unknown people are checked against a decoy, so both answers take as long.
    checked = await run_in_threadpool(check_credential, stored or console.decoy_credential, secret)
    if stored is None or not checked:
        await run_in_threadpool(console.throttle.failed, person, address)
        request.state.issue_session = Session.new()
        return render(
            request,
            "login.html",
            None,
            401,
            next=_local(fields.get("next", "/")),
            error="Unknown person or wrong password.",
        )
    await run_in_threadpool(console.throttle.succeeded, person)
    session = Session.new(person)
    await run_in_threadpool(console.open_sessions.open, session.sid, person, stored)
    response = RedirectResponse(_local(fields.get("next", "/")), status_code=303)
    console.sessions.store(response, session)
    return response


@router.get("/login/oidc")
async def oidc_start(request: Request, next: str = "/") -> Response:
    console = state(request)
    if console.oidc is None:
        raise StarletteHTTPException(404, "Single sign-on is not set up for this console.")
    callback = str(request.url_for("oidc_callback"))
    try:
        url, cookie = await console.oidc.start(callback, _local(next))
    except OidcError as exc:
        request.state.issue_session = Session.new()
        return render(request, "login.html", None, exc.status, next=_local(next), error=exc.message)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        FLOW_COOKIE,
        cookie,
        max_age=FLOW_SECONDS,
        httponly=True,
        samesite="lax",  # the provider's redirect back is a top-level GET: Lax sends it
        secure=console.settings.console_secure_cookies,
        path="/login/oidc",
    )
    return response


@router.get("/login/oidc/callback", name="oidc_callback")
async def oidc_callback(request: Request) -> Response:
    console = state(request)
    if console.oidc is None:
        raise StarletteHTTPException(404, "Single sign-on is not set up for this console.")
    try:
        person, next_page = await console.oidc.finish(
            str(request.url_for("oidc_callback")),
            request.cookies.get(FLOW_COOKIE),
            dict(request.query_params),
        )
    except OidcError as exc:
        request.state.issue_session = Session.new()
        failed = render(request, "login.html", None, exc.status, next="/", error=exc.message)
        failed.delete_cookie(FLOW_COOKIE, path="/login/oidc")
        return failed
    session = Session.new(person, via="oidc")
    await run_in_threadpool(
        console.open_sessions.open, session.sid, person, console.oidc.credential
    )
    response = RedirectResponse(_local(next_page), status_code=303)
    console.sessions.store(response, session)
    response.delete_cookie(FLOW_COOKIE, path="/login/oidc")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    console = state(request)
    await form_of(request)
    session = console.sessions.load(request)
    if session is not None and session.person:
        await run_in_threadpool(console.open_sessions.close, session.sid)
    response = RedirectResponse("/login", status_code=303)
    console.sessions.clear(response)
    return response


def _local(target: str) -> str:
    """Only same-site paths as redirect targets (no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
