"""The kernel operations a network change is made of, in a form that can be journaled.

Owns :class:`Op` — one operation by name with JSON arguments, callable, and describable
(``to_wire``) so that the undo of every step can be written to the
:class:`~network.journal.Journal` and replayed by a later process — and
:class:`OpRunner`, which performs them on a :class:`~network.netlink.Netlink` and the
:class:`~network.dhcp.DhcpClients`. Also owns snapshots of devices about to be deleted
(enough to recreate them with their ports, addresses and routes). Must not decide what to
change or in which order (``network.configurator`` does).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from network.dhcp import DhcpClients
from network.netlink import ENODEV, IFA_F_PERMANENT, Link, Netlink, NetlinkError, Route, Rule

log = logging.getLogger("vdsm_py.network")


@dataclass
class LinkSnapshot:
    """What is needed to recreate a deleted bridge, VLAN or bond exactly."""

    link: Link
    ports: list[Link] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> LinkSnapshot:
        return cls(Link(**data["link"]), [Link(**p) for p in data["ports"]],
                   list(data["addresses"]), [Route(**r) for r in data["routes"]])


def snapshot(nl: Netlink, name: str) -> LinkSnapshot:
    link = nl.link(name)
    if link is None:
        raise NetlinkError(ENODEV, f"No such device {name}")
    return snapshot_from(nl, link, nl.ports(name))


def snapshot_from(nl: Netlink, link: Link, ports: list[Link],
                  address_flags: dict[str, int] | None = None) -> LinkSnapshot:
    """The snapshot of ``link`` as already read, with ``ports``; its addresses' flags
    are read unless given."""
    if address_flags is None:
        address_flags = nl.address_flags_of(link.name)
    # Dynamic addresses (SLAAC, DHCP) come back from their source, not from the snapshot.
    addresses = [a for a, flags in address_flags.items() if flags & IFA_F_PERMANENT]
    # Without an IPv4 address no IPv4 gateway is reachable through it: no route to keep.
    routes = nl.default_routes(dev=link.name) if any(":" not in a for a in addresses) else []
    return LinkSnapshot(link, ports, addresses, routes)


def recreate(nl: Netlink, snap: LinkSnapshot) -> None:
    link = snap.link
    if link.kind == "bridge":
        nl.add_bridge(link.name, stp=link.stp, mtu=link.mtu)
    elif link.kind == "vlan":
        assert link.vlan_id is not None
        nl.add_vlan(link.name, link.vlan_parent, link.vlan_id, link.mtu)
    elif link.kind == "bond":
        nl.add_bond(link.name, link.bond_options)
        nl.set_mtu(link.name, link.mtu)
    else:
        raise ValueError(f"cannot recreate a {link.kind or 'physical'} device {link.name}")
    for port in snap.ports:
        if link.kind == "bond":
            nl.set_up(port.name, False)  # the bonding driver takes only down slaves
        nl.set_master(port.name, link.name)
    if link.master:
        nl.set_master(link.name, link.master)
    for cidr in snap.addresses:
        if not cidr.lower().startswith("fe80:"):  # the kernel brings back link-local IPv6
            nl.add_address(link.name, cidr)
    nl.set_up(link.name, link.up)
    for port in snap.ports:
        nl.set_up(port.name, port.up)
    for route in snap.routes:
        nl.add_route(route)


class OpRunner:
    """Performs :class:`Op` s: ``op_<name>(*args)`` with JSON-able arguments."""

    def __init__(self, nl: Netlink, dhcp: DhcpClients) -> None:
        self.nl = nl
        self.dhcp = dhcp

    def op(self, name: str, *args: Any) -> Op:
        return Op(name, args, self)

    def run_wire(self, data: dict[str, Any]) -> None:
        getattr(self, f"op_{data['op']}")(*data["args"])

    def op_delete(self, name: str) -> None:
        self.nl.delete(name)

    def op_recreate(self, snap: dict[str, Any]) -> None:
        recreate(self.nl, LinkSnapshot.from_wire(snap))

    def op_delete_many(self, names: list[str], group: int) -> None:
        self.nl.delete_many(names, group)

    def op_recreate_many(self, snaps: list[dict[str, Any]]) -> None:
        """Undo of :meth:`op_delete_many`: devices that were ports of another deleted one
        come back first, unattached; the ones they were ports of attach them."""
        loaded = [LinkSnapshot.from_wire(s) for s in snaps]
        names = {s.link.name for s in loaded}
        masters = {s.link.name for s in loaded if any(p.name in names for p in s.ports)}
        for snap in sorted(loaded, key=lambda s: s.link.name in masters):
            if snap.link.master in names:
                snap.link.master = ""
            recreate(self.nl, snap)

    def op_set_up(self, name: str, up: bool) -> None:
        self.nl.set_up(name, up)

    def op_set_mtu(self, name: str, mtu: int) -> None:
        self.nl.set_mtu(name, mtu)

    def op_set_master(self, name: str, master: str) -> None:
        self.nl.set_master(name, master)

    def op_add_address(self, name: str, cidr: str) -> None:
        self.nl.add_address(name, cidr)

    def op_del_address(self, name: str, cidr: str) -> None:
        self.nl.del_address(name, cidr)

    def op_add_route(self, route: dict[str, Any]) -> None:
        self.nl.add_route(Route(**route))

    def op_del_route(self, route: dict[str, Any]) -> None:
        self.nl.del_route(Route(**route))

    def op_add_rule(self, rule: dict[str, Any]) -> None:
        self.nl.add_rule(Rule(**rule))

    def op_del_rule(self, rule: dict[str, Any]) -> None:
        self.nl.del_rule(Rule(**rule))

    def op_set_ipv6_conf(self, name: str, values: dict[str, str]) -> None:
        self.nl.set_ipv6_conf(name, values)

    def op_init_ipv6_conf(self, name: str, values: dict[str, str]) -> None:
        self.nl.init_ipv6_conf(name, values)

    def op_start_dhcp(self, iface: str, family: int, default_route: bool,
                      blocking: bool) -> None:
        self.dhcp.start(iface, family=family, default_route=default_route, blocking=blocking,
                        nl=self.nl)

    def op_stop_dhcp(self, iface: str, family: int, default_route: bool) -> None:
        self.dhcp.stop(iface, family=family, nl=self.nl, default_route=default_route)


@dataclass(frozen=True)
class Op:
    name: str
    args: tuple[Any, ...]
    runner: OpRunner = field(compare=False, repr=False)

    def __call__(self) -> None:
        getattr(self.runner, f"op_{self.name}")(*self.args)

    def to_wire(self) -> dict[str, Any]:
        return {"op": self.name, "args": list(self.args)}
