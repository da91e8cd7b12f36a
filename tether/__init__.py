"""Tether: agent orchestration and governance on Temporal — durable, bounded, evidenced.

This module is the public API: everything an author imports comes from here (and the
test kit from `tether.testing`). Every other module is internal and may change.

    from tether import AgentWorkflow, tool, tool_context

Names load on first use, so `import tether.errors` (say, in a plain library) does not
pull in the Temporal SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.core.lazy import lazy_exports

if TYPE_CHECKING:
    from tether.activities.tools import (
        ToolContext as ToolContext,
    )
    from tether.activities.tools import (
        tool as tool,
    )
    from tether.activities.tools import (
        tool_context as tool_context,
    )
    from tether.core.config import (
        Settings as Settings,
    )
    from tether.core.config import (
        load_settings as load_settings,
    )
    from tether.errors import (
        ApprovalError as ApprovalError,
    )
    from tether.errors import (
        ErrorType as ErrorType,
    )
    from tether.errors import (
        ReviewError as ReviewError,
    )
    from tether.errors import (
        TetherError as TetherError,
    )
    from tether.runtime.app import (
        App as App,
    )
    from tether.runtime.app import (
        AppContext as AppContext,
    )
    from tether.runtime.app import (
        load_app as load_app,
    )
    from tether.runtime.client import (
        connect as connect,
    )
    from tether.runtime.client import (
        run_client as run_client,
    )
    from tether.runtime.client import (
        start_task as start_task,
    )
    from tether.runtime.plugin import (
        TetherPlugin as TetherPlugin,
    )
    from tether.worker import (
        Runtime as Runtime,
    )
    from tether.worker import (
        build_worker as build_worker,
    )
    from tether.worker import (
        run_worker as run_worker,
    )
    from tether.workflows.agent import (
        AgentStatus as AgentStatus,
    )
    from tether.workflows.agent import (
        AgentWorkflow as AgentWorkflow,
    )
    from tether.workflows.agent import (
        Budget as Budget,
    )
    from tether.workflows.agent import (
        Usage as Usage,
    )
    from tether.workflows.agent_loop import (
        AgentLoopInput as AgentLoopInput,
    )
    from tether.workflows.agent_loop import (
        AgentLoopResult as AgentLoopResult,
    )
    from tether.workflows.agent_loop import (
        AgentLoopWorkflow as AgentLoopWorkflow,
    )
    from tether.workflows.errors import (
        ActionAmbiguous as ActionAmbiguous,
    )
    from tether.workflows.errors import (
        ActionDenied as ActionDenied,
    )
    from tether.workflows.errors import (
        ActionHalted as ActionHalted,
    )
    from tether.workflows.errors import (
        ActionMisdeclared as ActionMisdeclared,
    )
    from tether.workflows.errors import (
        ActionRejected as ActionRejected,
    )
    from tether.workflows.errors import (
        BudgetExceeded as BudgetExceeded,
    )
    from tether.workflows.errors import (
        ModelOutputInvalid as ModelOutputInvalid,
    )

_EXPORTS = {
    # authoring
    "AgentWorkflow": "tether.workflows.agent",
    "AgentStatus": "tether.workflows.agent",
    "Budget": "tether.workflows.agent",
    "Usage": "tether.workflows.agent",
    "AgentLoopWorkflow": "tether.workflows.agent_loop",
    "AgentLoopInput": "tether.workflows.agent_loop",
    "AgentLoopResult": "tether.workflows.agent_loop",
    "tool": "tether.activities.tools",
    "tool_context": "tether.activities.tools",
    "ToolContext": "tether.activities.tools",
    # errors authors catch
    "TetherError": "tether.errors",
    "ApprovalError": "tether.errors",
    "ReviewError": "tether.errors",
    "ErrorType": "tether.errors",
    "ActionDenied": "tether.workflows.errors",
    "ActionRejected": "tether.workflows.errors",
    "ActionHalted": "tether.workflows.errors",
    "ActionMisdeclared": "tether.workflows.errors",
    "ActionAmbiguous": "tether.workflows.errors",
    "BudgetExceeded": "tether.workflows.errors",
    "ModelOutputInvalid": "tether.workflows.errors",
    # running it
    "Settings": "tether.core.config",
    "load_settings": "tether.core.config",
    "App": "tether.runtime.app",
    "AppContext": "tether.runtime.app",
    "load_app": "tether.runtime.app",
    "TetherPlugin": "tether.runtime.plugin",
    "connect": "tether.runtime.client",
    "start_task": "tether.runtime.client",
    "run_client": "tether.runtime.client",
    "Runtime": "tether.worker",
    "build_worker": "tether.worker",
    "run_worker": "tether.worker",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
