"""The setupNetworks request model: typed, canonical descriptions of networks and bonds.

Owns turning the wire dictionaries of ``Host.setupNetworks`` (VDSM's spelling: ``nic``,
``bonding``, ``vlan``, ``bridged``, ``ipaddr``...) into frozen dataclasses with VDSM's
defaults filled in (MTU 1500, bridged, STP off, no default route, bootproto none), and back
to the wire shape for persistence and reporting. Checks here are per item and syntactic
(types, ranges, address syntax); whether a request fits the host is ``network.validate``'s
job. Must not touch the kernel or files.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vdsm_py.errors import (
    NetworkBadAddr,
    NetworkBadBonding,
    NetworkBadParams,
    NetworkBadVlan,
)

DEFAULT_MTU = 1500
MIN_MTU = 68
MAX_MTU = 65535
MAX_VLAN_ID = 4094

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")


def to_bool(value: Any, what: str) -> bool:
    """VDSM accepts booleans as JSON booleans or as strings ('true', 'False'...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in _TRUE:
        return True
    if isinstance(value, str) and value.strip().lower() in _FALSE:
        return False
    raise NetworkBadParams(f"{what}: {value!r} is not a boolean")


def _to_int(value: Any, what: str, error: type[Exception] = NetworkBadParams) -> int:
    if isinstance(value, bool):
        raise error(f"{what}: {value!r} is not a number")
    try:
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise error(f"{what}: {value!r} is not a number") from None


@dataclass(frozen=True)
class IPv4:
    """A static IPv4 configuration: address/prefix and an optional gateway."""

    address: str
    prefixlen: int
    gateway: str = ""

    @property
    def netmask(self) -> str:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{self.prefixlen}").netmask)

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"

    @property
    def subnet(self) -> str:
        return str(ipaddress.IPv4Interface(self.cidr).network)


@dataclass(frozen=True)
class IPv6:
    """Static IPv6: addresses (``addr/len``, canonical) and an optional gateway."""

    addresses: tuple[str, ...]
    gateway: str = ""


@dataclass(frozen=True)
class NetworkAttrs:
    """One logical network as the agent realises it."""

    name: str
    nic: str = ""
    bonding: str = ""
    vlan: int | None = None
    bridged: bool = True
    stp: bool = False
    mtu: int = DEFAULT_MTU
    bootproto: str = "none"
    ipv4: IPv4 | None = None
    default_route: bool = False
    ipv6autoconf: bool = False
    dhcpv6: bool = False
    ipv6: IPv6 | None = None
    blocking_dhcp: bool = False
    custom: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def base(self) -> str:
        """The NIC or bond under the network ('' for a nicless bridge)."""
        return self.nic or self.bonding

    @property
    def vlan_device(self) -> str:
        return f"{self.base}.{self.vlan}" if self.vlan is not None else ""

    @property
    def southbound(self) -> str:
        """The device that carries the traffic: the VLAN device, else the NIC or bond."""
        return self.vlan_device or self.base

    @property
    def iface(self) -> str:
        """The device that holds the network's addresses: the bridge, else southbound."""
        return self.name if self.bridged else self.southbound

    @property
    def dhcpv4(self) -> bool:
        return self.bootproto == "dhcp"

    @property
    def static_addresses(self) -> tuple[str, ...]:
        """Every static address (IPv4 first) as ``addr/len``."""
        v4 = (self.ipv4.cidr,) if self.ipv4 is not None else ()
        return v4 + (self.ipv6.addresses if self.ipv6 is not None else ())

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bridged": self.bridged,
            "mtu": self.mtu,
            "bootproto": self.bootproto,
            "defaultRoute": self.default_route,
            "ipv6autoconf": self.ipv6autoconf,
            "dhcpv6": self.dhcpv6,
            "switch": "legacy",
        }
        if self.nic:
            out["nic"] = self.nic
        if self.bonding:
            out["bonding"] = self.bonding
        if self.vlan is not None:
            out["vlan"] = self.vlan
        if self.bridged:
            out["stp"] = self.stp
        if self.ipv4 is not None:
            out["ipaddr"] = self.ipv4.address
            out["netmask"] = self.ipv4.netmask
            if self.ipv4.gateway:
                out["gateway"] = self.ipv4.gateway
        if self.ipv6 is not None:
            addrs = self.ipv6.addresses
            out["ipv6addr"] = addrs[0] if len(addrs) == 1 else list(addrs)
            if self.ipv6.gateway:
                out["ipv6gateway"] = self.ipv6.gateway
        if self.blocking_dhcp:
            out["blockingdhcp"] = True
        if self.custom:
            out["custom"] = dict(self.custom)
        return out


