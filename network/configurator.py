"""Turns a change of the agent's configuration into kernel steps, each with its undo.

Owns the order of a setupNetworks change (tear down what goes or changes, rebuild changed
bonds, set the MTU of NICs and bonds, build new networks with their addresses and default
route) and how each step is reversed, including deletions (a device is snapshotted before it
is deleted so that undo can recreate it with its ports, addresses and routes). Runs on a
worker thread with a :class:`~network.netlink.Netlink`; all steps go through one
:class:`~network.transaction.Transaction`, so a failure can be rolled back completely.
Must not validate requests (``network.validate`` did) nor persist anything.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

from network.model import DEFAULT_MTU, BondingAttrs, NetConfig, NetworkAttrs
from network.netlink import Link, Netlink, Route
from network.transaction import Transaction

log = logging.getLogger("vdsm_py.network")


@dataclass
class LinkSnapshot:
    """What is needed to recreate a deleted bridge, VLAN or bond exactly."""

    link: Link
    ports: list[Link] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)


def snapshot(nl: Netlink, name: str) -> LinkSnapshot:
    links = nl.links()
    link = links[name]
    ports = [p for p in links.values() if p.master == name]
    return LinkSnapshot(
        link, ports, nl.addresses().get(name, []),
        [r for r in nl.default_routes() if r.dev == name],
    )


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
        if ":" not in cidr:  # the kernel brings back link-local IPv6 by itself
            nl.add_address(link.name, cidr)
    nl.set_up(link.name, link.up)
    for port in snap.ports:
        nl.set_up(port.name, port.up)
    for route in snap.routes:
        nl.add_default_route(route.gateway, route.dev)


@dataclass(frozen=True)
class Plan:
    """Which networks and bonds a change tears down and (re)builds."""

    nets_down: tuple[NetworkAttrs, ...]
    bonds_down: tuple[str, ...]
    bonds_up: tuple[BondingAttrs, ...]
    nets_up: tuple[NetworkAttrs, ...]


def plan(
    running: NetConfig,
    desired: NetConfig,
    *,
    rebuild: frozenset[str] = frozenset(),
    rebuild_bonds: frozenset[str] = frozenset(),
) -> Plan:
    """``rebuild``/``rebuild_bonds`` name items to rebuild even when unchanged (restore of
    items missing from the kernel)."""
    bonds_changed = {
        b for b, attrs in running.bondings.items()
        if desired.bondings.get(b) != attrs or b in rebuild_bonds
    }
    down = set()
    for name, attrs in running.networks.items():
        new = desired.networks.get(name)
        if new != attrs or name in rebuild or (new is not None and new.bonding in bonds_changed):
            down.add(name)
    up = {n for n in desired.networks if n not in running.networks or n in down}
    return Plan(
        nets_down=tuple(running.networks[n] for n in sorted(down)),
        bonds_down=tuple(sorted(bonds_changed)),
        bonds_up=tuple(
            b for n, b in sorted(desired.bondings.items())
            if n not in running.bondings or n in bonds_changed
        ),
        nets_up=tuple(desired.networks[n] for n in sorted(up)),
    )


class Configurator:
    """Applies a :class:`Plan` step by step inside one transaction."""

    def __init__(self, nl: Netlink, tx: Transaction) -> None:
        self.nl = nl
        self.tx = tx

    # -- generic undoable steps -----------------------------------------------------------

    def _delete(self, item: str, name: str) -> None:
        if name not in self.nl.links():
            return
        snap = snapshot(self.nl, name)
        self.tx.step(item, f"delete {snap.link.kind} {name}", lambda: self.nl.delete(name),
                     lambda: recreate(self.nl, snap))
        if snap.link.kind == "bond":
            # The bonding driver closes released slaves; give the NICs back as they were.
            for port in snap.ports:
                self._set_up(item, port.name, port.up)

    def _set_up(self, item: str, name: str, up: bool) -> None:
        was = self.nl.links()[name].up
        if was != up:
            self.tx.step(item, f"set {name} {'up' if up else 'down'}",
                         lambda: self.nl.set_up(name, up), lambda: self.nl.set_up(name, was))

    def _set_mtu(self, item: str, name: str, mtu: int) -> None:
        was = self.nl.links()[name].mtu
        if was != mtu:
            self.tx.step(item, f"set mtu of {name} to {mtu}",
                         lambda: self.nl.set_mtu(name, mtu), lambda: self.nl.set_mtu(name, was))

    def _set_master(self, item: str, name: str, master: str) -> None:
        was = self.nl.links()[name].master
        if was != master:
            self.tx.step(item, f"attach {name} to {master or 'nothing'}",
                         lambda: self.nl.set_master(name, master),
                         lambda: self.nl.set_master(name, was))

    # -- the change -----------------------------------------------------------------------

    def apply(self, the_plan: Plan, desired: NetConfig) -> None:
        for net in the_plan.nets_down:
            self.teardown_network(net)
        for bond in the_plan.bonds_down:
            self._delete(f"bond {bond}", bond)
        for bond_attrs in the_plan.bonds_up:
            self.build_bond(bond_attrs)
        self.set_base_mtus(the_plan, desired)
        for net in the_plan.nets_up:
            self.build_network(net)

    def teardown_network(self, net: NetworkAttrs) -> None:
        item = f"network {net.name}"
        links = self.nl.links()
        if net.iface in links:
            if net.default_route and net.ipv4 and net.ipv4.gateway:
                route = Route(net.ipv4.gateway, net.iface)
                if route in self.nl.default_routes():
                    self.tx.step(
                        item, f"remove default route via {route.gateway}",
                        lambda: self.nl.del_default_route(route.gateway, route.dev),
                        lambda: self.nl.add_default_route(route.gateway, route.dev),
                    )
            if net.ipv4 and net.ipv4.cidr in self.nl.addresses().get(net.iface, []):
                cidr, iface = net.ipv4.cidr, net.iface
                self.tx.step(item, f"remove address {cidr} from {iface}",
                             lambda: self.nl.del_address(iface, cidr),
                             lambda: self.nl.add_address(iface, cidr))
        if net.bridged:
            self._delete(item, net.name)
        if net.vlan_device:
            self._delete(item, net.vlan_device)

    def build_bond(self, bond: BondingAttrs) -> None:
        item = f"bond {bond.name}"
        options = dict(bond.options)
        self.tx.step(item, f"create bond {bond.name}",
                     lambda: self.nl.add_bond(bond.name, options),
                     lambda: self.nl.delete(bond.name))
        for nic in bond.nics:
            self._set_up(item, nic, False)
            self._set_master(item, nic, bond.name)
        self._set_up(item, bond.name, True)

    def set_base_mtus(self, the_plan: Plan, desired: NetConfig) -> None:
        """Each NIC or bond carries the largest MTU of the networks on it, else 1500."""
        wanted: dict[str, int] = {}
        for net in desired.networks.values():
            if net.base:
                wanted[net.base] = max(wanted.get(net.base, 0), net.mtu)
        for net in the_plan.nets_down:
            if net.base and net.base not in wanted and net.base in self.nl.links():
                wanted[net.base] = DEFAULT_MTU
        enslaved = {nic for b in desired.bondings.values() for nic in b.nics}
        for base, mtu in sorted(wanted.items()):
            if base not in enslaved:
                self._set_mtu(f"device {base}", base, mtu)

    def build_network(self, net: NetworkAttrs) -> None:
        item = f"network {net.name}"
        if net.base:
            self._set_up(item, net.base, True)
        if net.vlan_device:
            vdev = net.vlan_device
            assert net.vlan is not None
            vlan_id = net.vlan
            self.tx.step(item, f"create vlan {vdev}",
                         lambda: self.nl.add_vlan(vdev, net.base, vlan_id, net.mtu),
                         lambda: self.nl.delete(vdev))
            self._set_up(item, vdev, True)
        if net.bridged:
            self.tx.step(item, f"create bridge {net.name}",
                         lambda: self.nl.add_bridge(net.name, stp=net.stp, mtu=net.mtu),
                         lambda: self.nl.delete(net.name))
            if net.southbound:
                self._set_master(item, net.southbound, net.name)
            self._set_mtu(item, net.name, net.mtu)
            self._set_up(item, net.name, True)
        if net.ipv4 is not None:
            cidr, iface = net.ipv4.cidr, net.iface
            self.tx.step(item, f"add address {cidr} to {iface}",
                         lambda: self.nl.add_address(iface, cidr),
                         lambda: self.nl.del_address(iface, cidr))
            if net.default_route and net.ipv4.gateway:
                self.set_default_route(item, net.ipv4.gateway, iface)

    def set_default_route(self, item: str, gateway: str, dev: str) -> None:
        for old in self.nl.default_routes():
            self.tx.step(item, f"remove previous default route via {old.gateway}",
                         functools.partial(self.nl.del_default_route, old.gateway, old.dev),
                         functools.partial(self.nl.add_default_route, old.gateway, old.dev))
        self.tx.step(item, f"add default route via {gateway} dev {dev}",
                     lambda: self.nl.add_default_route(gateway, dev),
                     lambda: self.nl.del_default_route(gateway, dev))


def missing_networks(nl: Netlink, config: NetConfig) -> frozenset[str]:
    """Networks of ``config`` whose devices or address are not in the kernel (restore)."""
    links = nl.links()
    addresses = nl.addresses()
    missing = set()
    for name, net in config.networks.items():
        devices = [d for d in (net.name if net.bridged else "", net.vlan_device) if d]
        no_address = net.ipv4 is not None and net.ipv4.cidr not in addresses.get(net.iface, [])
        if any(d not in links for d in devices) or no_address:
            missing.add(name)
    return frozenset(missing)


def missing_bonds(nl: Netlink, config: NetConfig) -> frozenset[str]:
    """Bonds of ``config`` that are not in the kernel or lack one of their slaves."""
    links = nl.links()
    return frozenset(
        name for name, bond in config.bondings.items()
        if name not in links or any(links.get(n, None) is None or links[n].master != name
                                    for n in bond.nics)
    )
