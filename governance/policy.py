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
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import casbin

from governance.errors import PolicyError
from governance.types import NO_MATCH_RULE, Decision, DecisionRequest, Tier

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
            (agent_roles if kind == "g" else approver_roles).append((rest[0], rest[1]))
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
        if document.rules:
            self._enforcer.add_named_policies("p", [r.row() for r in document.rules])
        if document.agent_roles:
            self._enforcer.add_named_grouping_policies("g", [list(r) for r in document.agent_roles])
        if document.approver_roles:
            self._enforcer.add_named_grouping_policies(
                "g2", [list(r) for r in document.approver_roles]
            )
        self._by_rule = {r.rule: r for r in document.rules}
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
        except Exception as exc:  # casbin raises bare errors on a bad model
            raise PolicyError(f"casbin rejected {str(model_path)!r}: {exc}") from None

    def decide(self, request: DecisionRequest) -> Decision:
        """Decide one request. Deterministic for this policy version."""
        try:
            matched, explain = self._enforcer.enforce_ex(
                request.agent, request.resource, request.action, dict(request.context)
            )
        except Exception as exc:  # a condition referring to a missing context field
            return Decision(
                tier=Tier.DENY,
                rule=NO_MATCH_RULE,
                policy_version=self.version,
                reason=f"a rule's condition could not be evaluated for this request: {exc}",
            )
        if not matched:
            return Decision(
                tier=Tier.DENY,
                rule=NO_MATCH_RULE,
                policy_version=self.version,
                reason=(
                    f"no rule allows {request.agent!r} to {request.action!r} "
                    f"on {request.resource!r}"
                ),
            )
        rule = self._by_rule[explain[5]]
        approvers = self.members(rule.approver_role) if rule.approver_role else []
        return Decision(
            tier=rule.tier,
            rule=rule.rule,
            policy_version=self.version,
            reason=f"rule {rule.rule!r} ({rule.condition}) gives tier {rule.tier.value!r}",
            approver_role=rule.approver_role,
            approvers=approvers,
            timeout_seconds=rule.timeout_seconds,
        )

    def members(self, role: str) -> list[str]:
        """People holding an approver role (`g2` rows)."""
        rows: list[list[str]] = self._enforcer.get_filtered_named_grouping_policy("g2", 1, role)
        return sorted({row[0] for row in rows})

    def holds_role(self, person: str, role: str) -> bool:
        return person in self.members(role)
