"""Kill switches and agent budgets: on the real dev server, SQLite and (when set) PostgreSQL.

Kill switches: each scope denies new decisions and model calls in scope and is recorded;
release restores; a run in flight is stopped at its next step; pending approvals in scope
are halted. Budgets: concurrent reservations never overspend a shared budget (threads
against `reserve`, and 20 concurrent workflows); breaches deny or escalate to approval.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from ap.workflows import InvoiceInput, InvoiceResult
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from tests.conftest import EXAMPLE, bank_of, new_id
from tests.kill_app import AskInput, AskOnceWorkflow, GatedInput, GatedWorkflow
from tests.test_cli import one_line, tether
from tether.core.config import Settings
from tether.core.db import make_engine
from tether.errors import KillError
from tether.governance.approvals import ApprovalStatus
from tether.governance.budget import (
    AgentBudget,
    Breach,
    Budgets,
    OnBreach,
    Reservation,
    ReservationRow,
)
from tether.runtime.client import start_task
from tether.runtime.kill import halt_pending
from tether.verification.ledger import Ledger
from tether.worker import Runtime, build_worker
from tether.workflows import AgentStatus

PG_URL = os.environ.get("TETHER_TEST_DATABASE_URL", "")
NOTE = json.dumps({"note": "n" * 388})
"""A model output of exactly 400 characters: 100 tokens, the test's max_output_tokens."""
assert len(NOTE) == 400


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def script(tmp_path: Path) -> Path:
    """The demo script plus a priced `note` task whose output uses all 100 output tokens."""
    demo = json.loads((EXAMPLE / "script.json").read_text())
    demo["entries"].append({"task": "note", "output": json.loads(NOTE)})
    demo["pricing"] = {"usd_per_1k_input": 1.0, "usd_per_1k_output": 2.0}
    path = tmp_path / "script.json"
    path.write_text(json.dumps(demo))
    return path


@pytest.fixture
async def app(
    client: Client, settings: Settings, runtime: Runtime, script: Path
) -> AsyncIterator[Worker]:
    """A worker with the test workflows and the priced script."""
    s = settings.model_copy(update={"model_script": script})
    w = build_worker(client, s, runtime, extra_workflows=[GatedWorkflow, AskOnceWorkflow])
    async with w:
        yield w


async def _invoice(
    client: Client, settings: Settings, invoice: str, tenant: str = "default"
) -> WorkflowHandle[Any, InvoiceResult]:
    return await start_task(
        client,
        "PayInvoice",
        InvoiceInput(invoice_id=invoice, text=f"Invoice {invoice} from a vendor"),
        workflow_id=new_id(invoice),
        task_queue=settings.task_queue,
        started_by="user:carol",
        result_type=InvoiceResult,
        tenant=tenant,
    )


async def _ask(
    client: Client, settings: Settings, agent: str, prompt: str = "p" * 40
) -> WorkflowHandle[Any, str]:
    return await start_task(
        client,
        "KillTestAsk",
        AskInput(agent=agent, prompt=prompt),
        workflow_id=new_id("ask"),
        task_queue=settings.task_queue,
        started_by="user:carol",
        result_type=str,
    )


async def _failure(handle: WorkflowHandle[Any, Any]) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


def _key(settings: Settings) -> dict[str, str]:
    """The approving service's key, so the CLI signs with the key the worker trusts."""
    return {"TETHER_APPROVAL_KEY": str(settings.approval_key)}


