"""MCP tools as governed tools, against the example's bank MCP server in a real process
(stdio: started by the worker per call; HTTP: started by the test) and the real dev server."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from tests.conftest import EXAMPLE, free_port, new_id, pending_status
from tests.mcp_app import McpCallInput, McpCallResult, McpCallWorkflow
from tether.activities.providers import Script, ScriptedProvider, ScriptEntry
from tether.core.config import Settings
from tether.core.mcp_config import McpConfig, McpServerConfig, McpToolConfig
from tether.errors import ApprovalError
from tether.runtime.approvals import decide_request, signing_key
from tether.runtime.client import start_task
from tether.runtime.replay import replay_workflow
from tether.worker import Runtime, build_worker
from tether.workflows import AgentLoopInput, AgentLoopResult, Budget

BANK = EXAMPLE / "ap" / "bank_mcp.py"
POLICY = """\
p, agent:mcp-clerk, vendor/:name, payments.pay, r.ctx.amount <= 1000, auto, mcp-pay-small, -, -
p, agent:mcp-clerk, vendor/:name, payments.pay, r.ctx.amount > 1000, approve, mcp-pay-large, \
role:ap-approver, 1h
p, agent:mcp-clerk, vendor/:name, mcp.bank.balance, True, auto, mcp-balance, -, -
p, agent:mcp-clerk, vendor/:name, mcp.bank.update_bank_details, True, deny, mcp-no-bank, -, -
g2, user:alice, role:ap-approver
g2, user:bob, role:ap-approver
"""
TOOLS = {
    "pay_vendor": McpToolConfig(action="payments.pay", resource="vendor/{vendor}"),
    "balance": McpToolConfig(resource="vendor/{vendor}"),
    "update_bank_details": McpToolConfig(resource="vendor/{vendor}"),
}


def stdio_bank(db: Path, **env: str) -> McpServerConfig:
    return McpServerConfig(
        command=sys.executable, args=[str(BANK), "--db", str(db)], env=env, tools=TOOLS
    )


def bank_calls(db: Path, tool: str) -> list[str]:
    """The idempotency keys the bank server saw on calls of `tool`, in order."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key FROM calls WHERE tool = ? ORDER BY at", (tool,))
        return [r[0] for r in rows]


