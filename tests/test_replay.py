"""Every stored history replays against today's code with the worker's data converter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory

from tests.conftest import replayer_for

HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))


def test_histories_are_stored() -> None:
    names = {p.stem for p in HISTORIES}
    assert {
        "invoice-auto",
        "invoice-notify",
        "invoice-approve",
        "invoice-deny",
        "agent-loop",
        "invoice-outage",
        "invoice-reset",
        "invoice-approve-edited",
        "invoice-messages",
        "pydantic-ai-approve",
        "pydantic-ai-deny",
    } <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_stored_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = replayer_for()
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


async def test_replay_detects_a_changed_history() -> None:
    """A history whose recorded decision was swapped for another activity must not replay."""
    source = next(p for p in HISTORIES if p.stem == "invoice-auto")
    data = json.loads(source.read_text())
    changed = False
    for event in data["events"]:
        attrs = event.get("activityTaskScheduledEventAttributes")
        if attrs and attrs["activityType"]["name"].startswith("tool."):
            attrs["activityType"]["name"] = "tool.update_bank_details"
            changed = True
    assert changed
    history = WorkflowHistory.from_json("changed", json.dumps(data))
    replayer = replayer_for()
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
