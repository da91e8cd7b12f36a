"""Per-agent budgets over rolling windows, enforced by reserving before a model call.

A budget belongs to a subject, an agent (`agent:ap-clerk`) or an agent role
(`role:ap-agent`), and limits tokens and/or cost within a rolling window of seconds. A
model call reserves its worst case before it runs (`reserve`), then settles to what it
actually used (`settle`) or gives the reservation back when it failed (`release`). Usage
of a subject = reservations still open + settled usage, made within the window.

Contract:
- `reserve` is atomic under concurrency: the usage check and the insert run in one
  transaction holding a lock (SQLite: the write lock of BEGIN IMMEDIATE; PostgreSQL:
  `SELECT ... FOR UPDATE` on the budget rows that apply, in subject order), so workflows
  sharing a budget can never reserve more than it holds.
- `reserve` is idempotent by key: reserving a key that is open or settled returns that
  reservation again (a retried activity does not reserve twice); a released key
  reserves anew.
- A reservation is recorded for every subject of the agent (the agent and the roles it
  has when reserving), budget or not, so a budget set later counts earlier usage.
- `force=True` (an approved overspend) records the reservation even beyond the limits.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Sequence
from enum import StrEnum

from pydantic import BaseModel, Field, JsonValue
from sqlalchemy import Engine, Float, Integer, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from tether.core.db import Base, create_tables
from tether.errors import BudgetError
from tether.verification.events import LedgerEvent
from tether.verification.ledger import Ledger


class OnBreach(StrEnum):
    DENY = "deny"
    APPROVE = "approve"


class AgentBudget(BaseModel):
    """Limits of one subject over a rolling window; 0 means no limit."""

    subject: str
    window_seconds: int
    max_tokens: int = 0
    max_cost_usd: float = 0.0
    on_breach: OnBreach = OnBreach.DENY
    approver_role: str = ""


class BudgetUsage(BaseModel):
    budget: AgentBudget
    tokens: int
    cost_usd: float
    open_reservations: int


class Reservation(BaseModel):
    key: str
    agent: str
    tokens: int
    cost_usd: float
    subjects: list[str] = Field(default_factory=list)
    forced: bool = False


class Breach(BaseModel):
    """Why a reservation was refused: the first budget it would overspend."""

    budget: AgentBudget
    used_tokens: int
    used_cost_usd: float
    requested_tokens: int
    requested_cost_usd: float
    approvers: list[str] = Field(default_factory=list)

    def describe(self) -> str:
        b = self.budget
        limits = []
        if b.max_tokens:
            limits.append(f"{self.used_tokens} of {b.max_tokens} tokens used")
        if b.max_cost_usd:
            limits.append(f"${self.used_cost_usd:.4f} of ${b.max_cost_usd:.4f} used")
        return (
            f"budget of {b.subject!r} over {b.window_seconds}s would be overspent "
            f"({', '.join(limits)}; this call may take {self.requested_tokens} tokens, "
            f"${self.requested_cost_usd:.4f})"
        )


class BudgetRow(Base):
    __tablename__ = "budgets"

    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    window_seconds: Mapped[int] = mapped_column(Integer)
    max_tokens: Mapped[int] = mapped_column(Integer, default=0)
    max_cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    on_breach: Mapped[str] = mapped_column(String(16))
    approver_role: Mapped[str] = mapped_column(String(255), default="")


class ReservationRow(Base):
    __tablename__ = "budget_reservations"

    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    agent: Mapped[str] = mapped_column(String(255))
    tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))
    """reserved | settled | released"""
    at: Mapped[float] = mapped_column(Float, index=True)
    """When reserved, seconds since the epoch: the rolling window counts from here."""
    forced: Mapped[int] = mapped_column(Integer, default=0)


_COUNTED = ("reserved", "settled")
_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_EPS = 1e-9


def parse_window(text: str) -> int:
    """'90s', '30m', '24h', '7d' or plain seconds → seconds; BudgetError when not."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) <= 0:
        raise BudgetError(
            f"window {text!r} is not a positive duration; write it like '90s', '30m', '24h' or '7d'"
        )
    return int(match.group(1)) * _UNIT[match.group(2)]


