"""The console's application: state, sign-in, CSRF, security headers, error pages.

`create_app(settings)` builds the FastAPI app `tether console` serves. Pages are rendered
on the server (Jinja2, autoescaped) and work without JavaScript; `static/console.js` only
counts deadlines down and, on pages that wait for something, updates marked regions in
place or offers a reload (it never reloads by itself nor moves the focus).

Thin by design: approvals go through `tether.approvals.decide_request`, flags through
`tether.review.flag_review`, kill switches through `governance.kill` and
`tether.kill.halt_pending`, audits through `verification` — the functions the CLI calls.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import Client

from tether.console.auth import (
    ProxyAuth,
    Session,
    SessionCodec,
    csrf_ok,
    hash_password,
)
from tether.console.details import why_not
from tether.console.oidc import OidcSignIn
from tether.console.sessions import Limits, LoginThrottle, SessionStore
from tether.core.config import Settings
from tether.core.db import make_engine
from tether.governance.approvals import ApprovalStatus
from tether.governance.feed import FeedStore
from tether.governance.kill import KillSwitches
from tether.governance.names import identity_key
from tether.governance.policy import PolicyEngine
from tether.governance.reload import configured_engine
from tether.governance.store import ApprovalStore
from tether.runtime.app import App, load_app
from tether.verification.ledger import Ledger

HERE = Path(__file__).resolve().parent
POLICY_TTL = 2.0
"""Seconds a loaded policy is reused for role checks (workers poll as often)."""


class SignInRequired(Exception):
    pass


class Forbidden(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Viewer:
    """The signed-in person of one request, with what the policy lets them do."""

    person: str
    session: Session
    roles: list[str] = field(default_factory=list)
    may_kill: bool = False
    may_audit: bool = False
    may_approve: bool = False
    """Holds a role some policy rule asks to approve (the inbox is their page)."""


class ConsoleState:
    """Everything the pages share: settings, stores, the policy, the Temporal client."""

    def __init__(
        self, settings: Settings, client: Client | None = None, app: App | None = None
    ) -> None:
        self.settings = settings
        self._app = app
        self.ledger = Ledger(make_engine(settings.database_url))
        self.approvals = ApprovalStore(self.ledger.engine)
        self.feed = FeedStore(self.ledger.engine)
        self.kills = KillSwitches(self.ledger.engine, self.ledger)
        self.sessions = SessionCodec(settings)
        self.open_sessions = SessionStore(self.ledger.engine, settings.console_session_seconds)
        self.throttle = LoginThrottle(
            self.ledger.engine,
            Limits(
                per_account=settings.console_login_attempts,
                per_address=settings.console_login_address_attempts,
                window_seconds=settings.console_login_window_seconds,
            ),
        )
        # An unknown person's password is checked against this, so that a sign-in
        # takes as long whether or not the person exists.
        self.decoy_credential = hash_password(secrets.token_urlsafe(24))
        self.oidc = (
            OidcSignIn(settings, self.sessions.secret) if settings.console_oidc_issuer else None
        )
        self.proxy = ProxyAuth(settings)
        self._client = client
        self._client_lock = asyncio.Lock()
        self._policy: tuple[float, PolicyEngine] | None = None

    async def client(self) -> Client:
        from tether.runtime.client import connect

        async with self._client_lock:
            if self._client is None:
                self._client = await connect(self.settings)
            return self._client

    def app(self) -> App:
        """The app whose runs the console replays (imported on first use)."""
        if self._app is None:
            self._app = load_app(self.settings)
        return self._app

    def policy(self) -> PolicyEngine:
        now = time.monotonic()
        if self._policy is None or now - self._policy[0] > POLICY_TTL:
            self._policy = (now, configured_engine(self.settings))
        return self._policy[1]

    def is_open(self, session: Session) -> bool:
        """Whether `session` is a person's signed-in session that is still open: signed is
        not enough (the person may have signed out, or their credential changed since, or
        been removed from `console_users`)."""
        if session.via == "oidc":
            credential = self.oidc.credential if self.oidc is not None else None
        else:
            credential = self.settings.console_users.get(session.person)
        if not session.person or credential is None:
            return False
        return self.open_sessions.is_open(session.sid, session.person, credential)

    def viewer(self, person: str, session: Session) -> Viewer:
        person = identity_key(person)  # `User:Bob` signs in as `user:bob` (governance.names)
        engine = self.policy()
        roles = sorted({role for p, role in engine.document.approver_roles if p == person})
        auditors = self.settings.console_auditor_roles
        approving = {r.approver_role for r in engine.document.rules if r.approver_role}
        return Viewer(
            person=person,
            session=session,
            roles=roles,
            may_kill=any(r in roles for r in self.settings.console_kill_roles),
            may_audit=not auditors or any(r in roles for r in auditors),
            may_approve=any(r in approving for r in roles),
        )

    def waiting_for(self, person: str) -> int:
        """How many open requests `person` may decide now (the count in the nav)."""
        now = datetime.now(UTC)
        pending = self.approvals.list(ApprovalStatus.PENDING)
        return sum(1 for p in pending if not why_not(p, person, now))


def state(request: Request) -> ConsoleState:
    found: ConsoleState = request.app.state.console
    return found


async def viewer(request: Request) -> Viewer:
    """The signed-in person; SignInRequired when there is none."""
    console = state(request)
    session = console.sessions.load(request)
    proxied = console.proxy.person(request)
    if proxied == "":
        raise SignInRequired
    if proxied is not None:
        if session is None or session.person != proxied:
            session = Session.new(proxied)
            request.state.issue_session = session
        return await run_in_threadpool(console.viewer, proxied, session)
    if session is None or not session.person:
        raise SignInRequired
    if not await run_in_threadpool(console.is_open, session):
        raise SignInRequired
    return await run_in_threadpool(console.viewer, session.person, session)


async def form_of(request: Request, who: Viewer | None = None) -> dict[str, str]:
    """The posted form, once its CSRF token matched the session's; Forbidden otherwise."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    session = who.session if who is not None else state(request).sessions.load(request)
    if not csrf_ok(session, fields.get("csrf", "")):
        raise Forbidden(
            "this form's security token is missing or stale; reload the page and try again"
        )
    return fields


