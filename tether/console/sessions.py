"""Console sessions kept on the server, and sign-in throttling.

A session cookie is signed, but a signature alone cannot be taken back: a copied cookie
would outlive its logout. So every signed-in session also has a row here, and a cookie
counts only while its row is open:

- signing out closes the row (`revoke`); the old cookie then opens nothing;
- a changed credential closes every session opened with the old one: the row keeps a
  fingerprint of the credential the person signed in with, and a session whose
  fingerprint no longer matches `console_users` is closed on its next request;
- rows expire with the cookie (`console_session_seconds`).

The row is keyed by the SHA-256 of the session id, so reading the table gives nobody a
cookie. Throttling counts failed sign-ins per account (known or not, so a lock-out says
nothing about who exists) and per client address over a sliding window; while either
count is at its limit, sign-in is refused without checking the password.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, Float, Integer, String, delete, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from tether.core.db import Base, create_tables


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def fingerprint(credential: str) -> str:
    """What a session row keeps of the credential it was opened with."""
    return _digest("credential:" + credential)


class ConsoleSessionRow(Base):
    __tablename__ = "console_sessions"

    sid_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    person: Mapped[str] = mapped_column(String(255), index=True)
    credential: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    closed_at: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    closed_why: Mapped[str] = mapped_column(String(64), default="")


class LoginFailureRow(Base):
    __tablename__ = "console_login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(300), index=True)
    at: Mapped[float] = mapped_column(Float, index=True)


def _now() -> float:
    return datetime.now(UTC).timestamp()


class SessionStore:
    """Open, check and close console sessions (see the module)."""

    def __init__(self, engine: Engine, max_age_seconds: int) -> None:
        self.engine = engine
        self.max_age = max_age_seconds
        create_tables(engine)

    def open(self, sid: str, person: str, credential: str) -> None:
        now = _now()
        with Session(self.engine) as db, db.begin():
            db.add(
                ConsoleSessionRow(
                    sid_digest=_digest(sid),
                    person=person,
                    credential=fingerprint(credential),
                    opened_at=now,
                    expires_at=now + self.max_age,
                )
            )
            # Expired rows are of no use to anyone: drop them as new ones come.
            db.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at < now))

    def is_open(self, sid: str, person: str, credential: str) -> bool:
        """Whether `sid` is an open session of `person`, opened with `credential`; a
        session whose credential changed since is closed here."""
        with Session(self.engine) as db, db.begin():
            row = db.get(ConsoleSessionRow, _digest(sid))
            if row is None or row.person != person or row.closed_at is not None:
                return False
            if row.expires_at < _now():
                return False
            if row.credential != fingerprint(credential):
                row.closed_at, row.closed_why = _now(), "credential changed"
                return False
            return True

    def close(self, sid: str, why: str = "signed out") -> None:
        with Session(self.engine) as db, db.begin():
            db.execute(
                update(ConsoleSessionRow)
                .where(ConsoleSessionRow.sid_digest == _digest(sid))
                .where(ConsoleSessionRow.closed_at.is_(None))
                .values(closed_at=_now(), closed_why=why)
            )

    def close_all(self, person: str, why: str) -> int:
        """Close every open session of `person`; how many were open."""
        with Session(self.engine) as db, db.begin():
            done = db.execute(
                update(ConsoleSessionRow)
                .where(ConsoleSessionRow.person == person)
                .where(ConsoleSessionRow.closed_at.is_(None))
                .values(closed_at=_now(), closed_why=why)
            )
            return int(getattr(done, "rowcount", 0) or 0)


@dataclass(frozen=True)
class Limits:
    per_account: int
    per_address: int
    window_seconds: int


class LoginThrottle:
    """Failed sign-ins per account and per address over a sliding window."""

    def __init__(self, engine: Engine, limits: Limits) -> None:
        self.engine = engine
        self.limits = limits
        create_tables(engine)

    @staticmethod
    def _keys(person: str, address: str) -> tuple[str, str]:
        return "account:" + person.strip().lower()[:250], "address:" + address[:250]

    def wait_seconds(self, person: str, address: str) -> int:
        """0 when a sign-in may be tried now, else the seconds until it may."""
        account, addr = self._keys(person, address)
        since = _now() - self.limits.window_seconds
        waits = [0]
        with Session(self.engine) as db:
            for key, limit in ((account, self.limits.per_account), (addr, self.limits.per_address)):
                count, oldest = db.execute(
                    select(func.count(), func.min(LoginFailureRow.at))
                    .where(LoginFailureRow.key == key)
                    .where(LoginFailureRow.at >= since)
                ).one()
                if count >= limit and oldest is not None:
                    # The window slides: the oldest counted failure leaves it first.
                    left = oldest + self.limits.window_seconds - _now()
                    waits.append(max(1, int(left + 0.999)))
        return max(waits)

    def failed(self, person: str, address: str) -> None:
        now = _now()
        with Session(self.engine) as db, db.begin():
            db.add_all([LoginFailureRow(key=key, at=now) for key in self._keys(person, address)])
            cutoff = now - self.limits.window_seconds
            db.execute(delete(LoginFailureRow).where(LoginFailureRow.at < cutoff))

    def succeeded(self, person: str) -> None:
        """A right password clears the account's count (the address's stays)."""
        account, _ = self._keys(person, "")
        with Session(self.engine) as db, db.begin():
            db.execute(delete(LoginFailureRow).where(LoginFailureRow.key == account))


def human_wait(seconds: int) -> str:
    """'about 4 minutes' / '30 seconds'."""
    if seconds < 90:
        return f"{seconds} seconds"
    return f"about {round(timedelta(seconds=seconds).total_seconds() / 60)} minutes"
