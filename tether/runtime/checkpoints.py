"""The checkpoint Schedule: a Temporal Schedule that starts `tether.checkpoint` every
`checkpoint_check_seconds` (default `checkpoint_every_seconds`) on the worker's task
queue. `ensure_checkpoint_schedule` creates it, or updates it to the settings, and is
called by every worker at start when `checkpoint_every_seconds` is set (creating an
existing schedule is answered "already exists"; then it is updated, so the last worker
started with new settings wins).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from tether.activities.checkpoints import CheckpointInput
from tether.core.config import Settings
from tether.workflows.checkpoint import CheckpointWorkflow


def schedule_id(settings: Settings) -> str:
    return f"tether-checkpoints-{settings.task_queue}"


def _schedule(settings: Settings) -> Schedule:
    every = settings.checkpoint_check_seconds or settings.checkpoint_every_seconds
    return Schedule(
        action=ScheduleActionStartWorkflow(
            CheckpointWorkflow.run,
            CheckpointInput(
                every_seconds=settings.checkpoint_every_seconds,
                every_events=settings.checkpoint_every_events,
            ),
            id=f"{schedule_id(settings)}-run",
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=every))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_checkpoint_schedule(client: Client, settings: Settings) -> str:
    """Create or update the schedule; its id."""
    wanted = _schedule(settings)
    sid = schedule_id(settings)
    try:
        await client.create_schedule(sid, wanted)
    except ScheduleAlreadyRunningError:

        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=wanted)

        await client.get_schedule_handle(sid).update(update)
    return sid
