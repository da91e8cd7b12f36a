"""A cheap read-only tool for long agent loops: counting costs no bank a payment."""

from __future__ import annotations

from pydantic import BaseModel

from tether import tool


class Tally(BaseModel):
    counter: str
    n: int = 1


class Count(BaseModel):
    counter: str
    n: int


class CounterTools:
    @tool(action="counter.add", resource="counter/{counter}")
    async def add_count(self, args: Tally) -> Count:
        return Count(counter=args.counter, n=args.n)
