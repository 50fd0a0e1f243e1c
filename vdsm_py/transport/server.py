"""The STOMP 1.2 server of the JSON-RPC API: listening socket, connections, events, shutdown.

Owns: the listener (TLS through the given ``ssl.SSLContext``, or plaintext when it is None;
'::' or '' listen dual-stack on IPv4 and IPv6), the connection limit, the set of live
connections and of running request tasks, delivery of :class:`~vdsm_py.events.EventBus`
events to subscribers of ``jms.queue.events``, statistics, and an orderly :meth:`close`
(stop accepting, let running requests answer for a grace period, then close every
connection).

Must not: parse frames (:mod:`~vdsm_py.transport.stomp`), hold per-connection protocol
logic (:mod:`~vdsm_py.transport.connection`), or know what a request means (it hands bodies
to ``handle_request``, which is the RPC dispatcher in the daemon).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

import orjson

from vdsm_py.config import RpcConfig
from vdsm_py.events import Event, EventBus
from vdsm_py.rpc.dispatch import CallContext
from vdsm_py.transport.broker import EVENTS_DESTINATION, Broker
from vdsm_py.transport.connection import StompConnection

log = logging.getLogger("vdsm_py.transport")

RequestHandler = Callable[[bytes, CallContext], Awaitable[bytes | None]]

LISTEN_BACKLOG = 1024
SSL_SHUTDOWN_TIMEOUT = 5.0
_ANY_ADDRESS = ("", "::", "*")


class StompServer:
    """JSON-RPC over STOMP 1.2 server, wire-compatible with VDSM's."""

    def __init__(
        self,
        handle_request: RequestHandler,
        events: EventBus,
        *,
        ssl_context: ssl.SSLContext | None,
        rpc: RpcConfig,
    ) -> None:
        self.handle_request = handle_request
        self.rpc = rpc
        self.broker = Broker()
        self._events = events
        self._ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._connections: set[StompConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._unsubscribe_events: Callable[[], None] | None = None
        self._closing = False
        self._closed: asyncio.Event | None = None
        self._accepted = 0
        self._refused = 0
        self._events_sent = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port: int | None = None

    # -- life cycle ---------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host``:``port`` (port 0: an ephemeral port, see :attr:`port`)."""
        if self._server is not None:
            raise RuntimeError("server already started")
        self._loop = asyncio.get_running_loop()
        tls = self._ssl_context
        handshake = self.rpc.connect_timeout if tls is not None else None
        shutdown = SSL_SHUTDOWN_TIMEOUT if tls is not None else None
        if host in _ANY_ADDRESS and socket.has_dualstack_ipv6():
            sock = socket.create_server(
                ("::", port),
                family=socket.AF_INET6,
                backlog=LISTEN_BACKLOG,
                reuse_port=False,
                dualstack_ipv6=True,
            )
            sock.setblocking(False)
            server = await self.loop.create_server(
                self._new_connection,
                sock=sock,
                backlog=LISTEN_BACKLOG,
                ssl=tls,
                ssl_handshake_timeout=handshake,
                ssl_shutdown_timeout=shutdown,
            )
        else:
            server = await self.loop.create_server(
                self._new_connection,
                None if host in _ANY_ADDRESS else host,
                port,
                backlog=LISTEN_BACKLOG,
                reuse_address=True,
                ssl=tls,
                ssl_handshake_timeout=handshake,
                ssl_shutdown_timeout=shutdown,
            )
        self._server = server
        self._port = int(server.sockets[0].getsockname()[1])
        self._unsubscribe_events = self._events.subscribe(self._on_event)
        log.info(
            "STOMP server listening on %s (%s)",
            ", ".join(_format_address(s.getsockname()) for s in server.sockets),
            "TLS" if self._ssl_context is not None else "plaintext",
        )

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("server not started")
        return self._loop

    @property
    def port(self) -> int:
        """The port listened on (still known after :meth:`close`)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, give running requests ``grace`` seconds to answer, close all.

        Idempotent; a second call waits for the first to finish.
        """
        if self._closed is not None:
            await self._closed.wait()
            return
        self._closed = asyncio.Event()
        self._closing = True
        try:
            await self._close(grace)
        finally:
            self._closed.set()

    async def _close(self, grace: float) -> None:
        if self._unsubscribe_events is not None:
            self._unsubscribe_events()
            self._unsubscribe_events = None
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        log.info(
            "STOMP server closing: %d connections, %d requests running",
            len(connections),
            len(self._tasks),
        )
        for conn in connections:
            conn.stop_reading()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "%d requests did not finish within %g s; cancelled", len(pending), grace
                )
                await asyncio.wait(pending, timeout=1.0)
        for conn in list(self._connections):
            conn.close()
        waiting = [conn.lost for conn in self._connections if not conn.lost.done()]
        if waiting:
            _, stuck = await asyncio.wait(waiting, timeout=SSL_SHUTDOWN_TIMEOUT + 1.0)
            if stuck:
                for conn in list(self._connections):
                    conn.abort()
                await asyncio.wait(stuck, timeout=1.0)
        if self._server is not None:
            await self._server.wait_closed()
        log.info("STOMP server closed")

    # -- connections --------------------------------------------------------------------

    def _new_connection(self) -> StompConnection:
        return StompConnection(self, next(self._ids))

    def register(self, conn: StompConnection) -> str | None:
        """Admit ``conn``; the reason for refusing it otherwise."""
        if self._closing:
            reason = "the server is shutting down"
        elif len(self._connections) >= self.rpc.max_connections:
            reason = f"too many connections ({self.rpc.max_connections})"
        else:
            self._connections.add(conn)
            self._accepted += 1
            return None
        self._refused += 1
        return reason

    def unregister(self, conn: StompConnection) -> None:
        self._connections.discard(conn)

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a request task alive until it ends (the loop holds only weak references)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- events -------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if not self.broker.has_subscribers(EVENTS_DESTINATION):
            return
        try:
            body = orjson.dumps(
                {"jsonrpc": "2.0", "method": event.method, "params": event.params},
                option=orjson.OPT_NON_STR_KEYS,
            )
        except TypeError:
            log.exception("event %s cannot be encoded as JSON; dropped", event.method)
            return
        self._events_sent += self.broker.deliver(EVENTS_DESTINATION, body)

    def stats(self) -> dict[str, int]:
        conns = self._connections
        return {
            "connections": len(conns),
            "stomp_connected": sum(1 for c in conns if c.stomp_connected),
            "subscriptions": self.broker.count,
            "requests_running": len(self._tasks),
            "accepted_total": self._accepted,
            "refused_total": self._refused,
            "events_sent_total": self._events_sent,
        }


def _format_address(address: tuple[object, ...]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
