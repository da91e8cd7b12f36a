"""Outages are waited out, not failed: the durable wait of a model or tool call.

A call that fails for a transient reason once Temporal's own (short) retries are spent
does not end the run: the workflow records that it waits, says so in its `status`
query, sleeps on a durable timer and calls again, until the call's outage budget (one
hour by default, per task kind) is spent. A model call sleeps until the moment the
gateway named (the first eligible endpoint's breaker half-opens, or its Retry-After
ends), so the next try is the breaker's probe; without such a moment it backs off (1 s
doubling to 60 s), with a little jitter so waiting runs do not all wake at once.

Ledger: `<kind>.waiting` (`model.waiting`, `tool.waiting`) with outcome `waiting` when a
wait begins and `resumed`, `gave_up` or `ended` (a non-transient error arrived) when it
ends, both keyed by the run's wait number. The recording activity feeds the
`tether.runs.waiting` metric. Deterministic: time is `workflow.now()`, jitter
`workflow.random()`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, JsonValue

    from tether.activities.governance import GovernanceActivities
    from tether.activities.payloads import StepRef

LOCAL = timedelta(seconds=30)
BACKOFF_MAX_SECONDS = 60.0
DEFAULT_OUTAGE_BUDGET_SECONDS = 3600.0


class Waiting(BaseModel):
    """A wait in progress: what for, since when, why."""

    kind: str
    """`model` or `tool`: the ledger kind is `<kind>.waiting`."""
    what: str
    """What the run waits for, as the status says it: `model endpoint`, `tool 'pay'`."""
    action: str
    resource: str
    since: datetime
    reason: str
    number: int
    """The run's wait number: keys its two ledger events."""
    tries: int = 0
    backoffs: int = 0
    """Consecutive pauses without a moment named by the gateway (they back off)."""

    def describe(self) -> str:
        since = self.since.isoformat(timespec="seconds").replace("+00:00", "Z")
        return f"waiting for {self.what} since {since}: {self.reason[:200]}"


class OutageWaits:
    """Mixed into `AgentWorkflow`: begin, pace and end the run's waits."""

    _waiting: Waiting | None
    _wait_count: int

    def _init_waits(self) -> None:
        self._waiting = None
        self._wait_count = 0

    async def _begin_wait(
        self,
        ref: StepRef,
        kind: str,
        what: str,
        action: str,
        reason: str,
        facts: dict[str, JsonValue],
    ) -> Waiting:
        self._wait_count += 1
        wait = Waiting(
            kind=kind,
            what=what,
            action=action,
            resource=f"agent/{ref.agent}",
            since=workflow.now(),
            reason=reason,
            number=self._wait_count,
        )
        self._waiting = wait
        workflow.logger.info("run %s: %s", ref.workflow_id, wait.describe())
        await self._record_wait(ref, wait, "waiting", {"reason": reason[:500], **facts})
        return wait

    async def _pause(self, wait: Waiting, hint_s: float, budget_s: float) -> bool:
        """Sleep until the next try; False when the outage budget is spent (no sleep)."""
        remaining = budget_s - (workflow.now() - wait.since).total_seconds()
        if remaining <= 0:
            return False
        if hint_s > 0:
            wait.backoffs = 0
            delay = hint_s + min(1.0, hint_s * 0.1) * workflow.random().random()
        else:
            delay = min(BACKOFF_MAX_SECONDS, 2.0 ** min(wait.backoffs, 6))
            delay *= 1 + 0.2 * workflow.random().random()
            wait.backoffs += 1
        wait.tries += 1
        await workflow.sleep(timedelta(seconds=max(1.0, min(delay, remaining))))
        return True

    async def _end_wait(self, ref: StepRef, wait: Waiting | None, outcome: str) -> None:
        if wait is None:
            return
        self._waiting = None
        until = workflow.now()
        await self._record_wait(
            ref,
            wait,
            outcome,
            {
                "until": until.isoformat(),
                "waited_s": round((until - wait.since).total_seconds(), 3),
                "tries": wait.tries,
            },
        )

    async def _record_wait(
        self, ref: StepRef, wait: Waiting, outcome: str, facts: dict[str, JsonValue]
    ) -> None:
        end = "start" if outcome == "waiting" else "end"
        await workflow.execute_local_activity_method(
            GovernanceActivities.record_event,
            ref.event(
                f"{wait.kind}.waiting",
                key=f"{wait.kind}.waiting.{wait.number}.{end}",
                action=wait.action,
                resource=wait.resource,
                decision=None,
                actor=ref.agent,
                outcome=outcome,
                payload={"what": wait.what, "since": wait.since.isoformat(), **facts},
            ),
            start_to_close_timeout=LOCAL,
        )
