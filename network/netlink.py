"""The netlink adapter: reads and changes links, addresses and routes through pyroute2.

Owns every kernel call of the network domain: one ``IPRoute`` socket, opened in the host's
own network namespace or in a named one (tests, and hosts that keep the agent's networks in
a namespace). Answers are plain dataclasses keyed by interface name; calls raise pyroute2's
``NetlinkError`` (errno + kernel message) and the caller decides what that means. Blocking:
call it from the worker pool, never from the asyncio loop. Must not decide policy (what to
create, in which order, how to undo): that is ``network.configurator``'s job. Never runs
``ip`` or any other process.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from network.model import BOND_MODES

log = logging.getLogger("vdsm_py.network")

IFF_UP = 0x1
AF_INET = 2
MAIN_TABLE = 254

__all__ = ["Link", "Netlink", "NetlinkError"]


@dataclass
class Link:
    index: int
    name: str
    kind: str  # '' for physical devices, else 'bridge', 'vlan', 'bond', 'veth'...
    mtu: int
    up: bool
    operstate: str
    master: str = ""
    mac: str = ""
    min_mtu: int = 0
    max_mtu: int = 0
    vlan_id: int | None = None
    vlan_parent: str = ""
    stp: bool = False
    bond_options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    gateway: str
    dev: str


def _info(msg: Any) -> tuple[str, Any]:
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    if linkinfo is None:
        return "", None
    return linkinfo.get_attr("IFLA_INFO_KIND") or "", linkinfo.get_attr("IFLA_INFO_DATA")


class Netlink:
    """Kernel network state of one namespace ('' = the agent's own)."""

    def __init__(self, netns: str = "") -> None:
        self.netns = netns
        self._ipr = IPRoute(netns=netns) if netns else IPRoute()
        self._lock = threading.Lock()  # one socket: one request at a time

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------

    def links(self) -> dict[str, Link]:
        with self._lock:
            msgs = list(self._ipr.get_links())
        by_index: dict[int, str] = {m["index"]: m.get_attr("IFLA_IFNAME") for m in msgs}
        out: dict[str, Link] = {}
        for m in msgs:
            kind, data = _info(m)
            master_idx = m.get_attr("IFLA_MASTER")
            link = Link(
                index=m["index"], name=m.get_attr("IFLA_IFNAME"), kind=kind,
                mtu=m.get_attr("IFLA_MTU") or 0, up=bool(m["flags"] & IFF_UP),
                operstate=(m.get_attr("IFLA_OPERSTATE") or "UNKNOWN").lower(),
                master=by_index.get(master_idx, "") if master_idx else "",
                mac=m.get_attr("IFLA_ADDRESS") or "",
                min_mtu=m.get_attr("IFLA_MIN_MTU") or 0, max_mtu=m.get_attr("IFLA_MAX_MTU") or 0,
            )
            if kind == "vlan" and data is not None:
                link.vlan_id = data.get_attr("IFLA_VLAN_ID")
                link.vlan_parent = by_index.get(m.get_attr("IFLA_LINK"), "")
            elif kind == "bridge" and data is not None:
                link.stp = bool(data.get_attr("IFLA_BR_STP_STATE"))
            elif kind == "bond" and data is not None:
                mode = data.get_attr("IFLA_BOND_MODE")
                if mode is not None and mode < len(BOND_MODES):
                    link.bond_options["mode"] = BOND_MODES[mode]
                for opt in ("miimon", "updelay", "downdelay"):
                    value = data.get_attr(f"IFLA_BOND_{opt.upper()}")
                    if value is not None:
                        link.bond_options[opt] = str(value)
            out[link.name] = link
        return out

    def addresses(self) -> dict[str, list[str]]:
        """Addresses (``a.b.c.d/len``, IPv6 too) by interface name."""
        with self._lock:
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in self._ipr.get_links()}
            msgs = list(self._ipr.get_addr())
        out: dict[str, list[str]] = {}
        for m in msgs:
            name = names.get(m["index"])
            if name:
                out.setdefault(name, []).append(f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}")
        return out

    def default_routes(self) -> list[Route]:
        """IPv4 default routes of the main table."""
        with self._lock:
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in self._ipr.get_links()}
            msgs = list(self._ipr.get_routes(family=AF_INET, table=MAIN_TABLE))
        out = []
        for m in msgs:
            if m["dst_len"] == 0 and m.get_attr("RTA_GATEWAY"):
                out.append(Route(m.get_attr("RTA_GATEWAY"), names.get(m.get_attr("RTA_OIF"), "")))
        return out

    def speed(self, name: str) -> int:
        """Link speed in Mb/s from sysfs (host namespace only; 0 when unknown)."""
        if self.netns:
            return 0
        try:
            value = int(Path(f"/sys/class/net/{name}/speed").read_text().strip())
        except (OSError, ValueError):
            return 0
        return max(value, 0)

    # -- changing -----------------------------------------------------------------------

    def _index(self, name: str) -> int:
        found = self._ipr.link_lookup(ifname=name)
        if not found:
            raise NetlinkError(19, f"No such device {name}")
        return int(found[0])

    def _link(self, command: str, **kw: Any) -> None:
        with self._lock:
            self._ipr.link(command, **kw)

    def add_bridge(self, name: str, *, stp: bool, mtu: int) -> None:
        self._link("add", ifname=name, kind="bridge", br_stp_state=1 if stp else 0, mtu=mtu)

    def add_vlan(self, name: str, parent: str, vlan_id: int, mtu: int) -> None:
        with self._lock:
            link = self._index(parent)
            self._ipr.link("add", ifname=name, kind="vlan", link=link, vlan_id=vlan_id, mtu=mtu)

    def add_bond(self, name: str, options: dict[str, str]) -> None:
        kw: dict[str, Any] = {}
        for key, value in options.items():
            kw[f"bond_{key}"] = BOND_MODES.index(value) if key == "mode" else int(value)
        self._link("add", ifname=name, kind="bond", **kw)

    def delete(self, name: str) -> None:
        with self._lock:
            self._ipr.link("del", index=self._index(name))

    def set_master(self, name: str, master: str) -> None:
        """Enslave ``name`` to ``master`` ('' releases it)."""
        with self._lock:
            index = self._index(name)
            master_index = self._index(master) if master else 0
            self._ipr.link("set", index=index, master=master_index)

    def set_mtu(self, name: str, mtu: int) -> None:
        with self._lock:
            self._ipr.link("set", index=self._index(name), mtu=mtu)

    def set_up(self, name: str, up: bool) -> None:
        with self._lock:
            self._ipr.link("set", index=self._index(name), state="up" if up else "down")

    def add_address(self, name: str, cidr: str) -> None:
        address, _, plen = cidr.partition("/")
        with self._lock:
            self._ipr.addr("add", index=self._index(name), address=address, prefixlen=int(plen))

    def del_address(self, name: str, cidr: str) -> None:
        address, _, plen = cidr.partition("/")
        with self._lock:
            self._ipr.addr("del", index=self._index(name), address=address, prefixlen=int(plen))

    def add_default_route(self, gateway: str, dev: str) -> None:
        with self._lock:
            self._ipr.route(
                "add", dst="0.0.0.0/0", gateway=gateway, oif=self._index(dev), table=MAIN_TABLE
            )

    def del_default_route(self, gateway: str, dev: str) -> None:
        with self._lock:
            self._ipr.route(
                "del", dst="0.0.0.0/0", gateway=gateway, oif=self._index(dev), table=MAIN_TABLE
            )
