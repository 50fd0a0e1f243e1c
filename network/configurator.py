"""Turns a change of the agent's configuration into kernel steps, each with its undo.

Owns the order of a setupNetworks change and how each step is reversed. A network that is
new or gone, or whose devices must change kind (bridged ↔ bridgeless, a bridgeless network
moving to another device, a rebuilt bond under it, STP), is torn down and built; any other
change is made *in place*, touching only what differs: the MTU of its devices, its
southbound port (moving a bridge to another NIC or VLAN keeps the bridge), and its layer 3
(:mod:`network.l3`: addresses, routes, source routing, IPv6 switches, DHCP clients).
Order: tear down what goes, take away what edits drop and lower MTUs, rebuild changed
bonds, set NIC/bond MTUs, raise MTUs and add what edits bring, build new networks.
Deletions snapshot the device first so that undo recreates it. Every step's undo is an
:class:`~network.ops.Op`, so a journal can replay it after a crash. Links are read once
(:class:`~network.linkview.LinkView`, seeded with the dump validation used), not before
every step. Runs on a worker thread; must not validate requests (``network.validate``
did) nor persist anything.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from network.l3 import EMPTY, L3Spec, l3_spec
from network.linkview import LinkView
from network.model import DEFAULT_MTU, BondingAttrs, NetConfig, NetworkAttrs
from network.netlink import ENODEV, Link, Netlink, NetlinkError, Route
from network.ops import LinkSnapshot, OpRunner, snapshot_from
from network.transaction import Transaction

log = logging.getLogger("vdsm_py.network")

KERNEL_IPV6_CONF = (("accept_ra", "1"), ("autoconf", "1"))  # a new device's defaults


@dataclass(frozen=True)
class Plan:
    """Which networks and bonds a change tears down, edits in place and (re)builds."""

    nets_down: tuple[NetworkAttrs, ...]
    bonds_down: tuple[str, ...]
    bonds_up: tuple[BondingAttrs, ...]
    nets_up: tuple[NetworkAttrs, ...]
    nets_edit: tuple[tuple[NetworkAttrs, NetworkAttrs], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.nets_down or self.bonds_down or self.bonds_up or self.nets_up
                    or self.nets_edit)


def editable(old: NetworkAttrs, new: NetworkAttrs) -> bool:
    """Whether ``old`` can become ``new`` without deleting its bridge or address holder."""
    return old.bridged == new.bridged and old.iface == new.iface and old.stp == new.stp


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
    down, edit = set(), set()
    for name, old in running.networks.items():
        new = desired.networks.get(name)
        if new == old and name not in rebuild and new.bonding not in bonds_changed:
            continue
        if (new is not None and name not in rebuild and editable(old, new)
                and old.bonding not in bonds_changed and new.bonding not in bonds_changed):
            edit.add(name)
        else:
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
        nets_edit=tuple((running.networks[n], desired.networks[n]) for n in sorted(edit)),
    )


def _upper_devices(net: NetworkAttrs) -> list[str]:
    """The devices a network made, bottom up: its VLAN device, then its bridge."""
    return [d for d in (net.vlan_device, net.name if net.bridged else "") if d]


class Configurator:
    """Applies a :class:`Plan` step by step inside one transaction."""

    def __init__(self, nl: Netlink, tx: Transaction, ops: OpRunner,
                 links: Mapping[str, Link] | None = None) -> None:
        self.nl = nl
        self.tx = tx
        self.ops = ops
        self.view = LinkView(nl, links)
        self._made: set[str] = set()  # devices this change created

    # -- generic undoable steps -----------------------------------------------------------

    def _link(self, name: str) -> Link:
        link = self.view.get(name)
        if link is None:
            raise NetlinkError(ENODEV, f"No such device {name}")
        return link

    def _snapshot(self, name: str, flags: dict[str, int] | None = None) -> LinkSnapshot:
        link = self.view.get(name)
        if link is None:
            raise NetlinkError(ENODEV, f"No such device {name}")
        return snapshot_from(self.nl, link, self.view.ports(name), flags)

    def _delete(self, item: str, name: str) -> None:
        if not self.view.exists(name):
            return
        snap = self._snapshot(name)
        self.tx.step(item, f"delete {snap.link.kind} {name}", self.ops.op("delete", name),
                     self.ops.op("recreate", snap.to_wire()))
        self.view.deleted([name])
        if snap.link.kind == "bond":
            # The bonding driver closes released slaves; give the NICs back as they were.
            for port in snap.ports:
                self._set_up(item, port.name, port.up)

    def _set_up(self, item: str, name: str, up: bool) -> None:
        was = self._link(name).up
        if was != up:
            self.tx.step(item, f"set {name} {'up' if up else 'down'}",
                         self.ops.op("set_up", name, up), self.ops.op("set_up", name, was))
            self.view.changed(name, up=up)

    def _set_mtu(self, item: str, name: str, mtu: int) -> None:
        was = self._link(name).mtu
        if was != mtu:
            self.tx.step(item, f"set mtu of {name} to {mtu}", self.ops.op("set_mtu", name, mtu),
                         self.ops.op("set_mtu", name, was))
            self.view.changed(name, mtu=mtu)

    def _set_master(self, item: str, name: str, master: str) -> None:
        was = self._link(name).master
        if was != master:
            self.tx.step(item, f"attach {name} to {master or 'nothing'}",
                         self.ops.op("set_master", name, master),
                         self.ops.op("set_master", name, was))
            self.view.changed(name, master=master)

    # -- the change -----------------------------------------------------------------------

    def _delete_many(self, item: str, names: list[str]) -> None:
        """Delete several devices in one kernel request (a batch of removals is bound by
        the kernel's per-device cost otherwise); undo recreates every one."""
        names = [n for n in names if self.view.exists(n)]
        if len(names) < 2:
            for name in names:
                self._delete(item, name)
            return
        # One address dump for all (devices the view knows by index), not one per device.
        flags = self.nl.address_flags_by_index()
        snaps = []
        for name in names:
            index = self._link(name).index
            snaps.append(self._snapshot(name, flags.get(index, {}) if index else None)
                         .to_wire())
        group = secrets.randbelow(2**31 - 2) + 1
        self.tx.step(item, f"delete {len(names)} devices ({', '.join(names[:3])}...)",
                     self.ops.op("delete_many", names, group),
                     self.ops.op("recreate_many", snaps))
        self.view.deleted(names)

    def apply(self, the_plan: Plan, desired: NetConfig) -> None:
        doomed: list[str] = []
        for net in the_plan.nets_down:
            doomed += self.teardown_network(net)
        if doomed:
            names = [n.name for n in the_plan.nets_down]
            self._delete_many(f"network {names[0]}" if len(names) == 1
                              else f"networks {', '.join(names)}", doomed)
        for old, new in the_plan.nets_edit:
            self.edit_down(old, new)
        for bond in the_plan.bonds_down:
            self._delete(f"bond {bond}", bond)
        for bond_attrs in the_plan.bonds_up:
            self.build_bond(bond_attrs)
        self.set_base_mtus(the_plan, desired)
        for old, new in the_plan.nets_edit:
            self.edit_up(old, new)
        for net in the_plan.nets_up:
            self.build_network(net)

    def teardown_network(self, net: NetworkAttrs) -> list[str]:
        """Take away the network's layer 3; returns the devices it made, to delete."""
        item = f"network {net.name}"
        if self.view.exists(net.iface):
            keeps_iface = not net.bridged  # a NIC, bond or VLAN device outlives its network
            after = L3Spec(net.iface, ipv6_conf=KERNEL_IPV6_CONF) if keeps_iface else EMPTY
            self.l3_down(item, l3_spec(net), after)
            if keeps_iface:
                self.l3_up(item, l3_spec(net), after)
        return _upper_devices(net)[::-1]  # the bridge before the VLAN device under it

    def edit_down(self, old: NetworkAttrs, new: NetworkAttrs) -> None:
        """First half of an in-place edit: drop what ``new`` no longer has, detach a
        southbound port that changes, lower MTUs that go down."""
        item = f"network {new.name}"
        old_l3, new_l3 = l3_spec(old), l3_spec(new)
        self.l3_down(item, old_l3, _without_routing(new_l3) if _readdress(old_l3, new_l3)
                     else new_l3)
        if old.southbound != new.southbound:
            if old.southbound and old.bridged:
                self._set_master(item, old.southbound, "")
            if old.vlan_device:
                self._delete(item, old.vlan_device)
        if new.mtu < old.mtu:
            for dev in reversed(_upper_devices(new)):
                if self.view.exists(dev):
                    self._set_mtu(item, dev, new.mtu)

    def edit_up(self, old: NetworkAttrs, new: NetworkAttrs) -> None:
        """Second half: attach the new southbound port, raise MTUs, add what is new."""
        item = f"network {new.name}"
        if new.base:
            self._set_up(item, new.base, True)
        if old.southbound != new.southbound and new.vlan_device:
            self._create_vlan(item, new)
        if new.mtu > old.mtu:
            for dev in _upper_devices(new):
                self._set_mtu(item, dev, new.mtu)
        if old.southbound != new.southbound and new.bridged and new.southbound:
            self._set_master(item, new.southbound, new.name)
        old_l3, new_l3 = l3_spec(old), l3_spec(new)
        self.l3_up(item, _without_routing(old_l3) if _readdress(old_l3, new_l3) else old_l3,
                   new_l3)

    def build_bond(self, bond: BondingAttrs) -> None:
        item = f"bond {bond.name}"
        self.tx.step(item, f"create bond {bond.name}",
                     lambda: self.nl.add_bond(bond.name, dict(bond.options)),
                     self.ops.op("delete", bond.name))
        self.view.unknown(bond.name)
        self._made.add(bond.name)
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
        gone = [*the_plan.nets_down, *(old for old, _new in the_plan.nets_edit)]
        for net in gone:
            if net.base and net.base not in wanted and self.view.exists(net.base):
                wanted[net.base] = DEFAULT_MTU
        enslaved = {nic for b in desired.bondings.values() for nic in b.nics}
        for base, mtu in sorted(wanted.items()):
            if base not in enslaved:
                self._set_mtu(f"device {base}", base, mtu)

    def _create_vlan(self, item: str, net: NetworkAttrs) -> None:
        vdev = net.vlan_device
        assert net.vlan is not None
        vlan_id = net.vlan
        self.tx.step(item, f"create vlan {vdev}",
                     lambda: self.nl.add_vlan(vdev, net.base, vlan_id, net.mtu),
                     self.ops.op("delete", vdev))
        self.view.created(Link(0, vdev, "vlan", net.mtu, False, "down", vlan_id=vlan_id,
                               vlan_parent=net.base))
        self._made.add(vdev)
        self._set_up(item, vdev, True)

    def build_network(self, net: NetworkAttrs) -> None:
        item = f"network {net.name}"
        if net.base:
            self._set_up(item, net.base, True)
        if net.vlan_device:
            self._create_vlan(item, net)
        if net.bridged:
            self.tx.step(item, f"create bridge {net.name}",
                         lambda: self.nl.add_bridge(net.name, stp=net.stp, mtu=net.mtu),
                         self.ops.op("delete", net.name))
            self.view.created(Link(0, net.name, "bridge", net.mtu, False, "down",
                                   stp=net.stp))
            self._made.add(net.name)
            if net.southbound:
                self._set_master(item, net.southbound, net.name)
            self._set_mtu(item, net.name, net.mtu)
            self._set_up(item, net.name, True)
        self.l3_up(item, L3Spec(net.iface), l3_spec(net))

    # -- layer 3 --------------------------------------------------------------------------

    def l3_down(self, item: str, old: L3Spec, new: L3Spec) -> None:
        """Remove what ``old`` has and ``new`` has not: DHCP clients, rules, routes
        (gateway routes before the subnet routes they go through), addresses."""
        iface = old.iface
        for dhcp in sorted(old.dhcp - new.dhcp, key=lambda d: d.family):
            self.tx.step(item, f"stop DHCPv{dhcp.family} client on {iface}",
                         self.ops.op("stop_dhcp", iface, dhcp.family, dhcp.default_route),
                         self.ops.op("start_dhcp", iface, dhcp.family, dhcp.default_route,
                                     False))
        for rule in sorted(old.rules - new.rules, key=repr):
            self.tx.step(item, f"remove rule {rule.src or rule.dst} table {rule.table}",
                         self.ops.op("del_rule", asdict(rule)),
                         self.ops.op("add_rule", asdict(rule)))
        for route in sorted(old.routes - new.routes, key=lambda r: (not r.gateway, repr(r))):
            self.tx.step(item, f"remove route {_describe(route)}",
                         self.ops.op("del_route", asdict(route)),
                         self.ops.op("add_route", asdict(route)))
        dropped = old.addresses - new.addresses
        present = set(self.nl.addresses_of(iface)) if dropped else set()
        for cidr in sorted(dropped):
            if cidr in present:
                self.tx.step(item, f"remove address {cidr} from {iface}",
                             self.ops.op("del_address", iface, cidr),
                             self.ops.op("add_address", iface, cidr))

    def l3_up(self, item: str, old: L3Spec, new: L3Spec) -> None:
        """Add what ``new`` has and ``old`` has not, in the reverse order of
        :meth:`l3_down`; a new IPv4 default route replaces the host's previous one."""
        iface = new.iface
        for cidr in sorted(new.addresses - old.addresses):
            self.tx.step(item, f"add address {cidr} to {iface}",
                         self.ops.op("add_address", iface, cidr),
                         self.ops.op("del_address", iface, cidr))
        for route in sorted(new.routes - old.routes, key=lambda r: (bool(r.gateway), repr(r))):
            if not route.dst and route.table == Route("", "").table:
                self._replace_default_route(item, route)
            self.tx.step(item, f"add route {_describe(route)}",
                         self.ops.op("add_route", asdict(route)),
                         self.ops.op("del_route", asdict(route)))
        for rule in sorted(new.rules - old.rules, key=repr):
            self.tx.step(item, f"add rule {rule.src or rule.dst} table {rule.table}",
                         self.ops.op("add_rule", asdict(rule)),
                         self.ops.op("del_rule", asdict(rule)))
        if new.ipv6_conf and new.ipv6_conf != old.ipv6_conf:
            self._set_ipv6_conf(item, iface, dict(new.ipv6_conf))
        for dhcp in sorted(new.dhcp - old.dhcp, key=lambda d: d.family):
            self.tx.step(item, f"start DHCPv{dhcp.family} client on {iface}",
                         self.ops.op("start_dhcp", iface, dhcp.family, dhcp.default_route,
                                     dhcp.blocking),
                         self.ops.op("stop_dhcp", iface, dhcp.family, dhcp.default_route))

    def _replace_default_route(self, item: str, route: Route) -> None:
        for old in self.nl.default_routes(route.family):
            if old != route:
                self.tx.step(item, f"remove previous default route {_describe(old)}",
                             self.ops.op("del_route", asdict(old)),
                             self.ops.op("add_route", asdict(old)))

    def _set_ipv6_conf(self, item: str, iface: str, values: dict[str, str]) -> None:
        if iface in self._made:
            # A device of this change: its undo is its deletion; no need to read first.
            self.tx.step(item, f"set IPv6 {values} on {iface}",
                         self.ops.op("init_ipv6_conf", iface, values), None)
            return
        was = self.nl.ipv6_conf(iface, tuple(values))
        if not all(was.values()):
            return  # IPv6 is off on this device (or in this kernel): nothing to switch
        if was != values:
            self.tx.step(item, f"set IPv6 {values} on {iface}",
                         self.ops.op("set_ipv6_conf", iface, values),
                         self.ops.op("set_ipv6_conf", iface, was))


def _readdress(old: L3Spec, new: L3Spec) -> bool:
    """Whether an edit changes addresses. Then every route and rule is taken away before
    and put back after: the kernel flushes a device's routes by itself when its last IPv4
    address goes, which no undo could bring back."""
    return old.addresses != new.addresses


def _without_routing(spec: L3Spec) -> L3Spec:
    return dataclasses.replace(spec, routes=frozenset(), rules=frozenset())


def _describe(route: Route) -> str:
    where = route.dst or "default"
    via = f" via {route.gateway}" if route.gateway else ""
    table = f" table {route.table}" if route.table != Route("", "").table else ""
    return f"{where}{via} dev {route.dev}{table}"


def missing_networks(nl: Netlink, config: NetConfig) -> frozenset[str]:
    """Networks of ``config`` whose devices or addresses are not in the kernel (restore)."""
    links = nl.links()
    addresses = nl.addresses()
    missing = set()
    for name, net in config.networks.items():
        devices = [d for d in (net.name if net.bridged else "", net.vlan_device) if d]
        have = set(addresses.get(net.iface, []))
        if any(d not in links for d in devices) or not set(net.static_addresses) <= have:
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
