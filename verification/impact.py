"""Impact of a policy change: every decision the ledger recorded in a window, re-decided
under a new policy (the per-run what-if of verification.forensics, fleet-wide).

`impact(ledger, policy, since=...)` reads the ledger's `decision` events recorded at or
after `since`, in sequence order and a page at a time, re-decides each with the new
policy (the same request: agent, action, resource and the recorded context) and counts
what would change: by tier transition (`auto→approve`, `approve→deny`, ...), by the rule
that decided it, and by run, with a few examples of each. Nothing runs, nothing is written.
`analyse(rows, policy)` does the same over rows already read (`read_decisions`).

Contract:
- A decision the policy did not make is skipped and counted: a kill-switch denial or an
  ungoverned step (no policy version recorded).
- A step an edit held at a higher tier is compared by the tier the policy itself gave
  (`policy_tier` in its payload), as the new policy would give it one too.
- A decision *changes* when its tier changes (`changed`, which `ChangeLimit` caps); one
  that keeps its tier under another rule is counted apart (`rerouted`).
- Deterministic for a given window and policy, apart from `elapsed_seconds`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, func, select

from tether.errors import TetherError
from tether.governance.policy import PolicyEngine
from tether.governance.types import DecisionRequest, Tier
from tether.verification.ledger import EVENTS, Ledger
from tether.verification.query import iso_utc

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SEVERITY = {t.value: t.severity for t in Tier}
PAGE = 5_000
"""Rows read from the database at a time."""


def window_start(since: str, now: datetime | None = None) -> str:
    """`--since` as the ISO time the ledger's `recorded_at` is compared with: a duration
    back from now (`30d`, `12h`, `2w`) or an ISO 8601 time."""
    found = _DURATION.match(since.strip())
    if found:
        delta = timedelta(**{_UNIT[found.group(2)]: int(found.group(1))})
        return ((now or datetime.now(UTC)) - delta).isoformat(timespec="microseconds")
    try:
        return iso_utc(since, "since")
    except ValueError:
        raise TetherError(
            f"--since {since!r} is neither a duration nor a time; write e.g. 30d, 12h, 2w "
            "or 2026-11-01"
        ) from None


class DecisionRow(NamedTuple):
    """A recorded decision, as read from the ledger (payload still JSON text)."""

    seq: int
    workflow_id: str
    run_id: str
    step: int | None
    recorded_at: str
    agent: str
    action: str
    resource: str
    tier: str
    rule: str
    policy_version: str
    payload: str


_COLUMNS = [EVENTS.c[name] for name in DecisionRow._fields]


def count_decisions(ledger: Ledger, since: str, until: str | None = None) -> int:
    """How many decision events the window holds (for a progress bar)."""
    stmt = select(func.count()).select_from(EVENTS).where(*_window(since, until))
    with ledger.engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def read_decisions(ledger: Ledger, since: str, until: str | None = None) -> Iterator[DecisionRow]:
    """Decision events recorded in [since, until), oldest first, streamed a page at a time."""
    stmt = select(*_COLUMNS).where(*_window(since, until)).order_by(EVENTS.c.seq)
    with ledger.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=PAGE).execute(stmt)
        for page in result.partitions(PAGE):
            for row in page:
                yield DecisionRow(*row)


def _window(since: str, until: str | None) -> list[ColumnElement[bool]]:
    where = [EVENTS.c.kind == "decision", EVENTS.c.recorded_at >= since]
    if until is not None:
        where.append(EVENTS.c.recorded_at < until)
    return where


class ImpactExample(BaseModel):
    """One decision that would change, and where it was made."""

    seq: int
    workflow_id: str
    run_id: str
    step: int | None
    recorded_at: str
    agent: str
    action: str
    resource: str
    before: str
    before_rule: str
    after: str
    after_rule: str


class Transition(BaseModel):
    """Decisions whose tier would go from `before` to `after`."""

    label: str
    before: str
    after: str
    decisions: int
    examples: list[ImpactExample] = Field(default_factory=list)


class RuleImpact(BaseModel):
    """What becomes of the decisions one recorded rule made."""

    rule: str
    decisions: int
    changed: int = 0
    rerouted: int = 0
    now_decided_by: dict[str, int] = Field(default_factory=dict)
    examples: list[ImpactExample] = Field(default_factory=list)


class AffectedRun(BaseModel):
    workflow_id: str
    run_id: str
    changed: int
    transitions: list[str]


class ImpactReport(BaseModel):
    """What a policy would change over a window of recorded decisions."""

    policy_version: str
    since: str
    until: str | None = None
    decisions: int = 0
    """Recorded decisions re-decided."""
    skipped: int = 0
    """Decision events the policy did not make (kill switches, ungoverned steps)."""
    changed: int = 0
    stricter: int = 0
    looser: int = 0
    rerouted: int = 0
    """Same tier, another rule."""
    transitions: list[Transition] = Field(default_factory=list)
    rules: list[RuleImpact] = Field(default_factory=list)
    runs_affected: int = 0
    runs: list[AffectedRun] = Field(default_factory=list)
    """The runs with the most changes, at most `max_runs` of them."""
    recorded_versions: list[str] = Field(default_factory=list)
    elapsed_seconds: float = 0.0


def analyse(
    rows: Iterable[DecisionRow],
    policy: PolicyEngine,
    *,
    since: str = "",
    until: str | None = None,
    examples: int = 3,
    max_runs: int = 50,
    progress: Callable[[int], None] | None = None,
) -> ImpactReport:
    """Re-decide `rows` under `policy` and count what changes (see the module contract).
    `progress(n)` is told every PAGE rows how many were read so far."""
    started = time.perf_counter()
    report = ImpactReport(policy_version=policy.version, since=since, until=until)
    decide, loads, construct = policy.decide, json.loads, DecisionRequest.model_construct
    per_rule: dict[str, int] = {}
    rules: dict[str, RuleImpact] = {}
    transitions: dict[tuple[str, str], Transition] = {}
    runs: dict[tuple[str, str], tuple[int, set[str]]] = {}
    versions: set[str] = set()
    read = skipped = 0
    for row in rows:
        read += 1
        if progress is not None and read % PAGE == 0:
            progress(read)
        if not row.policy_version:
            skipped += 1
            continue
        versions.add(row.policy_version)
        per_rule[row.rule] = per_rule.get(row.rule, 0) + 1
        payload = loads(row.payload)
        context = payload.get("context")
        before = payload.get("policy_tier", row.tier) if payload.get("edited") else row.tier
        decision = decide(
            construct(
                agent=row.agent,
                action=row.action,
                resource=row.resource,
                context=context if isinstance(context, dict) else {},
            )
        )
        after = decision.tier.value
        if after == before and decision.rule == row.rule:
            continue
        example = ImpactExample(
            seq=row.seq,
            workflow_id=row.workflow_id,
            run_id=row.run_id,
            step=row.step,
            recorded_at=row.recorded_at,
            agent=row.agent,
            action=row.action,
            resource=row.resource,
            before=before,
            before_rule=row.rule,
            after=after,
            after_rule=decision.rule,
        )
        by_rule = rules.setdefault(row.rule, RuleImpact(rule=row.rule, decisions=0))
        by_rule.now_decided_by[decision.rule] = by_rule.now_decided_by.get(decision.rule, 0) + 1
        if len(by_rule.examples) < examples:
            by_rule.examples.append(example)
        if after == before:
            by_rule.rerouted += 1
            report.rerouted += 1
            continue
        by_rule.changed += 1
        report.changed += 1
        if _SEVERITY.get(after, 0) > _SEVERITY.get(before, 0):
            report.stricter += 1
        else:
            report.looser += 1
        label = f"{before}→{after}"
        move = transitions.get((before, after))
        if move is None:
            move = transitions[(before, after)] = Transition(
                label=label, before=before, after=after, decisions=0
            )
        move.decisions += 1
        if len(move.examples) < examples:
            move.examples.append(example)
        count, labels = runs.get((row.workflow_id, row.run_id), (0, set()))
        labels.add(label)
        runs[(row.workflow_id, row.run_id)] = (count + 1, labels)
    for rule, impact_of in rules.items():
        impact_of.decisions = per_rule[rule]
    report.decisions = read - skipped
    report.skipped = skipped
    report.transitions = sorted(transitions.values(), key=lambda t: (-t.decisions, t.label))
    report.rules = sorted(rules.values(), key=lambda r: (-r.changed, -r.rerouted, r.rule))
    report.runs_affected = len(runs)
    ranked = sorted(runs.items(), key=lambda item: (-item[1][0], item[0]))[:max_runs]
    report.runs = [
        AffectedRun(workflow_id=w, run_id=r, changed=n, transitions=sorted(labels))
        for (w, r), (n, labels) in ranked
    ]
    report.recorded_versions = sorted(versions)
    report.elapsed_seconds = round(time.perf_counter() - started, 3)
    return report


def impact(
    ledger: Ledger,
    policy: PolicyEngine,
    *,
    since: str = "30d",
    until: str | None = None,
    examples: int = 3,
    max_runs: int = 50,
    progress: Callable[[int], None] | None = None,
) -> ImpactReport:
    """What `policy` would change over the decisions recorded since `since` (a duration
    such as `30d`, or an ISO time); TetherError naming a `since` that is neither."""
    start = window_start(since)
    end = iso_utc(until, "until") if until else None
    return analyse(
        read_decisions(ledger, start, end),
        policy,
        since=start,
        until=end,
        examples=examples,
        max_runs=max_runs,
        progress=progress,
    )


class ChangeLimit:
    """A push gate: refuses a policy that would change more than `max_changes` of the
    decisions recorded since `since`. Keeps the last report it made (`report`)."""

    def __init__(self, ledger: Ledger, max_changes: int, since: str = "30d") -> None:
        if max_changes < 0:
            raise TetherError(f"--max-changes {max_changes!r} is negative; give 0 or more")
        self.ledger = ledger
        self.max_changes = max_changes
        self.since = since
        self.report: ImpactReport | None = None

    def __call__(self, policy: PolicyEngine) -> str | None:
        """Why `policy` is refused, or None when it changes few enough decisions."""
        report = self.report = impact(self.ledger, policy, since=self.since, examples=1)
        if report.changed <= self.max_changes:
            return None
        moves = ", ".join(f"{t.label} {t.decisions}" for t in report.transitions[:4])
        return (
            f"the policy would change {report.changed} of the {report.decisions} decisions "
            f"recorded since {self.since!r} ({moves}; {report.runs_affected} run(s)), more "
            f"than --max-changes {self.max_changes}; review them with 'tether policy impact' "
            "and push again with a higher --max-changes if they are intended"
        )
