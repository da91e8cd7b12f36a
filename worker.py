"""The Tether worker: settings → Temporal client → dependencies → `Worker.run()`.

Run it with `tether worker` (or `python worker.py` in this repository); run more of
them, on more machines, against the same task queue to scale out.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.worker import Worker

from tether.activities.checkpoints import CheckpointActivities
from tether.activities.gateway import build_provider
from tether.activities.governance import GovernanceActivities
from tether.activities.messages import MessageActivities
from tether.activities.models import ModelActivities, ModelProvider
from tether.activities.notify import NotifyActivities
from tether.activities.tools import ToolActivities
from tether.adapters import worker_plugins
from tether.core import telemetry
from tether.core.config import Settings, load_settings
from tether.core.db import make_engine
from tether.errors import AppError, TetherError
from tether.governance.budget import Budgets
from tether.governance.feed import FeedStore
from tether.governance.kill import KillSwitches
from tether.governance.policy import PolicyEngine
from tether.governance.reload import PolicyHolder, source_for
from tether.governance.store import ApprovalStore
from tether.mcp.activities import McpActivities
from tether.mcp.client import McpClients
from tether.runtime.app import App, AppContext, load_app, workflow_name
from tether.runtime.approvals import trusted_keys
from tether.runtime.client import connect
from tether.runtime.health import HealthServer
from tether.runtime.plugin import TetherPlugin, workflow_runner
from tether.runtime.sweep import sweep_forever
from tether.verification.events import LedgerEvent, digest
from tether.verification.ledger import Ledger
from tether.workflows import TETHER_WORKFLOWS


@dataclass
class Runtime:
    """The worker's dependencies, built once from settings."""

    policies: PolicyHolder
    """The policy in force, swapped whole when its source changes (see governance.reload)."""
    ledger: Ledger
    approvals: ApprovalStore
    kills: KillSwitches
    budgets: Budgets

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.database_url)
        ledger = Ledger(engine, on_append=telemetry.ledger_appended)
        runtime = cls(
            policies=PolicyHolder.load(source_for(settings, ledger), ledger),
            ledger=ledger,
            approvals=ApprovalStore(engine),
            kills=KillSwitches(engine, ledger),
            budgets=Budgets(
                engine,
                ledger,
                # Looked up on every call, so a policy swapped on `runtime` is followed.
                roles_of=lambda agent: [
                    r for a, r in runtime.policy.document.agent_roles if a == agent
                ],
                members=lambda role: runtime.policy.members(role),
            ),
        )
        record_policy(runtime.ledger, runtime.policy, actor="worker")
        return runtime

    @property
    def policy(self) -> PolicyEngine:
        """The policy in force now; read it once per decision."""
        return self.policies.current()


def record_policy(ledger: Ledger, policy: PolicyEngine, actor: str) -> None:
    """Record the policy in force (texts in the content store), once per version."""
    ledger.append(
        LedgerEvent(
            idempotency_key=f"policy.loaded:{policy.version}",
            kind="policy.loaded",
            policy_version=policy.version,
            actor=actor,
            outcome="loaded",
            payload={
                "model_digest": digest(policy.model_text),
                "policy_digest": digest(policy.policy_text),
                "rules": len(policy.document.rules),
            },
        ),
        [policy.model_text, policy.policy_text],
    )


