"""`CheckpointWorkflow` (wire name `tether.checkpoint`): one tick of the checkpoint
Schedule. It runs `sign_checkpoint` once, which decides whether a checkpoint is due,
signs it, has witnesses cosign it and stores it outside the database.

Deterministic: the workflow only calls the activity. The Schedule (see
`tether.runtime.checkpoints`) starts one run per tick and skips a tick while one runs.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from tether.activities.checkpoints import (
        CheckpointActivities,
        CheckpointInput,
        CheckpointResult,
    )


@workflow.defn(name="tether.checkpoint")
class CheckpointWorkflow:
    @workflow.run
    async def run(self, inp: CheckpointInput) -> CheckpointResult:
        return await workflow.execute_activity_method(
            CheckpointActivities.sign_checkpoint,
            inp,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
