"""Kill switches: stop every new decision in a scope at once, recorded.

A switch has a scope `kind` (global, tenant, agent or action) and a `value` (the tenant,
the agent id, the action name; "*" for global). While engaged, `decide_step` denies every
decision in scope and `call_model` refuses every model call in scope; both read this
table on every call (an indexed lookup over the few engaged rows), so there is no cache
that could be stale.

Contract:
- `engage` is idempotent by scope: engaging an engaged scope returns the switch already
  engaged and records nothing new. A unique index on the active scope keeps two
  concurrent engages from creating two switches.
- `release` closes the engaged switch of a scope; releasing a scope that is not engaged
  raises KillError naming it.
- Both are recorded in the ledger (`kill.engaged`, `kill.released`) with actor, scope
  and reason, keyed by the switch id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel
from sqlalchemy import Engine, Integer, String, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from tether.core.db import Base, create_tables
from tether.errors import KillError
from tether.governance.approvals import HaltRequest
from tether.verification.events import LedgerEvent
from tether.verification.ledger import Ledger


class ScopeKind(StrEnum):
    GLOBAL = "global"
    TENANT = "tenant"
    AGENT = "agent"
    ACTION = "action"


GLOBAL_VALUE = "*"


class KillRecord(BaseModel):
    """One kill switch, engaged or released."""

    id: int
    kind: ScopeKind
    value: str
    reason: str
    engaged_by: str
    engaged_at: str
    released_at: str | None = None
    released_by: str = ""

    @property
    def rule(self) -> str:
        """The rule a decision denied by this switch names."""
        return f"kill-switch:{self.kind.value}:{self.value}"

    def covers(self, tenant: str, agent: str, action: str) -> bool:
        """Whether this switch's scope covers a step of `tenant`, `agent`, `action`."""
        return (
            self.kind is ScopeKind.GLOBAL
            or (self.kind is ScopeKind.TENANT and self.value == tenant)
            or (self.kind is ScopeKind.AGENT and self.value == agent)
            or (self.kind is ScopeKind.ACTION and self.value == action)
        )

    def describe(self) -> str:
        return (
            f"kill switch {self.kind.value} {self.value!r} engaged by {self.engaged_by!r} "
            f"at {self.engaged_at}: {self.reason or 'no reason given'}"
        )


HaltInput = HaltRequest
"""Payload of the `halt` signal: a kill switch ends a pending approval as halted."""


class KillRow(Base):
    __tablename__ = "kill_switches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(255))
    active: Mapped[str | None] = mapped_column(String(300), unique=True, nullable=True)
    """`kind:value` while engaged, NULL once released: at most one engaged switch a scope."""
    reason: Mapped[str] = mapped_column(Text, default="")
    engaged_by: Mapped[str] = mapped_column(String(255))
    engaged_at: Mapped[str] = mapped_column(String(40))
    released_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    released_by: Mapped[str] = mapped_column(String(255), default="")


def _record(row: KillRow) -> KillRecord:
    return KillRecord(
        id=row.id,
        kind=ScopeKind(row.kind),
        value=row.value,
        reason=row.reason,
        engaged_by=row.engaged_by,
        engaged_at=row.engaged_at,
        released_at=row.released_at,
        released_by=row.released_by,
    )


def scope(kind: str, value: str = "") -> tuple[ScopeKind, str]:
    """Validate a scope; KillError naming the bad kind or the missing value."""
    try:
        k = ScopeKind(kind)
    except ValueError:
        raise KillError(
            f"kill-switch scope {kind!r} is unknown; use one of "
            f"{', '.join(s.value for s in ScopeKind)}"
        ) from None
    if k is ScopeKind.GLOBAL:
        if value not in ("", GLOBAL_VALUE):
            raise KillError(f"a global kill switch takes no value, got {value!r}; leave it out")
        return k, GLOBAL_VALUE
    if not value.strip():
        example = {"tenant": "acme", "agent": "agent:ap-clerk", "action": "payments.pay"}[k.value]
        raise KillError(f"a {k.value} kill switch needs a value, e.g. {example!r}")
    return k, value.strip()


