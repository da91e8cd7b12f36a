"""One OpenAI-compatible chat completions endpoint over httpx: one attempt, classified.

OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp server, LM Studio and most hosted APIs
speak this protocol. `OpenAIEndpoint.complete` makes exactly one HTTP attempt (httpx's
own retries are off; the gateway fails over and Temporal retries) and either returns a
`Completion` or raises `AttemptFailed` naming what went wrong:

    AttemptFailed.outcome
    ├── timeout           connect or whole-call deadline passed
    ├── stalled           the body or stream stopped arriving (read timeout)
    ├── connect           no connection, or any other transport error (proxy, protocol)
    ├── reset             the connection broke mid-exchange
    ├── rate_limited      429 (`retry_after` from Retry-After, finite and capped)
    ├── server_error      5xx, 408
    ├── auth              401, 403, 404: this endpoint's configuration; fail over
    ├── client_error      other 4xx: the request itself is bad; no failover, no retry
    ├── oversized         body beyond `max_response_bytes` (abandoned mid-read)
    ├── invalid_response  not JSON, no choices list, tool arguments not JSON, cut stream
    ├── empty_choices     an empty `choices` list, or a choice with neither text nor tools
    └── unknown_tool      the model called a tool it was not offered

The API key is read once from the environment variable the configuration names and is
only ever put in the request header; it is in no error, log line or record.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tether.activities.payloads import ModelCallInput, ModelToolCall
from tether.core.gateway_config import EndpointConfig

NO_FAILOVER = frozenset({"client_error"})


class AttemptFailed(Exception):
    def __init__(
        self, outcome: str, detail: str, *, status: int = 0, retry_after: float = 0.0
    ) -> None:
        super().__init__(f"{outcome}: {detail}")
        self.outcome = outcome
        self.detail = detail
        self.status = status
        self.retry_after = retry_after

    @property
    def failover(self) -> bool:
        return self.outcome not in NO_FAILOVER


@dataclass
class Completion:
    text: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    usage_reported: bool
    tool_calls: list[ModelToolCall] = field(default_factory=list)
    status: int = 200


def messages(request: ModelCallInput) -> list[dict[str, str]]:
    """The chat messages of a call; a repair adds the validation error to fix."""
    out: list[dict[str, str]] = []
    if request.schema_name:
        out.append(
            {
                "role": "system",
                "content": f"Answer only with one JSON object that fits the schema "
                f"{request.schema_name}.",
            }
        )
    out.append({"role": "user", "content": request.prompt})
    if request.repair_error:
        out.append(
            {
                "role": "user",
                "content": "Your previous answer was invalid:\n"
                f"{request.repair_error}\nAnswer again with corrected JSON only.",
            }
        )
    return out


def request_body(config: EndpointConfig, request: ModelCallInput) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": config.model,
        "messages": messages(request),
        "max_tokens": request.max_output_tokens,
    }
    if request.json_schema and config.structured_output == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": request.schema_name or "output",
                "schema": request.json_schema,
            },
        }
    elif request.json_schema and config.structured_output == "json_object":
        body["response_format"] = {"type": "json_object"}
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters or {"type": "object", "properties": {}},
                },
            }
            for t in request.tools
        ]
    if config.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


RETRY_AFTER_CAP = 3600.0
"""The longest Retry-After taken at its word; anything longer, or not finite, is the cap."""


def retry_after_seconds(value: str | None, cap: float = RETRY_AFTER_CAP) -> float:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), at most
    `cap` (a non-finite or absurd value counts as the cap); 0 if none."""
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            return 0.0
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds) or seconds > cap:
        return cap
    return max(0.0, seconds)


def classify_status(
    status: int, retry_after: str | None, text: str, cap: float = RETRY_AFTER_CAP
) -> AttemptFailed:
    snippet = text[:200]
    if status == 429:
        return AttemptFailed(
            "rate_limited",
            f"HTTP 429 {snippet!r}",
            status=status,
            retry_after=retry_after_seconds(retry_after, cap),
        )
    if status >= 500 or status == 408:
        return AttemptFailed("server_error", f"HTTP {status} {snippet!r}", status=status)
    if status in (401, 403, 404):
        return AttemptFailed("auth", f"HTTP {status} {snippet!r}", status=status)
    return AttemptFailed("client_error", f"HTTP {status} {snippet!r}", status=status)


SHARD_CONNECTIONS = 16
"""Most connections one httpx client holds. On every request httpx's pool walks each of
its connections (checking, for an idle one, whether the server closed it), so one client
holding a hundred connections spends milliseconds per call at a hundred calls in flight;
clients of at most 16 connections each keep that walk short (bench/gateway.py, level 100)."""


