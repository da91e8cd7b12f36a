"""`python -m bench ledger`: ledger appends against raw inserts, verification rate, proofs.

Measured in one run, on the same database:
- appends per second through `Ledger.append` (hash chain, idempotency check, head lock,
  one transaction each) against raw SQLAlchemy inserts of the same rows into a table of
  the same shape (one transaction each), with 1 writer and with N concurrent writers;
  the two peers take turns in rounds, so both see the same machine;
- full verification rate (`Ledger.verify`, events per second);
- inclusion-proof size and verification time in a tree of one million events (proofs
  depend only on tree size, so the tree is built in memory from synthetic event hashes).

SQLite always; PostgreSQL too when `--postgres URL` or TETHER_TEST_DATABASE_URL is set
(each run in a fresh schema, dropped afterwards). Writers are measured three ways: one;
several threads of one worker sharing a Ledger (group commit on SQLite, side by side on
PostgreSQL); several workers, each a process of its own with its own connections (as
separate worker processes are).
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

from pydantic import JsonValue
from rich.progress import Progress
from sqlalchemy import Engine, MetaData, Table, insert, text, update

from tether.core.db import make_engine
from tether.verification import merkle
from tether.verification.events import GENESIS, LedgerEvent, canonical_json
from tether.verification.ledger import EVENTS, HEAD, EventRow, Ledger, event_hash

_RAW_SEQ = itertools.count(1)
"""Primary keys of the raw-insert table, unique across cases (itertools.count is atomic)."""


def _event(writer: int, i: int, run: str) -> LedgerEvent:
    return LedgerEvent(
        idempotency_key=f"{run}:{writer}:{i}:decision",
        kind="decision",
        workflow_id=f"bench-{run}-{writer}",
        run_id=run,
        step=i,
        agent="agent:bench",
        action="payments.pay",
        resource="vendor/acme",
        tier="auto",
        rule="ap-pay-small",
        policy_version="sha256:0123456789abcdef",
        actor="policy",
        outcome="allowed",
        payload={"amount": i, "args_digest": "sha256:" + "ab" * 32},
    )


def _raw_row(event: LedgerEvent, seq: int) -> dict[str, object]:
    fake = hashlib.sha256(event.idempotency_key.encode()).hexdigest()
    return {
        **event.model_dump(exclude={"payload"}),
        "payload": '{"amount":1}',
        "seq": seq,
        "recorded_at": "2026-01-01T00:00:00+00:00",
        "prev_hash": fake,
        "hash": fake,
    }


def _engine(url: str, schema: str | None) -> Engine:
    engine = make_engine(url)
    if schema:
        return engine.execution_options(schema_translate_map={None: schema})
    return engine


def _parallel(writers: int, work: Callable[[int], None]) -> float:
    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


ROUNDS = 6
"""Raw inserts and appends take turns, in this many rounds, so a change in the machine's
load during a case reaches both peers alike."""


def _case(
    url: str,
    schema: str | None,
    raw_table: Table,
    writers: int,
    per: int,
    advance: Callable[[], None],
) -> dict[str, JsonValue]:
    """Raw inserts and ledger appends of `writers` x `per` rows, in alternating rounds.

    The writers are threads of one process sharing one engine (raw) or one Ledger (ours):
    one worker with several activity threads. Engines are made and connected before the
    clock starts.
    """
    run = uuid.uuid4().hex[:8]
    raw_insert = insert(raw_table)  # one statement object: SQLAlchemy caches its compilation
    raw_engines = [_engine(url, schema)] * writers
    ledgers = [Ledger(_engine(url, schema))] * writers
    for engine in {*raw_engines, *(led.engine for led in ledgers)}:
        with engine.connect():
            pass
    bounds = [per * rnd // ROUNDS for rnd in range(ROUNDS + 1)]  # round rnd: its slice of per

    def raw(w: int, rnd: int) -> None:
        eng = raw_engines[w]
        for i in range(bounds[rnd], bounds[rnd + 1]):
            seq = next(_RAW_SEQ)
            with eng.begin() as conn:
                conn.execute(raw_insert, _raw_row(_event(w, i, run), seq))
            advance()

    def ours(w: int, rnd: int) -> None:
        led = ledgers[w]
        for i in range(bounds[rnd], bounds[rnd + 1]):
            led.append(_event(w, i, run + "o"))
            advance()

    raw_s = ours_s = 0.0
    for rnd in range(ROUNDS):
        if rnd % 2 == 0:
            raw_s += _parallel(writers, lambda w: raw(w, rnd))  # noqa: B023 (run at once)
            ours_s += _parallel(writers, lambda w: ours(w, rnd))  # noqa: B023
        else:
            ours_s += _parallel(writers, lambda w: ours(w, rnd))  # noqa: B023
            raw_s += _parallel(writers, lambda w: raw(w, rnd))  # noqa: B023
    for engine in {*raw_engines, *(led.engine for led in ledgers)}:
        engine.dispose()
    total = writers * per
    return {
        "writers": writers,
        "shared_process": True,
        "events": total,
        "rounds": ROUNDS,
        "raw_inserts_per_s": round(total / raw_s, 1),
        "appends_per_s": round(total / ours_s, 1),
        "ratio": round(raw_s / ours_s, 3),
    }


def _raw_table() -> Table:
    """The raw-insert peer's table: the ledger's own columns, under another name."""
    source = EventRow.__table__
    assert isinstance(source, Table)
    return source.to_metadata(MetaData(), name="bench_raw_inserts")


def _writer_process(
    url: str,
    schema: str | None,
    writer: int,
    per: int,
    run: str,
    raw_seqs: list[int],
    barrier: BarrierType,
    pids: Queue[int],
) -> None:
    """One worker process of the `workers` case: its own engines and Ledger, the same
    rounds as the parent, each round started and ended at the barrier the parent times."""
    raw_insert = insert(_raw_table())
    bounds = [per * rnd // ROUNDS for rnd in range(ROUNDS + 1)]
    engines: list[Engine] = []

    def raw(rnd: int) -> None:
        for i in range(bounds[rnd], bounds[rnd + 1]):
            with engines[0].begin() as conn:
                conn.execute(raw_insert, _raw_row(_event(writer, i, run), raw_seqs[i]))

    def ours(rnd: int) -> None:
        for i in range(bounds[rnd], bounds[rnd + 1]):
            ledger.append(_event(writer, i, run + "o"))

    try:
        engines.append(_engine(url, schema))
        ledger = Ledger(_engine(url, schema))
        engines.append(ledger.engine)
        for engine in engines:
            with engine.connect():
                pass
        pids.put(os.getpid())
        barrier.wait(timeout=120)  # connected: the parent starts its clock at the next one
        for rnd in range(ROUNDS):
            for peer in (raw, ours) if rnd % 2 == 0 else (ours, raw):
                barrier.wait(timeout=120)
                peer(rnd)
                barrier.wait(timeout=600)
    except BaseException:
        barrier.abort()  # the parent and the other writers stop waiting at once
        raise
    finally:
        for engine in engines:
            engine.dispose()


def _case_processes(
    url: str, schema: str | None, writers: int, per: int, advance: Callable[[], None]
) -> dict[str, JsonValue]:
    """Raw inserts and appends of `writers` x `per` rows from `writers` worker processes
    (each its own interpreter and connections, as separate workers are), in the same
    alternating rounds as `_case`; the parent times each round between two barriers."""
    run = uuid.uuid4().hex[:8]
    context = multiprocessing.get_context("spawn")  # no inherited threads or connections
    barrier = context.Barrier(writers + 1)
    pids: Queue[int] = context.Queue()
    processes = [
        context.Process(
            target=_writer_process,
            args=(url, schema, w, per, run, [next(_RAW_SEQ) for _ in range(per)], barrier, pids),
        )
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    times = {"raw": 0.0, "ours": 0.0}
    try:
        barrier.wait(timeout=120)  # every writer has imported and connected
        for rnd in range(ROUNDS):
            for peer in ("raw", "ours") if rnd % 2 == 0 else ("ours", "raw"):
                barrier.wait(timeout=120)
                start = time.perf_counter()
                barrier.wait(timeout=600)
                times[peer] += time.perf_counter() - start
                for _ in range(writers * (per * (rnd + 1) // ROUNDS - per * rnd // ROUNDS)):
                    advance()
    except BaseException:
        barrier.abort()  # writers waiting at the barrier stop at once
        raise
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join()
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"a writer process failed (exit codes {failed}); see its traceback")
    distinct = {pids.get(timeout=10) for _ in processes}
    total = writers * per
    return {
        "writers": writers,
        "shared_process": False,
        "processes": len(distinct - {os.getpid()}),
        "events": total,
        "rounds": ROUNDS,
        "raw_inserts_per_s": round(total / times["raw"], 1),
        "appends_per_s": round(total / times["ours"], 1),
        "ratio": round(times["raw"] / times["ours"], 3),
    }


def _bulk_chain(engine: Engine, count: int) -> None:
    """A valid chain of `count` events written in one transaction (for the verify figure)."""
    rows: list[dict[str, JsonValue]] = []
    prev = GENESIS
    start = Ledger(engine).hashes()
    seq0 = len(start)
    prev = start[-1] if start else GENESIS
    for i in range(count):
        event = _event(99, i, "bulk")
        fields: dict[str, JsonValue] = {
            **event.model_dump(exclude={"payload"}),
            "payload": canonical_json(event.payload),
            "seq": seq0 + i + 1,
            "prev_hash": prev,
            "recorded_at": "2026-01-01T00:00:00.000000+00:00",
        }
        fields["hash"] = prev = event_hash(fields)
        rows.append(fields)
    with engine.begin() as conn:
        conn.execute(insert(EVENTS), rows)
        conn.execute(update(HEAD).where(HEAD.c.id == 1).values(seq=seq0 + count))


def _measure_backend(
    name: str,
    url: str,
    schema: str | None,
    events: int,
    writers: int,
    verify_events: int,
    progress: Progress,
) -> dict[str, JsonValue]:
    engine = _engine(url, schema)
    ledger = Ledger(engine)
    raw_table = _raw_table()
    raw_table.metadata.create_all(engine)
    task = progress.add_task(name, total=6 * events)
    results: dict[str, JsonValue] = {}

    def advance() -> None:
        progress.advance(task)

    results["one_writer"] = _case(url, schema, raw_table, 1, events, advance)
    results[f"{writers}_threads_one_worker"] = _case(
        url, schema, raw_table, writers, events // writers, advance
    )
    results[f"{writers}_workers"] = _case_processes(
        url, schema, writers, events // writers, advance
    )
    _bulk_chain(engine, verify_events)
    start = time.perf_counter()
    report = ledger.verify()
    verify_s = time.perf_counter() - start
    assert report.ok, report.problem
    results["verify"] = {
        "events": report.events,
        "events_per_s": round(report.events / verify_s, 1),
    }
    engine.dispose()
    return results


def _proofs(size: int, progress: Progress) -> dict[str, JsonValue]:
    task = progress.add_task(f"proofs at {size:,} events", total=3)
    leaves = [merkle.leaf_hash(hashlib.sha256(i.to_bytes(8, "big")).digest()) for i in range(size)]
    progress.advance(task)
    start = time.perf_counter()
    root = merkle.root(leaves)
    root_s = time.perf_counter() - start
    index = size // 3
    start = time.perf_counter()
    proof = merkle.inclusion_proof(leaves, index)
    prove_s = time.perf_counter() - start
    progress.advance(task)
    timings = []
    for _ in range(2000):
        t0 = time.perf_counter()
        ok = merkle.verify_inclusion(leaves[index], index, size, proof, root)
        timings.append(time.perf_counter() - t0)
        assert ok
    progress.advance(task)
    timings.sort()
    return {
        "tree_size": size,
        "proof_hashes": len(proof),
        "proof_bytes": 32 * len(proof),
        "verify_us_p50": round(statistics.median(timings) * 1e6, 2),
        "verify_us_p99": round(timings[int(len(timings) * 0.99)] * 1e6, 2),
        "root_s": round(root_s, 3),
        "prove_s": round(prove_s, 3),
    }


def run_ledger(
    events: int = 2000,
    writers: int = 4,
    postgres: str | None = None,
    tree_size: int = 1_000_000,
    verify_events: int = 100_000,
) -> dict[str, JsonValue]:
    backends: dict[str, JsonValue] = {}
    with Progress(transient=True) as progress, tempfile.TemporaryDirectory() as tmp:
        backends["sqlite"] = _measure_backend(
            "sqlite",
            f"sqlite:///{Path(tmp) / 'bench.db'}",
            None,
            events,
            writers,
            verify_events,
            progress,
        )
        if postgres:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            admin = make_engine(postgres)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            try:
                backends["postgresql"] = _measure_backend(
                    "postgresql", postgres, schema, events, writers, verify_events, progress
                )
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
        proofs = _proofs(tree_size, progress)
    return {
        "benchmark": "ledger",
        "backends": backends,
        "proofs": proofs,
        "targets": {
            "append_ratio_one_writer": 0.8,
            "append_ratio_four_writers_postgresql": 0.75,
            "verify_events_per_s": 100_000,
            "proof_verify_ms": 1.0,
        },
        "machine": {"cpus": os.cpu_count() or 0},
    }
