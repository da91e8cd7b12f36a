"""The policy engine: a casbin model plus policy rows decide a tier for every action.

This is the only module that imports casbin. It wraps casbin because casbin is untyped
and raises bare errors: loading validates every row and names the bad one.

Policy rows (`p`) carry: subject (agent or role), resource pattern (keyMatch2), action,
condition (a casbin `eval` expression over `r.ctx`), tier, rule id, approver role and
approval timeout. `g` rows give agents roles; `g2` rows give people approver roles.

Contract:
- Deterministic for a given model, policy and request.
- No matching row means `deny` under the rule `default-deny`.
- Where several rows match, the most restrictive tier wins (deny > approve > notify >
  auto): rows are kept in that order, so casbin's first match is the most restrictive.
- A condition that cannot be evaluated for a request (a missing context field) denies.
- `version` is a digest of the model text and the normalised policy rows.
- Names are canonical (governance.names): policy rows' subjects, actions, patterns and `g`
  rows at load, a request's agent, action and resource before deciding; a request with a
  refused name is denied under the rule `invalid-request`, the reason naming the value.
- `decide` uses the fast path (governance.fastpath), which finds the row casbin's
  Enforcer would find; `decide_with_casbin` asks the Enforcer itself (the reference the
  differential tests and `python -m bench decide` compare against). Both build their
  Decision with `_matched`/`_unmatched`, so they differ in speed only. A model whose
  matcher is not the shipped one is decided by the Enforcer.
- Every regex is matched by RE2 in time linear in the text (governance.matching): the fast
  path's resource patterns and casbin's own `keyMatch2..5`/`regexMatch`, which are
  replaced in this engine's Enforcer, so a decision is bounded in time for any input.
- At load, a resource pattern (or a literal pattern a condition gives a matching function)
  that RE2 does not accept, or a condition that does not parse as one expression, is a
  PolicyError naming the rule and the pattern (casbin would fail per request).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import casbin
from pydantic import JsonValue

from tether.errors import InvalidNameError, PolicyError
from tether.governance import fastpath, matching
from tether.governance.agents import agent_identities, is_agent
from tether.governance.names import (
    INVALID_REQUEST_RULE,
    canonical_action,
    canonical_agent,
    canonical_identity,
    canonical_pattern,
    canonical_resource,
)
from tether.governance.types import NO_MATCH_RULE, Decision, DecisionRequest, Tier

_P_FIELDS = ("sub", "obj", "act", "cond", "tier", "rule", "approver", "timeout")
_TIMEOUT = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NONE = "-"


@dataclass(frozen=True)
class PolicyRule:
    """One `p` row, typed."""

    subject: str
    resource: str
    action: str
    condition: str
    tier: Tier
    rule: str
    approver_role: str | None
    timeout_seconds: int | None

    def row(self) -> list[str]:
        return [
            self.subject,
            self.resource,
            self.action,
            self.condition,
            self.tier.value,
            self.rule,
            self.approver_role or _NONE,
            f"{self.timeout_seconds}s" if self.timeout_seconds is not None else _NONE,
        ]


@dataclass(frozen=True)
class PolicyDocument:
    """A parsed policy file: rules in decision order plus role assignments."""

    rules: tuple[PolicyRule, ...]
    agent_roles: tuple[tuple[str, str], ...]
    approver_roles: tuple[tuple[str, str], ...]


def _parse_timeout(value: str, where: str) -> int | None:
    if value == _NONE:
        return None
    match = _TIMEOUT.match(value)
    if match is None:
        raise PolicyError(
            f"{where}: timeout {value!r} is not a duration; write it like '90s', '30m', "
            "'24h' or '2d', or '-' for none"
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _parse_rule(fields: list[str], where: str) -> PolicyRule:
    if len(fields) != len(_P_FIELDS):
        raise PolicyError(
            f"{where}: a 'p' row needs {len(_P_FIELDS)} fields "
            f"({', '.join(_P_FIELDS)}), got {len(fields)}: {fields!r}"
        )
    sub, obj, act, cond, tier, rule, approver, timeout = fields
    try:
        sub, obj = canonical_agent(sub, "subject"), canonical_pattern(obj)
        act = canonical_action(act)
    except InvalidNameError as exc:
        raise PolicyError(f"{where}: {exc}") from None
    try:
        tier_value = Tier(tier)
    except ValueError:
        raise PolicyError(
            f"{where}: tier {tier!r} is not one of {', '.join(t.value for t in Tier)}"
        ) from None
    if tier_value is Tier.APPROVE and approver == _NONE:
        raise PolicyError(f"{where}: rule {rule!r} has tier 'approve' but names no approver role")
    return PolicyRule(
        subject=sub,
        resource=obj,
        action=act,
        condition=cond,
        tier=tier_value,
        rule=rule,
        approver_role=None if approver == _NONE else approver,
        timeout_seconds=_parse_timeout(timeout, where),
    )


def parse_policy(text: str, source: str = "<policy>") -> PolicyDocument:
    """Parse policy CSV text; raise PolicyError naming the first bad line."""
    rules: list[PolicyRule] = []
    agent_roles: list[tuple[str, str]] = []
    approver_roles: list[tuple[str, str]] = []
    seen_rules: set[str] = set()
    # Comment lines become blank lines: never parsed as CSV (a quote in a comment must not
    # swallow the rows after it), yet counted, so errors name physical line numbers.
    lines = ("\n" if line.lstrip().startswith("#") else line for line in io.StringIO(text))
    reader = csv.reader(lines, skipinitialspace=True)
    while True:
        try:
            raw = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise PolicyError(f"{source}:{reader.line_num}: not a valid CSV row: {exc}") from None
        fields = [f.strip() for f in raw]
        if not fields or not fields[0]:
            continue
        where = f"{source}:{reader.line_num}"
        kind, rest = fields[0], fields[1:]
        if kind == "p":
            rule = _parse_rule(rest, where)
            if rule.rule in seen_rules:
                raise PolicyError(
                    f"{where}: rule id {rule.rule!r} is used twice; ids must be unique"
                )
            seen_rules.add(rule.rule)
            rules.append(rule)
        elif kind in ("g", "g2"):
            if len(rest) != 2:
                raise PolicyError(
                    f"{where}: a {kind!r} row needs 2 fields (member, role), got {rest!r}"
                )
            if kind == "g":
                try:
                    agent_roles.append(
                        (canonical_agent(rest[0], "member"), canonical_agent(rest[1], "role"))
                    )
                except InvalidNameError as exc:
                    raise PolicyError(f"{where}: {exc}") from None
            else:
                try:  # people are named one way everywhere (`governance.names`)
                    approver_roles.append((canonical_identity(rest[0], "member"), rest[1]))
                except InvalidNameError as exc:
                    raise PolicyError(f"{where}: {exc}") from None
        else:
            raise PolicyError(f"{where}: row type {kind!r} is unknown; use 'p', 'g' or 'g2'")
    # Most restrictive first: casbin returns the first matching row.
    rules.sort(key=lambda r: -r.tier.severity)
    return PolicyDocument(tuple(rules), tuple(agent_roles), tuple(approver_roles))


class PolicyEngine:
    """A loaded policy: decides requests and answers who may approve."""

    def __init__(self, model_text: str, document: PolicyDocument, policy_text: str = "") -> None:
        self.document = document
        self.model_text = model_text
        self.policy_text = policy_text
        model = casbin.model.Model()
        model.load_model_from_text(model_text)
        self._enforcer = casbin.Enforcer(model)
        for name, function in matching.CASBIN_FUNCTIONS.items():  # RE2: linear time
            self._enforcer.add_function(name, function)
        if document.rules:
            self._enforcer.add_named_policies("p", [r.row() for r in document.rules])
        if document.agent_roles:
            self._enforcer.add_named_grouping_policies("g", [list(r) for r in document.agent_roles])
        if document.approver_roles:
            self._enforcer.add_named_grouping_policies(
                "g2", [list(r) for r in document.approver_roles]
            )
        self._by_rule = {r.rule: r for r in document.rules}
        self.agents = agent_identities(document)
        """Who is an agent under this policy (`governance.agents`): never an approver."""
        members: dict[str, set[str]] = {}
        for person, role in document.approver_roles:
            if not is_agent(person, self.agents):
                members.setdefault(role, set()).add(person)
        self._members = {role: sorted(people) for role, people in members.items()}
        self._fast = self._fast_index(model)
        # JSON, not a joined string: no field content can mimic a field boundary.
        canonical = json.dumps(
            {
                "model": model_text,
                "p": [r.row() for r in document.rules],
                "g": [list(r) for r in document.agent_roles],
                "g2": [list(r) for r in document.approver_roles],
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        self.version = f"sha256:{digest[:16]}"
        # A matched rule always gives the same decision under this policy: built once.
        self._decisions = {r.rule: self._decision_of(r) for r in document.rules}

    @classmethod
    def from_files(cls, model_path: Path, policy_path: Path) -> PolicyEngine:
        """Load a model conf and a policy CSV; raise PolicyError naming what is wrong."""
        texts: list[str] = []
        for path in (model_path, policy_path):
            try:
                texts.append(path.read_text(encoding="utf-8-sig"))  # a BOM is not content
            except OSError as exc:
                raise PolicyError(
                    f"cannot read {str(path)!r}: {exc.strerror}; check the path"
                ) from None
            except UnicodeDecodeError as exc:
                raise PolicyError(
                    f"{str(path)!r} is not UTF-8 (byte {exc.start}); save it as UTF-8"
                ) from None
        document = parse_policy(texts[1], source=str(policy_path))
        try:
            return cls(texts[0], document, texts[1])
        except PolicyError:
            raise
        except Exception as exc:  # casbin raises bare errors on a bad model
            raise PolicyError(f"casbin rejected {str(model_path)!r}: {exc}") from None

    @classmethod
    def from_texts(
        cls, model_text: str, policy_text: str, source: str = "<policy>"
    ) -> PolicyEngine:
        """Load a model and policy held in memory (a database row); PolicyError when bad."""
        document = parse_policy(policy_text, source=source)
        try:
            return cls(model_text, document, policy_text)
        except PolicyError:
            raise
        except Exception as exc:  # casbin raises bare errors on a bad model
            raise PolicyError(f"casbin rejected the model of {source!r}: {exc}") from None

    def _fast_index(self, model: casbin.model.Model) -> fastpath.FastIndex | None:
        """The fast path for this policy, or None when the model is not the shipped shape
        (then the Enforcer decides). PolicyError names a row casbin could not evaluate."""
        shape = (
            model["r"]["r"].tokens,
            model["p"]["p"].tokens,
            model["e"]["e"].value,
            model["m"]["m"].value,
            sorted(model.model.get("g") or {}),  # a Model has no __contains__
        )
        expected = (
            ["r_sub", "r_obj", "r_act", "r_ctx"],
            [f"p_{f}" for f in _P_FIELDS],
            "some(where (p_eft == allow))",
            fastpath.SUPPORTED_MATCHER,
            ["g", "g2"],
        )
        if shape != expected:
            return None
        functions = self._enforcer.fm.get_functions()
        for key, assertion in model["g"].items():
            functions[key] = casbin.util.generate_g_function(assertion.rm)
        matcher = model["m"]["m"].value
        rows: list[fastpath.Row] = []
        for rule in self.document.rules:
            values = {f"p_{f}": v for f, v in zip(_P_FIELDS, rule.row(), strict=True)}
            # The very text and AST casbin's enforce_ex builds for this row.
            text = casbin.util.replace_eval(matcher, [casbin.util.escape_assertion(rule.condition)])
            try:
                parsed = casbin.Enforcer._get_expression(text, functions)
            except SyntaxError as exc:
                raise PolicyError(
                    f"rule {rule.rule!r}: condition {rule.condition!r} is not an expression "
                    f"({exc.msg}); write it like 'r.ctx.amount <= 1000'"
                ) from None
            rows.append(
                fastpath.Row(
                    rule.subject,
                    rule.resource,
                    rule.action,
                    parsed.ast_parsed_value,
                    parsed.expr,
                    values,
                )
            )

        def fallback(row: fastpath.Row) -> fastpath.Evaluator:
            def evaluate(names: fastpath.Names) -> object:
                return casbin.util.SimpleEval(row.text, functions).eval({**names, **row.values})

            return evaluate

        try:
            return fastpath.FastIndex(rows, self.document.agent_roles, fallback)
        except fastpath.Unsupported as exc:
            raise PolicyError(str(exc)) from None

    def decide(self, request: DecisionRequest) -> Decision:
        """Decide one request with the fast path; the same answer as `decide_with_casbin`.
        Deterministic for this policy version."""
        return self.decide_fields(request.agent, request.action, request.resource, request.context)

    def decide_fields(
        self, agent: str, action: str, resource: str, context: Mapping[str, JsonValue]
    ) -> Decision:
        """`decide` for a request given as its fields (re-deciding a recorded one)."""
        if self._fast is None:
            return self.decide_with_casbin(
                DecisionRequest(
                    agent=agent, action=action, resource=resource, context=dict(context)
                )
            )
        try:
            agent, action, resource = _names(agent, action, resource)
        except InvalidNameError as exc:
            return self._refused(exc)
        try:
            order = self._fast.first_match(agent, resource, action, dict(context))
        except Exception as exc:  # what casbin raises: a condition that cannot be evaluated
            return self._failed(exc)
        if order is None:
            return self._unmatched(agent, action, resource)
        return self._matched(self.document.rules[order])

    def decide_with_casbin(self, request: DecisionRequest) -> Decision:
        """Decide one request with casbin's Enforcer (linear in the rules): the reference."""
        try:
            agent, action, resource = _canonical(request)
        except InvalidNameError as exc:
            return self._refused(exc)
        try:
            matched, explain = self._enforcer.enforce_ex(
                agent, resource, action, dict(request.context)
            )
        except Exception as exc:  # a condition referring to a missing context field
            return self._failed(exc)
        if not matched:
            return self._unmatched(agent, action, resource)
        return self._matched(self._by_rule[explain[5]])

    def _matched(self, rule: PolicyRule) -> Decision:
        """The decision a matched rule gives (both decision paths end here)."""
        return self._decisions[rule.rule]

    def _decision_of(self, rule: PolicyRule) -> Decision:
        return Decision(
            tier=rule.tier,
            rule=rule.rule,
            policy_version=self.version,
            reason=f"rule {rule.rule!r} ({rule.condition}) gives tier {rule.tier.value!r}",
            approver_role=rule.approver_role,
            approvers=self.members(rule.approver_role) if rule.approver_role else [],
            timeout_seconds=rule.timeout_seconds,
        )

    def _unmatched(self, agent: str, action: str, resource: str) -> Decision:
        return Decision(
            tier=Tier.DENY,
            rule=NO_MATCH_RULE,
            policy_version=self.version,
            reason=f"no rule allows {agent!r} to {action!r} on {resource!r}",
        )

    def _failed(self, exc: Exception) -> Decision:
        return Decision(
            tier=Tier.DENY,
            rule=NO_MATCH_RULE,
            policy_version=self.version,
            reason=f"a rule's condition could not be evaluated for this request: {exc}",
        )

    def _refused(self, exc: InvalidNameError) -> Decision:
        return Decision(
            tier=Tier.DENY,
            rule=INVALID_REQUEST_RULE,
            policy_version=self.version,
            reason=f"the request is refused: {exc}",
        )

    def members(self, role: str) -> list[str]:
        """People holding an approver role (`g2` rows), never an agent."""
        return list(self._members.get(role, ()))

    def holds_role(self, person: str, role: str) -> bool:
        return person in self.members(role)


def _canonical(request: DecisionRequest) -> tuple[str, str, str]:
    """(agent, action, resource) canonical; InvalidNameError names a refused one."""
    return _names(request.agent, request.action, request.resource)


def _names(agent: str, action: str, resource: str) -> tuple[str, str, str]:
    return canonical_agent(agent), canonical_action(action), canonical_resource(resource)