def new_client(connections: int, tls: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    """An httpx client for model calls: at most `connections` connections, all kept alive;
    no retries (the gateway fails over and Temporal retries), no redirects, no proxy taken
    from the environment. Certificates are verified against `tls` (default: httpx's own
    context, which honours SSL_CERT_FILE and SSL_CERT_DIR)."""
    # The limits go to the transport: a client given its own transport ignores its own.
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(
            retries=0, limits=limits, verify=tls if tls is not None else True
        ),
        follow_redirects=False,
        trust_env=False,
    )


class ClientShards:
    """httpx clients sharing one event loop's calls: each call leases the least busy one.

    Their connections add up to what the endpoints may have in flight, so a lease always
    finds a client with a free connection while the endpoints' concurrency slots hold.
    """

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        if not clients:
            raise ValueError("ClientShards needs at least one client")
        self.clients = clients
        self.busy = [0] * len(clients)

    @classmethod
    def for_connections(cls, connections: int, per_client: int = SHARD_CONNECTIONS) -> ClientShards:
        """Clients of at most `per_client` connections, `connections` (at least 1) in all."""
        connections = max(1, connections)
        count = math.ceil(connections / per_client)
        tls = httpx.create_ssl_context()  # one certificate store for all the clients
        return cls([new_client(math.ceil(connections / count), tls) for _ in range(count)])

    def lease(self) -> int:
        """The least busy client's index, now counted busy until `release(index)`."""
        busy = self.busy
        index = busy.index(min(busy)) if len(busy) > 1 else 0
        busy[index] += 1
        return index

    def release(self, index: int) -> None:
        self.busy[index] -= 1

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


