"""A small OpenID Connect provider for the console's sign-in tests, served over real HTTP.

It implements what the authorization code flow with PKCE needs: discovery, an
authorization endpoint that signs in one configured person at once (or refuses, when
told to), a token endpoint that checks the client, the redirect URI, the single-use code
and the S256 code verifier, and a JWKS with the RS256 key the ID tokens are signed with.
`tamper` lets a test make the provider misbehave (a foreign audience, another nonce).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.conftest import free_port
from tests.console_helpers import serve_asgi

CLIENT_ID = "tether-console"
CLIENT_SECRET = "console-client-secret"


@dataclass
class Provider:
    issuer: str = ""
    username: str = "alice"
    refuse: bool = False
    tamper: dict[str, Any] = field(default_factory=dict)
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, {"kid": "k1"}))
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    verified: list[str] = field(default_factory=list)
    """The code verifiers the token endpoint accepted."""


def _app(provider: Provider) -> FastAPI:
    app = FastAPI()

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        return {
            "issuer": provider.issuer,
            "authorization_endpoint": f"{provider.issuer}/authorize",
            "token_endpoint": f"{provider.issuer}/token",
            "jwks_uri": f"{provider.issuer}/jwks",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    @app.get("/jwks")
    async def jwks() -> dict[str, Any]:
        return {"keys": [provider.key.as_dict(private=False)]}

    @app.get("/authorize")
    async def authorize(request: Request) -> RedirectResponse:
        q = request.query_params
        back = q["redirect_uri"]
        if provider.refuse:
            args = {"error": "access_denied", "error_description": "the person said no"}
            return RedirectResponse(f"{back}?{urlencode({**args, 'state': q['state']})}", 302)
        assert q["response_type"] == "code" and q["client_id"] == CLIENT_ID
        assert q["code_challenge_method"] == "S256" and q["code_challenge"]
        code = secrets.token_urlsafe(16)
        provider.codes[code] = {
            "challenge": q["code_challenge"],
            "redirect_uri": back,
            "nonce": q.get("nonce", ""),
        }
        return RedirectResponse(f"{back}?{urlencode({'code': code, 'state': q['state']})}", 302)

    @app.post("/token")
    async def token(
        grant_type: str = Form(),
        code: str = Form(),
        redirect_uri: str = Form(),
        client_id: str = Form(),
        client_secret: str = Form(""),
        code_verifier: str = Form(""),
    ) -> JSONResponse:
        issued = provider.codes.pop(code, None)  # single use
        if issued is None or grant_type != "authorization_code":
            return JSONResponse({"error": "invalid_grant"}, 400)
        if client_id != CLIENT_ID or client_secret != CLIENT_SECRET:
            return JSONResponse({"error": "invalid_client"}, 401)
        if redirect_uri != issued["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant"}, 400)
        digest = hashlib.sha256(code_verifier.encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != issued["challenge"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, 400)
        provider.verified.append(code_verifier)
        now = int(time.time())
        claims = {
            "iss": provider.issuer,
            "aud": CLIENT_ID,
            "sub": f"sub-{provider.username}",
            "preferred_username": provider.username,
            "email": f"{provider.username}@example.com",
            "nonce": issued["nonce"],
            "iat": now,
            "exp": now + 300,
            **provider.tamper,
        }
        id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, provider.key)
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "id_token": id_token,
            }
        )

    return app


@contextmanager
def oidc_provider() -> Iterator[Provider]:
    """Serve a `Provider` on a free local port (own thread); yield it."""
    port = free_port()
    provider = Provider(issuer=f"http://127.0.0.1:{port}")
    with serve_asgi(_app(provider), "OIDC provider", port):
        yield provider
