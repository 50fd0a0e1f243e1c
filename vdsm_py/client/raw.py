"""A raw STOMP connection for tests and diagnostics: send any bytes, read frames as they come.

Owns: nothing but a TLS (or plaintext) stream and a frame parser. It does no protocol work
on its own (no automatic CONNECT, heart-beats or subscriptions), so tests can misbehave on
purpose: send malformed or oversize frames, go silent, trickle bytes, skip CONNECT.

Must not: be used by production code; use :class:`~vdsm_py.client.aio.Client` there.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

from vdsm_py.client.errors import ConnectionLost
from vdsm_py.transport.stomp import Frame, FrameParser, encode

_CLOSED_ERRORS = (ConnectionError, ssl.SSLError, EOFError, asyncio.IncompleteReadError)


class RawStomp:
    """One connection; ``send``/``send_bytes`` out, ``read_frame``/``read_until_closed`` in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = FrameParser(1 << 30)
        self._frames: deque[Frame] = deque()
        self.closed_by_peer = False

    @classmethod
    async def open(
        cls, host: str, port: int, *, ssl_context: ssl.SSLContext | None, timeout: float = 10.0
    ) -> RawStomp:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_context), timeout
        )
        return cls(reader, writer)

    @property
    def heartbeats(self) -> int:
        """EOLs received between frames so far."""
        return self.parser.heartbeats

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, frame: Frame) -> None:
        self.writer.write(encode(frame))

    async def drain(self) -> None:
        await self.writer.drain()

    async def _receive(self, timeout: float) -> bool:
        """Read one chunk into the parser; False at end of stream."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except _CLOSED_ERRORS:
            data = b""
        if not data:
            self.closed_by_peer = True
            return False
        self._frames.extend(self.parser.feed(data))
        return True

    async def read_frame(self, timeout: float = 10.0) -> Frame:
        """The next frame; ``ConnectionLost`` if the peer closes first."""
        while not self._frames:
            if not await self._receive(timeout):
                raise ConnectionLost("the server closed the connection")
        return self._frames.popleft()

    async def read_until_closed(self, timeout: float = 10.0) -> list[Frame]:
        """Every frame until the peer closes; ``TimeoutError`` if it stays open."""
        async with asyncio.timeout(timeout):
            while await self._receive(timeout):
                pass
        frames = list(self._frames)
        self._frames.clear()
        return frames

    async def wait_heartbeats(self, count: int, timeout: float) -> int:
        """Read until ``count`` heart-beats arrived in total; return the frames' count seen."""
        async with asyncio.timeout(timeout):
            while self.parser.heartbeats < count:
                if not await self._receive(timeout):
                    raise ConnectionLost("the server closed the connection")
        return self.parser.heartbeats

    async def connect(
        self, *, accept_version: str = "1.2", heartbeat: str = "0,0", timeout: float = 10.0
    ) -> Frame:
        """CONNECT and return the server's answer (CONNECTED or ERROR)."""
        self.send(
            Frame(
                "CONNECT",
                {"accept-version": accept_version, "host": "test", "heart-beat": heartbeat},
            )
        )
        return await self.read_frame(timeout)

    async def subscribe(self, destination: str, sub_id: str, *, timeout: float = 10.0) -> None:
        """SUBSCRIBE and wait for its RECEIPT (so the subscription surely exists)."""
        receipt = f"sub-{sub_id}"
        self.send(
            Frame("SUBSCRIBE", {"destination": destination, "id": sub_id, "receipt": receipt})
        )
        frame = await self.read_frame(timeout)
        if frame.command != "RECEIPT" or frame.headers.get("receipt-id") != receipt:
            raise AssertionError(f"expected RECEIPT {receipt}, got {frame!r}")

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.transport.abort()
