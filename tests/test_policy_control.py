"""A bad policy never bends the control plane: refused at load, recorded, repairable.

Red-team findings: an unreadable policy file was refused with a log line only; an empty
policy, an approver chain nobody can satisfy and a condition that cannot be evaluated
loaded (and failed closed at decision time); a malformed active version in the database
store blocked every later push and every new worker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from tests.test_policy_ops import DEFAULT_TEXT, MODEL, MODEL_TEXT, SMALL_DENIED
from tether.core.config import Settings
from tether.core.db import make_engine
from tether.errors import PolicyError
from tether.governance.policy_store import PolicyStore, PolicyVersionRow
from tether.governance.reload import FileSource, PolicyHolder, StoreSource
from tether.verification.ledger import Ledger
from tether.worker import Runtime

APPROVE_ROW = "p, role:ap-agent, vendor/:name, payments.pay, r.ctx.amount > 0, approve, r1, {}, -\n"
BAD = {
    "empty": ("# nothing here\n", "[empty]"),
    "chain": (APPROVE_ROW.format("role:x#0>"), "[approver-chain]"),
    "quorum": (
        APPROVE_ROW.format("role:ap-approver#3") + "g2, user:a, role:ap-approver\n",
        "[approver-chain]",
    ),
    "unknown name": (
        "p, role:ap-agent, vendor/:n, pay, amount > 5, auto, r1, -, -\n",
        "[condition]",
    ),
    "not the request": (
        "p, role:ap-agent, vendor/:n, pay, r.env.x == 1, auto, r1, -, -\n",
        "[condition]",
    ),
    "a call": (
        "p, role:ap-agent, vendor/:n, pay, __import__('os'), auto, r1, -, -\n",
        "[condition]",
    ),
}


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger(make_engine(f"sqlite:///{tmp_path / 'l.db'}"))


def test_an_unreadable_policy_file_is_recorded_and_the_last_good_stays(tmp_path: Path) -> None:
    path = tmp_path / "policy.csv"
    path.write_text(DEFAULT_TEXT)
    ledger = _ledger(tmp_path)
    holder = PolicyHolder.load(FileSource(MODEL, path), ledger)
    good = holder.current()
    path.unlink()
    for _ in range(2):  # a poll that keeps failing records it once
        with pytest.raises(PolicyError, match="cannot read"):
            holder.reload()
    path.write_bytes(b"p, role:ap-agent, vendor/\xff, pay, True, auto, r1, -, -\n")
    with pytest.raises(PolicyError, match="not UTF-8"):
        holder.reload()
    assert holder.current() is good
    rejected = ledger.events_of_kind("policy.rejected")
    assert [("cannot read" in str(e.payload["error"]), e.policy_version) for e in rejected] == [
        (True, good.version),
        (False, good.version),
    ]
    assert "not UTF-8" in str(rejected[1].payload["error"])
    assert rejected[0].actor == "file:policy.csv"
    # At startup too: nothing to fall back on, refused and recorded.
    with pytest.raises(PolicyError, match="cannot read"):
        PolicyHolder.load(FileSource(MODEL, tmp_path / "missing.csv"), ledger)
    assert len(ledger.events_of_kind("policy.rejected")) == 3
    ledger.engine.dispose()


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_policy_nobody_can_use_is_refused_at_load_keeping_the_last_good(
    tmp_path: Path, case: str
) -> None:
    text, check = BAD[case]
    path = tmp_path / "policy.csv"
    path.write_text(DEFAULT_TEXT)
    ledger = _ledger(tmp_path)
    holder = PolicyHolder.load(FileSource(MODEL, path), ledger)
    good = holder.current()
    path.write_text(text)
    with pytest.raises(PolicyError) as refused:
        holder.reload()
    assert check in str(refused.value)
    assert holder.current() is good
    [rejected] = ledger.events_of_kind("policy.rejected")
    assert check in str(rejected.payload["error"])
    # The same policy pushed to the store is refused the same way.
    store = PolicyStore(ledger.engine, ledger)
    with pytest.raises(PolicyError, match=check.replace("[", r"\[").replace("]", r"\]")):
        store.push(MODEL_TEXT, text, "user:alice")
    ledger.engine.dispose()


def _activate_malformed(store: PolicyStore, policy_text: str) -> None:
    """What an old push (before a lint check) or a hand edit of the table leaves."""
    with Session(store.engine) as session, session.begin():
        session.execute(update(PolicyVersionRow).values(active=False))
        session.add(
            PolicyVersionRow(
                digest="sha256:bad",
                model_text=MODEL_TEXT,
                policy_text=policy_text,
                author="user:mallory",
                created_at="2026-01-01T00:00:00+00:00",
                active=True,
            )
        )


@pytest.mark.parametrize("malformed", ["p, only, three\n", "# empty\n"])
def test_a_valid_push_always_repairs_a_malformed_active_version(
    tmp_path: Path, malformed: str
) -> None:
    ledger = _ledger(tmp_path)
    store = PolicyStore(ledger.engine, ledger)
    _activate_malformed(store, malformed)
    with pytest.raises(PolicyError):  # nothing good to start on yet
        PolicyHolder.load(StoreSource(store), ledger)
    pushed = store.push(MODEL_TEXT, DEFAULT_TEXT, "user:alice")
    assert store.active() is not None and store.active().version == pushed.version  # type: ignore[union-attr]
    holder = PolicyHolder.load(StoreSource(store), ledger)
    assert holder.current().version == pushed.version
    ledger.engine.dispose()


def test_a_new_worker_starts_on_the_last_good_version_until_the_store_is_repaired(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"policy_source": "database"})
    ledger = Ledger(make_engine(settings.database_url))
    store = PolicyStore(ledger.engine, ledger)
    good = store.push(MODEL_TEXT, DEFAULT_TEXT, "user:alice")
    _activate_malformed(store, "p, only, three\n")
    runtime = Runtime.from_settings(settings)  # starts: it does not refuse to run
    try:
        assert runtime.policies.current().version == good.version
        [rejected] = ledger.events_of_kind("policy.rejected")
        assert "'p' row needs 8 fields" in str(rejected.payload["error"])
        assert runtime.policies.reload() is False  # the bad version is not retried
        repaired = store.push(MODEL_TEXT, SMALL_DENIED, "user:carol")
        assert runtime.policies.reload() is True
        assert runtime.policies.current().version == repaired.version
    finally:
        runtime.ledger.engine.dispose()
        ledger.engine.dispose()
