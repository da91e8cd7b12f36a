"""`RunScripts`: the test worker's model provider, which answers a run from its own script.

A test scripts the model for one run (`Kit.script_model`), not for the whole worker: the
kit files a `Script` under the run's workflow id here, and the worker's model activity
asks this provider, which looks the call's workflow id up (`request.ref.workflow_id`,
the id of the workflow that made the call) and answers from that run's script. A call
whose run has no script, or whose script has no entry fitting the call (task and
match), goes to the provider the worker would have used anyway (the project's model
script, or its configured endpoints), so a run's script may override one task only.

Worker-side and deterministic for the workflow: the workflow never sees the registry,
only the answers, which land in history like any model call's; replay never asks again.
Nothing crosses the wire but the usual `ModelCallInput` and `ModelCallResult`.
"""

from __future__ import annotations

from collections.abc import Sequence

from tether.activities.models import ModelProvider, Pricing, Script, ScriptedProvider, ScriptEntry
from tether.activities.payloads import ModelCallInput, ModelCallResult
from tether.errors import TetherError


class RunScripts:
    """A `ModelProvider`: per-run scripts first, then `fallback` (see the module)."""

    def __init__(self, fallback: ModelProvider) -> None:
        self.fallback = fallback
        self.name = fallback.name
        self.pricing: Pricing = getattr(fallback, "pricing", None) or Pricing()
        self._runs: dict[str, ScriptedProvider] = {}

    def script(self, workflow_id: str, entries: Sequence[ScriptEntry], *, model: str) -> None:
        """Answer the model calls of `workflow_id` from `entries` (before the worker's own
        script); scripting the same run again adds entries after the earlier ones."""
        if not workflow_id:
            raise TetherError(
                f"cannot script the model of workflow id {workflow_id!r}; pass the run's "
                "handle or its id"
            )
        known = self._runs.get(workflow_id)
        earlier = known.script.entries if known is not None else []
        self._runs[workflow_id] = ScriptedProvider(
            Script(model=model, entries=[*earlier, *entries], pricing=self.pricing)
        )

    def _run_provider(self, request: ModelCallInput) -> ScriptedProvider | None:
        provider = self._runs.get(request.ref.workflow_id)
        if provider is None or provider.entry_for(request) is None:
            return None
        return provider

    def worst_case_pricing(self, request: ModelCallInput) -> Pricing:
        """The prices a budget reserves at: the run's script's, else the fallback's."""
        if self._run_provider(request) is not None:
            return self.pricing
        worst = getattr(self.fallback, "worst_case_pricing", None)
        priced: Pricing = worst(request) if callable(worst) else self.pricing
        return priced

    async def complete(self, request: ModelCallInput) -> ModelCallResult:
        provider = self._run_provider(request)
        if provider is not None:
            return await provider.complete(request)
        return await self.fallback.complete(request)

    async def aclose(self) -> None:
        """Close the fallback's connections (the gateway's), if it holds any."""
        close = getattr(self.fallback, "aclose", None)
        if close is not None:
            await close()