def bank_payments(db: Path) -> list[tuple[str, float]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT vendor, amount FROM payments"))


@pytest.fixture
def bank_db(tmp_path: Path) -> Path:
    return tmp_path / "bank-mcp.db"


@pytest.fixture
def mcp_settings(settings: Settings, tmp_path: Path, bank_db: Path) -> Settings:
    policy = tmp_path / "mcp-policy.csv"
    policy.write_text(POLICY)
    mcp = McpConfig(servers={"bank": stdio_bank(bank_db)})
    return settings.model_copy(update={"policy_path": policy, "mcp": mcp})


@pytest.fixture
def mcp_runtime(mcp_settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime.from_settings(mcp_settings)
    yield runtime
    runtime.ledger.engine.dispose()


async def _worker(client: Client, settings: Settings, runtime: Runtime) -> Worker:
    return build_worker(client, settings, runtime, extra_workflows=[McpCallWorkflow])


async def _call(
    client: Client, settings: Settings, tool: str, started_by: str = "user:carol", **args: Any
) -> Any:
    return await start_task(
        client,
        "McpCall",
        McpCallInput(servers=["bank"], tool=tool, args=args),
        workflow_id=new_id("mcp"),
        task_queue=settings.task_queue,
        started_by=started_by,
        result_type=McpCallResult,
    )


async def test_mcp_tools_over_stdio_are_governed_at_each_tier(
    client: Client, mcp_settings: Settings, mcp_runtime: Runtime, bank_db: Path
) -> None:
    async with await _worker(client, mcp_settings, mcp_runtime):
        paid = await (
            await _call(
                client,
                mcp_settings,
                "mcp.bank.pay_vendor",
                vendor="acme",
                amount=250.0,
                invoice_id="INV-1",
            )
        ).result()
        denied = await (
            await _call(
                client,
                mcp_settings,
                "mcp.bank.update_bank_details",
                vendor="acme",
                iban="XX00 EVIL",
            )
        ).result()
        looked = await (
            await _call(client, mcp_settings, "mcp.bank.balance", vendor="acme")
        ).result()
        invalid = await (
            await _call(
                client,
                mcp_settings,
                "mcp.bank.pay_vendor",
                vendor="acme",
                amount="lots",
                invoice_id="INV-2",
            )
        ).result()
    assert set(paid.offered) == {
        "mcp.bank.pay_vendor",
        "mcp.bank.balance",
        "mcp.bank.update_bank_details",
    }
    assert paid.status == "done" and paid.result is not None
    assert paid.result.structured is not None and paid.result.structured["amount"] == 250.0
    assert denied.status == "denied" and "mcp-no-bank" in denied.message
    assert looked.status == "done" and looked.result is not None
    assert looked.result.structured == {"vendor": "acme", "paid": 250.0}
    assert invalid.status == "invalid" and "amount" in invalid.message
    # The bank paid once and was never asked to change the account.
    assert bank_payments(bank_db) == [("acme", 250.0)]
    assert bank_calls(bank_db, "update_bank_details") == []
    events = mcp_runtime.ledger.events()
    decisions = [(e.action, e.resource, e.tier, e.rule) for e in events if e.kind == "decision"]
    assert decisions == [
        ("payments.pay", "vendor/acme", "auto", "mcp-pay-small"),
        ("mcp.bank.update_bank_details", "vendor/acme", "deny", "mcp-no-bank"),
        ("mcp.bank.balance", "vendor/acme", "auto", "mcp-balance"),
    ]
    # The key the server saw is the step's effect key, recorded with the decision.
    pay_decision = next(e for e in events if e.kind == "decision" and e.action == "payments.pay")
    assert bank_calls(bank_db, "pay_vendor") == [pay_decision.payload["idempotency_key"]]
    executed = [e for e in events if e.kind == "tool.executed"]
    assert [e.payload["tool"] for e in executed] == ["mcp.bank.pay_vendor", "mcp.bank.balance"]
    assert all(str(e.payload["result_digest"]).startswith("sha256:") for e in executed)
    whole = mcp_runtime.ledger.blob(str(executed[0].payload["content_digest"]))
    assert isinstance(whole, dict) and isinstance(whole["structured"], dict)
    assert whole["structured"]["payment_id"] == paid.result.structured["payment_id"]
    # Only the side-effecting call was recorded as dispatched before it ran.
    dispatched = [e.payload["tool"] for e in events if e.kind == "tool.dispatched"]
    assert dispatched == ["mcp.bank.pay_vendor"]


@pytest.fixture
def http_bank(bank_db: Path, tmp_path: Path) -> Iterator[str]:
    """The bank MCP server over streamable HTTP, in a process of its own."""
    port = free_port()
    log = (tmp_path / "bank-http.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(BANK), "--db", str(bank_db), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        for _ in range(400):
            try:
                httpx.get(url)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError("the bank MCP server never listened")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


async def test_an_mcp_tool_over_http_waits_for_a_signed_approval(
    client: Client, mcp_settings: Settings, mcp_runtime: Runtime, bank_db: Path, http_bank: str
) -> None:
    over_http = McpConfig(servers={"bank": McpServerConfig(url=http_bank, tools=TOOLS)})
    settings = mcp_settings.model_copy(update={"mcp": over_http})
    key = signing_key(settings)
    async with await _worker(client, settings, mcp_runtime):
        handle = await _call(
            client,
            settings,
            "mcp.bank.pay_vendor",
            started_by="user:alice",
            vendor="globex",
            amount=25_000.0,
            invoice_id="INV-BIG",
        )
        status = await pending_status(handle)
        assert status.pending is not None
        assert status.pending.action == "payments.pay"
        assert status.pending.resource == "vendor/globex"
        assert bank_payments(bank_db) == []
        request = status.pending.request_id
        store, ledger = mcp_runtime.approvals, mcp_runtime.ledger
        with pytest.raises(ApprovalError, match="cannot approve it"):
            await decide_request(
                client, store, ledger, request, approver="user:alice", approve=True, key=key
            )
        await decide_request(
            client, store, ledger, request, approver="user:bob", approve=True, key=key
        )
        done = await handle.result()
    assert done.status == "done" and done.result is not None
    assert done.result.structured is not None and done.result.structured["amount"] == 25_000.0
    assert bank_payments(bank_db) == [("globex", 25_000.0)]
    kinds = [e.kind for e in mcp_runtime.ledger.events(handle.id)]
    for kind in ("decision", "approval.requested", "approval.refused", "approval.decided"):
        assert kind in kinds, kinds
    assert kinds.index("approval.decided") < kinds.index("tool.dispatched")
    decision = next(e for e in mcp_runtime.ledger.events(handle.id) if e.kind == "decision")
    assert (decision.tier, decision.rule) == ("approve", "mcp-pay-large")
    assert bank_calls(bank_db, "pay_vendor") == [decision.payload["idempotency_key"]]


async def test_a_retried_mcp_call_carries_the_same_key_and_pays_once(
    client: Client, mcp_settings: Settings, mcp_runtime: Runtime, bank_db: Path
) -> None:
    """The first attempt pays, then its answer is lost (the server stalls past the call's
    timeout); Temporal retries the activity with the same idempotency key in `_meta`, and
    the bank answers with the first receipt instead of paying again."""
    stalling = stdio_bank(bank_db, BANK_MCP_STALL_SECONDS="20")
    tools = {**TOOLS, "pay_vendor": TOOLS["pay_vendor"].model_copy(update={"timeout_seconds": 3})}
    config = McpConfig(servers={"bank": stalling.model_copy(update={"tools": tools})})
    settings = mcp_settings.model_copy(update={"mcp": config})
    async with await _worker(client, settings, mcp_runtime):
        handle = await _call(
            client,
            settings,
            "mcp.bank.pay_vendor",
            vendor="initech",
            amount=480.0,
            invoice_id="INV-RETRY",
        )
        done = await handle.result()
    assert done.status == "done" and done.result is not None
    assert done.result.structured is not None and done.result.structured["replayed"] is True
    keys = bank_calls(bank_db, "pay_vendor")
    assert len(keys) == 2 and keys[0] == keys[1] != ""
    assert bank_payments(bank_db) == [("initech", 480.0)]
    events = mcp_runtime.ledger.events(handle.id)
    attempts = [e.payload.get("attempt") for e in events if e.kind == "tool.executed"]
    assert attempts == [2]
    assert len([e for e in events if e.kind == "tool.dispatched"]) == 2


def test_mcp_server_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="exactly one of command"):
        McpServerConfig(command="python", url="http://localhost:1/mcp")
    with pytest.raises(ValueError, match="not a plain lower-case name"):
        McpConfig(servers={"Bank Prod": McpServerConfig(url="http://localhost:1/mcp")})


async def test_an_undeclared_mcp_server_fails_the_run_clearly(
    client: Client, mcp_settings: Settings, mcp_runtime: Runtime
) -> None:
    async with await _worker(client, mcp_settings, mcp_runtime):
        handle = await start_task(
            client,
            "McpCall",
            McpCallInput(servers=["crm"], tool="mcp.crm.lookup"),
            workflow_id=new_id("mcp-unknown"),
            task_queue=mcp_settings.task_queue,
            started_by="user:carol",
            result_type=McpCallResult,
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ActivityError) and isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == "McpServerUnknown" and "'crm' is not declared" in cause.cause.message


LINT_POLICY = """\
p, agent:mcp-clerk, vendor/:name, payments.pay, True, auto, pay-anything, -, -
p, agent:mcp-clerk, vendor/:name, mcp.bank.balance, True, auto, balance-auto, -, -
p, agent:mcp-clerk, vendor/:name, mcp.bank.update_bank_details, True, auto, bank-auto, -, -
p, agent:mcp-clerk, vendor/:name, mcp.bank.update_bank_details, r.ctx.n > 1, approve, \
bank-approve, role:ap-approver, 1h
p, agent:mcp-clerk, invoice/:id, payments.pay, True, auto, elsewhere, -, -
g2, user:alice, role:ap-approver
"""


def test_policy_lint_warns_of_mcp_tools_that_write_under_an_auto_rule(
    tmp_path: Path, bank_db: Path
) -> None:
    """`tether policy lint` with the bank declared in tether.toml: the destructive bank
    change and the (writing) payment under auto rules are warnings; the read-only balance,
    the approve rule and a rule on another resource are not."""
    (tmp_path / "policy.csv").write_text(LINT_POLICY)
    config = tmp_path / "tether.toml"
    config.write_text(
        f"""policy_path = "policy.csv"

[mcp.servers.bank]
command = {json.dumps(sys.executable)}
args = [{json.dumps(str(BANK))}, "--db", {json.dumps(str(bank_db))}]

[mcp.servers.bank.tools.pay_vendor]
action = "payments.pay"
resource = "vendor/{{vendor}}"

[mcp.servers.bank.tools.balance]
resource = "vendor/{{vendor}}"

[mcp.servers.bank.tools.update_bank_details]
resource = "vendor/{{vendor}}"
"""
    )
    done = subprocess.run(
        [sys.executable, "-m", "tether.cli", "policy", "lint", "policy.csv", "--json"],
        env={**os.environ, "TETHER_CONFIG": str(config)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = {(f["check"], f["rule"]) for f in json.loads(done.stdout)}
    mcp = {f for f in found if f[0].startswith("mcp-")}
    assert mcp == {("mcp-auto-destructive", "bank-auto"), ("mcp-auto-writes", "pay-anything")}
    warning = next(f for f in json.loads(done.stdout) if f["rule"] == "bank-auto")
    assert warning["severity"] == "warning"
    assert "'mcp.bank.update_bank_details' is marked destructive" in warning["message"]


AGENT_SCRIPT = Script(
    model="scripted-mcp",
    entries=[
        ScriptEntry(
            task="agent",
            match="update_bank_details denied by policy",
            output={"kind": "answer", "answer": "Paid INV-7; the bank change was refused."},
        ),
        ScriptEntry(
            task="agent",
            match="mcp.bank.pay_vendor -> ",
            output={
                "kind": "tool",
                "tool": "mcp.bank.update_bank_details",
                "args": {"vendor": "acme", "iban": "XX00 EVIL"},
            },
        ),
        ScriptEntry(
            task="agent",
            match="[turn 2]",
            output={
                "kind": "tool",
                "tool": "mcp.bank.pay_vendor",
                "args": {"vendor": "acme", "amount": 250.0, "invoice_id": "INV-7"},
            },
        ),
        ScriptEntry(
            task="agent",
            match="[turn 1]",
            output={"kind": "tool", "tool": "mcp.bank.pay_vendor", "args": {"vendor": "acme"}},
        ),
    ],
)


async def test_the_agent_loop_offers_mcp_tools_and_governs_their_calls(
    client: Client, mcp_settings: Settings, mcp_runtime: Runtime, bank_db: Path
) -> None:
    worker = build_worker(
        client, mcp_settings, mcp_runtime, model_provider=ScriptedProvider(AGENT_SCRIPT)
    )
    async with worker:
        handle = await start_task(
            client,
            "AgentLoop",
            AgentLoopInput(
                goal="Pay invoice INV-7 to acme",
                agent="agent:mcp-clerk",
                tools=[],
                mcp_servers=["bank"],
                budget=Budget(max_steps=20),
            ),
            workflow_id=new_id("mcp-loop"),
            task_queue=mcp_settings.task_queue,
            started_by="user:carol",
            result_type=AgentLoopResult,
        )
        result = await handle.result()
    assert result.status == "answered", result.transcript
    tools_line = result.transcript[1]
    assert "mcp.bank.pay_vendor" in tools_line and "mcp.bank.balance" in tools_line
    # The model saw each tool's description and input schema.
    assert any(line.startswith("tool mcp.bank.pay_vendor: Pay") for line in result.transcript)
    # Turn 1 left out arguments the schema requires: told, never decided, never called.
    assert any("are invalid" in line and "required" in line for line in result.transcript)
    assert bank_payments(bank_db) == [("acme", 250.0)]
    decisions = [
        (e.action, e.tier) for e in mcp_runtime.ledger.events(handle.id) if e.kind == "decision"
    ]
    assert decisions == [("payments.pay", "auto"), ("mcp.bank.update_bank_details", "deny")]
    report = await replay_workflow(client, mcp_runtime.ledger, handle.id)
    assert report.ok, report
    assert report.facts_checked == 4 + 2 + 1  # model calls, decisions, the MCP result
