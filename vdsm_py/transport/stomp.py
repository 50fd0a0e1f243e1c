"""STOMP 1.2 framing, sans-io: frames to bytes and bytes to frames.

Owns: the :class:`Frame` value, :func:`encode` (with STOMP 1.2 header escaping and a
``content-length`` for every body) and the incremental :class:`FrameParser` (heart-beat EOLs
between frames, ``content-length`` bodies that may hold NUL bytes, NUL-terminated bodies,
header unescaping, frames split at any byte, a frame size limit enforced while buffering).

Must not: do I/O, know about sockets, TLS, subscriptions or JSON-RPC. Both the server
(:mod:`vdsm_py.transport.connection`) and the client library use it.

This code is on the path of every call: it scans with ``bytes.find`` and never loops over
bytes in Python (except over the rare heart-beat EOLs between frames).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_MAX_FRAME_SIZE = 10 * 1024 * 1024

# Frames whose headers are never escaped (STOMP 1.2, "Value Encoding").
_RAW_HEADER_COMMANDS = frozenset(("CONNECT", "CONNECTED", "STOMP"))

_ESCAPES = str.maketrans({"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"})
_UNESCAPES = {"\\\\": "\\", "\\r": "\r", "\\n": "\n", "\\c": ":"}
_ESCAPE_SEQUENCE = re.compile(r"\\(.?)", re.DOTALL)


class StompProtocolError(ValueError):
    """The peer sent bytes that are not a valid STOMP 1.2 frame (or one too large)."""


@dataclass(slots=True)
class Frame:
    """One STOMP frame. Header names and values are text; the body is bytes."""

    command: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def __repr__(self) -> str:
        return f"Frame({self.command!r}, {self.headers!r}, <{len(self.body)} bytes>)"


def escape(text: str) -> str:
    """STOMP 1.2 header escaping of one name or value."""
    if "\\" in text or ":" in text or "\n" in text or "\r" in text:
        return text.translate(_ESCAPES)
    return text


def _unescape_match(match: re.Match[str]) -> str:
    try:
        return _UNESCAPES[match.group(0)]
    except KeyError:
        raise StompProtocolError(
            f"invalid escape sequence {match.group(0)!r} in a header"
        ) from None


def unescape(text: str) -> str:
    """Undo STOMP 1.2 header escaping; an undefined escape is a protocol error."""
    if "\\" not in text:
        return text
    return _ESCAPE_SEQUENCE.sub(_unescape_match, text)


def encode(frame: Frame) -> bytes:
    """The wire form of ``frame``; ``content-length`` is computed, never taken from headers."""
    command = frame.command
    lines = [command]
    raw = command in _RAW_HEADER_COMMANDS
    for name, value in frame.headers.items():
        if name == "content-length":
            continue
        if not isinstance(value, str):
            value = str(value)
        if raw:
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
                raise ValueError(f"{command} header {name!r} cannot be sent unescaped")
            lines.append(f"{name}:{value}")
        else:
            lines.append(f"{escape(name)}:{escape(value)}")
    body = frame.body
    if isinstance(body, str):
        body = body.encode("utf-8")
    if body:
        lines.append(f"content-length:{len(body)}")
    lines.append("\n")
    return "\n".join(lines).encode("utf-8") + body + b"\0"


def parse_heartbeat(value: str | None) -> tuple[int, int]:
    """``(x, y)`` in ms from a ``heart-beat`` header; what does not parse counts as 0."""
    if not value:
        return 0, 0
    first, _, second = value.partition(",")
    first, second = first.strip(), second.strip()
    return (
        int(first) if first.isascii() and first.isdigit() else 0,
        int(second) if second.isascii() and second.isdigit() else 0,
    )


def _parse_head(head: bytes) -> Frame:
    """Command and headers from the bytes before the blank line."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise StompProtocolError("frame headers are not valid UTF-8") from None
    lines = text.split("\n")
    command = lines[0]
    command = command.removesuffix("\r")
    if not (command.isascii() and command.isalpha()):
        shown = command if len(command) <= 40 else command[:40] + "..."
        raise StompProtocolError(f"malformed command line {shown!r}")
    headers: dict[str, str] = {}
    raw = command in _RAW_HEADER_COMMANDS
    for line in lines[1:]:
        line = line.removesuffix("\r")
        colon = line.find(":")
        if colon <= 0:
            shown = line if len(line) <= 40 else line[:40] + "..."
            raise StompProtocolError(f"malformed header line {shown!r}")
        name = line[:colon]
        value = line[colon + 1 :]
        if not raw and "\\" in line:
            name = unescape(name)
            value = unescape(value)
        # STOMP 1.2: when a header repeats, the first one counts.
        if name not in headers:
            headers[name] = value
    return Frame(command, headers)


