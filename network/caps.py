"""The network part of ``Host.getCapabilities``: networks, bridges, NICs, bonds, VLANs.

Owns reading the kernel's links and addresses (through :class:`~network.netlink.Netlink`)
and shaping them as VDSM reports them: devices by name with their MTU, MAC, addresses and
link state, plus the logical networks of the agent's running configuration with the device
that carries each. Blocking (netlink): call it from the worker pool. Must not change
anything.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from network.model import NetConfig, NetworkAttrs
from network.netlink import AF_INET6, Link, Netlink
from network.validate import NicFilter


def _addr_info(
    name: str, addresses: dict[str, list[str]], gateways: dict[int, dict[str, str]],
    net: NetworkAttrs | None,
) -> dict[str, Any]:
    """Addresses as VDSM reports them; the DHCP and autoconf flags and a source-routed
    gateway come from the network whose addresses the device holds (``net``)."""
    v4 = [a for a in addresses.get(name, []) if ":" not in a]
    v6 = [a for a in addresses.get(name, []) if ":" in a and not a.lower().startswith("fe80:")]
    primary = ipaddress.IPv4Interface(v4[0]) if v4 else None
    gateway = gateways[4].get(name, "")
    if not gateway and net is not None and net.ipv4 is not None:
        gateway = net.ipv4.gateway  # not the default route: its own (source) routing table
    return {
        "addr": str(primary.ip) if primary else "",
        "netmask": str(primary.netmask) if primary else "",
        "gateway": gateway,
        "ipv4addrs": v4,
        "ipv6addrs": v6,
        "ipv6gateway": gateways[6].get(name, "::"),
        "dhcpv4": bool(net and net.dhcpv4),
        "dhcpv6": bool(net and net.dhcpv6),
        "ipv6autoconf": bool(net and net.ipv6autoconf),
    }


def _device(link: Link, addresses: dict[str, list[str]], gateways: dict[int, dict[str, str]],
            net: NetworkAttrs | None = None) -> dict[str, Any]:
    info = _addr_info(link.name, addresses, gateways, net)
    info.update({
        "mtu": str(link.mtu),
        "hwaddr": link.mac,
        "operstate": link.operstate,
        "up": link.up,
    })
    return info


def network_capabilities(nl: Netlink, running: NetConfig, is_nic: NicFilter) -> dict[str, Any]:
    links = nl.links()
    addresses = nl.addresses()
    gateways = {4: {r.dev: r.gateway for r in nl.default_routes()},
                6: {r.dev: r.gateway for r in nl.default_routes(AF_INET6)}}
    by_iface = {net.iface: net for net in running.networks.values()}
    ports: dict[str, list[str]] = {}
    for link in links.values():
        if link.master:
            ports.setdefault(link.master, []).append(link.name)
    nics, bridges, bondings, vlans = {}, {}, {}, {}
    for name, link in sorted(links.items()):
        dev = _device(link, addresses, gateways, by_iface.get(name))
        if link.kind == "bridge":
            dev.update({"ports": sorted(ports.get(name, [])), "stp": "on" if link.stp else "off",
                        "opts": {}})
            bridges[name] = dev
        elif link.kind == "bond":
            dev.update({"slaves": sorted(ports.get(name, [])), "opts": dict(link.bond_options),
                        "active_slave": ""})
            bondings[name] = dev
        elif link.kind == "vlan":
            dev.update({"iface": link.vlan_parent, "vlanid": link.vlan_id})
            vlans[name] = dev
        elif is_nic(link):
            dev["speed"] = nl.speed(name)
            dev["permhwaddr"] = link.mac
            nics[name] = dev
    networks = {}
    for name, net in sorted(running.networks.items()):
        iface = links.get(net.iface)
        if iface is None:
            continue  # reported once it exists again (restore)
        entry = _device(iface, addresses, gateways, net)
        entry.update({
            "iface": net.iface,
            "bridged": net.bridged,
            "southbound": net.southbound,
            "switch": "legacy",
            "mtu": str(iface.mtu),
            "bootproto4": net.bootproto,
            "ipv4defaultroute": net.default_route,
        })
        if net.bridged:
            entry["ports"] = sorted(ports.get(net.name, []))
            entry["stp"] = "on" if net.stp else "off"
        if net.vlan is not None:
            entry["vlanid"] = net.vlan
        networks[name] = entry
    return {
        "networks": networks,
        "bridges": bridges,
        "nics": nics,
        "bondings": bondings,
        "vlans": vlans,
    }
