"""The decision fast path: an immutable index that finds the row casbin would find.

casbin's `enforce_ex` walks every `p` row in order and evaluates the whole matcher
`g(r.sub, p.sub) && keyMatch2(r.obj, p.obj) && r.act == p.act && eval(p.cond)` for each,
so a decision costs time linear in the policy. This index answers the same question from
the same rows, built once per PolicyEngine (a reload builds a new engine, so no decision
can come from an older policy):

- rows are grouped by action (`r.act == p.act` is string equality, so a dict lookup),
  then by subject; an agent's subjects are itself plus every role reachable through `g`
  rows within casbin's default role manager's hierarchy limit (10 levels: the agent and
  9 hops), computed at build time for every name that has roles;
- within a group, rows whose resource pattern is a plain literal sit in a dict keyed by
  that literal; the others are keyed by the literal prefix of their keyMatch2 regex,
  looked up by the request resource's prefixes of those lengths;
- each pattern is turned into the regex pycasbin's `key_match2` builds (`/*` becomes
  `/.*`, `:name` becomes `[^/]+`, a lone `*` matches anything; other regex syntax in a
  pattern keeps its meaning, as in casbin) and compiled once with RE2
  (governance.matching), which matches in time linear in the resource for any pattern;
  casbin's evaluator is given the same RE2 functions, so both paths agree;
- each condition is compiled once from the very AST casbin parses for that row, into
  closures that apply simpleeval's own operator table with simpleeval's semantics for
  `and`/`or` (short-circuit, returning the deciding operand), chained comparisons and
  attribute access (attribute first, then dict key; a missing one raises simpleeval's
  AttributeDoesNotExist). Conditions using anything else (calls, subscripts,
  collections, other names) are evaluated by casbin's own evaluator, per request;
- candidates are tried in row order and the first whose regex and condition hold wins,
  as casbin's `some(where (p.eft == allow))` stops at its first match. A condition
  value is read as casbin reads the matcher result: a bool as itself, a float as
  `!= 0`, anything else raises RuntimeError; an exception from an earlier candidate's
  condition propagates, exactly where casbin's loop would raise.

Request fields are only ever compared, looked up or matched against a row's regex:
nothing in a request is parsed as a pattern or an expression. A pattern RE2 does not
accept, or a literal pattern given to a matching function in a condition, raises
matching.PatternError at build time (the policy is refused at load).

Deterministic, no I/O, thread-safe (nothing is mutated after construction).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import simpleeval

from tether.governance.matching import PatternError, compile_pattern, constant_patterns, key_matcher
from tether.governance.matching import key_match2_regex as key_match2_regex

Names = Mapping[str, object]
"""The matcher's variables: `r_sub`, `r_obj`, `r_act`, `r_ctx` (and `p_*` for a row)."""
Evaluator = Callable[[Names], object]

MAX_HIERARCHY_LEVEL = 10
"""casbin's default role manager follows at most this many levels (the agent included)."""

SUPPORTED_MATCHER = "g(r_sub, p_sub) && keyMatch2(r_obj, p_obj) && r_act == p_act && eval(p_cond)"
"""The matcher (as casbin stores it, dots escaped) the index reproduces."""

_R_TOKENS = frozenset({"r_sub", "r_obj", "r_act", "r_ctx"})
_SPECIAL = frozenset(".^$*+?{}[]\\|()")
_QUANTIFIERS = frozenset("*+?{")
_HEAD = ast.parse("g(r_sub, p_sub) and keyMatch2(r_obj, p_obj) and r_act == p_act and (c)")
_HEAD_DUMPS = tuple(ast.dump(v) for v in _HEAD.body[0].value.values[:3])  # type: ignore[attr-defined]
_OPS: dict[type[ast.AST], Callable[..., Any]] = simpleeval.DEFAULT_OPERATORS
_RESULT_ERROR = "matcher result should be bool, int or float"  # casbin's own message


class Unsupported(ValueError):
    """A row the index cannot hold: its matcher is not the supported shape (its condition
    leaves its parentheses), or it holds a pattern RE2 does not accept."""


def literal_prefix(regex: str) -> tuple[str, bool]:
    """(prefix every match starts with, whether the regex is that literal and nothing
    else) for a regex `^...$` made by key_match2_regex."""
    body = regex[1:-1]
    if "|" in body:  # an alternation may bypass any prefix
        return "", False
    for i, char in enumerate(body):
        if char in _SPECIAL:
            # a quantifier makes the character before it optional or repeated
            return body[: i - 1 if char in _QUANTIFIERS and i else i], False
    return body, True