class FrameParser:
    """Incremental STOMP 1.2 parser: ``feed`` bytes as they arrive, get whole frames back.

    After a :class:`StompProtocolError` the stream is unusable (framing is lost); every
    later ``feed`` raises the same error. ``heartbeats`` counts the EOLs seen between frames.
    """

    __slots__ = (
        "_body_at",
        "_buf",
        "_error",
        "_frame",
        "_length",
        "_scan",
        "heartbeats",
        "max_frame_size",
    )

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self.heartbeats = 0
        self._buf = bytearray()
        # State of a frame whose headers are parsed but whose body is incomplete; offsets
        # are relative to the start of the frame, which is always offset 0 of ``_buf``.
        self._frame: Frame | None = None
        self._body_at = 0
        self._length = -1
        # Where the next search for a terminator may start (bytes before it were scanned).
        self._scan = 0
        self._error: StompProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data``; return the frames it completed, in order."""
        if self._error is not None:
            raise self._error
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        frames: list[Frame] = []
        try:
            pos = self._parse(buf, frames)
        except StompProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            raise
        if buf is self._buf:
            del self._buf[:pos]
        elif pos < len(buf):
            self._buf = bytearray(buf[pos:])
        return frames

    def _parse(self, buf: bytes | bytearray, frames: list[Frame]) -> int:
        """Parse whole frames from ``buf``; return the offset of the first unused byte."""
        end = len(buf)
        limit = self.max_frame_size
        pos = 0
        while pos < end:
            if self._frame is None:
                # Heart-beats: EOLs (LF or CR LF) between frames.
                byte = buf[pos]
                if byte == 10:
                    self.heartbeats += 1
                    pos += 1
                    continue
                if byte == 13:
                    if pos + 1 >= end:
                        return pos
                    if buf[pos + 1] == 10:
                        self.heartbeats += 1
                        pos += 2
                        continue
                    raise StompProtocolError("stray carriage return between frames")
                # Headers end at the first empty line (LF LF, or CR LF CR LF / LF CR LF).
                scan = pos + self._scan
                lf = buf.find(b"\n\n", scan)
                crlf = buf.find(b"\n\r\n", scan, lf + 1 if lf >= 0 else end)
                if crlf >= 0:
                    head_end, body_at = crlf, crlf + 3
                elif lf >= 0:
                    head_end, body_at = lf, lf + 2
                else:
                    if end - pos > limit:
                        raise StompProtocolError(
                            f"frame headers exceed the size limit of {limit} bytes"
                        )
                    self._scan = max(0, end - pos - 2)
                    return pos
                if body_at - pos > limit:
                    raise StompProtocolError(
                        f"frame headers exceed the size limit of {limit} bytes"
                    )
                frame = _parse_head(bytes(buf[pos:head_end]))
                length = -1
                declared = frame.headers.get("content-length")
                if declared is not None:
                    if not (declared.isascii() and declared.isdigit()):
                        raise StompProtocolError(f"invalid content-length {declared!r}")
                    length = int(declared)
                    if body_at - pos + length + 1 > limit:
                        raise StompProtocolError(
                            f"frame of {body_at - pos + length + 1} bytes exceeds the size "
                            f"limit of {limit} bytes"
                        )
                self._frame = frame
                self._body_at = body_at - pos
                self._length = length
                self._scan = self._body_at
            frame = self._frame
            body_at = pos + self._body_at
            length = self._length
            if length >= 0:
                nul = body_at + length
                if nul >= end:
                    return pos
                if buf[nul] != 0:
                    raise StompProtocolError(
                        "frame body is not followed by NUL at its content-length"
                    )
            else:
                nul = buf.find(b"\0", pos + self._scan)
                if nul < 0:
                    if end - pos > limit:
                        raise StompProtocolError(f"frame exceeds the size limit of {limit} bytes")
                    self._scan = end - pos
                    return pos
                if nul + 1 - pos > limit:
                    raise StompProtocolError(f"frame exceeds the size limit of {limit} bytes")
            frame.body = bytes(buf[body_at:nul])
            frames.append(frame)
            self._frame = None
            self._scan = 0
            pos = nul + 1
        return pos
