"""`PlainSteps`: the workflow benchmark's plain-Temporal peer — no Tether at all.

The same three no-op steps as `GovernedSteps` (`bench.workflows`), written as a user of
plain Temporal would: a sandboxed workflow calling an async activity per step, on a
client and worker with pydantic's data converter and Temporal's default sandbox, no
plugin, no interceptor, no ledger. Deterministic.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from ap.bank import BankChange, BankChangeResult

    from bench.workflows import StepsInput

PLAIN = "PlainSteps"


@activity.defn(name="bench.plain_touch")
async def plain_touch(args: BankChange) -> BankChangeResult:
    """The no-op of `PaymentTools.touch`, as a plain activity."""
    return BankChangeResult(vendor=args.vendor, changed=False)


@workflow.defn(name=PLAIN)
class PlainStepsWorkflow:
    @workflow.run
    async def run(self, inp: StepsInput) -> int:
        for i in range(inp.steps):
            await workflow.execute_activity(
                plain_touch,
                BankChange(vendor=inp.vendor, new_account=str(i)),
                start_to_close_timeout=timedelta(seconds=60),
            )
        return inp.steps
