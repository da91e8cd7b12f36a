"""`Kit`: what a workflow author's test does to a run, in the words of the people involved.

    async def test_large_refund_needs_a_lead(tether_kit: Kit) -> None:
        handle = await tether_kit.start(RefundWorkflow.run, RefundInput(...), as_user="user:dana")
        await tether_kit.approve(handle, as_user="user:lee", comment="receipt checked")
        assert (await handle.result()).status == "refunded"

The kit calls the library functions the CLI and the console call (`start_task`,
`decide_request`, `flag_review`, the ledger), so a test exercises the same paths a
person does: decisions are signed with the test's approving key and checked by the
workflow; refusals raise `ApprovalError` or `ReviewError` (both `TetherError`) and are
recorded. A request or a review window opens a moment after the run reaches it, so
`approve`, `reject` and `flag_review` wait (poll, up to `timeout` seconds) for it first.

The kit's worker runs in the event loop the fixtures ran in; a test running in another
loop would wait forever, so every call checks and says how to configure pytest-asyncio.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, overload

from pydantic import BaseModel
from temporalio import workflow as temporal_workflow
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from tether.activities.models import ScriptEntry
from tether.core.config import Settings
from tether.errors import ReviewError, TetherError
from tether.governance.approvals import ApprovalOutcome, ApprovalStatus, PendingApproval
from tether.governance.feed import FeedStore
from tether.governance.reviews import ReviewOutcome, ReviewWindow, review_id
from tether.runtime.approvals import decide_request, signing_key
from tether.runtime.client import start_task
from tether.runtime.review import flag_review
from tether.testing.scripts import RunScripts
from tether.verification.events import RecordedEvent
from tether.worker import Runtime

S = TypeVar("S")
P = TypeVar("P", bound=BaseModel)
R = TypeVar("R")
T = TypeVar("T")

Run = WorkflowHandle[Any, Any] | str
"""A run: its handle, or its workflow id."""

WRONG_LOOP = (
    "the kit's worker runs in another event loop than this test, so the run would never "
    "move; run tests and fixtures in one loop: set asyncio_default_test_loop_scope = "
    '"session" and asyncio_default_fixture_loop_scope = "session" in [tool.pytest.ini_options]'
)


def _wid(run: Run) -> str:
    return run if isinstance(run, str) else run.id


class Kit:
    """Start runs as people, decide their approvals, flag their actions, script their model
    and read their ledger (see the module). Built by the `tether_kit` fixture."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        runtime: Runtime,
        scripts: RunScripts | None = None,
        *,
        poll_seconds: float = 0.05,
    ) -> None:
        self.client = client
        self.settings = settings
        self.runtime = runtime
        self.ledger = runtime.ledger
        self.feed = FeedStore(runtime.ledger.engine)
        self.scripts = scripts
        self.poll_seconds = poll_seconds
        self._key = signing_key(settings)
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def _check_loop(self) -> None:
        if self._loop is not None and asyncio.get_running_loop() is not self._loop:
            raise TetherError(WRONG_LOOP)

    # -- runs -----------------------------------------------------------------------------

    @overload
    async def start(
        self,
        workflow: Callable[[S, P], Awaitable[R]],
        input: P,
        *,
        as_user: str,
        workflow_id: str = "",
        tenant: str = "default",
        script: Sequence[ScriptEntry] = (),
    ) -> WorkflowHandle[S, R]: ...

    @overload
    async def start(
        self,
        workflow: str,
        input: BaseModel,
        *,
        as_user: str,
        workflow_id: str = "",
        tenant: str = "default",
        script: Sequence[ScriptEntry] = (),
    ) -> WorkflowHandle[Any, Any]: ...

    async def start(
        self,
        workflow: Callable[..., Awaitable[Any]] | str,
        input: BaseModel,
        *,
        as_user: str,
        workflow_id: str = "",
        tenant: str = "default",
        script: Sequence[ScriptEntry] = (),
    ) -> WorkflowHandle[Any, Any]:
        """Start `workflow` (its run method, e.g. `RefundWorkflow.run`, or its name) on the
        kit's task queue as the person `as_user`; `script` scripts this run's model
        (see `script_model`). The id is `workflow_id`, or the workflow's name made unique."""
        self._check_loop()
        name, result_type = temporal_workflow._Definition.get_name_and_result_type(workflow)
        wid = workflow_id or f"{name}-{uuid.uuid4().hex[:10]}"
        if script:
            self.script_model(wid, *script)
        return await start_task(
            self.client,
            name,
            input,
            workflow_id=wid,
            task_queue=self.settings.task_queue,
            started_by=as_user,
            result_type=result_type or dict,
            tenant=tenant,
        )

    @overload
    async def run(
        self,
        workflow: Callable[[S, P], Awaitable[R]],
        input: P,
        *,
        as_user: str,
        workflow_id: str = "",
        tenant: str = "default",
        script: Sequence[ScriptEntry] = (),
        timeout: float = 60.0,
    ) -> R: ...

    @overload
    async def run(
        self,
        workflow: str,
        input: BaseModel,
        *,
        as_user: str,
        workflow_id: str = "",
        tenant: str = "default",
        script: Sequence[ScriptEntry] = (),
        timeout: float = 60.0,
    ) -> Any: ...

    async def run(
        self,
        workflow: Callable[..., Awaitable[Any]] | str,
        input: BaseModel,
        *,
        as_user: str,
        workflow_id: str = "",
        tenant: str = "default",
        script: Sequence[ScriptEntry] = (),
        timeout: float = 60.0,
    ) -> Any:
        """`start` the run and return its result (waiting up to `timeout` seconds)."""
        handle = await self.start(
            workflow,
            input,
            as_user=as_user,
            workflow_id=workflow_id,
            tenant=tenant,
            script=script,
        )
        return await asyncio.wait_for(handle.result(), timeout)

    def script_model(self, run: Run, *entries: ScriptEntry, model: str = "scripted-test") -> None:
        """Answer `run`'s model calls from `entries` first (the first entry whose task and
        match fit), before the project's model script; the worker's other runs are not
        affected. Script a run before it calls the model: pass its id, or use `start(...,
        script=...)`."""
        if self.scripts is None:
            raise TetherError(
                "this kit's worker has no per-run scripts; build it with the tether_worker "
                "fixture (or pass scripts=RunScripts(...) to Kit and model_provider to the worker)"
            )
        self.scripts.script(_wid(run), entries, model=model)

    def events(self, run: Run, kind: str = "") -> list[RecordedEvent]:
        """The run's ledger events, oldest first; only those of `kind` when given."""
        found = self.ledger.events(_wid(run))
        return [e for e in found if e.kind == kind] if kind else found

    # -- approvals ------------------------------------------------------------------------

    async def wait_for_approval(self, run: Run, *, timeout: float = 30.0) -> PendingApproval:
        """The run's open approval request (its newest, after an escalation), once it
        exists; AssertionError when the run ends or `timeout` passes without one."""
        self._check_loop()
        wid = _wid(run)
        handle = self.client.get_workflow_handle(wid)
        deadline = asyncio.get_running_loop().time() + timeout
        ticks = 0
        while True:
            waiting = [
                p
                for p in self.runtime.approvals.list(ApprovalStatus.PENDING)
                if p.workflow_id == wid
            ]
            if waiting:
                return max(waiting, key=lambda p: p.stage)
            ticks += 1
            if ticks % 10 == 0:
                status = (await handle.describe()).status
                if status is not WorkflowExecutionStatus.RUNNING:
                    raise AssertionError(
                        f"workflow {wid!r} ended ({status.name if status else 'unknown'}) "
                        f"without an open approval request; its ledger: {self._kinds(wid)}"
                    )
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"workflow {wid!r} opened no approval request within {timeout}s; its "
                    f"ledger: {self._kinds(wid)}"
                )
            await asyncio.sleep(self.poll_seconds)

    async def approve(
        self,
        target: Run | PendingApproval,
        *,
        as_user: str,
        comment: str = "",
        timeout: float = 30.0,
    ) -> ApprovalOutcome:
        """Approve as `as_user` the request `target` names (a request, or a run's open one,
        waited for); ApprovalError when the workflow refuses the decision."""
        return await self._decide(target, as_user, True, comment, timeout)

    async def reject(
        self,
        target: Run | PendingApproval,
        *,
        as_user: str,
        reason: str = "",
        timeout: float = 30.0,
    ) -> ApprovalOutcome:
        """Reject as `as_user` (the agent is told `reason`); see `approve`."""
        return await self._decide(target, as_user, False, reason, timeout)

    async def _decide(
        self,
        target: Run | PendingApproval,
        as_user: str,
        approve: bool,
        comment: str,
        timeout: float,
    ) -> ApprovalOutcome:
        self._check_loop()
        if not isinstance(target, PendingApproval):
            target = await self.wait_for_approval(target, timeout=timeout)
        return await decide_request(
            self.client,
            self.runtime.approvals,
            self.ledger,
            target.request_id,
            approver=as_user,
            approve=approve,
            key=self._key,
            comment=comment,
        )

    # -- reviews --------------------------------------------------------------------------

    async def wait_for_review(
        self, run: Run, *, step: int | None = None, timeout: float = 30.0
    ) -> ReviewWindow:
        """The review window of `run`'s notify-tier `step` (default: its newest window),
        once it is open; AssertionError when `timeout` passes without it."""
        self._check_loop()
        wid = _wid(run)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            window = self._window(wid, step)
            if window is not None:
                return window
            if asyncio.get_running_loop().time() > deadline:
                which = f"of step {step}" if step is not None else "at all"
                raise AssertionError(
                    f"workflow {wid!r} opened no review window {which} within {timeout}s; its "
                    f"ledger: {self._kinds(wid)}"
                )
            await asyncio.sleep(self.poll_seconds)

    def _window(self, wid: str, step: int | None) -> ReviewWindow | None:
        if step is not None:
            try:
                return self.feed.get_review(review_id(wid, step))
            except ReviewError:
                return None
        windows = [w for w in self.feed.list_reviews(None) if w.workflow_id == wid]
        return max(windows, key=lambda w: w.step) if windows else None

    async def flag_review(
        self,
        target: Run | ReviewWindow,
        *,
        as_user: str,
        reason: str = "",
        step: int | None = None,
        timeout: float = 30.0,
    ) -> ReviewOutcome:
        """Flag as `as_user` the window `target` names (a window, or a run's window of
        `step`, waited for); returns once its compensation ran. ReviewError when refused."""
        self._check_loop()
        if not isinstance(target, ReviewWindow):
            target = await self.wait_for_review(target, step=step, timeout=timeout)
        return await flag_review(
            self.client,
            self.feed,
            self.ledger,
            target.workflow_id,
            target.step,
            reviewer=as_user,
            reason=reason,
        )

    def _kinds(self, wid: str) -> list[str]:
        return [e.kind for e in self.ledger.events(wid)] or ["no events"]
