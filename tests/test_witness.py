"""Witnessed, scheduled checkpoints: a real `tether witness` process cosigns only a
consistent successor, and the Schedule keeps the unprotected tail under its bound."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client

from tests.conftest import free_port, pending_status, start_invoice
from tests.test_audit_trust import _fill
from tether.activities.checkpoints import CheckpointActivities, CheckpointInput
from tether.core.config import Settings
from tether.core.db import make_engine
from tether.runtime.approvals import decide_request, signing_key
from tether.runtime.checkpoints import ensure_checkpoint_schedule
from tether.verification.audit import prove_consistency, tree_head, verify_against
from tether.verification.checkpoint import Checkpoint, Cosignature, key_id, load_or_create_key, sign
from tether.verification.ledger import Ledger
from tether.verification.sink import DirectorySink
from tether.verification.trust import Trust
from tether.worker import Runtime, build_worker


def _public(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes_raw().hex()


@contextmanager
def witness_process(tmp_path: Path, log_key: str) -> Iterator[str]:
    """`tether witness` as its own process on a free port; yields its base URL."""
    port = free_port()
    argv = [sys.executable, "-m", "tether.cli.main", "witness", "--key", "w.pem"]
    argv += ["--state", "state.json", "--log-key", log_key, "--port", str(port)]
    log = (tmp_path / "witness.log").open("wb")
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/v1/key", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "witness.log").read_text()) from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _ask(url: str, cp: Checkpoint, proof: list[str] | None = None) -> httpx.Response:
    body = {"checkpoint": cp.model_dump(mode="json"), "proof": proof or []}
    return httpx.post(f"{url}/v1/cosign", json=body, timeout=10)


def test_a_witness_refuses_forks_and_shrunk_trees(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    log = Ledger(make_engine(f"sqlite:///{tmp_path / 'log.db'}"))
    fork = Ledger(make_engine(f"sqlite:///{tmp_path / 'fork.db'}"))
    _fill(log, 5)
    _fill(fork, 5, wf="wf-other")  # the same size, other events: another history
    with witness_process(tmp_path, _public(key)) as url:
        witness_key = httpx.get(f"{url}/v1/key").json()
        first = sign(tree_head(log), key)
        answer = _ask(url, first)
        assert answer.status_code == 200, answer.text
        refused = _ask(url, sign(tree_head(fork), key))
        assert refused.status_code == 409 and "a fork" in refused.json()["refused"]

        _fill(log, 3, start=5)
        grown = sign(tree_head(log), key)
        proof = prove_consistency(log, 5, 8).path
        cosigned = _ask(url, grown, proof)
        assert cosigned.status_code == 200, cosigned.text
        shrunk = _ask(url, sign(tree_head(log, 6), key))
        assert shrunk.status_code == 409 and "shrank" in shrunk.json()["refused"]
        # Larger, but not an extension of what the witness saw: its proof cannot verify.
        _fill(fork, 5, start=5, wf="wf-other")
        forked = _ask(url, sign(tree_head(fork), key), prove_consistency(fork, 8, 10).path)
        assert forked.status_code == 409 and "append-only" in forked.json()["refused"]
        stranger = _ask(url, sign(tree_head(log), Ed25519PrivateKey.generate()))
        assert stranger.status_code == 409 and "not pinned" in stranger.json()["refused"]
    # The witness remembers across a restart: the fork is still refused.
    with witness_process(tmp_path, _public(key)) as url:
        assert httpx.get(f"{url}/v1/head/{key_id_of(key)}").json()["size"] == 8
        again = _ask(url, sign(tree_head(fork, 8), key))
        assert again.status_code == 409 and "a fork" in again.json()["refused"]

    # An auditor pinning both keys accepts the cosigned checkpoint and names the witness.
    witnessed = grown.model_copy(update={"cosignatures": [Cosignature(**cosigned.json())]})
    trust = Trust.gather([_public(key)], witness_pins=[witness_key["public_key"]])
    report = verify_against(log, witnessed, trust)
    assert report.ok and report.cosigned_by == [witness_key["key_id"]], report.problem
    assert not verify_against(log, grown, trust).ok  # a witness is pinned: one must cosign
    bad = witnessed.cosignatures[0].model_copy(update={"cosigned_at": "2020-01-01T00:00:00+00:00"})
    altered = verify_against(log, witnessed.model_copy(update={"cosignatures": [bad]}), trust)
    assert not altered.ok and "does not verify" in altered.problem
    (tmp_path / "cp.json").write_text(witnessed.model_dump_json())
    env = {**os.environ, "TETHER_DATABASE_URL": f"sqlite:///{tmp_path / 'log.db'}"}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "tether.cli.main", "audit", "verify", "--against", "cp.json"),
            *("--trust-key", grown.key_id, "--witness-key", witness_key["key_id"]),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"cosigned by {witness_key['key_id']}" in done.stdout


def key_id_of(key: Ed25519PrivateKey) -> str:
    return key_id(key.public_key())


def test_a_checkpoint_is_due_after_m_events_or_n_seconds(tmp_path: Path) -> None:
    ledger = Ledger(make_engine(f"sqlite:///{tmp_path / 'l.db'}"))
    sink = DirectorySink(tmp_path / "checkpoints")
    signer = CheckpointActivities(ledger, Ed25519PrivateKey.generate(), sink, [])
    by_events = CheckpointInput(every_seconds=3600, every_events=5)
    _fill(ledger, 2)
    assert signer.sign_checkpoint(by_events).signed  # the first one is always due
    _fill(ledger, 4, start=2)
    assert not signer.sign_checkpoint(by_events).signed  # 4 uncovered, an hour to go
    _fill(ledger, 1, start=6)
    done = signer.sign_checkpoint(by_events)
    assert done.signed and done.size == 7 and Path(done.where).parent == sink.folder
    assert not signer.sign_checkpoint(CheckpointInput(every_seconds=0)).signed  # no growth
    _fill(ledger, 1, start=7)
    assert signer.sign_checkpoint(CheckpointInput(every_seconds=0)).signed
    assert [c.size for c in sink.all()] == [2, 7, 8]


async def test_scheduled_checkpoints_bound_the_tail_while_runs_go_on(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    log_key = load_or_create_key(tmp_path / "keys" / "checkpoint.pem")
    every, tick = 2.0, 1.0
    with witness_process(tmp_path, _public(log_key)) as url:
        async with httpx.AsyncClient() as http:
            witness_key = (await http.get(f"{url}/v1/key")).json()
        configured = settings.model_copy(
            update={
                "checkpoint_key": tmp_path / "keys" / "checkpoint.pem",
                "console_checkpoint_dir": tmp_path / "checkpoints",
                "checkpoint_every_seconds": every,
                "checkpoint_check_seconds": tick,
                "checkpoint_witnesses": [url],
            }
        )
        runtime = Runtime.from_settings(configured)
        sink = DirectorySink(configured.console_checkpoint_dir)
        async with build_worker(client, configured, runtime):
            sid = await ensure_checkpoint_schedule(client, configured)
            try:
                await _five_runs(client, configured, runtime)
                size = len(runtime.ledger.hashes())
                for _ in range(300):  # the schedule catches up with the last events
                    latest = sink.latest()
                    if latest is not None and latest.size >= size:
                        break
                    await asyncio.sleep(0.1)
            finally:
                await client.get_schedule_handle(sid).delete()
        checkpoints = sink.all()
        events = runtime.ledger.events()
        runtime.ledger.engine.dispose()
    assert checkpoints[-1].size == len(events) and len(checkpoints) >= 3
    # Every event was covered by a signed, witnessed checkpoint within the bound: the
    # interval, one tick of the schedule, and a second of signed_at's rounding and slack.
    bound = every + tick + 2.0
    for e in events:
        cover = next(c for c in checkpoints if c.size >= e.seq)
        waited = datetime.fromisoformat(cover.signed_at) - datetime.fromisoformat(e.recorded_at)
        assert waited.total_seconds() <= bound, (e.seq, e.kind, waited)
        assert [c.witness_key_id for c in cover.cosignatures] == [witness_key["key_id"]]
    trust = Trust.gather([_public(log_key)], witness_pins=[witness_key["public_key"]])
    report = verify_against(Ledger(make_engine(configured.database_url)), checkpoints[-1], trust)
    assert report.ok and report.tail_events == 0 and report.cosigned_by


async def _five_runs(client: Client, settings: Settings, runtime: Runtime) -> None:
    """Five invoices at once; three wait for an approval that comes a while later, one
    after another, so events keep arriving across several ticks of the schedule."""
    handles = [
        await start_invoice(client, settings, invoice)
        for invoice in ("INV-1001", "INV-1002", "INV-1003", "INV-1003", "INV-1003")
    ]
    key = signing_key(settings)
    for handle in handles[2:]:
        pending = (await pending_status(handle)).pending
        assert pending is not None
        await asyncio.sleep(1.5)  # an approver reading the request: the run waits meanwhile
        await decide_request(
            client,
            runtime.approvals,
            runtime.ledger,
            pending.request_id,
            approver="user:alice",
            approve=True,
            key=key,
        )
    for handle in handles:
        assert (await handle.result()).status == "paid"


def test_a_witness_without_a_log_key_refuses_to_start(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "tether.cli.main", "witness", "--key", "w.pem"]
    done = subprocess.run(
        [*argv, "--state", "s.json"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--log-key" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "w.pem").exists()
