"""The link monitor's parsing of rtnetlink messages and its debouncing, without a kernel.

Messages are built byte by byte as the kernel lays them out (``nlmsghdr``, ``ifinfomsg``,
4-aligned attributes); the socket side is covered by tests/integration/test_network_events.py.
"""

from __future__ import annotations

import asyncio
import struct

from network.linkmonitor import (
    AF_BRIDGE,
    IFF_LOWER_UP,
    IFF_UP,
    RTM_DELLINK,
    RTM_NEWLINK,
    Debouncer,
    LinkMonitor,
    parse_link,
)

IFF_BROADCAST = 0x2  # not a flag the capabilities show


def attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def ifinfo(index: int, flags: int, name: str, *, family: int = 0, operstate: int = 6,
           mtu: int = 1500, master: int = 0) -> bytes:
    body = struct.pack("=BxHiII", family, 1, index, flags, 0xFFFFFFFF)
    body += attr(3, name.encode() + b"\0") + attr(4, struct.pack("=I", mtu))
    body += attr(16, bytes([operstate]))
    if master:
        body += attr(10, struct.pack("=I", master))
    return body


def message(kind: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_parse_link_reads_name_flags_operstate_mtu_master():
    family, index, state = parse_link(memoryview(
        ifinfo(7, IFF_UP | IFF_LOWER_UP | IFF_BROADCAST, "veth_a", operstate=2, mtu=9000,
               master=3)))
    assert (family, index) == (0, 7)
    assert state.name == "veth_a" and state.operstate == "down"
    assert state.flags == IFF_UP | IFF_LOWER_UP  # other flags are not a change
    assert (state.mtu, state.master) == (9000, 3)


def monitor() -> tuple[LinkMonitor, list[str], list[int]]:
    names: list[str] = []
    anys: list[int] = []
    return LinkMonitor("", names.append, lambda: anys.append(1)), names, anys


def test_repeated_identical_link_messages_count_once_and_bridge_ports_never():
    mon, names, anys = monitor()
    up = ifinfo(5, IFF_UP, "br0")
    batch = (message(RTM_NEWLINK, up) + message(RTM_NEWLINK, up)
             + message(RTM_NEWLINK, ifinfo(6, IFF_UP, "veth_a", family=AF_BRIDGE)))
    mon._messages(memoryview(batch))
    assert names == ["br0"]
    assert anys == [1]  # one batch: the capabilities cache is invalidated once
    mon._messages(memoryview(message(RTM_NEWLINK, ifinfo(5, 0, "br0"))))  # set down
    mon._messages(memoryview(message(RTM_DELLINK, ifinfo(5, 0, "br0"))))
    assert names == ["br0", "br0", "br0"]


async def test_debouncer_folds_a_burst_into_one_flush_and_waits_while_held():
    flushed: list[set[str]] = []
    held = [True]
    deb = Debouncer(0.01, flushed.append, hold=lambda: held[0])
    for i in range(300):
        deb.touch(f"dev{i % 100}")
    await asyncio.sleep(0.05)
    assert flushed == []  # a setupNetworks is running: wait for it
    held[0] = False
    while not flushed:
        await asyncio.sleep(0.01)
    assert flushed == [{f"dev{i}" for i in range(100)}]
    deb.touch("x")
    deb.clear()  # someone published already
    await asyncio.sleep(0.05)
    assert len(flushed) == 1
    deb.cancel()
