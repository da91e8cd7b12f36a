"""Database engines for the ledger and the approvals store (SQLite default, PostgreSQL).

SQLite is opened in WAL mode and every transaction starts `BEGIN IMMEDIATE`, so writers
from many worker processes queue on the database lock instead of failing mid-way.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase

from tether.errors import DatabaseError


def shown_url(url: str) -> str:
    """`url` fit to print: its password, if any, replaced by `***`."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL SQLAlchemy reads: mask what looks like a password
        return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


def make_engine(url: str) -> Engine:
    """Create an engine for `url`, creating the SQLite file's folder when needed.

    A URL SQLAlchemy cannot read, or whose dialect or driver is not installed, raises
    DatabaseError naming it (its password hidden)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(
            f"database URL {shown_url(url)!r} is not a SQLAlchemy URL; use e.g. "
            "'sqlite:///.tether/tether.db' or 'postgresql+psycopg://user@host/db'"
        ) from None
    try:
        return _engine(url, parsed)
    except NoSuchModuleError:
        problem = f"names no database SQLAlchemy knows ({parsed.drivername!r})"
    except ImportError as exc:
        problem = f"needs a driver that is not installed ({exc})"
    raise DatabaseError(
        f"database URL {shown_url(url)!r} {problem}; use 'postgresql+psycopg://…' "
        "(psycopg ships with Tether) or 'sqlite:///…'"
    )


def _engine(url: str, parsed: URL) -> Engine:
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let the "begin" hook issue BEGIN
            dbapi_conn.execute("PRAGMA busy_timeout=60000")
            _wal(dbapi_conn)

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _wal(conn: sqlite3.Connection, tries: int = 200) -> None:
    """Switch `conn`'s database to WAL. Switching needs a moment with no other connection
    mid-transaction and SQLite answers "locked" at once rather than waiting (its busy
    timeout does not cover it), so a few workers opening one file together try again."""
    for attempt in range(tries):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.01)


class Base(DeclarativeBase):
    """The declarative base every Tether table shares, so one `create_all` makes them all."""


_SETUP_LOCK = 0x7E7E_0001
"""PostgreSQL advisory lock id that serialises table creation between processes."""


def create_tables(engine: Engine, then: Callable[[Connection], object] | None = None) -> None:
    """Create every Tether table that is missing, once, even with many workers starting.

    One transaction under a lock (SQLite: the write lock of BEGIN IMMEDIATE; PostgreSQL:
    an advisory lock) covers the existence checks, the CREATEs and `then`, so two
    processes starting on an empty database cannot both try to create the same table.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SETUP_LOCK})
        Base.metadata.create_all(conn)
        if then is not None:
            then(conn)
