"""STOMP heart-beats of one connection, for the server and the client alike.

Owns: one timer per connection that sends our heart-beat (a bare EOL) when nothing else was
written for ``send_every`` seconds, and reports the peer as dead when nothing at all was
read for ``silence_limit`` seconds. The owner stamps :attr:`last_read` / :attr:`last_write`
on its I/O (one ``loop.time()`` each) and decides what "dead" means (close, fail calls).

Must not: negotiate (that is the CONNECT/CONNECTED exchange of its owner) or do I/O itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

HEARTBEAT = b"\n"


class Heartbeats:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[bytes], None],
        on_silence: Callable[[float], None],
    ) -> None:
        self._loop = loop
        self._send = send
        self._on_silence = on_silence
        self.last_read = self.last_write = loop.time()
        self.send_every = 0.0  # seconds, 0 = we send none
        self.silence_limit = 0.0  # seconds, 0 = the peer may stay silent
        self._timer: asyncio.TimerHandle | None = None

    def start(self, send_every: float, silence_limit: float) -> None:
        """Begin (or change) heart-beating; zero disables that direction."""
        self.send_every = send_every
        self.silence_limit = silence_limit
        self.last_read = self.last_write = self._loop.time()
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.send_every = self.silence_limit = 0.0

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadlines = []
        if self.send_every:
            deadlines.append(self.last_write + self.send_every)
        if self.silence_limit:
            deadlines.append(self.last_read + self.silence_limit)
        if deadlines:
            self._timer = self._loop.call_at(min(deadlines), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        if self.silence_limit and now - self.last_read >= self.silence_limit:
            self._on_silence(now - self.last_read)  # the owner closes, and stops us
            return
        if self.send_every and now - self.last_write >= self.send_every * 0.95:
            self._send(HEARTBEAT)  # the owner's writer stamps last_write
        self._schedule()
