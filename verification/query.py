"""Reading recorded events: search filters, and events held outside a database.

`EventSource` is what replay and the cross-check read; a `Ledger` is one, and so is an
`OfflineLedger` built from an evidence bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    from tether.verification.events import RecordedEvent


class EventQuery(BaseModel):
    """Filters for `Ledger.search`; every set field must match."""

    agent: str | None = None
    action: str | None = None
    tier: str | None = None
    outcome: str | None = None
    kind: str | None = None
    workflow_id: str | None = None
    since: str | None = None
    """ISO 8601 time, inclusive."""
    until: str | None = None
    """ISO 8601 time, exclusive."""
    limit: int = 200


def iso_utc(value: str, name: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"--{name} {value!r} is not an ISO 8601 time; write e.g. 2026-11-25 or "
            "2026-11-25T09:30:00+00:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class EventSource(Protocol):
    def events(self, workflow_id: str | None = None) -> list[RecordedEvent]: ...


class OfflineLedger:
    """Recorded events held in memory (from an evidence bundle), read like a ledger."""

    def __init__(self, events: Sequence[RecordedEvent]) -> None:
        self._events = list(events)

    def events(self, workflow_id: str | None = None) -> list[RecordedEvent]:
        return [e for e in self._events if workflow_id is None or e.workflow_id == workflow_id]
