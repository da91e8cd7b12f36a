"""Checkpoints catch what a hash chain alone cannot; proofs verify; the CLI exposes them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tether.core.db import make_engine
from tether.verification.audit import prove_consistency, prove_inclusion, tree_head, verify_against
from tether.verification.checkpoint import Checkpoint, load_or_create_key, sign, verify_signature
from tether.verification.events import GENESIS, LedgerEvent
from tether.verification.ledger import Ledger, _row_fields, event_hash
from tether.verification.trust import Trust


def _ledger(path: Path, n: int) -> Ledger:
    ledger = Ledger(make_engine(f"sqlite:///{path}"))
    for i in range(n):
        ledger.append(LedgerEvent(idempotency_key=f"k{i}", kind="decision", payload={"amount": i}))
    return ledger


def _checkpoint(ledger: Ledger, key_dir: Path) -> Checkpoint:
    return sign(tree_head(ledger), load_or_create_key(key_dir / "cp.pem"))


def _pins(cp: Checkpoint) -> Trust:
    return Trust.gather([cp.public_key])


def _sql(ledger: Ledger, statement: str) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(text(statement))


def _rechain(ledger: Ledger) -> None:
    """What an attacker with database access does: recompute every hash and the head."""
    from sqlalchemy.orm import Session

    from tether.verification.ledger import EventRow, HeadRow

    with Session(ledger.engine) as session, session.begin():
        prev, seq = GENESIS, 0
        for row in session.query(EventRow).order_by(EventRow.seq):
            seq += 1
            row.seq = seq
            row.prev_hash = prev
            row.hash = event_hash(_row_fields(row))
            prev = row.hash
        head = session.get(HeadRow, 1)
        assert head is not None
        head.seq = seq


def test_checkpoint_signature(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db", 5)
    cp = _checkpoint(ledger, tmp_path)
    assert verify_signature(cp) == ""
    assert verify_signature(cp, {cp.key_id}) == ""
    assert "not trusted" in verify_signature(cp, {"someone-else"})
    forged = cp.model_copy(update={"size": 4})
    assert "does not verify" in verify_signature(forged)
    assert (tmp_path / "cp.pem").stat().st_mode & 0o077 == 0


def test_forged_row_with_chain_recomputed_is_caught(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db", 12)
    cp = _checkpoint(ledger, tmp_path)
    _sql(ledger, "UPDATE ledger_events SET payload='{\"amount\": 999999}' WHERE seq=5")
    _rechain(ledger)
    assert ledger.verify().ok  # the chain alone is fooled
    report = verify_against(ledger, cp, _pins(cp))
    assert not report.ok and "forged, altered or reordered" in report.problem


def test_truncated_tail_with_head_rewritten_is_caught(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db", 12)
    cp = _checkpoint(ledger, tmp_path)
    _sql(ledger, "DELETE FROM ledger_events WHERE seq > 9")
    _rechain(ledger)
    assert ledger.verify().ok
    report = verify_against(ledger, cp, _pins(cp))
    assert not report.ok and report.first_bad_seq == 10 and "covers 12" in report.problem


def test_restored_older_snapshot_is_caught(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db", 6)
    ledger.engine.dispose()
    shutil.copy(tmp_path / "l.db", tmp_path / "old.db")
    ledger = _ledger(tmp_path / "l.db", 10)  # appends k6..k9 (k0..k5 exist already)
    cp = _checkpoint(ledger, tmp_path)
    assert cp.size == 10
    restored = Ledger(make_engine(f"sqlite:///{tmp_path / 'old.db'}"))
    assert restored.verify().ok
    report = verify_against(restored, cp, _pins(cp))
    assert not report.ok and "older snapshot" in report.problem


def test_appends_after_a_checkpoint_are_consistent(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db", 7)
    cp = _checkpoint(ledger, tmp_path)
    for i in range(7, 20):
        ledger.append(LedgerEvent(idempotency_key=f"k{i}", kind="x"))
    assert verify_against(ledger, cp, _pins(cp)).ok
    proof = prove_consistency(ledger, cp.size)
    assert proof.old_root == cp.root and proof.verify()
    for seq in (1, 7, 20):
        inclusion = prove_inclusion(ledger, seq)
        assert inclusion.verify()
        assert not inclusion.model_copy(update={"seq": seq % 20 + 1}).verify()


TAMPERS = ["edit", "delete", "swap", "truncate", "forge"]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=3, max_value=25),
    tamper=st.sampled_from(TAMPERS),
    data=st.data(),
)
def test_any_tampering_is_detected_against_a_checkpoint(
    n: int, tamper: str, data: st.DataObject
) -> None:
    folder = Path(tempfile.mkdtemp())
    try:
        ledger = _ledger(folder / "l.db", n)
        cp = _checkpoint(ledger, folder)
        a = data.draw(st.integers(min_value=1, max_value=n))
        b = data.draw(st.integers(min_value=1, max_value=n).filter(lambda x: x != a))
        if tamper == "edit":
            _sql(ledger, f"UPDATE ledger_events SET actor='mallory' WHERE seq={a}")
        elif tamper == "delete":
            _sql(ledger, f"DELETE FROM ledger_events WHERE seq={a}")
        elif tamper == "swap":
            _sql(ledger, f"UPDATE ledger_events SET seq=-1 WHERE seq={a}")
            _sql(ledger, f"UPDATE ledger_events SET seq={a} WHERE seq={b}")
            _sql(ledger, f"UPDATE ledger_events SET seq={b} WHERE seq=-1")
        elif tamper == "truncate":
            _sql(ledger, f"DELETE FROM ledger_events WHERE seq >= {a}")
            _rechain(ledger)
        else:
            _sql(ledger, f"UPDATE ledger_events SET outcome='forged' WHERE seq={a}")
            _rechain(ledger)
        assert not verify_against(ledger, cp, _pins(cp)).ok
        ledger.engine.dispose()
    finally:
        shutil.rmtree(folder)


def _cli(tmp_path: Path, *args: str, pin: bool = True) -> subprocess.CompletedProcess[str]:
    key = load_or_create_key(tmp_path / "keys" / "cp.pem")
    env = {
        **os.environ,
        **(
            {"TETHER_AUDIT_TRUSTED_KEYS": json.dumps([key.public_key().public_bytes_raw().hex()])}
            if pin
            else {}
        ),
        "TETHER_DATABASE_URL": f"sqlite:///{tmp_path / 'l.db'}",
        "TETHER_CHECKPOINT_KEY": str(tmp_path / "keys" / "cp.pem"),
    }
    return subprocess.run(
        [sys.executable, "-m", "tether.cli.main", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def test_audit_cli_checkpoint_prove_consistency(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db", 9)
    done = _cli(tmp_path, "checkpoint", "-o", str(tmp_path / "cp1.json"))
    assert done.returncode == 0, done.stderr
    for i in range(9, 15):
        ledger.append(LedgerEvent(idempotency_key=f"k{i}", kind="x"))
    assert _cli(tmp_path, "checkpoint", "-o", str(tmp_path / "cp2.json")).returncode == 0
    done = _cli(tmp_path, "verify", "--against", str(tmp_path / "cp1.json"))
    assert done.returncode == 0 and "15 events" in done.stdout.replace("\n", " ")
    done = _cli(tmp_path, "consistency", str(tmp_path / "cp1.json"), str(tmp_path / "cp2.json"))
    assert done.returncode == 0 and "9 → 15" in done.stdout
    proof = json.loads(_cli(tmp_path, "prove", "4").stdout)
    assert proof["seq"] == 4 and proof["tree_size"] == 15 and proof["path"]
    # an auditor checks a proof offline against the checkpoint it was made for
    proved = _cli(tmp_path, "prove", "4", "--checkpoint", str(tmp_path / "cp1.json"))
    (tmp_path / "p.json").write_text(proved.stdout)
    done = _cli(
        tmp_path,
        "verify-proof",
        str(tmp_path / "p.json"),
        "--checkpoint",
        str(tmp_path / "cp1.json"),
    )
    assert done.returncode == 0 and "event 4" in done.stdout, done.stderr
    done = _cli(
        tmp_path,
        "verify-proof",
        str(tmp_path / "p.json"),
        "--checkpoint",
        str(tmp_path / "cp2.json"),
    )
    assert done.returncode == 1 and "tree of 9 events" in done.stderr
    forged = json.loads(proved.stdout)
    forged["event_hash"] = "00" * 32
    (tmp_path / "f.json").write_text(json.dumps(forged))
    done = _cli(
        tmp_path,
        "verify-proof",
        str(tmp_path / "f.json"),
        "--checkpoint",
        str(tmp_path / "cp1.json"),
    )
    assert done.returncode == 1 and "does not put event 4" in done.stderr
    done = _cli(tmp_path, "prove", "99")
    assert done.returncode == 2 and "event 99" in done.stderr
    _sql(ledger, "UPDATE ledger_events SET payload='{}' WHERE seq=3")
    _rechain(ledger)
    done = _cli(tmp_path, "verify", "--against", str(tmp_path / "cp1.json"))
    assert done.returncode == 1 and "forged" in done.stderr
    done = _cli(tmp_path, "consistency", str(tmp_path / "cp1.json"))
    assert done.returncode == 1 and "no longer match" in done.stderr, done.stderr
    done = _cli(tmp_path, "verify", "--against", str(tmp_path / "missing.json"))
    assert done.returncode == 2 and "missing.json" in done.stderr
