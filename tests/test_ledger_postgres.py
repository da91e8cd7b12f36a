"""The ledger on a real PostgreSQL server: idempotent appends, one linear chain under
concurrent writers (threads and processes, each with its own engine), and tampering caught.

Runs when TETHER_TEST_DATABASE_URL names a PostgreSQL database, e.g.
postgresql+psycopg://postgres@localhost:5432/test. Every test works in a schema of its
own (the connections' search_path), dropped afterwards, so parallel runs and leftovers
never meet.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import JsonValue
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from tests.test_ledger import (
    PER_PROCESS,
    PER_WRITER,
    PROCESSES,
    SHARED_EVERY,
    WRITERS,
    _append_all,
    _check_altered_row_is_not_vouched_for,
    _check_append_during_verification,
    _check_awkward_text,
    _check_chain,
    _count,
    _event,
    _fill,
    _process_writer,
    _sql,
    _swap,
    _tamper,
    _tamperings,
)
from tether.core.db import make_engine
from tether.verification.events import LedgerEvent, digest
from tether.verification.ledger import Ledger

URL = os.environ.get("TETHER_TEST_DATABASE_URL", "")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not URL.startswith("postgresql"),
        reason="set TETHER_TEST_DATABASE_URL to a PostgreSQL URL to run these",
    ),
]


@contextmanager
def _schema() -> Iterator[str]:
    """A fresh schema; yields a database URL whose connections work only in it."""
    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    url = make_url(URL)
    existing = url.query.get("options", "")
    options = " ".join(
        [*([existing] if isinstance(existing, str) else existing), f"-csearch_path={name}"]
    )
    try:
        yield url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


Engines = Callable[[], Engine]


@pytest.fixture
def schema_url() -> Iterator[str]:
    with _schema() as url:
        yield url


@pytest.fixture
def engines(schema_url: str) -> Iterator[Engines]:
    """Makes engines of their own (as separate workers have) on the test's schema."""
    made: list[Engine] = []

    def new() -> Engine:
        made.append(make_engine(schema_url))
        return made[-1]

    yield new
    for engine in made:
        engine.dispose()


@pytest.fixture
def ledger(engines: Engines) -> Ledger:
    return Ledger(engines())


def test_tables_live_in_the_test_schema(ledger: Ledger, schema_url: str) -> None:
    with ledger.engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        tables = conn.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
            {"s": schema},
        ).scalars()
        assert {"ledger_events", "ledger_head", "ledger_blobs"} <= set(tables)
    assert schema in schema_url


def test_append_is_idempotent_by_key(ledger: Ledger) -> None:
    first = ledger.append(LedgerEvent(idempotency_key="a", kind="decision", payload={"x": 1}))
    again = ledger.append(LedgerEvent(idempotency_key="a", kind="other", payload={"x": 2}))
    assert again.seq == first.seq == 1 and again.hash == first.hash
    assert (again.kind, again.payload) == ("decision", {"x": 1})
    assert _count(ledger) == 1
    second = ledger.append(LedgerEvent(idempotency_key="b", kind="decision"))
    assert second.seq == 2 and second.prev_hash == first.hash
    assert ledger.append(LedgerEvent(idempotency_key="b", kind="decision")).seq == 2
    assert [(e.seq, e.idempotency_key) for e in ledger.events()] == [(1, "a"), (2, "b")]
    report = ledger.verify()
    assert (report.ok, report.events, report.head_hash) == (True, 2, second.hash)


def test_events_read_back_exactly(ledger: Ledger) -> None:
    appended = _fill(ledger, 8)
    assert ledger.events() == appended
    assert ledger.verify().ok


def test_awkward_text_is_stored_and_hashed_faithfully(ledger: Ledger) -> None:
    _check_awkward_text(ledger)


DISTINCT = PER_WRITER // SHARED_EVERY + WRITERS * (PER_WRITER - PER_WRITER // SHARED_EVERY)


def test_threads_with_their_own_engines_keep_one_chain(engines: Engines) -> None:
    Ledger(engines())
    start = threading.Barrier(WRITERS)

    def work(writer: int) -> dict[str, list[Any]]:
        led = Ledger(engines())
        start.wait(timeout=60)
        return _append_all(led, writer, PER_WRITER)

    with ThreadPoolExecutor(WRITERS) as pool:
        results = list(pool.map(work, range(WRITERS)))
    _check_chain(Ledger(engines()), results, DISTINCT)


def test_threads_sharing_one_ledger_keep_one_chain(ledger: Ledger) -> None:
    start = threading.Barrier(WRITERS)

    def work(writer: int) -> dict[str, list[Any]]:
        start.wait(timeout=60)
        return _append_all(ledger, writer, PER_WRITER)

    with ThreadPoolExecutor(WRITERS) as pool:
        results = list(pool.map(work, range(WRITERS)))
    _check_chain(ledger, results, DISTINCT)


