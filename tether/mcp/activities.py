"""`McpActivities`: the one activity class for MCP servers, built in the worker.

- `list_mcp_tools` reads the declared servers' tools and applies `[mcp.servers]` (action
  renames, resource templates, idempotency): the declarations land in workflow history.
- `call_mcp_tool` runs one governed call. Like a native tool (`activities.tools`) it
  first re-derives the action and resource from the tool's declaration and the arguments
  and refuses a call that claims others, then checks the ledger's decision for the step
  (the same arguments, never a denied step, a signed approval for an approve-tier one),
  records `tool.dispatched` before a side effect, sends the step's idempotency key in the
  request's `_meta` (`tether/idempotency_key`), and records `tool.executed` with the
  result's digest (the whole result in the content store).

Retries: Temporal's. An error the server reports (`isError`) is an answer, recorded and
returned; a refusal is non-retryable (`ToolRefused`); a connection failure is retried.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import JsonValue
from temporalio import activity
from temporalio.exceptions import ApplicationError

from tether.activities.dispatch import COVERED
from tether.activities.payloads import ToolCall
from tether.activities.tools import ToolActivities
from tether.errors import ErrorType
from tether.governance.kill import KillSwitches
from tether.governance.reload import PolicyHolder
from tether.mcp.catalog import read_catalog
from tether.mcp.client import McpClients, McpServerUnknown
from tether.mcp.payloads import (
    IDEMPOTENCY_META,
    RESULT_LIMIT,
    STEP_META,
    McpCatalog,
    McpListInput,
    McpToolDecl,
    McpToolResult,
)
from tether.mcp.steps import spec_for
from tether.mcp.templates import McpArgumentsInvalid, render_resource
from tether.verification.events import digest
from tether.verification.ledger import Ledger

HEARTBEAT = timedelta(seconds=5)


class McpActivities:
    """Activities over the `McpClients` of this worker (see the module)."""

    def __init__(
        self,
        clients: McpClients,
        ledger: Ledger,
        trusted_keys: list[str],
        policy: PolicyHolder | None = None,
        kills: KillSwitches | None = None,
    ) -> None:
        self.clients = clients
        self.ledger = ledger
        # The same backstop as a Python tool's: coverage, then the re-checks at dispatch.
        self._guard = ToolActivities(ledger, [], trusted_keys, policy=policy, kills=kills)
        self._known: dict[str, McpToolDecl] = {}

    async def catalog(self, servers: list[str]) -> McpCatalog:
        found = await read_catalog(self.clients, servers)
        self._known.update({t.name: t for t in found.tools})
        return found

    @activity.defn(name="list_mcp_tools")
    async def list_mcp_tools(self, inp: McpListInput) -> McpCatalog:
        try:
            return await self.catalog(inp.servers)
        except McpServerUnknown as exc:
            raise ApplicationError(
                str(exc), type=ErrorType.MCP_SERVER_UNKNOWN, non_retryable=True
            ) from None

    async def _declaration(self, name: str) -> McpToolDecl:
        if name not in self._known:
            server = name.split(".")[1] if name.count(".") >= 2 else ""
            await self.catalog([server])
        decl = self._known.get(name)
        if decl is None:
            raise ApplicationError(
                f"MCP tool {name!r} is not offered by its server now; check the server or "
                "[mcp.servers] only",
                type=ErrorType.TOOL_REFUSED,
                non_retryable=True,
            )
        return decl

    @activity.defn(name="call_mcp_tool")
    async def call_mcp_tool(self, call: ToolCall) -> McpToolResult:
        try:
            decl = await self._declaration(call.tool)
        except McpServerUnknown as exc:
            raise ApplicationError(
                str(exc), type=ErrorType.MCP_SERVER_UNKNOWN, non_retryable=True
            ) from None
        attempt = activity.info().attempt
        if call.record:
            refusal = await asyncio.to_thread(self._guard._authorise, spec_for(decl), call)
            problem = self._recheck(decl, call) or (refusal.why if refusal else "")
            if problem:
                info = activity.info()
                kind = f"tool.refused.{info.workflow_run_id}.{info.activity_id}"
                check = refusal.check if refusal else COVERED
                why: dict[str, JsonValue] = {"why": problem, "check": check}
                await asyncio.to_thread(self._record, call, kind, "refused", why)
                if check != COVERED and refusal is not None:  # a re-check at dispatch
                    raise ApplicationError(
                        problem,
                        check,
                        refusal.engaged_by,
                        type=ErrorType.DISPATCH_REFUSED,
                        non_retryable=True,
                    )
                raise ApplicationError(problem, type=ErrorType.TOOL_REFUSED, non_retryable=True)
            if decl.side_effect:
                await asyncio.to_thread(
                    self._record, call, f"tool.dispatched.{attempt}", "dispatched", {}
                )
        meta = {IDEMPOTENCY_META: call.ref.effect_key(), STEP_META: call.ref.key("step")}
        beat = asyncio.create_task(_heartbeat())
        try:
            outcome = await self.clients.call(
                decl.server, decl.tool, call.args, meta, decl.timeout_seconds
            )
        except Exception as exc:
            if call.record:
                failure: dict[str, JsonValue] = {"error": repr(exc)[:1000], "attempt": attempt}
                await asyncio.to_thread(
                    self._record, call, f"tool.failed.{attempt}", "failed", failure
                )
            raise
        finally:
            beat.cancel()
        whole: dict[str, JsonValue] = {"text": outcome.text, "structured": outcome.structured}
        structured = outcome.structured
        cut = len(outcome.text) > RESULT_LIMIT
        if structured is not None and len(str(structured)) > RESULT_LIMIT:
            structured, cut = None, True
        result = McpToolResult(
            server=decl.server,
            tool=decl.tool,
            is_error=outcome.is_error,
            text=outcome.text[:RESULT_LIMIT],
            structured=structured,
            truncated=cut,
            content_digest=digest(whole),
        )
        if call.record:
            done: dict[str, JsonValue] = {
                "result_digest": digest(result.model_dump(mode="json")),
                "content_digest": result.content_digest,
                "attempt": attempt,
                "mcp_error": outcome.is_error,
            }
            await asyncio.to_thread(
                self._record,
                call,
                "tool.executed",
                "error" if outcome.is_error else "succeeded",
                done,
                [call.args, whole],
            )
        return result

    def _recheck(self, decl: McpToolDecl, call: ToolCall) -> str:
        """Empty when the call claims the action and resource its declaration derives."""
        try:
            resource = render_resource(decl.resource, call.args)
        except McpArgumentsInvalid as exc:
            return str(exc)
        if (call.action, call.resource) == (decl.action, resource):
            return ""
        return (
            f"MCP tool {decl.name!r} is declared as {decl.action!r} on {resource!r}; the call "
            f"claims {call.action!r} on {call.resource!r}; call it through call_mcp_tool()"
        )

    def _record(
        self,
        call: ToolCall,
        kind: str,
        outcome: str,
        payload: dict[str, JsonValue],
        content: list[JsonValue] | None = None,
    ) -> None:
        self._guard._record(call, kind, outcome, {"mcp": True, **payload}, content or [])


async def _heartbeat() -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT.total_seconds() / 3)