class OpenAIEndpoint:
    """Sends one chat completion to one configured endpoint."""

    def __init__(
        self,
        config: EndpointConfig,
        clients: ClientShards,
        retry_after_cap: float = RETRY_AFTER_CAP,
    ) -> None:
        self.config = config
        self.retry_after_cap = retry_after_cap
        self.clients = clients
        # Parsed once, query included: parsing a URL string costs more than the rest of
        # building a request.
        self.url = httpx.URL(f"{config.base_url}/chat/completions", params=config.query or None)
        # identity: `_read` counts raw bytes against the size cap and decodes nothing, so
        # a compressed body must never be asked for.
        self.headers = {"content-type": "application/json", "accept-encoding": "identity"}
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        if config.api_key_env and not key:
            raise ValueError(
                f"endpoint {config.name!r}: environment variable {config.api_key_env!r} "
                "(api_key_env) is unset or empty; set it to the API key, or set api_key_env "
                '= "" for an endpoint that needs no key'
            )
        if key:
            if config.auth_header == "api-key":
                self.headers["api-key"] = key
            else:
                self.headers["authorization"] = f"Bearer {key}"
        self.timeout = httpx.Timeout(config.timeout_seconds, connect=config.connect_timeout_seconds)

    def __repr__(self) -> str:  # never shows the headers (the key)
        return f"OpenAIEndpoint({self.config.name!r}, {str(self.url)!r})"

    async def complete(self, request: ModelCallInput) -> Completion:
        shard = self.clients.lease()
        try:
            return await self._complete(self.clients.clients[shard], request)
        finally:
            self.clients.release(shard)

    async def _complete(self, client: httpx.AsyncClient, request: ModelCallInput) -> Completion:
        body = json.dumps(request_body(self.config, request)).encode()
        # httpx bounds each phase (connect, write, every read); the deadline bounds a body
        # that trickles in just fast enough to never trip a read timeout.
        deadline = time.monotonic() + self.config.timeout_seconds
        received = False
        try:
            response = await client.send(
                client.build_request(
                    "POST",
                    self.url,
                    content=body,
                    headers=self.headers,
                    timeout=self.timeout,
                ),
                stream=True,
            )
            received = True
            try:
                status = response.status_code
                if status >= 400:
                    text = (await self._read(response, deadline)).decode("utf-8", "replace")
                    raise classify_status(
                        status, response.headers.get("retry-after"), text, self.retry_after_cap
                    )
                if self.config.stream and response.headers.get("content-type", "").startswith(
                    "text/event-stream"
                ):
                    return await self._read_stream(response, request, deadline)
                return parse_completion(await self._read(response, deadline), request)
            finally:
                await response.aclose()
        except httpx.ConnectTimeout:
            raise AttemptFailed(
                "timeout", f"no connection within {self.config.connect_timeout_seconds}s"
            ) from None
        except httpx.TimeoutException as exc:
            raise AttemptFailed("stalled" if received else "timeout", type(exc).__name__) from None
        except httpx.ConnectError as exc:
            raise AttemptFailed("connect", str(exc)[:200] or "connection refused") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise AttemptFailed("reset", str(exc)[:200] or type(exc).__name__) from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # Whatever shape a garbage answer takes, it is an endpoint fault, never a crash.
            raise AttemptFailed("invalid_response", f"{type(exc).__name__}: {exc}"[:200]) from None
        except httpx.TransportError as exc:
            # The rest (LocalProtocolError, UnsupportedProtocol, ProxyError, ...): this
            # endpoint cannot be reached as configured; another one may be.
            raise AttemptFailed("connect", f"{type(exc).__name__}: {exc}"[:200]) from None

    def _stalled(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise AttemptFailed(
                "stalled", f"no complete answer within {self.config.timeout_seconds}s"
            )

    async def _read(self, response: httpx.Response, deadline: float) -> bytes:
        cap = self.config.max_response_bytes
        length = response.headers.get("content-length")
        if length and length.isdigit() and int(length) > cap:
            raise AttemptFailed(
                "oversized", f"body of {length} bytes exceeds {cap}", status=response.status_code
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > cap:
                raise AttemptFailed(
                    "oversized",
                    f"body exceeds {cap} bytes; abandoned",
                    status=response.status_code,
                )
            chunks.append(chunk)
            self._stalled(deadline)
        return b"".join(chunks)

    async def _read_stream(
        self, response: httpx.Response, request: ModelCallInput, deadline: float
    ) -> Completion:
        cap = self.config.max_response_bytes
        size = 0
        text: list[str] = []
        tools: dict[int, dict[str, str]] = {}
        finish = ""
        usage: dict[str, Any] = {}
        done = False
        async for line in response.aiter_lines():
            size += len(line) + 1
            if size > cap:
                raise AttemptFailed("oversized", f"stream exceeds {cap} bytes; abandoned")
            self._stalled(deadline)
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            chunk = _json_object(data.encode(), "stream chunk")
            if isinstance(chunk.get("usage"), dict):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if not isinstance(choice, dict):
                    raise AttemptFailed("invalid_response", "a stream choice is not an object")
                delta = choice.get("delta") or {}
                if isinstance(delta.get("content"), str):
                    text.append(delta["content"])
                for call in delta.get("tool_calls") or []:
                    slot = tools.setdefault(int(call.get("index", 0)), {"name": "", "args": ""})
                    fn = call.get("function") or {}
                    slot["name"] += fn.get("name") or ""
                    slot["args"] += fn.get("arguments") or ""
                    if call.get("id"):
                        slot["id"] = call["id"]
                finish = choice.get("finish_reason") or finish
        if not done and not finish:
            raise AttemptFailed("invalid_response", "the stream ended before [DONE]")
        message: dict[str, Any] = {
            "content": "".join(text),
            "tool_calls": [
                {"id": t.get("id", ""), "function": {"name": t["name"], "arguments": t["args"]}}
                for _, t in sorted(tools.items())
            ],
        }
        return _completion(message, finish, usage, request, response.status_code)


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise AttemptFailed("invalid_response", f"{what} is not JSON: {raw[:80]!r}") from None
    if not isinstance(data, dict):
        raise AttemptFailed("invalid_response", f"{what} is not a JSON object")
    return data


def parse_completion(raw: bytes, request: ModelCallInput, status: int = 200) -> Completion:
    """A chat completion body, checked: one choice with text or known tool calls."""
    data = _json_object(raw, "the body")
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise AttemptFailed("invalid_response", "the body has no choices list")
    if not choices:
        raise AttemptFailed("empty_choices", "the body's choices list is empty")
    choice = choices[0]
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise AttemptFailed("invalid_response", "the first choice has no message object")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return _completion(
        choice["message"], str(choice.get("finish_reason") or ""), usage or {}, request, status
    )


def _completion(
    message: dict[str, Any],
    finish: str,
    usage: dict[str, Any],
    request: ModelCallInput,
    status: int,
) -> Completion:
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise AttemptFailed("invalid_response", "the message content is not a string")
    text = content or ""
    offered = {t.name for t in request.tools}
    calls: list[ModelToolCall] = []
    for raw in message.get("tool_calls") or []:
        fn = raw.get("function") if isinstance(raw, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise AttemptFailed("invalid_response", "a tool call has no function name")
        if fn["name"] not in offered:
            raise AttemptFailed(
                "unknown_tool", f"the model called {fn['name'][:60]!r}, which it was not offered"
            )
        args = fn.get("arguments") or "{}"
        parsed = _json_object(args.encode() if isinstance(args, str) else b"", "tool arguments")
        calls.append(ModelToolCall(id=str(raw.get("id") or ""), name=fn["name"], arguments=parsed))
    if not text and not calls:
        raise AttemptFailed("empty_choices", "the answer has neither text nor tool calls")
    prompt_tokens = usage.get("prompt_tokens")
    completion_tokens = usage.get("completion_tokens")
    reported = isinstance(prompt_tokens, int) and isinstance(completion_tokens, int)
    return Completion(
        text=text,
        finish_reason=finish,
        input_tokens=prompt_tokens if isinstance(prompt_tokens, int) else 0,
        output_tokens=completion_tokens if isinstance(completion_tokens, int) else 0,
        usage_reported=reported,
        tool_calls=calls,
        status=status,
    )