@dataclass(frozen=True)
class Row:
    """One `p` row as the index needs it."""

    subject: str
    pattern: str
    action: str
    expression: ast.expr
    """The whole matcher for this row, as casbin parses it."""
    text: str
    """The matcher's source text (casbin's error messages quote it)."""
    values: Mapping[str, str]
    """The row's `p_*` variables."""


class _NotCompiled(Exception):
    pass


def _compile(node: ast.expr, values: Mapping[str, str], text: str) -> Evaluator:
    """Closures mirroring simpleeval's evaluation of `node`; _NotCompiled otherwise."""
    if isinstance(node, ast.Constant):
        constant: object = node.value
        if hasattr(constant, "__len__") and len(constant) > simpleeval.MAX_STRING_LENGTH:
            raise _NotCompiled
        return lambda names: constant
    if isinstance(node, ast.Name):
        if node.id in values:
            value = values[node.id]
            return lambda names: value
        if node.id in _R_TOKENS:
            return itemgetter(node.id)
        raise _NotCompiled  # a function name or an undefined one: casbin decides
    if isinstance(node, ast.Attribute):
        return _attribute(node, values, text)
    if isinstance(node, ast.Compare):
        return _compare(node, values, text)
    if isinstance(node, ast.BoolOp):
        return _boolop(node, values, text)
    if isinstance(node, ast.UnaryOp):
        unary = _OPS[type(node.op)]
        operand = _compile(node.operand, values, text)
        return lambda names: unary(operand(names))
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _OPS:
            raise _NotCompiled
        binary = _OPS[type(node.op)]
        left = _compile(node.left, values, text)
        right = _compile(node.right, values, text)
        return lambda names: binary(left(names), right(names))
    if isinstance(node, ast.IfExp):
        test = _compile(node.test, values, text)
        body = _compile(node.body, values, text)
        orelse = _compile(node.orelse, values, text)
        return lambda names: body(names) if test(names) else orelse(names)
    raise _NotCompiled


def _attribute(node: ast.Attribute, values: Mapping[str, str], text: str) -> Evaluator:
    attr = node.attr
    if attr.startswith(tuple(simpleeval.DISALLOW_PREFIXES)) or attr in simpleeval.DISALLOW_METHODS:
        raise _NotCompiled  # simpleeval refuses it; its own error is the one to give
    inner = _compile(node.value, values, text)
    on_dict = hasattr(dict, attr)  # a plain dict has no attributes but its class's

    def attribute(names: Names) -> object:
        value: Any = inner(names)
        if type(value) is not dict or on_dict:
            try:
                item = getattr(value, attr)
            except (AttributeError, TypeError):
                pass
            else:
                if callable(item) and item in simpleeval.DISALLOW_FUNCTIONS:
                    raise simpleeval.FeatureNotAvailable("This function is forbidden")
                return item
        try:
            return value[attr]
        except (KeyError, TypeError):
            raise simpleeval.AttributeDoesNotExist(attr, text) from None

    return attribute


def _compare(node: ast.Compare, values: Mapping[str, str], text: str) -> Evaluator:
    left = _compile(node.left, values, text)
    steps = [
        (_OPS[type(op)], _compile(comp, values, text))
        for op, comp in zip(node.ops, node.comparators, strict=True)
    ]
    if len(steps) == 1:
        ((op, right),) = steps
        return lambda names: op(left(names), right(names))

    def chained(names: Names) -> object:
        right_value = left(names)
        result: object = True
        for step, comparator in steps:
            if not result:
                break
            left_value, right_value = right_value, comparator(names)
            result = step(left_value, right_value)
        return result

    return chained


def _boolop(node: ast.BoolOp, values: Mapping[str, str], text: str) -> Evaluator:
    operands = [_compile(v, values, text) for v in node.values]
    if isinstance(node.op, ast.And):

        def conjunction(names: Names) -> object:
            result: object = False
            for operand in operands:
                result = operand(names)
                if not result:
                    break
            return result

        return conjunction

    def disjunction(names: Names) -> object:
        result: object = False
        for operand in operands:
            result = operand(names)
            if result:
                break
        return result

    return disjunction


def condition_of(row: Row) -> ast.expr:
    """The condition part of a row's matcher; Unsupported if the matcher has another shape."""
    expression = row.expression
    if (
        not isinstance(expression, ast.BoolOp)
        or not isinstance(expression.op, ast.And)
        or len(expression.values) != 4
        or tuple(ast.dump(v) for v in expression.values[:3]) != _HEAD_DUMPS
    ):
        raise Unsupported(
            f"condition {row.values.get('p_cond')!r} does not stay one expression inside the "
            "matcher's eval(); balance its parentheses"
        )
    return expression.values[3]


