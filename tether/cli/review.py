"""`tether review …`: list open review windows of notify-tier actions, and flag one."""

from __future__ import annotations

from typing import Annotated

import typer

from tether.cli.common import _run, _settings, _stores, emit_table, friendly, out
from tether.governance.feed import FeedStore
from tether.governance.reviews import ReviewStatus

review_app = typer.Typer(
    help="Review notify-tier actions: list open windows, flag one to undo it.",
    no_args_is_help=True,
)


@review_app.command("list")
@friendly
def review_list(
    all_windows: Annotated[bool, typer.Option("--all", help="Closed windows too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List open review windows (newest policy decisions a reviewer may still undo)."""
    ledger, _ = _stores(_settings())
    windows = FeedStore(ledger.engine).list_reviews(None if all_windows else ReviewStatus.OPEN)
    if as_json:
        out.print_json(data=[w.model_dump(mode="json") for w in windows])
        return
    emit_table(
        f"{len(windows)} review window(s)",
        ("workflow", "step", "action", "resource", "undo", "reviewers", "until", "status"),
        [
            (
                w.workflow_id,
                str(w.step),
                w.action,
                w.resource,
                w.compensation or "-",
                w.reviewer_role or "anyone but an agent",
                w.until.isoformat(timespec="seconds"),
                w.status.value + (f" by {w.flagged_by}" if w.flagged_by else ""),
            )
            for w in windows
        ],
        ids=("workflow",),
    )


@review_app.command("flag")
@friendly
def review_flag(
    workflow_id: Annotated[str, typer.Argument(help="The workflow that took the action.")],
    step: Annotated[int, typer.Argument(help="The step, as `tether review list` shows it.")],
    as_user: Annotated[str, typer.Option("--as", help="The reviewer, e.g. user:alice.")],
    reason: Annotated[str, typer.Option(help="Why; recorded in the ledger.")] = "",
) -> None:
    """Flag a notify-tier action within its window: its declared compensation runs."""
    from tether.runtime.client import connect
    from tether.runtime.review import flag_review

    settings = _settings()
    ledger, _ = _stores(settings)
    feed = FeedStore(ledger.engine)

    async def go() -> None:
        client = await connect(settings)
        outcome = await flag_review(
            client, feed, ledger, workflow_id, step, reviewer=as_user, reason=reason
        )
        out.print(f"{outcome.review_id}: {outcome.status.value} by {outcome.reviewer}")
        if outcome.detail:
            out.print(outcome.detail)

    _run(go())
