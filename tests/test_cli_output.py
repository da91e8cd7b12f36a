"""What `tether` prints: listings that never cut an id and show `[tier: rule]` as
written, tab-separated lines when piped. The commands run as people run them, in a
subprocess (`cli`); what they print when they fail is in test_cli_failures.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text

from tests.conftest import ROOT
from tether.cli.common import emit_table, err, out
from tether.core.config import DEFAULT_POLICY_DIR
from tether.core.db import make_engine
from tether.governance.approvals import PendingApproval
from tether.governance.budget import AgentBudget, Budgets
from tether.governance.feed import FeedStore
from tether.governance.kill import KillSwitches
from tether.governance.policy_store import PolicyStore
from tether.governance.reviews import ReviewWindow
from tether.governance.store import ApprovalStore
from tether.verification.events import LedgerEvent
from tether.verification.ledger import Ledger

CONFIG = ROOT / "tether.toml"
POLICY = ROOT / "examples" / "accounts_payable" / "policy.csv"
# Longer than any column an 80-column table gives an id: Rich used to end them in "…".
HEX = "0123456789abcdef" * 4
REQUEST = f"apr-{HEX}"
WORKFLOW = f"PayInvoice-{HEX}"
AGENT = f"agent:ap-clerk-{HEX}"
SUMMARY = "payments.pay vendor/acme [notify: ap-pay-medium] by agent:ap-clerk -> allowed"
# Variables that make Rich treat a pipe as a terminal, or pick a width: each test sets its own.
RICH_VARIABLES = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES")


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`tether ARGS` with stdout and stderr piped, on `tmp_path`'s database and this
    repository's tether.toml (the accounts-payable app), `env` on top."""
    variables = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TETHER_") and k not in RICH_VARIABLES
    }
    variables |= {
        "TETHER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "TETHER_CONFIG": str(CONFIG),
        "TETHER_APPROVAL_KEY": str(tmp_path / "keys" / "approval.pem"),
        "TETHER_CHECKPOINT_KEY": str(tmp_path / "keys" / "checkpoint.pem"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "tether.cli", *args],
        env=variables,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single line a failing command wrote to stderr (it exited `code`, no traceback)."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def rows_of(done: subprocess.CompletedProcess[str]) -> list[list[str]]:
    """A piped listing's lines, split at tabs (the header first)."""
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]


# -- listings ---------------------------------------------------------------------------


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Path]:
    """`tmp_path`'s database with one of everything a listing shows, all with long ids."""
    engine = make_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    ledger = Ledger(engine)
    ApprovalStore(engine).open(
        PendingApproval(
            request_id=REQUEST,
            workflow_id=WORKFLOW,
            run_id="run-1",
            step=2,
            agent="agent:ap-clerk",
            action="payments.pay",
            resource="vendor/acme",
            args_summary='{"amount": 25000, "memo": "[urgent] pay"}',
            args_digest="sha256:" + HEX,
            reason="over 10000",
            rule="ap-pay-large",
            policy_version="sha256:" + HEX,
            requested_by="user:bob",
            approver_role="role:finance",
        )
    )
    for step, (tier, rule, outcome) in enumerate(
        [("notify", "ap-pay-medium", "allowed"), ("auto", "ap-read", "allowed")], start=1
    ):
        ledger.append(
            LedgerEvent(
                idempotency_key=f"{WORKFLOW}-{step}",
                kind="decision",
                workflow_id=WORKFLOW,
                step=step,
                agent="agent:ap-clerk",
                action="payments.pay" if step == 1 else "invoices.read",
                resource="vendor/acme" if step == 1 else "invoice/1",
                tier=tier,
                rule=rule,
                actor="agent:ap-clerk",
                outcome=outcome,
                payload={"context": {"amount": 4800}},
            )
        )
    KillSwitches(engine, ledger).engage(
        "agent", AGENT, reason="[maintenance] window", engaged_by="user:ops"
    )
    Budgets(engine, ledger).set(
        AgentBudget(subject=AGENT, window_seconds=3600, max_tokens=1000), actor="user:ops"
    )
    PolicyStore(engine, ledger).push(
        (DEFAULT_POLICY_DIR / "model.conf").read_text(), POLICY.read_text(), "user:carol"
    )
    FeedStore(engine).open_review(
        ReviewWindow(
            review_id=f"{WORKFLOW}-review-1",
            workflow_id=WORKFLOW,
            run_id="run-1",
            step=1,
            agent="agent:ap-clerk",
            action="payments.pay",
            resource="vendor/acme",
            tool="pay",
            rule="ap-pay-medium",
            policy_version="sha256:" + HEX,
            until=datetime.now(UTC) + timedelta(hours=1),
        )
    )
    engine.dispose()
    yield tmp_path