@dataclass(frozen=True)
class BondingAttrs:
    """One bond: its slave NICs and its driver options (``mode=1 miimon=100``)."""

    name: str
    nics: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()

    @property
    def options_string(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.options)

    def to_wire(self) -> dict[str, Any]:
        return {"nics": list(self.nics), "options": self.options_string, "switch": "legacy"}


@dataclass(frozen=True)
class SetupOptions:
    connectivity_check: bool = True
    connectivity_timeout: float = 4.0


@dataclass(frozen=True)
class SetupRequest:
    """A whole setupNetworks call: what to set (canonical) and what to remove, by name."""

    networks: Mapping[str, NetworkAttrs]
    bondings: Mapping[str, BondingAttrs]
    remove_networks: frozenset[str] = frozenset()
    remove_bondings: frozenset[str] = frozenset()
    options: SetupOptions = SetupOptions()


# --- canonicalization ------------------------------------------------------------------

_NETWORK_KEYS = frozenset({
    "nic", "bonding", "vlan", "bridged", "stp", "STP", "mtu", "bootproto", "ipaddr",
    "netmask", "prefix", "gateway", "defaultRoute", "ipv6autoconf", "dhcpv6", "ipv6addr",
    "ipv6gateway", "nameservers", "custom", "switch", "remove", "blockingdhcp", "hostQos",
    "ipv6_address",
})

# Bond options the netlink adapter knows how to apply, and the mode names of the driver.
BOND_MODES = ("balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad",
              "balance-tlb", "balance-alb")
BOND_INT_OPTIONS = ("miimon", "updelay", "downdelay")


def _ipv4(name: str, attrs: Mapping[str, Any]) -> IPv4 | None:
    address = attrs.get("ipaddr") or ""
    netmask = attrs.get("netmask") or ""
    prefix = attrs.get("prefix")
    gateway = attrs.get("gateway") or ""
    if not address:
        if netmask or prefix or gateway:
            raise NetworkBadAddr(f"network {name!r}: netmask, prefix or gateway without ipaddr")
        return None
    if netmask and prefix not in (None, ""):
        raise NetworkBadParams(f"network {name!r}: both prefix and netmask given")
    try:
        addr = ipaddress.IPv4Address(str(address))
        if prefix not in (None, ""):
            plen = _to_int(prefix, f"network {name!r}: prefix", NetworkBadAddr)
            if not 0 < plen <= 32:
                raise NetworkBadAddr(f"network {name!r}: bad prefix {prefix!r}")
        elif netmask:
            plen = ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen
        else:
            raise NetworkBadAddr(f"network {name!r}: ipaddr {address!r} without netmask")
        gw = str(ipaddress.IPv4Address(str(gateway))) if gateway else ""
    except ValueError as exc:
        raise NetworkBadAddr(f"network {name!r}: invalid address: {exc}") from None
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback:
        raise NetworkBadAddr(f"network {name!r}: {address} cannot be a host address")
    if plen < 31:
        net = ipaddress.IPv4Network(f"{addr}/{plen}", strict=False)
        if addr in (net.network_address, net.broadcast_address):
            raise NetworkBadAddr(
                f"network {name!r}: {address}/{plen} is a network or broadcast address"
            )
    if gw and plen < 31 and ipaddress.IPv4Address(gw) not in ipaddress.IPv4Network(
            f"{addr}/{plen}", strict=False):
        raise NetworkBadAddr(
            f"network {name!r}: gateway {gw} is outside the subnet of {addr}/{plen}"
        )
    if gw and gw == str(addr):
        raise NetworkBadAddr(f"network {name!r}: gateway {gw} is the network's own address")
    return IPv4(str(addr), plen, gw)


def _ipv6_cidr(name: str, value: Any) -> str:
    if not isinstance(value, str) or "/" not in value:
        raise NetworkBadAddr(f"network {name!r}: ipv6addr {value!r} is not address/prefix")
    address, _, plen = value.partition("/")
    try:
        iface = ipaddress.IPv6Interface(f"{address}/{int(plen)}")
    except ValueError as exc:
        raise NetworkBadAddr(f"network {name!r}: invalid ipv6addr {value!r}: {exc}") from None
    if not 0 < iface.network.prefixlen <= 128:
        raise NetworkBadAddr(f"network {name!r}: bad IPv6 prefix in {value!r}")
    ip = iface.ip
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local:
        raise NetworkBadAddr(f"network {name!r}: {ip} cannot be a static host address")
    return f"{ip}/{iface.network.prefixlen}"


