"""The fast decision path decides exactly as casbin's Enforcer does, and canonical names
never widen what a request matches.

The differential test generates policies (nested roles, keyMatch2 patterns with `:name`,
`*`, literals and regex syntax, conditions compiled and not, conditions that raise or
return non-booleans, all four tiers) and thousands of requests in total, and asserts
that `decide` (fast path), `decide_with_casbin` (the engine's Enforcer) and a plain
casbin Enforcer holding the same rows agree."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import casbin
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import JsonValue

from tether.errors import InvalidNameError, PolicyError
from tether.governance import fastpath
from tether.governance.fastpath import key_match2_regex, literal_prefix, role_closures
from tether.governance.names import (
    INVALID_REQUEST_RULE,
    MAX_NAME_LENGTH,
    canonical_action,
    canonical_agent,
    canonical_resource,
)
from tether.governance.policy import PolicyEngine, parse_policy
from tether.governance.types import NO_MATCH_RULE, Decision, DecisionRequest, Tier

MODEL = Path(__file__).resolve().parent.parent / "governance" / "policies" / "model.conf"
MODEL_TEXT = MODEL.read_text(encoding="utf-8")


def _engine(text: str) -> PolicyEngine:
    return PolicyEngine(MODEL_TEXT, parse_policy(text), text)


def _both(
    engine: PolicyEngine, agent: str, action: str, resource: str, **context: JsonValue
) -> Decision:
    """The fast path's decision, after checking the Enforcer gives the very same one."""
    request = DecisionRequest(agent=agent, action=action, resource=resource, context=context)
    fast = engine.decide(request)
    assert fast == engine.decide_with_casbin(request)
    return fast


# --- the differential test ---------------------------------------------------------------

AGENTS = ["agent:a", "agent:b", "agent:c"]
ROLES = ["role:x", "role:y", "role:z"]
PATTERNS = [
    "vendor/:name",
    "vendor/acme",
    "vendor/*",
    "invoice/:id",
    "vendor/:name/bank",
    "*",
    "vendor/acme.corp",  # `.` is regex syntax in a keyMatch2 pattern, as in casbin
    "vendor/v[0-9]+",
    "urn:vendor",  # a colon mid-segment starts a parameter
    "vendor/a|invoice/1",
    "vendor/ac?me",
]
RESOURCES = [
    "vendor/acme",
    "vendor/globex",
    "vendor/acme/bank",
    "vendor",
    "vendor/",
    "invoice/7",
    "invoice/7/lines",
    "vendor/acme.corp",
    "vendor/acmeXcorp",
    "vendor/v12",
    "vendor/v",
    "urnX",
    "urn:vendor",
    "invoice/1",
    "vendor/a",
    "vendor/ame",
    "vendor/*",
    "vendor/:name",
    "x",
]
ACTIONS = ["pay", "read", "vendors.update"]
CONDITIONS = [
    "True",
    "True",
    "False",
    "r.ctx.amount > 50",
    "r.ctx.amount <= 500",
    "r.ctx.amount > 50 && r.ctx.amount < 900",
    "r.ctx.amount >= 800 || r.ctx.region == 'eu'",
    "r.ctx.region == 'eu'",
    "!(r.ctx.amount > 100)",
    "10 < r.ctx.amount < 600",
    "r.ctx.amount % 2 == 0",
    "r.ctx.amount != 51",
    "r.ctx.missing > 1",  # raises: the field never exists
    "r.ctx.amount",  # an int result: casbin raises
    "r.ctx.amount * 1.5",  # a float result: non-zero matches
    "-r.ctx.amount < -100",
    "r.ctx.amount if r.ctx.region == 'eu' else 0.0",
    "r.sub == 'agent:a'",
    "p.rule == 'rule-0'",
    "r.ctx.items",  # a bound method: casbin raises
    "r.ctx.region in ('eu', 'us')",  # not compiled: casbin's evaluator
    "str(r.ctx.amount) == '50'",
    "r.ctx.get('amount', 0) > 10",
    "keyMatch(r.obj, 'vendor/*')",
    "regexMatch(r.ctx.region, '^e')",  # casbin's evaluator, with RE2 (plain casbin: re)
    "keyMatch2(r.obj, 'vendor/:name') && r.ctx.amount > 50",
]
AMOUNTS: list[JsonValue] = [0, 50, 51, 500, 800, 1000, 2.5, "x", None]


