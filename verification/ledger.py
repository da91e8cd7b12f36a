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
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Generator, Mapping, Sequence
from datetime import UTC, datetime
from json import encoder as _json_encoder
from typing import Any, Protocol

from pydantic import BaseModel, Field, JsonValue
from sqlalchemy import Engine, Integer, Row, String, Table, Text, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from tether.db import Base, create_tables, make_engine

GENESIS = "0" * 64


class LedgerEvent(BaseModel):
    """What a caller appends."""

    idempotency_key: str
    kind: str
    workflow_id: str = ""
    run_id: str = ""
    step: int | None = None
    agent: str = ""
    action: str = ""
    resource: str = ""
    tier: str = ""
    rule: str = ""
    policy_version: str = ""
    actor: str = ""
    outcome: str = ""
    payload: dict[str, JsonValue] = Field(default_factory=dict)


class RecordedEvent(LedgerEvent):
    """An event as stored, with its place in the chain."""

    seq: int
    recorded_at: str
    prev_hash: str
    hash: str


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


def canonical_json(value: JsonValue) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: JsonValue) -> str:
    """SHA-256 of the canonical JSON of `value`, as `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(canonical_json(value).encode()).hexdigest()


HASHED = (
    "action", "actor", "agent", "idempotency_key", "kind", "outcome", "payload",
    "policy_version", "prev_hash", "recorded_at", "resource", "rule", "run_id", "seq", "step",
    "tier", "workflow_id",
)  # fmt: skip
"""The fields an event's hash covers, in the sorted order of their canonical JSON."""
_INTS = {"seq", "step"}
_quote = _json_encoder.encode_basestring  # what json.dumps uses when ensure_ascii=False


def _hash_values(values: Sequence[Any]) -> str:
    """SHA-256 of the canonical JSON of HASHED -> values, built without a dict.

    Byte for byte what `canonical_json` gives for the same mapping (a test holds it to
    that), written out directly because verification hashes every row of the ledger.
    """
    parts = []
    for name, value in zip(HASHED, values, strict=True):
        if name in _INTS:
            rendered = "null" if value is None else str(int(value))
        else:
            rendered = _quote(value)
        parts.append(f'"{name}":{rendered}')
    return hashlib.sha256(("{" + ",".join(parts) + "}").encode()).hexdigest()


def event_hash(fields: Mapping[str, Any]) -> str:
    """Hash of an event's fields (every field but `hash` itself)."""
    return _hash_values([fields[name] for name in HASHED])


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


class EventQuery(BaseModel):
    """Filters for `Ledger.search`; every set field must match."""

    agent: str | None = None
    action: str | None = None
    tier: str | None = None
    outcome: str | None = None
    kind: str | None = None
    workflow_id: str | None = None
    since: str | None = None
    """ISO 8601 time, inclusive."""
    until: str | None = None
    """ISO 8601 time, exclusive."""
    limit: int = 200


