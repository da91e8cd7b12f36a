"""Tether's test kit for workflow authors: a pytest plugin and the `Kit` it hands tests.

    from tether.testing import Kit, ScriptEntry

    async def test_small_refund_runs(tether_kit: Kit) -> None:
        result = await tether_kit.run(RefundWorkflow.run, RefundInput(...), as_user="user:dana")
        assert result.status == "refunded"

The fixtures (`tether_kit`, `tether_worker`, `tether_env`, ...) come from
`tether.testing.plugin`, which pytest loads by itself once Tether is installed. Names
load on first use, so the plugin costs a project's test run nothing until a test asks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.core.lazy import lazy_exports

if TYPE_CHECKING:
    from tether.activities.models import ScriptEntry as ScriptEntry
    from tether.testing.kit import Kit as Kit
    from tether.testing.project import find_config as find_config
    from tether.testing.project import project_settings as project_settings
    from tether.testing.project import running_kit as running_kit
    from tether.testing.scripts import RunScripts as RunScripts

_EXPORTS = {
    "Kit": "tether.testing.kit",
    "ScriptEntry": "tether.activities.models",
    "RunScripts": "tether.testing.scripts",
    "find_config": "tether.testing.project",
    "project_settings": "tether.testing.project",
    "running_kit": "tether.testing.project",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
