"""The notification feed and the review-window index: tables people (and the console) read.

`notifications` holds one row per notify-tier action that the 'feed' sink was told of;
`reviews` indexes review windows, so `tether review list` needs no Temporal query. The
review workflow is the authority on a window (its update validator decides); these rows
are what people read. Writes are idempotent: by notification key and by review id.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pydantic import BaseModel, JsonValue
from sqlalchemy import Engine, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from tether.core.db import Base, create_tables, make_engine
from tether.errors import ReviewError
from tether.governance.reviews import ReviewStatus, ReviewWindow


class Notification(BaseModel):
    """One notify-tier action as the feed shows it; also the webhook's JSON body."""

    key: str
    workflow_id: str
    run_id: str
    step: int
    agent: str
    action: str
    resource: str
    tier: str
    rule: str
    policy_version: str
    result_digest: str
    review_id: str = ""
    review_until: datetime | None = None
    notified_at: datetime

    def body(self) -> dict[str, JsonValue]:
        """The webhook's JSON document."""
        out: dict[str, JsonValue] = self.model_dump(mode="json")
        return out


class NotificationRow(Base):
    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(512), unique=True)
    workflow_id: Mapped[str] = mapped_column(String(255), index=True)
    notified_at: Mapped[str] = mapped_column(String(40), index=True)
    body: Mapped[str] = mapped_column(Text)


class ReviewRow(Base):
    __tablename__ = "reviews"

    review_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(255), index=True)
    step: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(24), index=True)
    flagged_by: Mapped[str] = mapped_column(String(255), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text)


class FeedStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine)

    @classmethod
    def from_url(cls, url: str) -> FeedStore:
        return cls(make_engine(url))

    # -- feed -------------------------------------------------------------------------

    def add(self, note: Notification) -> None:
        """Add one notification; adding the same key again changes nothing."""
        with Session(self.engine) as session, session.begin():
            exists = session.execute(
                select(NotificationRow.id).where(NotificationRow.key == note.key)
            ).first()
            if exists is None:
                session.add(
                    NotificationRow(
                        key=note.key,
                        workflow_id=note.workflow_id,
                        notified_at=note.notified_at.astimezone(UTC).isoformat(),
                        body=note.model_dump_json(),
                    )
                )

    def list_feed(self, limit: int = 100, workflow_id: str | None = None) -> list[Notification]:
        """The newest notifications first."""
        stmt = select(NotificationRow.body).order_by(NotificationRow.id.desc()).limit(limit)
        if workflow_id is not None:
            stmt = stmt.where(NotificationRow.workflow_id == workflow_id)
        with Session(self.engine) as session:
            return [Notification.model_validate_json(b) for b in session.execute(stmt).scalars()]

    # -- review windows ---------------------------------------------------------------

    def open_review(self, window: ReviewWindow) -> None:
        """Index an open window; indexing it again changes nothing."""
        with Session(self.engine) as session, session.begin():
            if session.get(ReviewRow, window.review_id) is None:
                session.add(
                    ReviewRow(
                        review_id=window.review_id,
                        workflow_id=window.workflow_id,
                        step=window.step,
                        status=window.status.value,
                        body=window.model_dump_json(),
                    )
                )

    def close_review(
        self, review_id: str, status: ReviewStatus, flagged_by: str = "", reason: str = ""
    ) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.get(ReviewRow, review_id)
            if row is not None:
                row.status = status.value
                row.flagged_by = flagged_by
                row.reason = reason

    def get_review(self, review_id: str) -> ReviewWindow:
        """The window with this id; ReviewError naming it when there is none."""
        with Session(self.engine) as session:
            row = session.get(ReviewRow, review_id)
            if row is None:
                raise ReviewError(
                    f"no review window {review_id!r}; list open windows with 'tether review list'"
                )
            return _window(row)

    def list_reviews(self, status: ReviewStatus | None = ReviewStatus.OPEN) -> list[ReviewWindow]:
        stmt = select(ReviewRow).order_by(ReviewRow.review_id)
        if status is not None:
            stmt = stmt.where(ReviewRow.status == status.value)
        with Session(self.engine) as session:
            return [_window(r) for r in session.execute(stmt).scalars()]


def _window(row: ReviewRow) -> ReviewWindow:
    window = ReviewWindow.model_validate(json.loads(row.body))
    return window.model_copy(
        update={
            "status": ReviewStatus(row.status),
            "flagged_by": row.flagged_by,
            "reason": row.reason,
        }
    )


def list_feed(engine: Engine, limit: int = 100) -> list[Notification]:
    """The newest notifications first (what the console's feed shows)."""
    return FeedStore(engine).list_feed(limit)
