"""The console's remote codec endpoint: the Temporal UI shows sealed payloads in clear to
people cleared for confidential content.

`POST /codec/decode` and `POST /codec/encode` take and answer `{"payloads": [...]}`, each
payload in protobuf JSON (`metadata` values and `data` base64), as the Temporal UI's
"remote codec endpoint" sends them. Contract:

- Only a signed-in person (the console's session cookie, which a browser sends when the UI
  lies on the same site and "include cross-origin credentials" is on; or
  `Authorization: Bearer <token>` of a `token-sha256:` entry of `console_users`) who holds
  a role listed in `console_content_roles["confidential"]`: 401 without a person, 403
  without the role, as JSON.
- A browser call from another origin is served only from `console_codec_origins` (CORS,
  with credentials); a preflight from any other origin, and a call carrying one, is
  refused with 403 and no CORS headers, so the browser shows the caller nothing.
- 404 when `payload_codec` is off; 400 for a body that is not payloads; 422 when a
  payload does not open (its key id is unknown: the message names it).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from starlette.concurrency import run_in_threadpool
from temporalio.api.common.v1 import Payloads

from tether.console.app import SignInRequired, state, viewer
from tether.console.auth import TOKEN_PREFIX, Session, check_credential
from tether.errors import CodecError
from tether.runtime.codec import SealingCodec, payload_codec

router = APIRouter()
OPERATIONS = ("encode", "decode")
CLEARED_CLASS = "confidential"
"""The data class whose cleared roles may read payloads through the codec."""


def _cors(request: Request) -> tuple[bool, dict[str, str]]:
    """(whether the caller's origin may call, the CORS headers to answer it with)."""
    origin = request.headers.get("origin")
    if origin is None:  # not a cross-origin browser call (curl, the console itself)
        return True, {}
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin == own:
        return True, {}
    if origin not in state(request).settings.console_codec_origins:
        return False, {}
    return True, {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@router.options("/codec/{operation}")
async def preflight(operation: str, request: Request) -> Response:
    allowed, headers = _cors(request)
    if operation not in OPERATIONS or not allowed or not headers:
        return _error(403, f"origin {request.headers.get('origin')!r} may not call the codec")
    return Response(
        status_code=204,
        headers={
            **headers,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "content-type, x-namespace, authorization",
            "Access-Control-Max-Age": "600",
        },
    )


async def _person(request: Request) -> str | None:
    """The person of the bearer token, else of the session; None when nobody is."""
    console = state(request)
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        token = auth[7:].strip()
        for person, credential in console.settings.console_users.items():
            if credential.startswith(TOKEN_PREFIX) and check_credential(credential, token):
                return person
        return None
    try:
        return (await viewer(request)).person
    except SignInRequired:
        return None


def _codec(request: Request) -> SealingCodec | None:
    """The console's codec (claim checks read from its ledger), built on first use."""
    app_state = request.app.state
    if not hasattr(app_state, "payload_codec"):
        console = state(request)
        app_state.payload_codec = payload_codec(console.settings, console.ledger)
    codec: SealingCodec | None = app_state.payload_codec
    return codec


@router.post("/codec/{operation}")
async def run_codec(operation: str, request: Request) -> Response:
    allowed, headers = _cors(request)
    if not allowed:
        return _error(403, f"origin {request.headers.get('origin')!r} may not call the codec")
    if operation not in OPERATIONS:
        return _error(404, f"no codec operation {operation!r}; use encode or decode", headers)
    person = await _person(request)
    if person is None:
        return _error(401, "sign in to the console first, or send a bearer token", headers)
    console = state(request)
    who = await run_in_threadpool(console.viewer, person, Session.new(person))
    cleared = console.settings.console_content_roles.get(CLEARED_CLASS, [])
    if not any(role in cleared for role in who.roles):
        return _error(403, f"{person!r} holds no role cleared for {CLEARED_CLASS} content", headers)
    codec = _codec(request)
    if codec is None:
        return _error(404, "payload sealing is off (payload_codec); nothing to decode", headers)
    try:
        body: Any = await request.json()
        payloads = json_format.ParseDict(body, Payloads(), ignore_unknown_fields=True)
    except (ValueError, json_format.ParseError) as exc:
        return _error(400, f"the body is not {{'payloads': [...]}}: {exc}", headers)
    try:
        if operation == "decode":
            done = await codec.decode(payloads.payloads)
        else:
            done = await codec.encode(payloads.payloads)
    except CodecError as exc:
        return _error(422, str(exc), headers)
    answer = {"payloads": [json_format.MessageToDict(p) for p in done]}
    return JSONResponse(answer, headers=headers)