@st.composite
def _policy(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    count = draw(st.integers(1, 14))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    rows: list[list[str]] = []
    for i in range(count):
        tier = draw(st.sampled_from([t.value for t in Tier]))
        row = [
            draw(st.sampled_from(AGENTS + ROLES)),
            draw(st.sampled_from(PATTERNS)),
            draw(st.sampled_from(ACTIONS)),
            draw(st.sampled_from(CONDITIONS)),
            tier,
            f"rule-{i}",
            "role:boss" if tier == "approve" else "-",
            draw(st.sampled_from(["-", "30m"])),
        ]
        rows.append(row)
        writer.writerow(["p", *row])
    groups = draw(
        st.lists(
            st.tuples(st.sampled_from(AGENTS + ROLES), st.sampled_from(ROLES)),
            max_size=6,
            unique=True,
        )
    )
    for member, role in groups:
        writer.writerow(["g", member, role])
    writer.writerow(["g2", "user:u", "role:boss"])
    return out.getvalue(), groups


@st.composite
def _request(draw: st.DrawFn) -> tuple[str, str, str, dict[str, JsonValue]]:
    context: dict[str, JsonValue] = {}
    if draw(st.integers(0, 5)):
        context["amount"] = draw(st.sampled_from(AMOUNTS))
    if draw(st.booleans()):
        context["region"] = draw(st.sampled_from(["eu", "us"]))
    return (
        draw(st.sampled_from(AGENTS + ROLES)),
        draw(st.sampled_from(ACTIONS)),
        draw(st.sampled_from(RESOURCES)),
        context,
    )


@dataclass
class _Tally:
    requests: int = 0
    matched: int = 0
    failed: int = 0


TALLY = _Tally()


LAYOUTS: dict[str, dict[str, int]] = {
    "merged": {},
    # No per-agent merged buckets and no precomputed whole lists: the walk over subjects
    # and the merge at lookup, which large policies fall back to, decide the same.
    "walked": {"MERGE_BUDGET": 0, "WHOLE_FACTOR": 0, "WHOLE_SLACK": -1},
}


@pytest.mark.parametrize("layout", LAYOUTS)
@settings(max_examples=400, deadline=None)
@given(policy=_policy(), requests=st.lists(_request(), min_size=5, max_size=20))
def test_fast_path_decides_exactly_as_casbin(
    layout: str,
    policy: tuple[str, list[tuple[str, str]]],
    requests: list[tuple[str, str, str, dict[str, JsonValue]]],
) -> None:
    text, groups = policy
    with contextlib.ExitStack() as stack:
        for name, value in LAYOUTS[layout].items():
            stack.enter_context(mock.patch.object(fastpath, name, value))
        engine = _engine(text)
    if layout == "walked" and engine._fast is not None:
        assert not engine._fast._merged
    plain = casbin.Enforcer(str(MODEL))  # casbin alone, on the same rows
    plain.add_named_policies("p", [r.row() for r in engine.document.rules])
    if groups:
        plain.add_named_grouping_policies("g", [list(g) for g in groups])
    for agent, action, resource, context in requests:
        decision = _both(engine, agent, action, resource, **context)
        TALLY.requests += 1
        try:
            matched, explain = plain.enforce_ex(agent, resource, action, dict(context))
        except Exception as exc:
            TALLY.failed += 1
            assert (decision.tier, decision.rule) == (Tier.DENY, NO_MATCH_RULE)
            assert decision.reason.endswith(str(exc))
            continue
        if matched:
            TALLY.matched += 1
            assert decision.rule == explain[5]
            assert decision.tier is Tier(explain[4])
        else:
            assert (decision.tier, decision.rule) == (Tier.DENY, NO_MATCH_RULE)
            assert decision.reason.startswith("no rule allows")


def test_the_differential_test_covered_thousands_of_requests() -> None:
    """Runs after the differential test (file order): it saw matches, failures, misses."""
    if TALLY.requests == 0:
        pytest.skip("run together with test_fast_path_decides_exactly_as_casbin")
    assert TALLY.requests >= 2000
    assert TALLY.matched >= 200 and TALLY.failed >= 50
    assert TALLY.requests - TALLY.matched - TALLY.failed >= 200


# --- roles ---------------------------------------------------------------------------------


def test_role_hierarchy_stops_where_casbins_does() -> None:
    """casbin's default role manager follows 10 levels: the agent and 9 hops."""
    chain = [f"role:r{i}" for i in range(1, 12)]
    lines = ["g, agent:a, role:r1"] + [f"g, {a}, {b}" for a, b in itertools.pairwise(chain)]
    closure = role_closures(parse_policy("\n".join(lines)).agent_roles)["agent:a"]
    assert set(closure) == {"agent:a", *chain[:9]}
    deep = _engine("\n".join([*lines, "p, role:r10, vendor/:n, pay, True, auto, deep, -, -"]))
    assert _both(deep, "agent:a", "pay", "vendor/v").rule == NO_MATCH_RULE
    near = _engine("\n".join([*lines, "p, role:r9, vendor/:n, pay, True, auto, near, -, -"]))
    assert _both(near, "agent:a", "pay", "vendor/v").rule == "near"


def test_role_cycles_terminate() -> None:
    engine = _engine(
        "g, agent:a, role:x\ng, role:x, role:y\ng, role:y, role:x\n"
        "p, role:y, vendor/:n, pay, True, notify, cyc, -, -"
    )
    assert _both(engine, "agent:a", "pay", "vendor/v").rule == "cyc"
    assert role_closures([("a", "b"), ("b", "a")]) == {"a": ("a", "b"), "b": ("a", "b")}


# --- patterns ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "regex", "prefix", "literal"),
    [
        ("vendor/acme", "^vendor/acme$", "vendor/acme", True),
        ("vendor/:name", "^vendor/[^\\/]+$", "vendor/", False),
        ("vendor/*", "^vendor/.*$", "vendor/", False),
        ("*", "^(.*)$", "", False),
        ("vendor/ac?me", "^vendor/ac?me$", "vendor/a", False),
        ("vendor/a|invoice/1", "^vendor/a|invoice/1$", "", False),
    ],
)
def test_patterns_become_casbins_regex_with_a_literal_prefix(
    pattern: str, regex: str, prefix: str, literal: bool
) -> None:
    assert key_match2_regex(pattern) == regex
    assert literal_prefix(regex) == (prefix, literal)


