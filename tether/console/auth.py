"""Who is signed in: credentials, signed session cookies, CSRF tokens, a trusted proxy.

Contract:
- Credentials come from `Settings.console_users`: an argon2 hash (`hash_password`, the
  `tether console hash-password` command) or `token-sha256:<hex>`, the SHA-256 of a
  per-user token (tokens are long random strings, so one fast hash is enough). Both are
  compared in constant time.
- A session is a cookie signed with `console_session_secret` (itsdangerous), HttpOnly,
  SameSite=Lax, `Secure` when `console_secure_cookies`; it expires after
  `console_session_seconds`. It holds the person, a random session id and the CSRF token.
- Every state-changing request (POST) must carry the session's CSRF token in the form
  field `csrf`; sign-in itself is protected by the token of the anonymous session the
  sign-in page hands out, and signing in issues a fresh session (no fixation).
- Behind a reverse proxy that authenticates (OIDC in front), the header
  `console_proxy_header` names the person, believed only from `console_trusted_proxies`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from tether.core.config import Settings
from tether.errors import TetherError

COOKIE = "tether_session"
TOKEN_PREFIX = "token-sha256:"
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of `password`, for `console_users`."""
    if len(password) < 8:
        raise ValueError("a console password needs at least 8 characters")
    return _hasher.hash(password)


def token_credential(token: str) -> str:
    """The `console_users` entry of a per-user token."""
    return TOKEN_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def check_credential(stored: str, offered: str) -> bool:
    """Whether `offered` (password or token) matches the stored credential."""
    if stored.startswith(TOKEN_PREFIX):
        return hmac.compare_digest(token_credential(offered), stored)
    try:
        return _hasher.verify(stored, offered)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Session:
    person: str
    """Empty for an anonymous session (the sign-in page's)."""
    sid: str
    csrf: str
    via: str = ""
    """How the person signed in: "" with a password or token, "oidc" through the provider."""

    @classmethod
    def new(cls, person: str = "", via: str = "") -> Session:
        return cls(
            person=person, sid=secrets.token_urlsafe(16), csrf=secrets.token_urlsafe(24), via=via
        )


class SessionCodec:
    """Reads and writes the signed session cookie."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.console_session_secret.get_secret_value() or secrets.token_hex(32)
        self._serializer = URLSafeTimedSerializer(secret, salt="tether-console-session")
        self._max_age = settings.console_session_seconds
        self._secure = settings.console_secure_cookies

    def load(self, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=self._max_age)
        except BadSignature:  # also expired (SignatureExpired is a BadSignature)
            return None
        if not isinstance(data, dict):
            return None
        person, sid, csrf, via = data.get("p"), data.get("s"), data.get("c"), data.get("v", "")
        if not (
            isinstance(person, str)
            and isinstance(sid, str)
            and isinstance(csrf, str)
            and isinstance(via, str)
        ):
            return None
        return Session(person=person, sid=sid, csrf=csrf, via=via)

    def store(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self._serializer.dumps(
                {"p": session.person, "s": session.sid, "c": session.csrf, "v": session.via}
            ),
            max_age=self._max_age,
            httponly=True,
            samesite="lax",
            secure=self._secure,
            path="/",
        )

    @property
    def secret(self) -> str:
        """The key sessions are signed with (the OIDC flow cookie is signed with it too)."""
        return str(self._serializer.secret_key.decode())

    def clear(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")


def csrf_ok(session: Session | None, offered: str) -> bool:
    return session is not None and bool(offered) and hmac.compare_digest(session.csrf, offered)


class ProxyAuth:
    """The person a trusted reverse proxy names, or None."""

    def __init__(self, settings: Settings) -> None:
        self.header = settings.console_proxy_header.strip()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in settings.console_trusted_proxies:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise TetherError(
                    f"console_trusted_proxies holds {entry!r}, which is not an address or "
                    "network; write e.g. '10.0.0.5' or '10.0.0.0/24'"
                ) from None

    def person(self, request: Request) -> str | None:
        """None: no trusted proxy speaks here; "": it names someone who may not sign in."""
        if not self.header or request.client is None:
            return None
        value = request.headers.get(self.header, "").strip()
        if not value:
            return None
        try:
            address = ipaddress.ip_address(request.client.host)
        except ValueError:
            return None
        if not any(address in net for net in self.networks):
            return None
        person = value if ":" in value else f"user:{value}"
        if person.startswith("agent:"):
            return ""  # named, and refused: agents never sign in
        return person