def test_processes_keep_one_chain(engines: Engines, schema_url: str, tmp_path: Path) -> None:
    Ledger(engines())
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    outs = [tmp_path / f"w{w}.json" for w in range(PROCESSES)]
    procs = [
        ctx.Process(target=_process_writer, args=(schema_url, w, start, str(outs[w])))
        for w in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    results = [json.loads(o.read_text()) for o in outs]
    shared = PER_PROCESS // SHARED_EVERY
    _check_chain(Ledger(engines()), results, shared + PROCESSES * (PER_PROCESS - shared))


def _boot_together(url: str) -> list[int]:
    """WRITERS workers, each with its own engine, open a ledger at once and append once."""
    start = threading.Barrier(WRITERS)

    def boot(writer: int) -> int:
        engine = make_engine(url)
        try:
            start.wait(timeout=60)
            return Ledger(engine).append(_event(writer, f"boot-{writer}")).seq
        finally:
            engine.dispose()

    with ThreadPoolExecutor(WRITERS) as pool:
        return list(pool.map(boot, range(WRITERS)))


def test_workers_starting_at_once_on_an_empty_database() -> None:
    """Workers booting together on a new database all come up (set-up is serialised);
    unserialised, nearly every round failed with DuplicateTable or UniqueViolation."""
    for _ in range(3):
        with _schema() as url:
            assert sorted(_boot_together(url)) == list(range(1, WRITERS + 1))
            ledger = Ledger(make_engine(url))
            try:
                report = ledger.verify()
                assert (report.ok, report.events) == (True, WRITERS)
            finally:
                ledger.engine.dispose()


# --- tampering ------------------------------------------------------------------------------


def test_edited_payload_is_named(ledger: Ledger) -> None:
    _fill(ledger, 6)
    _sql(ledger, "UPDATE ledger_events SET payload = :p WHERE seq = 4", p='{"amount":1}')
    report = ledger.verify()
    assert (report.ok, report.first_bad_seq) == (False, 4)
    assert "entry 4" in report.problem and "altered" in report.problem


def test_edited_actor_is_named(ledger: Ledger) -> None:
    _fill(ledger, 6)
    _sql(ledger, "UPDATE ledger_events SET actor = 'user:mallory' WHERE seq = 2")
    report = ledger.verify()
    assert (report.ok, report.first_bad_seq) == (False, 2) and "altered" in report.problem


def test_removed_middle_row_is_named(ledger: Ledger) -> None:
    _fill(ledger, 6)
    _sql(ledger, "DELETE FROM ledger_events WHERE seq = 3")
    report = ledger.verify()
    assert (report.ok, report.first_bad_seq) == (False, 3)
    assert "entry 3 is missing" in report.problem


def test_swapped_rows_are_named(ledger: Ledger) -> None:
    _fill(ledger, 6)
    _swap(ledger, 2, 5)
    report = ledger.verify()
    assert (report.ok, report.first_bad_seq) == (False, 2)
    assert "entry 2 does not link" in report.problem


@pytest.mark.parametrize("removed", [1, 2])
def test_removed_tail_is_named(ledger: Ledger, removed: int) -> None:
    _fill(ledger, 6)
    _sql(ledger, "DELETE FROM ledger_events WHERE seq > :keep", keep=6 - removed)
    report = ledger.verify()
    assert (report.ok, report.first_bad_seq) == (False, 6 - removed + 1)
    assert "head records 6" in report.problem


@settings(max_examples=15, deadline=None)
@given(n=st.integers(5, 20), tampering=_tamperings)
def test_any_single_tampering_is_caught_at_its_entry(
    n: int, tampering: tuple[str, int, str]
) -> None:
    with _schema() as url:
        led = Ledger(make_engine(url))
        try:
            _fill(led, n)
            assert led.verify().ok
            expected = _tamper(led, n, tampering)
            report = led.verify()
            assert (report.ok, report.first_bad_seq) == (False, expected)
            assert report.problem
        finally:
            led.engine.dispose()


def test_content_is_stored_before_each_event(ledger: Ledger) -> None:
    """Each event autocommits its content first; content shared by events is stored once."""
    alone = ledger.append(_event(0, "alone"), [{"prompt": "a"}, "shared"])
    stored = [ledger.append(_event(1, f"next-{i}"), [f"body {i}", "shared"]) for i in range(3)]
    assert [e.seq for e in stored] == [alone.seq + 1, alone.seq + 2, alone.seq + 3]
    values: list[JsonValue] = [{"prompt": "a"}, "shared", "body 0", "body 1", "body 2"]
    for value in values:
        assert ledger.blob(digest(value)) == value
    assert ledger.append(_event(1, "next-1")) == stored[1]
    assert ledger.verify().ok


def test_an_altered_row_is_not_returned_by_a_repeated_append(ledger: Ledger) -> None:
    _check_altered_row_is_not_vouched_for(ledger)


def test_an_append_during_verification_is_not_a_cut_tail(ledger: Ledger) -> None:
    _check_append_during_verification(ledger)
