"""What a run was asked and what it answered, read from its Temporal history.

`run_story` decodes the workflow's input (the first event) and, once it closed, its result
or failure (the last event) with the client's data converter, and reads the business
outcome off the result: its `status` and `message` fields when it has them (the demo's
`paid` / `denied` / `rejected` / `halted`). Read-only; a run Temporal no longer holds
gives an empty story, not an error.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

from tether.verification.events import RecordedEvent


class RunStory(BaseModel):
    workflow_type: str = ""
    input: str = ""
    """The input as indented JSON; "" when unknown."""
    result: str = ""
    """The result (or the failure's message) as indented JSON or text; "" while running."""
    outcome: str = ""
    """The business outcome: the result's `status`, `failed`, `terminated`, … ; ""."""
    message: str = ""
    halted_by: str = ""
    """Who engaged the kill switch that halted the run, when one did."""
    halt_reason: str = ""


def _show(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    except (TypeError, ValueError):
        return str(value)


async def run_story(client: Client, workflow_id: str, events: list[RecordedEvent]) -> RunStory:
    story = RunStory()
    try:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
    except RPCError:
        return _halt(story, events)
    if not history.events:
        return _halt(story, events)
    first, last = history.events[0], history.events[-1]
    started = first.workflow_execution_started_event_attributes
    story.workflow_type = started.workflow_type.name
    if started.input.payloads:
        values = await client.data_converter.decode(started.input.payloads)
        story.input = _show(values[0] if len(values) == 1 else values)
    kind = last.event_type
    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
        payloads = last.workflow_execution_completed_event_attributes.result.payloads
        values = await client.data_converter.decode(payloads) if payloads else [None]
        value = values[0]
        story.result = _show(value)
        if isinstance(value, dict):
            story.outcome = str(value.get("status") or "completed")
            story.message = str(value.get("message") or "")
        else:
            story.outcome = "completed"
    elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        failure = last.workflow_execution_failed_event_attributes.failure
        message = failure.message
        if failure.HasField("encoded_attributes"):  # sealed payloads: the message is sealed
            message = str(await client.data_converter.decode_failure(failure))
        story.outcome, story.message = "failed", message
        story.result = message
    elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        story.outcome = "terminated"
        story.message = last.workflow_execution_terminated_event_attributes.reason
    elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
        story.outcome = "cancelled"
    elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
        story.outcome = "timed out"
    return _halt(story, events)


def _halt(story: RunStory, events: list[RecordedEvent]) -> RunStory:
    """Name the kill switch that halted the run, from the ledger's `halted` close."""
    halted = next(
        (e for e in events if e.kind == "approval.decided" and e.outcome == "halted"), None
    )
    if halted is not None:
        story.halted_by = halted.actor
        story.halt_reason = str(halted.payload.get("comment") or "")
        if not story.outcome:
            story.outcome = "halted"
    return story