def _ipv6(name: str, attrs: Mapping[str, Any]) -> IPv6 | None:
    raw = attrs.get("ipv6addr") or ""
    gateway = attrs.get("ipv6gateway") or ""
    if not raw:
        if gateway:
            raise NetworkBadAddr(f"network {name!r}: ipv6gateway without ipv6addr")
        return None
    values = raw if isinstance(raw, (list, tuple)) else [raw]
    cidrs = tuple(dict.fromkeys(_ipv6_cidr(name, v) for v in values))
    if not gateway:
        return IPv6(cidrs)
    try:
        gw = ipaddress.IPv6Address(str(gateway))
    except ValueError as exc:
        raise NetworkBadAddr(f"network {name!r}: invalid ipv6gateway: {exc}") from None
    if gw.is_multicast or gw.is_unspecified or gw.is_loopback:
        raise NetworkBadAddr(f"network {name!r}: {gw} cannot be a gateway")
    subnets = [ipaddress.IPv6Interface(c).network for c in cidrs]
    if not gw.is_link_local and not any(gw in net for net in subnets):
        raise NetworkBadAddr(
            f"network {name!r}: ipv6gateway {gw} is neither link-local nor in the subnet "
            f"of {', '.join(cidrs)}"
        )
    return IPv6(cidrs, str(gw))


def canonical_network(name: str, attrs: Mapping[str, Any]) -> NetworkAttrs:
    """A network's wire attributes with VDSM's defaults filled in; raises on bad values."""
    if not isinstance(attrs, Mapping):
        raise NetworkBadParams(f"network {name!r}: attributes must be an object")
    unknown = set(attrs) - _NETWORK_KEYS
    if unknown:
        raise NetworkBadParams(f"network {name!r}: unknown attributes {sorted(unknown)}")
    nic = str(attrs.get("nic") or "")
    bonding = str(attrs.get("bonding") or "")
    if nic and bonding:
        raise NetworkBadParams(f"network {name!r}: both nic and bonding given")
    vlan = None
    if attrs.get("vlan") not in (None, ""):
        vlan = _to_int(attrs["vlan"], f"network {name!r}: vlan", NetworkBadVlan)
        if not 1 <= vlan <= MAX_VLAN_ID:
            raise NetworkBadVlan(
                f"network {name!r}: vlan id {vlan} is outside 1-{MAX_VLAN_ID}"
            )
    mtu = DEFAULT_MTU
    if attrs.get("mtu") not in (None, ""):
        mtu = _to_int(attrs["mtu"], f"network {name!r}: mtu")
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise NetworkBadParams(f"network {name!r}: mtu {mtu} is outside {MIN_MTU}-{MAX_MTU}")
    bridged = to_bool(attrs.get("bridged", True), f"network {name!r}: bridged")
    stp = False
    if bridged:
        stp_raw = attrs.get("stp", attrs.get("STP", False))
        stp = to_bool(stp_raw, f"network {name!r}: stp")
    bootproto = str(attrs.get("bootproto") or "none").lower()
    if bootproto not in ("none", "dhcp"):
        raise NetworkBadParams(f"network {name!r}: bootproto {bootproto!r} is not none or dhcp")
    if bootproto == "dhcp" and (attrs.get("ipaddr") or attrs.get("netmask")
                                or attrs.get("prefix") or attrs.get("gateway")):
        raise NetworkBadAddr(
            f"network {name!r}: a static IPv4 address or gateway cannot be used with "
            "bootproto dhcp"
        )
    ipv4 = _ipv4(name, attrs)
    ipv6 = _ipv6(name, attrs)
    default_route = to_bool(attrs.get("defaultRoute", False), f"network {name!r}: defaultRoute")
    ipv6autoconf = to_bool(attrs.get("ipv6autoconf", False), f"network {name!r}: ipv6autoconf")
    dhcpv6 = to_bool(attrs.get("dhcpv6", False), f"network {name!r}: dhcpv6")
    if ipv6 is not None and (ipv6autoconf or dhcpv6):
        raise NetworkBadAddr(
            f"network {name!r}: a static ipv6addr cannot be used with ipv6autoconf or dhcpv6"
        )
    if ipv6 is not None and ipv6.gateway and not default_route:
        raise NetworkBadParams(
            f"network {name!r}: ipv6gateway is only allowed on the default route network"
        )
    if str(attrs.get("switch") or "legacy") != "legacy":
        raise NetworkBadParams(f"network {name!r}: only the legacy switch is supported")
    if not bridged and not (nic or bonding):
        raise NetworkBadParams(f"network {name!r}: a bridgeless network needs a nic or bonding")
    if vlan is not None and not (nic or bonding):
        raise NetworkBadVlan(f"network {name!r}: vlan {vlan} needs a nic or bonding")
    custom = attrs.get("custom") or {}
    if not isinstance(custom, Mapping):
        raise NetworkBadParams(f"network {name!r}: custom must be an object")
    return NetworkAttrs(
        name=name, nic=nic, bonding=bonding, vlan=vlan, bridged=bridged, stp=stp, mtu=mtu,
        bootproto=bootproto, ipv4=ipv4, default_route=default_route,
        ipv6autoconf=ipv6autoconf, dhcpv6=dhcpv6, ipv6=ipv6,
        blocking_dhcp=to_bool(attrs.get("blockingdhcp", False),
                              f"network {name!r}: blockingdhcp"),
        custom=dict(custom),
    )


