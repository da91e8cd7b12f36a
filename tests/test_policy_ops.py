"""Policy operations: lint findings, regression-test files, the database store, atomic
reloads recorded in the ledger, agents refused, and a running worker following a change."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ap.workflows import InvoiceResult
from temporalio.client import Client

from tests.conftest import EXAMPLE, start_invoice
from tests.test_ledger_postgres import URL as PG_URL
from tests.test_ledger_postgres import _schema
from tether.core.config import Settings
from tether.core.db import make_engine
from tether.errors import PolicyError
from tether.governance.lint import lint
from tether.governance.policy_store import PolicyStore
from tether.governance.policy_tests import run_policy_tests
from tether.governance.reload import FileSource, PolicyHolder, PolicyTexts, StoreSource
from tether.governance.types import DecisionRequest, Tier
from tether.verification.events import digest
from tether.verification.ledger import Ledger
from tether.worker import Runtime, build_worker

POLICIES = Path(__file__).resolve().parent.parent / "governance" / "policies"
MODEL = POLICIES / "model.conf"
MODEL_TEXT = MODEL.read_text(encoding="utf-8")
DEFAULT_TEXT = (EXAMPLE / "policy.csv").read_text(encoding="utf-8")
ROOT = Path(__file__).resolve().parent.parent

# --- lint ------------------------------------------------------------------------------

CASES = {
    "regex-catastrophic-resource": (
        "p, role:r, vendor/(a+)+, pay, True, auto, r-cat, -, -\n",
        (1, "error", "regex-catastrophic", "r-cat", "'vendor/(a+)+'"),
    ),
    "regex-catastrophic-condition": (
        "\np, role:r, vendor/:n, read, \"regexMatch(r.ctx.name, '(a|aa)*')\", auto, r-re, -, -\n",
        (2, "error", "regex-catastrophic", "r-re", "'(a|aa)*'"),
    ),
    "regex-invalid-condition": (
        "p, role:r, vendor/:n, read, \"regexMatch(r.ctx.name, 'x(')\", auto, r-bad, -, -\n",
        (1, "error", "regex-invalid", "r-bad", "'x('"),
    ),
    "separator-in-value": (
        '# header\np, role:r, "vendor/a,b", pay, True, auto, r-sep, -, -\n',
        (2, "error", "separator", "r-sep", "'vendor/a,b'"),
    ),
    "quote-in-value": (
        "p, role:r, vendor/o'brien, pay, True, auto, r-q, -, -\n",
        (1, "error", "separator", "r-q", '"vendor/o\'brien"'),
    ),
    "comma-in-condition": (
        'p, role:r, vendor/:n, pay, "r.ctx.a == 1, 2", auto, r-comma, -, -\n',
        (1, "error", "separator", "r-comma", "'r.ctx.a == 1, 2'"),
    ),
    "always-false": (
        "p, role:r, vendor/:n, pay, 1 > 2 && True, auto, r-false, -, -\n",
        (1, "error", "unreachable", "r-false", "'1 > 2 && True'"),
    ),
    "unknown-subject": (
        "p, role:ghost, vendor/:n, pay, True, auto, r-ghost, -, -\n",
        (1, "error", "unreachable", "r-ghost", "'role:ghost'"),
    ),
    "shadowed": (
        "p, role:r, vendor/:n, pay, r.ctx.amount > 5, auto, r-narrow, -, -\n"
        "p, role:r, vendor/:n, pay, True, deny, r-wide, -, -\n",
        (1, "warning", "unreachable", "r-narrow", "'r-wide' (line 2)"),
    ),
    "contradiction": (
        "p, role:r, vendor/:n, pay, r.ctx.amount > 5, auto, r-auto, -, -\n"
        "p, role:r, vendor/acme, pay, r.ctx.amount  >  5, notify, r-notify, -, -\n",
        (1, "error", "contradiction", "r-auto", "'r-notify' (notify, line 2)"),
    ),
    "invalid": (
        "\n\np, role:r, vendor/:n, pay, True, maybe, r-x, -, -\n",
        (3, "error", "invalid", "", "'maybe'"),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lint_finds_each_problem_on_its_line(name: str) -> None:
    policy, (line, severity, check, rule, named) = CASES[name]
    findings = lint(MODEL_TEXT, policy + "g, agent:a, role:r\n")
    assert len(findings) == 1, findings
    found = findings[0]
    assert (found.line, found.severity, found.check, found.rule) == (line, severity, check, rule)
    assert named in found.message


def test_lint_flags_a_default_allow_effect() -> None:
    model = MODEL_TEXT.replace("some(where (p.eft == allow))", "!some(where (p.eft == deny))")
    [found] = lint(model, DEFAULT_TEXT)
    assert (found.line, found.severity, found.check) == (0, "error", "default-allow")
    assert "'!some(where (p.eft == deny))'" in found.message
    assert "some(where (p.eft == allow))" in found.message


def test_safe_patterns_and_distinct_rules_are_clean() -> None:
    policy = (
        "p, role:r, vendor/:n, pay, r.ctx.amount <= 5, auto, r-small, -, -\n"
        "p, role:r, vendor/:n, pay, r.ctx.amount > 5, approve, r-big, role:boss, 1h\n"
        "p, role:r, vendor/*, read, \"regexMatch(r.ctx.tag, '^(foo|bar)+$')\", auto, r-tag, -, -\n"
        "p, agent:b, invoice/:id, read, True, auto, r-direct, -, -\n"
        "g, agent:a, role:r\ng2, user:x, role:boss\n"
    )
    assert lint(MODEL_TEXT, policy) == []
    assert lint(MODEL_TEXT, DEFAULT_TEXT) == []


# --- the CLI ---------------------------------------------------------------------------


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "TETHER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "COLUMNS": "200",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "tether.cli.main", *args],
        env=full,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_policy_lint_exit_codes_and_json(tmp_path: Path) -> None:
    clean = _cli(tmp_path, "policy", "lint", str(EXAMPLE / "policy.csv"))
    assert clean.returncode == 0, clean.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text(
        CASES["contradiction"][0]
        + CASES["shadowed"][0].replace("r-", "s-").replace("pay", "read")
        + "g, agent:a, role:r\n"
    )
    done = _cli(tmp_path, "policy", "lint", str(bad))
    assert done.returncode == 1, done.stdout
    assert "contradiction" in done.stdout and "r-notify" in done.stdout
    as_json = _cli(tmp_path, "policy", "lint", str(bad), "--json")
    assert as_json.returncode == 1
    found = {(f["line"], f["check"], f["severity"]) for f in json.loads(as_json.stdout)}
    assert found == {(1, "contradiction", "error"), (3, "unreachable", "warning")}
    warnings_only = tmp_path / "warn.csv"
    warnings_only.write_text(CASES["shadowed"][0] + "g, agent:a, role:r\n")
    assert _cli(tmp_path, "policy", "lint", str(warnings_only)).returncode == 0
    missing = _cli(tmp_path, "policy", "lint", str(tmp_path / "absent.csv"))
    assert missing.returncode == 2 and "absent.csv" in missing.stderr


def test_policy_explain_json(tmp_path: Path) -> None:
    done = _cli(
        tmp_path,
        *("policy", "explain", "--agent", "agent:ap-clerk", "--action", "payments.pay"),
        *("--resource", "vendor/acme", "--context", '{"amount": 4800}', "--json"),
    )
    assert done.returncode == 0, done.stderr
    decision = json.loads(done.stdout)
    assert (decision["tier"], decision["rule"]) == ("notify", "ap-pay-medium")
    assert decision["policy_version"].startswith("sha256:")


# --- policy test files -----------------------------------------------------------------


def test_the_default_policy_passes_its_own_tests(tmp_path: Path) -> None:
    tests = EXAMPLE / "policy.tests.toml"
    _, results = run_policy_tests(tests, MODEL, EXAMPLE / "policy.csv")
    assert len(results) >= 9 and all(r.passed for r in results), results
    done = _cli(tmp_path, "policy", "test", str(tests))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(results)} passed, 0 failed" in done.stderr  # the title; rows on stdout


def test_a_failing_case_is_named_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text(DEFAULT_TEXT.replace("<= 1000, auto", "<= 100, auto"))
    tests = tmp_path / "p.tests.toml"
    tests.write_text(
        'policy = "p.csv"\n'
        "[[case]]\nname = 'reads are fine'\nagent = 'agent:ap-clerk'\naction = 'invoices.read'\n"
        "resource = 'invoice/1'\nexpect = 'auto'\n"
        "[[case]]\nname = 'small stays auto'\nagent = 'agent:ap-clerk'\naction = 'payments.pay'\n"
        "resource = 'vendor/acme'\ncontext = { amount = 250 }\nexpect = 'auto'\n"
        "rule = 'ap-pay-small'\n"
    )
    _, results = run_policy_tests(tests, MODEL, EXAMPLE / "policy.csv")
    assert [r.passed for r in results] == [True, False]
    assert (results[1].tier, results[1].rule) == (Tier.DENY, "default-deny")
    done = _cli(tmp_path, "policy", "test", str(tests))
    assert done.returncode == 1
    assert (
        "FAILED 'small stays auto': expected auto by rule 'ap-pay-small', "
        "got deny by rule 'default-deny'"
    ) in done.stderr
    tests.write_text(
        "[[case]]\nagent = 'agent:a'\naction = 'x'\nresource = 'y'\nexpect = 'maybe'\n"
    )
    bad = _cli(tmp_path, "policy", "test", str(tests))
    assert bad.returncode == 2 and "case 1" in bad.stderr and "'maybe'" in bad.stderr


# --- the store -------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if not PG_URL.startswith("postgresql"):
        pytest.skip("set TETHER_TEST_DATABASE_URL to a PostgreSQL URL to run these")
    with _schema() as url:
        yield url


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    led = Ledger(make_engine(db_url))
    yield led
    led.engine.dispose()


SMALL_DENIED = DEFAULT_TEXT.replace("auto, ap-pay-small", "deny, ap-pay-small")


def test_push_activates_and_records_who_and_both_digests(ledger: Ledger) -> None:
    store = PolicyStore(ledger.engine, ledger)
    first = store.push(MODEL_TEXT, DEFAULT_TEXT, "user:alice")
    second = store.push(MODEL_TEXT, SMALL_DENIED, "user:carol")
    assert [v.id for v in store.history()] == [second.id, first.id]
    assert [v.active for v in store.history()] == [True, False]
    assert store.active() == second and second.version != first.version
    changed = ledger.events_of_kind("policy.changed")
    assert [(e.actor, e.policy_version) for e in changed] == [
        ("user:alice", first.version),
        ("user:carol", second.version),
    ]
    assert changed[1].payload["previous_version"] == first.version
    assert changed[1].payload["previous_policy_digest"] == digest(DEFAULT_TEXT)
    assert changed[1].payload["policy_digest"] == digest(SMALL_DENIED)
    assert ledger.blob(digest(SMALL_DENIED)) == SMALL_DENIED
    assert ledger.verify().ok


@pytest.mark.parametrize("actor", ["agent:ap-clerk", "agent:someone-else", "role:ap-agent"])
def test_an_agent_identity_is_refused_recorded_and_changes_nothing(
    ledger: Ledger, actor: str
) -> None:
    store = PolicyStore(ledger.engine, ledger)
    good = store.push(MODEL_TEXT, DEFAULT_TEXT, "user:alice")
    loosened = DEFAULT_TEXT.replace("deny, ap-no-bank-changes", "auto, ap-no-bank-changes")
    with pytest.raises(PolicyError, match=f"{actor!r} is an agent identity"):
        store.push(MODEL_TEXT, loosened, actor)
    assert store.active() == good and len(store.history()) == 1
    [refused] = ledger.events_of_kind("policy.refused")
    assert (refused.actor, refused.outcome, refused.policy_version) == (
        actor,
        "refused",
        good.version,
    )
    assert refused.payload["policy_digest"] == digest(loosened)
    assert len(ledger.events_of_kind("policy.changed")) == 1


def test_a_policy_that_fails_lint_is_refused_and_recorded(ledger: Ledger) -> None:
    store = PolicyStore(ledger.engine, ledger)
    good = store.push(MODEL_TEXT, DEFAULT_TEXT, "user:alice")
    bad = DEFAULT_TEXT + "p, role:ap-agent, vendor/(a+)+, x, True, auto, evil, -, -\n"
    with pytest.raises(PolicyError, match="regex-catastrophic"):
        store.push(MODEL_TEXT, bad, "user:bob")
    with pytest.raises(PolicyError, match="'maybe'"):
        store.push(MODEL_TEXT, "p, role:r, v, a, True, maybe, r, -, -\n", "user:bob")
    assert store.active() == good and len(store.history()) == 1
    assert [e.actor for e in ledger.events_of_kind("policy.rejected")] == ["user:bob"] * 2


# --- reload ----------------------------------------------------------------------------


def _pay(holder: PolicyHolder, amount: float = 250) -> tuple[Tier, str]:
    d = holder.current().decide(
        DecisionRequest(
            agent="agent:ap-clerk",
            action="payments.pay",
            resource="vendor/acme",
            context={"amount": amount},
        )
    )
    return d.tier, d.policy_version


def test_file_reload_swaps_records_and_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "policy.csv"
    path.write_text(DEFAULT_TEXT)
    ledger = Ledger(make_engine(f"sqlite:///{tmp_path / 'l.db'}"))
    holder = PolicyHolder.load(FileSource(MODEL, path), ledger)
    old = holder.current()
    assert holder.reload() is False and ledger.events() == []

    path.write_text(SMALL_DENIED)
    assert holder.reload() is True
    new = holder.current()
    assert _pay(holder) == (Tier.DENY, new.version) and new.version != old.version
    [changed] = ledger.events_of_kind("policy.changed")
    assert (changed.actor, changed.policy_version) == ("file:policy.csv", new.version)
    assert changed.payload["previous_version"] == old.version
    assert changed.payload["policy_digest"] == digest(SMALL_DENIED)
    assert ledger.blob(digest(SMALL_DENIED)) == SMALL_DENIED

    for broken in (
        "p, role:ap-agent, vendor/:n, pay, True, maybe, x, -, -\n",
        SMALL_DENIED + "p, role:nobody, vendor/:n, pay, True, auto, dead, -, -\n",
    ):
        path.write_text(broken)
        with pytest.raises(PolicyError):
            holder.reload()
        assert holder.current() is new
    rejected = ledger.events_of_kind("policy.rejected")
    assert len(rejected) == 2 and "'role:nobody'" in str(rejected[1].payload["error"])
    assert all(e.policy_version == new.version for e in rejected)
    assert len(ledger.events_of_kind("policy.changed")) == 1
    ledger.engine.dispose()


def test_no_decision_after_reload_uses_the_old_version(tmp_path: Path) -> None:
    path = tmp_path / "policy.csv"
    path.write_text(DEFAULT_TEXT)
    holder = PolicyHolder.load(FileSource(MODEL, path))
    old = holder.current().version
    reloaded = threading.Event()
    stop = threading.Event()
    stale: list[str] = []
    seen: dict[str, int] = {}

    def decide() -> None:
        while not stop.is_set():
            after = reloaded.is_set()  # read before deciding: the swap already happened
            tier, version = _pay(holder)
            seen[version] = seen.get(version, 0) + 1
            if after and (version == old or tier is not Tier.DENY):
                stale.append(version)

    threads = [threading.Thread(target=decide) for _ in range(8)]
    for t in threads:
        t.start()
    while sum(seen.values()) < 200:
        time.sleep(0.001)
    path.write_text(SMALL_DENIED)
    assert holder.reload() is True
    reloaded.set()
    new = holder.current().version
    while seen.get(new, 0) < 200:
        time.sleep(0.001)
    stop.set()
    for t in threads:
        t.join()
    assert stale == []
    assert seen[old] >= 200 and seen[new] >= 200


def test_store_source_reload_follows_pushes(tmp_path: Path) -> None:
    ledger = Ledger(make_engine(f"sqlite:///{tmp_path / 's.db'}"))
    store = PolicyStore(ledger.engine, ledger)
    with pytest.raises(PolicyError, match="tether policy push"):
        PolicyHolder.load(StoreSource(store), ledger)
    store.push(MODEL_TEXT, DEFAULT_TEXT, "user:alice")
    holder = PolicyHolder.load(StoreSource(store), ledger)
    pushed = store.push(MODEL_TEXT, SMALL_DENIED, "user:carol")
    assert holder.reload() is True and holder.current().version == pushed.version
    # the worker's record of the change is the push's own record, not a second one
    assert [e.actor for e in ledger.events_of_kind("policy.changed")] == [
        "user:alice",
        "user:carol",
    ]
    ledger.engine.dispose()


# --- a running worker ------------------------------------------------------------------


async def _pay_invoice(client: Client, settings: Settings) -> tuple[str, InvoiceResult]:
    handle = await start_invoice(
        client, settings, "INV-1001", text="Invoice INV-1001 from a vendor"
    )
    return handle.id, await handle.result()


@pytest.mark.parametrize("source", ["file", "database"])
async def test_a_running_worker_follows_a_policy_change(
    client: Client, settings: Settings, tmp_path: Path, source: str
) -> None:
    import asyncio

    path = tmp_path / "policy.csv"
    path.write_text(DEFAULT_TEXT)
    settings = settings.model_copy(update={"policy_path": path, "policy_source": source})
    if source == "database":
        seed = Ledger(make_engine(settings.database_url))
        PolicyStore(seed.engine, seed).push(MODEL_TEXT, DEFAULT_TEXT, "user:alice")
        seed.engine.dispose()
    runtime = Runtime.from_settings(settings)
    runtime.policies.start_polling(0.05)
    try:
        async with build_worker(client, settings, runtime):
            first_id, first = await _pay_invoice(client, settings)
            assert first.status == "paid"
            old = runtime.policy.version
            if source == "file":
                path.write_text(SMALL_DENIED)
            else:
                store = PolicyStore(runtime.ledger.engine, runtime.ledger)
                store.push(MODEL_TEXT, SMALL_DENIED, "user:carol")
            for _ in range(400):
                if runtime.policy.version != old:
                    break
                await asyncio.sleep(0.02)
            new = runtime.policy.version
            assert new != old
            second_id, second = await _pay_invoice(client, settings)
            assert second.status == "denied" and "ap-pay-small" in second.message
            [decision] = [e for e in runtime.ledger.events(second_id) if e.kind == "decision"]
            assert (decision.tier, decision.policy_version) == ("deny", new)
            [earlier] = [e for e in runtime.ledger.events(first_id) if e.kind == "decision"]
            assert earlier.policy_version == old
            [changed] = runtime.ledger.events_of_kind("policy.changed")[-1:]
            assert changed.policy_version == new and changed.payload["previous_version"] == old
            assert runtime.ledger.verify().ok
    finally:
        runtime.policies.stop_polling()
        runtime.ledger.engine.dispose()


def test_a_policy_file_caught_mid_write_is_not_loaded(tmp_path: Path) -> None:
    """A file written in place is empty for a moment (truncated, then written): a poll
    that reads it then must wait for the whole file, neither loading nor refusing it."""
    path = tmp_path / "policy.csv"
    path.write_text(DEFAULT_TEXT)
    ledger = Ledger(make_engine(f"sqlite:///{tmp_path / 'l.db'}"))
    files = FileSource(MODEL, path, settle_seconds=0.01)

    class MidWrite:
        settle_seconds = files.settle_seconds
        torn = False

        def read(self) -> PolicyTexts:
            texts = files.read()
            if self.torn:  # this read lands between the truncation and the write
                self.torn = False
                return dataclasses.replace(texts, policy_text="")
            return texts

    source = MidWrite()
    holder = PolicyHolder.load(source, ledger)
    old = holder.current()
    path.write_text(SMALL_DENIED)
    source.torn = True
    assert holder.reload() is False and holder.current() is old
    assert holder.reload() is True
    assert _pay(holder) == (Tier.DENY, holder.current().version)
    assert ledger.events_of_kind("policy.rejected") == []
    [changed] = ledger.events_of_kind("policy.changed")
    assert changed.payload["policy_digest"] == digest(SMALL_DENIED)
