"""VM definitions: checking what the admin gives (names, NICs, disks) and turning a
definition into VDSM's plain ``vmParams`` for ``VM.create``.

Disks live on storage domains: a disk names its volume by ``domainID``/``imageID``/
``volumeID`` (``poolID`` if known) and is sent without a path; the host resolves it (as
VDSM's prepareImage does), and the scheduler only picks hosts that see the domain. Pure
functions; no I/O, no engine state.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from engine_lite.errors import InvalidInput
from engine_lite.models import Vm

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
DISK_FORMATS = ("raw", "cow")
DISK_IFACES = ("virtio", "scsi", "sata", "ide")
DISK_IDS = ("domainID", "imageID", "volumeID")
DISK_KEYS = {*DISK_IDS, "poolID", "format", "iface", "bootOrder", "deviceId"}


def check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidInput(f"invalid {kind} name {name!r}: 1-64 letters, digits, '.', '_', '-'")


def check_nics(nics: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    checked = [dict(n) for n in nics or []]
    for i, nic in enumerate(checked):
        if not isinstance(nic.get("network"), str) or not nic["network"]:
            raise InvalidInput(f"NIC {i}: a network name is required")
        if "mac" in nic and not MAC.fullmatch(str(nic["mac"])):
            raise InvalidInput(f"NIC {i}: invalid MAC address {nic['mac']!r}")
    return checked


def check_disks(disks: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Each disk: its volume's IDs (UUIDs), ``format`` raw|cow (raw), ``iface`` (virtio),
    optional ``poolID`` and ``bootOrder``; gets a stable ``deviceId``."""
    checked: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for i, given in enumerate(disks or []):
        if not isinstance(given, dict):
            raise InvalidInput(f"disk {i}: expected an object, not {given!r}")
        unknown = sorted(set(given) - DISK_KEYS)
        if unknown:
            raise InvalidInput(f"disk {i}: unknown key(s) {', '.join(unknown)}")
        disk: dict[str, Any] = {key: _uuid(i, key, given.get(key)) for key in DISK_IDS}
        if given.get("poolID"):
            disk["poolID"] = _uuid(i, "poolID", given["poolID"])
        disk["format"] = _choice(i, "format", given.get("format", "raw"), DISK_FORMATS)
        disk["iface"] = _choice(i, "iface", given.get("iface", "virtio"), DISK_IFACES)
        boot = given.get("bootOrder")
        if boot is not None:
            if isinstance(boot, bool) or not isinstance(boot, int) or not 1 <= boot <= 999:
                raise InvalidInput(f"disk {i}: bootOrder must be 1-999, not {boot!r}")
            disk["bootOrder"] = boot
        disk["deviceId"] = _uuid(i, "deviceId", given.get("deviceId") or str(uuid.uuid4()))
        volume = (disk["domainID"], disk["imageID"], disk["volumeID"])
        if volume in seen:
            raise InvalidInput(f"disk {i}: volume {disk['volumeID']} is already a disk of "
                               "this VM")
        seen.add(volume)
        checked.append(disk)
    return checked


def _uuid(i: int, key: str, value: Any) -> str:
    try:
        return str(uuid.UUID(str(value))) if value else _missing(i, key)
    except ValueError:
        raise InvalidInput(f"disk {i}: {key} {value!r} is not a UUID") from None


def _missing(i: int, key: str) -> str:
    raise InvalidInput(f"disk {i}: {key} is required")


def _choice(i: int, key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidInput(f"disk {i}: {key} must be one of {', '.join(allowed)}, "
                           f"not {value!r}")
    return str(value)


def vm_params(vm: Vm) -> dict[str, Any]:
    """VDSM's plain ``vmParams`` for ``VM.create``."""
    devices: list[dict[str, Any]] = [{"type": "graphics", "device": "vnc"}]
    for nic in vm.nics:
        dev = {"type": "interface", "device": "bridge", "network": nic["network"],
               "nicModel": nic.get("model", "virtio")}
        if nic.get("mac"):
            dev["macAddr"] = nic["mac"]
        devices.append(dev)
    devices += [{"type": "disk", "device": "disk", **disk} for disk in vm.disks]
    params: dict[str, Any] = {"vmId": vm.id, "vmName": vm.name, "memSize": vm.mem_mib,
                              "smp": vm.vcpus, "devices": devices}
    if vm.custom:
        params["custom"] = dict(vm.custom)
    return params
