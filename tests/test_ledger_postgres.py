"""The ledger on a real PostgreSQL server: idempotent, concurrent writers, tamper evident.

Runs when TETHER_TEST_DATABASE_URL names a PostgreSQL database (CI sets it). Each test
gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from tether.db import make_engine
from verification.audit import tree_head, verify_against
from verification.checkpoint import load_or_create_key, sign
from verification.ledger import Ledger, LedgerEvent

URL = os.environ.get("TETHER_TEST_DATABASE_URL", "")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not URL.startswith("postgresql"),
        reason="set TETHER_TEST_DATABASE_URL to a PostgreSQL URL to run these",
    ),
]


_ENGINES: list[Engine] = []


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        yield name
    finally:
        while _ENGINES:
            _ENGINES.pop().dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def _engine(schema: str) -> Engine:
    """An engine of its own (as a separate worker has) on the test's schema."""
    engine = make_engine(URL)
    _ENGINES.append(engine)
    return engine.execution_options(schema_translate_map={None: schema})


def test_idempotent_append_and_verify(schema: str) -> None:
    ledger = Ledger(_engine(schema))
    first = ledger.append(LedgerEvent(idempotency_key="a", kind="decision"))
    assert ledger.append(LedgerEvent(idempotency_key="a", kind="decision")).seq == first.seq
    ledger.append(LedgerEvent(idempotency_key="b", kind="decision"))
    assert [e.seq for e in ledger.events()] == [1, 2]
    assert ledger.verify().ok


def test_many_concurrent_writers(schema: str) -> None:
    Ledger(_engine(schema))
    writers, per, shared = 8, 25, 5

    def work(w: int) -> None:
        led = Ledger(_engine(schema))
        for i in range(per):
            key = f"shared-{i}" if i < shared else f"w{w}-{i}"
            led.append(LedgerEvent(idempotency_key=key, kind="decision", payload={"w": w}))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ledger = Ledger(_engine(schema))
    events = ledger.events()
    assert len(events) == shared + writers * (per - shared)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.idempotency_key for e in events}) == len(events)
    assert ledger.verify().ok


def test_tampering_is_detected(schema: str, tmp_path: object) -> None:
    ledger = Ledger(_engine(schema))
    for i in range(6):
        ledger.append(LedgerEvent(idempotency_key=f"k{i}", kind="decision", payload={"i": i}))
    from pathlib import Path

    key = load_or_create_key(Path(str(tmp_path)) / "k.pem")
    checkpoint = sign(tree_head(ledger), key)
    with ledger.engine.begin() as conn:
        conn.execute(text(f"UPDATE \"{schema}\".ledger_events SET actor = 'mallory' WHERE seq = 3"))
    report = ledger.verify()
    assert not report.ok and report.first_bad_seq == 3
    assert not verify_against(ledger, checkpoint).ok
