"""VM information and statistics in VDSM's wire shapes, and their cached JSON.

Owns the records the verbs return: the short status (``Host.getVMList``), the full
information (``Host.getVMFullList``), the statistics (``VM.getStats``,
``Host.getAllVmStats``). Statistics for 1000 VMs are about 1.5 MB of JSON, so
:func:`all_stats_json` does not rebuild them per call: each VM keeps the JSON of the part
that only changes with a new sample or a status change (``Vm.stats_cache``, dropped by
``Vm.changed``), and each call only prefixes the two fields that move with the clock
(``statusTime``, ``elapsedTime``). The result is an :class:`orjson.Fragment` that the
dispatcher's orjson encoder copies as is.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson

from vdsm_py.virt.status import VmStatus
from vdsm_py.virt.vm import Vm, now_ms


def display_info(vm: Vm) -> list[dict[str, str]]:
    if vm.info is None:
        return []
    return [
        {"type": g.type, "port": str(g.port), "tlsPort": str(g.tls_port),
         "ipAddress": g.listen}
        for g in vm.info.graphics
    ]


def _display_legacy(vm: Vm) -> dict[str, str]:
    if vm.info is None or not vm.info.graphics:
        return {}
    g = vm.info.graphics[0]
    return {"displayType": "qxl" if g.type == "spice" else g.type,
            "displayPort": str(g.port), "displaySecurePort": str(g.tls_port),
            "displayIp": g.listen}


def static_stats(vm: Vm) -> dict[str, Any]:
    """Every stats field except ``statusTime`` and ``elapsedTime``."""
    out: dict[str, Any] = {"vmId": vm.id, "vmName": vm.name, "status": str(vm.status)}
    if vm.exit is not None:
        out.update(vm.exit.wire())
        return out
    info = vm.info
    out.update({
        "vmType": "kvm",
        "kvmEnable": "true" if info is None or info.domain_type == "kvm" else "false",
        "acpiEnable": "true" if info is None or info.acpi else "false",
        "timeOffset": "0",
        "monitorResponse": "0",
        "clientIp": vm.client_ip,
        "displayInfo": display_info(vm),
        **_display_legacy(vm),
    })
    if vm.xml_hash:
        out["hash"] = vm.xml_hash
    if vm.pause_code and vm.status == VmStatus.PAUSED:
        out["pauseCode"] = vm.pause_code
    out.update(vm.sample)
    out.update(vm.guest)
    return out


def _elapsed(vm: Vm, now: float) -> int:
    return max(int(now - vm.start_time), 0)


def vm_stats(vm: Vm) -> dict[str, Any]:
    """``VM.getStats``' record for one VM."""
    out = {"statusTime": str(now_ms())}
    if vm.exit is None:
        out["elapsedTime"] = str(_elapsed(vm, time.time()))
    out.update(static_stats(vm))
    return out


def stats_json(vm: Vm, status_time: int, now: float) -> bytes:
    cached = vm.stats_cache
    if cached is None:
        cached = vm.stats_cache = orjson.dumps(static_stats(vm))
    if vm.exit is not None:
        prefix = b'{"statusTime":"%d",' % status_time
    else:
        prefix = b'{"statusTime":"%d","elapsedTime":"%d",' % (status_time, _elapsed(vm, now))
    return prefix + cached[1:]


def all_stats_json(vms: Iterable[Vm]) -> orjson.Fragment:
    """``Host.getAllVmStats``' list, already encoded."""
    status_time, now = now_ms(), time.time()
    return orjson.Fragment(b"[" + b",".join(stats_json(vm, status_time, now) for vm in vms)
                           + b"]")


def _devices(vm: Vm) -> list[dict[str, Any]]:
    if vm.info is None:
        return []
    out: list[dict[str, Any]] = []
    for nic in vm.info.nics:
        dev_meta = vm.meta.nic(nic.mac)
        out.append({
            "type": "interface", "device": nic.kind, "macAddr": nic.mac,
            "network": str(dev_meta.values.get("network", nic.network)) if dev_meta
            else nic.network,
            "nicModel": nic.model, "alias": nic.alias, "name": nic.target,
            "linkActive": nic.link_up,
            **({"address": {"type": "pci", "bus": f"0x{nic.bus:02x}",
                            "slot": f"0x{nic.slot:02x}"}} if nic.bus is not None else {}),
        })
    for disk in vm.info.disks:
        dev_meta = vm.meta.disk(disk.name)
        out.append({
            "type": "disk", "device": disk.device, "name": disk.name, "path": disk.path,
            "iface": disk.iface, "serial": disk.serial, "alias": disk.alias,
            "readonly": disk.readonly,
            **({k: v for k, v in dev_meta.values.items() if k.endswith("ID")}
               if dev_meta else {}),
        })
    for g in vm.info.graphics:
        out.append({"type": "graphics", "device": g.type, "port": str(g.port),
                    "tlsPort": str(g.tls_port)})
    return out


def full_info(vm: Vm) -> dict[str, Any]:
    """``Host.getVMFullList``' record for one VM."""
    out = vm.status_dict()
    out["vmName"] = vm.name
    info = vm.info
    if info is not None:
        out.update({
            "memSize": info.mem_mib,
            "smp": str(info.vcpus),
            "emulatedMachine": info.machine,
            "vmType": "kvm",
            "kvmEnable": "true" if info.domain_type == "kvm" else "false",
            "acpiEnable": "true" if info.acpi else "false",
            "devices": _devices(vm),
            "displayInfo": display_info(vm),
            **_display_legacy(vm),
        })
    out["custom"] = dict(vm.custom)
    out["launchPaused"] = "true" if vm.launch_paused else "false"
    out["external"] = vm.external
    out["clientIp"] = vm.client_ip
    out.update({k: v for k, v in vm.guest.items()
                if k in ("guestFQDN", "guestIPs", "guestOsInfo", "guestTimezone")})
    return out
