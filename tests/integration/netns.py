"""Private network namespaces for network tests: veth pairs play the host's NICs.

``TestHost`` creates a uniquely named namespace, adds NICs (veth pairs whose one end is
named like a NIC, ``veth_*``, the other end ``peer_*``), and deletes the namespace (and so
every device in it) at the end, even after a failure; ``host_with_nics`` is one with the
usual three NICs, as a context manager for fixtures. ``kernel_state`` reads back what the
tests assert on, over netlink: links, IPv4 addresses and default routes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute, netns

from network.netlink import Netlink


def can_use_netns() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    return True, ""


@dataclass
class TestHost:
    __test__ = False  # not a test class for pytest

    name: str = field(default_factory=lambda: f"vdsmt-{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        netns.create(self.name)
        self._ipr = IPRoute(netns=self.name)
        lo = self._ipr.link_lookup(ifname="lo")[0]
        self._ipr.link("set", index=lo, state="up")

    def add_nic(self, name: str, *, up: bool = True, mtu: int = 1500) -> None:
        peer = "peer_" + name.split("_", 1)[-1]
        self._ipr.link("add", ifname=name, kind="veth", peer=peer)
        for dev in (name, peer):
            index = self._ipr.link_lookup(ifname=dev)[0]
            self._ipr.link("set", index=index, mtu=mtu, state="up" if up else "down")

    def ipr(self) -> IPRoute:
        return self._ipr

    def close(self) -> None:
        self._ipr.close()
        netns.remove(self.name)


NICS = ("veth_a", "veth_b", "veth_c")


@contextmanager
def host_with_nics(nics: Iterable[str] = NICS) -> Iterator[TestHost]:
    """A new ``TestHost`` with ``nics`` added, closed on the way out even if adding fails."""
    host = TestHost()
    try:
        for nic in nics:
            host.add_nic(nic)
        yield host
    finally:
        host.close()


def kernel_state(ns: str) -> dict[str, Any]:
    """A comparable picture of the namespace: links, IPv4 addresses, default routes."""
    with Netlink(ns) as nl:
        links = {
            name: (l.kind, l.mtu, l.master, l.up, l.vlan_id, l.vlan_parent, l.stp,
                   tuple(sorted(l.bond_options.items())))
            for name, l in nl.links().items()
        }
        addrs = {k: sorted(a for a in v if ":" not in a) for k, v in nl.addresses().items()}
        return {
            "links": links,
            "addresses": {k: v for k, v in addrs.items() if v},
            "routes": sorted((r.gateway, r.dev) for r in nl.default_routes()),
        }
