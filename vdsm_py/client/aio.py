"""The asyncio JSON-RPC client of a vdsm_py (or VDSM) host, over STOMP 1.2 and TLS.

Owns: one connection speaking as VDSM's own client does (CONNECT with accept-version 1.2,
SUBSCRIBE to a private reply destination, every call a JSON-RPC batch of one sent to
``jms.topic.vdsm_requests`` with ``reply-to`` and the optional ``ovirtCorrelationId``),
matching responses to calls by id, heart-beats both ways, the event subscription, and failing
every pending call with :class:`~vdsm_py.client.errors.ConnectionLost` when the connection
ends.

Must not: know the API schema or any verb; block (see :mod:`vdsm_py.client.sync` for the
blocking wrapper).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from typing import Any, Self

import orjson

from vdsm_py.client.errors import ConnectionLost, RpcError, StompError
from vdsm_py.client.stream import EventStream
from vdsm_py.transport.heartbeat import Heartbeats
from vdsm_py.transport.stomp import (
    Frame,
    FrameParser,
    StompProtocolError,
    encode,
    parse_heartbeat,
)

log = logging.getLogger("vdsm_py.client")

REQUESTS = "jms.topic.vdsm_requests"
EVENTS = "jms.queue.events"
MAX_FRAME_SIZE = 256 * 1024 * 1024
SILENCE_FACTOR = 2.0  # the host is dead after this many missed heart-beat intervals


class _Protocol(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self._client = client
        self._parser = FrameParser(MAX_FRAME_SIZE)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._client._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        client = self._client
        client._heartbeats.last_read = client._loop.time()
        try:
            frames = self._parser.feed(data)
        except StompProtocolError as exc:
            client._fail(ConnectionLost(f"the host sent a malformed frame: {exc}"))
            return
        for frame in frames:
            client._on_frame(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._on_lost(exc)

    def pause_writing(self) -> None:
        self._client._write_paused = self._client._loop.create_future()

    def resume_writing(self) -> None:
        waiter = self._client._write_paused
        self._client._write_paused = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Client:
    """A connection to a host's JSON-RPC API. Create it with :meth:`connect`."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._connected: asyncio.Future[Frame] = self._loop.create_future()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._error: BaseException | None = None
        self._closing = False
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._abandoned: set[str] = set()  # calls that timed out, still running on the host
        self._receipts: dict[str, asyncio.Future[None]] = {}
        self._streams: dict[str, EventStream] = {}
        self._reply_to = str(uuid.uuid4())
        self._reply_sub = str(uuid.uuid4())
        self._write_paused: asyncio.Future[None] | None = None
        self._heartbeats = Heartbeats(self._loop, self._write_if_open, self._on_silence)
        self.server_heartbeat = (0, 0)

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        timeout: float = 30.0,
        heartbeat: tuple[int, int] = (0, 24000),
    ) -> Client:
        """Connect, negotiate STOMP 1.2 and subscribe to a private reply destination.

        ``heartbeat`` is STOMP's ``cx,cy`` in ms: how often we promise to send, how often
        we want to hear from the host. Raises ``OSError``/``ssl.SSLError`` when the host
        cannot be reached or refuses us, :class:`StompError` when it refuses the session,
        ``TimeoutError`` after ``timeout`` seconds.
        """
        client = cls(host, port)
        try:
            async with asyncio.timeout(timeout):
                await client._open(ssl_context, timeout, heartbeat)
        except TimeoutError:
            client._abort()
            raise TimeoutError(
                f"no STOMP session with {host}:{port} within {timeout:g} s"
            ) from None
        except BaseException:
            client._abort()
            raise
        return client

    async def _open(
        self, ssl_context: ssl.SSLContext | None, timeout: float, heartbeat: tuple[int, int]
    ) -> None:
        await self._loop.create_connection(
            lambda: _Protocol(self),
            self.host,
            self.port,
            ssl=ssl_context,
            ssl_handshake_timeout=timeout if ssl_context is not None else None,
        )
        cx, cy = heartbeat
        self._write(
            encode(
                Frame(
                    "CONNECT",
                    {
                        "accept-version": "1.2",
                        "host": self.host,
                        "heart-beat": f"{cx},{cy}",
                    },
                )
            )
        )
        connected = await self._connected
        sx, sy = parse_heartbeat(connected.headers.get("heart-beat", "0,0"))
        self.server_heartbeat = (sx, sy)
        send_every = max(cx, sy) / 1000.0 if cx and sy else 0.0
        expect_every = max(cy, sx) / 1000.0 if cy and sx else 0.0
        self._write(
            encode(
                Frame(
                    "SUBSCRIBE",
                    {
                        "destination": self._reply_to,
                        "id": self._reply_sub,
                        "ack": "auto",
                    },
                )
            )
        )
        self._heartbeats.start(send_every, expect_every * SILENCE_FACTOR)

    # -- public API ---------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return not self._closing and not self._lost.done() and self._error is None

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = 60.0,
        flow_id: str | None = None,
    ) -> Any:
        """Call ``method`` and return its result; :class:`RpcError` for an error answer."""
        self._check_open()
        call_id = str(uuid.uuid4())
        body = orjson.dumps(
            [{"jsonrpc": "2.0", "method": method, "params": params or {}, "id": call_id}]
        )
        headers = {
            "destination": REQUESTS,
            "content-type": "application/json",
            "reply-to": self._reply_to,
        }
        if flow_id:
            headers["ovirtCorrelationId"] = flow_id
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[call_id] = future
        try:
            self._write(encode(Frame("SEND", headers, body)))
            if self._write_paused is not None:
                await asyncio.shield(self._write_paused)
            if timeout is None:
                return await future
            try:
                async with asyncio.timeout(timeout):
                    return await future
            except TimeoutError:
                self._abandoned.add(call_id)
                raise TimeoutError(f"no response to {method} within {timeout:g} s") from None
        finally:
            self._pending.pop(call_id, None)

    async def subscribe_events(
        self, *, confirm: bool = False, timeout: float = 30.0
    ) -> EventStream:
        """Subscribe to ``jms.queue.events``; iterate the result for ``(method, params)``.

        With ``confirm`` the SUBSCRIBE carries a receipt and this returns only once the host
        has registered it (vdsm_py answers receipts on SUBSCRIBE; VDSM does not).
        """
        self._check_open()
        sub_id = str(uuid.uuid4())
        stream = EventStream(self, sub_id)
        self._streams[sub_id] = stream
        headers = {"destination": EVENTS, "id": sub_id, "ack": "auto"}
        if confirm:
            await self._with_receipt(Frame("SUBSCRIBE", headers), timeout)
        else:
            self._write(encode(Frame("SUBSCRIBE", headers)))
        return stream

    async def close(self, timeout: float = 2.0) -> None:
        """Close; idempotent. With no call outstanding, first a DISCONNECT whose RECEIPT is
        awaited up to ``timeout`` (the host answers it once its running requests are done)."""
        if self._closing:
            await asyncio.wait([self._lost], timeout=timeout)
            return
        self._closing = True
        self._heartbeats.stop()
        transport = self._transport
        if (
            transport is not None
            and self._connected.done()
            and self._error is None
            and not self._lost.done()
            and not self._pending
            and not self._abandoned  # the host would finish those before its RECEIPT
        ):
            try:
                await self._with_receipt(Frame("DISCONNECT", {}), timeout)
            except (ConnectionError, TimeoutError):
                pass
        if transport is not None and not self._lost.done():
            transport.close()
            await asyncio.wait([self._lost], timeout=timeout)
            if not self._lost.done():
                transport.abort()
        self._finish(ConnectionLost("the client was closed"), user_close=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- internals ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing or self._lost.done():
            raise ConnectionLost(f"the connection to {self.host}:{self.port} is closed")

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionLost(f"the connection to {self.host}:{self.port} is closed")
        transport.write(data)
        self._heartbeats.last_write = self._loop.time()

    def _write_if_open(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._write(data)

    async def _with_receipt(self, frame: Frame, timeout: float) -> None:
        receipt = str(uuid.uuid4())
        frame.headers["receipt"] = receipt
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._receipts[receipt] = waiter
        try:
            self._write(encode(frame))
            async with asyncio.timeout(timeout):
                await waiter
        finally:
            self._receipts.pop(receipt, None)

    def _unsubscribe(self, sub_id: str) -> None:
        if self._streams.pop(sub_id, None) is not None and self.is_open:
            self._write(encode(Frame("UNSUBSCRIBE", {"id": sub_id})))

    def _on_frame(self, frame: Frame) -> None:
        command = frame.command
        if command == "MESSAGE":
            sub = frame.headers.get("subscription")
            if sub == self._reply_sub:
                self._on_response(frame.body)
            elif sub in self._streams:
                self._streams[sub]._put(frame.body)
            else:
                log.debug("message for unknown subscription %s ignored", sub)
        elif command == "RECEIPT":
            waiter = self._receipts.pop(frame.headers.get("receipt-id", ""), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif command == "CONNECTED":
            if not self._connected.done():
                self._connected.set_result(frame)
        elif command == "ERROR":
            message = frame.headers.get("message", "ERROR")
            detail = frame.body.decode("utf-8", "replace")
            log.warning("host %s:%d sent ERROR: %s %s", self.host, self.port, message, detail)
            self._fail(StompError(message, detail))
        else:
            log.debug("ignoring %s frame from the host", command)

    def _on_response(self, body: bytes) -> None:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("ignoring a response that is not JSON: %r", body[:200])
            return
        for response in message if isinstance(message, list) else [message]:
            if not isinstance(response, dict):
                continue
            call_id = response.get("id")
            if isinstance(call_id, str) and call_id in self._abandoned:
                self._abandoned.discard(call_id)
                continue
            future = self._pending.get(call_id) if isinstance(call_id, str) else None
            if future is None and call_id is None and len(self._pending) == 1:
                # An error the host could not tie to a request id (e.g. unparsable JSON).
                future = next(iter(self._pending.values()))
            if future is None or future.done():
                log.debug("response to unknown or finished call %r ignored", call_id)
                continue
            error = response.get("error")
            if error is not None:
                if isinstance(error, dict):
                    future.set_exception(
                        RpcError(
                            int(error.get("code", -32603)),
                            str(error.get("message", "")),
                            error.get("data"),
                        )
                    )
                else:
                    future.set_exception(RpcError(-32603, str(error)))
            else:
                future.set_result(response.get("result"))

    def _fail(self, error: BaseException) -> None:
        """A fatal protocol problem: remember it, fail everything, drop the connection."""
        if self._error is None:
            self._error = error
        self._finish(error)
        if self._transport is not None:
            self._transport.abort()

    def _on_lost(self, exc: Exception | None) -> None:
        self._heartbeats.stop()
        if not self._lost.done():
            self._lost.set_result(None)
        if self._closing:
            error: BaseException = ConnectionLost("the client was closed")
        elif self._error is not None:
            error = self._error
        else:
            reason = f": {exc}" if exc else " by the host"
            error = ConnectionLost(f"connection to {self.host}:{self.port} closed{reason}")
        self._finish(error, user_close=self._closing and self._error is None)

    def _finish(self, error: BaseException, *, user_close: bool = False) -> None:
        if not self._connected.done():
            self._connected.set_exception(error)
            self._connected.exception()  # retrieved: connect() may not be waiting any more
        for future in (*self._pending.values(), *self._receipts.values()):
            if not future.done():
                future.set_exception(error)
        for stream in self._streams.values():
            stream._end(None if user_close else error)
        if self._write_paused is not None and not self._write_paused.done():
            self._write_paused.set_result(None)

    def _abort(self) -> None:
        self._closing = True
        self._heartbeats.stop()
        if self._transport is not None:
            self._transport.abort()

    def _on_silence(self, silent_for: float) -> None:
        self._fail(
            ConnectionLost(
                f"{self.host}:{self.port} silent for {silent_for:.0f} s "
                "(no heart-beat); connection dropped"
            )
        )
