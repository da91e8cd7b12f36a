"""Impact analysis throughput, reported by `python -m bench decide` under `impact`.

A month of recorded decisions: `decisions` decision events (100,000 by default: about
3,300 a day) appended through `Ledger.append`, the worker's recording path, to a fresh
SQLite ledger, with the payload the worker's decide step records. They come from the
1,000-row generated policy (bench.decide.Generated): nine allow requests to one deny
request, every context distinct (amounts carry a running fraction), four to a run.
The new policy is the same rows with the auto, notify and deny tiers rotated, so nearly
every decision changes (the worst case for the tally, which builds an example record
for each change).

Measured in one run:
- `ours`: `verification.impact.impact` end to end: reading the window from the ledger,
  parsing each payload, re-deciding with the fast path, tallying;
- `redecide_only`: `analyse` over the same rows already read (the part that is ours);
- `casbin`: `analyse` over the first `casbin_rows` of those rows with casbin's own
  `Enforcer.enforce_ex` deciding (`decide_with_casbin`), everything else the same;
- `disagreements`: rows of that sample the fast path and casbin decide differently.
Throughputs are decisions re-decided per second, by the wall clock and by the thread's
CPU time (what it costs on a core of its own; SQLite reads run on that thread too); the
target is ≥ 50,000 for `ours`.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import JsonValue
from rich.progress import Progress

from bench.decide import Generated
from tether.core.db import make_engine
from tether.governance.policy import PolicyEngine
from tether.governance.types import Decision, DecisionRequest, Tier
from tether.verification.events import LedgerEvent
from tether.verification.impact import (
    DecisionRow,
    ImpactReport,
    analyse,
    impact,
    read_decisions,
    window_start,
)
from tether.verification.ledger import Ledger

TARGET_PER_SECOND = 50_000
_OUTCOME = {Tier.DENY: "denied", Tier.APPROVE: "needs-approval"}
_ROTATE = {"auto": "deny", "deny": "notify", "notify": "auto"}


def _event(i: int, request: DecisionRequest, engine: PolicyEngine) -> LedgerEvent:
    decision = engine.decide(request)
    run = f"bench-month-{i // 4}"
    return LedgerEvent(
        idempotency_key=f"{run}:run:{i % 4}:decision",
        kind="decision",
        workflow_id=run,
        run_id="run",
        step=i % 4,
        agent=request.agent,
        action=request.action,
        resource=request.resource,
        tier=decision.tier.value,
        rule=decision.rule,
        policy_version=decision.policy_version,
        actor="policy",
        outcome=_OUTCOME.get(decision.tier, "allowed"),
        payload={
            "reason": decision.reason,
            "args_digest": "sha256:" + "0" * 64,
            "args_summary": {"amount": request.context.get("amount")},
            "context": dict(request.context),
            "started_by": "user:bob",
            "inputs": [],
            "workflow_type": "PayInvoice",
        },
    )


def _rotated(generated: Generated) -> PolicyEngine:
    lines = []
    for line in generated.text.splitlines():
        fields = line.split(", ")
        if fields[0] == "p" and fields[5] in _ROTATE:
            fields[5] = _ROTATE[fields[5]]
        lines.append(", ".join(fields))
    return generated.engine("\n".join(lines))


def record_month(folder: Path, decisions: int, progress: Progress | None = None) -> Ledger:
    """A ledger holding `decisions` decision events appended the way workers append them."""
    generated = Generated(1_000, seed=23)
    engine = generated.engine()
    denies = decisions // 10
    requests = generated.allow(decisions - denies, engine) + generated.deny(denies, engine)
    generated.rng.shuffle(requests)
    ledger = Ledger(make_engine(f"sqlite:///{folder / 'month.db'}"))
    task = progress.add_task("impact: recording a month", total=decisions) if progress else None
    with ThreadPoolExecutor(32) as pool:  # concurrent appends share commits, as workers' do
        events = (_event(i, r, engine) for i, r in enumerate(requests))
        for n, _ in enumerate(pool.map(ledger.append, events, chunksize=256), 1):
            if progress is not None and task is not None and n % 1_000 == 0:
                progress.update(task, completed=n)
    return ledger


def _request(row: DecisionRow) -> DecisionRequest:
    context = json.loads(row.context) if row.context else None
    return DecisionRequest(
        agent=row.agent,
        action=row.action,
        resource=row.resource,
        context=context if isinstance(context, dict) else {},
    )


def _timed(work: Callable[[], ImpactReport]) -> tuple[tuple[float, float], ImpactReport]:
    """(wall seconds, this thread's CPU seconds) of `work`, and its report."""
    cpu, wall = time.thread_time(), time.perf_counter()
    report = work()
    return (time.perf_counter() - wall, time.thread_time() - cpu), report


def _rates(count: int, seconds: tuple[float, float]) -> dict[str, float]:
    """Decisions per second by the wall clock and by the thread's CPU time (on a shared
    machine the wall clock also counts the time others held the core)."""
    wall, cpu = seconds
    return {
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "per_second": round(count / wall, 1) if wall > 0 else 0.0,
        "cpu_per_second": round(count / cpu, 1) if cpu > 0 else 0.0,
    }


def run_impact(
    decisions: int = 100_000, casbin_rows: int = 2_000, progress: Progress | None = None
) -> dict[str, JsonValue]:
    """Record a month, then time the impact of the rotated policy over it, and casbin's."""
    with tempfile.TemporaryDirectory() as folder:
        ledger = record_month(Path(folder), decisions, progress)
        try:
            new = _rotated(Generated(1_000, seed=23))
            ours, report = _timed(lambda: impact(ledger, new, since="30d"))
            rows: list[DecisionRow] = list(read_decisions(ledger, window_start("30d")))
            redecide, again = _timed(lambda: analyse(rows, new))
            sample = rows[:casbin_rows]

            def enforce(
                agent: str, action: str, resource: str, context: dict[str, JsonValue]
            ) -> Decision:
                request = DecisionRequest(
                    agent=agent, action=action, resource=resource, context=context
                )
                return new.decide_with_casbin(request)

            casbin, theirs = _timed(lambda: analyse(sample, new, examples=0, decide_with=enforce))
            disagreements = sum(
                new.decide(r) != new.decide_with_casbin(r) for r in map(_request, sample)
            )
        finally:
            ledger.engine.dispose()
    ours_rates, casbin_rates = _rates(report.decisions, ours), _rates(theirs.decisions, casbin)
    varying = {"elapsed_seconds", "since", "until"}
    return {
        "decisions": report.decisions,
        "changed": report.changed,
        "runs_affected": report.runs_affected,
        "same_as_redecide_only": report.model_dump(exclude=varying)
        == again.model_dump(exclude=varying),
        "ours": dict(ours_rates),
        "redecide_only": dict(_rates(again.decisions, redecide)),
        "casbin": {"rows": theirs.decisions, **casbin_rates},
        "speedup": round(ours_rates["cpu_per_second"] / casbin_rates["cpu_per_second"], 1)
        if casbin_rates["cpu_per_second"]
        else 0.0,
        "disagreements": disagreements,
        "target_per_second": TARGET_PER_SECOND,
    }