Candidate = tuple[int, Callable[[str], object] | None, Evaluator | None]
"""(row order, the pattern's linear-time matcher (truthy on a match) or None for a
literal, the condition or None when it is the constant `True`)."""

_ORDER = itemgetter(0)

WHOLE_FACTOR, WHOLE_SLACK = 4, 1024
"""A bucket precomputes each key's whole candidate list unless that would hold more than
WHOLE_FACTOR times its own rows plus WHOLE_SLACK: past it, lookups merge lists instead."""


class _Bucket:
    """The rows of one (action, subject) — or of all of an agent's subjects — by resource
    pattern.

    `exact` holds literal patterns by their text and `prefixed` the others by their
    literal prefix. A resource's candidates are the exact list of its own text plus the
    prefixed list of each of its prefixes. Those prefixes are all prefixes of the longest
    one, so each key's whole list (its own rows and those of every key that is a prefix of
    it, in row order) is built once: a lookup then returns one list and sorts nothing.
    """

    __slots__ = ("exact", "lengths", "longest_first", "prefixed", "whole_exact", "whole_prefixed")

    def __init__(self, entries: Sequence[tuple[str, bool, Candidate]]) -> None:
        exact: dict[str, list[Candidate]] = {}
        prefixed: dict[str, list[Candidate]] = {}
        for prefix, literal, candidate in entries:
            (exact if literal else prefixed).setdefault(prefix, []).append(candidate)
        self.exact = exact
        self.prefixed = prefixed
        self.lengths = tuple(sorted({len(p) for p in prefixed}))
        self.longest_first = self.lengths[::-1]
        shortest_first = sorted(prefixed, key=len)

        def under(key: str) -> list[Candidate]:
            return [c for q in shortest_first if key.startswith(q) for c in prefixed[q]]

        whole_prefixed = {p: sorted(under(p), key=_ORDER) for p in prefixed}
        whole_exact = {k: sorted(v + under(k), key=_ORDER) for k, v in exact.items()}
        held = sum(map(len, whole_prefixed.values())) + sum(map(len, whole_exact.values()))
        fits = held <= WHOLE_FACTOR * len(entries) + WHOLE_SLACK
        self.whole_prefixed = whole_prefixed if fits else None
        self.whole_exact = whole_exact if fits else None

    def candidates(self, resource: str) -> list[Candidate] | None:
        """Every row that may match `resource`, in row order (None: none)."""
        whole_exact, whole_prefixed = self.whole_exact, self.whole_prefixed
        if whole_exact is None or whole_prefixed is None:
            lists: list[list[Candidate]] = []
            self.collect(resource, lists)
            return _ordered(lists)
        found = whole_exact.get(resource)
        if found is not None:
            return found
        size = len(resource)
        for length in self.longest_first:
            if length <= size:
                found = whole_prefixed.get(resource[:length])
                if found is not None:
                    return found
        return None

    def collect(self, resource: str, into: list[list[Candidate]]) -> None:
        """Append each list of rows that may match `resource` (each in row order)."""
        found = self.exact.get(resource)
        if found is not None:
            into.append(found)
        size = len(resource)
        for length in self.lengths:
            if length > size:
                break
            found = self.prefixed.get(resource[:length])
            if found is not None:
                into.append(found)


def _ordered(lists: list[list[Candidate]]) -> list[Candidate] | None:
    """The candidates of several lists in row order."""
    if not lists:
        return None
    if len(lists) == 1:
        return lists[0]
    return sorted((c for found in lists for c in found), key=_ORDER)


