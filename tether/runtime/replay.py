"""`tether audit replay`: re-run a workflow's history against today's code, then
cross-check every activity result in that history against the ledger's digests.

Uses the worker's data converter and workflow set, so a replay failure means today's
code would not reproduce the recorded execution. A workflow that continued as new (a long
`AgentLoop`) is replayed run by run, oldest first (`run_chain`): one report covers them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from pydantic import BaseModel, Field, JsonValue
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import PayloadCodec
from temporalio.worker import Replayer

from tether.adapters import worker_plugins
from tether.errors import CodecError
from tether.runtime.app import App
from tether.runtime.codec import decode_history, is_sealed
from tether.runtime.plugin import TetherPlugin
from tether.verification.events import digest
from tether.verification.forensics import Divergence, HistoryFact, cross_check
from tether.verification.ledger import Ledger
from tether.verification.query import EventSource

MAX_RUNS = 10_000


class ReplayReport(BaseModel):
    workflow_id: str
    run_id: str
    replayed: bool
    replay_error: str = ""
    facts_checked: int
    divergences: list[Divergence]
    runs: list[str] = Field(default_factory=list)
    """Every run replayed, oldest first (more than one when the workflow continued as new)."""

    @property
    def ok(self) -> bool:
        return self.replayed and not self.divergences


PYDANTIC_AI_MODEL_REQUEST = "__model_request"
"""How pydantic-ai's Temporal integration names an agent's model activity (its suffix)."""


def _json(data: bytes) -> JsonValue:
    value: JsonValue = json.loads(data)
    return value


def history_facts(history: WorkflowHistory) -> list[HistoryFact]:
    """The activity outcomes of a history, reduced to what the ledger records of them."""
    scheduled: dict[int, tuple[str, JsonValue]] = {}
    facts: list[HistoryFact] = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            payload = _json(attrs.input.payloads[0].data) if attrs.input.payloads else None
            scheduled[event.event_id] = (attrs.activity_type.name, payload)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = event.activity_task_completed_event_attributes
            name, inp = scheduled.get(done.scheduled_event_id, ("", None))
            result = _json(done.result.payloads[0].data) if done.result.payloads else None
            if name == "call_model" and isinstance(result, dict):
                facts.append(
                    HistoryFact(
                        event_id=event.event_id,
                        kind="model.call",
                        value={
                            "call_id": result["call_id"],
                            "output_digest": digest(result["text"]),
                        },
                    )
                )
            elif name.endswith(PYDANTIC_AI_MODEL_REQUEST) and isinstance(result, dict):
                # pydantic-ai's model activity: the ledger keys its call by the step, so
                # the call is known by its answer (`tether.adapters.pydantic_ai`).
                facts.append(
                    HistoryFact(
                        event_id=event.event_id,
                        kind="model.call",
                        value={"call_id": "", "output_digest": digest(result.get("parts"))},
                    )
                )
            elif (
                (name.startswith("tool.") or name == "call_mcp_tool")
                and isinstance(inp, dict)
                and isinstance(inp["ref"], dict)
            ):
                step = inp["ref"]["step"]
                facts.append(
                    HistoryFact(
                        event_id=event.event_id,
                        kind="tool.executed",
                        step=step if isinstance(step, int) else None,
                        value={"result_digest": digest(result)},
                    )
                )
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            details = event.marker_recorded_event_attributes.details
            if "data" not in details or "result" not in details:
                continue
            meta = _json(details["data"].payloads[0].data)
            if isinstance(meta, dict) and meta.get("activity_type") == "decide_step":
                decision = _json(details["result"].payloads[0].data)
                if isinstance(decision, dict):
                    facts.append(
                        HistoryFact(event_id=event.event_id, kind="decision", value=decision)
                    )
    return facts


async def replay_history(
    history: WorkflowHistory,
    ledger: EventSource,
    run_id: str,
    workflows: Sequence[type] = (),
    app: App | None = None,
    payload_codec: PayloadCodec | None = None,
) -> ReplayReport:
    """Replay `history` with Tether's workflows, `app`'s (its tool modules imported, so
    an agent loop finds its tools) and `workflows`, then cross-check it with the ledger.
    A sealed history needs the `payload_codec` that sealed it (CodecError without)."""
    if payload_codec is None and await is_sealed(history):
        raise CodecError(
            f"the history of {history.workflow_id!r} is sealed; turn payload_codec on with "
            "the keys that sealed it (payload_key_file or payload_keys) to replay it"
        )
    plugin = TetherPlugin((app or App()).merged(workflows), payload_codec=payload_codec)
    replayer = Replayer(workflows=[], plugins=[plugin, *worker_plugins(plugin.registered)])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    events = [e for e in ledger.events(history.workflow_id) if not run_id or e.run_id == run_id]
    facts = history_facts(await decode_history(history, payload_codec))
    return ReplayReport(
        workflow_id=history.workflow_id,
        run_id=run_id,
        replayed=result.replay_failure is None,
        replay_error=str(result.replay_failure or ""),
        facts_checked=len(facts),
        divergences=cross_check(facts, events),
    )


async def run_chain(client: Client, workflow_id: str) -> list[tuple[str, WorkflowHistory]]:
    """Every run of `workflow_id` with its history, oldest first: the latest run, then the
    run each one continued (its started event's `continued_execution_run_id`)."""
    handle = client.get_workflow_handle(workflow_id)
    run_id = (await handle.describe()).run_id
    chain: list[tuple[str, WorkflowHistory]] = []
    while run_id and len(chain) < MAX_RUNS:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        chain.append((run_id, history))
        started = history.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id
    return chain[::-1]


async def replay_workflow(
    client: Client, ledger: Ledger, workflow_id: str, app: App | None = None
) -> ReplayReport:
    """Replay every run of `workflow_id` and cross-check each with the ledger."""
    codec = client.data_converter.payload_codec
    reports = [
        await replay_history(history, ledger, run_id, app=app, payload_codec=codec)
        for run_id, history in await run_chain(client, workflow_id)
    ]
    last = reports[-1]
    return last.model_copy(
        update={
            "replayed": all(r.replayed for r in reports),
            "replay_error": "; ".join(
                f"run {r.run_id}: {r.replay_error}" for r in reports if r.replay_error
            ),
            "facts_checked": sum(r.facts_checked for r in reports),
            "divergences": [d for r in reports for d in r.divergences],
            "runs": [r.run_id for r in reports],
        }
    )
