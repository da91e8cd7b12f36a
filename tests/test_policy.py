"""The policy engine with real casbin: tiers, most-restrictive-wins, and exact agreement
with casbin's own Enforcer on the same model and rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import casbin
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.approvals import ApprovalDecision, ApprovalStatus, PendingApproval, check_approval
from governance.errors import ApprovalError, PolicyError
from governance.policy import PolicyEngine, parse_policy
from governance.types import DecisionRequest, Tier

POLICIES = Path(__file__).resolve().parent.parent / "governance" / "policies"
MODEL = POLICIES / "model.conf"
MODEL_TEXT = MODEL.read_text()


@pytest.fixture(scope="module")
def default() -> PolicyEngine:
    return PolicyEngine.from_files(MODEL, POLICIES / "default.csv")


def _ask(
    engine: PolicyEngine, action: str, resource: str = "vendor/acme", **ctx: float
) -> tuple[str, str]:
    d = engine.decide(
        DecisionRequest(agent="agent:ap-clerk", action=action, resource=resource, context=ctx)
    )
    return d.tier.value, d.rule


def test_default_policy_tiers(default: PolicyEngine) -> None:
    assert _ask(default, "payments.pay", amount=250) == ("auto", "ap-pay-small")
    assert _ask(default, "payments.pay", amount=4800) == ("notify", "ap-pay-medium")
    assert _ask(default, "payments.pay", amount=25000) == ("approve", "ap-pay-large")
    assert _ask(default, "vendors.update_bank_details") == ("deny", "ap-no-bank-changes")
    assert _ask(default, "payments.pay", resource="vendor/acme/extra", amount=1) == (
        "deny",
        "default-deny",
    )
    assert _ask(default, "payments.pay") == ("deny", "default-deny")  # no amount in context
    stranger = default.decide(
        DecisionRequest(
            agent="agent:nobody",
            action="payments.pay",
            resource="vendor/acme",
            context={"amount": 1},
        )
    )
    assert (stranger.tier, stranger.rule) == (Tier.DENY, "default-deny")
    big = default.decide(
        DecisionRequest(
            agent="agent:ap-clerk",
            action="payments.pay",
            resource="vendor/acme",
            context={"amount": 25000},
        )
    )
    assert big.approver_role == "role:ap-approver" and big.approvers == ["user:alice", "user:bob"]
    assert big.timeout_seconds == 86400 and big.policy_version == default.version


ROWS = {
    "auto": "p, role:r, vendor/:n, pay, True, auto, r-auto, -, -",
    "notify": "p, role:r, vendor/:n, pay, r.ctx.amount > 10, notify, r-notify, -, -",
    "approve": "p, role:r, vendor/:n, pay, r.ctx.amount > 100, approve, r-approve, role:boss, 1h",
    "deny": "p, role:r, vendor/:n, pay, r.ctx.amount > 1000, deny, r-deny, -, -",
}


@given(order=st.permutations(list(ROWS)), amount=st.integers(0, 5000))
def test_most_restrictive_wins_whatever_the_row_order(order: list[str], amount: int) -> None:
    text = "\n".join([*(ROWS[k] for k in order), "g, agent:a, role:r", "g2, user:b, role:boss"])
    engine = PolicyEngine(MODEL_TEXT, parse_policy(text))
    tier = engine.decide(
        DecisionRequest(
            agent="agent:a", action="pay", resource="vendor/x", context={"amount": amount}
        )
    ).tier
    expected = (
        "deny"
        if amount > 1000
        else "approve"
        if amount > 100
        else "notify"
        if amount > 10
        else "auto"
    )
    assert tier.value == expected


AGENTS = ["agent:a", "agent:b", "agent:c"]
ROLES = ["role:x", "role:y"]
SUBJECTS = AGENTS + ROLES
RESOURCES = ["vendor/:n", "vendor/acme", "invoice/:id", "vendor/*"]
ACTIONS = ["pay", "read", "update"]
CONDITIONS = [
    "True",
    "r.ctx.amount > 50",
    "r.ctx.amount <= 500",
    "r.ctx.amount > 50 && r.ctx.amount < 900",
]
TIERS = ["auto", "notify", "approve", "deny"]

rule_strategy = st.tuples(
    st.sampled_from(SUBJECTS),
    st.sampled_from(RESOURCES),
    st.sampled_from(ACTIONS),
    st.sampled_from(CONDITIONS),
    st.sampled_from(TIERS),
)
request_strategy = st.tuples(
    st.sampled_from(AGENTS),
    st.sampled_from(["vendor/acme", "vendor/globex", "invoice/7", "vendor/acme/x", "ticket/1"]),
    st.sampled_from(ACTIONS),
    st.integers(0, 1000),
)


def _casbin_matches(
    rows: list[list[str]], groups: list[list[str]], request: tuple[str, str, str, int]
) -> bool:
    model = casbin.model.Model()
    model.load_model_from_text(MODEL_TEXT)
    enforcer = casbin.Enforcer(model)
    enforcer.add_named_policies("p", rows)
    if groups:
        enforcer.add_named_grouping_policies("g", groups)
    agent, resource, action, amount = request
    return bool(enforcer.enforce(agent, resource, action, {"amount": amount}))


@settings(max_examples=300, deadline=None)
@given(
    rules=st.lists(rule_strategy, min_size=1, max_size=8),
    memberships=st.lists(
        st.tuples(st.sampled_from(AGENTS), st.sampled_from(ROLES)), max_size=4, unique=True
    ),
    requests=st.lists(request_strategy, min_size=1, max_size=10),
)
def test_agrees_with_casbin_enforcer(
    rules: list[tuple[str, str, str, str, str]],
    memberships: list[tuple[str, str]],
    requests: list[tuple[str, str, str, int]],
) -> None:
    lines = [
        f"p, {s}, {o}, {a}, {c}, {t}, rule{i}, {'role:boss' if t == 'approve' else '-'}, -"
        for i, (s, o, a, c, t) in enumerate(rules)
    ] + [f"g, {m}, {r}" for m, r in memberships]
    engine = PolicyEngine(MODEL_TEXT, parse_policy("\n".join(lines)))
    groups = [list(m) for m in memberships]
    rows = [
        [s, o, a, c, t, f"rule{i}", "role:boss" if t == "approve" else "-", "-"]
        for i, (s, o, a, c, t) in enumerate(rules)
    ]
    for request in requests:
        # casbin, one row at a time: which rows match this request?
        matching = [row for row in rows if _casbin_matches([row], groups, request)]
        decision = engine.decide(
            DecisionRequest(
                agent=request[0],
                resource=request[1],
                action=request[2],
                context={"amount": request[3]},
            )
        )
        if not matching:
            assert decision.rule == "default-deny" and decision.tier is Tier.DENY
            continue
        worst = max(Tier(row[4]).severity for row in matching)
        assert decision.tier.severity == worst
        winners = [row[5] for row in matching if Tier(row[4]).severity == worst]
        assert decision.rule in winners
        # and casbin's Enforcer over the whole policy agrees that something matches
        assert _casbin_matches(rows, groups, request)


def test_version_is_a_digest_of_model_and_rows(tmp_path: Path) -> None:
    a = PolicyEngine(MODEL_TEXT, parse_policy(ROWS["auto"]))
    assert a.version == PolicyEngine(MODEL_TEXT, parse_policy(ROWS["auto"])).version
    assert a.version != PolicyEngine(MODEL_TEXT, parse_policy(ROWS["notify"])).version
    assert a.version != PolicyEngine(MODEL_TEXT + "\n", parse_policy(ROWS["auto"])).version


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("p, a, b, c", "got 3"),
        ("p, a, b, c, True, maybe, r1, -, -", "'maybe'"),
        ("p, a, b, c, True, approve, r1, role:x, 24 hours", "'24 hours'"),
        ("p, a, b, c, True, approve, r1, -, -", "names no approver role"),
        ("x, a, b", "'x'"),
        ("g, only-one", "needs 2 fields"),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, line: str, named: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"# ok\n{ROWS['auto']}\n{line}\n")
    with pytest.raises(PolicyError) as raised:
        PolicyEngine.from_files(MODEL, path)
    assert f"{path}:3" in str(raised.value) and named in str(raised.value)


def test_duplicate_rule_ids_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"'r-auto' is used twice"):
        parse_policy(f"{ROWS['auto']}\n{ROWS['auto']}")
    with pytest.raises(PolicyError, match=r"nope\.csv"):
        PolicyEngine.from_files(MODEL, tmp_path / "nope.csv")
    broken_model = tmp_path / "model.conf"
    broken_model.write_text("[request_definition]\nr = sub\n")
    with pytest.raises(PolicyError, match=r"model\.conf"):
        PolicyEngine.from_files(broken_model, POLICIES / "default.csv")


NOW = datetime(2026, 1, 1, tzinfo=UTC)
PENDING = PendingApproval(
    request_id="apr-1",
    workflow_id="wf",
    run_id="run",
    step=2,
    agent="agent:ap-clerk",
    action="payments.pay",
    resource="vendor/acme",
    args_summary="{}",
    args_digest="d",
    reason="big",
    rule="ap-pay-large",
    policy_version="v",
    requested_by="user:bob",
    approver_role="role:ap-approver",
    approvers=["user:alice", "user:bob"],
    deadline=NOW + timedelta(hours=1),
)


@pytest.mark.parametrize(
    ("approver", "request_id", "now", "status", "named"),
    [
        ("user:bob", "apr-1", NOW, ApprovalStatus.PENDING, "cannot approve"),
        ("agent:ap-clerk", "apr-1", NOW, ApprovalStatus.PENDING, "cannot approve"),
        ("user:mallory", "apr-1", NOW, ApprovalStatus.PENDING, "does not hold"),
        ("user:alice", "apr-1", NOW + timedelta(hours=2), ApprovalStatus.PENDING, "expired"),
        ("user:alice", "apr-1", NOW, ApprovalStatus.APPROVED, "already approved"),
        ("user:alice", "apr-2", NOW, ApprovalStatus.PENDING, "'apr-2'"),
    ],
)
def test_approval_attempts_refused(
    approver: str, request_id: str, now: datetime, status: ApprovalStatus, named: str
) -> None:
    pending = PENDING.model_copy(update={"status": status})
    with pytest.raises(ApprovalError, match=named):
        check_approval(
            pending, ApprovalDecision(request_id=request_id, approver=approver, approve=True), now
        )


def test_eligible_approver_accepted() -> None:
    check_approval(
        PENDING, ApprovalDecision(request_id="apr-1", approver="user:alice", approve=False), NOW
    )