def test_many_rules_on_one_action_and_subject_still_decide_like_casbin() -> None:
    lines = [f"p, role:r, vendor/v{i}, pay, True, auto, lit-{i}, -, -" for i in range(300)]
    lines += [f"p, role:r, vendor/v{i}/:doc, pay, True, notify, doc-{i}, -, -" for i in range(300)]
    lines += ["p, role:r, vendor/*, pay, r.ctx.amount > 10, deny, big, -, -", "g, agent:a, role:r"]
    engine = _engine("\n".join(lines))
    assert _both(engine, "agent:a", "pay", "vendor/v42", amount=1).rule == "lit-42"
    assert _both(engine, "agent:a", "pay", "vendor/v42", amount=11).rule == "big"
    assert _both(engine, "agent:a", "pay", "vendor/v42/x", amount=1).rule == "doc-42"
    # the deny row comes first and its condition needs `amount`
    assert "could not be evaluated" in _both(engine, "agent:a", "pay", "vendor/v42").reason
    assert _both(engine, "agent:a", "pay", "vendor/v4200", amount=1).rule == NO_MATCH_RULE


# --- load-time checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "named"),
    [
        ("p, agent:a, vendor/(, pay, True, auto, r1, -, -", "'vendor/('"),
        ("p, agent:a, vendor/:n, pay, r.ctx.amount >, auto, r1, -, -", "'r.ctx.amount >'"),
        ("p, agent:a, vendor/:n, pay, True) or (True, auto, r1, -, -", "'True) or (True'"),
    ],
)
def test_rows_casbin_could_not_evaluate_are_refused_at_load(row: str, named: str) -> None:
    with pytest.raises(PolicyError) as raised:
        _engine(row)
    assert named in str(raised.value)


def test_another_matcher_is_decided_by_casbin() -> None:
    model = MODEL_TEXT.replace("keyMatch2(r.obj, p.obj)", "keyMatch(r.obj, p.obj)")
    text = "p, agent:a, vendor/*, pay, True, auto, star, -, -"
    engine = PolicyEngine(model, parse_policy(text), text)
    assert _both(engine, "agent:a", "pay", "vendor/x/y").rule == "star"  # keyMatch, not 2


def test_a_reload_never_gives_a_stale_decision() -> None:
    before = _engine("p, agent:a, vendor/:n, pay, True, auto, old, -, -")
    after = _engine("p, agent:a, vendor/:n, pay, True, deny, new, -, -")
    assert _both(before, "agent:a", "pay", "vendor/v").rule == "old"
    assert _both(after, "agent:a", "pay", "vendor/v").rule == "new"
    assert _both(before, "agent:a", "pay", "vendor/v").rule == "old"


# --- canonical names -----------------------------------------------------------------------

POLICY = (
    "p, agent:a, vendor/acme, pay, True, auto, pay-acme, -, -\n"
    "p, role:r, invoice/:id, read, True, auto, read-invoice, -, -\n"
    "g, agent:b, role:r\n"
)


@pytest.fixture(scope="module")
def small() -> PolicyEngine:
    return _engine(POLICY)


