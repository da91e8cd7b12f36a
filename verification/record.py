"""The whole record: the content store the ledger's events name, and opening a ledger to
audit without creating one.

Events carry digests of what influenced them (prompts, model outputs, tool arguments
and results, policy texts); the content itself is in the content-addressed store,
written with the event. `verify_content` checks every object an event names: present,
and its canonical JSON hashing to the digest. `STORED` lists, per event kind, the payload
fields whose content is stored; a new kind that stores content must be listed here.

`existing_ledger` opens a database for auditing: a SQLite file that does not exist, or
a database without the ledger's tables, is an error — never an empty, "intact" ledger.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session

from tether.core.db import make_engine, shown_url
from tether.errors import LedgerError
from tether.verification.events import digest
from tether.verification.ledger import BlobRow, EventRow, Ledger

STORED: dict[str, tuple[str, ...]] = {
    "model.call": ("prompt_digest", "output_digest"),
    "tool.executed": ("args_digest", "result_digest"),
    "policy.loaded": ("model_digest", "policy_digest"),
}


class ContentProblem(BaseModel):
    seq: int
    kind: str
    field: str
    digest: str
    problem: str
    """`missing` or `altered`."""

    def line(self) -> str:
        what = "is missing from" if self.problem == "missing" else "was altered in"
        return (
            f"entry {self.seq} ({self.kind}): its {self.field} {self.digest[:23]}… {what} "
            "the content store"
        )


def verify_content(ledger: Ledger) -> tuple[int, list[ContentProblem]]:
    """(objects checked, every missing or altered one, by event in seq order)."""
    refs: list[tuple[int, str, str, str]] = []
    stmt = select(EventRow.seq, EventRow.kind, EventRow.payload).where(
        EventRow.kind.in_(list(STORED))
    )
    with Session(ledger.engine) as session:
        for seq, kind, payload in session.execute(stmt.order_by(EventRow.seq)):
            fields = json.loads(payload)
            for field in STORED[kind]:
                value = fields.get(field) if isinstance(fields, dict) else None
                if isinstance(value, str) and value:
                    refs.append((seq, kind, field, value))
        wanted = sorted({r[3] for r in refs})
        found: dict[str, bool] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            for key, content in session.execute(
                select(BlobRow.digest, BlobRow.content).where(BlobRow.digest.in_(chunk))
            ):
                try:
                    found[key] = digest(json.loads(content)) == key
                except ValueError:  # not JSON: altered
                    found[key] = False
    problems = [
        ContentProblem(
            seq=seq,
            kind=kind,
            field=field,
            digest=ref,
            problem="missing" if ref not in found else "altered",
        )
        for seq, kind, field, ref in refs
        if not found.get(ref, False)
    ]
    return len(refs), problems


def existing_ledger(url: str) -> Ledger:
    """The ledger at `url` for auditing; LedgerError when there is none to audit."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is not None and parsed.get_backend_name() == "sqlite":
        name = parsed.database or ""
        if name in ("", ":memory:") or not Path(name).is_file():
            raise LedgerError(
                f"database {shown_url(url)!r} does not exist, so there is no ledger to verify; "
                "check TETHER_DATABASE_URL (or database_url in tether.toml)"
            )
    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    except OperationalError as exc:
        raise LedgerError(
            f"cannot open database {shown_url(url)!r}: {exc.orig}; check TETHER_DATABASE_URL"
        ) from None
    if not {"ledger_events", "ledger_head"} <= tables:
        engine.dispose()
        raise LedgerError(
            f"database {shown_url(url)!r} holds no Tether ledger (no ledger_events table); "
            "check TETHER_DATABASE_URL (or database_url in tether.toml)"
        )
    return Ledger(engine)
