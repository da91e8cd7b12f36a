"""The ledger: an append-only, hash-linked table of everything that happened.

Contract:
- `append` is idempotent by `LedgerEvent.idempotency_key`: appending the same key again
  returns the event already stored and adds nothing, so a retried activity never
  duplicates a record.
- Appends are serialised by a lock on the single `ledger_head` row (SQLite: the database
  write lock taken by BEGIN IMMEDIATE), so many workers may append at once and the chain
  stays linear: event `seq` n links to event n-1 by `prev_hash`.
- `hash` = SHA-256 over the canonical JSON of every field but `hash` itself, seq included,
  so an edited, removed or reordered row breaks verification at that row.
- Content goes to the content-addressed store before (PostgreSQL, one event) or with
  (otherwise) the event that names it, so no stored event refers to missing content.
- PostgreSQL: each append is one autocommitted statement on a pooled connection of the
  appending thread, so the head lock is held for the server-side append and its commit only,
  never across a network round trip, and threads append side by side. SQLite: threads
  appending at once share one transaction (group commit), as SQLite has one writer.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

from pydantic import BaseModel, JsonValue
from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from tether.core.db import Base, create_tables, make_engine
from tether.errors import LedgerError
from tether.verification import pg_append
from tether.verification.canonical import HASHED, canonical_event, canonical_row
from tether.verification.events import (
    GENESIS,
    LedgerEvent,
    RecordedEvent,
    canonical_json,
    digest,
)
from tether.verification.query import EventQuery, iso_utc


class EventRow(Base):
    __tablename__ = "ledger_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idempotency_key: Mapped[str] = mapped_column(String(512), unique=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    workflow_id: Mapped[str] = mapped_column(String(255), index=True)
    run_id: Mapped[str] = mapped_column(String(64))
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    agent: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(255))
    resource: Mapped[str] = mapped_column(String(1024))
    tier: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(255))
    policy_version: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[str] = mapped_column(String(40))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class BlobRow(Base):
    """Content-addressed store: canonical JSON of a value, keyed by its digest."""

    __tablename__ = "ledger_blobs"

    digest: Mapped[str] = mapped_column(String(71), primary_key=True)
    content: Mapped[str] = mapped_column(Text)


class HeadRow(Base):
    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    """How many events the chain holds; the last one's hash is the chain head."""


EVENTS: Table = EventRow.__table__  # type: ignore[assignment]
HEAD: Table = HeadRow.__table__  # type: ignore[assignment]
BLOBS: Table = BlobRow.__table__  # type: ignore[assignment]


def event_hash(fields: Mapping[str, Any]) -> str:
    """Hash of an event's fields (every field but `hash` itself)."""
    return hashlib.sha256(canonical_event(fields).encode()).hexdigest()


def _row_fields(row: EventRow) -> dict[str, JsonValue]:
    return {
        "seq": row.seq,
        "idempotency_key": row.idempotency_key,
        "kind": row.kind,
        "workflow_id": row.workflow_id,
        "run_id": row.run_id,
        "step": row.step,
        "agent": row.agent,
        "action": row.action,
        "resource": row.resource,
        "tier": row.tier,
        "rule": row.rule,
        "policy_version": row.policy_version,
        "actor": row.actor,
        "outcome": row.outcome,
        "payload": row.payload,
        "recorded_at": row.recorded_at,
        "prev_hash": row.prev_hash,
    }


def _event_from(fields: dict[str, Any]) -> RecordedEvent:
    return RecordedEvent.model_validate({**fields, "payload": json.loads(fields["payload"])})


def _to_event(row: EventRow) -> RecordedEvent:
    fields = _row_fields(row)
    fields["payload"] = json.loads(row.payload)
    fields["hash"] = row.hash
    return RecordedEvent.model_validate(fields)


class VerifyReport(BaseModel):
    """The result of walking the chain."""

    ok: bool
    events: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str = ""


_EVENT_COLUMNS = ("seq", *pg_append.COLUMNS, "prev_hash", "hash")
_SQLITE_INSERT = (
    f"INSERT INTO ledger_events ({', '.join(_EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _EVENT_COLUMNS)}) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING seq"
)


