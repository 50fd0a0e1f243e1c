"""Shared pieces of the transport tests: a tiny real JSON-RPC handler and a server fixture.

The handler is a real (if small) JSON-RPC 2.0 implementation so the tests exercise the
transport alone: ``echo`` returns its params, ``whoami`` the CallContext, ``sleep`` waits,
``fail`` answers an error with the code it is given. One response is an object, several an
array, as VDSM answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from tests.conftest import PkiSet
from vdsm_py.client import Client
from vdsm_py.client.raw import RawStomp
from vdsm_py.config import RpcConfig
from vdsm_py.events import EventBus
from vdsm_py.rpc.dispatch import CallContext
from vdsm_py.transport.server import StompServer
from vdsm_py.transport.stomp import Frame

REQUESTS = "jms.topic.vdsm_requests"


class TinyRpc:
    """Request handler for the tests; counts concurrency of ``sleep`` calls."""

    def __init__(self) -> None:
        self.running = 0
        self.max_running = 0
        self.calls = 0

    async def __call__(self, body: bytes, ctx: CallContext) -> bytes | None:
        self.calls += 1
        message = orjson.loads(body)
        requests = message if isinstance(message, list) else [message]
        responses = []
        for request in requests:
            response = await self._one(request, ctx)
            if "id" in request:
                responses.append(response)
        if not responses:
            return None
        return orjson.dumps(responses[0] if len(responses) == 1 else responses)

    async def _one(self, request: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        method = request["method"]
        params = request.get("params") or {}
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": request.get("id")}
        if method == "echo":
            out["result"] = params
        elif method == "whoami":
            out["result"] = dataclasses.asdict(ctx)
        elif method == "sleep":
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            try:
                await asyncio.sleep(params["seconds"])
            finally:
                self.running -= 1
            out["result"] = params.get("tag", True)
        elif method == "fail":
            out["error"] = {"code": params["code"], "message": params["message"]}
        else:
            out["error"] = {"code": -32601, "message": f"Method not found: {method}"}
        return out


@dataclasses.dataclass
class Served:
    server: StompServer
    rpc: TinyRpc
    events: EventBus
    pki: PkiSet

    @property
    def port(self) -> int:
        return self.server.port

    async def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("ssl_context", self.pki.client_context())
        return await Client.connect("127.0.0.1", self.port, **kwargs)

    async def raw(self, *, connect: bool = True, heartbeat: str = "0,0") -> RawStomp:
        conn = await RawStomp.open("127.0.0.1", self.port, ssl_context=self.pki.client_context())
        if connect:
            frame = await conn.connect(heartbeat=heartbeat)
            assert frame.command == "CONNECTED", frame
        return conn


ServerFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(pki: PkiSet) -> AsyncIterator[ServerFactory]:
    """Start StompServers over real mutual TLS; all are closed at the end of the test."""
    started: list[StompServer] = []

    async def start(handler: Any = None, **rpc_settings: Any) -> Served:
        rpc = handler or TinyRpc()
        events = EventBus(asyncio.get_running_loop())
        server = StompServer(
            rpc, events, ssl_context=pki.server_context(), rpc=RpcConfig(**rpc_settings)
        )
        await server.start("127.0.0.1", 0)
        started.append(server)
        return Served(server, rpc, events, pki)

    try:
        yield start
    finally:
        for server in started:
            await server.close(grace=1.0)


def request_frame(
    method: str,
    params: Any = None,
    *,
    reply_to: str,
    call_id: str | None = None,
    batch: bool = True,
    **headers: str,
) -> Frame:
    request = {
        "jsonrpc": "2.0",
        "method": method,
        "params": params or {},
        "id": call_id or str(uuid.uuid4()),
    }
    body = orjson.dumps([request] if batch else request)
    return Frame(
        "SEND",
        {
            "destination": REQUESTS,
            "reply-to": reply_to,
            "content-type": "application/json",
            **headers,
        },
        body,
    )
