"""The hash-linked ledger on SQLite: idempotent, concurrent, and every tampering named."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

from sqlalchemy import text

from tether.db import make_engine
from verification.ledger import EventQuery, Ledger, LedgerEvent


def _ledger(path: Path) -> Ledger:
    return Ledger(make_engine(f"sqlite:///{path}"))


def _fill(ledger: Ledger, n: int) -> None:
    for i in range(n):
        ledger.append(LedgerEvent(idempotency_key=f"k{i}", kind="decision", payload={"i": i}))


def _sql(ledger: Ledger, statement: str) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(text(statement))


def test_append_is_idempotent_by_key(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db")
    first = ledger.append(LedgerEvent(idempotency_key="a", kind="decision", payload={"x": 1}))
    again = ledger.append(LedgerEvent(idempotency_key="a", kind="decision", payload={"x": 2}))
    assert again.seq == first.seq == 1 and again.payload == {"x": 1}
    second = ledger.append(LedgerEvent(idempotency_key="b", kind="decision"))
    assert second.seq == 2 and second.prev_hash == first.hash
    assert [e.seq for e in ledger.events()] == [1, 2]
    assert ledger.verify().ok


def test_edited_row_is_named(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db")
    _fill(ledger, 5)
    _sql(ledger, "UPDATE ledger_events SET outcome='paid-twice' WHERE seq=3")
    report = ledger.verify()
    assert not report.ok and report.first_bad_seq == 3 and "altered" in report.problem


def test_removed_row_is_named(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db")
    _fill(ledger, 5)
    _sql(ledger, "DELETE FROM ledger_events WHERE seq=2")
    report = ledger.verify()
    assert not report.ok and report.first_bad_seq == 2 and "missing" in report.problem


def test_reordered_rows_are_named(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db")
    _fill(ledger, 5)
    _sql(ledger, "UPDATE ledger_events SET seq=-1 WHERE seq=2")
    _sql(ledger, "UPDATE ledger_events SET seq=2 WHERE seq=4")
    _sql(ledger, "UPDATE ledger_events SET seq=4 WHERE seq=-1")
    report = ledger.verify()
    assert not report.ok and report.first_bad_seq == 2


def test_removed_tail_is_named(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db")
    _fill(ledger, 5)
    _sql(ledger, "DELETE FROM ledger_events WHERE seq >= 4")
    report = ledger.verify()
    assert not report.ok and report.first_bad_seq == 4 and "head records 5" in report.problem


def test_search_filters(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db")
    ledger.append(LedgerEvent(idempotency_key="1", kind="decision", agent="a", tier="deny"))
    ledger.append(LedgerEvent(idempotency_key="2", kind="decision", agent="b", tier="auto"))
    ledger.append(LedgerEvent(idempotency_key="3", kind="tool.executed", agent="a"))
    assert [e.idempotency_key for e in ledger.search(EventQuery(agent="a"))] == ["1", "3"]
    assert [e.idempotency_key for e in ledger.search(EventQuery(tier="deny"))] == ["1"]
    assert [e.idempotency_key for e in ledger.search(EventQuery(limit=1))] == ["3"]
    assert ledger.search(EventQuery(since="2999-01-01")) == []


def _threads(url: str, writers: int, per: int, shared: int) -> None:
    def work(w: int) -> None:
        led = Ledger(make_engine(url))
        for i in range(per):
            key = f"shared-{i}" if i < shared else f"w{w}-{i}"
            led.append(LedgerEvent(idempotency_key=key, kind="decision", payload={"w": w}))
        led.engine.dispose()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_concurrent_threads_keep_one_linear_chain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    Ledger(make_engine(url))
    _threads(url, writers=6, per=30, shared=10)
    ledger = Ledger(make_engine(url))
    events = ledger.events()
    assert len(events) == 10 + 6 * 20
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert ledger.verify().ok


def _process(url: str, w: int) -> None:
    led = Ledger(make_engine(url))
    for i in range(25):
        key = f"shared-{i}" if i < 5 else f"p{w}-{i}"
        led.append(LedgerEvent(idempotency_key=key, kind="decision"))


def test_concurrent_processes_keep_one_linear_chain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    Ledger(make_engine(url))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process, args=(url, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    ledger = Ledger(make_engine(url))
    assert len(ledger.events()) == 5 + 3 * 20
    assert ledger.verify().ok