class _Pending:
    """One queued append, completed by whichever thread writes its batch."""

    def __init__(self, event: LedgerEvent, content: list[JsonValue]) -> None:
        self.event = event
        self.content = content
        self.done = threading.Event()
        self.result: RecordedEvent | None = None
        self.error: Exception | None = None


class _AlreadyStored(Exception):
    """Control flow inside `_write`: some keys were appended before; never escapes."""

    def __init__(self, events: dict[str, RecordedEvent]) -> None:
        super().__init__(f"{len(events)} event(s) stored before")
        self.events = events


class Ledger:
    """Append and read hash-linked events."""

    def __init__(self, engine: Engine, on_append: Callable[[float], None] | None = None) -> None:
        """`on_append`, when given, is told each append's latency in seconds (the worker
        passes its telemetry's histogram; the ledger itself knows no telemetry)."""
        self.engine = engine
        self.on_append = on_append
        self._mutex = threading.Lock()
        self._writer = threading.Lock()
        self._queue: list[_Pending] = []
        # Built once so SQLAlchemy's compiled cache serves every append.
        self._insert_blobs = self._insert(BLOBS).on_conflict_do_nothing(index_elements=["digest"])
        self._pg = engine.dialect.name == "postgresql"
        self._pg_call = pg_append.call(engine.get_execution_options())
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

        def setup(conn: Connection) -> None:
            conn.execute(
                self._insert(HEAD).values(id=1, seq=0).on_conflict_do_nothing(index_elements=["id"])
            )
            if self._pg:
                pg_append.install(conn)

        create_tables(engine, setup)

    @classmethod
    def from_url(cls, url: str) -> Ledger:
        return cls(make_engine(url))

    def _insert(self, table: Table) -> Any:
        """INSERT that can skip conflicting rows, in this database's dialect."""
        return (pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert)(table)

    def append(self, event: LedgerEvent, content: Sequence[JsonValue] = ()) -> RecordedEvent:
        """Append `event` once (see `_append`), timed for `on_append` when it is set."""
        if self.on_append is None:
            return self._append(event, content)
        start = time.perf_counter()
        try:
            return self._append(event, content)
        finally:
            self.on_append(time.perf_counter() - start)

    def _append(self, event: LedgerEvent, content: Sequence[JsonValue]) -> RecordedEvent:
        """Append `event` once; a repeated idempotency key returns the stored event.

        `content` (prompts, outputs, tool results) goes to the content-addressed store,
        keyed by `digest(value)`, before the event (PostgreSQL) or in its transaction
        (SQLite); the event carries only digests. On PostgreSQL each appending thread
        takes a connection of the engine's pool (which the worker's other stores share:
        15 at most with tether.db's settings) and appends there, autocommitted; the
        server's head lock orders them.
        On SQLite, threads appending at once through one Ledger share a transaction
        (group commit): one of them writes everything queued, in arrival order, and all
        return together. (Group commit on PostgreSQL measured 0.55-0.69 times raw inserts
        with four threads, against 0.90-0.96 times appending side by side: bench/ledger.py.)
        """
        item = _Pending(event, list(content))
        if self._pg:
            self._write([item])
            if item.error is not None:
                raise item.error
            assert item.result is not None
            return item.result
        with self._mutex:
            self._queue.append(item)
        while not item.done.is_set():
            if self._writer.acquire(blocking=False):
                try:
                    with self._mutex:
                        batch, self._queue = self._queue, []
                    if batch:
                        self._write(batch)
                finally:
                    self._writer.release()
            else:
                item.done.wait(0.002)
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def _write(self, batch: list[_Pending]) -> None:
        firsts: dict[str, _Pending] = {}
        for item in batch:
            firsts.setdefault(item.event.idempotency_key, item)
        known: dict[str, RecordedEvent] = {}
        try:
            while len(known) < len(firsts):
                todo = [i for k, i in firsts.items() if k not in known]
                try:
                    known.update(self._write_new(todo))
                except _AlreadyStored as stored:  # rolled back; write the rest again
                    known.update(stored.events)
        except Exception as exc:  # every waiting caller sees the failure
            for item in batch:
                item.error = exc
                item.done.set()
            return
        for item in batch:
            item.result = known[item.event.idempotency_key]
            item.done.set()

    def _write_new(self, items: list[_Pending]) -> dict[str, RecordedEvent]:
        """One transaction: allocate seqs under the head lock, link, insert, or roll back."""
        if self._pg:
            return self._write_new_pg(items)
        n = len(items)
        with self.engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE takes the write lock
            # The DB-API cursor directly: SQLite runs in process, so statement overhead is
            # most of an append's cost besides the commit.
            cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cur.execute("UPDATE ledger_head SET seq = seq + ? WHERE id = 1 RETURNING seq", (n,))
            last = cur.fetchone()[0]
            cur.execute("SELECT hash FROM ledger_events WHERE seq = ?", (last - n,))
            found = cur.fetchone()
            if found is None and last - n > 0:
                raise LedgerError(
                    f"ledger entry {last - n} (the last one) is missing: the ledger was "
                    "tampered with; run 'tether audit verify' before appending"
                )
            prev = found[0] if found else GENESIS
            now = datetime.now(UTC).isoformat(timespec="microseconds")
            rows: list[dict[str, Any]] = []
            stored: dict[str, RecordedEvent] = {}
            for offset, item in enumerate(items):
                fields: dict[str, Any] = {
                    **item.event.model_dump(exclude={"payload"}),
                    "payload": canonical_json(item.event.payload),
                    "seq": last - n + 1 + offset,
                    "prev_hash": prev,
                    "recorded_at": now,
                }
                fields["hash"] = prev = event_hash(fields)
                cur.execute(_SQLITE_INSERT, [fields[c] for c in _EVENT_COLUMNS])
                if cur.fetchone() is None:  # appended before
                    key = item.event.idempotency_key
                    stored[key] = self._stored(conn, key)
                rows.append(fields)
            if stored:
                raise _AlreadyStored(stored)  # rolls back: the seqs must stay contiguous
            blobs = {digest(v): canonical_json(v) for item in items for v in item.content}
            if blobs:
                cur.executemany(
                    "INSERT INTO ledger_blobs (digest, content) VALUES (?, ?) "
                    "ON CONFLICT (digest) DO NOTHING",
                    list(blobs.items()),
                )
        return {str(r["idempotency_key"]): _event_from(r) for r in rows}

    def _stored(self, conn: Connection, key: str) -> RecordedEvent:
        """The event stored under `key`, checked against its own hash: a repeated append
        never returns (and so never vouches for) a row whose content does not hash."""
        row = conn.execute(select(EVENTS).where(EVENTS.c.idempotency_key == key)).one()
        fields = dict(row._mapping)
        if event_hash(fields) != fields["hash"]:
            raise LedgerError(
                f"the stored event {key!r} (seq {fields['seq']}) does not match its hash: it "
                "was altered, or a worker hashed it differently; run 'tether audit verify'"
            )
        return _event_from(fields)

    def _write_new_pg(self, items: list[_Pending]) -> dict[str, RecordedEvent]:
        """PostgreSQL: one `tether_append` call per event, each autocommitted on its own
        (`append` passes one event), content first."""
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        contents = {digest(v): canonical_json(v) for item in items for v in item.content}
        blobs = [{"digest": k, "content": v} for k, v in contents.items()]
        with self._autocommit.connect() as conn:
            if blobs:  # content first: an event never names content that is not there
                conn.execute(self._insert_blobs, blobs)
            return self._append_pg(conn, items, now)

    def _append_pg(
        self, conn: Connection, items: list[_Pending], now: str
    ) -> dict[str, RecordedEvent]:
        results: dict[str, RecordedEvent] = {}
        # The DB-API cursor directly, as for SQLite: the call is one statement, and
        # SQLAlchemy's per-statement work would be a large share of an append's client time.
        with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
            for item in items:
                results[item.event.idempotency_key] = self._call_pg(conn, cursor, item, now)
        return results

    def _call_pg(self, conn: Connection, cursor: Any, item: _Pending, now: str) -> RecordedEvent:
        """One `tether_append` call; its event, new or stored before."""
        fields: dict[str, Any] = {
            **item.event.model_dump(exclude={"payload"}),
            "payload": canonical_json(item.event.payload),
            "recorded_at": now,
        }
        params = {
            **{c: fields[c] for c in pg_append.COLUMNS},
            **pg_append.split_canonical(fields),
        }
        cursor.execute(self._pg_call, params)
        seq, prev, linked, new = cursor.fetchone()
        key = item.event.idempotency_key
        if not new:
            return self._stored(conn, key)
        fields.update(seq=seq, prev_hash=prev, hash=linked)
        if event_hash(fields) != linked:  # the server must hash what we would
            raise LedgerError(
                f"the server hashed event {key!r} (seq {seq}) differently from this "
                "worker; 'tether audit verify' will name the row. Check that workers "
                "and the database function run the same Tether version"
            )
        return _event_from(fields)

    def events(self, workflow_id: str | None = None) -> list[RecordedEvent]:
        stmt = select(EventRow).order_by(EventRow.seq)
        if workflow_id is not None:
            stmt = stmt.where(EventRow.workflow_id == workflow_id)
        with Session(self.engine) as session:
            return [_to_event(r) for r in session.execute(stmt).scalars()]

    def search(self, query: EventQuery) -> list[RecordedEvent]:
        """Events matching every filter of `query`, oldest first, the newest `limit` of them."""
        stmt = select(EventRow)
        for field in ("agent", "action", "tier", "outcome", "kind", "workflow_id"):
            value = getattr(query, field)
            if value is not None:
                stmt = stmt.where(getattr(EventRow, field) == value)
        if query.since:
            stmt = stmt.where(EventRow.recorded_at >= iso_utc(query.since, "since"))
        if query.until:
            stmt = stmt.where(EventRow.recorded_at < iso_utc(query.until, "until"))
        stmt = stmt.order_by(EventRow.seq.desc()).limit(query.limit)
        with Session(self.engine) as session:
            found = [_to_event(r) for r in session.execute(stmt).scalars()]
        return found[::-1]

    def get(self, idempotency_key: str) -> RecordedEvent | None:
        """The event stored under `idempotency_key`, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(EVENTS).where(EVENTS.c.idempotency_key == idempotency_key)
            ).one_or_none()
        return None if row is None else _event_from(dict(row._mapping))

    def distinct_agents_and_actions(self) -> tuple[list[str], list[str]]:
        """Every agent and every action the ledger names (for pick-lists)."""
        with Session(self.engine) as session:
            agents = session.execute(select(EventRow.agent).distinct()).scalars().all()
            actions = session.execute(select(EventRow.action).distinct()).scalars().all()
        return sorted(a for a in agents if a), sorted(a for a in actions if a)

    def events_of_kind(self, kind: str) -> list[RecordedEvent]:
        stmt = select(EventRow).where(EventRow.kind == kind).order_by(EventRow.seq)
        with Session(self.engine) as session:
            return [_to_event(r) for r in session.execute(stmt).scalars()]

    def blob(self, key: str) -> JsonValue:
        """The content stored under `key`; KeyError when absent. Verified on the way out."""
        with Session(self.engine) as session:
            row = session.get(BlobRow, key)
        if row is None:
            raise KeyError(key)
        value: JsonValue = json.loads(row.content)
        if digest(value) != key:
            raise ValueError(f"stored content {key!r} does not match its digest: it was altered")
        return value

    def put_content(self, value: JsonValue) -> str:
        """Store `value` in the content-addressed store on its own (a claim-checked Temporal
        payload, which no event names) and return its digest; idempotent by the digest."""
        key = digest(value)
        with self.engine.begin() as conn:
            conn.execute(self._insert_blobs, [{"digest": key, "content": canonical_json(value)}])
        return key

    def hashes(self, limit: int | None = None) -> list[str]:
        """Event hashes in chain order (the Merkle tree's leaves), the first `limit` only."""
        stmt = select(EventRow.hash).order_by(EventRow.seq).limit(limit)
        with Session(self.engine) as session:
            return list(session.execute(stmt).scalars())

    @contextmanager
    def _snapshot(self) -> Iterator[tuple[Iterator[tuple[Any, ...]], Callable[[], int | None]]]:
        """The chain's (HASHED..., hash) tuples in order, streamed, and a function giving the
        head's seq, both read in one snapshot of the database: events appended meanwhile
        are in neither, so they never look like a cut tail.

        Read through the DB-API cursor (on PostgreSQL a server-side one, 5,000 rows a
        fetch, in a REPEATABLE READ transaction; on SQLite a deferred read transaction,
        which takes no write lock): verification touches every row, and SQLAlchemy's Row
        objects were a third of its time."""
        options = self.engine.get_execution_options()
        columns = ", ".join(f'"{name}"' for name in (*HASHED, "hash"))
        events = pg_append.qualified("ledger_events", options)
        head_table = pg_append.qualified("ledger_head", options)
        with self.engine.connect() as conn:
            if self._pg:
                conn.execution_options(isolation_level="REPEATABLE READ")
            raw: Any = conn.connection.driver_connection
            cursor = raw.cursor(name="tether_verify") if self._pg else raw.cursor()

            def rows() -> Iterator[tuple[Any, ...]]:
                cursor.execute(f"SELECT {columns} FROM {events} ORDER BY seq")
                while batch := cursor.fetchmany(5000):
                    yield from batch

            def head() -> int | None:
                found = raw.execute(f"SELECT seq FROM {head_table} WHERE id = 1").fetchone()
                return None if found is None else int(found[0])

            try:
                if not self._pg:
                    raw.execute("BEGIN")  # deferred: a snapshot for the reads below
                yield rows(), head
            finally:
                cursor.close()
                if not self._pg and raw.in_transaction:  # SQLite may have rolled back itself
                    raw.rollback()

    def verify(self) -> VerifyReport:
        """Walk the chain from the start; name the first entry that does not hold."""
        with self._snapshot() as (rows, head_seq):
            return self._walk(rows, head_seq)

    def _walk(
        self, rows: Iterator[tuple[Any, ...]], head_seq: Callable[[], int | None]
    ) -> VerifyReport:
        expected_seq, prev, count = 1, GENESIS, 0
        i_seq, i_prev, i_kind, i_key = (
            HASHED.index("seq"),
            HASHED.index("prev_hash"),
            HASHED.index("kind"),
            HASHED.index("idempotency_key"),
        )
        for row in rows:
            seq, problem, bad = row[i_seq], "", 0
            if seq != expected_seq:
                problem = (
                    f"entry {expected_seq} is missing (the next entry found is {seq}): "
                    "a row was removed"
                )
                bad = expected_seq
            elif row[i_prev] != prev:
                problem = (
                    f"entry {seq} does not link to entry {seq - 1}: rows were removed or reordered"
                )
                bad = seq
            elif sha256(canonical_row(row).encode()).hexdigest() != row[-1]:
                problem = (
                    f"entry {seq} ({row[i_kind]}, {row[i_key]!r}) was altered: "
                    "its hash does not match its content"
                )
                bad = seq
            if problem:
                return VerifyReport(
                    ok=False, events=count, head_hash=prev, first_bad_seq=bad, problem=problem
                )
            prev, expected_seq, count = row[-1], expected_seq + 1, count + 1
        head = head_seq()
        if head is not None and head != count:
            return VerifyReport(
                ok=False,
                events=count,
                head_hash=prev,
                first_bad_seq=min(head, count) + 1,
                problem=(
                    f"the ledger head records {head} entries but the chain has {count}: "
                    "entries were removed from the end or the head was rewritten"
                ),
            )
        return VerifyReport(ok=True, events=count, head_hash=prev)
