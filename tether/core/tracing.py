"""Temporal's tracing interceptor, with one trace per workflow run even when the starter
did not trace.

A workflow started by a client without the interceptor (the CLI, the console, a schedule)
carries no trace context, and Temporal's interceptor would then begin a new trace at every
workflow span. Here such a run gets a parent derived from its workflow id and run id: the
same on every worker and on every replay (so it is deterministic), and one trace holds the
whole run — workflow, activities, model and tool calls. The derived parent is remote: no
span of that id is ever exported.
"""

from __future__ import annotations

import hashlib

import temporalio.worker
import temporalio.workflow
from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor

Carrier = dict[str, str | list[str]]


def run_traceparent(workflow_id: str, run_id: str) -> str:
    """A W3C traceparent (sampled) derived from one workflow run."""
    h = hashlib.sha256(f"{workflow_id}\x00{run_id}".encode()).hexdigest()
    return f"00-{h[:32]}-{h[32:48]}-01"


class _RunTracedInbound(TracingWorkflowInboundInterceptor):
    def _load_workflow_context_carrier(self) -> Carrier | None:
        carrier: Carrier | None = super()._load_workflow_context_carrier()
        if carrier:
            return carrier
        info = temporalio.workflow.info()
        self._workflow_context_carrier = {
            "traceparent": run_traceparent(info.workflow_id, info.run_id)
        }
        return self._workflow_context_carrier


class RunTracingInterceptor(TracingInterceptor):
    """`TracingInterceptor` whose untraced workflow runs still make one trace each."""

    def workflow_interceptor_class(
        self, input: temporalio.worker.WorkflowInterceptorClassInput
    ) -> type[TracingWorkflowInboundInterceptor]:
        super().workflow_interceptor_class(input)
        return _RunTracedInbound
