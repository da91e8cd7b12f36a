"""Lint checks that keep the control plane decidable (part of `governance.lint`).

- `empty`: a policy with no `p` row (every request would be denied by default, silently).
- `approver-chain`: an approve rule whose approver field is not a chain `ROLE[#N][>...]`
  (e.g. `role:x#0>`), or a stage whose quorum is more people than hold its role: nobody
  can ever approve. A role nobody holds yet is a warning.
- `agent-approver`: a name the policy treats as an agent (`governance.agents`) that also
  holds an approver role (`g2`): agents never approve, so the grant means nothing, or the
  name is not the agent the author thinks.
- `condition`: a condition that cannot be evaluated: not an expression, or reading
  something other than the request (`r.sub`, `r.obj`, `r.act`, `r.ctx...`), constants and
  casbin's match functions.

Errors refuse a policy at load (`check_and_load`), keeping the last good one. Pure.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Literal

from tether.errors import PolicyError
from tether.governance.agents import is_agent
from tether.governance.approvals import parse_chain
from tether.governance.policy import PolicyEngine, PolicyRule
from tether.governance.types import Tier

_FUNCTIONS = {
    "keyMatch",
    "keyMatch2",
    "keyMatch3",
    "keyMatch4",
    "keyMatch5",
    "regexMatch",
    "globMatch",
    "ipMatch",
}
_NAMES = {"r", "True", "False", "None"} | _FUNCTIONS
_REQUEST_FIELDS = {"sub", "obj", "act", "ctx"}
_NODES = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.Compare,
    ast.cmpop,
    ast.BinOp,
    ast.operator,
    ast.Constant,
    ast.Name,
    ast.Attribute,
    ast.Load,
    ast.Call,
    ast.List,
    ast.Tuple,
    ast.IfExp,
)

Add = Callable[[Literal["error", "warning"], str, int, str, str], None]
"""(severity, check, line, rule, message)."""


def condition_problem(condition: str) -> str:
    """Why `condition` cannot be evaluated over a request, or "" when it can."""
    expr = re.sub(r"!(?!=)", " not ", condition.replace("&&", " and ").replace("||", " or "))
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        return f"is not an expression ({exc.msg})"
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            return f"uses {type(node).__name__}, which a condition may not"
        if isinstance(node, ast.Name) and node.id not in _NAMES:
            return f"reads {node.id!r}, which is not the request (r.ctx.<field>, r.sub, ...)"
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            return "calls a method; only casbin's match functions may be called"
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "r"
            and node.attr not in _REQUEST_FIELDS
        ):
            return f"reads r.{node.attr}, which a request does not have (r.ctx.<field>)"
    return ""


def control_findings(engine: PolicyEngine, lines: dict[str, int], add: Add) -> None:
    """Report this module's checks through `add`."""
    document = engine.document
    if not document.rules:
        add("error", "empty", 0, "", "the policy has no 'p' row, so it decides nothing; add rules")
    for rule in document.rules:
        line = lines.get(rule.rule, 0)
        problem = condition_problem(rule.condition)
        if problem:
            add(
                "error",
                "condition",
                line,
                rule.rule,
                f"condition {rule.condition!r} {problem}; it cannot be evaluated, fix it",
            )
        if rule.tier is Tier.APPROVE:
            _chain(engine, rule, line, add)
    for person, role in document.approver_roles:
        if is_agent(person, engine.agents):
            add(
                "error",
                "agent-approver",
                0,
                "",
                f"{person!r} is an agent under this policy and holds approver role {role!r}; "
                "agents never approve, so remove the 'g2' row or the agent grant",
            )


def _chain(engine: PolicyEngine, rule: PolicyRule, line: int, add: Add) -> None:
    field = rule.approver_role or ""
    try:
        chain = parse_chain(field)
    except PolicyError as exc:
        add("error", "approver-chain", line, rule.rule, f"{exc}; nobody could approve")
        return
    for role, quorum in chain:
        holders = len(engine.members(role))
        if holders == 0:
            add(
                "warning",
                "approver-chain",
                line,
                rule.rule,
                f"approver role {role!r} of rule {rule.rule!r} is held by nobody yet; add "
                f"'g2, user:..., {role}'",
            )
        elif quorum > holders:
            add(
                "error",
                "approver-chain",
                line,
                rule.rule,
                f"rule {rule.rule!r} needs {quorum} approvers of {role!r}, but only "
                f"{holders} hold it; lower the quorum or grant the role",
            )