# -- kill switches ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("global", ""),
        ("tenant", "acme"),
        ("agent", "agent:ap-clerk"),
        ("action", "model.extract"),
        ("action", "payments.pay"),
    ],
)
async def test_each_scope_stops_runs_in_scope_until_released(
    client: Client,
    settings: Settings,
    runtime: Runtime,
    app: Worker,
    kind: str,
    value: str,
) -> None:
    switches = runtime.kills
    other = switches.engage("agent", "agent:someone-else", reason="unrelated", engaged_by="u:x")
    record = switches.engage(kind, value, reason="incident 42", engaged_by="user:ops")
    assert switches.engage(kind, value, reason="again", engaged_by="user:y").id == record.id
    rule = f"kill-switch:{kind}:{value or '*'}"

    handle = await _invoice(client, settings, "INV-1001", tenant="acme")
    if value == "payments.pay":  # the model call runs; the payment's decision is denied
        result = await handle.result()
        assert result.status == "denied" and "incident 42" in result.message
        decision = runtime.ledger.events(handle.id)[-1]
        assert (decision.kind, decision.tier, decision.rule) == ("decision", "deny", rule)
        assert "'user:ops'" in str(decision.payload["reason"])
    else:  # the model call is refused: the run ends before any decision
        cause = await _failure(handle)
        assert cause.type == "ActionDenied" and "incident 42" in cause.message
        events = runtime.ledger.events(handle.id)
        assert [(e.kind, e.outcome, e.rule) for e in events] == [("model.killed", "refused", rule)]
    assert bank_of(runtime).payments("INV-1001") == 0
    if kind == "tenant":  # another tenant runs on
        assert (await (await _invoice(client, settings, "INV-1001")).result()).status == "paid"
        assert bank_of(runtime).payments("INV-1001") == 1

    switches.release(kind, value, released_by="user:ops")
    with pytest.raises(KillError, match=r"no .* kill switch .* is engaged"):
        switches.release(kind, value, released_by="user:ops")
    assert [r.id for r in switches.status()] == [other.id]
    paid = await (await _invoice(client, settings, "INV-1001", tenant="acme")).result()
    assert paid.status == "paid"

    recorded = [
        (e.kind, e.actor, e.rule, e.payload["reason"])
        for e in runtime.ledger.events()
        if e.kind.startswith("kill.") and e.rule == rule
    ]
    assert recorded == [
        ("kill.engaged", "user:ops", rule, "incident 42"),
        ("kill.released", "user:ops", rule, "incident 42"),
    ]
    assert runtime.ledger.verify().ok


def test_bad_scopes_are_named(runtime: Runtime) -> None:
    with pytest.raises(KillError, match=r"'planet'.*global, tenant, agent, action"):
        runtime.kills.engage("planet", "x", reason="", engaged_by="user:ops")
    with pytest.raises(KillError, match="agent kill switch needs a value"):
        runtime.kills.engage("agent", " ", reason="", engaged_by="user:ops")
    with pytest.raises(KillError, match="global kill switch takes no value, got 'x'"):
        runtime.kills.engage("global", "x", reason="", engaged_by="user:ops")
    assert runtime.kills.status() == []


async def test_a_run_in_flight_is_stopped_at_its_next_step(
    client: Client, settings: Settings, runtime: Runtime, app: Worker
) -> None:
    handle = await start_task(
        client,
        "KillTestGated",
        GatedInput(invoice_id="INV-7001"),
        workflow_id=new_id("gated"),
        task_queue=settings.task_queue,
        started_by="user:carol",
        result_type=str,
    )
    assert await handle.query("waiting", result_type=bool)
    runtime.kills.engage("agent", "agent:ap-clerk", reason="runaway", engaged_by="user:ops")
    await handle.signal("go")
    assert await handle.result() == "denied: kill-switch:agent:agent:ap-clerk"
    assert bank_of(runtime).payments("INV-7001") == 0
    [decision] = runtime.ledger.events(handle.id)
    assert (decision.kind, decision.tier, decision.outcome) == ("decision", "deny", "denied")
    assert "runaway" in str(decision.payload["reason"])


