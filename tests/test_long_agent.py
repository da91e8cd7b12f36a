"""A 2,000-turn agent loop on the real dev server: it continues as new, every step is in the
ledger, and every run's history stays below a bound."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tests.conftest import new_id, replayer_for
from tests.long_loop_app import CounterTools
from tether.core.config import Settings
from tether.runtime.client import start_task
from tether.runtime.replay import replay_workflow, run_chain
from tether.verification.events import digest
from tether.worker import Runtime, build_worker
from tether.workflows import AgentLoopInput, AgentLoopResult, Budget

TURNS = 2_000
EVERY = 100
HISTORY_BOUND = 2_000
"""Events per run of 100 turns: about 13 a turn (model call and tool activity with their
workflow tasks, the decision marker) plus the hand-over; Temporal warns at 10,240."""
POLICY = "p, agent:counter, counter/:name, counter.add, True, auto, count-auto, -, -\n"


def script(turns: int) -> dict[str, object]:
    return {
        "model": "scripted-long",
        "entries": [
            {
                "task": "agent",
                "match": f"[turn {turns}]",
                "output": {"kind": "answer", "answer": f"counted to {turns - 1}"},
            },
            {
                "task": "agent",
                "output": {"kind": "tool", "tool": "add_count", "args": {"counter": "c"}},
            },
        ],
    }


@pytest.fixture
def long_settings(settings: Settings, tmp_path: Path) -> Settings:
    (tmp_path / "policy.csv").write_text(POLICY)
    (tmp_path / "script.json").write_text(json.dumps(script(TURNS)))
    return settings.model_copy(
        update={"policy_path": tmp_path / "policy.csv", "model_script": tmp_path / "script.json"}
    )


@pytest.fixture
def long_runtime(long_settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime.from_settings(long_settings)
    yield runtime
    runtime.ledger.engine.dispose()


def _loop(turns_per_run: int = EVERY, history_events: int = 10_000) -> AgentLoopInput:
    return AgentLoopInput(
        goal="count",
        agent="agent:counter",
        tools=["add_count"],
        budget=Budget(),
        continue_every_turns=turns_per_run,
        continue_at_history_events=history_events,
        keep_lines=3,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_2000_turn_agent_loop_continues_as_new_and_keeps_every_step(
    client: Client, long_settings: Settings, long_runtime: Runtime
) -> None:
    worker = build_worker(client, long_settings, long_runtime, extra_tools=[CounterTools()])
    async with worker:
        handle = await start_task(
            client,
            "AgentLoop",
            _loop(),
            workflow_id=new_id("long-loop"),
            task_queue=long_settings.task_queue,
            started_by="user:carol",
            result_type=AgentLoopResult,
        )
        result = await handle.result()
        chain = await run_chain(client, handle.id)
        report = await replay_workflow(client, long_runtime.ledger, handle.id)
    assert result.status == "answered" and result.answer == f"counted to {TURNS - 1}"
    assert (result.turns, result.runs) == (TURNS, TURNS // EVERY)
    # Usage is carried: every model call of every run is counted in the last.
    assert result.usage.model_calls == TURNS and result.usage.steps == 2 * TURNS - 1
    # The run kept its summary and the last lines, not 2,000 lines of transcript.
    assert any(line.startswith("summary: after 1900 turns") for line in result.transcript)
    assert len(result.transcript) < 2 + 1 + 3 + EVERY + 1

    assert len(chain) == TURNS // EVERY
    sizes = [len(history.events) for _, history in chain]
    assert max(sizes) < HISTORY_BOUND, sizes
    for _, history in chain[:-1]:
        last = history.events[-1].event_type
        assert last == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW

    events = long_runtime.ledger.events(handle.id)
    # Every step of every run is in the ledger, numbered on across the runs.
    asked = [e.step or 0 for e in events if e.kind == "model.call"]
    decided = [e.step or 0 for e in events if e.kind == "decision"]
    assert len(asked) == TURNS and len(decided) == TURNS - 1
    assert sorted(asked + decided) == list(range(1, 2 * TURNS))
    assert len([e for e in events if e.kind == "tool.executed"]) == TURNS - 1
    assert {e.run_id for e in events if e.kind == "model.call"} == {r for r, _ in chain}
    # Each hand-over is recorded on the run it ends, with its summary's digest.
    handovers = [e for e in events if e.kind == "run.continued"]
    assert [e.run_id for e in handovers] == [r for r, _ in chain[:-1]]
    assert [e.payload["turns"] for e in handovers] == list(range(EVERY, TURNS, EVERY))
    for e in handovers:
        assert e.payload["summary_digest"] == digest(e.payload["summary"])
        assert e.payload["reason"] == "turns"
    # Replay follows the run across its continuations.
    assert report.ok, report
    assert report.runs == [r for r, _ in chain]
    assert report.facts_checked >= 3 * TURNS - 2


async def test_an_agent_loop_continues_as_new_when_its_history_grows(
    client: Client, long_settings: Settings, long_runtime: Runtime, tmp_path: Path
) -> None:
    (tmp_path / "script.json").write_text(json.dumps(script(60)))
    worker = build_worker(client, long_settings, long_runtime, extra_tools=[CounterTools()])
    async with worker:
        handle = await start_task(
            client,
            "AgentLoop",
            _loop(turns_per_run=0, history_events=300),
            workflow_id=new_id("grown-loop"),
            task_queue=long_settings.task_queue,
            started_by="user:carol",
            result_type=AgentLoopResult,
        )
        result = await handle.result()
        chain = await run_chain(client, handle.id)
    assert result.status == "answered" and result.turns == 60 and result.runs >= 2
    assert all(len(history.events) < 300 + 40 for _, history in chain)
    handovers = [e for e in long_runtime.ledger.events(handle.id) if e.kind == "run.continued"]
    assert len(handovers) == result.runs - 1
    assert all(e.payload["reason"] == "history" for e in handovers)
    for run_id, history in chain:
        replayed = await replayer_for().replay_workflow(history, raise_on_replay_failure=False)
        assert replayed.replay_failure is None, run_id
