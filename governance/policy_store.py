"""The policy store: policy versions in the database, one of them active (production source).

Contract:
- `push` refuses an agent identity as author (an `agent:` id, or any name the current or
  the pushed policy's `p`/`g` rows give to an agent or its role): recorded in the ledger as
  `policy.refused`, nothing else changes, PolicyError raised.
- `push` lints and loads the policy before storing it; a policy with a lint error or one
  that does not load is recorded as `policy.rejected` and refused with PolicyError.
- `push(..., gate=...)` refuses a policy the gate objects to (a `--max-changes` limit),
  recorded as `policy.refused` with the gate's reason.
- A stored push deactivates the previous version and activates the new one in one
  transaction, and records `policy.changed` (author, both versions, texts in the content
  store) under the key `policy.changed:db:<id>`, which workers reuse when they pick it up.
- An active version that does not load (malformed, or pushed before a lint check existed)
  never blocks a push: the push of a valid policy always repairs the store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NoReturn

from pydantic import BaseModel
from sqlalchemy import Boolean, Engine, Integer, String, Text, select, text, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from tether.core.db import Base, create_tables
from tether.errors import PolicyError
from tether.governance.agents import agent_identities, is_agent
from tether.governance.lint import check_and_load
from tether.governance.policy import PolicyDocument, PolicyEngine, parse_policy
from tether.verification.events import LedgerEvent, digest
from tether.verification.ledger import Ledger

_PUSH_LOCK = 0x7E7E_0002
"""PostgreSQL advisory lock id that serialises pushes between processes."""


class PolicyVersionRow(Base):
    __tablename__ = "policy_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(71), index=True)
    model_text: Mapped[str] = mapped_column(Text)
    policy_text: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[str] = mapped_column(String(40))
    active: Mapped[bool] = mapped_column(Boolean, index=True, default=False)


class PolicyVersion(BaseModel):
    """One stored policy version."""

    id: int
    version: str
    author: str
    created_at: str
    active: bool
    model_text: str
    policy_text: str

    @property
    def revision(self) -> str:
        return f"db:{self.id}"


def _version(row: PolicyVersionRow) -> PolicyVersion:
    return PolicyVersion(
        id=row.id,
        version=row.digest,
        author=row.author,
        created_at=row.created_at,
        active=row.active,
        model_text=row.model_text,
        policy_text=row.policy_text,
    )


def agent_names(document: PolicyDocument) -> set[str]:
    """Every name a policy gives an agent or an agent's role (`governance.agents`)."""
    return set(agent_identities(document))


def policy_changed_event(
    revision: str, actor: str, previous: PolicyEngine | None, new: PolicyEngine, source: str
) -> tuple[LedgerEvent, list[str]]:
    """The ledger record of a policy change and the texts that go to the content store."""
    payload: dict[str, str | int | None] = {
        "source": source,
        "revision": revision,
        "previous_version": previous.version if previous else None,
        "previous_model_digest": digest(previous.model_text) if previous else None,
        "previous_policy_digest": digest(previous.policy_text) if previous else None,
        "model_digest": digest(new.model_text),
        "policy_digest": digest(new.policy_text),
        "rules": len(new.document.rules),
    }
    event = LedgerEvent(
        idempotency_key=f"policy.changed:{revision}",
        kind="policy.changed",
        policy_version=new.version,
        actor=actor,
        outcome="changed",
        payload=dict(payload),
    )
    return event, [new.model_text, new.policy_text]


def _loadable(version: PolicyVersion | None) -> PolicyEngine | None:
    """`version` loaded, or None when there is none or it does not load: a malformed
    active version never blocks the push that repairs it."""
    if version is None:
        return None
    try:
        return PolicyEngine.from_texts(version.model_text, version.policy_text, version.revision)
    except PolicyError:
        return None


class PolicyStore:
    def __init__(self, engine: Engine, ledger: Ledger) -> None:
        self.engine = engine
        self.ledger = ledger
        create_tables(engine)

    def active(self) -> PolicyVersion | None:
        """The version in force, or None before the first push."""
        stmt = select(PolicyVersionRow).where(PolicyVersionRow.active.is_(True))
        with Session(self.engine) as session:
            row = session.execute(stmt.order_by(PolicyVersionRow.id.desc())).scalars().first()
            return None if row is None else _version(row)

    def history(self) -> list[PolicyVersion]:
        """Every pushed version, newest first."""
        stmt = select(PolicyVersionRow).order_by(PolicyVersionRow.id.desc())
        with Session(self.engine) as session:
            return [_version(r) for r in session.execute(stmt).scalars()]

    def push(
        self,
        model_text: str,
        policy_text: str,
        actor: str,
        gate: Callable[[PolicyEngine], str | None] | None = None,
    ) -> PolicyVersion:
        """Store and activate a policy written by `actor`; PolicyError (recorded) if refused.
        `gate`, when given, sees the loaded policy and returns why to refuse it, or None
        (`tether policy push --max-changes` passes verification.impact.ChangeLimit)."""
        if not actor.strip():
            raise PolicyError("no author given; push as a person, e.g. --as user:alice")
        current_engine = _loadable(self.active())
        agents = agent_names(current_engine.document) if current_engine else set()
        # A policy that does not parse is refused below, after the identity check.
        with contextlib.suppress(PolicyError):
            agents |= agent_names(parse_policy(policy_text, source="pushed policy"))
        if is_agent(actor, frozenset(agents)):
            self._refusal(
                "policy.refused",
                actor,
                policy_text,
                current_engine,
                f"{actor!r} is an agent identity; agents may not change the policy that "
                "governs them, so push as a person (e.g. --as user:alice)",
            )
        try:
            new = check_and_load(model_text, policy_text, source="pushed policy")
        except PolicyError as exc:
            self._refusal("policy.rejected", actor, policy_text, current_engine, str(exc))
        refusal = gate(new) if gate is not None else None
        if refusal is not None:
            self._refusal("policy.refused", actor, policy_text, current_engine, refusal)
        return self._store(model_text, policy_text, actor, new)

    def _store(
        self, model_text: str, policy_text: str, actor: str, new: PolicyEngine
    ) -> PolicyVersion:
        with Session(self.engine) as session, session.begin():
            if session.connection().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PUSH_LOCK})
            stmt = select(PolicyVersionRow).where(PolicyVersionRow.active.is_(True))
            previous_row = session.execute(stmt).scalars().first()
            previous = _loadable(_version(previous_row) if previous_row else None)
            session.execute(update(PolicyVersionRow).values(active=False))
            row = PolicyVersionRow(
                digest=new.version,
                model_text=model_text,
                policy_text=policy_text,
                author=actor,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                active=True,
            )
            session.add(row)
            session.flush()
            stored = _version(row)
        event, content = policy_changed_event(stored.revision, actor, previous, new, "database")
        self.ledger.append(event, content)
        return stored

    def _refusal(
        self,
        kind: str,
        actor: str,
        policy_text: str,
        current: PolicyEngine | None,
        why: str,
    ) -> NoReturn:
        attempt = digest(policy_text)
        self.ledger.append(
            LedgerEvent(
                idempotency_key=f"{kind}:{actor}:{attempt}:{datetime.now(UTC).isoformat()}",
                kind=kind,
                policy_version=current.version if current else "",
                actor=actor,
                outcome=kind.removeprefix("policy."),
                payload={"policy_digest": attempt, "error": why, "source": "database"},
            ),
            [policy_text],
        )
        raise PolicyError(why)
