"""The control plane with real casbin: the default policy's tiers, most-restrictive-wins
whatever the row order, exact agreement with casbin's own Enforcer, policy versions,
named parse errors, and the rules an approval attempt must pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import casbin
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import JsonValue

from tests.conftest import EXAMPLE
from tether.errors import ApprovalError, PolicyError
from tether.governance.approvals import (
    ApprovalDecision,
    ApprovalStatus,
    PendingApproval,
    check_approval,
)
from tether.governance.policy import PolicyEngine, parse_policy
from tether.governance.types import NO_MATCH_RULE, Decision, DecisionRequest, Tier

POLICIES = Path(__file__).resolve().parent.parent / "governance" / "policies"
MODEL = POLICIES / "model.conf"
DEFAULT = EXAMPLE / "policy.csv"
MODEL_TEXT = MODEL.read_text(encoding="utf-8")


def _engine(text: str) -> PolicyEngine:
    return PolicyEngine(MODEL_TEXT, parse_policy(text), text)


def _decide(
    engine: PolicyEngine,
    action: str,
    resource: str = "vendor/acme",
    agent: str = "agent:ap-clerk",
    **context: JsonValue,
) -> Decision:
    return engine.decide(
        DecisionRequest(agent=agent, action=action, resource=resource, context=context)
    )


# --- the default policy ----------------------------------------------------------------


@pytest.fixture(scope="module")
def default() -> PolicyEngine:
    return PolicyEngine.from_files(MODEL, DEFAULT)


def test_small_payment_is_auto(default: PolicyEngine) -> None:
    d = _decide(default, "payments.pay", amount=250)
    assert (d.tier, d.rule) == (Tier.AUTO, "ap-pay-small")
    assert d.approver_role is None and d.approvers == [] and d.timeout_seconds is None
    assert d.policy_version == default.version


def test_medium_payment_is_notify(default: PolicyEngine) -> None:
    d = _decide(default, "payments.pay", amount=4800)
    assert (d.tier, d.rule) == (Tier.NOTIFY, "ap-pay-medium")
    assert d.approver_role is None


def test_large_payment_needs_approval_from_the_approver_role(default: PolicyEngine) -> None:
    d = _decide(default, "payments.pay", amount=25000)
    assert (d.tier, d.rule) == (Tier.APPROVE, "ap-pay-large")
    assert d.approver_role == "role:ap-approver"
    assert d.approvers == ["user:alice", "user:bob"]
    assert d.timeout_seconds == 86400
    assert d.policy_version == default.version


@pytest.mark.parametrize(
    ("amount", "tier", "rule"),
    [
        (0, Tier.AUTO, "ap-pay-small"),
        (1000, Tier.AUTO, "ap-pay-small"),
        (1000.01, Tier.NOTIFY, "ap-pay-medium"),
        (10000, Tier.NOTIFY, "ap-pay-medium"),
        (10000.5, Tier.APPROVE, "ap-pay-large"),
    ],
)
def test_payment_tier_boundaries(
    default: PolicyEngine, amount: float, tier: Tier, rule: str
) -> None:
    d = _decide(default, "payments.pay", amount=amount)
    assert (d.tier, d.rule) == (tier, rule)


def test_bank_detail_changes_are_denied_by_their_rule(default: PolicyEngine) -> None:
    d = _decide(default, "vendors.update_bank_details")
    assert (d.tier, d.rule) == (Tier.DENY, "ap-no-bank-changes")
    assert "ap-no-bank-changes" in d.reason


def test_unknown_agent_is_denied_by_default(default: PolicyEngine) -> None:
    d = _decide(default, "payments.pay", agent="agent:nobody", amount=1)
    assert (d.tier, d.rule) == (Tier.DENY, NO_MATCH_RULE)
    assert d.rule == "default-deny"
    assert "'agent:nobody'" in d.reason and "'payments.pay'" in d.reason
    assert d.policy_version == default.version


def test_missing_context_field_denies(default: PolicyEngine) -> None:
    d = _decide(default, "payments.pay")  # the payment rules need r.ctx.amount
    assert (d.tier, d.rule) == (Tier.DENY, NO_MATCH_RULE)
    assert "could not be evaluated" in d.reason
    other = _decide(default, "payments.pay", currency="EUR")
    assert (other.tier, other.rule) == (Tier.DENY, NO_MATCH_RULE)


@pytest.mark.parametrize(
    "resource", ["vendor/acme/extra", "vendor/acme/", "vendor", "vendors/acme", "x/vendor/acme"]
)
def test_resource_must_match_the_pattern_exactly(default: PolicyEngine, resource: str) -> None:
    d = _decide(default, "payments.pay", resource=resource, amount=1)
    assert (d.tier, d.rule) == (Tier.DENY, NO_MATCH_RULE)


def test_roles_scope_what_each_agent_may_do(default: PolicyEngine) -> None:
    assert _decide(default, "invoices.read", resource="invoice/42").rule == "ap-read-invoices"
    ops = _decide(default, "tickets.comment", resource="ticket/7", agent="agent:ops-helper")
    assert (ops.tier, ops.rule) == (Tier.AUTO, "ops-comment")
    # the AP clerk has no ticket rule and the ops helper no payment rule
    assert _decide(default, "tickets.comment", resource="ticket/7").rule == NO_MATCH_RULE
    no_pay = _decide(default, "payments.pay", agent="agent:ops-helper", amount=1)
    assert no_pay.rule == NO_MATCH_RULE
    bench = _decide(default, "bench.touch", resource="vendor/v1", agent="agent:bench")
    assert (bench.tier, bench.rule) == (Tier.AUTO, "bench-touch")


def test_approver_role_members(default: PolicyEngine) -> None:
    assert default.members("role:ap-approver") == ["user:alice", "user:bob"]
    assert default.members("role:nobody") == []
    assert default.holds_role("user:alice", "role:ap-approver")
    assert not default.holds_role("user:mallory", "role:ap-approver")
    assert not default.holds_role("agent:ap-clerk", "role:ap-approver")


# --- most restrictive wins ---------------------------------------------------------------


def test_deny_beats_an_earlier_auto_rule(tmp_path: Path) -> None:
    path = tmp_path / "policy.csv"
    path.write_text(
        "p, role:r, vendor/:n, pay, True, auto, r-auto, -, -\n"
        "p, role:r, vendor/:n, pay, r.ctx.amount > 100, deny, r-deny, -, -\n"
        "g, agent:a, role:r\n",
        encoding="utf-8",
    )
    engine = PolicyEngine.from_files(MODEL, path)
    big = _decide(engine, "pay", resource="vendor/x", agent="agent:a", amount=500)
    assert (big.tier, big.rule) == (Tier.DENY, "r-deny")
    small = _decide(engine, "pay", resource="vendor/x", agent="agent:a", amount=5)
    assert (small.tier, small.rule) == (Tier.AUTO, "r-auto")


@pytest.mark.parametrize("auto_first", [True, False])
def test_approve_beats_auto_in_either_order(tmp_path: Path, auto_first: bool) -> None:
    auto = "p, role:r, vendor/:n, pay, True, auto, r-auto, -, -"
    approve = "p, agent:a, vendor/acme, pay, True, approve, r-approve, role:boss, 30m"
    rows = [auto, approve] if auto_first else [approve, auto]
    path = tmp_path / "policy.csv"
    path.write_text("\n".join([*rows, "g, agent:a, role:r", "g2, user:b, role:boss"]) + "\n")
    engine = PolicyEngine.from_files(MODEL, path)
    d = _decide(engine, "pay", resource="vendor/acme", agent="agent:a")
    assert (d.tier, d.rule) == (Tier.APPROVE, "r-approve")
    assert (d.approver_role, d.approvers, d.timeout_seconds) == ("role:boss", ["user:b"], 1800)
    # a vendor the approve rule does not name falls through to auto
    assert _decide(engine, "pay", resource="vendor/other", agent="agent:a").tier is Tier.AUTO


@dataclass(frozen=True)
class _Row:
    line: str
    tier: Tier
    holds: Callable[[int], bool]


_POOL = [
    _Row("p, role:r, vendor/:n, pay, True, auto, auto-any, -, -", Tier.AUTO, lambda a: True),
    _Row(
        "p, agent:a, vendor/:n, pay, r.ctx.amount < 50, auto, auto-small, -, -",
        Tier.AUTO,
        lambda a: a < 50,
    ),
    _Row(
        "p, role:r, vendor/:n, pay, r.ctx.amount > 10, notify, notify-10, -, -",
        Tier.NOTIFY,
        lambda a: a > 10,
    ),
    _Row(
        "p, role:r, vendor/*, pay, r.ctx.amount >= 300 && r.ctx.amount < 700, notify, "
        "notify-mid, -, -",
        Tier.NOTIFY,
        lambda a: 300 <= a < 700,
    ),
    _Row(
        "p, role:r, vendor/:n, pay, r.ctx.amount > 100, approve, approve-100, role:boss, 1h",
        Tier.APPROVE,
        lambda a: a > 100,
    ),
    _Row(
        "p, agent:a, vendor/x, pay, r.ctx.amount % 2 == 0, approve, approve-even, role:boss, -",
        Tier.APPROVE,
        lambda a: a % 2 == 0,
    ),
    _Row(
        "p, role:r, vendor/:n, pay, r.ctx.amount > 1000, deny, deny-1000, -, -",
        Tier.DENY,
        lambda a: a > 1000,
    ),
    # rows that never apply to the request below: other action, other resource
    _Row("p, role:r, vendor/:n, refund, True, deny, deny-refund, -, -", Tier.DENY, lambda a: False),
    _Row("p, role:r, invoice/:n, pay, True, deny, deny-invoice, -, -", Tier.DENY, lambda a: False),
]


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.sampled_from(_POOL), min_size=1, max_size=len(_POOL), unique=True).flatmap(
        st.permutations
    ),
    amount=st.integers(0, 2000),
)
def test_most_restrictive_wins_whatever_the_row_order(rows: list[_Row], amount: int) -> None:
    lines = [r.line for r in rows] + ["g, agent:a, role:r", "g2, user:b, role:boss"]
    decision = _decide(
        _engine("\n".join(lines)), "pay", resource="vendor/x", agent="agent:a", amount=amount
    )
    matching = [r for r in rows if r.holds(amount)]
    if not matching:
        assert (decision.tier, decision.rule) == (Tier.DENY, NO_MATCH_RULE)
        return
    worst = max(r.tier.severity for r in matching)
    assert decision.tier.severity == worst
    winners = {r.line.split(",")[6].strip() for r in matching if r.tier.severity == worst}
    assert decision.rule in winners


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.sampled_from(_POOL), min_size=1, unique=True).flatmap(st.permutations))
def test_a_missing_context_field_never_loosens_the_decision(rows: list[_Row]) -> None:
    """Without `amount`, only the unconditional rows can be known to match; the decision is
    never less restrictive than the most restrictive of them, and without one it denies."""
    lines = [r.line for r in rows] + ["g, agent:a, role:r", "g2, user:b, role:boss"]
    decision = _decide(_engine("\n".join(lines)), "pay", resource="vendor/x", agent="agent:a")
    unconditional = [r for r in rows if r.line.split(",")[4].strip() == "True" and r.holds(0)]
    if not unconditional:
        assert (decision.tier, decision.rule) == (Tier.DENY, NO_MATCH_RULE)
    else:
        assert decision.tier.severity >= max(r.tier.severity for r in unconditional)


# --- differential test against casbin's own Enforcer -------------------------------------

AGENTS = ["agent:a", "agent:b", "agent:c"]
ROLES = ["role:x", "role:y"]
# keyMatch2 patterns, each with resources it matches and near misses it does not
PATTERNS = {
    "vendor/:name": ["vendor/acme", "vendor/globex", "vendor/acme/bank", "vendor"],
    "vendor/acme": ["vendor/acme", "vendor/globex", "vendor/acme/bank"],
    "vendor/*": ["vendor/acme", "vendor/acme/bank", "vendor", "invoice/7"],
    "invoice/:id": ["invoice/7", "invoice/7/lines", "vendor/7"],
    "vendor/:name/bank": ["vendor/acme/bank", "vendor/acme", "vendor/acme/bank/x"],
}
ACTIONS = ["pay", "read"]
CONDITIONS = [  # "True" twice: unconditional rows are the common case
    "True",
    "True",
    "False",
    "r.ctx.amount > 50",
    "r.ctx.amount <= 500",
    "r.ctx.amount > 50 && r.ctx.amount < 900",
    "r.ctx.amount >= 800 || r.ctx.region == 'us'",
    "r.ctx.region == 'eu'",
]
TIMEOUTS = ["-", "90s", "30m", "24h", "2d"]
APPROVER_ROLES = ["role:boss", "role:audit"]

Request = tuple[str, str, str, int, str]


@st.composite
def _rows(draw: st.DrawFn) -> list[list[str]]:
    """Policy rows exactly as they would sit in a file, rule ids unique."""
    count = draw(st.integers(1, 10))
    rows = []
    for i in range(count):
        tier = draw(st.sampled_from([t.value for t in Tier]))
        approver = draw(st.sampled_from(APPROVER_ROLES)) if tier == "approve" else "-"
        rows.append(
            [
                draw(st.sampled_from(AGENTS + ROLES)),
                draw(st.sampled_from(list(PATTERNS))),
                draw(st.sampled_from(ACTIONS)),
                draw(st.sampled_from(CONDITIONS)),
                tier,
                f"rule-{i}",
                approver,
                draw(st.sampled_from(TIMEOUTS)),
            ]
        )
    return rows


@dataclass(frozen=True)
class _Scenario:
    rows: list[list[str]]
    groups: list[tuple[str, str]]
    approvers: list[tuple[str, str]]
    requests: list[Request]


@st.composite
def _scenarios(draw: st.DrawFn) -> _Scenario:
    """A policy plus requests mostly aimed at one of its rows (an agent holding the row's
    subject, the row's action, a resource near its pattern), so that many requests match
    one or several rows; the rest are arbitrary."""
    rows = draw(_rows())
    groups = draw(
        st.lists(
            st.tuples(st.sampled_from(AGENTS + ROLES), st.sampled_from(ROLES)).filter(
                lambda m: m[0] != m[1]
            ),
            max_size=5,
            unique=True,
        )
    )
    approvers = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["user:u1", "user:u2", "user:u3"]), st.sampled_from(APPROVER_ROLES)
            ),
            max_size=4,
            unique=True,
        )
    )
    requests = []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.integers(0, 3)) > 0:
            sub, pattern, action = draw(st.sampled_from(rows))[:3]
            holders = [m for m, r in groups if r == sub and m in AGENTS]
            agent = sub if sub in AGENTS else draw(st.sampled_from(holders or AGENTS))
            resource = draw(st.sampled_from(PATTERNS[pattern]))
        else:
            agent = draw(st.sampled_from(AGENTS))
            resource = draw(st.sampled_from(sorted({r for rs in PATTERNS.values() for r in rs})))
            action = draw(st.sampled_from(ACTIONS))
        amount = draw(st.sampled_from([0, 50, 51, 500, 501, 800, 899, 900, 1000]))
        requests.append((agent, resource, action, amount, draw(st.sampled_from(["eu", "us"]))))
    return _Scenario(rows, groups, approvers, requests)


def _casbin(rows: list[list[str]], groups: list[tuple[str, str]]) -> casbin.Enforcer:
    """A plain casbin Enforcer on the model file holding exactly these rows."""
    enforcer = casbin.Enforcer(str(MODEL))
    if rows:
        enforcer.add_named_policies("p", rows)
    if groups:
        enforcer.add_named_grouping_policies("g", [list(g) for g in groups])
    return enforcer


def _seconds(timeout: str) -> int | None:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return None if timeout == "-" else int(timeout[:-1]) * units[timeout[-1]]


@settings(max_examples=300, deadline=None)
@given(scenario=_scenarios())
def test_agrees_with_casbins_enforcer(scenario: _Scenario) -> None:
    rows, groups, approvers = scenario.rows, scenario.groups, scenario.approvers
    text = "\n".join(
        [", ".join(["p", *row]) for row in rows]
        + [f"g, {m}, {r}" for m, r in groups]
        + [f"g2, {m}, {r}" for m, r in approvers]
    )
    engine = _engine(text)
    # one Enforcer per row: casbin itself says whether that single row matches
    singles = [(row, _casbin([row], groups)) for row in rows]
    whole = _casbin(rows, groups)
    for agent, resource, action, amount, region in scenario.requests:
        ctx = {"amount": amount, "region": region}
        decision = engine.decide(
            DecisionRequest(agent=agent, resource=resource, action=action, context=ctx)
        )
        assert decision.policy_version == engine.version
        matching = [row for row, e in singles if e.enforce(agent, resource, action, ctx)]
        assert bool(matching) == whole.enforce(agent, resource, action, ctx)
        if not matching:
            assert (decision.tier, decision.rule) == (Tier.DENY, NO_MATCH_RULE)
            continue
        worst = max(Tier(row[4]).severity for row in matching)
        assert decision.tier.severity == worst
        winners = {row[5]: row for row in matching if Tier(row[4]).severity == worst}
        assert decision.rule in winners
        if len(winners) == 1:
            assert decision.rule == next(iter(winners))
        rule = winners[decision.rule]
        if decision.tier is Tier.APPROVE:
            assert decision.approver_role == rule[6]
            assert decision.approvers == sorted({m for m, r in approvers if r == rule[6]})
        else:
            assert decision.approver_role is None and decision.approvers == []
        assert decision.timeout_seconds == _seconds(rule[7])


def test_the_default_policy_agrees_with_casbins_file_adapter(default: PolicyEngine) -> None:
    """casbin loading default.csv itself, one row at a time, finds the same matches."""
    document = default.document
    groups = list(document.agent_roles)
    singles = [(r, _casbin([r.row()], groups)) for r in document.rules]
    file_enforcer = casbin.Enforcer(str(MODEL), str(DEFAULT))
    agents = ["agent:ap-clerk", "agent:ops-helper", "agent:bench", "agent:x"]
    resources = ["vendor/acme", "invoice/1", "ticket/2", "vendor/acme/x"]
    actions = sorted({r.action for r in document.rules})
    for agent in agents:
        for resource in resources:
            for action in actions:
                for amount in (0, 1000, 1001, 10000, 10001):
                    ctx = {"amount": amount}
                    d = default.decide(
                        DecisionRequest(agent=agent, resource=resource, action=action, context=ctx)
                    )
                    matching = [r for r, e in singles if e.enforce(agent, resource, action, ctx)]
                    assert bool(matching) == file_enforcer.enforce(agent, resource, action, ctx)
                    if matching:
                        top = max(matching, key=lambda r: r.tier.severity)
                        assert (d.tier, d.rule) == (top.tier, top.rule)
                    else:
                        assert (d.tier, d.rule) == (Tier.DENY, NO_MATCH_RULE)


# --- policy version ----------------------------------------------------------------------

BASE_ROWS = [
    "p, role:r, vendor/:n, pay, r.ctx.amount <= 1000, auto, r-small, -, -",
    "p, role:r, vendor/:n, pay, r.ctx.amount > 1000, approve, r-large, role:boss, 24h",
    "g, agent:a, role:r",
    "g2, user:b, role:boss",
]


def test_version_is_stable_when_the_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "policy.csv"
    path.write_text("\n".join(BASE_ROWS) + "\n")
    first = PolicyEngine.from_files(MODEL, path)
    again = PolicyEngine.from_files(MODEL, path)
    assert first.version == again.version
    assert first.version.startswith("sha256:") and len(first.version) == len("sha256:") + 16
    # comments, blank lines and spacing are not part of the policy
    path.write_text("# a comment\n\n" + "\n".join(r.replace(", ", ",") for r in BASE_ROWS))
    assert PolicyEngine.from_files(MODEL, path).version == first.version


@pytest.mark.parametrize(
    ("index", "changed"),
    [
        (0, "p, role:r, vendor/:n, pay, r.ctx.amount <= 1001, auto, r-small, -, -"),
        (0, "p, role:r, vendor/:n, pay, r.ctx.amount <= 1000, notify, r-small, -, -"),
        (0, "p, role:r, vendor/:n, pay, r.ctx.amount <= 1000, auto, r-tiny, -, -"),
        (1, "p, role:r, vendor/:n, pay, r.ctx.amount > 1000, approve, r-large, role:boss, 23h"),
        (1, "p, role:r, vendor/:n, pay, r.ctx.amount > 1000, approve, r-large, role:cfo, 24h"),
        (2, "g, agent:other, role:r"),
        (3, "g2, user:c, role:boss"),
    ],
)
def test_version_changes_when_one_row_changes(tmp_path: Path, index: int, changed: str) -> None:
    path = tmp_path / "policy.csv"
    path.write_text("\n".join(BASE_ROWS))
    before = PolicyEngine.from_files(MODEL, path).version
    rows = list(BASE_ROWS)
    rows[index] = changed
    path.write_text("\n".join(rows))
    assert PolicyEngine.from_files(MODEL, path).version != before


def test_version_covers_the_model() -> None:
    document = parse_policy("\n".join(BASE_ROWS))
    assert (
        PolicyEngine(MODEL_TEXT, document).version
        != PolicyEngine(MODEL_TEXT + "\n# changed\n", document).version
    )


def test_different_policies_have_different_versions() -> None:
    """A comma inside a field must not make two policies look alike to the version."""
    one = 'p, agent:a, vendor/:n, "pay,x", True, auto, r1, -, -'
    two = 'p, agent:a, vendor/:n, pay, "x,True", auto, r1, -, -'
    assert parse_policy(one).rules != parse_policy(two).rules
    assert _engine(one).version != _engine(two).version


# --- parse errors ------------------------------------------------------------------------

GOOD = "p, role:r, vendor/:n, pay, True, auto, r-auto, -, -"


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("p, role:r, vendor/:n, pay", "['role:r', 'vendor/:n', 'pay']"),
        ("p, role:r, vendor/:n, pay, True, auto, r1, -, -, extra", "got 9"),
        ("p, role:r, vendor/:n, pay, True, maybe, r1, -, -", "'maybe'"),
        ("p, role:r, vendor/:n, pay, True, approve, r1, role:boss, 24 hours", "'24 hours'"),
        ("p, role:r, vendor/:n, pay, True, approve, r-big, -, 24h", "'r-big'"),
        ("p, role:r, vendor/:n, pay, True, auto, r-auto, -, -", "'r-auto'"),
        ("x, role:r, vendor/:n", "'x'"),
        ("g, agent:only", "['agent:only']"),
        ("g2, user:a, role:b, role:c", "['user:a', 'role:b', 'role:c']"),
    ],
    ids=[
        "too-few-fields",
        "too-many-fields",
        "unknown-tier",
        "bad-timeout",
        "approve-without-approver",
        "duplicate-rule-id",
        "unknown-row-type",
        "short-g-row",
        "long-g2-row",
    ],
)
def test_parse_errors_name_the_value_and_the_line(tmp_path: Path, line: str, named: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"# header comment\n{GOOD}\n\n{line}\n", encoding="utf-8")
    with pytest.raises(PolicyError) as raised:
        PolicyEngine.from_files(MODEL, path)
    message = str(raised.value)
    assert f"{path}:4:" in message
    assert named in message


def test_parse_policy_names_its_source() -> None:
    with pytest.raises(PolicyError, match=r"^inline\.csv:2: tier 'sometimes'"):
        parse_policy(f"{GOOD}\np, a, b, c, True, sometimes, r2, -, -", source="inline.csv")


@pytest.mark.parametrize("which", ["missing", "directory"])
def test_unreadable_policy_file(tmp_path: Path, which: str) -> None:
    path = tmp_path / "nope.csv"
    if which == "directory":
        path.mkdir()
    with pytest.raises(PolicyError) as raised:
        PolicyEngine.from_files(MODEL, path)
    assert repr(str(path)) in str(raised.value) and "cannot read" in str(raised.value)


def test_unreadable_model_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"cannot read .*absent\.conf"):
        PolicyEngine.from_files(tmp_path / "absent.conf", DEFAULT)


def test_model_casbin_rejects_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "model.conf"
    broken.write_text("[request_definition]\nr = sub\n", encoding="utf-8")
    with pytest.raises(PolicyError) as raised:
        PolicyEngine.from_files(broken, DEFAULT)
    assert "casbin rejected" in str(raised.value) and str(broken) in str(raised.value)


def test_policy_file_in_another_encoding_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"# Règles de paiement\n{GOOD}\n".encode("latin-1"))
    with pytest.raises(PolicyError, match=r"latin1\.csv.* is not UTF-8"):
        PolicyEngine.from_files(MODEL, path)


def test_policy_file_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_text(f"# Payments\n{GOOD}\n", encoding="utf-8-sig")
    assert [r.rule for r in PolicyEngine.from_files(MODEL, path).document.rules] == ["r-auto"]


def test_a_quote_in_a_comment_does_not_swallow_rules() -> None:
    text = (
        '# Bank details: never, "not even for the CFO\n'
        "p, role:r, vendor/:n, vendors.update_bank_details, True, deny, no-bank, -, -\n"
        '# see the "controls" page\n'
        "p, role:r, vendor/:n, vendors.update_bank_details, True, auto, bank-sync, -, -\n"
        "g, agent:a, role:r\n"
    )
    engine = _engine(text)
    assert [r.rule for r in engine.document.rules] == ["no-bank", "bank-sync"]
    d = _decide(engine, "vendors.update_bank_details", resource="vendor/v", agent="agent:a")
    assert (d.tier, d.rule) == (Tier.DENY, "no-bank")
    # a comment with a quote that never closes hides nothing either
    lonely = _engine('# payments, "small\n' + GOOD + "\ng, agent:a, role:r\n")
    assert [r.rule for r in lonely.document.rules] == ["r-auto"]


def test_line_numbers_count_physical_lines() -> None:
    """A quoted field may span lines; errors after it still name the physical line."""
    text = (
        'p, role:r, vendor/:n, pay, "r.ctx.amount > 1\n   && r.ctx.amount < 9", auto, r1, -, -\n'
        "# a comment\n"
        "p, role:r, vendor/:n, pay, True, sometimes, r2, -, -\n"
    )
    with pytest.raises(PolicyError, match=r"^f\.csv:4: tier 'sometimes'"):
        parse_policy(text, source="f.csv")
    rule = parse_policy("".join(text.splitlines(keepends=True)[:2])).rules[0]
    assert rule.condition == "r.ctx.amount > 1\n   && r.ctx.amount < 9"


def test_csv_errors_name_the_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    path.write_text(f"p, role:r, vendor/:n, pay, {'x' * 200_000}, auto, r1, -, -\n")
    with pytest.raises(PolicyError) as raised:
        PolicyEngine.from_files(MODEL, path)
    assert f"{path}:1:" in str(raised.value) and "model.conf" not in str(raised.value)


# --- check_approval ----------------------------------------------------------------------

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
PENDING = PendingApproval(
    request_id="apr-1",
    workflow_id="wf-invoice-7",
    run_id="run-1",
    step=3,
    agent="agent:ap-clerk",
    action="payments.pay",
    resource="vendor/acme",
    args_summary='{"amount": 25000}',
    args_digest="sha256:abc",
    reason="rule 'ap-pay-large'",
    rule="ap-pay-large",
    policy_version="sha256:0123456789abcdef",
    requested_by="user:bob",
    approver_role="role:ap-approver",
    approvers=["user:alice", "user:bob", "agent:ap-clerk"],
    deadline=NOW + timedelta(hours=24),
)


def _attempt(
    approver: str,
    *,
    request_id: str = "apr-1",
    now: datetime = NOW,
    pending: PendingApproval = PENDING,
    approve: bool = True,
) -> None:
    check_approval(
        pending,
        ApprovalDecision(request_id=request_id, approver=approver, approve=approve),
        now,
    )


def test_the_requester_cannot_approve_even_holding_the_role() -> None:
    with pytest.raises(ApprovalError) as raised:
        _attempt("user:bob")
    message = str(raised.value)
    assert "'user:bob'" in message and "cannot approve" in message
    assert "'role:ap-approver'" in message and "'apr-1'" in message


def test_the_agent_cannot_approve_its_own_request() -> None:
    with pytest.raises(ApprovalError) as raised:
        _attempt("agent:ap-clerk")
    assert "'agent:ap-clerk'" in str(raised.value) and "never approve" in str(raised.value)


def test_no_agent_identity_approves_even_holding_the_role() -> None:
    pending = PENDING.model_copy(update={"approvers": ["agent:other"]})
    with pytest.raises(ApprovalError, match="agents never approve"):
        _attempt("agent:other", pending=pending)


def test_a_non_holder_is_refused_and_told_whom_to_ask() -> None:
    with pytest.raises(ApprovalError) as raised:
        _attempt("user:mallory")
    message = str(raised.value)
    assert "'user:mallory' does not hold 'role:ap-approver'" in message
    assert "user:alice" in message


def test_nobody_holds_the_role() -> None:
    with pytest.raises(ApprovalError, match=r"'user:alice' does not hold .* ask one of nobody"):
        _attempt("user:alice", pending=PENDING.model_copy(update={"approvers": []}))


@pytest.mark.parametrize("late", [timedelta(0), timedelta(microseconds=1), timedelta(days=3)])
def test_expired_request_is_refused(late: timedelta) -> None:
    assert PENDING.deadline is not None
    with pytest.raises(ApprovalError) as raised:
        _attempt("user:alice", now=PENDING.deadline + late)
    assert "expired" in str(raised.value) and PENDING.deadline.isoformat() in str(raised.value)


@pytest.mark.parametrize(
    "status", [ApprovalStatus.APPROVED, ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED]
)
def test_decided_request_is_refused(status: ApprovalStatus) -> None:
    with pytest.raises(ApprovalError, match=f"'apr-1' is already {status.value}"):
        _attempt("user:alice", pending=PENDING.model_copy(update={"status": status}))


def test_wrong_request_id_is_refused() -> None:
    with pytest.raises(ApprovalError) as raised:
        _attempt("user:alice", request_id="apr-2")
    assert "'apr-2'" in str(raised.value) and "'wf-invoice-7'" in str(raised.value)


@pytest.mark.parametrize("approve", [True, False])
def test_a_holder_may_decide_until_the_deadline(approve: bool) -> None:
    assert PENDING.deadline is not None
    _attempt("user:alice", approve=approve)
    _attempt("user:alice", now=PENDING.deadline - timedelta(microseconds=1), approve=approve)
    _attempt(
        "user:alice",
        pending=PENDING.model_copy(update={"deadline": None}),
        now=datetime.max.replace(tzinfo=UTC),
    )


def test_the_refusals_are_checked_in_order() -> None:
    """An attempt that fails several rules hears about the request before the person."""
    late = NOW + timedelta(days=2)
    with pytest.raises(ApprovalError, match="'apr-9' is not waiting"):
        _attempt("user:bob", request_id="apr-9", now=late)
    decided = PENDING.model_copy(update={"status": ApprovalStatus.APPROVED})
    with pytest.raises(ApprovalError, match="already approved"):
        _attempt("user:mallory", pending=decided, now=late)
    with pytest.raises(ApprovalError, match="expired"):
        _attempt("user:bob", now=late)
