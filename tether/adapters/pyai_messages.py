"""pydantic-ai model requests as Tether gateway calls, and gateway answers as responses.

A request's messages become one prompt (each part a line, tool calls and returns named),
its function and output tools the gateway's `ModelTool`s (OpenAI function calling); the
gateway's tool calls and text become the response's parts, its usage the response's.
Pure and deterministic: tool call ids are derived from the step, never random.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ModelResponsePart,
    RetryPromptPart,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestContext
from pydantic_ai.usage import RequestUsage

from tether.activities.payloads import ModelCallInput, ModelCallResult, ModelTool, StepRef


def _text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, default=str)


def render_prompt(messages: list[ModelMessage]) -> str:
    """The conversation as lines: `system:`, `user:`, `assistant:`, calls and returns."""
    lines: list[str] = []
    for message in messages:
        if isinstance(message, ModelRequest):
            if message.instructions:
                lines.append(f"system: {message.instructions}")
            for part in message.parts:
                if isinstance(part, SystemPromptPart):
                    lines.append(f"system: {part.content}")
                elif isinstance(part, UserPromptPart):
                    lines.append(f"user: {_text(part.content)}")
                elif isinstance(part, ToolReturnPart):
                    lines.append(f"tool {part.tool_name} -> {_text(part.content)}")
                elif isinstance(part, RetryPromptPart):
                    lines.append(f"retry: {part.model_response()}")
        else:
            for rpart in message.parts:
                if isinstance(rpart, TextPart):
                    lines.append(f"assistant: {rpart.content}")
                elif isinstance(rpart, ToolCallPart):
                    lines.append(f"assistant calls {rpart.tool_name}({rpart.args_as_json_str()})")
    return "\n".join(lines)


def gateway_request(
    ref: StepRef,
    request_context: ModelRequestContext,
    *,
    task: str,
    sensitivity: str,
    max_output_tokens: int,
) -> ModelCallInput:
    params = request_context.model_request_parameters
    offered = [*params.function_tools, *params.output_tools]
    return ModelCallInput(
        ref=ref,
        task=task,
        prompt=render_prompt(request_context.messages),
        sensitivity=sensitivity,
        max_output_tokens=max_output_tokens,
        tools=[
            ModelTool(
                name=t.name,
                description=t.description or "",
                parameters=t.parameters_json_schema,
            )
            for t in offered
        ],
    )


def gateway_response(result: ModelCallResult, timestamp: datetime) -> ModelResponse:
    parts: list[ModelResponsePart] = [
        ToolCallPart(
            tool_name=call.name,
            args=dict(call.arguments),
            tool_call_id=call.id or f"{result.call_id}-{i}",
        )
        for i, call in enumerate(result.tool_calls)
    ]
    if not parts:
        parts.append(TextPart(content=result.text))
    return ModelResponse(
        parts=parts,
        usage=RequestUsage(input_tokens=result.input_tokens, output_tokens=result.output_tokens),
        model_name=result.model,
        provider_name=result.provider,
        provider_response_id=result.call_id,
        timestamp=timestamp,
    )
