"""What a network puts on its interface at layer 3, as a comparable value.

Owns :func:`l3_spec`: a network's static addresses, its routes (the default routes it holds,
and the source routing VDSM gives a network whose gateway is *not* the default route: its
own routing table with a default route via that gateway and its subnet, plus rules sending
traffic from and to the subnet there, so replies leave through the network they came in
on), its IPv6 autoconfiguration switches and its DHCP clients. The configurator compares
the spec of the running network with the desired one and changes only the difference.
Pure: must not touch the kernel.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from network.model import NetworkAttrs
from network.netlink import AF_INET6, Route, Rule

SOURCE_RULE_PRIORITY = 32000


@dataclass(frozen=True)
class DhcpSpec:
    family: int  # 4 or 6
    default_route: bool = False
    blocking: bool = False


@dataclass(frozen=True)
class L3Spec:
    iface: str
    addresses: frozenset[str] = frozenset()
    routes: frozenset[Route] = frozenset()
    rules: frozenset[Rule] = frozenset()
    # net.ipv6.conf.<iface>.{accept_ra,autoconf}; () leaves the kernel's values alone
    ipv6_conf: tuple[tuple[str, str], ...] = ()
    dhcp: frozenset[DhcpSpec] = frozenset()


EMPTY = L3Spec("")


def source_table(address: str) -> int:
    """The routing table of a network's source routing: its IPv4 address as a number
    (unique per address, never one of the kernel's reserved tables 0 and 253-255)."""
    return int(ipaddress.IPv4Address(address))


def source_routing(net: NetworkAttrs) -> tuple[list[Route], list[Rule]]:
    """Routes and rules of a static network whose gateway is not the default route."""
    ipv4 = net.ipv4
    if ipv4 is None or not ipv4.gateway or net.default_route:
        return [], []
    table = source_table(ipv4.address)
    routes = [
        Route(ipv4.gateway, net.iface, "", table),
        Route("", net.iface, ipv4.subnet, table, prefsrc=ipv4.address),
    ]
    rules = [
        Rule(table, src=ipv4.subnet, priority=SOURCE_RULE_PRIORITY),
        Rule(table, dst=ipv4.subnet, iif=net.iface, priority=SOURCE_RULE_PRIORITY),
    ]
    return routes, rules


def l3_spec(net: NetworkAttrs) -> L3Spec:
    routes, rules = source_routing(net)
    if net.default_route and net.ipv4 is not None and net.ipv4.gateway:
        routes.append(Route(net.ipv4.gateway, net.iface))
    if net.default_route and net.ipv6 is not None and net.ipv6.gateway:
        routes.append(Route(net.ipv6.gateway, net.iface, family=AF_INET6))
    dhcp = set()
    if net.dhcpv4:
        dhcp.add(DhcpSpec(4, net.default_route, net.blocking_dhcp))
    if net.dhcpv6:
        dhcp.add(DhcpSpec(6, False, net.blocking_dhcp))
    autoconf = "1" if net.ipv6autoconf else "0"
    accept_ra = "1" if net.ipv6autoconf or net.dhcpv6 else "0"
    return L3Spec(
        iface=net.iface,
        addresses=frozenset(net.static_addresses),
        routes=frozenset(routes),
        rules=frozenset(rules),
        ipv6_conf=(("accept_ra", accept_ra), ("autoconf", autoconf)),
        dhcp=frozenset(dhcp),
    )