HOSTILE_AGENTS = [
    "*",
    "agent:*",
    "agent:.*",
    "agent:a,",
    "agent:a, role:r",
    "p.sub",
    "r.sub",
    "__import__('os').system('x')",
    "agent:a' or '1'=='1",
    "agent:[a-z]",
    "agent:a|agent:b",
]
HOSTILE_RESOURCES = [
    "*",
    "vendor/*",
    "vendor/.*",
    "vendor/acm.",
    "vendor/:name",
    "vendor/acme,invoice/1",
    "vendor/acme|x",
    "vendor/acme/x",
    "p.obj",
    "__import__('os').system('x')",
    "VENDOR/ACME",
    "vendor/Acme",
    "invoice/1/..",
]
HOSTILE_ACTIONS = ["*", "pa.", "pay,read", "p.act", ".*", "__import__('os').system('x')"]


@pytest.mark.parametrize("agent", HOSTILE_AGENTS)
def test_hostile_agents_match_nothing(small: PolicyEngine, agent: str) -> None:
    for action, resource in (("pay", "vendor/acme"), ("read", "invoice/1")):
        assert _both(small, agent, action, resource).tier is Tier.DENY


@pytest.mark.parametrize("resource", HOSTILE_RESOURCES)
def test_hostile_resources_match_nothing(small: PolicyEngine, resource: str) -> None:
    assert _both(small, "agent:a", "pay", resource).tier is Tier.DENY
    assert _both(small, "agent:b", "read", resource).tier is Tier.DENY


@pytest.mark.parametrize("action", HOSTILE_ACTIONS)
def test_hostile_actions_match_nothing(small: PolicyEngine, action: str) -> None:
    assert _both(small, "agent:a", action, "vendor/acme").tier is Tier.DENY


@pytest.mark.parametrize(
    ("agent", "action", "resource"),
    [
        ("AGENT:A", "PAY", "vendor/acme"),
        ("Agent:A", "Pay", "vendor/acme"),
        ("\uff41\uff47\uff45\uff4e\uff54:\uff41", "\uff50\uff41\uff59", "vendor/acme"),  # fullwidth
        ("agent:a", "pay", "\uff56\uff45\uff4e\uff44\uff4f\uff52/acme"),
        ("agent:a", "pay", "vendor/ac\u2098e"),  # subscript m folds to m
    ],
)
def test_spellings_nfkc_and_case_fold_are_one_name(
    small: PolicyEngine, agent: str, action: str, resource: str
) -> None:
    assert _both(small, agent, action, resource).rule == "pay-acme"


@pytest.mark.parametrize(
    ("agent", "action", "resource", "named"),
    [
        ("", "pay", "vendor/acme", "agent ''"),
        ("agent:a\x00", "pay", "vendor/acme", "U+0000"),
        ("agent:a", "pay\n", "vendor/acme", "U+000A"),
        ("agent:a", "pay", "vendor/acme\u200b", "U+200B"),
        ("agent:a", "pay", "vendor/acme/../x", "'..'"),
        ("agent:a", "pay", "./vendor/acme", "'.'"),
        ("agent:a", "pay", " vendor/acme", "whitespace"),
        ("a" * (MAX_NAME_LENGTH + 1), "pay", "vendor/acme", f"at most {MAX_NAME_LENGTH}"),
        ("agent:a", "pay", "vendor/" + "x" * 5000, f"at most {MAX_NAME_LENGTH}"),
        ("agent:a", "\ufdfa" * 20, "vendor/acme", f"at most {MAX_NAME_LENGTH}"),  # NFKC grows
    ],
)
def test_refused_names_deny_as_invalid_request(
    small: PolicyEngine, agent: str, action: str, resource: str, named: str
) -> None:
    decision = _both(small, agent, action, resource)
    assert (decision.tier, decision.rule) == (Tier.DENY, INVALID_REQUEST_RULE)
    assert named in decision.reason


def test_policy_rows_are_canonical_at_load() -> None:
    engine = _engine(
        "p, Role:R, vendor/Acme, PAYMENTS.Pay, True, auto, r1, -, -\ng, AGENT:A, ROLE:R\n"
    )
    (rule,) = engine.document.rules
    assert (rule.subject, rule.resource, rule.action) == ("role:r", "vendor/Acme", "payments.pay")
    assert engine.document.agent_roles == (("agent:a", "role:r"),)
    assert _both(engine, "agent:a", "payments.pay", "vendor/Acme").rule == "r1"
    assert _both(engine, "agent:a", "payments.pay", "vendor/acme").rule == NO_MATCH_RULE
    with pytest.raises(PolicyError, match=r"policy>:1: subject 'role:\\x07' has the non-print"):
        parse_policy("p, role:\x07, vendor/a, pay, True, auto, r1, -, -")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_canonical_names_are_fixed_points(value: str) -> None:
    for canonical in (canonical_agent, canonical_action, canonical_resource):
        try:
            once = canonical(value)
        except InvalidNameError as exc:
            assert repr(value)[:20] in str(exc) or "..." in str(exc)
            continue
        assert canonical(once) == once
