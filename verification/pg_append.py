"""PostgreSQL fast path of `Ledger.append`: one server-side call per event.

`tether_append` takes the head lock, returns the stored event for a key seen before, else
links the event to the previous hash, hashes it (SHA-256 in the server, over the same
canonical JSON Python builds: Python sends the text around the two values only the
server knows, `prev_hash` and `seq`), inserts it and moves the head. One round trip
instead of four; Python re-checks every hash it gets back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, text

from tether.verification.canonical import canonical_event

COLUMNS = (
    "idempotency_key", "kind", "workflow_id", "run_id", "step", "agent", "action", "resource",
    "tier", "rule", "policy_version", "actor", "outcome", "payload", "recorded_at",
)  # fmt: skip

FUNCTION = """
CREATE OR REPLACE FUNCTION {s}tether_append(
    {params}, before_prev text, before_seq text, after_seq text
) RETURNS TABLE(out_seq integer, out_prev text, out_hash text, out_new boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    head integer;
    prev text;
    linked text;
BEGIN
    SELECT h.seq INTO head FROM {s}ledger_head h WHERE h.id = 1 FOR UPDATE;
    SELECT e.seq, e.prev_hash, e.hash INTO out_seq, out_prev, out_hash
        FROM {s}ledger_events e WHERE e.idempotency_key = a_idempotency_key;
    IF FOUND THEN
        out_new := false;
        RETURN NEXT;
        RETURN;
    END IF;
    IF head = 0 THEN
        prev := repeat('0', 64);
    ELSE
        SELECT e.hash INTO prev FROM {s}ledger_events e WHERE e.seq = head;
        IF prev IS NULL THEN
            RAISE EXCEPTION 'ledger entry % (the last one) is missing: the ledger was tampered '
                'with; run ''tether audit verify'' before appending', head;
        END IF;
    END IF;
    linked := encode(sha256(convert_to(
        before_prev || prev || before_seq || (head + 1)::text || after_seq, 'UTF8')), 'hex');
    INSERT INTO {s}ledger_events (seq, {columns}, prev_hash, hash)
        VALUES (head + 1, {values}, prev, linked);
    UPDATE {s}ledger_head SET seq = head + 1 WHERE id = 1;
    out_seq := head + 1;
    out_prev := prev;
    out_hash := linked;
    out_new := true;
    RETURN NEXT;
END
$fn$
"""


def _qualifier(options: Mapping[str, Any]) -> str:
    translate = options.get("schema_translate_map") or {}
    schema = translate.get(None)
    return '"' + schema.replace('"', '""') + '".' if schema else ""


def qualified(table: str, options: Mapping[str, Any]) -> str:
    """`table` as SQL sent past SQLAlchemy must name it: in the engine's schema, if any."""
    return f"{_qualifier(options)}{table}"


def install(conn: Connection) -> None:
    """Create or replace the function in the ledger's schema."""
    types = {"step": "integer"}
    conn.execute(
        text(
            FUNCTION.format(
                s=_qualifier(conn.get_execution_options()),
                params=", ".join(f"a_{c} {types.get(c, 'text')}" for c in COLUMNS),
                columns=", ".join(COLUMNS),
                values=", ".join(f"a_{c}" for c in COLUMNS),
            )
        )
    )


def call(options: Mapping[str, Any]) -> str:
    """The call, for the DB-API cursor (psycopg's named placeholders): an append is this
    one statement, and going through SQLAlchemy's execute doubled an append's client CPU
    time beside a raw insert's (bench/ledger.py)."""
    names = ", ".join(f"%({c})s" for c in (*COLUMNS, "before_prev", "before_seq", "after_seq"))
    schema = _qualifier(options).replace("%", "%%")  # a literal % among the placeholders
    return f"SELECT * FROM {schema}tether_append({names})"


_PREV, _SEQ = "\x00prev\x00", "\x00seq\x00"
"""Placeholders: JSON escapes NUL in every real value, so they cannot occur elsewhere."""


def split_canonical(fields: Mapping[str, Any]) -> dict[str, str]:
    """The canonical JSON of an event around its `prev_hash` and `seq` values."""
    text_ = canonical_event(
        {**fields, "prev_hash": f'"{_PREV}"', "seq": _SEQ}, raw={"prev_hash", "seq"}
    )
    before_prev, rest = text_.split(_PREV)
    before_seq, after_seq = rest.split(_SEQ)
    return {"before_prev": before_prev, "before_seq": before_seq, "after_seq": after_seq}