def _iso(value: str, name: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"--{name} {value!r} is not an ISO 8601 time; write e.g. 2026-11-25 or "
            "2026-11-25T09:30:00+00:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class EventSource(Protocol):
    def events(self, workflow_id: str | None = None) -> list[RecordedEvent]: ...


class OfflineLedger:
    """Recorded events held in memory (from an evidence bundle), read like a ledger."""

    def __init__(self, events: Sequence[RecordedEvent]) -> None:
        self._events = list(events)

    def events(self, workflow_id: str | None = None) -> list[RecordedEvent]:
        return [e for e in self._events if workflow_id is None or e.workflow_id == workflow_id]


class VerifyReport(BaseModel):
    """The result of walking the chain."""

    ok: bool
    events: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str = ""


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

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._mutex = threading.Lock()
        self._writer = threading.Lock()
        self._queue: list[_Pending] = []
        # Built once so SQLAlchemy's compiled cache serves every append.
        self._insert_events = (
            self._insert(EVENTS)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(EVENTS.c.idempotency_key)
        )
        self._insert_blobs = self._insert(BLOBS).on_conflict_do_nothing(index_elements=["digest"])
        self._bump_head = (
            update(HEAD)
            .where(HEAD.c.id == 1)
            .values(seq=HEAD.c.seq + bindparam("n"))
            .returning(HEAD.c.seq)
        )
        self._hash_at = select(EVENTS.c.hash).where(EVENTS.c.seq == bindparam("seq"))
        create_tables(
            engine,
            lambda conn: conn.execute(
                self._insert(HEAD).values(id=1, seq=0).on_conflict_do_nothing(index_elements=["id"])
            ),
        )

    @classmethod
    def from_url(cls, url: str) -> Ledger:
        return cls(make_engine(url))

    def _insert(self, table: Table) -> Any:
        """INSERT that can skip conflicting rows, in this database's dialect."""
        return (pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert)(table)

    def append(self, event: LedgerEvent, content: Sequence[JsonValue] = ()) -> RecordedEvent:
        """Append `event` once; a repeated idempotency key returns the stored event.

        `content` (prompts, outputs, tool results) goes to the content-addressed store in
        the same transaction, keyed by `digest(value)`; the event carries only digests.
        Threads appending at once through one Ledger share a transaction (group commit):
        one of them writes everything queued, in arrival order, and all return together.
        """
        item = _Pending(event, list(content))
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
        n = len(items)
        with self.engine.begin() as conn:
            # Two statements, not one: under READ COMMITTED the read of the previous hash
            # needs a snapshot taken after the head lock was granted.
            last = conn.execute(self._bump_head, {"n": n}).scalar_one()
            prev = conn.execute(self._hash_at, {"seq": last - n}).scalar_one_or_none()
            prev = prev or GENESIS
            now = datetime.now(UTC).isoformat(timespec="microseconds")
            rows: list[dict[str, JsonValue]] = []
            for offset, item in enumerate(items):
                fields: dict[str, JsonValue] = {
                    **item.event.model_dump(exclude={"payload"}),
                    "payload": canonical_json(item.event.payload),
                    "seq": last - n + 1 + offset,
                    "prev_hash": prev,
                    "recorded_at": now,
                }
                fields["hash"] = prev = event_hash(fields)
                rows.append(fields)
            inserted = set(conn.execute(self._insert_events, rows).scalars())
            if len(inserted) < n:
                keys = [r["idempotency_key"] for r in rows if r["idempotency_key"] not in inserted]
                stored = conn.execute(select(EVENTS).where(EVENTS.c.idempotency_key.in_(keys)))
                raise _AlreadyStored(
                    {r.idempotency_key: _event_from(dict(r._mapping)) for r in stored}
                )
            blobs = {digest(v): canonical_json(v) for item in items for v in item.content}
            if blobs:
                conn.execute(
                    self._insert_blobs, [{"digest": k, "content": v} for k, v in blobs.items()]
                )
        return {str(r["idempotency_key"]): _event_from(r) for r in rows}

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
            stmt = stmt.where(EventRow.recorded_at >= _iso(query.since, "since"))
        if query.until:
            stmt = stmt.where(EventRow.recorded_at < _iso(query.until, "until"))
        stmt = stmt.order_by(EventRow.seq.desc()).limit(query.limit)
        with Session(self.engine) as session:
            found = [_to_event(r) for r in session.execute(stmt).scalars()]
        return found[::-1]

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

    def hashes(self, limit: int | None = None) -> list[str]:
        """Event hashes in chain order (the Merkle tree's leaves), the first `limit` only."""
        stmt = select(EventRow.hash).order_by(EventRow.seq).limit(limit)
        with Session(self.engine) as session:
            return list(session.execute(stmt).scalars())

    def _rows(self) -> Generator[Row[Any], None, None]:
        """(HASHED..., hash) tuples in chain order, streamed; the cursor closes when left early."""
        columns = [EVENTS.c[name] for name in HASHED] + [EVENTS.c.hash]
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=5000).execute(
                select(*columns).order_by(EVENTS.c.seq)
            )
            try:
                yield from result
            finally:
                result.close()

    def verify(self) -> VerifyReport:
        """Walk the chain from the start; name the first entry that does not hold."""
        expected_seq, prev, count = 1, GENESIS, 0
        rows = self._rows()
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
            elif _hash_values(row[:-1]) != row[-1]:
                problem = (
                    f"entry {seq} ({row[i_kind]}, {row[i_key]!r}) was altered: "
                    "its hash does not match its content"
                )
                bad = seq
            if problem:
                rows.close()
                return VerifyReport(
                    ok=False, events=count, head_hash=prev, first_bad_seq=bad, problem=problem
                )
            prev, expected_seq, count = row[-1], expected_seq + 1, count + 1
        with Session(self.engine) as session:
            head = session.get(HeadRow, 1)
        if head is not None and head.seq != count:
            return VerifyReport(
                ok=False,
                events=count,
                head_hash=prev,
                first_bad_seq=min(head.seq, count) + 1,
                problem=(
                    f"the ledger head records {head.seq} entries but the chain has {count}: "
                    "entries were removed from the end or the head was rewritten"
                ),
            )
        return VerifyReport(ok=True, events=count, head_hash=prev)
