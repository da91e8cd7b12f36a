"""The hash-linked ledger on SQLite files: idempotent appends, one linear chain under
concurrent writers (threads and processes), and every kind of tampering caught and named."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import shutil
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import JsonValue
from sqlalchemy import text

from tether.core.db import make_engine
from tether.errors import LedgerError
from tether.verification.events import LedgerEvent, RecordedEvent, digest
from tether.verification.ledger import Ledger, VerifyReport

FIELDS = [
    "seq",
    "idempotency_key",
    "kind",
    "workflow_id",
    "run_id",
    "step",
    "agent",
    "action",
    "resource",
    "tier",
    "rule",
    "policy_version",
    "actor",
    "outcome",
    "payload",
    "recorded_at",
    "prev_hash",
    "hash",
]


def _url(folder: Path) -> str:
    return f"sqlite:///{folder / 'ledger.db'}"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(make_engine(_url(tmp_path)))
    yield led
    led.engine.dispose()


def _event(i: int, key: str | None = None) -> LedgerEvent:
    return LedgerEvent(
        idempotency_key=key or f"wf-1:step-{i}",
        kind=["decision", "tool.executed", "approval.decided"][i % 3],
        workflow_id=f"wf-{i % 2}",
        run_id="run-1",
        step=None if i % 4 == 0 else i,
        agent="agent:ap-clerk",
        action="payments.pay",
        resource=f"vendor/v{i}",
        tier=["auto", "notify", "approve"][i % 3],
        rule="ap-pay-small",
        policy_version="sha256:0123456789abcdef",
        actor="user:alice" if i % 3 == 2 else "",
        outcome="ok",
        payload={"amount": i * 10, "memo": f"invoice №{i}: ünïcødé", "lines": [i, {"n": None}]},
    )


def _fill(ledger: Ledger, n: int) -> list[RecordedEvent]:
    return [ledger.append(_event(i)) for i in range(1, n + 1)]


def _sql(ledger: Ledger, statement: str, **params: Any) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(text(statement), params)


def _row(ledger: Ledger, seq: int) -> dict[str, Any]:
    with ledger.engine.connect() as conn:
        return dict(
            conn.execute(text("SELECT * FROM ledger_events WHERE seq = :s"), {"s": seq})
            .mappings()
            .one()
        )


def _count(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM ledger_events")).scalar_one())


def _swap(ledger: Ledger, a: int, b: int) -> None:
    """Exchange the places of two rows: every column but `seq` trades places."""
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_events SET seq = -1 WHERE seq = :a"), {"a": a})
        conn.execute(text("UPDATE ledger_events SET seq = :a WHERE seq = :b"), {"a": a, "b": b})
        conn.execute(text("UPDATE ledger_events SET seq = :b WHERE seq = -1"), {"b": b})


def _bad(report: VerifyReport) -> tuple[bool, int | None]:
    return report.ok, report.first_bad_seq


# --- appending -------------------------------------------------------------------------


def test_append_is_idempotent_by_key(ledger: Ledger) -> None:
    first = ledger.append(LedgerEvent(idempotency_key="a", kind="decision", payload={"x": 1}))
    again = ledger.append(LedgerEvent(idempotency_key="a", kind="other", payload={"x": 2}))
    assert again.seq == first.seq == 1
    assert again.hash == first.hash and again.recorded_at == first.recorded_at
    assert (again.kind, again.payload) == ("decision", {"x": 1})  # what was stored first
    assert _count(ledger) == 1
    second = ledger.append(LedgerEvent(idempotency_key="b", kind="decision"))
    assert second.seq == 2 and second.prev_hash == first.hash
    assert ledger.append(LedgerEvent(idempotency_key="a", kind="decision")).seq == 1
    assert [(e.seq, e.idempotency_key) for e in ledger.events()] == [(1, "a"), (2, "b")]
    report = ledger.verify()
    assert report.ok and report.events == 2 and report.head_hash == second.hash


def _check_altered_row_is_not_vouched_for(ledger: Ledger) -> None:
    """A repeated append returns the stored event only if it still matches its hash."""
    ledger.append(LedgerEvent(idempotency_key="a", kind="decision", payload={"amount": 10}))
    _sql(
        ledger,
        "UPDATE ledger_events SET payload = :p WHERE idempotency_key = 'a'",
        p='{"amount":99}',
    )
    with pytest.raises(LedgerError, match=r"'a' .*does not match its hash"):
        ledger.append(LedgerEvent(idempotency_key="a", kind="decision", payload={"amount": 10}))
    assert not ledger.verify().ok


def test_an_altered_row_is_not_returned_by_a_repeated_append(ledger: Ledger) -> None:
    _check_altered_row_is_not_vouched_for(ledger)


def test_seqs_are_contiguous_and_linked(ledger: Ledger) -> None:
    appended = _fill(ledger, 12)
    stored = ledger.events()
    assert [e.seq for e in stored] == list(range(1, 13))
    assert stored == appended
    assert stored[0].prev_hash == "0" * 64
    for before, after in pairwise(stored):
        assert after.prev_hash == before.hash
    assert len({e.hash for e in stored}) == 12
    report = ledger.verify()
    assert (report.ok, report.events, report.head_hash) == (True, 12, stored[-1].hash)
    assert report.first_bad_seq is None and report.problem == ""


def test_an_empty_ledger_verifies(ledger: Ledger) -> None:
    report = ledger.verify()
    assert (report.ok, report.events, report.head_hash) == (True, 0, "0" * 64)


def test_reopening_keeps_the_chain(tmp_path: Path) -> None:
    first = Ledger(make_engine(_url(tmp_path)))
    _fill(first, 3)
    first.engine.dispose()
    second = Ledger(make_engine(_url(tmp_path)))  # create_all on an existing database
    assert second.append(_event(4)).seq == 4
    assert second.append(_event(1)).seq == 1
    assert second.verify().ok and second.verify().events == 4
    second.engine.dispose()


def test_content_goes_to_the_blob_store(ledger: Ledger) -> None:
    prompt: JsonValue = {"messages": [{"role": "user", "content": "pay invoice 7"}]}
    output: JsonValue = "paid"
    event = LedgerEvent(
        idempotency_key="llm-1", kind="llm.called", payload={"prompt": digest(prompt)}
    )
    ledger.append(event, [prompt, output])
    ledger.append(event, [prompt, output])  # a retry stores nothing twice
    assert ledger.blob(digest(prompt)) == prompt
    assert ledger.blob(digest(output)) == output
    with pytest.raises(KeyError):
        ledger.blob(digest("never stored"))
    _sql(
        ledger,
        "UPDATE ledger_blobs SET content = :c WHERE digest = :d",
        c='"refunded"',
        d=digest(output),
    )
    with pytest.raises(ValueError, match="altered"):
        ledger.blob(digest(output))


AWKWARD = [
    'O\'Brien said "pay" \\ twice',
    "line\nbreak\ttab\rreturn",
    "ünïcødé № 💸 \u2028 \u00e9\u0301",
    "\x01\x1f control",
    "",
]


def _check_awkward_text(ledger: Ledger) -> None:
    """Quotes, escapes, control characters and non-ASCII text in every kind of field are
    stored, read back and hashed exactly (on PostgreSQL the server hashes them)."""
    appended = []
    for i, value in enumerate(AWKWARD):
        event = _event(i, f"awkward-{i}-{value}").model_copy(
            update={
                "agent": value,
                "resource": f"vendor/{value}",
                "step": [None, 0, 2**31 - 1, -1, 7][i],
                "payload": {value or "empty": [value, {"nested": value}], "n": i},
            }
        )
        appended.append(ledger.append(event))
        assert ledger.append(event) == appended[-1]
    assert ledger.events() == appended
    assert [e.agent for e in ledger.events()] == AWKWARD
    report = ledger.verify()
    assert (report.ok, report.events) == (True, len(AWKWARD))


def test_awkward_text_is_stored_and_hashed_faithfully(ledger: Ledger) -> None:
    _check_awkward_text(ledger)


# --- tampering, one kind at a time ---------------------------------------------------------


def test_edited_payload_is_named(ledger: Ledger) -> None:
    _fill(ledger, 6)
    _sql(ledger, "UPDATE ledger_events SET payload = :p WHERE seq = 4", p='{"amount":1}')
    report = ledger.verify()
    assert _bad(report) == (False, 4)
    assert "entry 4" in report.problem and "altered" in report.problem
    assert report.events == 3


def test_whitespace_in_a_payload_counts_as_an_edit(ledger: Ledger) -> None:
    _fill(ledger, 3)
    payload = _row(ledger, 2)["payload"]
    _sql(ledger, "UPDATE ledger_events SET payload = :p WHERE seq = 2", p=payload + " ")
    assert _bad(ledger.verify()) == (False, 2)


def test_edited_hash_is_named(ledger: Ledger) -> None:
    _fill(ledger, 4)
    _sql(ledger, "UPDATE ledger_events SET hash = :h WHERE seq = 2", h="f" * 64)
    report = ledger.verify()
    assert _bad(report) == (False, 2) and "altered" in report.problem


def test_removed_middle_row_is_named(ledger: Ledger) -> None:
    _fill(ledger, 6)
    _sql(ledger, "DELETE FROM ledger_events WHERE seq = 3")
    report = ledger.verify()
    assert _bad(report) == (False, 3)
    assert "entry 3 is missing" in report.problem and "4" in report.problem
    assert report.events == 2


def test_removed_first_row_is_named(ledger: Ledger) -> None:
    _fill(ledger, 3)
    _sql(ledger, "DELETE FROM ledger_events WHERE seq = 1")
    report = ledger.verify()
    assert _bad(report) == (False, 1) and "missing" in report.problem


@pytest.mark.parametrize(("a", "b"), [(2, 5), (3, 4), (1, 6)])
def test_swapped_rows_are_named(ledger: Ledger, a: int, b: int) -> None:
    _fill(ledger, 6)
    _swap(ledger, a, b)
    report = ledger.verify()
    assert _bad(report) == (False, a)
    assert f"entry {a} does not link" in report.problem


@pytest.mark.parametrize("removed", [1, 3, 6])
def test_removed_tail_is_named(ledger: Ledger, removed: int) -> None:
    _fill(ledger, 6)
    _sql(ledger, "DELETE FROM ledger_events WHERE seq > :keep", keep=6 - removed)
    report = ledger.verify()
    assert _bad(report) == (False, 6 - removed + 1)
    assert "head records 6" in report.problem and f"has {6 - removed}" in report.problem
    assert report.events == 6 - removed


def test_rows_beyond_the_head_are_named(ledger: Ledger) -> None:
    """A head rolled back: the first entry it does not cover is the one named."""
    _fill(ledger, 6)
    _sql(ledger, "UPDATE ledger_head SET seq = 4 WHERE id = 1")
    report = ledger.verify()
    assert not report.ok and "head records 4" in report.problem
    assert report.first_bad_seq == 5


# --- any one tampering is caught, at the right entry -----------------------------------------

EDITABLE = [f for f in FIELDS if f != "seq"]


def _changed(field: str, value: Any) -> Any:
    """A value for `field` that differs from `value` and keeps the row insertable."""
    if field == "step":
        return 0 if value is None else value + 1
    if field in ("hash", "prev_hash"):
        return value[:-1] + ("1" if value[-1] == "0" else "0")
    if field == "payload":
        return json.dumps(json.loads(value), indent=1)  # same meaning, other bytes
    return f"{value}!"


_tamperings = st.one_of(
    st.tuples(st.just("edit"), st.integers(0, 10**6), st.sampled_from(EDITABLE)),
    st.tuples(st.just("renumber"), st.integers(0, 10**6), st.just("seq")),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.just("")),
    st.tuples(st.just("swap"), st.integers(0, 10**6), st.integers(1, 10**6).map(str)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just("")),
)


def _tamper(ledger: Ledger, n: int, tampering: tuple[str, int, str]) -> int:
    """Apply one tampering to a chain of `n` entries; return the entry verify must name."""
    kind, pick, extra = tampering
    seq = pick % n + 1
    if kind == "edit":
        new = _changed(extra, _row(ledger, seq)[extra])
        _sql(ledger, f"UPDATE ledger_events SET {extra} = :v WHERE seq = :s", v=new, s=seq)
        return seq
    if kind == "renumber":
        _sql(ledger, "UPDATE ledger_events SET seq = seq + :d WHERE seq = :s", d=n + 5, s=seq)
        return seq
    if kind == "delete":
        _sql(ledger, "DELETE FROM ledger_events WHERE seq = :s", s=seq)
        return seq
    if kind == "swap":
        offset = int(extra) % (n - 1) + 1  # 1 .. n-1: any entry but `seq`
        other = (seq - 1 + offset) % n + 1
        _swap(ledger, seq, other)
        return min(seq, other)
    _sql(ledger, "DELETE FROM ledger_events WHERE seq >= :s", s=seq)
    return seq


@settings(max_examples=50, deadline=None)
@given(n=st.integers(5, 30), tampering=_tamperings)
def test_any_single_tampering_is_caught_at_its_entry(
    n: int, tampering: tuple[str, int, str]
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="ledger-"))
    led = Ledger(make_engine(_url(folder)))
    try:
        _fill(led, n)
        assert led.verify().ok
        expected = _tamper(led, n, tampering)
        report = led.verify()
        assert not report.ok
        assert report.first_bad_seq == expected
        assert report.problem
        assert report.events == expected - 1
    finally:
        led.engine.dispose()
        shutil.rmtree(folder)


# --- concurrent writers ----------------------------------------------------------------------

WRITERS, PER_WRITER, SHARED_EVERY = 8, 50, 5


def _key(writer: int, i: int) -> str:
    """Every fifth append of each writer uses a key all writers share."""
    return f"shared-{i}" if i % SHARED_EVERY == 0 else f"w{writer}-{i}"


def _check_chain(ledger: Ledger, results: list[dict[str, list[Any]]], distinct: int) -> None:
    """One linear chain of exactly the distinct keys, and every caller told the truth."""
    stored = ledger.events()
    assert len(stored) == distinct
    assert [e.seq for e in stored] == list(range(1, distinct + 1))
    by_key = {e.idempotency_key: e for e in stored}
    assert len(by_key) == distinct
    for result in results:
        own: list[int] = []
        for key, (seq, hash_) in result.items():
            assert (by_key[key].seq, by_key[key].hash) == (seq, hash_), key
            if not key.startswith("shared-"):
                own.append(seq)
        assert own == sorted(own)  # one writer's appends keep their order
    report = ledger.verify()
    assert (report.ok, report.events) == (True, distinct), report.problem


def _append_all(ledger: Ledger, writer: int, count: int) -> dict[str, list[Any]]:
    result: dict[str, list[Any]] = {}
    for i in range(count):
        event = _event(i, _key(writer, i)).model_copy(update={"actor": f"w{writer}"})
        recorded = ledger.append(event)
        assert recorded.idempotency_key == event.idempotency_key
        result[event.idempotency_key] = [recorded.seq, recorded.hash]
    return result


def test_threads_with_their_own_engines_keep_one_chain(tmp_path: Path) -> None:
    url = _url(tmp_path)
    start = threading.Barrier(WRITERS)

    def work(writer: int) -> dict[str, list[Any]]:
        start.wait(timeout=60)
        led = Ledger(make_engine(url))  # a fresh database: every writer also creates it
        try:
            return _append_all(led, writer, PER_WRITER)
        finally:
            led.engine.dispose()

    with ThreadPoolExecutor(WRITERS) as pool:
        results = list(pool.map(work, range(WRITERS)))
    distinct = PER_WRITER // SHARED_EVERY + WRITERS * (PER_WRITER - PER_WRITER // SHARED_EVERY)
    ledger = Ledger(make_engine(url))
    try:
        _check_chain(ledger, results, distinct)
    finally:
        ledger.engine.dispose()


def test_threads_sharing_one_ledger_keep_one_chain(ledger: Ledger) -> None:
    start = threading.Barrier(WRITERS)

    def work(writer: int) -> dict[str, list[Any]]:
        start.wait(timeout=60)
        return _append_all(ledger, writer, PER_WRITER)

    with ThreadPoolExecutor(WRITERS) as pool:
        results = list(pool.map(work, range(WRITERS)))
    distinct = PER_WRITER // SHARED_EVERY + WRITERS * (PER_WRITER - PER_WRITER // SHARED_EVERY)
    _check_chain(ledger, results, distinct)


PROCESSES, PER_PROCESS = 3, 40


def _process_writer(url: str, writer: int, start: Any, out: str) -> None:
    """Runs in a spawned process: its own interpreter, engine and connections."""
    led = Ledger(make_engine(url))
    start.wait(timeout=120)
    result = _append_all(led, writer, PER_PROCESS)
    led.engine.dispose()
    Path(out).write_text(json.dumps(result))


def test_processes_keep_one_chain(tmp_path: Path) -> None:
    url = _url(tmp_path)
    Ledger(make_engine(url)).engine.dispose()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    outs = [tmp_path / f"w{w}.json" for w in range(PROCESSES)]
    procs = [
        ctx.Process(target=_process_writer, args=(url, w, start, str(outs[w])))
        for w in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    results = [json.loads(o.read_text()) for o in outs]
    shared = PER_PROCESS // SHARED_EVERY
    ledger = Ledger(make_engine(url))
    try:
        _check_chain(ledger, results, shared + PROCESSES * (PER_PROCESS - shared))
        seqs: dict[str, set[int]] = defaultdict(set)
        for result in results:
            for key, (seq, _) in result.items():
                seqs[key].add(seq)
        assert all(len(s) == 1 for s in seqs.values())  # a shared key has one seq for all
    finally:
        ledger.engine.dispose()


def test_append_after_the_last_entry_was_deleted_is_refused(tmp_path: Path) -> None:
    ledger = Ledger(make_engine(f"sqlite:///{tmp_path / 'cut.db'}"))
    for i in range(3):
        ledger.append(LedgerEvent(idempotency_key=f"cut-{i}", kind="decision"))
    with ledger.engine.begin() as conn:
        conn.execute(text("DELETE FROM ledger_events WHERE seq = 3"))
    with pytest.raises(LedgerError, match="entry 3"):
        ledger.append(LedgerEvent(idempotency_key="after", kind="decision"))
    assert [e.seq for e in ledger.events()] == [1, 2]
    ledger.engine.dispose()


def _check_append_during_verification(ledger: Ledger) -> None:
    """Rows and head are read in one snapshot: an event appended while the chain is being
    walked is in neither, so it is not taken for a cut tail."""
    for i in range(3):
        ledger.append(_event(i))
    with ledger._snapshot() as (rows, head):
        first = next(rows)  # the walk has begun: its snapshot is taken
        ledger.append(_event(3))
        report = ledger._walk(itertools.chain([first], rows), head)
    assert report.ok and report.events == 3, report.problem
    again = ledger.verify()
    assert again.ok and again.events == 4


def test_an_append_during_verification_is_not_a_cut_tail(ledger: Ledger) -> None:
    _check_append_during_verification(ledger)