def role_closures(links: Sequence[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """Every name with roles → itself plus the roles casbin's `g` finds for it."""
    roles: dict[str, set[str]] = {}
    for member, role in links:
        roles.setdefault(member, set()).add(role)
    closures: dict[str, tuple[str, ...]] = {}
    for name in roles:
        seen = {name}
        frontier = {name}
        for _ in range(MAX_HIERARCHY_LEVEL - 1):
            frontier = {r for n in frontier for r in roles.get(n, ())} - seen
            if not frontier:
                break
            seen |= frontier
        closures[name] = tuple(sorted(seen))
    return closures


MERGE_BUDGET = 2_000_000
"""Most candidate references the merged per-agent buckets may hold in all; past it, the
remaining agents are decided by walking their subjects' buckets one by one."""


def _merge(
    grouped: Mapping[str, Mapping[str, Sequence[tuple[str, bool, Candidate]]]],
    closures: Mapping[str, tuple[str, ...]],
    budget: int,
) -> dict[str, dict[str, _Bucket]]:
    """action → name with roles → one bucket of the rows of all its subjects, in row
    order. Names with the same subjects share a bucket. Stops adding when the budget of
    candidate references is spent (those names take the per-subject walk)."""
    merged: dict[str, dict[str, _Bucket]] = {}
    shared: dict[tuple[str, tuple[str, ...]], _Bucket] = {}
    spent = 0
    for name, subjects in closures.items():
        for action, by_subject in grouped.items():
            key = (action, subjects)
            bucket = shared.get(key)
            if bucket is None:
                entries = [e for s in subjects for e in by_subject.get(s, ())]
                if not entries:
                    continue
                spent += len(entries)
                if spent > budget:
                    return merged
                entries.sort(key=lambda e: e[2][0])
                bucket = shared[key] = _Bucket(entries)
            merged.setdefault(action, {})[name] = bucket
    return merged


class FastIndex:
    """Immutable: finds the first row (in order) casbin's enforcer would match."""

    def __init__(
        self,
        rows: Sequence[Row],
        links: Sequence[tuple[str, str]],
        fallback: Callable[[Row], Evaluator],
    ) -> None:
        """`links` are the `g` rows; `fallback(row)` evaluates a row's whole matcher with
        casbin's evaluator, for conditions this module does not compile. Raises
        Unsupported or PatternError naming the row that cannot be indexed."""
        grouped: dict[str, dict[str, list[tuple[str, bool, Candidate]]]] = {}
        self.compiled = 0
        for order, row in enumerate(rows):
            condition = condition_of(row)
            evaluate: Evaluator | None
            if isinstance(condition, ast.Constant) and condition.value is True:
                evaluate = None  # always holds: nothing to evaluate
                self.compiled += 1
            else:
                try:
                    evaluate = _compile(condition, row.values, row.text)
                    self.compiled += 1
                except _NotCompiled:
                    evaluate = fallback(row)
            regex = key_match2_regex(row.pattern)
            prefix, literal = literal_prefix(regex)
            rule = row.values.get("p_rule")
            try:
                match = None if literal else key_matcher(regex)
            except PatternError as exc:
                raise Unsupported(
                    f"rule {rule!r}: resource pattern {row.pattern!r}: {exc}"
                ) from None
            for _, condition_regex in constant_patterns(condition):
                try:
                    compile_pattern(condition_regex)
                except PatternError as exc:
                    cond = row.values.get("p_cond")
                    raise Unsupported(f"rule {rule!r}: condition {cond!r}: {exc}") from None
            by_subject = grouped.setdefault(row.action, {})
            by_subject.setdefault(row.subject, []).append(
                (prefix, literal, (order, match, evaluate))
            )
        self._index = {
            action: {subject: _Bucket(entries) for subject, entries in subjects.items()}
            for action, subjects in grouped.items()
        }
        self._closures = role_closures(links)
        self._merged = _merge(grouped, self._closures, MERGE_BUDGET)

    def subjects(self, agent: str) -> tuple[str, ...]:
        """The agent and every role it holds, directly or through other roles."""
        return self._closures.get(agent) or (agent,)

    def first_match(self, agent: str, resource: str, action: str, context: object) -> int | None:
        """The order of the first matching row, or None; raises what casbin would raise."""
        by_subject = self._index.get(action)
        if by_subject is None:
            return None
        merged = self._merged.get(action)
        bucket = merged.get(agent) if merged is not None else None
        if bucket is not None:  # every subject of this agent, merged at build time
            candidates = bucket.candidates(resource)
        else:
            lists: list[list[Candidate]] = []
            for subject in self._closures.get(agent) or (agent,):
                bucket = by_subject.get(subject)
                if bucket is not None:
                    bucket.collect(resource, lists)
            candidates = _ordered(lists)
        if candidates is None:
            return None
        names = {"r_sub": agent, "r_obj": resource, "r_act": action, "r_ctx": context}
        for order, match, evaluate in candidates:
            if match is not None and not match(resource):
                continue
            if evaluate is None:  # the condition is `True`
                return order
            result = evaluate(names)
            if isinstance(result, bool):
                if result:
                    return order
            elif isinstance(result, float):
                if result != 0:
                    return order
            else:
                raise RuntimeError(_RESULT_ERROR)
        return None
