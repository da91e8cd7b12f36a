"""The worker's health endpoint: `GET /livez` and `GET /readyz` over plain HTTP/1.1.

Live: the process's event loop answers. Ready: the worker polls its task queue (and is
not shutting down); until then, and while draining, `/readyz` answers 503 so an
orchestrator sends no traffic and a rolling update waits. Bodies are small JSON objects.
Hand-written on asyncio streams because two fixed routes do not warrant a web framework
in every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from tether.errors import HealthError

ROUTES = ("/livez", "/readyz")


class HealthServer:
    """Serve liveness and `ready()` on host:port until `close()`."""

    def __init__(self, ready: Callable[[], bool], host: str, port: int) -> None:
        self.ready = ready
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Bind and serve; returns the port (useful when asked for port 0)."""
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise HealthError(
                f"health endpoint cannot listen on {self.host!r} port {self.port} ({exc}); "
                "choose another TETHER_HEALTH_PORT, or 0 to turn it off"
            ) from None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)).strip():
                pass  # headers: nothing here needs them
            method, path, *_ = [*request.decode("latin-1").split(), "", ""]
            status, body = self._answer(method, path)
            data = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, method: str, path: str) -> tuple[str, dict[str, object]]:
        path = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", {"error": f"method {method!r}; use GET"}
        if path == "/livez":
            return "200 OK", {"status": "live"}
        if path == "/readyz":
            if self.ready():
                return "200 OK", {"status": "ready"}
            return "503 Service Unavailable", {"status": "not ready"}
        return "404 Not Found", {"error": f"no route {path!r}; try {' or '.join(ROUTES)}"}
