"""The approvals store: open requests, so approvers can list them without asking Temporal.

The workflow is the authority on a request (its update validator decides); this table
is the index people read. Rows are written by activities, idempotently by request id.
"""

from __future__ import annotations

from sqlalchemy import Engine, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from tether.core.db import Base, create_tables, make_engine
from tether.errors import ApprovalError
from tether.governance.approvals import ApprovalStatus, PendingApproval


class ApprovalRow(Base):
    __tablename__ = "approvals"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    decided_by: Mapped[str] = mapped_column(String(255), default="")
    body: Mapped[str] = mapped_column(Text)


class ApprovalStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine)

    @classmethod
    def from_url(cls, url: str) -> ApprovalStore:
        return cls(make_engine(url))

    def open(self, pending: PendingApproval) -> None:
        """Record a pending request; recording it again changes nothing."""
        with Session(self.engine) as session, session.begin():
            if session.get(ApprovalRow, pending.request_id) is None:
                session.add(
                    ApprovalRow(
                        request_id=pending.request_id,
                        workflow_id=pending.workflow_id,
                        status=pending.status.value,
                        body=pending.model_dump_json(),
                    )
                )

    def close(self, request_id: str, status: ApprovalStatus, decided_by: str) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.get(ApprovalRow, request_id)
            if row is not None:
                row.status = status.value
                row.decided_by = decided_by

    def count_open(self, *, agent: str, excluding_workflow: str = "") -> int:
        """Pending requests of `agent` (other than those of one workflow)."""
        count = 0
        for pending in self.list(ApprovalStatus.PENDING):
            if pending.agent == agent and pending.workflow_id != excluding_workflow:
                count += 1
        return count

    def get(self, request_id: str) -> PendingApproval:
        """The request with this id; ApprovalError naming it when there is none."""
        with Session(self.engine) as session:
            row = session.get(ApprovalRow, request_id)
            if row is None:
                raise ApprovalError(
                    f"no approval request {request_id!r}; list open requests with "
                    "'tether approvals list'"
                )
            pending = PendingApproval.model_validate_json(row.body)
            return pending.model_copy(update={"status": ApprovalStatus(row.status)})

    def list(self, status: ApprovalStatus | None = ApprovalStatus.PENDING) -> list[PendingApproval]:
        stmt = select(ApprovalRow).order_by(ApprovalRow.request_id)
        if status is not None:
            stmt = stmt.where(ApprovalRow.status == status.value)
        with Session(self.engine) as session:
            return [
                PendingApproval.model_validate_json(r.body).model_copy(
                    update={"status": ApprovalStatus(r.status)}
                )
                for r in session.execute(stmt).scalars()
            ]
