"""Native OpenID Connect sign-in: the authorization code flow with PKCE (authlib).

    GET /login/oidc?next=/inbox   -> 303 to the provider's authorization endpoint
    GET /login/oidc/callback      <- the provider sends the person back with a code

Contract:
- The provider is found by discovery (`<console_oidc_issuer>/.well-known/openid-
  configuration`), read once per console process.
- The flow's state, nonce, PKCE verifier (S256) and the page to return to travel in a
  short-lived signed cookie (`tether_oidc`, ten minutes, HttpOnly, SameSite=Lax), never
  in the URL; the callback accepts a code only with the state it was sent with.
- The ID token must be signed by a key of the provider's JWKS with RS256 or ES256, name
  the configured issuer and this console as audience, carry the flow's nonce and be
  unexpired; its `console_oidc_claim` (default `email`) names the person, as
  `user:<value>`. Roles still come from the policy (`g2` rows), as for every person.
- Errors (the provider refused, a stale or foreign state, a failed code exchange, a bad
  token) end on the sign-in page with a plain message; nobody is signed in by them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from itsdangerous import BadSignature, URLSafeTimedSerializer
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from pydantic import BaseModel, ValidationError

from tether.core.config import Settings

FLOW_COOKIE = "tether_oidc"
FLOW_SECONDS = 600
ALGORITHMS = ["RS256", "ES256"]


class OidcError(Exception):
    """A sign-in through the provider that did not sign anybody in; `message` says why in
    words a person can act on."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Discovery(BaseModel):
    """The parts of the provider's discovery document the flow uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


@dataclass(frozen=True)
class Flow:
    """One sign-in under way: what the callback must see again."""

    state: str
    nonce: str
    verifier: str
    next: str


class OidcSignIn:
    """The console's OIDC client (see the module)."""

    def __init__(self, settings: Settings, secret: str) -> None:
        self.issuer = settings.console_oidc_issuer.rstrip("/")
        self.client_id = settings.console_oidc_client_id
        self.client_secret = settings.console_oidc_client_secret.get_secret_value()
        self.claim = settings.console_oidc_claim
        self.scope = settings.console_oidc_scopes
        self.secure = settings.console_secure_cookies
        self._flows = URLSafeTimedSerializer(secret, salt="tether-console-oidc")
        self._discovery: Discovery | None = None

    @property
    def credential(self) -> str:
        """What a session opened through the provider is bound to: a change of provider or
        client closes those sessions, as a changed password closes password sessions."""
        return f"oidc:{self.issuer}:{self.client_id}"

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self.client_secret or None,
            scope=self.scope,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_post" if self.client_secret else "none",
            timeout=10,
        )

    async def discovery(self) -> Discovery:
        if self._discovery is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            try:
                async with httpx.AsyncClient(timeout=10) as http:
                    answer = await http.get(url)
                    answer.raise_for_status()
                    found = Discovery.model_validate(answer.json())
            except (httpx.HTTPError, ValueError, ValidationError) as exc:
                raise OidcError(
                    f"The sign-in provider at {self.issuer} did not answer its discovery "
                    f"document ({type(exc).__name__}). Try again later, or sign in with "
                    "a password.",
                    502,
                ) from None
            if found.issuer.rstrip("/") != self.issuer:
                raise OidcError(
                    f"The sign-in provider names itself {found.issuer!r}, not {self.issuer!r}.",
                    502,
                )
            self._discovery = found
        return self._discovery

    async def start(self, redirect_uri: str, next_page: str) -> tuple[str, str]:
        """The provider's URL to send the person to, and the flow cookie to set."""
        found = await self.discovery()
        flow = Flow(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),
            next=next_page,
        )
        async with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                found.authorization_endpoint,
                state=flow.state,
                nonce=flow.nonce,
                code_verifier=flow.verifier,
            )
        cookie = self._flows.dumps(
            {"s": flow.state, "n": flow.nonce, "v": flow.verifier, "x": flow.next}
        )
        return str(url), cookie

    def flow_of(self, cookie: str | None) -> Flow:
        if not cookie:
            raise OidcError("This sign-in was not started here or took too long; sign in again.")
        try:
            data = self._flows.loads(cookie, max_age=FLOW_SECONDS)
        except BadSignature:
            raise OidcError(
                "This sign-in was not started here or took too long; sign in again."
            ) from None
        return Flow(state=data["s"], nonce=data["n"], verifier=data["v"], next=data["x"])

    async def finish(
        self, redirect_uri: str, cookie: str | None, params: dict[str, str]
    ) -> tuple[str, str]:
        """The person the provider signed in, and the page to go to; OidcError otherwise."""
        if "error" in params:
            said = params.get("error_description") or params["error"]
            raise OidcError(f"The sign-in provider did not sign you in: {said}.", 401)
        flow = self.flow_of(cookie)
        if not params.get("state") or not secrets.compare_digest(params["state"], flow.state):
            raise OidcError("This sign-in answer belongs to another sign-in; sign in again.")
        code = params.get("code", "")
        if not code:
            raise OidcError("The sign-in provider sent no code; sign in again.")
        found = await self.discovery()
        try:
            async with self._client(redirect_uri) as client:
                token: dict[str, Any] = await client.fetch_token(
                    found.token_endpoint, code=code, code_verifier=flow.verifier
                )
        except Exception as exc:  # authlib raises its own and httpx's errors here
            raise OidcError(
                f"The sign-in provider refused the code ({type(exc).__name__}: {exc}); "
                "sign in again.",
                401,
            ) from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("The sign-in provider sent no ID token; sign in again.", 401)
        return self._person(id_token, flow, await self._keys(found)), flow.next

    async def _keys(self, found: Discovery) -> KeySet:
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.get(found.jwks_uri)
                answer.raise_for_status()
                return KeySet.import_key_set(answer.json())
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            raise OidcError(
                f"The sign-in provider's keys could not be read ({type(exc).__name__}).", 502
            ) from None

    def _person(self, id_token: str, flow: Flow, keys: KeySet) -> str:
        try:
            token = jwt.decode(id_token, keys, algorithms=ALGORITHMS)
            jwt.JWTClaimsRegistry(
                now=int(time.time()),
                leeway=60,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.client_id},
                exp={"essential": True},
                nonce={"essential": True, "value": flow.nonce},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise OidcError(
                f"The sign-in provider's ID token was not accepted ({exc}); sign in again.",
                401,
            ) from None
        value = token.claims.get(self.claim)
        if (
            not isinstance(value, str)
            or not value.strip()
            or ":" in value
            or value != value.strip()
        ):
            raise OidcError(
                f"The ID token's {self.claim!r} claim ({value!r}) names nobody this console "
                "knows; ask the administrator to check console_oidc_claim.",
                401,
            )
        return f"user:{value}"
