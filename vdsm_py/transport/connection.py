"""One client connection of the STOMP server: an ``asyncio.Protocol`` speaking STOMP 1.2.

Owns: the per-connection state machine (CONNECT first, then SUBSCRIBE / UNSUBSCRIBE / SEND /
DISCONNECT), heart-beats in both directions, the connect deadline, running each request as
its own task (at most :data:`MAX_IN_FLIGHT` at once, reading paused beyond that), flow
control (reading paused while the peer does not drain our writes; a peer that lets
:data:`MAX_WRITE_BUFFER` pile up is dropped), and ERROR-then-close on protocol violations.

Output is coalesced: the frames queued during one turn of the loop (responses, events,
receipts) leave in one write at the start of the next turn, so a burst of them costs one
TLS write and one ``send`` instead of one per frame.

Must not: interpret JSON-RPC (bodies go to the server's request handler as bytes), know other
connections (the :class:`~vdsm_py.transport.broker.Broker` routes messages), or block.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vdsm_py.rpc.dispatch import CallContext
from vdsm_py.transport.broker import (
    DEFAULT_RESPONSE_DESTINATION,
    Subscription,
    is_request_destination,
)
from vdsm_py.transport.heartbeat import Heartbeats
from vdsm_py.transport.stomp import (
    Frame,
    FrameParser,
    StompProtocolError,
    encode,
    parse_heartbeat,
)
from vdsm_py.transport.tls import peer_common_name

if TYPE_CHECKING:
    from vdsm_py.transport.server import StompServer

log = logging.getLogger("vdsm_py.transport")

MAX_IN_FLIGHT = 64  # requests of one connection running at once
MAX_WRITE_BUFFER = 64 * 1024 * 1024  # unsent bytes after which a peer counts as stuck
MIN_HEARTBEAT_MS = 1000
INCOMING_GRACE = 3.0  # a client is dead after this many promised heart-beat intervals
FLOW_ID_HEADER = "ovirtCorrelationId"

_NO_RECEIPT = frozenset(("CONNECT", "STOMP", "DISCONNECT"))  # answered otherwise

# Why reading is paused (bit flags).
_PAUSED_WRITES = 1
_PAUSED_IN_FLIGHT = 2
_PAUSED_DISCONNECT = 4


def _format_peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        if host.startswith("::ffff:") and "." in host:  # IPv4 on a dual-stack socket
            host = host[7:]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address or "?")


class StompConnection(asyncio.Protocol):
    """Server side of one STOMP connection (created by :class:`StompServer` per accept)."""

    def __init__(self, server: StompServer, conn_id: int) -> None:
        self._server = server
        self._loop = server.loop
        self._handler = server.handle_request
        self._broker = server.broker
        self.conn_id = conn_id
        self.name = f"conn {conn_id}"
        self.peer = "?"
        self.peer_subject = ""
        self._client_id = f"conn-{conn_id}"
        self._accepted_at = self._loop.time()
        self._transport: asyncio.Transport | None = None
        self._pending: list[bytes] = []  # frames queued this turn of the loop, see _flush
        self._parser = FrameParser(server.rpc.max_frame_size)
        self.stomp_connected = False
        self.closing = False
        self._subscriptions: dict[str, Subscription] = {}
        self.in_flight = 0
        self._backlog: deque[Frame] = deque()
        self._paused = 0
        self._disconnect_receipt: str | None = None
        self._connect_timer: asyncio.TimerHandle | None = None
        self._heartbeats = Heartbeats(self._loop, self.send_bytes, self._on_silence)
        self.lost: asyncio.Future[None] = self._loop.create_future()
        self._commands: dict[str, Callable[[Frame], None]] = {
            "SEND": self._on_send,
            "SUBSCRIBE": self._on_subscribe,
            "UNSUBSCRIBE": self._on_unsubscribe,
            "DISCONNECT": self._on_disconnect,
            "CONNECT": self._on_connect,
            "STOMP": self._on_connect,
            "ACK": self._on_ack,
            "NACK": self._on_ack,
        }

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.peer = _format_peer(transport.get_extra_info("peername"))
        self.peer_subject = peer_common_name(transport.get_extra_info("ssl_object")) or ""
        self.name = f"conn {self.conn_id} from {self.peer}"
        self._client_id = f"conn-{self.conn_id}@{self.peer}"
        refused = self._server.register(self)
        if refused is not None:
            self._fail("Connection refused", refused)
            return
        log.info(
            "%s accepted%s",
            self.name,
            f" (certificate CN={self.peer_subject})" if self.peer_subject else "",
        )
        remaining = self._server.rpc.connect_timeout - (self._loop.time() - self._accepted_at)
        self._connect_timer = self._loop.call_later(max(remaining, 0.0), self._on_connect_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._heartbeats.last_read = self._loop.time()
        try:
            frames = self._parser.feed(data)
        except StompProtocolError as exc:
            self._fail("Malformed frame", str(exc))
            return
        for frame in frames:
            if self.closing or self._paused & _PAUSED_DISCONNECT:
                return
            if self._backlog or self.in_flight >= MAX_IN_FLIGHT:
                self._backlog.append(frame)
            else:
                self._handle(frame)

    def eof_received(self) -> bool | None:
        log.debug("%s: peer closed its side", self.name)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._pending.clear()
        self._stop_timers()
        self._broker.remove_all(self._subscriptions.values())
        self._subscriptions.clear()
        self._backlog.clear()
        self._server.unregister(self)
        if exc is not None:
            log.info("%s lost: %s", self.name, exc)
        else:
            log.info("%s closed", self.name)
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._pause(_PAUSED_WRITES)

    def resume_writing(self) -> None:
        self._resume(_PAUSED_WRITES)

    # -- output -------------------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        """Queue ``data`` for the peer (dropped once the connection is closing).

        It is written with everything else queued in this turn of the loop (see
        :meth:`_flush`); order is kept.
        """
        if self.closing or self._transport is None:
            return
        pending = self._pending
        pending.append(data)
        if len(pending) == 1:
            self._loop.call_soon(self._flush)
        self._heartbeats.last_write = self._loop.time()

    def _flush(self) -> None:
        """Write what was queued, as one write."""
        pending = self._pending
        transport = self._transport
        if not pending or self.closing or transport is None:
            return
        self._pending = []
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if self._paused & _PAUSED_WRITES and transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning(
                "%s does not read what we send (%d bytes pending); dropping it",
                self.name,
                transport.get_write_buffer_size(),
            )
            self.closing = True
            transport.abort()

    def send_frame(self, frame: Frame) -> None:
        self.send_bytes(encode(frame))

    def _fail(self, message: str, detail: str = "", receipt: str | None = None) -> None:
        """Send an ERROR frame and close the connection (after the ERROR is flushed)."""
        if self.closing:
            return
        log.warning("%s: %s%s; closing it", self.name, message, f": {detail}" if detail else "")
        headers = {"message": message, "content-type": "text/plain"}
        if receipt is not None:
            headers["receipt-id"] = receipt
        self.send_frame(Frame("ERROR", headers, (detail or message).encode("utf-8")))
        self.close()

    def close(self) -> None:
        """Close after flushing what is already written; in-flight responses are dropped."""
        self._flush()
        self.closing = True
        self._stop_timers()
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.closing = True
        self._pending.clear()
        self._stop_timers()
        if self._transport is not None:
            self._transport.abort()

    def stop_reading(self) -> None:
        """Take no new frames (server shutdown); requests already running may still answer."""
        self._pause(_PAUSED_DISCONNECT)
        self._backlog.clear()

    # -- flow control -------------------------------------------------------------------

    def _pause(self, reason: int) -> None:
        if not self._paused and self._transport is not None and not self.closing:
            self._transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        if self._paused or self.closing or self._transport is None:
            return
        self._transport.resume_reading()
        while self._backlog and self.in_flight < MAX_IN_FLIGHT and not self._paused:
            self._handle(self._backlog.popleft())

    # -- frames -------------------------------------------------------------------------

    def _handle(self, frame: Frame) -> None:
        command = frame.command
        if not self.stomp_connected and command not in ("CONNECT", "STOMP"):
            self._fail("Not connected", f"{command} before CONNECT")
            return
        handler = self._commands.get(command)
        if handler is None:
            self._fail("Unknown command", f"unknown or unexpected command {command}")
            return
        handler(frame)
        receipt = frame.headers.get("receipt")
        if receipt is not None and not self.closing and command not in _NO_RECEIPT:
            self.send_frame(Frame("RECEIPT", {"receipt-id": receipt}))

    def _on_connect(self, frame: Frame) -> None:
        if self.stomp_connected:
            self._fail("Already connected", "a second CONNECT on one connection")
            return
        versions = [v.strip() for v in frame.headers.get("accept-version", "").split(",")]
        if "1.2" not in versions:
            self._fail("Version unsupported", "accept-version lacks 1.2, the only version served")
            return
        cx, cy = parse_heartbeat(frame.headers.get("heart-beat"))
        if cx:
            cx = max(cx, MIN_HEARTBEAT_MS)
        if cy:
            cy = max(cy, MIN_HEARTBEAT_MS)
        self.stomp_connected = True
        # As VDSM: we send every cy ms and expect the client every cx ms. Whatever was
        # negotiated, we never stay silent longer than heartbeat_ms (VDSM's client gives
        # up after 30 s of silence even when it asked for no heart-beats).
        floor = self._server.rpc.heartbeat_ms
        send_ms = min(cy, floor) if cy and floor else (cy or floor)
        self.send_frame(
            Frame(
                "CONNECTED",
                {
                    "version": "1.2",
                    "heart-beat": f"{cy},{cx}",
                    "server": "vdsm_py",
                },
            )
        )
        log.debug("%s: STOMP connected, heart-beat out %d ms, in %d ms", self.name, send_ms, cx)
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        self._heartbeats.start(send_ms / 1000.0, cx * INCOMING_GRACE / 1000.0)

    def _on_subscribe(self, frame: Frame) -> None:
        destination = frame.headers.get("destination")
        sub_id = frame.headers.get("id")
        if not destination or not sub_id:
            self._fail("Missing header", "SUBSCRIBE needs the destination and id headers")
            return
        if sub_id in self._subscriptions:
            self._fail("Subscription id already exists", f"subscription id {sub_id} is in use")
            return
        sub = Subscription(self, destination, sub_id, frame.headers.get("ack", "auto"))
        self._subscriptions[sub_id] = sub
        self._broker.add(sub)
        log.debug("%s subscribed to %s as %s", self.name, destination, sub_id)

    def _on_unsubscribe(self, frame: Frame) -> None:
        sub_id = frame.headers.get("id")
        if not sub_id:
            self._fail("Missing header", "UNSUBSCRIBE needs the id header")
            return
        sub = self._subscriptions.pop(sub_id, None)
        if sub is None:
            log.debug("%s: UNSUBSCRIBE of unknown id %s", self.name, sub_id)
            return
        self._broker.remove(sub)

    def _on_ack(self, frame: Frame) -> None:
        """Subscriptions are auto-acknowledged; ACK/NACK need the id header and do nothing."""
        if not frame.headers.get("id"):
            self._fail("Missing header", f"{frame.command} needs the id header")

    def _on_disconnect(self, frame: Frame) -> None:
        self._disconnect_receipt = frame.headers.get("receipt", "")
        self._pause(_PAUSED_DISCONNECT)
        self._backlog.clear()
        log.debug("%s: DISCONNECT, %d requests to finish", self.name, self.in_flight)
        self._maybe_finish_disconnect()

    def _maybe_finish_disconnect(self) -> None:
        if self._disconnect_receipt is None or self.in_flight:
            return
        if self._disconnect_receipt:
            self.send_frame(Frame("RECEIPT", {"receipt-id": self._disconnect_receipt}))
        self.close()

    def _on_send(self, frame: Frame) -> None:
        headers = frame.headers
        destination = headers.get("destination")
        if not destination:
            self._fail("Missing header", "SEND needs the destination header")
            return
        # Explicit subscribers of a destination get a copy, requests included (as VDSM).
        forwarded = self._broker.forward(destination, headers, frame.body)
        if is_request_destination(destination):
            reply_to = headers.get("reply-to") or DEFAULT_RESPONSE_DESTINATION
            self._start_request(frame.body, reply_to, headers.get(FLOW_ID_HEADER))
        elif not forwarded:
            log.warning(
                "%s: SEND to %s, which nobody subscribed to; dropped", self.name, destination
            )

    # -- requests -----------------------------------------------------------------------

    def _start_request(self, body: bytes, reply_to: str, flow_id: str | None) -> None:
        ctx = CallContext(
            client_id=self._client_id,
            peer=self.peer,
            peer_subject=self.peer_subject,
            flow_id=flow_id,
        )
        self.in_flight += 1
        if self.in_flight >= MAX_IN_FLIGHT:
            self._pause(_PAUSED_IN_FLIGHT)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: request of %d bytes, reply to %s, flow %s (%d running)",
                self.name,
                len(body),
                reply_to,
                flow_id,
                self.in_flight,
            )
        task = self._loop.create_task(self._run_request(body, ctx, reply_to))
        self._server.track(task)
        task.add_done_callback(self._request_done)

    async def _run_request(self, body: bytes, ctx: CallContext, reply_to: str) -> None:
        try:
            response = await self._handler(body, ctx)
        except Exception:
            log.exception("%s: request handler failed (flow %s)", self.name, ctx.flow_id)
            response = (
                b'{"jsonrpc":"2.0","error":{"code":-32603,"message":"Internal error"},"id":null}'
            )
        if response is None:
            return
        if not self._broker.deliver(reply_to, response):
            log.warning(
                "%s: response for %s dropped: nobody subscribed to it (flow %s)",
                self.name,
                reply_to,
                ctx.flow_id,
            )

    def _request_done(self, task: asyncio.Task[None]) -> None:
        self.in_flight -= 1
        if self._paused & _PAUSED_IN_FLIGHT and self.in_flight < MAX_IN_FLIGHT:
            self._resume(_PAUSED_IN_FLIGHT)
        if self._disconnect_receipt is not None:
            self._maybe_finish_disconnect()

    # -- timers -------------------------------------------------------------------------

    def _stop_timers(self) -> None:
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        self._heartbeats.stop()

    def _on_connect_timeout(self) -> None:
        self._connect_timer = None
        if self.stomp_connected or self.closing:
            return
        log.warning(
            "%s sent no CONNECT within %g s; closing it",
            self.name,
            self._server.rpc.connect_timeout,
        )
        self._fail("Connect timeout", "no CONNECT frame in time")

    def _on_silence(self, silent_for: float) -> None:
        if self.closing:
            return
        log.warning(
            "%s silent for %.1f s (promised a heart-beat every %.1f s); closing it",
            self.name,
            silent_for,
            self._heartbeats.silence_limit / INCOMING_GRACE,
        )
        self.abort()
