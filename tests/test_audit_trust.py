"""An auditor's checks trust only the keys they pin, and cover the whole record: the chain,
the checkpoints (and their signers), the content store, and evidence bundles."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import JsonValue
from sqlalchemy import text

from tests.test_audit import _rechain, _sql
from tether.core.db import make_engine
from tether.errors import CheckpointError, LedgerError
from tether.verification.audit import check_consistency, tree_head, verify_against
from tether.verification.bundle import build_bundle, verify_bundle
from tether.verification.checkpoint import Checkpoint, load_or_create_key, sign
from tether.verification.events import LedgerEvent, digest
from tether.verification.ledger import Ledger
from tether.verification.record import existing_ledger, verify_content
from tether.verification.trust import PinnedKey, Trust, TrustFile


def _public(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes_raw().hex()


def _fill(ledger: Ledger, n: int, start: int = 0, wf: str = "wf-1") -> None:
    """`n` events, every third a model call whose prompt and output go to the store."""
    for i in range(start, start + n):
        if i % 3 == 0:
            prompt: JsonValue = f"prompt {i}"
            output: JsonValue = {"answer": i}
            ledger.append(
                LedgerEvent(
                    idempotency_key=f"k{i}",
                    kind="model.call",
                    workflow_id=wf,
                    payload={"prompt_digest": digest(prompt), "output_digest": digest(output)},
                ),
                [prompt, output],
            )
        else:
            ledger.append(
                LedgerEvent(
                    idempotency_key=f"k{i}",
                    kind="decision",
                    workflow_id=wf,
                    actor="user:alice",
                    payload={"amount": i},
                )
            )


def _ledger(path: Path, n: int) -> Ledger:
    ledger = Ledger(make_engine(f"sqlite:///{path}"))
    _fill(ledger, n)
    return ledger


def _cli(tmp_path: Path, *args: str, db: str = "l.db") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TETHER_DATABASE_URL": f"sqlite:///{tmp_path / db}",
        "TETHER_CHECKPOINT_KEY": str(tmp_path / "keys" / "cp.pem"),
    }
    env.pop("TETHER_AUDIT_TRUSTED_KEYS", None)
    return subprocess.run(
        [sys.executable, "-m", "tether.cli.main", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def _signed_at(cp: Checkpoint, key: Ed25519PrivateKey, at: str) -> Checkpoint:
    dated = cp.model_copy(update={"signed_at": at})
    return dated.model_copy(update={"signature": key.sign(dated.message()).hex()})


# -- item 1: pinned trust ----------------------------------------------------------------


def test_verify_against_needs_a_pinned_key_and_names_the_signer(tmp_path: Path) -> None:
    _ledger(tmp_path / "l.db", 6)
    assert _cli(tmp_path, "checkpoint", "-o", str(tmp_path / "cp.json")).returncode == 0
    key_line = _cli(tmp_path, "key")
    assert key_line.returncode == 0, key_line.stderr
    entry = json.loads(key_line.stdout)
    cp = Checkpoint.model_validate_json((tmp_path / "cp.json").read_text())
    assert entry["key_id"] == cp.key_id and entry["public_key"] == cp.public_key

    unpinned = _cli(tmp_path, "verify", "--against", str(tmp_path / "cp.json"))
    assert unpinned.returncode == 2 and "no pinned key" in unpinned.stderr
    other = _cli(
        tmp_path, "verify", "--against", str(tmp_path / "cp.json"), "--trust-key", "0" * 16
    )
    assert other.returncode == 1 and "not pinned" in other.stderr
    done = _cli(
        tmp_path, "verify", "--against", str(tmp_path / "cp.json"), "--trust-key", cp.key_id
    )
    assert done.returncode == 0, done.stderr
    assert f"signed by key {cp.key_id}" in done.stdout
    assert "unprotected tail: 0 events" in done.stdout
    (tmp_path / "trust.json").write_text(TrustFile(keys=[PinnedKey(**entry)]).model_dump_json())
    by_file = _cli(
        tmp_path, "verify", "--against", str(tmp_path / "cp.json"), "--trust-file", "trust.json"
    )
    assert by_file.returncode == 0 and cp.key_id in by_file.stdout, by_file.stderr


def test_consistency_checks_both_signatures_and_the_newer_root(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db", 9)
    key = load_or_create_key(tmp_path / "keys" / "cp.pem")
    old = sign(tree_head(ledger), key)
    _fill(ledger, 6, start=9)
    new = sign(tree_head(ledger), key)
    (tmp_path / "old.json").write_text(old.model_dump_json())
    (tmp_path / "new.json").write_text(new.model_dump_json())
    pin = ("--trust-key", _public(key))
    done = _cli(tmp_path, "consistency", "old.json", "new.json", *pin)
    assert done.returncode == 0 and "9 → 15" in done.stdout and key_id_in(done.stdout, old)
    assert _cli(tmp_path, "consistency", "old.json", "new.json").returncode == 2

    # A forged entry after the older checkpoint, the chain recomputed: the older prefix
    # still matches, but the ledger no longer holds the newer checkpoint's tree.
    _sql(ledger, "UPDATE ledger_events SET actor='mallory' WHERE seq=12")
    _rechain(ledger)
    forged = _cli(tmp_path, "consistency", "old.json", "new.json", *pin)
    assert forged.returncode == 1 and "newer checkpoint" in forged.stderr, forged.stdout
    # The forger signs a fresh "newer" checkpoint with a key of their own.
    mallory = Ed25519PrivateKey.generate()
    (tmp_path / "mallory.json").write_text(sign(tree_head(ledger), mallory).model_dump_json())
    resigned = _cli(tmp_path, "consistency", "old.json", "mallory.json", *pin)
    assert resigned.returncode == 1 and "not pinned" in resigned.stderr


def key_id_in(stdout: str, cp: Checkpoint) -> bool:
    return cp.key_id in stdout


def test_verify_proof_and_bundle_need_pinned_keys(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db", 7)
    key = load_or_create_key(tmp_path / "keys" / "cp.pem")
    bundle = build_bundle(ledger, "wf-1", "{}", key)
    (tmp_path / "b.json").write_text(bundle.model_dump_json())
    unpinned = _cli(tmp_path, "verify-bundle", "b.json")
    assert unpinned.returncode == 2 and "no pinned key" in unpinned.stderr
    assert verify_bundle(bundle.model_dump_json().encode(), Trust.gather([_public(key)])) == []
    # The approver changed, and the whole bundle re-signed with another key.
    _sql(ledger, "UPDATE ledger_events SET actor='user:mallory' WHERE seq=2")
    _rechain(ledger)
    forged = build_bundle(ledger, "wf-1", "{}", Ed25519PrivateKey.generate())
    problems = verify_bundle(forged.model_dump_json().encode(), Trust.gather([_public(key)]))
    assert any("not pinned" in p for p in problems)
    with pytest.raises(CheckpointError, match="no pinned key"):
        verify_bundle(forged.model_dump_json().encode(), Trust([]))
    cp = sign(tree_head(ledger), key)
    (tmp_path / "cp.json").write_text(cp.model_dump_json())
    proof = _cli(tmp_path, "prove", "3", "--checkpoint", "cp.json")
    (tmp_path / "p.json").write_text(proof.stdout)
    args = ("verify-proof", "p.json", "--checkpoint", "cp.json")
    assert _cli(tmp_path, *args).returncode == 2
    done = _cli(tmp_path, *args, "--trust-key", cp.key_id)
    assert done.returncode == 0 and f"signed by key {cp.key_id}" in done.stdout


def test_a_trust_file_rotates_keys_by_validity_period(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db", 4)
    old_key, new_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    switch = "2026-06-01T00:00:00+00:00"
    trust = Trust(
        [
            PinnedKey(public_key=_public(old_key), not_after=switch),
            PinnedKey(public_key=_public(new_key), not_before=switch),
        ]
    )
    head = tree_head(ledger)
    before, after = "2026-05-01T00:00:00+00:00", "2026-07-01T00:00:00+00:00"
    assert verify_against(ledger, _signed_at(sign(head, old_key), old_key, before), trust).ok
    assert verify_against(ledger, _signed_at(sign(head, new_key), new_key, after), trust).ok
    late = verify_against(ledger, _signed_at(sign(head, old_key), old_key, after), trust)
    assert not late.ok and "retired" in late.problem
    early = verify_against(ledger, _signed_at(sign(head, new_key), new_key, before), trust)
    assert not early.ok and "before it became valid" in early.problem
    # A pinned id with another public key behind it is not the pinned key.
    impostor = sign(head, Ed25519PrivateKey.generate())
    impostor = impostor.model_copy(update={"key_id": trust.keys[0].key_id})
    assert not verify_against(ledger, impostor, trust).ok


def test_check_consistency_refuses_a_shrunk_newer_checkpoint(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db", 8)
    key = Ed25519PrivateKey.generate()
    trust = Trust.gather([_public(key)])
    new = sign(tree_head(ledger), key)
    old = sign(tree_head(ledger, 5), key)
    assert check_consistency(ledger, old, new, trust)[0] == ""
    problem, _ = check_consistency(ledger, new, old, trust)
    assert "larger than the newer" in problem


# -- item 2: the whole record --------------------------------------------------------------


def test_verify_checks_the_content_store(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db", 7)
    assert _cli(tmp_path, "verify").returncode == 0
    prompt = digest("prompt 3")
    _sql(ledger, f"UPDATE ledger_blobs SET content='\"changed\"' WHERE digest='{prompt}'")
    output = digest({"answer": 6})
    _sql(ledger, f"DELETE FROM ledger_blobs WHERE digest='{output}'")
    done = _cli(tmp_path, "verify")
    assert done.returncode == 1, done.stdout
    assert "entry 4 (model.call): its prompt_digest" in done.stderr and "altered" in done.stderr
    assert "entry 7 (model.call): its output_digest" in done.stderr and "missing" in done.stderr
    checked, problems = verify_content(ledger)
    assert checked == 6 and [(p.seq, p.problem) for p in problems] == [
        (4, "altered"),
        (7, "missing"),
    ]


def test_export_refuses_a_tampered_policy_text(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db", 3)
    texts = ["[request_definition]\nr = sub, obj, act\n", "p, role:x, y, z\n"]
    ledger.append(
        LedgerEvent(
            idempotency_key="policy.loaded:v1",
            kind="policy.loaded",
            policy_version="v1",
            payload={"model_digest": digest(texts[0]), "policy_digest": digest(texts[1])},
        ),
        texts,
    )
    ledger.append(
        LedgerEvent(idempotency_key="d", kind="decision", workflow_id="wf-p", policy_version="v1")
    )
    key = Ed25519PrivateKey.generate()
    assert build_bundle(ledger, "wf-p", "{}", key).content
    _sql(
        ledger,
        f"UPDATE ledger_blobs SET content='\"p, role:x, *, *\"' WHERE digest='{digest(texts[1])}'",
    )
    with pytest.raises(LedgerError) as refused:
        build_bundle(ledger, "wf-p", "{}", key)
    message = str(refused.value)
    assert (
        "policy version 'v1'" in message
        and "\n" not in message
        and "tether audit verify" in message
    )


def test_verifying_no_database_or_no_ledger_is_an_error(tmp_path: Path) -> None:
    missing = _cli(tmp_path, "verify", db="typo.db")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr and not (tmp_path / "typo.db").exists()
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    other = _cli(tmp_path, "verify", db="other.db")
    assert other.returncode == 2 and "holds no Tether ledger" in other.stderr
    with pytest.raises(LedgerError):
        existing_ledger(f"sqlite:///{tmp_path / 'again.db'}")
    assert not (tmp_path / "again.db").exists()


# -- every tampering, detected with pinned keys ------------------------------------------

TAMPERS = [
    "edit",
    "delete",
    "swap",
    "truncate",
    "rechain",
    "snapshot",
    "content",
    "resigned-checkpoint",
    "resigned-bundle",
]


def _audit(ledger: Ledger, cp: Checkpoint, trust: Trust) -> bool:
    """What `tether audit verify --against` decides: chain, checkpoint, content."""
    return verify_against(ledger, cp, trust).ok and not verify_content(ledger)[1]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=4, max_value=20),
    tamper=st.sampled_from(TAMPERS),
    data=st.data(),
)
def test_any_tampering_is_detected_with_pinned_keys(
    n: int, tamper: str, data: st.DataObject
) -> None:
    folder = Path(tempfile.mkdtemp())
    try:
        key = Ed25519PrivateKey.generate()
        mallory = Ed25519PrivateKey.generate()
        trust = Trust.gather([_public(key)])
        ledger = Ledger(make_engine(f"sqlite:///{folder / 'l.db'}"))
        cut = data.draw(st.integers(min_value=1, max_value=n - 1))
        _fill(ledger, cut)
        shutil.copy(folder / "l.db", folder / "snap.db")  # a backup taken along the way
        _fill(ledger, n - cut, start=cut)
        cp = sign(tree_head(ledger), key)
        bundle = build_bundle(ledger, "wf-1", "{}", key)
        assert _audit(ledger, cp, trust)
        assert verify_bundle(bundle.model_dump_json().encode(), trust) == []
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
        elif tamper == "rechain":
            _sql(ledger, f"UPDATE ledger_events SET outcome='forged' WHERE seq={a}")
            _rechain(ledger)
        elif tamper == "snapshot":
            ledger.engine.dispose()
            shutil.copy(folder / "snap.db", folder / "l.db")
            ledger = Ledger(make_engine(f"sqlite:///{folder / 'l.db'}"))
        elif tamper == "content":
            with ledger.engine.connect() as conn:
                refs = [r[0] for r in conn.execute(text("SELECT digest FROM ledger_blobs"))]
            ref = data.draw(st.sampled_from(sorted(refs)))
            if data.draw(st.booleans()):
                _sql(ledger, f"DELETE FROM ledger_blobs WHERE digest='{ref}'")
            else:
                _sql(ledger, f"UPDATE ledger_blobs SET content='\"x\"' WHERE digest='{ref}'")
        elif tamper == "resigned-checkpoint":
            _sql(ledger, f"UPDATE ledger_events SET actor='mallory' WHERE seq={a}")
            _rechain(ledger)
            cp = sign(tree_head(ledger), mallory)  # the forger's own checkpoint
        if tamper == "resigned-bundle":
            _sql(ledger, f"UPDATE ledger_events SET actor='mallory' WHERE seq={a}")
            _rechain(ledger)
            forged = build_bundle(ledger, "wf-1", "{}", mallory)
            assert verify_bundle(forged.model_dump_json().encode(), trust)
        else:
            assert not _audit(ledger, cp, trust), tamper
        ledger.engine.dispose()
    finally:
        shutil.rmtree(folder)


def test_the_consoles_checkpoint_check_uses_the_pinned_keys(tmp_path: Path) -> None:
    from tether.console.app import ConsoleState
    from tether.console.audit_checks import _verification
    from tether.core.config import Settings
    from tether.verification.sink import DirectorySink

    url = f"sqlite:///{tmp_path / 'l.db'}"
    _ledger(tmp_path / "l.db", 5)
    key, mallory = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    folder = tmp_path / "checkpoints"
    plain = Settings(database_url=url, console_checkpoint_dir=folder)
    signed = sign(tree_head(ConsoleState(plain).ledger), key)
    DirectorySink(folder).put(signed)

    def check(pins: list[str]) -> tuple[bool, str, int]:
        state = ConsoleState(plain.model_copy(update={"audit_trusted_keys": pins}))
        found = _verification(state)
        state.ledger.engine.dispose()
        return found["against"].ok, found["against"].problem, found["checkpoint"].size

    ok, problem, size = check([])
    assert not ok and "no pinned key" in problem and size == 5
    ok, problem, _ = check([_public(mallory)])
    assert not ok and "not pinned" in problem
    assert check([_public(key)])[0]
    # A larger checkpoint someone else signed, dropped in the folder, is passed over.
    ledger = Ledger(make_engine(url))
    _fill(ledger, 2, start=5)
    DirectorySink(folder).put(sign(tree_head(ledger), mallory))
    ledger.engine.dispose()
    ok, _, size = check([_public(key)])
    assert ok and size == 5
