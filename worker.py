"""The Tether worker: settings → Temporal client → dependencies → `Worker.run()`.

Run it with `python worker.py`; run more of them, on more machines, against the same
task queue to scale out.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from temporalio.client import Client
from temporalio.worker import Worker

from activities.bank import Bank, PaymentTools
from activities.governance import GovernanceActivities
from activities.models import ModelActivities, ScriptedProvider
from activities.tools import ToolActivities
from governance.errors import TetherError
from governance.policy import PolicyEngine
from governance.store import ApprovalStore
from tether.client import connect
from tether.config import Settings
from tether.db import make_engine
from verification.ledger import Ledger, LedgerEvent, digest
from workflows import ALL_WORKFLOWS


@dataclass
class Runtime:
    """The worker's dependencies, built once from settings."""

    policy: PolicyEngine
    ledger: Ledger
    approvals: ApprovalStore
    bank: Bank

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.database_url)
        runtime = cls(
            policy=PolicyEngine.from_files(settings.policy_model, settings.policy_path),
            ledger=Ledger(engine),
            approvals=ApprovalStore(engine),
            bank=Bank(engine, settle_seconds=settings.bank_settle_seconds),
        )
        record_policy(runtime.ledger, runtime.policy, actor="worker")
        return runtime


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
    task_queue: str | None = None,
    extra_workflows: Sequence[type] = (),
    extra_tools: Sequence[object] = (),
) -> Worker:
    """The worker for all of Tether's workflows plus an application's own, with their tools."""
    governance = GovernanceActivities(runtime.policy, runtime.ledger, runtime.approvals)
    models = ModelActivities(ScriptedProvider.from_file(settings.model_script), runtime.ledger)
    tools = ToolActivities(runtime.ledger, [PaymentTools(runtime.bank), *extra_tools])
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[*ALL_WORKFLOWS, *extra_workflows],
        activities=[
            governance.decide_step,
            governance.open_approval,
            governance.close_approval,
            governance.record_event,
            governance.notify,
            models.call_model,
            *tools.activities(),
        ],
        activity_executor=ThreadPoolExecutor(max_workers=32),
    )


async def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    runtime = Runtime.from_settings(settings)
    client = await connect(settings)
    worker = build_worker(client, settings, runtime)
    logging.getLogger("tether.worker").info(
        "worker polling %r on %s (policy %s)",
        settings.task_queue,
        settings.temporal_address,
        runtime.policy.version,
    )
    await worker.run()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except TetherError as exc:  # bad configuration or policy: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass
