"""`python -m bench decide`: policy decisions, fast path against casbin's Enforcer.

Measured in one run, on one engine per size: `PolicyEngine.decide` (the fast path) and
`PolicyEngine.decide_with_casbin` (casbin's `Enforcer.enforce_ex`, linear in the rules),
each call timed alone, p50 and p99 in microseconds, for allow requests (some row
matches) and deny requests (no row matches: casbin's worst case, every row evaluated).
Every request is distinct and there is no decision cache: the figures are the uncached
path. Each decision is timed by the wall clock and by its thread's CPU clock: on a shared
machine the OS preempting the bench sets most of the wall-clock tail, which the CPU time
leaves out (what a decision costs on a core of its own). Every request casbin is timed
on is also decided by the fast path, and the two decisions must be equal
(`disagreements` counts any that are not). The fast path's decisions are dropped as
they come, as a caller drops them, and the engine and requests are moved out of the
garbage collector's generations before timing (`gc.freeze()`, as worker.py does after
start-up), so a timing never includes a collection of the benchmark's own objects.

Policies are generated (seeded, so every run sees the same ones) at each size N:
- N/40 roles (`role:team-i`, at least 4), each but the first under the role i // 4, so
  roles nest a few levels deep; N/10 agents (`agent:a-i`), each holding 1-2 roles;
- 12 actions (`payments.pay`, `invoices.read`, ...), N/4 vendors;
- rows: a subject (a role, or now and then an agent), an action, a resource pattern
  (`vendor/:name`, a literal `vendor/vendor-k`, `vendor/vendor-k/*`, `invoice/:id`,
  `vendor/:name/bank`), a condition (`True`, amount thresholds and ranges, a region
  test) and a tier from all four (approve rows name `role:approver`).
Allow requests are aimed at a generated row (an agent holding its subject, a resource
its pattern matches, a context its condition accepts); deny requests use vendors no row
names, under prefixes only `vendor/:name` patterns could match, with a three-segment
path. Each request is classified by the fast path and kept if its class is right.

`impact`: impact-analysis throughput over a generated month of recorded decisions, beside
casbin's Enforcer on the same rows (bench.impact).

`stale_after_reload`: a 1,000-row policy is reloaded (a new engine) with its auto,
notify and deny tiers rotated, and the new engine's decision on each of 60 requests is
compared with casbin on the new policy; every difference counts as stale.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence

from pydantic import JsonValue
from rich.progress import Progress

from tether.governance.policy import PolicyEngine, parse_policy
from tether.governance.types import NO_MATCH_RULE, Decision, DecisionRequest, Tier

MODEL_TEXT = """[request_definition]
r = sub, obj, act, ctx

[policy_definition]
p = sub, obj, act, cond, tier, rule, approver, timeout

[role_definition]
g = _, _
g2 = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub) && keyMatch2(r.obj, p.obj) && r.act == p.act && eval(p.cond)
"""
"""The shipped model (governance/policies/model.conf), without its comments."""

ACTIONS = [
    "payments.pay",
    "payments.refund",
    "invoices.read",
    "invoices.approve",
    "vendors.update_bank_details",
    "vendors.read",
    "tickets.comment",
    "tickets.close",
    "reports.export",
    "contracts.sign",
    "expenses.submit",
    "ledger.read",
]
CONDITIONS: list[tuple[str, Callable[[float, str], bool]]] = [
    ("True", lambda a, r: True),
    ("True", lambda a, r: True),
    ("r.ctx.amount <= 1000", lambda a, r: a <= 1000),
    ("r.ctx.amount > 1000 && r.ctx.amount <= 10000", lambda a, r: 1000 < a <= 10000),
    ("r.ctx.amount > 10000", lambda a, r: a > 10000),
    ("r.ctx.region == 'eu'", lambda a, r: r == "eu"),
]
SIZES = (100, 1_000, 10_000)


class Generated:
    """A policy of `size` rows with its agents, ready to build an engine from."""

    def __init__(self, size: int, seed: int = 7) -> None:
        rng = random.Random(seed * 1_000_003 + size)
        self.rng = rng
        roles = [f"role:team-{i}" for i in range(max(4, size // 40))]
        agents = [f"agent:a-{i}" for i in range(max(4, size // 10))]
        self.vendors = [f"vendor-{i}" for i in range(max(4, size // 4))]
        links = [(roles[i], roles[i // 4]) for i in range(1, len(roles))]
        links += [(a, r) for a in agents for r in rng.sample(roles, rng.randint(1, 2))]
        self.holders: dict[str, list[str]] = {}
        closure = {a: {a} for a in agents}
        parents = dict(links[: len(roles) - 1])
        for agent, role in links[len(roles) - 1 :]:
            while role:
                closure[agent].add(role)
                role = parents.get(role, "")
        for agent, subjects in closure.items():
            for subject in subjects:
                self.holders.setdefault(subject, []).append(agent)
        self.rows: list[tuple[str, str, str, int, str]] = []  # sub, pattern, act, cond, tier
        lines: list[str] = []
        for i in range(size):
            subject = rng.choice(agents) if rng.random() < 0.1 else rng.choice(roles)
            vendor = rng.choice(self.vendors)
            pattern = rng.choice(
                [
                    "vendor/:name",
                    f"vendor/{vendor}",
                    f"vendor/{vendor}",
                    f"vendor/{vendor}/*",
                    "invoice/:id",
                    "vendor/:name/bank",
                ]
            )
            action = rng.choice(ACTIONS)
            cond = rng.randrange(len(CONDITIONS))
            tier = rng.choice(list(Tier)).value
            approver = "role:approver" if tier == "approve" else "-"
            self.rows.append((subject, pattern, action, cond, tier))
            lines.append(
                f"p, {subject}, {pattern}, {action}, {CONDITIONS[cond][0]}, {tier}, "
                f"rule-{i}, {approver}, -"
            )
        lines += [f"g, {m}, {r}" for m, r in links]
        lines += ["g2, user:alice, role:approver", "g2, user:bob, role:approver"]
        self.text = "\n".join(lines)

    def engine(self, text: str | None = None) -> PolicyEngine:
        policy = self.text if text is None else text
        return PolicyEngine(MODEL_TEXT, parse_policy(policy), policy)

    def _resource(self, pattern: str, n: int) -> str:
        if pattern == "vendor/:name":
            return f"vendor/{self.rng.choice(self.vendors)}"
        if pattern.endswith("/*"):
            return f"{pattern[:-2]}/doc-{n}"
        if pattern == "invoice/:id":
            return f"invoice/{n}"
        if pattern == "vendor/:name/bank":
            return f"vendor/{self.rng.choice(self.vendors)}/bank"
        return pattern

    def allow(self, count: int, engine: PolicyEngine) -> list[DecisionRequest]:
        """Distinct requests that some row matches."""
        out: list[DecisionRequest] = []
        n = 0
        while len(out) < count:
            n += 1
            subject, pattern, action, cond, _ = self.rng.choice(self.rows)
            amount = self.rng.choice([5, 250, 999, 4800, 25000]) + n / 1000
            region = self.rng.choice(["eu", "us"])
            if not CONDITIONS[cond][1](amount, region):
                continue
            context: dict[str, JsonValue] = {"amount": amount, "region": region}
            request = DecisionRequest(
                agent=self.rng.choice(self.holders.get(subject) or [subject]),
                action=action,
                resource=self._resource(pattern, n),
                context=context,
            )
            if engine.decide(request).rule != NO_MATCH_RULE:
                out.append(request)
        return out

    def deny(self, count: int, engine: PolicyEngine) -> list[DecisionRequest]:
        """Distinct requests no row matches."""
        out: list[DecisionRequest] = []
        agents = sorted({a for holders in self.holders.values() for a in holders})
        n = 0
        while len(out) < count:
            n += 1
            context: dict[str, JsonValue] = {"amount": 100 + n, "region": "eu"}
            request = DecisionRequest(
                agent=self.rng.choice(agents),
                action=self.rng.choice(ACTIONS),
                resource=f"vendor/unknown-{n}/archive/{n % 7}",
                context=context,
            )
            if engine.decide(request).rule == NO_MATCH_RULE:
                out.append(request)
        return out


def _timed(
    decide: Callable[[DecisionRequest], Decision],
    requests: Sequence[DecisionRequest],
    keep: bool = False,
) -> tuple[list[float], list[float], list[Decision]]:
    """Each decision's wall-clock time and the CPU time its thread spent on it, in µs, and
    the decisions themselves when `keep` is set.

    The CPU time leaves out the time the thread waited while the OS ran something else,
    which on a shared machine sets most of the wall-clock tail; it includes the cost of
    reading the thread's CPU clock (about 0.6 µs here), so it errs high. Decisions
    are dropped as they come unless kept, as a caller does: tens of thousands of kept
    ones would make the collector run mid-measurement, timing the benchmark's own list.
    """
    wall: list[float] = []
    cpu: list[float] = []
    decisions: list[Decision] = []
    clock, thread_clock = time.perf_counter_ns, time.thread_time_ns
    for request in requests:
        # The wall clock brackets the decision alone; the CPU clock, read outside it,
        # costs more than the wall clock's read and would otherwise be timed as well.
        start_cpu = thread_clock()
        start = clock()
        decision = decide(request)
        end = clock()
        end_cpu = thread_clock()
        wall.append((end - start) / 1000)
        cpu.append((end_cpu - start_cpu) / 1000)
        if keep:
            decisions.append(decision)
    return wall, cpu, decisions


def _percentiles(micros: list[float]) -> tuple[float, float]:
    ordered = sorted(micros)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return round(statistics.median(ordered), 2), round(p99, 2)


def casbin_samples(size: int) -> int:
    """Requests per kind for casbin: 40 to 1,000, fewer as casbin slows with the rules
    (a deny request walks every row); the fast path is always timed on `ours`."""
    return max(40, min(1000, 100_000 // size))


def run_decide(
    sizes: Sequence[int] = SIZES,
    ours: int = 20_000,
    casbin: Callable[[int], int] = casbin_samples,
    progress: Progress | None = None,
    impact_decisions: int = 100_000,
    impact_casbin: int = 1_000,
) -> dict[str, JsonValue]:
    """Both paths at each size, allow and deny, and the impact analysis; figures as one
    JSON object."""
    from bench.impact import run_impact  # it generates its month with this module's policy

    results: dict[str, JsonValue] = {}
    task = progress.add_task("decide", total=len(sizes) * 2) if progress else None
    for size in sizes:
        generated = Generated(size)
        engine = generated.engine()
        per_size: dict[str, JsonValue] = {"rules": len(engine.document.rules)}
        for kind in ("allow", "deny"):
            if progress is not None and task is not None:
                progress.update(task, description=f"decide: {size:,} rules, {kind}")
            make = generated.allow if kind == "allow" else generated.deny
            requests = make(ours + casbin(size), engine)
            # The engine and the requests live for the whole measurement, as a worker's
            # engine does: out of the collector's way, as the worker puts it (worker.py).
            gc.collect()
            gc.freeze()
            try:
                fast_micros, fast_cpu_micros, _ = _timed(engine.decide, requests[:ours])
                slow_requests = requests[ours:]
                slow_micros, slow_cpu_micros, reference = _timed(
                    engine.decide_with_casbin, slow_requests, keep=True
                )
            finally:
                gc.unfreeze()
            fast_again = [engine.decide(r) for r in slow_requests]
            fast, slow = _percentiles(fast_micros), _percentiles(slow_micros)
            fast_cpu, slow_cpu = _percentiles(fast_cpu_micros), _percentiles(slow_cpu_micros)
            per_size[kind] = {
                "ours": {
                    "samples": len(fast_micros),
                    "p50_us": fast[0],
                    "p99_us": fast[1],
                    "cpu_p50_us": fast_cpu[0],
                    "cpu_p99_us": fast_cpu[1],
                },
                "casbin": {
                    "samples": len(slow_micros),
                    "p50_us": slow[0],
                    "p99_us": slow[1],
                    "cpu_p50_us": slow_cpu[0],
                    "cpu_p99_us": slow_cpu[1],
                },
                "speedup_p50": round(slow[0] / fast[0], 1),
                "speedup_p99": round(slow[1] / fast[1], 1),
                "disagreements": sum(a != b for a, b in zip(fast_again, reference, strict=True)),
            }
            if progress is not None and task is not None:
                progress.advance(task)
        results[str(size)] = per_size
    return {
        "benchmark": "decide",
        "sizes": results,
        "stale_after_reload": stale_after_reload(min(1_000, max(sizes)), 60),
        # bench.impact: re-deciding a month of recorded decisions (`policy impact`)
        "impact": run_impact(impact_decisions, impact_casbin, progress),
        "target": {"rules": 10_000, "p99_us": 20, "speedup": 1000, "impact_per_second": 50_000},
    }


def stale_after_reload(size: int, count: int) -> int:
    """Decisions from a reloaded engine that still follow the old policy."""
    generated = Generated(size, seed=11)
    old = generated.engine()
    requests = generated.allow(count, old)
    old_decisions = [old.decide(r) for r in requests]
    swap = {"auto": "deny", "deny": "notify", "notify": "auto"}
    lines = []
    for line in generated.text.splitlines():
        fields = line.split(", ")
        if fields[0] == "p" and fields[5] in swap:
            fields[5] = swap[fields[5]]
        lines.append(", ".join(fields))
    new = generated.engine("\n".join(lines))
    changed = sum(
        new.decide_with_casbin(r).tier != before.tier
        for r, before in zip(requests, old_decisions, strict=True)
    )
    assert changed > 0, "the reloaded policy must change some decisions"
    return sum(new.decide(r) != new.decide_with_casbin(r) for r in requests)
