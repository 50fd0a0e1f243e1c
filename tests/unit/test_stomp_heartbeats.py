"""Heart-beat timing (vdsm_py.transport.heartbeat) on a virtual clock: deterministic, instant."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from vdsm_py.transport.heartbeat import HEARTBEAT, Heartbeats


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualLoop:
    """Just enough of an event loop for timers: ``time``, ``call_at``, and ``advance``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list[tuple[float, int, _Handle, Callable[[], Any]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], Any]) -> _Handle:
        handle = _Handle()
        heapq.heappush(self._timers, (when, next(self._seq), handle, callback))
        return handle

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, handle, callback = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not handle.cancelled:
                callback()
        self.now = end


class Peer:
    def __init__(self, loop: VirtualLoop) -> None:
        self.loop = loop
        self.sent: list[tuple[float, bytes]] = []
        self.silences: list[float] = []
        self.hb = Heartbeats(loop, self.write, self.silences.append)  # type: ignore[arg-type]

    def write(self, data: bytes) -> None:
        self.sent.append((self.loop.now, data))
        self.hb.last_write = self.loop.now


def test_heartbeat_sent_every_interval_when_idle():
    loop = VirtualLoop()
    peer = Peer(loop)
    peer.hb.start(10.0, 0.0)
    loop.advance(35.0)
    assert [t - 1000.0 for t, _ in peer.sent] == [10.0, 20.0, 30.0]
    assert all(data == HEARTBEAT for _, data in peer.sent)


def test_no_heartbeat_while_other_traffic_flows():
    loop = VirtualLoop()
    peer = Peer(loop)
    peer.hb.start(10.0, 0.0)
    for _ in range(6):
        loop.advance(5.0)
        peer.write(b"MESSAGE...")
    assert all(data != HEARTBEAT for _, data in peer.sent)
    loop.advance(10.0)
    assert peer.sent[-1] == (1040.0, HEARTBEAT)  # 10 s after the last message


def test_silent_peer_reported_after_the_limit_and_not_before():
    loop = VirtualLoop()
    peer = Peer(loop)
    peer.hb.start(0.0, 3.0)
    loop.advance(2.0)
    peer.hb.last_read = loop.now  # the peer said something
    loop.advance(2.9)
    assert peer.silences == []
    loop.advance(0.2)
    assert peer.silences == [3.0]


def test_stop_cancels_everything():
    loop = VirtualLoop()
    peer = Peer(loop)
    peer.hb.start(1.0, 2.0)
    peer.hb.stop()
    loop.advance(100.0)
    assert peer.sent == [] and peer.silences == []


def test_zero_intervals_schedule_nothing():
    loop = VirtualLoop()
    peer = Peer(loop)
    peer.hb.start(0.0, 0.0)
    assert loop._timers == []
