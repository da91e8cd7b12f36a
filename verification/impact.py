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

from pydantic import BaseModel, Field, JsonValue
from sqlalchemy import ColumnElement, func, select

from tether.errors import TetherError
from tether.governance.policy import PolicyEngine
from tether.governance.types import Decision, Tier
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
    """A recorded decision, as read from the ledger."""

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
    context: str | None
    """The recorded policy context, as JSON text (None: none recorded)."""
    policy_tier: str | None
    """The tier the policy gave a step an edit held higher (None: not edited)."""


_COLUMNS = [EVENTS.c[name] for name in DecisionRow._fields[:-2]]


def count_decisions(ledger: Ledger, since: str, until: str | None = None) -> int:
    """How many decision events the window holds (for a progress bar)."""
    stmt = select(func.count()).select_from(EVENTS).where(*_window(since, until))
    with ledger.engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def read_decisions(ledger: Ledger, since: str, until: str | None = None) -> Iterator[DecisionRow]:
    """Decision events recorded in [since, until), oldest first, streamed a page at a time.
    SQLite extracts the two payload fields itself (`json_extract`); elsewhere the payload
    is parsed here."""
    payload = EVENTS.c.payload
    in_sql = ledger.engine.dialect.name == "sqlite"
    fields = (
        [func.json_extract(payload, "$.context"), func.json_extract(payload, "$.policy_tier")]
        if in_sql
        else [payload]
    )
    stmt = select(*_COLUMNS, *fields).where(*_window(since, until)).order_by(EVENTS.c.seq)
    with ledger.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=PAGE).execute(stmt)
        for page in result.partitions(PAGE):
            for row in page:
                if in_sql:
                    yield DecisionRow(*row)
                    continue
                recorded = json.loads(row[-1])
                context = recorded.get("context")
                edited = recorded.get("policy_tier") if recorded.get("edited") else None
                text = None if context is None else json.dumps(context)
                yield DecisionRow._make((*row[:-1], text, edited))


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
    decide_with: Callable[[str, str, str, dict[str, JsonValue]], Decision] | None = None,
) -> ImpactReport:
    """Re-decide `rows` under `policy` and count what changes (see the module contract).
    `progress(n)` is told every PAGE rows how many were read so far; `decide_with`
    replaces `policy.decide_fields` (the benchmark passes casbin's own Enforcer)."""
    started = time.perf_counter()
    decide = decide_with or policy.decide_fields
    loads = json.loads
    per_rule: dict[str, int] = {}
    # (recorded rule, tier before, tier after, new rule) → decisions
    changes: dict[tuple[str, str, str, str], int] = {}
    move_examples: dict[tuple[str, str], list[_Kept]] = {}
    rule_examples: dict[str, list[_Kept]] = {}
    runs: dict[tuple[str, str], tuple[list[int], set[str]]] = {}
    versions: set[str] = set()
    read = skipped = 0
    labels: dict[tuple[str, str], str] = {}
    for row in rows:
        read += 1
        if progress is not None and read % PAGE == 0:
            progress(read)
        _, workflow_id, run_id, _, _, agent, action, resource, tier, rule, version, ctx, held = row
        if not version:
            skipped += 1
            continue
        versions.add(version)
        per_rule[rule] = per_rule.get(rule, 0) + 1
        context = loads(ctx) if ctx else None
        before = held or tier
        decision = decide(agent, action, resource, context if isinstance(context, dict) else {})
        after, new_rule = decision.tier.value, decision.rule
        if after == before and new_rule == rule:
            continue
        key = (rule, before, after, new_rule)
        changes[key] = changes.get(key, 0) + 1
        kept = rule_examples.get(rule)
        if kept is None:
            kept = rule_examples[rule] = []
        if len(kept) < examples:
            kept.append((row, before, after, new_rule))
        if after == before:
            continue
        label = labels.get((before, after))
        if label is None:
            label = labels[(before, after)] = f"{before}→{after}"
            move_examples[(before, after)] = []
        kept = move_examples[(before, after)]
        if len(kept) < examples:
            kept.append((row, before, after, new_rule))
        run = runs.get((workflow_id, run_id))
        if run is None:
            runs[(workflow_id, run_id)] = ([1], {label})
        else:
            run[0][0] += 1
            run[1].add(label)
    report = _report(policy, changes, per_rule, move_examples, rule_examples)
    report.since, report.until = since, until
    report.decisions, report.skipped = read - skipped, skipped
    report.runs_affected = len(runs)
    ranked = sorted(runs.items(), key=lambda item: (-item[1][0][0], item[0]))[:max_runs]
    report.runs = [
        AffectedRun(workflow_id=w, run_id=r, changed=n[0], transitions=sorted(labels))
        for (w, r), (n, labels) in ranked
    ]
    report.recorded_versions = sorted(versions)
    report.elapsed_seconds = round(time.perf_counter() - started, 3)
    return report


_Kept = tuple[DecisionRow, str, str, str]
"""An example kept while tallying: the row, tier before, tier after, new rule."""


def _example(row: DecisionRow, before: str, after: str, new_rule: str) -> ImpactExample:
    return ImpactExample(
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
        after_rule=new_rule,
    )


def _report(
    policy: PolicyEngine,
    changes: dict[tuple[str, str, str, str], int],
    per_rule: dict[str, int],
    move_examples: dict[tuple[str, str], list[_Kept]],
    rule_examples: dict[str, list[_Kept]],
) -> ImpactReport:
    """The totals, transitions and rules of the tallied changes."""
    report = ImpactReport(policy_version=policy.version, since="")
    built: dict[int, ImpactExample] = {}

    def examples_of(kept: list[_Kept]) -> list[ImpactExample]:
        return [built.get(k[0].seq) or built.setdefault(k[0].seq, _example(*k)) for k in kept]

    moves: dict[tuple[str, str], int] = {}
    rules: dict[str, RuleImpact] = {}
    for (rule, before, after, new_rule), count in changes.items():
        impact_of = rules.get(rule)
        if impact_of is None:
            kept = examples_of(rule_examples[rule])
            impact_of = rules[rule] = RuleImpact(rule=rule, decisions=per_rule[rule], examples=kept)
        impact_of.now_decided_by[new_rule] = impact_of.now_decided_by.get(new_rule, 0) + count
        if before == after:
            impact_of.rerouted += count
            report.rerouted += count
            continue
        impact_of.changed += count
        report.changed += count
        if _SEVERITY.get(after, 0) > _SEVERITY.get(before, 0):
            report.stricter += count
        else:
            report.looser += count
        moves[(before, after)] = moves.get((before, after), 0) + count
    report.transitions = sorted(
        (
            Transition(
                label=f"{before}→{after}",
                before=before,
                after=after,
                decisions=count,
                examples=examples_of(move_examples[(before, after)]),
            )
            for (before, after), count in moves.items()
        ),
        key=lambda t: (-t.decisions, t.label),
    )
    report.rules = sorted(rules.values(), key=lambda r: (-r.changed, -r.rerouted, r.rule))
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
