"""Live health of one model endpoint: a circuit breaker, a Retry-After cool-down, latency.

    closed ──(N consecutive failures)──▶ open ──(reset time passes)──▶ half-open
      ▲                                    ▲                              │ one probe
      └──────────────(probe succeeds)──────┴────────(probe fails)─────────┘

A breaker is per worker process (each worker learns an endpoint's health on its own) and
used from the worker's event loop only, so it needs no lock. `clock` is injectable so a
unit test can move time without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class EndpointHealth:
    """Breaker state, cool-down and a smoothed latency of one endpoint."""

    def __init__(
        self,
        failures_to_open: int = 3,
        reset_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures_to_open = failures_to_open
        self.reset_seconds = reset_seconds
        self.clock = clock
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self.probing = False
        """Half-open: the one probe call is in flight; others are refused until it ends."""
        self.cooling_until = 0.0
        """A 429's Retry-After: no call goes to this endpoint before then."""
        self.latency_ms: float | None = None
        """Exponentially weighted latency of successful calls; None until the first one."""
        self.successes = 0
        self.failures = 0

    def refusal(self) -> str:
        """ "" when a call may go to this endpoint now (taking the probe slot when
        half-open); otherwise why not: `breaker_open` or `cooling_down`."""
        now = self.clock()
        if now < self.cooling_until:
            return "cooling_down"
        if self.state is BreakerState.OPEN:
            if now - self.opened_at < self.reset_seconds:
                return "breaker_open"
            self.state = BreakerState.HALF_OPEN
            self.probing = False
        if self.state is BreakerState.HALF_OPEN:
            if self.probing:
                return "breaker_open"
            self.probing = True
        return ""

    def cooling_remaining(self) -> float:
        return max(0.0, self.cooling_until - self.clock())

    def available_in(self) -> float:
        """Seconds until this endpoint may take a call again: the rest of its Retry-After
        and, while open, of its reset time (then its half-open probe goes through); while
        its probe is in flight, a second (or the reset time, if shorter): the probe's answer
        comes soon. 0 when it takes calls now."""
        now = self.clock()
        wait = max(0.0, self.cooling_until - now)
        if self.state is BreakerState.OPEN:
            wait = max(wait, self.opened_at + self.reset_seconds - now)
        elif self.state is BreakerState.HALF_OPEN and self.probing:
            wait = max(wait, min(1.0, self.reset_seconds))
        return wait

    def succeeded(self, latency_ms: float) -> None:
        self.successes += 1
        self.consecutive_failures = 0
        self.state = BreakerState.CLOSED
        self.probing = False
        self.latency_ms = (
            latency_ms if self.latency_ms is None else 0.8 * self.latency_ms + 0.2 * latency_ms
        )

    def failed(self, *, retry_after: float = 0.0, open_now: bool = False) -> None:
        """Count a failure; `open_now` opens at once (bad credentials do not heal by retry)."""
        self.failures += 1
        self.consecutive_failures += 1
        now = self.clock()
        if retry_after > 0:
            self.cooling_until = max(self.cooling_until, now + retry_after)
        if (
            open_now
            or self.state is BreakerState.HALF_OPEN
            or self.consecutive_failures >= self.failures_to_open
        ):
            self.state = BreakerState.OPEN
            self.opened_at = now
        self.probing = False

    def release_probe(self) -> None:
        """The probe slot was taken but no call was made: give it back."""
        self.probing = False
