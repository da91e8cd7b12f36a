"""A local OpenAI-compatible chat completions server with fault injection (loopback only).

One server hosts many logical endpoints: `http://127.0.0.1:PORT/ep/NAME/v1` is endpoint
NAME. Each request is answered by the next fault of that endpoint's plan:

    ok             a completion: {"echo": <first 40 chars of the prompt>, "endpoint": NAME}
    latency:MS     the same, after MS milliseconds
    429 / 429:S    Too Many Requests, without / with `Retry-After: S`
    500 502 503    server errors;  400 401 403  client errors
    reset          the connection is aborted after the request is read
    stall          headers and a first chunk, then nothing (until the client gives up)
    invalid_json   200 with a body that is not JSON
    schema         a completion whose content violates the schema ({"echo": 5})
    garbage        a completion whose content is not JSON at all
    truncated      finish_reason "length" and the content cut in half
    empty_choices  {"choices": []}
    unknown_tool   a tool call to a tool nobody offered
    no_usage       a completion without `usage`
    huge           200 streaming 50 MB (chunked, no length): a reader must abandon it
    gzip           a completion, gzip-compressed when the request's Accept-Encoding allows

A plan is a list consumed in order (then `ok`), or a chaos rate: each request fails with
probability `rate`, the fault drawn from a list (seeded: reproducible). An endpoint named
`always-FAULT` answers FAULT every time (handy from another process). `outage(*names)`
takes endpoints down (every request answers the outage's fault, 503 by default, before
any plan) until `restore(*names)`. `answer(match, output)` makes a prompt containing
`match` answer `output` (JSON) instead of the echo, e.g. an invoice's fields; an output
`{"tool_calls": [{"name": ..., "arguments": {...}}]}` answers with those tool calls. Requests with
`"stream": true` are answered as server-sent events. Every request is logged (endpoint,
the prompt text, the fault): tests assert on the log, e.g. that no confidential prompt
ever reached a public endpoint.

Runs in the test's event loop (`async with ModelServer() as server`) or as a process:
`python -m tests.model_server --port 0` prints its port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

HUGE_BYTES = 50 * 1024 * 1024
FAULTS = (
    "429",
    "429:1",
    "500",
    "502",
    "503",
    "reset",
    "stall",
    "invalid_json",
    "schema",
    "huge",
    "latency:50",
    "empty_choices",
)


@dataclass
class LoggedRequest:
    endpoint: str
    prompt: str
    fault: str
    body: dict[str, Any]
    query: str = ""
    """The request's query string (after `?`), as sent."""


@dataclass
class Chaos:
    rate: float
    faults: tuple[str, ...]
    rng: random.Random