def _budget(row: BudgetRow) -> AgentBudget:
    return AgentBudget(
        subject=row.subject,
        window_seconds=row.window_seconds,
        max_tokens=row.max_tokens,
        max_cost_usd=row.max_cost_usd,
        on_breach=OnBreach(row.on_breach),
        approver_role=row.approver_role,
    )


class Budgets:
    """The budget tables. `roles_of(agent)` and `members(role)` come from the policy."""

    def __init__(
        self,
        engine: Engine,
        ledger: Ledger,
        *,
        roles_of: Callable[[str], Sequence[str]] = lambda agent: (),
        members: Callable[[str], Sequence[str]] = lambda role: (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.ledger = ledger
        self.roles_of = roles_of
        self.members = members
        self.clock = clock
        self._pg = engine.dialect.name == "postgresql"
        create_tables(engine)

    # -- management ----------------------------------------------------------------------

    def set(self, budget: AgentBudget, *, actor: str) -> AgentBudget:
        """Create or replace the budget of `budget.subject`; recorded as `budget.set`."""
        if not budget.subject.startswith(("agent:", "role:")):
            raise BudgetError(
                f"budget subject {budget.subject!r} must be an agent ('agent:ap-clerk') "
                "or a role ('role:ap-agent')"
            )
        if budget.window_seconds <= 0:
            raise BudgetError(f"window {budget.window_seconds!r} must be a positive number")
        if budget.max_tokens < 0 or budget.max_cost_usd < 0:
            raise BudgetError(
                f"limits must not be negative (tokens {budget.max_tokens!r}, cost "
                f"{budget.max_cost_usd!r})"
            )
        if not budget.max_tokens and not budget.max_cost_usd:
            raise BudgetError(
                f"budget of {budget.subject!r} limits nothing; give --max-tokens or --max-cost"
            )
        if budget.on_breach is OnBreach.APPROVE and not budget.approver_role.startswith("role:"):
            raise BudgetError(
                f"on-breach 'approve' needs an approver role like 'role:ap-approver', got "
                f"{budget.approver_role!r}"
            )
        with Session(self.engine) as session, session.begin():
            row = session.get(BudgetRow, budget.subject)
            if row is None:
                row = BudgetRow(subject=budget.subject)
                session.add(row)
            row.window_seconds = budget.window_seconds
            row.max_tokens = budget.max_tokens
            row.max_cost_usd = budget.max_cost_usd
            row.on_breach = budget.on_breach.value
            row.approver_role = budget.approver_role
        self._event("budget.set", budget.subject, actor, budget.model_dump(mode="json"))
        return budget

    def clear(self, subject: str, *, actor: str) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.get(BudgetRow, subject)
            if row is None:
                raise BudgetError(f"no budget for {subject!r}; see 'tether budget show'")
            session.delete(row)
        self._event("budget.cleared", subject, actor, {"subject": subject})

    def get(self, subject: str) -> AgentBudget | None:
        with Session(self.engine) as session:
            row = session.get(BudgetRow, subject)
            return None if row is None else _budget(row)

    def show(self, subject: str | None = None) -> list[BudgetUsage]:
        """Budgets (one, or all) with their usage in the current window."""
        stmt = select(BudgetRow).order_by(BudgetRow.subject)
        if subject is not None:
            stmt = stmt.where(BudgetRow.subject == subject)
        now = self.clock()
        with Session(self.engine) as session:
            found = [_budget(r) for r in session.execute(stmt).scalars()]
            if subject is not None and not found:
                raise BudgetError(f"no budget for {subject!r}; set one with 'tether budget set'")
            usage = []
            for b in found:
                tokens, cost = self._used(session, b, now)
                open_count = session.execute(
                    select(func.count())
                    .select_from(ReservationRow)
                    .where(
                        ReservationRow.subject == b.subject,
                        ReservationRow.state == "reserved",
                        ReservationRow.at >= now - b.window_seconds,
                    )
                ).scalar_one()
                usage.append(
                    BudgetUsage(
                        budget=b, tokens=tokens, cost_usd=cost, open_reservations=open_count
                    )
                )
        return usage

    # -- reservations --------------------------------------------------------------------

    def reserve(
        self, agent: str, tokens: int, cost_usd: float, key: str, *, force: bool = False
    ) -> Reservation | Breach:
        """Reserve a call's worst case against every budget of `agent`, or say which breaks."""
        subjects = sorted({agent, *self.roles_of(agent)})
        try:
            return self._reserve(agent, subjects, tokens, cost_usd, key, force)
        except IntegrityError:  # the same key reserved concurrently: read what won
            return self._reserve(agent, subjects, tokens, cost_usd, key, force)

    def _reserve(
        self, agent: str, subjects: list[str], tokens: int, cost: float, key: str, force: bool
    ) -> Reservation | Breach:
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            # SQLite: this transaction began IMMEDIATE, so it already holds the write lock.
            stmt = select(BudgetRow).where(BudgetRow.subject.in_(subjects))
            if self._pg:
                stmt = stmt.order_by(BudgetRow.subject).with_for_update()
            budgets = [_budget(r) for r in session.execute(stmt).scalars()]
            existing = {
                r.subject: r
                for r in session.execute(
                    select(ReservationRow).where(ReservationRow.key == key)
                ).scalars()
            }
            if existing and all(r.state in _COUNTED for r in existing.values()):
                first = next(iter(existing.values()))
                return Reservation(
                    key=key,
                    agent=first.agent,
                    tokens=first.tokens,
                    cost_usd=first.cost_usd,
                    subjects=sorted(existing),
                    forced=bool(first.forced),
                )
            for row in existing.values():  # released before: this attempt reserves anew
                row.state = "released"
            session.flush()
            if not force:
                for b in budgets:
                    used_tokens, used_cost = self._used(session, b, now)
                    over_tokens = b.max_tokens and used_tokens + tokens > b.max_tokens
                    over_cost = b.max_cost_usd and used_cost + cost > b.max_cost_usd + _EPS
                    if over_tokens or over_cost:
                        approvers = sorted(self.members(b.approver_role)) if b.approver_role else []
                        return Breach(
                            budget=b,
                            used_tokens=used_tokens,
                            used_cost_usd=used_cost,
                            requested_tokens=tokens,
                            requested_cost_usd=cost,
                            approvers=approvers,
                        )
            for subject in subjects:
                found = existing.get(subject)
                if found is None:
                    found = ReservationRow(key=key, subject=subject)
                    session.add(found)
                row = found
                row.agent, row.tokens, row.cost_usd = agent, tokens, cost
                row.state, row.at, row.forced = "reserved", now, int(force)
        return Reservation(
            key=key, agent=agent, tokens=tokens, cost_usd=cost, subjects=subjects, forced=force
        )

    def settle(self, key: str, tokens: int, cost_usd: float) -> None:
        """Replace a reservation's worst case with what the call used. Idempotent."""
        with Session(self.engine) as session, session.begin():
            for row in session.execute(
                select(ReservationRow).where(ReservationRow.key == key)
            ).scalars():
                row.tokens, row.cost_usd, row.state = tokens, cost_usd, "settled"

    def release(self, key: str) -> None:
        """Give an open reservation back (the call failed before using anything)."""
        with Session(self.engine) as session, session.begin():
            for row in session.execute(
                select(ReservationRow).where(
                    ReservationRow.key == key, ReservationRow.state == "reserved"
                )
            ).scalars():
                row.state = "released"

    def _used(self, session: Session, budget: AgentBudget, now: float) -> tuple[int, float]:
        tokens, cost = session.execute(
            select(
                func.coalesce(func.sum(ReservationRow.tokens), 0),
                func.coalesce(func.sum(ReservationRow.cost_usd), 0.0),
            ).where(
                ReservationRow.subject == budget.subject,
                ReservationRow.state.in_(_COUNTED),
                ReservationRow.at >= now - budget.window_seconds,
            )
        ).one()
        return int(tokens), float(cost)

    def _event(self, kind: str, subject: str, actor: str, payload: dict[str, JsonValue]) -> None:
        self.ledger.append(
            LedgerEvent(
                idempotency_key=f"{kind}:{subject}:{uuid.uuid4().hex}",
                kind=kind,
                agent=subject,
                actor=actor,
                outcome=kind.split(".")[1],
                payload=payload,
            )
        )
