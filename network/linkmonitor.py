"""Watches the kernel's link, address and route notifications, and folds bursts of them.

Owns one non-blocking rtnetlink socket, opened in the managed network namespace and
subscribed to the link, IPv4/IPv6 address and IPv4 route multicast groups, read on the
asyncio loop (``add_reader``: no thread, nothing blocks; messages are parsed with
``struct``, only the fields needed). Link messages that change what the capabilities
report (a link appears or goes, its name, up/running flags, operational state, MTU or
master changes) are handed to ``on_link`` with the device name; any message at all to
``on_any`` (the capabilities cache is stale). Bridge port notifications (``AF_BRIDGE``)
are ignored. A receive-buffer overflow (``ENOBUFS``, events lost) counts as a change of
everything. :class:`Debouncer` turns any number of changes within ``delay`` seconds into
one callback. udev is not used: the agent's devices live in a network namespace whose
uevents udev (in the host's namespace) never sees, and rtnetlink reports every link.
Must not change anything in the kernel or decide what is published.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from network import linkdump
from network.linkdump import IFLA_IFNAME, IFLA_MASTER, IFLA_MTU, IFLA_OPERSTATE
from network.netlink import in_netns

log = logging.getLogger("vdsm_py.network")

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR

RTM_NEWLINK, RTM_DELLINK = 16, 17
NLMSG_ERROR, NLMSG_OVERRUN = 2, 4
AF_BRIDGE = 7
IFF_UP, IFF_RUNNING, IFF_LOWER_UP = 0x1, 0x40, 0x10000
OPERSTATES = linkdump.OPERSTATES

_NLMSGHDR = linkdump.NLMSGHDR
_IFINFOMSG = linkdump.IFINFOMSG
_RCVBUF = 4 * 1024 * 1024
ALL = "*"  # the name handed to on_link when events were lost


@dataclass(frozen=True)
class LinkState:
    """What the capabilities show of one link; a message that changes none is noise."""

    name: str
    flags: int
    operstate: str
    mtu: int
    master: int


def parse_link(body: memoryview) -> tuple[int, int, LinkState]:
    """(family, index, state) of an ``ifinfomsg`` with its attributes."""
    family, index, flags, attrs = linkdump.parse_link(body)
    name = attrs.get(IFLA_IFNAME)
    operstate = attrs.get(IFLA_OPERSTATE)
    mtu = attrs.get(IFLA_MTU)
    master = attrs.get(IFLA_MASTER)
    mask = IFF_UP | IFF_RUNNING | IFF_LOWER_UP
    return family, index, LinkState(
        bytes(name).split(b"\0", 1)[0].decode(errors="replace") if name is not None else "",
        flags & mask,
        OPERSTATES[operstate[0]] if operstate is not None and len(operstate) >= 1
        and operstate[0] < len(OPERSTATES) else "unknown",
        int.from_bytes(mtu[:4], "little") if mtu is not None and len(mtu) >= 4 else 0,
        int.from_bytes(master[:4], "little") if master is not None and len(master) >= 4
        else 0,
    )


def _open(netns: str) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK
                         | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        sock.bind((0, GROUPS))
    except OSError:
        sock.close()
        raise
    return sock


class LinkMonitor:
    """rtnetlink notifications of one namespace ('' = the daemon's own), on the loop."""

    def __init__(self, netns: str, on_link: Callable[[str], None],
                 on_any: Callable[[], None]) -> None:
        self.netns = netns
        self.on_link = on_link
        self.on_any = on_any
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._links: dict[int, LinkState] = {}

    @property
    def running(self) -> bool:
        return self._sock is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the socket (in the namespace: the socket stays bound to it) and watch it."""
        self._sock = in_netns(self.netns, lambda: _open(self.netns))
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._readable)
        log.info("watching link changes in %s", f"namespace {self.netns}" if self.netns
                 else "the host's namespace")

    def stop(self) -> None:
        if self._sock is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(256 * 1024)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    log.error("link monitor: cannot read netlink: %s; stopped", exc)
                    self.stop()
                    self.on_any()
                    return
                log.warning("link monitor: netlink buffer overflow, some changes were lost")
                self._links.clear()
                self.on_any()
                self.on_link(ALL)
                continue
            self._messages(memoryview(data))

    def _messages(self, data: memoryview) -> None:
        pos, changed = 0, False
        while pos + _NLMSGHDR.size <= len(data):
            length, kind, _flags, _seq, _port = _NLMSGHDR.unpack_from(data, pos)
            if length < _NLMSGHDR.size or pos + length > len(data):
                break
            changed = True
            if kind in (RTM_NEWLINK, RTM_DELLINK):
                self._link(kind, data[pos + _NLMSGHDR.size:pos + length])
            elif kind in (NLMSG_ERROR, NLMSG_OVERRUN):
                self.on_link(ALL)
            pos += linkdump.align(length)
        if changed:
            self.on_any()

    def _link(self, kind: int, body: memoryview) -> None:
        if len(body) < _IFINFOMSG.size:
            return
        family, index, state = parse_link(body)
        if family == AF_BRIDGE:
            return  # bridge port (STP) notifications: not a change of the link
        if kind == RTM_DELLINK:
            self._links.pop(index, None)
            self.on_link(state.name)
        elif self._links.get(index) != state:
            self._links[index] = state
            self.on_link(state.name)


class Debouncer:
    """Calls ``flush(names)`` once for every burst of :meth:`touch` calls: at most once per
    ``delay`` seconds, ``delay`` after the first change of the burst. While ``hold()`` is
    true (a setupNetworks in progress) the flush waits another ``delay``."""

    def __init__(self, delay: float, flush: Callable[[set[str]], None],
                 hold: Callable[[], bool] = lambda: False) -> None:
        self.delay = delay
        self.flush = flush
        self.hold = hold
        self._pending: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None

    def touch(self, name: str) -> None:
        self._pending.add(name)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._fire)

    def clear(self) -> None:
        """Forget the pending changes (someone just told the clients about them)."""
        self._pending.clear()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()

    def _fire(self) -> None:
        self._timer = None
        if not self._pending:
            return
        if self.hold():
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._fire)
            return
        names, self._pending = self._pending, set()
        self.flush(names)