def parse_bond_options(name: str, options: Any) -> tuple[tuple[str, str], ...]:
    """``"mode=1 miimon=100"`` → canonical sorted pairs (mode by its driver name)."""
    if options in (None, ""):
        return ()
    if not isinstance(options, str):
        raise NetworkBadBonding(f"bond {name!r}: options must be a string")
    pairs: dict[str, str] = {}
    for item in options.split():
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise NetworkBadBonding(f"bond {name!r}: bad option {item!r}")
        if key == "mode":
            if value.isdigit() and int(value) < len(BOND_MODES):
                value = BOND_MODES[int(value)]
            if value not in BOND_MODES:
                raise NetworkBadBonding(f"bond {name!r}: unknown mode {value!r}")
        elif key in BOND_INT_OPTIONS:
            if not value.isdigit():
                raise NetworkBadBonding(f"bond {name!r}: {key} must be a number")
        else:
            raise NetworkBadBonding(f"bond {name!r}: unsupported option {key!r}")
        pairs[key] = value
    return tuple(sorted(pairs.items()))


def canonical_bonding(name: str, attrs: Mapping[str, Any]) -> BondingAttrs:
    if not isinstance(attrs, Mapping):
        raise NetworkBadBonding(f"bond {name!r}: attributes must be an object")
    nics = attrs.get("nics") or []
    if not isinstance(nics, (list, tuple)) or not all(isinstance(n, str) for n in nics):
        raise NetworkBadBonding(f"bond {name!r}: nics must be a list of names")
    if len(set(nics)) != len(nics):
        raise NetworkBadBonding(f"bond {name!r}: a slave is listed twice")
    if str(attrs.get("switch") or "legacy") != "legacy":
        raise NetworkBadBonding(f"bond {name!r}: only the legacy switch is supported")
    return BondingAttrs(name, tuple(sorted(nics)), parse_bond_options(name, attrs.get("options")))


def _is_removal(kind: str, name: str, attrs: Any) -> bool:
    if isinstance(attrs, Mapping) and "remove" in attrs:
        return to_bool(attrs["remove"], f"{kind} {name!r}: remove")
    return False


def parse_request(
    networks: Mapping[str, Any], bondings: Mapping[str, Any], options: Mapping[str, Any]
) -> SetupRequest:
    """Canonicalize a whole setupNetworks call; the first bad item raises its error."""
    nets: dict[str, NetworkAttrs] = {}
    removed_nets: set[str] = set()
    for name, attrs in (networks or {}).items():
        if _is_removal("network", name, attrs):
            removed_nets.add(name)
        else:
            nets[name] = canonical_network(name, attrs)
    bonds: dict[str, BondingAttrs] = {}
    removed_bonds: set[str] = set()
    for name, attrs in (bondings or {}).items():
        if _is_removal("bond", name, attrs):
            removed_bonds.add(name)
        else:
            bonds[name] = canonical_bonding(name, attrs)
    opts = options or {}
    timeout = opts.get("connectivityTimeout", SetupOptions.connectivity_timeout)
    try:
        timeout_s = float(timeout)
    except (TypeError, ValueError):
        raise NetworkBadParams(f"connectivityTimeout: {timeout!r} is not a number") from None
    if timeout_s < 0:
        raise NetworkBadParams("connectivityTimeout must not be negative")
    return SetupRequest(
        networks=nets, bondings=bonds,
        remove_networks=frozenset(removed_nets), remove_bondings=frozenset(removed_bonds),
        options=SetupOptions(
            connectivity_check=to_bool(opts.get("connectivityCheck", True), "connectivityCheck"),
            connectivity_timeout=timeout_s,
        ),
    )


@dataclass(frozen=True)
class NetConfig:
    """The agent's whole configuration: what it made and owns (running or persisted)."""

    networks: Mapping[str, NetworkAttrs] = field(default_factory=dict)
    bondings: Mapping[str, BondingAttrs] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "networks": {n: a.to_wire() for n, a in sorted(self.networks.items())},
            "bondings": {n: b.to_wire() for n, b in sorted(self.bondings.items())},
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> NetConfig:
        return cls(
            {n: canonical_network(n, a) for n, a in (data.get("networks") or {}).items()},
            {n: canonical_bonding(n, b) for n, b in (data.get("bondings") or {}).items()},
        )

    def merged(self, request: SetupRequest) -> NetConfig:
        """This configuration with the request's changes applied (not validated)."""
        nets = {n: a for n, a in self.networks.items() if n not in request.remove_networks}
        nets.update(request.networks)
        bonds = {n: b for n, b in self.bondings.items() if n not in request.remove_bondings}
        bonds.update(request.bondings)
        return NetConfig(nets, bonds)
