"""Signed one-time links to an approval request: `https://<console>/r/<token>`.

A token names one request and one person (the approver it was sent to) and expires with
the request's deadline. It is `<payload>.<mac>`: the payload is base64url JSON
`{"r": request_id, "p": person, "e": expiry unix seconds, "n": nonce}`, the MAC the
base64url HMAC-SHA256 of the payload under `approval_link_secret`.

A link only *opens* the request page for its person once signed in: it never decides.
`LinkStore.consume` records a followed token (by its SHA-256) so it opens once; a second
use is refused. Pure apart from the `approval_links_used` table; no Temporal.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine, String
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from tether.core.db import Base, create_tables


class LinkClaim(BaseModel):
    """What a verified token says."""

    request_id: str
    person: str
    expires: datetime
    nonce: str


class LinkProblem(StrEnum):
    """Why a link does not open its request; the console shows each plainly."""

    FORGED = "forged"
    EXPIRED = "expired"
    USED = "used"
    OTHER_PERSON = "other-person"


class LinkRefused(Exception):
    """A link that does not open its request: `.problem` says why."""

    def __init__(self, problem: LinkProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())


def issue_link(secret: str, request_id: str, person: str, expires: datetime) -> str:
    """A token for `person` to open `request_id` until `expires`."""
    body = {
        "r": request_id,
        "p": person,
        "e": int(expires.timestamp()),
        "n": secrets.token_urlsafe(12),
    }
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_mac(secret, payload)}"


def verify_link(secret: str, token: str, now: datetime | None = None) -> LinkClaim:
    """The claim of a genuine, unexpired token; LinkRefused (FORGED, EXPIRED) otherwise."""
    payload, _, mac = token.partition(".")
    if not secret or not mac or not hmac.compare_digest(_mac(secret, payload), mac):
        raise LinkRefused(LinkProblem.FORGED, "this link was not issued by this console")
    try:
        body = json.loads(_unb64(payload))
        claim = LinkClaim(
            request_id=body["r"],
            person=body["p"],
            expires=datetime.fromtimestamp(int(body["e"]), UTC),
            nonce=body["n"],
        )
    except (ValueError, KeyError, TypeError, ValidationError):
        raise LinkRefused(LinkProblem.FORGED, "this link cannot be read") from None
    if (now or datetime.now(UTC)) >= claim.expires:
        raise LinkRefused(
            LinkProblem.EXPIRED,
            f"this link expired at {claim.expires:%Y-%m-%d %H:%M} UTC, with the request's deadline",
        )
    return claim


def link_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/r/{token}"


class UsedLinkRow(Base):
    __tablename__ = "approval_links_used"

    token_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    person: Mapped[str] = mapped_column(String(255))
    used_at: Mapped[str] = mapped_column(String(40))


class LinkStore:
    """The followed links: each token opens its request once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine)

    def consume(self, token: str, claim: LinkClaim) -> None:
        """Mark `token` used; LinkRefused(USED) when it already was (atomic: primary key)."""
        row = UsedLinkRow(
            token_digest=hashlib.sha256(token.encode()).hexdigest(),
            request_id=claim.request_id,
            person=claim.person,
            used_at=datetime.now(UTC).isoformat(),
        )
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
        except IntegrityError:
            raise LinkRefused(
                LinkProblem.USED,
                "this link was already used; each link opens its request once — open the "
                "request from your inbox",
            ) from None

    def used(self, token: str) -> bool:
        digest = hashlib.sha256(token.encode()).hexdigest()
        with Session(self.engine) as session:
            return session.get(UsedLinkRow, digest) is not None