def render(
    request: Request,
    name: str,
    who: Viewer | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.templates
    session = who.session if who is not None else getattr(request.state, "issue_session", None)
    if session is None:
        session = state(request).sessions.load(request)
    return templates.TemplateResponse(
        request,
        name,
        {
            "viewer": who,
            "csrf": session.csrf if session else "",
            "sso": state(request).oidc is not None,
            # While any kill switch is engaged every signed-in page says so.
            "engaged": state(request).kills.status() if who is not None else [],
            "waiting": state(request).waiting_for(who.person) if who is not None else 0,
            "here": request.url.path,
            **context,
        },
        status_code=status_code,
    )


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["until"] = _until
    return Jinja2Templates(env=env)


def _until(deadline: datetime, now: datetime) -> str:
    """Time left as people read it: '2d 3h', '4h 10m', '9m 05s', 'expired'."""
    seconds = int((deadline - now).total_seconds())
    if seconds <= 0:
        return "expired"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs:02d}s"


PLAIN = {
    404: (
        "Page not found",
        "There is no page at this address. It may have been mistyped or may no longer "
        "exist; use the navigation to find what you were looking for.",
    ),
    405: (
        "Not available this way",
        "This address does not take that kind of request: forms post to it, or it is a "
        "page to open. Open it from the navigation, or send the form again from its page.",
    ),
}
"""Plain words for the HTTP errors routing raises (its own phrases are terse)."""

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def create_app(
    settings: Settings, client: Client | None = None, tether_app: App | None = None
) -> FastAPI:
    """The console for `settings`; `client` is the Temporal client to use (else connect);
    `tether_app` the app whose runs it replays (else the settings' `[app]`)."""
    from tether.console import (
        approve,
        audit,
        codec,
        feed,
        kill,
        links,
        policy_impact,
        requester,
        signin,
    )

    console = ConsoleState(settings, client, tether_app)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        console.ledger.engine.dispose()

    app = FastAPI(
        title="Tether console", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.console = console
    app.state.templates = _templates()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        issued = getattr(request.state, "issue_session", None)
        if isinstance(issued, Session):
            console.sessions.store(response, issued)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, _exc: SignInRequired) -> Response:
        if request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        return render(
            request, "error.html", None, 401, title="Sign in first", message="Sign in first."
        )

    async def signed_in(request: Request) -> Viewer | None:
        """The person, when signed in: an error page keeps their navigation."""
        with suppress(SignInRequired):
            return await viewer(request)
        return None

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        who = await signed_in(request)
        return render(
            request, "error.html", who, 403, title="Not allowed", message=exc.message, code=403
        )

    @app.exception_handler(RequestValidationError)
    async def unreadable(request: Request, exc: RequestValidationError) -> Response:
        # An address edited by hand (?days=abc): a page that says what to fix, not JSON.
        parts = []
        for error in exc.errors():
            where = ".".join(str(x) for x in error.get("loc", ())[1:]) or "value"
            parts.append(f"{where}={error.get('input')!r} ({error.get('msg', 'invalid')})")
        message = (
            f"This page cannot read {'; '.join(parts)}. Correct the address, or open the "
            "page from the navigation."
        )
        return render(
            request,
            "error.html",
            await signed_in(request),
            422,
            title="Cannot read the address",
            message=message,
            code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        title, message = PLAIN.get(
            exc.status_code, (HTTPStatus(exc.status_code).phrase, str(exc.detail))
        )
        response = render(
            request,
            "error.html",
            await signed_in(request),
            exc.status_code,
            title=title,
            message=message,
            code=exc.status_code,
        )
        for name, value in (exc.headers or {}).items():  # e.g. Allow on a 405
            response.headers[name] = value
        return response

    app.include_router(signin.router)
    app.include_router(approve.router)
    app.include_router(feed.router)
    app.include_router(kill.router)
    app.include_router(audit.router)
    app.include_router(requester.router)
    app.include_router(links.router)
    app.include_router(codec.router)
    app.include_router(policy_impact.router)
    return app