async def test_engaging_halts_pending_approvals_in_scope(
    client: Client, settings: Settings, runtime: Runtime, app: Worker
) -> None:
    waiting = await _invoice(client, settings, "INV-1003", tenant="acme")
    elsewhere = await _invoice(client, settings, "INV-1003", tenant="globex")
    for handle in (waiting, elsewhere):
        for _ in range(200):
            status = await handle.query("status", result_type=AgentStatus)
            if status.pending is not None:
                break
            await asyncio.sleep(0.05)
        assert status.pending is not None
    record = runtime.kills.engage("tenant", "acme", reason="fraud", engaged_by="user:ops")
    done = await halt_pending(client, runtime.approvals, record)
    assert done.halted == [waiting.id]

    result = await waiting.result()
    assert result.status == "halted" and "fraud" in result.message
    assert "user:ops" in result.message
    assert bank_of(runtime).payments("INV-1003") == 0
    [closed] = [p for p in runtime.approvals.list(None) if p.workflow_id == waiting.id]
    assert closed.status is ApprovalStatus.HALTED
    decided = [e for e in runtime.ledger.events(waiting.id) if e.kind == "approval.decided"]
    assert [(e.outcome, e.actor) for e in decided] == [("halted", "user:ops")]
    # The other tenant's request still waits.
    status = await elsewhere.query("status", result_type=AgentStatus)
    assert status.pending is not None
    await elsewhere.terminate("test over")


# -- budgets: reservations -------------------------------------------------------------------


def _counted(engine: Engine, subject: str) -> tuple[int, float]:
    with Session(engine) as session:
        tokens, cost = session.execute(
            select(func.sum(ReservationRow.tokens), func.sum(ReservationRow.cost_usd)).where(
                ReservationRow.subject == subject,
                ReservationRow.state.in_(("reserved", "settled")),
            )
        ).one()
    return int(tokens or 0), float(cost or 0.0)


def _race(url: str, writers: int = 24, per_writer: int = 5) -> None:
    """Writers (engines of their own, like separate workers) race for one budget."""
    setup = make_engine(url)
    budgets = Budgets(setup, Ledger(setup), roles_of=lambda a: ["role:racers"])
    budgets.set(
        AgentBudget(subject="role:racers", window_seconds=3600, max_tokens=1000, max_cost_usd=0.5),
        actor="user:ops",
    )
    start = threading.Barrier(writers)

    def work(w: int) -> list[Reservation | Breach]:
        engine = make_engine(url)
        try:
            mine = Budgets(engine, Ledger(engine), roles_of=lambda a: ["role:racers"])
            start.wait(timeout=60)
            return [
                mine.reserve(f"agent:r{w % 3}", 70, 0.01, key=f"k{w}-{i}")
                for i in range(per_writer)
            ]
        finally:
            engine.dispose()

    with ThreadPoolExecutor(writers) as pool:
        results = [r for rs in pool.map(work, range(writers)) for r in rs]
    granted = [r for r in results if isinstance(r, Reservation)]
    assert len(granted) == 1000 // 70  # every slot taken, none twice
    assert all(isinstance(r, Breach) for r in results if r not in granted)
    tokens, cost = _counted(setup, "role:racers")
    assert tokens == len(granted) * 70 and cost == pytest.approx(len(granted) * 0.01)
    # Idempotent by key: reserving a granted key again adds nothing.
    again = budgets.reserve(granted[0].agent, 70, 0.01, key=granted[0].key)
    assert isinstance(again, Reservation)
    assert _counted(setup, "role:racers")[0] == len(granted) * 70
    # Settling frees what was not used; releasing frees the rest.
    budgets.settle(granted[0].key, 10, 0.001)
    budgets.release(granted[1].key)
    assert _counted(setup, "role:racers")[0] == (len(granted) - 2) * 70 + 10
    assert isinstance(budgets.reserve("agent:r0", 120, 0.01, key="late"), Reservation)
    assert isinstance(budgets.reserve("agent:r0", 70, 0.01, key="too-late"), Breach)
    setup.dispose()