def build_worker(
    client: Client,
    settings: Settings,
    runtime: Runtime,
    *,
    app: App | None = None,
    task_queue: str | None = None,
    extra_workflows: Sequence[type] = (),
    extra_tools: Sequence[object] = (),
    model_provider: ModelProvider | None = None,
) -> Worker:
    """The worker for Tether's own workflows and the app's (`[app]` in settings, or `app`),
    with its tools and Tether's activities, configured by `TetherPlugin` (its client's, or
    its own when the client has none); it registers, by name, the workflows the client's
    plugin did not.

    `extra_workflows` and `extra_tools` (objects) are registered beside the app's. The model
    provider is the gateway over `settings.models`, or the scripted provider when no
    endpoint is configured; pass `model_provider` to bring your own (and close it).
    """
    app = (app if app is not None else load_app(settings)).merged(extra_workflows)
    tool_objects = [
        *app.build_tools(AppContext(settings, runtime.ledger.engine)),
        *extra_tools,
    ]
    keys = trusted_keys(settings)
    messages = MessageActivities.from_settings(settings, runtime.ledger)
    governance = GovernanceActivities(
        runtime.policies,
        runtime.ledger,
        runtime.approvals,
        kills=runtime.kills,
        trusted_keys=keys,
        approval_cap=settings.approval_cap,
        pause_seconds=settings.approval_pause_seconds,
        messages=messages.configured,
    )
    models = ModelActivities(
        model_provider or build_provider(settings),
        runtime.ledger,
        kills=runtime.kills,
        budgets=runtime.budgets,
    )
    tools = ToolActivities(
        runtime.ledger, tool_objects, keys, policy=runtime.policies, kills=runtime.kills
    )
    mcp = McpActivities(
        McpClients(settings.mcp), runtime.ledger, keys, policy=runtime.policies, kills=runtime.kills
    )
    notify = NotifyActivities.from_settings(
        settings, runtime.ledger, FeedStore(runtime.ledger.engine)
    )
    tracing = telemetry.active()
    interceptor = tracing.interceptor() if tracing else None
    traced = any(isinstance(i, TracingInterceptor) for i in client.config()["interceptors"])
    activities: list[Callable[..., Any]] = [
        governance.decide_step,
        governance.prepare_approval,
        governance.open_approval,
        governance.close_approval,
        governance.confirm_halt,
        governance.record_event,
        governance.record_event_with_content,
        messages.send_approval_messages,
        notify.notify,
        notify.open_review,
        notify.record_review,
        models.call_model,
        *tools.activities(),
        CheckpointActivities.from_settings(settings, runtime.ledger).sign_checkpoint,
        mcp.list_mcp_tools,
        mcp.call_mcp_tool,
    ]
    configured = [p for p in client.config()["plugins"] if isinstance(p, TetherPlugin)]
    # A worker applies its client's plugins too, and a second TetherPlugin would run twice
    # (Temporal warns): the client's configures this worker, else the worker's own does.
    # Either way the workflows the client's plugin did not register are registered here.
    plugins: list[Any] = [] if configured else [TetherPlugin(workflows=False)]
    plugins += worker_plugins(app.workflows)  # pydantic-ai's, for its agents' activities
    registered = {workflow_name(w) for p in configured for w in p.registered}
    workflows: dict[str, type] = {}
    for cls in [*TETHER_WORKFLOWS, *app.workflows]:
        name = workflow_name(cls)
        if name not in registered and workflows.setdefault(name, cls) is not cls:
            raise AppError(
                f"workflows {workflows[name].__qualname__!r} and {cls.__qualname__!r} are "
                f"both named {name!r}; give one another @workflow.defn(name=...)"
            )
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        plugins=plugins,
        workflows=list(workflows.values()),
        activities=activities,
        workflow_runner=workflow_runner(app.tool_modules),
        activity_executor=ThreadPoolExecutor(max_workers=32),
        interceptors=[interceptor] if interceptor and not traced else [],
        graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_grace_seconds),
    )


async def run_worker(settings: Settings | None = None, app: App | None = None) -> None:
    """Run one worker for `settings` (default: tether.toml and TETHER_* variables) and the
    app they declare (or `app`) until SIGTERM or SIGINT; running activities then get
    `shutdown_grace_seconds` to finish."""
    settings = settings or load_settings()
    telemetry.configure_logging(settings.log_level, settings.log_format)
    log = logging.getLogger("tether.worker")
    tel = telemetry.setup(settings)
    runtime = Runtime.from_settings(settings)
    tel.watch_kill_switches(lambda: [r.kind.value for r in runtime.kills.status()])
    app = app if app is not None else load_app(settings)
    client = await connect(settings, app)
    provider = build_provider(settings)
    worker = build_worker(client, settings, runtime, app=app, model_provider=provider)
    stopping = asyncio.Event()
    health = HealthServer(
        lambda: worker.is_running and not stopping.is_set(),
        settings.health_host,
        settings.health_port,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    if settings.health_port:
        await health.start()
    log.info(
        "worker polling %r on %s (policy %s)",
        settings.task_queue,
        settings.temporal_address,
        runtime.policy.version,
    )
    runtime.policies.start_polling(settings.policy_poll_seconds)
    if settings.checkpoint_every_seconds:
        from tether.runtime.checkpoints import ensure_checkpoint_schedule

        log.info("checkpoint schedule %s", await ensure_checkpoint_schedule(client, settings))
    # What start-up built (imported modules, the policy index, clients) lives as long as
    # the worker: out of the collector's generations, so no full collection walks it again
    # and stalls every activity and model call in flight (bench/gateway.py measures this).
    gc.collect()
    gc.freeze()
    running = asyncio.create_task(worker.run())
    # Requests of runs that ended undecided are closed, so they leave agents' caps.
    sweeping = asyncio.create_task(
        sweep_forever(
            client, runtime.approvals, runtime.ledger, max(settings.approval_pause_seconds, 1)
        )
    )
    try:
        stop = asyncio.create_task(stopping.wait())
        await asyncio.wait({running, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not running.done():
            # Running activities get shutdown_grace_seconds to finish; then they are
            # cancelled and Temporal hands them to another worker.
            log.info("shutting down: draining (grace %ss)", settings.shutdown_grace_seconds)
            await worker.shutdown()
        await running
        log.info("worker stopped")
    finally:
        sweeping.cancel()
        runtime.policies.stop_polling()
        await health.close()
        close = getattr(provider, "aclose", None)  # the gateway's HTTP connections
        if close is not None:
            await close()
        tel.shutdown()


async def main() -> None:
    await run_worker()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except TetherError as exc:  # bad configuration or policy: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        # Not sys.exit: after a failed connect the Temporal SDK's native threads may still
        # call into Python while the interpreter finalizes, which aborts the process now
        # and then (seen here, 3 exits in 40). Nothing is left to flush or close.
        os._exit(2)
    except KeyboardInterrupt:
        pass