@dataclass
class ModelServer:
    host: str = "127.0.0.1"
    port: int = 0
    stall_seconds: float = 30.0
    log: list[LoggedRequest] = field(default_factory=list)
    plans: dict[str, list[str]] = field(default_factory=dict)
    chaos: dict[str, Chaos] = field(default_factory=dict)
    record: bool = True
    """False keeps no log (a benchmark's millions of requests)."""
    outages: dict[str, str] = field(default_factory=dict)
    """Endpoints down now, with the fault each answers until restored."""
    answers: list[tuple[str, Any]] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # -- control -------------------------------------------------------------------------

    def base_url(self, endpoint: str) -> str:
        return f"http://{self.host}:{self.port}/ep/{endpoint}/v1"

    def plan(self, endpoint: str, *faults: str) -> None:
        """Answer the next requests to `endpoint` with these faults, in order."""
        self.plans.setdefault(endpoint, []).extend(faults)

    def set_chaos(
        self, endpoint: str, rate: float, faults: tuple[str, ...] = FAULTS, seed: int = 0
    ) -> None:
        self.chaos[endpoint] = Chaos(rate, faults, random.Random(seed))

    def outage(self, *endpoints: str, fault: str = "503") -> None:
        """Take `endpoints` down: every request answers `fault` until `restore`."""
        for endpoint in endpoints:
            self.outages[endpoint] = fault

    def restore(self, *endpoints: str) -> None:
        for endpoint in endpoints:
            self.outages.pop(endpoint, None)

    def answer(self, match: str, output: Any) -> None:
        """A prompt whose first user message contains `match` is answered `output`."""
        self.answers.append((match, output))

    def requests_to(self, endpoint: str) -> list[LoggedRequest]:
        return [r for r in self.log if r.endpoint == endpoint]

    def _next_fault(self, endpoint: str) -> str:
        if endpoint.startswith("always-"):
            return endpoint.removeprefix("always-")
        if endpoint in self.outages:
            return self.outages[endpoint]
        plan = self.plans.get(endpoint)
        if plan:
            return plan.pop(0)
        chaos = self.chaos.get(endpoint)
        if chaos is not None and chaos.rng.random() < chaos.rate:
            return chaos.rng.choice(chaos.faults)
        return "ok"

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> ModelServer:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def __aenter__(self) -> ModelServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- HTTP/1.1 ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                accepts = headers.get("accept-encoding", "")
                if not await self._answer(path, body, writer, accepts):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _answer(
        self, path: str, raw: bytes, writer: asyncio.StreamWriter, accepts: str = ""
    ) -> bool:
        """Answer one request; False when the connection must end."""
        route, _, query = path.partition("?")
        parts = route.strip("/").split("/")
        if len(parts) != 5 or parts[0] != "ep" or parts[3:] != ["chat", "completions"]:
            _send(writer, 404, {"error": {"message": f"no route {path}"}})
            return True
        endpoint = parts[1]
        try:
            body = json.loads(raw)
        except ValueError:
            _send(writer, 400, {"error": {"message": "request body is not JSON"}})
            return True
        fault = self._next_fault(endpoint)
        prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        if self.record:
            self.log.append(LoggedRequest(endpoint, prompt, fault, body, query))
        stream = bool(body.get("stream"))
        if fault.startswith("latency:"):
            await asyncio.sleep(int(fault.split(":")[1]) / 1000)
            fault = "ok"
        if fault.startswith("429"):
            extra = {"retry-after": fault.split(":")[1]} if ":" in fault else {}
            _send(writer, 429, {"error": {"message": "rate limited"}}, extra)
            return True
        if fault in ("500", "502", "503", "400", "401", "403"):
            _send(writer, int(fault), {"error": {"message": f"injected {fault}"}})
            return True
        if fault == "reset":
            writer.transport.abort()
            return False
        if fault == "stall":
            await self._stall(writer, stream)
            return False
        if fault == "huge":
            await self._huge(writer)
            return False
        if fault == "invalid_json":
            garbage = b'{"choices": [{"message": {'
            writer.write(_head(200, len(garbage)) + garbage)
            return True
        if fault == "empty_choices":
            _send(writer, 200, {"id": "x", "object": "chat.completion", "choices": []})
            return True
        completion = _completion(endpoint, body, prompt, fault, self.answers)
        if fault == "gzip" and "gzip" in accepts:
            packed = gzip.compress(json.dumps(completion).encode())
            writer.write(_head(200, len(packed), {"content-encoding": "gzip"}) + packed)
        elif stream:
            writer.write(_sse(completion))
        else:
            _send(writer, 200, completion)
        await writer.drain()
        return True

    async def _stall(self, writer: asyncio.StreamWriter, stream: bool) -> None:
        if stream:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            writer.write(
                _chunk(b'data: {"choices": [{"index": 0, "delta": {"content": "{"}}]}\n\n')
            )
        else:
            writer.write(_head(200, 1000) + b'{"id": "stalled", "choices": [')
        await writer.drain()
        await asyncio.sleep(self.stall_seconds)

    async def _huge(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        block = _chunk(b" " * 65536)
        sent = 0
        while sent < HUGE_BYTES:
            writer.write(block)
            sent += 65536
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _completion(
    endpoint: str,
    body: dict[str, Any],
    prompt: str,
    fault: str,
    answers: Sequence[tuple[str, Any]] = (),
) -> dict[str, Any]:
    user = [m for m in body.get("messages", []) if m.get("role") == "user"]
    first = str(user[0].get("content", "")) if user else prompt
    answer: Any = {"echo": first[:40], "endpoint": endpoint}
    for match, output in answers:
        if match in first:
            answer = output
            break
    if fault == "schema":
        answer = {"echo": 5}
    content = json.dumps(answer)
    finish = "stop"
    if isinstance(answer, dict) and set(answer) == {"tool_calls"}:  # answer with tool calls
        return _tool_completion(body, answer["tool_calls"], prompt)
    if fault == "garbage":
        content = "I am sorry, I cannot answer in JSON today."
    if fault == "truncated":
        content, finish = content[: len(content) // 2], "length"
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if fault == "unknown_tool":
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "rm_rf", "arguments": "{}"},
                }
            ],
        }
        finish = "tool_calls"
    out: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": body.get("model", ""),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if fault != "no_usage":
        out["usage"] = {
            "prompt_tokens": max(1, len(prompt) // 4),
            "completion_tokens": max(1, len(content or "") // 4),
            "total_tokens": 0,
        }
    return out


def _tool_completion(body: dict[str, Any], calls: list[Any], prompt: str) -> dict[str, Any]:
    """A completion calling `calls` ({"name", "arguments"} each), as `answer` gives it."""
    tool_calls = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
        }
        for i, c in enumerate(calls)
    ]
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": body.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": tool_calls},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": 8},
    }


def _head(status: int, length: int, extra: dict[str, str] | None = None) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}
    lines = [
        f"HTTP/1.1 {status} {reason.get(status, 'Status')}",
        "content-type: application/json",
        f"content-length: {length}",
    ]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _send(
    writer: asyncio.StreamWriter,
    status: int,
    payload: dict[str, Any],
    extra: dict[str, str] | None = None,
) -> None:
    data = json.dumps(payload).encode()
    writer.write(_head(status, len(data), extra) + data)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _sse(completion: dict[str, Any]) -> bytes:
    """A completion as server-sent events: the content in pieces, usage, [DONE]."""
    choice = completion["choices"][0]
    message = choice["message"]
    events: list[dict[str, Any]] = []
    content = message.get("content") or ""
    for i in range(0, len(content), 16):
        events.append({"choices": [{"index": 0, "delta": {"content": content[i : i + 16]}}]})
    for call in message.get("tool_calls") or []:
        events.append({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, **call}]}}]})
    events.append(
        {"choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]}
    )
    if "usage" in completion:
        events.append({"choices": [], "usage": completion["usage"]})
    body = b"".join(_chunk(f"data: {json.dumps(e)}\n\n".encode()) for e in events)
    body += _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    return head + body


async def _main(port: int) -> None:
    server = await ModelServer(port=port, record=False).start()
    print(server.port, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="fault-injecting OpenAI-compatible server")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port))
    sys.exit(0)
