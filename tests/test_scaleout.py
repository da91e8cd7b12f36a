"""Scale-out is Temporal's: two worker processes on one task queue and one PostgreSQL
ledger share a few hundred governed workflows; one is killed midway (SIGKILL); every
workflow still completes, every step is recorded exactly once and the ledger verifies.

Runs when TETHER_TEST_DATABASE_URL names a PostgreSQL database (the ledger gets a schema
of its own, dropped afterwards).
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle

from bench.workflows import StepsInput
from tests.conftest import EXAMPLE, ROOT, spawn_worker
from tests.test_ledger_postgres import URL, _schema
from tether.core.config import Settings
from tether.runtime.client import start_task
from tether.verification.ledger import Ledger

WORKFLOWS = 240
STEPS = StepsInput().steps

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(
        not URL.startswith("postgresql"),
        reason="set TETHER_TEST_DATABASE_URL to a PostgreSQL URL to run this",
    ),
]


async def test_two_workers_share_the_queue_and_survive_a_kill(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    with _schema() as url:
        ledger = Ledger.from_url(url)  # tables exist before two workers race to make them
        # The workers' app: the benchmark's governed workflow over the example's tools.
        config = tmp_path / "tether.toml"
        config.write_text(
            f'policy_path = "{EXAMPLE / "policy.csv"}"\n'
            f'model_script = "{EXAMPLE / "script.json"}"\n'
            f'[app]\npath = ["{ROOT}", "{EXAMPLE}"]\n'
            'workflows = ["bench.workflows:GovernedStepsWorkflow"]\n'
            'tools = ["ap.bank:PaymentTools"]\n'
        )
        env = {
            "TETHER_CONFIG": str(config),
            "TETHER_DATABASE_URL": url,
            "TETHER_STATE_DIR": str(tmp_path / "state"),
            "TETHER_APPROVAL_KEY": str(settings.approval_key),
            "TETHER_POLICY_POLL_SECONDS": "0",
        }
        logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
        workers = [spawn_worker(settings, log, **env) for log in logs]
        try:
            handles: list[WorkflowHandle[object, int]] = await asyncio.gather(
                *(
                    start_task(
                        client,
                        "GovernedSteps",
                        StepsInput(vendor=f"v{i}"),
                        workflow_id=f"scale-{uuid.uuid4().hex[:12]}",
                        task_queue=settings.task_queue,
                        started_by="user:bob",
                        result_type=int,
                    )
                    for i in range(WORKFLOWS)
                )
            )
            # Kill one worker once both are busy and a share of the work is done.
            done = 0
            for _ in range(1200):
                done = sum(1 for e in ledger.events_of_kind("tool.executed"))
                if done >= WORKFLOWS * STEPS // 4:
                    break
                await asyncio.sleep(0.1)
            assert done < WORKFLOWS * STEPS, "all work was done before the kill"
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait()
            results = await asyncio.wait_for(
                asyncio.gather(*(h.result() for h in handles)), timeout=150
            )
        finally:
            for proc in workers:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in workers:
                proc.wait(timeout=60)
        logs_text = "\n".join(log.read_text() for log in logs)
        assert workers[0].returncode == -signal.SIGKILL
        assert workers[1].returncode == 0, logs_text
        assert results == [STEPS] * WORKFLOWS

        events = ledger.events()
        for handle in handles:
            mine = Counter((e.step, e.kind) for e in events if e.workflow_id == handle.id)
            assert set(mine.values()) == {1}, (handle.id, mine)
            steps = {step for step, kind in mine if kind == "decision"}
            assert len(steps) == STEPS
            assert steps == {step for step, kind in mine if kind == "tool.executed"}
        assert len({e.idempotency_key for e in events}) == len(events)
        # Both processes did work (histories name the worker that ran each task).
        identities = set()
        for handle in handles[:40]:
            for event in (await handle.fetch_history()).events:
                if event.HasField("workflow_task_started_event_attributes"):
                    identities.add(event.workflow_task_started_event_attributes.identity)
        pids = {identity.split("@")[0] for identity in identities}
        assert {str(p.pid) for p in workers} <= pids, pids
        report = ledger.verify()
        assert report.ok, report
        ledger.engine.dispose()
