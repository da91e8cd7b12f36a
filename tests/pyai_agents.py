"""pydantic-ai agents of the adapter's tests, built once at import (outside any workflow,
as pydantic-ai's Temporal integration requires); `tests.pyai_app` runs them."""

from __future__ import annotations

from ap.bank import PaymentTools
from ap.pyai_agent import clerk_model
from pydantic_ai import Agent, Tool
from pydantic_ai.durable_exec.temporal import TemporalDurability
from pydantic_ai.models.function import FunctionModel

from tether.adapters.pydantic_ai import TetherGovernance, governed_toolset

careful_clerk = Agent(
    FunctionModel(clerk_model, model_name="careful-clerk"),
    name="careful_clerk",
    toolsets=[
        governed_toolset(
            Tool(PaymentTools.pay_vendor, requires_approval=True),
            PaymentTools.update_bank_details,
            approver="role:ap-approver",
        )
    ],
    capabilities=[TetherGovernance(), TemporalDurability()],
)
"""The clerk, with pydantic-ai's own `requires_approval` on its payments."""

gateway_clerk = Agent(
    FunctionModel(clerk_model, model_name="never-called"),
    name="gateway_clerk",
    toolsets=[governed_toolset(PaymentTools.pay_vendor)],
    capabilities=[
        TetherGovernance(gateway=True, task="agent", sensitivity="confidential"),
        TemporalDurability(),
    ],
)
"""The clerk whose model requests go through Tether's gateway, not its own model."""