def test_piped_listings_are_tab_separated_and_cut_nothing(filled: Path) -> None:
    approvals = rows_of(cli(filled, "approvals", "list"))
    assert approvals[0] == [
        "id",
        "workflow",
        "action",
        "resource",
        "arguments",
        "why",
        "asked by",
        "approvers",
        "deadline",
    ]
    assert approvals[1:] == [
        [
            REQUEST,
            WORKFLOW,
            "payments.pay",
            "vendor/acme",
            '{"amount": 25000, "memo": "[urgent] pay"}',
            "ap-pay-large",
            "agent:ap-clerk for user:bob",
            "role:finance",
            "-",
        ]
    ]

    shown = rows_of(cli(filled, "audit", "show", WORKFLOW))
    assert shown[0] == ["+ms", "took ms", "step", "event", "what", "seq"]
    read = "invoices.read invoice/1 [auto: ap-read] by agent:ap-clerk -> allowed"
    assert [row[2:] for row in shown[1:]] == [
        ["1", "decision", SUMMARY, "1"],
        ["2", "decision", read, "2"],
    ]

    what_if = rows_of(cli(filled, "audit", "what-if", WORKFLOW, "--policy", str(POLICY)))
    assert what_if[0] == ["step", "action", "resource", "recorded", "would be", "changed"]
    assert what_if[1][:4] == ["1", "payments.pay", "vendor/acme", "notify (ap-pay-medium)"]

    kills = rows_of(cli(filled, "kill", "status"))
    assert kills[0][:4] == ["scope", "value", "reason", "engaged by"]
    assert kills[1][:4] == ["agent", AGENT, "[maintenance] window", "user:ops"]

    budgets = rows_of(cli(filled, "budget", "show"))
    assert budgets[0] == ["subject", "window", "tokens", "cost", "open", "on breach"]
    assert budgets[1][:3] == [AGENT, "3600s", "0 / 1000"]

    history = rows_of(cli(filled, "policy", "history"))
    assert history[0] == ["id", "version", "author", "pushed at", "active"]
    (version,) = history[1:]
    engine = make_engine(f"sqlite:///{filled / 'cli.db'}")
    pushed = PolicyStore(engine, Ledger(engine)).history()
    engine.dispose()
    assert version[:2] == [str(pushed[0].id), pushed[0].version]
    assert (version[2], version[4]) == ("user:carol", "yes")

    reviews = rows_of(cli(filled, "review", "list"))
    assert reviews[0][:4] == ["workflow", "step", "action", "resource"]
    assert reviews[1][:4] == [WORKFLOW, "1", "payments.pay", "vendor/acme"]

    # The title (a count) goes to stderr, so stdout is the data alone.
    listed = cli(filled, "approvals", "list")
    assert listed.stderr.strip() == "1 open approval request(s)"


def test_listings_keep_json(filled: Path) -> None:
    for args, key, value in [
        (("approvals", "list"), "request_id", REQUEST),
        (("audit", "show", WORKFLOW), "rule", "ap-pay-medium"),
        (("kill", "status"), "value", AGENT),
        (("review", "list"), "workflow_id", WORKFLOW),
    ]:
        done = cli(filled, *args, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)[0][key] == value, args


@pytest.mark.parametrize("columns", [200, 60])
def test_a_terminal_gets_a_table_with_brackets_and_no_ellipsis(filled: Path, columns: int) -> None:
    """`[notify: ap-pay-medium]` is a tier and a rule, not Rich markup; no id is cut."""
    terminal = {"TTY_COMPATIBLE": "1", "COLUMNS": str(columns)}
    shown = cli(filled, "audit", "show", WORKFLOW, **terminal)
    assert shown.returncode == 0, shown.stderr
    assert "┃" in shown.stdout  # a table, not tab-separated lines
    assert "…" not in shown.stdout
    assert "[notify:" in shown.stdout and "[auto:" in shown.stdout
    if columns == 200:
        assert SUMMARY in shown.stdout
    listed = cli(filled, "approvals", "list", **terminal)
    assert listed.returncode == 0, listed.stderr
    assert "…" not in listed.stdout
    assert REQUEST in _column(listed.stdout, 0)
    assert WORKFLOW in _column(listed.stdout, 1)


def _column(table: str, index: int) -> str:
    """The text of one column of a rendered table, its folded lines joined back up."""
    cells = [line.split("│")[index + 1].strip() for line in table.splitlines() if "│" in line]
    return "".join(cells)


@pytest.mark.parametrize("width", [30, 50, 80, 120, 200])
def test_emit_table_never_cuts_a_cell(width: int) -> None:
    file = StringIO()
    console = Console(file=file, width=width, force_terminal=True, color_system=None)
    emit_table(
        "title",
        ("id", "why", "note"),
        [(REQUEST, "[notify: rule-a]", Text("styled [red]text[/]", style="bold"))],
        ids=("id",),
        console=console,
    )
    table = file.getvalue()
    assert "…" not in table
    assert _column(table, 0) == REQUEST
    assert _column(table, 1).replace(" ", "") == "[notify:rule-a]"
    assert _column(table, 2).replace(" ", "") == "styled[red]text[/]"
    if width >= len(REQUEST) + 12:  # room for the id on one line: it gets one
        assert REQUEST in table


def test_emit_table_off_a_terminal_escapes_what_would_break_a_line() -> None:
    file = StringIO()
    console = Console(file=file, force_terminal=False)
    emit_table("t", ("a", "b"), [("x\ty", "line 1\nline 2\\")], console=console)
    assert file.getvalue() == "a\tb\nx\\ty\tline 1\\nline 2\\\\\n"
    with pytest.raises(ValueError, match="must fit the columns"):
        emit_table("t", ("a", "b"), [("only one",)], console=console)
    with pytest.raises(ValueError, match="must fit the columns"):
        emit_table("t", ("a", "b"), [], ids=("c",), console=console)


def test_the_consoles_print_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    """`out` and `err` never read markup nor highlight: what a command prints (a rule in
    brackets, a value that looks like a tag) is what the reader gets, without each print
    saying so."""
    written = "[notify: ap-pay-medium] [bold]not bold[/] 'quoted' 123"
    out.print(written)
    err.print(written)
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == (f"{written}\n", f"{written}\n")
