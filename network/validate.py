"""Checks a whole setupNetworks request against the host before anything is touched.

Owns the rules that involve more than one item or the host's devices: NICs exist and are
NICs, no NIC serves two untagged networks or a network and a bond, bonds have slaves of
their own, VLAN ids are unique per device, MTUs fit the devices, names do not clash with
each other or with devices the agent does not own, at most one default route. Each rule
raises VDSM's network error with the item named. Reads only what it is given (the kernel's
links, the running configuration): must not touch the kernel itself.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping

from network.model import NetConfig, NetworkAttrs, SetupRequest
from network.netlink import Link
from vdsm_py.errors import (
    NetworkBadAddr,
    NetworkBadBonding,
    NetworkBadBridge,
    NetworkBadNic,
    NetworkBadParams,
    NetworkBadVlan,
    NetworkUsedBond,
    NetworkUsedBridge,
    NetworkUsedNic,
)

MAX_NAME_LEN = 15
_BOND_NAME = re.compile(r"^bond\w+$")
_BAD_BRIDGE_CHARS = frozenset(":. \t/")


class NicFilter:
    """Which links count as NICs: physical devices, plus names matching ``fake_nics``
    globs (veth/dummy devices standing in for NICs on test and development hosts)."""

    def __init__(self, fake_nics: Iterable[str] = ()) -> None:
        self.patterns = tuple(p for p in fake_nics if p)

    def __call__(self, link: Link) -> bool:
        if any(fnmatch.fnmatchcase(link.name, p) for p in self.patterns):
            return True
        return link.kind == "" and link.name != "lo" and bool(link.mac)


def agent_devices(config: NetConfig) -> set[str]:
    """Devices the agent made for ``config``: bridges, VLAN devices, bonds."""
    out = set(config.bondings)
    for net in config.networks.values():
        if net.bridged:
            out.add(net.name)
        if net.vlan_device:
            out.add(net.vlan_device)
    return out


def validate(
    request: SetupRequest,
    running: NetConfig,
    links: Mapping[str, Link],
    is_nic: NicFilter,
) -> NetConfig:
    """Return the configuration the request leads to, or raise the first problem."""
    for name in sorted(request.remove_networks):
        if name not in running.networks:
            raise NetworkBadBridge(f"network {name!r}: cannot remove it, it does not exist")
    for name in sorted(request.remove_bondings):
        if name not in running.bondings:
            raise NetworkBadBonding(f"bond {name!r}: cannot remove it, it does not exist")
    desired = running.merged(request)
    owned = agent_devices(running) | agent_devices(desired)

    def foreign_master(link: Link) -> bool:
        return bool(link.master) and link.master not in owned

    slave_of: dict[str, str] = {}
    for bond in desired.bondings.values():
        for nic in bond.nics:
            if nic in slave_of:
                raise NetworkBadBonding(
                    f"bond {bond.name!r}: nic {nic!r} is already a slave of {slave_of[nic]!r}"
                )
            slave_of[nic] = bond.name
    for name, bond in sorted(request.bondings.items()):
        if len(name) > MAX_NAME_LEN or not _BOND_NAME.match(name):
            raise NetworkBadBonding(f"bond {name!r}: bad name (bond<suffix>, at most 15 chars)")
        if name in links and name not in owned:
            raise NetworkBadBonding(f"bond {name!r}: a device of that name already exists")
        if not bond.nics:
            raise NetworkBadBonding(f"bond {name!r}: has no slaves")
        for nic in bond.nics:
            link = links.get(nic)
            if link is None:
                raise NetworkBadNic(f"bond {name!r}: unknown nic {nic!r}")
            if not is_nic(link):
                raise NetworkBadBonding(f"bond {name!r}: slave {nic!r} is not a NIC")
            if foreign_master(link):
                raise NetworkBadBonding(
                    f"bond {name!r}: slave {nic!r} belongs to {link.master!r}, "
                    "which this agent does not manage"
                )
    for name, net in sorted(request.networks.items()):
        _check_network(net, desired, links, is_nic, owned, slave_of, foreign_master)
    _check_cross(desired, request, slave_of)
    return desired


def _check_network(
    net: NetworkAttrs,
    desired: NetConfig,
    links: Mapping[str, Link],
    is_nic: NicFilter,
    owned: set[str],
    slave_of: dict[str, str],
    foreign_master: Callable[[Link], bool],
) -> None:
    name = net.name
    if not name or (net.bridged and len(name) > MAX_NAME_LEN):
        raise NetworkBadBridge(f"network {name!r}: bad name (1-{MAX_NAME_LEN} characters)")
    if net.bridged and (set(name) & _BAD_BRIDGE_CHARS or name.startswith("-")):
        raise NetworkBadBridge(f"network {name!r}: bad bridge name")
    if name in desired.bondings:
        raise NetworkBadParams(f"network {name!r}: the name is also a bond's")
    if net.bridged and name in links and name not in owned:
        raise NetworkUsedBridge(
            f"network {name!r}: a device of that name exists and is not this agent's"
        )
    if net.nic:
        link = links.get(net.nic)
        if link is None:
            raise NetworkBadNic(f"network {name!r}: unknown nic {net.nic!r}")
        if not is_nic(link):
            raise NetworkBadNic(f"network {name!r}: {net.nic!r} is not a NIC")
        if net.nic in slave_of:
            raise NetworkUsedNic(
                f"network {name!r}: nic {net.nic!r} is a slave of bond {slave_of[net.nic]!r}"
            )
        if foreign_master(link):
            raise NetworkUsedNic(
                f"network {name!r}: nic {net.nic!r} belongs to {link.master!r}, "
                "which this agent does not manage"
            )
        if link.max_mtu and net.mtu > link.max_mtu:
            raise NetworkBadParams(
                f"network {name!r}: mtu {net.mtu} is above {net.nic!r}'s maximum {link.max_mtu}"
            )
        if link.min_mtu and net.mtu < link.min_mtu:
            raise NetworkBadParams(
                f"network {name!r}: mtu {net.mtu} is below {net.nic!r}'s minimum {link.min_mtu}"
            )
    if net.bonding:
        bond = desired.bondings.get(net.bonding)
        if bond is None:
            raise NetworkBadBonding(f"network {name!r}: unknown bond {net.bonding!r}")
        for nic in bond.nics:
            link = links.get(nic)
            if link is not None and link.max_mtu and net.mtu > link.max_mtu:
                raise NetworkBadParams(
                    f"network {name!r}: mtu {net.mtu} is above slave {nic!r}'s maximum"
                )
    if net.vlan_device:
        if len(net.vlan_device) > MAX_NAME_LEN:
            raise NetworkBadVlan(
                f"network {name!r}: vlan device name {net.vlan_device!r} is too long"
            )
        if net.vlan_device in links and net.vlan_device not in owned:
            raise NetworkBadVlan(
                f"network {name!r}: device {net.vlan_device!r} exists and is not this agent's"
            )


def _check_cross(desired: NetConfig, request: SetupRequest, slave_of: dict[str, str]) -> None:
    untagged: dict[str, NetworkAttrs] = {}
    tagged: dict[tuple[str, int], NetworkAttrs] = {}
    addresses: dict[str, str] = {}
    default_route = ""
    for name, net in sorted(desired.networks.items()):
        if net.nic in slave_of:
            raise NetworkUsedNic(
                f"network {name!r}: nic {net.nic!r} is a slave of bond {slave_of[net.nic]!r}"
            )
        if net.base and net.vlan is None:
            other = untagged.setdefault(net.base, net)
            if other is not net:
                raise NetworkUsedNic(
                    f"network {name!r}: {net.base!r} already carries untagged network "
                    f"{other.name!r}"
                )
        elif net.base and net.vlan is not None:
            other = tagged.setdefault((net.base, net.vlan), net)
            if other is not net:
                raise NetworkBadVlan(
                    f"network {name!r}: vlan {net.vlan} on {net.base!r} is already used by "
                    f"network {other.name!r}"
                )
        for cidr in net.static_addresses:
            address = cidr.partition("/")[0]
            owner = addresses.setdefault(address, name)
            if owner != name:
                raise NetworkBadAddr(
                    f"network {name!r}: address {address} is also network {owner!r}'s"
                )
        if net.default_route:
            if default_route:
                raise NetworkBadParams(
                    f"network {name!r}: only one network may be the default route "
                    f"({default_route!r} is too)"
                )
            default_route = name
    for (base, _vlan), net in sorted(tagged.items()):
        parent = untagged.get(base)
        if parent is not None and net.mtu > parent.mtu:
            raise NetworkBadParams(
                f"network {net.name!r}: mtu {net.mtu} is above the mtu {parent.mtu} of "
                f"{parent.name!r}, the untagged network of its parent {base!r}"
            )
    for bond in sorted(request.remove_bondings):
        users = sorted(n for n, net in desired.networks.items() if net.bonding == bond)
        if users:
            raise NetworkUsedBond(f"bond {bond!r}: still used by network {users[0]!r}")
