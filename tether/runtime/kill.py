"""Halting the approvals a kill switch covers (the Temporal half of `tether kill engage`).

`KillSwitches.engage` records the switch: every new decision and model call in scope is
refused from the moment it commits. `halt_pending` then sends the `halt` signal to every
workflow with a pending approval in scope, which ends that wait as rejected. Engaging an
engaged scope again engages nothing new but halts again, so a halt that could not be
sent is retried by running the command again.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from temporalio.client import Client
from temporalio.service import RPCError

from tether.governance.approvals import ApprovalStatus
from tether.governance.kill import HaltInput, KillRecord, ScopeKind
from tether.governance.store import ApprovalStore


class EngageResult(BaseModel):
    record: KillRecord
    halted: list[str] = Field(default_factory=list)
    """Workflow ids whose pending approval was sent `halt`."""
    unreachable: list[str] = Field(default_factory=list)
    """Workflow ids with a pending approval in scope that could not be signalled."""


async def halt_pending(
    client: Client, approvals: ApprovalStore, record: KillRecord
) -> EngageResult:
    """Send `halt` to each workflow with a pending approval in `record`'s scope."""
    result = EngageResult(record=record)
    seen: set[tuple[str, str]] = set()
    for pending in approvals.list(ApprovalStatus.PENDING):
        run = (pending.workflow_id, pending.run_id)
        if run in seen:
            continue
        seen.add(run)
        handle = client.get_workflow_handle(pending.workflow_id, run_id=pending.run_id)
        try:
            tenant = "default"
            if record.kind is ScopeKind.TENANT:  # the tenant lives in the workflow's memo
                described = await handle.describe()
                tenant = str(await described.memo_value("tenant", "default") or "default")
            if not record.covers(tenant, pending.agent, pending.action):
                continue
            await handle.signal(
                "halt", HaltInput(reason=record.describe(), engaged_by=record.engaged_by)
            )
        except RPCError:  # finished or gone: nothing waits there any more
            result.unreachable.append(pending.workflow_id)
            continue
        result.halted.append(pending.workflow_id)
    return result
