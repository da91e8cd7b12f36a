"""Decisions are bounded in time for any input: every policy regex is matched by RE2.

The red team's finding: a resource pattern or a `regexMatch` condition that backtracks
(here `([A-Za-z] ?[A-Za-z]?)+`, which today's structural lint does not flag) made one decision take
16-30 s on a crafted vendor name, and a longer name takes hours. With RE2 both decision
paths answer such a name at once (no timing is asserted: the test finishing under the
per-test timeout is the point, and on the old engine it never finishes); patterns RE2
does not accept are refused at load, naming the rule and the pattern.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from casbin.model.function import FunctionMap
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.errors import PolicyError
from tether.governance import matching
from tether.governance.lint import lint
from tether.governance.policy import PolicyEngine, parse_policy
from tether.governance.regexes import regex_problem
from tether.governance.types import NO_MATCH_RULE, DecisionRequest, Tier

MODEL_TEXT = (
    Path(__file__).resolve().parent.parent / "governance" / "policies" / "model.conf"
).read_text(encoding="utf-8")
SLOW = "([A-Za-z] ?[A-Za-z]?)+"
"""Words with optional spaces; each repetition may take one letter or two, so a failing
text splits in exponentially many ways under a backtracking engine (Python's `re` took
0.3 s on 28 letters and a `!`, about twice as long per added letter)."""
POLICY = (
    f"p, role:ap, vendor/{SLOW}, vendors.read, True, auto, read-vendor, -, -\n"
    f"p, role:ap, invoice/:id, payments.pay, \"regexMatch(r.ctx.vendor, '^{SLOW}$')\", "
    "auto, pay-named-vendor, -, -\n"
    "g, agent:clerk, role:ap\n"
)
CRAFTED = "A" * 240 + "!"
"""A vendor name of the slow shape that fails at its last character (fits a resource)."""


def _engine(text: str = POLICY) -> PolicyEngine:
    return PolicyEngine(MODEL_TEXT, parse_policy(text), text)


def _both(engine: PolicyEngine, request: DecisionRequest) -> tuple[Tier, str]:
    fast = engine.decide(request)
    assert fast == engine.decide_with_casbin(request)  # casbin's evaluator runs RE2 too
    return fast.tier, fast.rule


def test_todays_lint_does_not_flag_the_slow_pattern() -> None:
    """Why the engine, not lint, must bound decisions: the pattern passes lint and loads."""
    assert regex_problem(f"^{SLOW}$") is None
    assert not [f for f in lint(MODEL_TEXT, POLICY) if f.severity == "error"]


def test_a_crafted_vendor_name_is_decided_promptly_and_correctly() -> None:
    engine = _engine()
    assert matching.ENGINE == "re2"
    # The fast path's resource matchers and casbin's regex functions are RE2's.
    functions = engine._enforcer.fm.get_functions()
    for name, function in matching.CASBIN_FUNCTIONS.items():
        assert functions[name] is function
    resource = DecisionRequest(
        agent="agent:clerk", action="vendors.read", resource="vendor/" + CRAFTED
    )
    assert _both(engine, resource) == (Tier.DENY, NO_MATCH_RULE)
    benign = resource.model_copy(update={"resource": "vendor/Acme Office Supplies"})
    assert _both(engine, benign) == (Tier.AUTO, "read-vendor")

    long_name = "A" * 20_000 + "!"  # context values have no length cap
    pay = DecisionRequest(
        agent="agent:clerk",
        action="payments.pay",
        resource="invoice/7",
        context={"vendor": long_name},
    )
    assert _both(engine, pay) == (Tier.DENY, NO_MATCH_RULE)
    named = pay.model_copy(update={"context": {"vendor": "Globex Corporation"}})
    assert _both(engine, named) == (Tier.AUTO, "pay-named-vendor")


@pytest.mark.parametrize(
    ("row", "rule", "named"),
    [
        # a backreference: RE2 has none (it is what makes matching non-linear)
        ("vendor/(a+)\\1, vendors.read, True", "r-backref", "vendor/(a+)\\1"),
        # lookahead in a condition's literal pattern
        (
            "invoice/:id, payments.pay, \"regexMatch(r.ctx.vendor, '^Acme(?= )')\"",
            "r-lookahead",
            "^Acme(?= )",
        ),
        # Python's \\Z (RE2 spells it \\z)
        (
            "invoice/:id, payments.pay, \"regexMatch(r.ctx.vendor, 'Corp\\\\Z')\"",
            "r-end",
            "Corp\\Z",
        ),
        # a possessive quantifier (Python 3.11 accepts it)
        ("vendor/a++, vendors.read, True", "r-possessive", "vendor/a++"),
    ],
)
def test_patterns_re2_does_not_accept_are_refused_at_load(row: str, rule: str, named: str) -> None:
    text = f"p, role:ap, {row}, auto, {rule}, -, -\ng, agent:clerk, role:ap\n"
    with pytest.raises(PolicyError) as raised:
        _engine(text)
    message = str(raised.value)
    assert repr(rule) in message and repr(named) in message and "RE2" in message
    (finding,) = [f for f in lint(MODEL_TEXT, text) if f.severity == "error"]
    assert finding.line == 1 and repr(named) in finding.message
    # lint reads a condition's pattern as written, so an escaped one is named by the load
    assert (finding.check, finding.rule) in {("regex-invalid", rule), ("invalid", "")}


AGREE = [
    ("keyMatch2", "vendor/acme", "vendor/:name"),
    ("keyMatch2", "vendor/acme/bank", "vendor/:name"),
    ("keyMatch2", "vendor/acme/bank", "vendor/*"),
    ("keyMatch2", "anything/at/all", "*"),
    ("keyMatch2", "vendor/v12", "vendor/v[0-9]+"),
    ("keyMatch2", "invoice/1", "vendor/a|invoice/1"),
    ("keyMatch3", "/parent/123/child", "/parent/{id}/child"),
    ("keyMatch3", "/parent/123/other", "/parent/{id}/child"),
    ("keyMatch4", "/parent/123/child/123", "/parent/{id}/child/{id}"),
    ("keyMatch4", "/parent/123/child/456", "/parent/{id}/child/{id}"),
    ("keyMatch4", "/parent/123/child/456", "/parent/{id}/child/{other}"),
    ("keyMatch5", "/parent/child1?status=1", "/parent/*"),
    ("keyMatch5", "/parent/child1?status=1", "/parent/{id}"),
    ("keyMatch5", "/other/child1", "/parent/*"),
    ("regexMatch", "Globex Corporation", "^Glob"),
    ("regexMatch", "Globex Corporation", "Corp"),  # anchored at the start, as re.match
    ("regexMatch", "Globex Corporation", "(?i)^globex"),
    ("regexMatch", "INV-1003", "^INV-[0-9]{4}$"),
]


@pytest.mark.parametrize(("function", "key", "pattern"), AGREE)
def test_re2_functions_answer_as_pycasbins_own(function: str, key: str, pattern: str) -> None:
    theirs = FunctionMap.load_function_map().get_functions()[function]
    assert matching.CASBIN_FUNCTIONS[function](key, pattern) == bool(theirs(key, pattern))


def test_the_documented_differences_from_pythons_re() -> None:
    """`$` is the very end, and `\\w` is ASCII: RE2's rules, in both decision paths."""
    assert not matching.regex_match("acme\n", "^acme$")
    assert matching.regex_match("Müller", "^\\pL+$")
    assert not matching.regex_match("Müller", "^\\w+$")
    with pytest.raises(TypeError, match="regexMatch needs a string, got int 5"):
        matching.regex_match(5, "^5")


