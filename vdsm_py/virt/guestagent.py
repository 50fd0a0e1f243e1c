"""What qemu-guest-agent tells about a guest, in VDSM's fields.

Owns the queries (through libvirt: ``virDomainGetGuestInfo`` for OS, host name, time
zone and users; ``virDomainInterfaceAddresses`` from the agent for the guest's network
interfaces) and their translation to ``guestFQDN``, ``guestName``, ``guestOsInfo``,
``guestTimezone``, ``netIfaces``, ``guestIPs`` and ``username``. Only VMs whose agent is
connected are asked; an agent that does not answer is skipped until the next round.
:func:`query` runs on a worker; :func:`translate` is pure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import libvirt

from vdsm_py.virt.libvirtconn import message

log = logging.getLogger("vdsm_py.virt")

_INFO_TYPES = (
    libvirt.VIR_DOMAIN_GUEST_INFO_USERS
    | libvirt.VIR_DOMAIN_GUEST_INFO_OS
    | libvirt.VIR_DOMAIN_GUEST_INFO_TIMEZONE
    | libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME
)


def translate(info: Mapping[str, Any], ifaces: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hostname = info.get("hostname")
    if hostname:
        out["guestFQDN"] = hostname
        out["guestName"] = hostname
    if "os.id" in info or "os.name" in info:
        os_id = str(info.get("os.id", ""))
        out["guestOsInfo"] = {
            "type": "windows" if os_id.startswith("mswindows") else "linux",
            "arch": info.get("os.machine", ""),
            "kernel": info.get("os.kernel-release", ""),
            "distribution": info.get("os.name", ""),
            "version": info.get("os.version-id", ""),
            "codename": info.get("os.version", ""),
        }
    if "timezone.offset" in info:
        out["guestTimezone"] = {
            "offset": int(info["timezone.offset"]) // 60,
            "zone": info.get("timezone.name", ""),
        }
    users = [info[f"user.{i}.name"] for i in range(int(info.get("user.count", 0)))
             if f"user.{i}.name" in info]
    if users:
        out["username"] = ", ".join(users)
    nets = []
    ips: list[str] = []
    for name, data in sorted(ifaces.items()):
        if name == "lo":
            continue
        inet = [a["addr"] for a in data.get("addrs") or []
                if a.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4]
        inet6 = [a["addr"] for a in data.get("addrs") or []
                 if a.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV6]
        nets.append({"name": name, "hw": data.get("hwaddr") or "", "inet": inet,
                     "inet6": inet6})
        ips.extend(inet)
    if nets:
        out["netIfaces"] = nets
        out["guestIPs"] = " ".join(ips)
    return out


def query(conn: libvirt.virConnect, vm_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Worker: ask each VM's agent; VMs whose agent fails are left out."""
    out = {}
    for vm_id in vm_ids:
        try:
            dom = conn.lookupByUUIDString(vm_id)
            info = dom.guestInfo(_INFO_TYPES, 0)
            ifaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT)
        except libvirt.libvirtError as exc:
            log.debug("vmId=%s: guest agent query failed: %s", vm_id, message(exc))
            continue
        out[vm_id] = translate(info, ifaces)
    return out
