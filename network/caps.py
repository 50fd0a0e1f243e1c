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

from network.model import NetConfig
from network.netlink import Link, Netlink
from network.validate import NicFilter


def _addr_info(name: str, addresses: dict[str, list[str]], gateway: str) -> dict[str, Any]:
    v4 = [a for a in addresses.get(name, []) if ":" not in a]
    v6 = [a for a in addresses.get(name, []) if ":" in a]
    primary = ipaddress.IPv4Interface(v4[0]) if v4 else None
    return {
        "addr": str(primary.ip) if primary else "",
        "netmask": str(primary.netmask) if primary else "",
        "gateway": gateway,
        "ipv4addrs": v4,
        "ipv6addrs": v6,
        "ipv6gateway": "::",
        "dhcpv4": False,
        "dhcpv6": False,
        "ipv6autoconf": False,
    }


def _device(link: Link, addresses: dict[str, list[str]], gateways: dict[str, str]) -> dict[str, Any]:
    info = _addr_info(link.name, addresses, gateways.get(link.name, ""))
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
    gateways = {r.dev: r.gateway for r in nl.default_routes()}
    ports: dict[str, list[str]] = {}
    for link in links.values():
        if link.master:
            ports.setdefault(link.master, []).append(link.name)
    nics, bridges, bondings, vlans = {}, {}, {}, {}
    for name, link in sorted(links.items()):
        dev = _device(link, addresses, gateways)
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
        entry = _device(iface, addresses, gateways)
        entry.update({
            "iface": net.iface,
            "bridged": net.bridged,
            "southbound": net.southbound,
            "switch": "legacy",
            "mtu": str(iface.mtu),
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
