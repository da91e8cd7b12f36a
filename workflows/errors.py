"""Errors a governed step raises into the author's workflow: `ApplicationError`
subclasses whose `type` is an `ErrorType` value (`tether.errors` draws the whole tree).

All are non-retryable: uncaught, they fail the run with their type; caught, the author
decides what the agent does next.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from tether.errors import ErrorType


class ActionDenied(ApplicationError):
    def __init__(self, message: str, rule: str = "") -> None:
        super().__init__(message, rule, type=ErrorType.ACTION_DENIED, non_retryable=True)
        self.rule = rule


class ActionMisdeclared(ActionDenied):
    """`act()` was given an action or resource the tool does not declare, or a context
    that contradicts its arguments: refused (and recorded), never used. A subclass of
    ActionDenied, so code that handles denials handles it; `rule` is `misdeclared-step`."""

    def __init__(self, message: str, rule: str = "") -> None:
        ApplicationError.__init__(
            self, message, rule, type=ErrorType.ACTION_MISDECLARED, non_retryable=True
        )
        self.rule = rule


class ActionRejected(ApplicationError):
    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message, reason, type=ErrorType.ACTION_REJECTED, non_retryable=True)
        self.reason = reason


class ActionHalted(ActionRejected):
    """A kill switch halted the step's approval (or the step before it asked). A subclass
    of ActionRejected, so code written before it still catches it; `engaged_by` names who
    engaged the switch and `reason` is the switch's."""

    def __init__(self, message: str, reason: str = "", engaged_by: str = "") -> None:
        ApplicationError.__init__(
            self, message, reason, engaged_by, type=ErrorType.ACTION_HALTED, non_retryable=True
        )
        self.reason = reason
        self.engaged_by = engaged_by


class ActionAmbiguous(ApplicationError):
    """Never retried blindly: a person must find out whether the effect happened."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type=ErrorType.ACTION_AMBIGUOUS, non_retryable=True)


class BudgetExceeded(ApplicationError):
    def __init__(self, message: str) -> None:
        super().__init__(message, type=ErrorType.BUDGET_EXCEEDED, non_retryable=True)


class ModelOutputInvalid(ApplicationError):
    def __init__(self, message: str) -> None:
        super().__init__(message, type=ErrorType.MODEL_OUTPUT_INVALID, non_retryable=True)