def test_concurrent_reservations_never_overspend_sqlite(tmp_path: Path) -> None:
    _race(f"sqlite:///{tmp_path / 'race.db'}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not PG_URL.startswith("postgresql"):
        pytest.skip("set TETHER_TEST_DATABASE_URL to a PostgreSQL URL to run this")
    from tests.test_ledger_postgres import _schema

    with _schema() as url:
        yield url


@pytest.mark.postgres
def test_concurrent_reservations_never_overspend_postgres(pg_url: str) -> None:
    _race(pg_url)


def test_rolling_window_and_bad_budgets(runtime: Runtime) -> None:
    now = [1000.0]
    budgets = Budgets(runtime.ledger.engine, runtime.ledger, clock=lambda: now[0])
    budgets.set(AgentBudget(subject="agent:w", window_seconds=60, max_tokens=100), actor="user:ops")
    assert isinstance(budgets.reserve("agent:w", 100, 0.0, key="a"), Reservation)
    assert isinstance(budgets.reserve("agent:w", 1, 0.0, key="b"), Breach)
    now[0] += 61  # the first reservation has rolled out of the window
    assert isinstance(budgets.reserve("agent:w", 100, 0.0, key="c"), Reservation)
    assert [e.kind for e in runtime.ledger.events() if e.kind.startswith("budget.")] == [
        "budget.set"
    ]
    from tether.errors import BudgetError

    with pytest.raises(BudgetError, match="'vendor:x'"):
        budgets.set(AgentBudget(subject="vendor:x", window_seconds=60, max_tokens=1), actor="u")
    with pytest.raises(BudgetError, match="needs an approver role"):
        budgets.set(
            AgentBudget(
                subject="agent:w", window_seconds=60, max_tokens=1, on_breach=OnBreach.APPROVE
            ),
            actor="u",
        )


# -- budgets: workflows ----------------------------------------------------------------------

WORST = 10 + 100
"""A 40-character prompt (10 tokens) plus 100 output tokens; the call uses exactly that."""


async def test_many_concurrent_workflows_never_overspend_a_shared_budget(
    client: Client, settings: Settings, runtime: Runtime, app: Worker
) -> None:
    runtime.budgets.set(
        AgentBudget(subject="agent:shared", window_seconds=3600, max_tokens=1000),
        actor="user:ops",
    )
    handles = await asyncio.gather(*(_ask(client, settings, "agent:shared") for _ in range(20)))
    outcomes = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
    done = [o for o in outcomes if isinstance(o, str)]
    failed = [o for o in outcomes if isinstance(o, WorkflowFailureError)]
    assert len(done) == 1000 // WORST and len(failed) == 20 - len(done)
    assert all(
        isinstance(f.cause, ApplicationError) and f.cause.type == "BudgetExceeded" for f in failed
    )
    tokens, cost = _counted(runtime.ledger.engine, "agent:shared")
    assert tokens == len(done) * WORST <= 1000
    assert cost == pytest.approx(len(done) * (10 * 1.0 + 100 * 2.0) / 1000)
    breaches = runtime.ledger.events_of_kind("budget.breach")
    assert len(breaches) == len(failed) and {e.outcome for e in breaches} == {"denied"}
    [usage] = runtime.budgets.show("agent:shared")
    assert (usage.tokens, usage.open_reservations) == (len(done) * WORST, 0)


async def test_breach_escalates_to_approval_then_overspends(
    client: Client, settings: Settings, runtime: Runtime, app: Worker, tmp_path: Path
) -> None:
    runtime.budgets.set(
        AgentBudget(
            subject="agent:careful",
            window_seconds=3600,
            max_tokens=50,
            on_breach=OnBreach.APPROVE,
            approver_role="role:ap-approver",
        ),
        actor="user:ops",
    )
    handle = await _ask(client, settings, "agent:careful")
    for _ in range(200):
        status = await handle.query("status", result_type=AgentStatus)
        if status.pending is not None:
            break
        await asyncio.sleep(0.05)
    pending = status.pending
    assert pending is not None
    assert (pending.action, pending.resource) == ("budget.exceed", "agent/agent:careful")
    assert _counted(runtime.ledger.engine, "agent:careful") == (0, 0.0)

    done = await tether(
        settings,
        tmp_path,
        "approvals",
        "approve",
        pending.request_id,
        "--as",
        "user:alice",
        **_key(settings),
    )
    assert done.returncode == 0, done.stderr
    assert await handle.result() == json.loads(NOTE)["note"]
    assert _counted(runtime.ledger.engine, "agent:careful")[0] == WORST  # beyond the 50
    kinds = [(e.kind, e.outcome) for e in runtime.ledger.events(handle.id)]
    assert kinds[0] == ("budget.breach", "needs-approval")
    assert ("approval.decided", "approved") in kinds
    assert ("budget.override", "overspent") in kinds
    assert kinds[-1] == ("model.call", "succeeded")


async def test_rejected_overspend_ends_the_run(
    client: Client, settings: Settings, runtime: Runtime, app: Worker, tmp_path: Path
) -> None:
    runtime.budgets.set(
        AgentBudget(
            subject="agent:careful",
            window_seconds=3600,
            max_tokens=50,
            on_breach=OnBreach.APPROVE,
            approver_role="role:ap-approver",
        ),
        actor="user:ops",
    )
    handle = await _ask(client, settings, "agent:careful")
    for _ in range(200):
        listed = runtime.approvals.list()
        if listed:
            break
        await asyncio.sleep(0.05)
    [pending] = runtime.approvals.list()
    done = await tether(
        settings,
        tmp_path,
        "approvals",
        "reject",
        pending.request_id,
        "--as",
        "user:bob",
        "--reason",
        "not this month",
        **_key(settings),
    )
    assert done.returncode == 0, done.stderr
    cause = await _failure(handle)
    assert cause.type == "ActionRejected" and "not this month" in cause.message
    assert _counted(runtime.ledger.engine, "agent:careful") == (0, 0.0)


# -- the CLI ---------------------------------------------------------------------------------


async def test_kill_and_budget_commands(
    settings: Settings, runtime: Runtime, worker: Worker, tmp_path: Path
) -> None:
    done = await tether(
        settings,
        tmp_path,
        "kill",
        "engage",
        "agent",
        "agent:x",
        "--as",
        "user:ops",
        "--reason",
        "loop",
    )
    assert done.returncode == 0, done.stderr
    assert "engaged" in done.stdout and "'user:ops'" in done.stdout
    status = await tether(settings, tmp_path, "kill", "status", "--json")
    assert [(r["kind"], r["value"], r["reason"]) for r in json.loads(status.stdout)] == [
        ("agent", "agent:x", "loop")
    ]
    assert runtime.kills.blocking("default", "agent:x", "a") is not None
    done = await tether(settings, tmp_path, "kill", "release", "agent", "agent:x", "--as", "u:o")
    assert done.returncode == 0, done.stderr
    assert runtime.kills.blocking("default", "agent:x", "a") is None
    line = one_line(
        await tether(settings, tmp_path, "kill", "release", "agent", "agent:x", "--as", "u:o")
    )
    assert "'agent:x'" in line and "tether kill status" in line
    line = one_line(await tether(settings, tmp_path, "kill", "engage", "moon", "--as", "u:o"))
    assert "'moon'" in line

    done = await tether(
        settings,
        tmp_path,
        "budget",
        "set",
        "role:ap-agent",
        "--as",
        "user:ops",
        "--window",
        "1h",
        "--max-tokens",
        "5000",
        "--max-cost",
        "1.5",
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads((await tether(settings, tmp_path, "budget", "show", "--json")).stdout)
    assert [(u["budget"]["subject"], u["budget"]["window_seconds"]) for u in shown] == [
        ("role:ap-agent", 3600)
    ]
    assert runtime.budgets.get("role:ap-agent") is not None
    line = one_line(
        await tether(
            settings,
            tmp_path,
            "budget",
            "set",
            "role:x",
            "--as",
            "u",
            "--window",
            "soon",
            "--max-tokens",
            "1",
        )
    )
    assert "'soon'" in line
    line = one_line(
        await tether(
            settings,
            tmp_path,
            "budget",
            "set",
            "role:x",
            "--as",
            "u",
            "--max-tokens",
            "1",
            "--on-breach",
            "shrug",
        )
    )
    assert "'shrug'" in line
    done = await tether(settings, tmp_path, "budget", "clear", "role:ap-agent", "--as", "u:o")
    assert done.returncode == 0, done.stderr
    line = one_line(await tether(settings, tmp_path, "budget", "show", "role:ap-agent"))
    assert "'role:ap-agent'" in line
    kinds = [e.kind for e in runtime.ledger.events() if e.kind.startswith(("kill.", "budget."))]
    assert kinds == ["kill.engaged", "kill.released", "budget.set", "budget.cleared"]
