"""Who is an agent: decided by the policy's roles, one way for every caller.

An identity is an agent when it carries the `agent:` prefix, or when the policy treats it
as one: it is a `p` row's subject, a `g` row's member, or a role a `g` row grants. The
approval path (`PolicyEngine.members` never lists an agent as an approver, and
`check_approval` refuses one), `policy push` (an agent never changes the policy that
governs it) and lint (`agent-approver`: a name both agent and approver) all ask here.

Pure, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.governance.names import identity_key

if TYPE_CHECKING:
    from tether.governance.policy import PolicyDocument

AGENT_PREFIX = "agent:"
"""Identities with this prefix are agents whatever the policy says."""


def agent_identities(document: PolicyDocument) -> frozenset[str]:
    """Every name `document` gives an agent or an agent's role (canonical spellings)."""
    names = {rule.subject for rule in document.rules}
    for member, role in document.agent_roles:
        names.update((member, role))
    return frozenset(identity_key(n) for n in names)


def is_agent(identity: str, agents: frozenset[str] = frozenset()) -> bool:
    """Whether `identity` is an agent: the prefix, or one of a policy's `agents`."""
    key = identity_key(identity)
    return key.startswith(AGENT_PREFIX) or key in agents
