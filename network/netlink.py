"""The netlink adapter: reads and changes links, addresses and routes through pyroute2.

Owns every kernel call of the network domain: one ``IPRoute`` socket, opened in the host's
own network namespace or in a named one (tests, and hosts that keep the agent's networks in
a namespace), plus the read-only socket of :mod:`network.linkdump` for full link dumps. Answers are plain dataclasses keyed by interface name; calls raise pyroute2's
``NetlinkError`` (errno + kernel message) and the caller decides what that means. Blocking:
call it from the worker pool, never from the asyncio loop. Must not decide policy (what to
create, in which order, how to undo): that is ``network.configurator``'s job. Never runs
``ip`` or any other process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from network.linkdump import LinkDumper
from network.model import BOND_MODES
from network.sysctl import NETNS_RUN_DIR, in_netns

log = logging.getLogger("vdsm_py.network")

IFF_UP = 0x1
AF_INET = 2
AF_INET6 = 10
MAIN_TABLE = 254
IFA_F_PERMANENT = 0x80
IFA_F_TENTATIVE = 0x40
ENODEV = 19

__all__ = ["NETNS_RUN_DIR", "Link", "Netlink", "NetlinkError", "Route", "Rule"]


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
    """A route: by default an IPv4 default route of the main table."""

    gateway: str
    dev: str
    dst: str = ""  # '' = the default route, else 'net/len'
    table: int = MAIN_TABLE
    family: int = AF_INET
    prefsrc: str = ""


@dataclass(frozen=True)
class Rule:
    """A policy routing rule: traffic from ``src`` or to ``dst`` (``net/len``) looks up
    ``table``; ``iif`` restricts it to traffic arriving on a device ('' = any)."""

    table: int
    src: str = ""
    dst: str = ""
    iif: str = ""
    priority: int = 0


def _info(msg: Any) -> tuple[str, Any]:
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    if linkinfo is None:
        return "", None
    return linkinfo.get_attr("IFLA_INFO_KIND") or "", linkinfo.get_attr("IFLA_INFO_DATA")


def _KERNEL_FILTER(_msg: Any) -> bool:
    """Given as ``dump_filter``, makes pyroute2 send the match attributes to the kernel
    (which filters the dump, with ``strict_check``) instead of decoding every object."""
    return True


def _cidr(m: Any) -> str:
    return f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}"


def _addr_flags(m: Any) -> int:
    return int(m.get_attr("IFA_FLAGS") or m["flags"])


def _to_link(m: Any, name_of: Callable[[int], str]) -> Link:
    kind, data = _info(m)
    master_idx = m.get_attr("IFLA_MASTER")
    link = Link(
        index=m["index"], name=m.get_attr("IFLA_IFNAME"), kind=kind,
        mtu=m.get_attr("IFLA_MTU") or 0, up=bool(m["flags"] & IFF_UP),
        operstate=(m.get_attr("IFLA_OPERSTATE") or "UNKNOWN").lower(),
        master=name_of(master_idx) if master_idx else "",
        mac=m.get_attr("IFLA_ADDRESS") or "",
        min_mtu=m.get_attr("IFLA_MIN_MTU") or 0, max_mtu=m.get_attr("IFLA_MAX_MTU") or 0,
    )
    if kind == "vlan" and data is not None:
        link.vlan_id = data.get_attr("IFLA_VLAN_ID")
        parent = m.get_attr("IFLA_LINK")
        link.vlan_parent = name_of(parent) if parent else ""
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
    return link


class Netlink:
    """Kernel network state of one namespace ('' = the agent's own)."""

    def __init__(self, netns: str = "") -> None:
        self.netns = netns
        # strict_check: the kernel filters dumps by the attributes sent (see _KERNEL_FILTER)
        self._ipr = IPRoute(netns=netns, strict_check=True) if netns else IPRoute(
            strict_check=True)
        self._lock = threading.Lock()  # one socket: one request at a time
        self._dumper = LinkDumper(netns)  # full dumps without pyroute2's decoding

    def close(self) -> None:
        self._ipr.close()
        self._dumper.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------

    def links(self) -> dict[str, Link]:
        """Every link (one full dump: use :meth:`link` when one device is enough)."""
        with self._lock:
            return self._dumper.dump()

    def _name_of(self, index: int) -> str:
        """Name of the link ``index`` (caller holds the lock; '' when unknown)."""
        try:
            return str(self._ipr.link("get", index=index)[0].get_attr("IFLA_IFNAME"))
        except NetlinkError:
            return ""

    def link(self, name: str) -> Link | None:
        """One link by name, with one request (None when it does not exist)."""
        with self._lock:
            try:
                msg = self._ipr.link("get", ifname=name)[0]
            except NetlinkError as exc:
                if exc.code == ENODEV:
                    return None
                raise
            return _to_link(msg, self._name_of)

    def exists(self, name: str) -> bool:
        with self._lock:
            return bool(self._ipr.link_lookup(ifname=name))

    def ports(self, name: str) -> list[Link]:
        """The links enslaved to ``name`` (filtered by the kernel, not a full dump)."""
        with self._lock:
            index = self._index(name)
            msgs = [m for m in self._ipr.link("dump", dump_filter=_KERNEL_FILTER, master=index)
                    if m.get_attr("IFLA_MASTER") == index]
            return [_to_link(m, lambda i: name if i == index else self._name_of(i))
                    for m in msgs]

    def _addr_msgs(self, name: str) -> list[Any]:
        with self._lock:
            index = self._index(name)
            msgs = self._ipr.addr("dump", dump_filter=_KERNEL_FILTER, index=index)
            return [m for m in msgs if m["index"] == index]

    def addresses_of(self, name: str) -> list[str]:
        """Addresses of one link (``a/len``, IPv6 too) without a link dump."""
        return [_cidr(m) for m in self._addr_msgs(name)]

    def address_flags_of(self, name: str) -> dict[str, int]:
        """``IFA_F_*`` flags of each address of ``name``."""
        return {_cidr(m): _addr_flags(m) for m in self._addr_msgs(name)}

    def address_flags_by_index(self) -> dict[int, dict[str, int]]:
        """``IFA_F_*`` flags of every address, by link index (one dump, no link dump)."""
        with self._lock:
            msgs = list(self._ipr.get_addr())
        out: dict[int, dict[str, int]] = {}
        for m in msgs:
            out.setdefault(m["index"], {})[_cidr(m)] = _addr_flags(m)
        return out

    def addresses(self) -> dict[str, list[str]]:
        """Addresses (``a.b.c.d/len``, IPv6 too) by interface name."""
        with self._lock:
            names = {link.index: name for name, link in self._dumper.dump().items()}
            msgs = list(self._ipr.get_addr())
        out: dict[str, list[str]] = {}
        for m in msgs:
            name = names.get(m["index"])
            if name:
                out.setdefault(name, []).append(f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}")
        return out

    def default_routes(self, family: int = AF_INET, dev: str = "") -> list[Route]:
        """Default routes (with a gateway) of the main table, of one device if given."""
        return [r for r in self.routes(family=family, dev=dev, defaults_only=True)
                if r.gateway]

    def routes(self, *, family: int = AF_INET, table: int = MAIN_TABLE, dev: str = "",
               defaults_only: bool = False) -> list[Route]:
        """Unicast routes of one table (kernel-made local/multicast ones excluded), of one
        device if ``dev`` is given (filtered by the kernel)."""
        names: dict[int, str] = {}
        out = []
        with self._lock:
            kw: dict[str, Any] = {"family": family, "table": table}
            if dev:
                kw["oif"] = self._index(dev)
                names[kw["oif"]] = dev
            for m in self._ipr.route("dump", dump_filter=_KERNEL_FILTER, **kw):
                if m["type"] != 1 or (m.get_attr("RTA_TABLE") or m["table"]) != table:
                    continue  # 1 = RTN_UNICAST
                if (defaults_only and m["dst_len"]) or (dev and m.get_attr("RTA_OIF") != kw["oif"]):
                    continue
                oif = m.get_attr("RTA_OIF")
                if oif not in names:
                    names[oif] = self._name_of(oif) if oif else ""
                dst = f"{m.get_attr('RTA_DST')}/{m['dst_len']}" if m["dst_len"] else ""
                out.append(Route(
                    m.get_attr("RTA_GATEWAY") or "", names[oif], dst, table, family,
                    m.get_attr("RTA_PREFSRC") or "",
                ))
        return out

    def rules(self, family: int = AF_INET) -> list[Rule]:
        with self._lock:
            msgs = list(self._ipr.get_rules(family=family))
        out = []
        for m in msgs:
            table = m.get_attr("FRA_TABLE") or m["table"]
            src = m.get_attr("FRA_SRC")
            dst = m.get_attr("FRA_DST")
            out.append(Rule(
                table, f"{src}/{m['src_len']}" if src else "",
                f"{dst}/{m['dst_len']}" if dst else "", m.get_attr("FRA_IIFNAME") or "",
                m.get_attr("FRA_PRIORITY") or 0,
            ))
        return out

    def ipv6_conf(self, name: str, keys: tuple[str, ...]) -> dict[str, str]:
        """``/proc/sys/net/ipv6/conf/<name>/<key>`` of this namespace ('' when absent)."""
        conf = Path("/proc/sys/net/ipv6/conf") / name

        def read() -> dict[str, str]:
            out = {}
            for key in keys:
                try:
                    out[key] = (conf / key).read_text().strip()
                except FileNotFoundError:
                    out[key] = ""
            return out

        return dict(in_netns(self.netns, read))

    def init_ipv6_conf(self, name: str, values: dict[str, str]) -> bool:
        """Write the IPv6 switches of a device without reading them first; False (nothing
        written) when the device has no IPv6 (disabled in this kernel)."""
        conf = Path("/proc/sys/net/ipv6/conf") / name

        def write() -> bool:
            if not conf.is_dir():
                return False
            for key, value in values.items():
                (conf / key).write_text(value)
            return True

        return bool(in_netns(self.netns, write))

    def set_ipv6_conf(self, name: str, values: dict[str, str]) -> None:
        conf = Path("/proc/sys/net/ipv6/conf") / name

        def write() -> None:
            for key, value in values.items():
                (conf / key).write_text(value)

        in_netns(self.netns, write)

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

    # Changes of one existing link name it with IFLA_IFNAME and no index: the kernel looks
    # the name up itself, so no request is spent on finding the index first.

    def delete(self, name: str) -> None:
        self._link("del", ifname=name)

    def delete_many(self, names: list[str], group: int) -> None:
        """Delete ``names`` in one request: the kernel unregisters a whole link group at
        once (one RCU grace period instead of one per device). ``group`` must be a group
        no other link is in; on failure the links still there go back to group 0."""
        with self._lock:
            try:
                for name in names:
                    self._ipr.link("set", ifname=name, group=group)
                self._ipr.link("del", group=group)
            except NetlinkError:
                for name in names:
                    try:
                        self._ipr.link("set", ifname=name, group=0)
                    except NetlinkError as exc:
                        log.debug("link %s gone or not reset: %s", name, exc)
                raise

    def set_master(self, name: str, master: str) -> None:
        """Enslave ``name`` to ``master`` ('' releases it)."""
        with self._lock:
            master_index = self._index(master) if master else 0
            self._ipr.link("set", ifname=name, master=master_index)

    def set_mtu(self, name: str, mtu: int) -> None:
        self._link("set", ifname=name, mtu=mtu)

    def set_up(self, name: str, up: bool) -> None:
        self._link("set", ifname=name, state="up" if up else "down")

    def add_address(self, name: str, cidr: str) -> None:
        address, _, plen = cidr.partition("/")
        with self._lock:
            self._ipr.addr("add", index=self._index(name), address=address, prefixlen=int(plen))

    def del_address(self, name: str, cidr: str) -> None:
        address, _, plen = cidr.partition("/")
        with self._lock:
            self._ipr.addr("del", index=self._index(name), address=address, prefixlen=int(plen))

    def add_default_route(self, gateway: str, dev: str) -> None:
        self.add_route(Route(gateway, dev))

    def del_default_route(self, gateway: str, dev: str) -> None:
        self.del_route(Route(gateway, dev))

    def _route(self, command: str, route: Route) -> None:
        default = "0.0.0.0/0" if route.family == AF_INET else "::/0"
        kw: dict[str, Any] = {"dst": route.dst or default, "table": route.table,
                              "family": route.family}
        if route.gateway:
            kw["gateway"] = route.gateway
        if route.prefsrc:
            kw["prefsrc"] = route.prefsrc
        with self._lock:
            kw["oif"] = self._index(route.dev)
            self._ipr.route(command, **kw)

    def add_route(self, route: Route) -> None:
        self._route("add", route)

    def del_route(self, route: Route) -> None:
        self._route("del", route)

    def _rule(self, command: str, rule: Rule) -> None:
        kw: dict[str, Any] = {"table": rule.table, "family": AF_INET}
        if rule.priority:
            kw["priority"] = rule.priority
        if rule.src:
            addr, _, plen = rule.src.partition("/")
            kw.update(src=addr, src_len=int(plen))
        if rule.dst:
            addr, _, plen = rule.dst.partition("/")
            kw.update(dst=addr, dst_len=int(plen))
        if rule.iif:
            kw["iifname"] = rule.iif
        with self._lock:
            self._ipr.rule(command, **kw)

    def add_rule(self, rule: Rule) -> None:
        self._rule("add", rule)

    def del_rule(self, rule: Rule) -> None:
        self._rule("del", rule)