_PIECES = st.sampled_from(["vendor", "/", ":name", "/*", "a", "b.c", "-", "*", "[0-9]+", "x|y"])
_TEXT = st.text(alphabet="ab/:-.xy0\n", max_size=12)


@settings(max_examples=500, deadline=None)
@given(pieces=st.lists(_PIECES, min_size=1, max_size=6), texts=st.lists(_TEXT, max_size=8))
def test_segment_patterns_match_as_re2_does(pieces: list[str], texts: list[str]) -> None:
    """The fast path matches plain segment patterns (which cannot backtrack more than
    linearly) with Python's engine: the same answers as RE2 on the very regex, any text."""
    regex = matching.key_match2_regex("".join(pieces))
    try:
        reference = matching.compile_pattern(regex)
    except matching.PatternError:
        with pytest.raises(matching.PatternError):
            matching.key_matcher(regex)
        return
    ours = matching.key_matcher(regex)
    for text in [*texts, "vendor/a", "vendor/a/b", "vendor/", "vendor/a\n"]:
        assert bool(ours(text)) == reference(text), (regex, text)


@pytest.mark.parametrize(
    "pattern", ["vendor/:name", "vendor/:name/bank", "vendor/acme/*", "x/:a/:b"]
)
def test_plain_segment_patterns_take_the_python_matcher(pattern: str) -> None:
    regex = matching.key_match2_regex(pattern)
    assert matching.key_matcher(regex) is not matching.compile_pattern(regex)