class KillSwitches:
    def __init__(self, engine: Engine, ledger: Ledger) -> None:
        self.engine = engine
        self.ledger = ledger
        create_tables(engine)

    def engage(self, kind: str, value: str, *, reason: str, engaged_by: str) -> KillRecord:
        """Engage a scope (or return its engaged switch); recorded as `kill.engaged`."""
        k, v = scope(kind, value)
        if not engaged_by.strip():
            raise KillError("engaging a kill switch needs an actor (--as user:NAME)")
        active = f"{k.value}:{v}"
        try:
            with Session(self.engine) as session, session.begin():
                found = session.execute(
                    select(KillRow).where(KillRow.active == active)
                ).scalar_one_or_none()
                if found is not None:
                    return _record(found)
                row = KillRow(
                    kind=k.value,
                    value=v,
                    active=active,
                    reason=reason,
                    engaged_by=engaged_by,
                    engaged_at=datetime.now(UTC).isoformat(timespec="seconds"),
                    released_by="",
                )
                session.add(row)
                session.flush()
                record = _record(row)
        except IntegrityError:  # engaged at the same moment by someone else
            return self._active(active)
        self._event(record, "kill.engaged", "engaged", engaged_by)
        return record

    def release(self, kind: str, value: str, *, released_by: str) -> KillRecord:
        """Release a scope's engaged switch; recorded as `kill.released`."""
        k, v = scope(kind, value)
        with Session(self.engine) as session, session.begin():
            row = session.execute(
                select(KillRow).where(KillRow.active == f"{k.value}:{v}")
            ).scalar_one_or_none()
            if row is None:
                raise KillError(
                    f"no {k.value} kill switch {v!r} is engaged; see 'tether kill status'"
                )
            row.active = None
            row.released_at = datetime.now(UTC).isoformat(timespec="seconds")
            row.released_by = released_by
            record = _record(row)
        self._event(record, "kill.released", "released", released_by)
        return record

    def status(self, include_released: bool = False) -> list[KillRecord]:
        """Engaged switches (and released ones when asked), oldest first."""
        stmt = select(KillRow).order_by(KillRow.id)
        if not include_released:
            stmt = stmt.where(KillRow.active.is_not(None))
        with Session(self.engine) as session:
            return [_record(r) for r in session.execute(stmt).scalars()]

    def blocking(self, tenant: str, agent: str, action: str) -> KillRecord | None:
        """The engaged switch whose scope covers this step, the oldest first; None if none."""
        wanted = [f"global:{GLOBAL_VALUE}", f"tenant:{tenant}", f"agent:{agent}"]
        if action:
            wanted.append(f"action:{action}")
        stmt = select(KillRow).where(KillRow.active.in_(wanted)).order_by(KillRow.id).limit(1)
        with Session(self.engine) as session:
            row = session.execute(stmt).scalars().first()
            return None if row is None else _record(row)

    def _active(self, active: str) -> KillRecord:
        with Session(self.engine) as session:
            row = session.execute(select(KillRow).where(KillRow.active == active)).scalar_one()
            return _record(row)

    def _event(self, record: KillRecord, kind: str, outcome: str, actor: str) -> None:
        self.ledger.append(
            LedgerEvent(
                idempotency_key=f"{kind}:{record.id}",
                kind=kind,
                agent=record.value if record.kind is ScopeKind.AGENT else "",
                action=record.value if record.kind is ScopeKind.ACTION else "",
                rule=record.rule,
                actor=actor,
                outcome=outcome,
                payload={
                    "scope": record.kind.value,
                    "value": record.value,
                    "reason": record.reason,
                    "engaged_by": record.engaged_by,
                    "engaged_at": record.engaged_at,
                    "released_at": record.released_at,
                },
            )
        )
