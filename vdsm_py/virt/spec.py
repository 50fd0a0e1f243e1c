"""The plain VM specification: VDSM's ``vmParams`` checked and turned into frozen dataclasses.

Owns the validation of what a client may ask for in ``VM.create`` (the pre-4.2 form with
``devices`` or ``drives``/``nics`` lists) and in the device verbs (``hotplugNic``,
``hotplugDisk``): devices, formats, cross-field rules (CPU topology, unique MACs and disk
names). Single fields are read by :mod:`.fields`; every error is 91 (or 11) naming the
field by its wire path.

Must not build XML (``domxml``) or talk to libvirt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vdsm_py.errors import invalid_parameter, missing_parameter
from vdsm_py.virt.fields import (
    field_path,
    get_bool,
    get_choice,
    get_custom,
    get_int,
    get_str,
    require_mapping,
    uuid_field,
)

MAX_MEM_MIB = 16 * 1024 * 1024  # 16 TiB
MAX_VCPUS = 4096
MAX_NICS = 13
NIC_MODELS = {"virtio": "virtio", "pv": "virtio", "e1000": "e1000", "e1000e": "e1000e",
              "rtl8139": "rtl8139"}
DISK_DEVICES = ("disk", "cdrom", "floppy", "lun")
DISK_IFACES = ("virtio", "ide", "scsi", "sata", "fdc")
DISK_FORMATS = {"raw": "raw", "cow": "qcow2", "qcow2": "qcow2"}
# a drive's ``shared`` (VDSM's DRIVE_SHARED_TYPE; true/false are the old spelling):
# exclusive takes the volume's lease while the VM runs, shared is libvirt's <shareable/>
SHARED_NONE, SHARED_EXCLUSIVE, SHARED_SHARED = "none", "exclusive", "shared"
_SHARED = {"none": SHARED_NONE, "false": SHARED_NONE, "exclusive": SHARED_EXCLUSIVE,
           "shared": SHARED_SHARED, "true": SHARED_SHARED}
GRAPHICS = {"vnc": "vnc", "spice": "spice", "qxl": "spice"}
VIDEO_MODELS = ("vga", "cirrus", "qxl", "virtio", "bochs", "none")
DEVICE_TYPES = ("disk", "interface", "graphics", "video", "console", "balloon", "rng", "lease")
STORAGE_KEYS = ("domainID", "imageID", "volumeID")  # a disk that is a storage volume

_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_DEV_NAME = re.compile(r"[a-z]{2,3}[a-z]{1,3}")


@dataclass(frozen=True, slots=True)
class PciAddress:
    bus: int
    slot: int
    function: int = 0
    domain: int = 0

    def wire(self) -> dict[str, str]:
        return {
            "type": "pci",
            "domain": f"0x{self.domain:04x}",
            "bus": f"0x{self.bus:02x}",
            "slot": f"0x{self.slot:02x}",
            "function": f"0x{self.function:x}",
        }


@dataclass(frozen=True)
class NicSpec:
    mac: str
    network: str
    kind: str = "bridge"  # libvirt interface type: "bridge" or "network"
    model: str = "virtio"
    link_active: bool = True
    alias: str | None = None
    device_id: str | None = None
    filter: str | None = None
    boot_order: int | None = None
    address: PciAddress | None = None
    custom: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DiskSpec:
    path: str
    device: str = "disk"
    iface: str = "virtio"
    format: str = "raw"
    disk_type: str = "file"
    readonly: bool = False
    shared: str = SHARED_NONE  # SHARED_NONE, SHARED_EXCLUSIVE or SHARED_SHARED
    serial: str | None = None
    boot_order: int | None = None
    name: str | None = None  # target dev; chosen from iface and position when None
    cache: str | None = None
    discard: bool = False
    device_id: str | None = None
    storage_ids: dict[str, str] = field(default_factory=dict)  # imageID, domainID, ...
    custom: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GraphicsSpec:
    type: str  # "vnc" or "spice"
    listen: str | None = None
    keymap: str | None = None


@dataclass(frozen=True)
class VmSpec:
    vm_id: str
    name: str
    mem_mib: int
    vcpus: int = 1
    cores_per_socket: int = 1
    threads_per_core: int = 1
    max_mem_mib: int | None = None
    mem_guaranteed_mib: int = 0
    cpu_model: str | None = None
    emulated_machine: str | None = None
    kvm: bool = True
    acpi: bool = True
    launch_paused: bool = False
    time_offset: int = 0
    kernel: str | None = None
    initrd: str | None = None
    kernel_args: str | None = None
    boot: str = ""
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    graphics: tuple[GraphicsSpec, ...] = ()
    video: str | None = None
    console: bool = False
    balloon: bool = True
    rng: bool = False
    custom: dict[str, str] = field(default_factory=dict)


def _pci_address(params: Mapping[str, Any], path: str) -> PciAddress | None:
    value = params.get("address")
    if value in (None, "", {}):
        return None
    where = field_path(path, "address")
    addr = require_mapping(value, where)
    if addr.get("type", "pci") != "pci":
        raise invalid_parameter(f"{where}.type", "only PCI addresses are accepted")
    numbers = {}
    for part, hi in (("domain", 0xFFFF), ("bus", 0xFF), ("slot", 0x1F), ("function", 7)):
        raw = addr.get(part, "0")
        try:
            numbers[part] = int(raw, 0) if isinstance(raw, str) else int(raw)
        except (TypeError, ValueError):
            raise invalid_parameter(f"{where}.{part}", f"not a number: {raw!r:.20}") from None
        if not 0 <= numbers[part] <= hi:
            raise invalid_parameter(f"{where}.{part}", f"must be between 0 and {hi:#x}")
    return PciAddress(numbers["bus"], numbers["slot"], numbers["function"], numbers["domain"])



# -- devices -------------------------------------------------------------------------------


def parse_nic(params: Mapping[str, Any], path: str) -> NicSpec:
    params = require_mapping(params, path)
    mac = get_str(params, "macAddr", path, required=True)
    assert mac is not None
    if not _MAC.fullmatch(mac):
        raise invalid_parameter(field_path(path, "macAddr"), f"not a MAC address: {mac!r:.40}")
    if int(mac[:2], 16) & 1:
        raise invalid_parameter(field_path(path, "macAddr"), "a multicast MAC cannot be a NIC's")
    network = get_str(params, "network", path, required=True, max_len=255)
    assert network is not None
    if not network or "/" in network:
        raise invalid_parameter(field_path(path, "network"), "must be a non-empty name without '/'")
    kind = get_choice(params, "device", path, {"bridge": "bridge", "network": "network"},
                      "bridge")
    device_id = params.get("deviceId")
    return NicSpec(
        mac=mac.lower(),
        network=network,
        kind=kind or "bridge",
        model=get_choice(params, "nicModel", path, NIC_MODELS, "virtio") or "virtio",
        link_active=get_bool(params, "linkActive", path, True),
        alias=get_str(params, "alias", path, max_len=64),
        device_id=uuid_field(device_id, field_path(path, "deviceId")) if device_id else None,
        filter=get_str(params, "filter", path, max_len=255),
        boot_order=get_int(params, "bootOrder", path, lo=1, hi=999),
        address=_pci_address(params, path),
        custom=get_custom(params, "custom", path),
    )


def parse_disk(params: Mapping[str, Any], path: str, *, q35: bool = False,
               on_storage_ok: bool = False) -> DiskSpec:
    """One disk; with ``on_storage_ok`` (VM.create) a storage volume needs no ``path``."""
    params = require_mapping(params, path)
    device = get_choice(params, "device", path, DISK_DEVICES, "disk") or "disk"
    disk_path = get_str(params, "path", path, default="", max_len=4096) or ""
    on_storage = on_storage_ok and any(params.get(k) for k in STORAGE_KEYS)  # prepared later
    if device != "cdrom" and not disk_path and not on_storage:
        raise missing_parameter(field_path(path, "path"))
    if disk_path and not disk_path.startswith("/"):
        raise invalid_parameter(field_path(path, "path"), "must be an absolute path")
    default_iface = {"cdrom": "sata" if q35 else "ide", "floppy": "fdc"}.get(device, "virtio")
    iface = get_choice(params, "iface", path, DISK_IFACES, default_iface) or default_iface
    name = get_str(params, "name", path, max_len=16)
    if name is not None and not _DEV_NAME.fullmatch(name):
        raise invalid_parameter(field_path(path, "name"), f"not a disk target name: {name!r}")
    storage_ids = {}
    for key in ("imageID", "domainID", "volumeID", "poolID"):
        if params.get(key):
            storage_ids[key] = uuid_field(params[key], field_path(path, key))
    device_id = params.get("deviceId")
    return DiskSpec(
        path=disk_path,
        device=device,
        iface=iface,
        format=get_choice(params, "format", path, DISK_FORMATS, "raw") or "raw",
        disk_type=get_choice(params, "diskType", path, ("file", "block"),
                             "block" if disk_path.startswith("/dev/") else "file") or "file",
        readonly=get_bool(params, "readonly", path, device == "cdrom"),
        shared=parse_shared(params, path),
        serial=get_str(params, "serial", path, max_len=20),
        boot_order=get_int(params, "bootOrder", path, lo=1, hi=999),
        name=name,
        cache=get_choice(params, "cache", path,
                         ("none", "writethrough", "writeback", "directsync", "unsafe"), None),
        discard=get_bool(params, "discard", path, False),
        device_id=uuid_field(device_id, field_path(path, "deviceId")) if device_id else None,
        storage_ids=storage_ids,
        custom=get_custom(params, "custom", path),
    )


def parse_shared(params: Mapping[str, Any], path: str) -> str:
    """A drive's ``shared``: none, exclusive or shared (``transient`` is refused: vdsm_py
    makes no temporary overlay, so the guest's writes would reach the volume)."""
    value = params.get("shared")
    if value is None or value == "":
        return SHARED_NONE
    text = str(value).strip().lower() if isinstance(value, (str, bool)) else None
    if text == "transient":
        raise invalid_parameter(field_path(path, "shared"), "transient disks are not "
                                "supported (no temporary overlay would be made)")
    if text not in _SHARED:
        raise invalid_parameter(field_path(path, "shared"),
                                f"expected none, exclusive or shared, got {value!r:.40}")
    return _SHARED[text]


def _parse_graphics(params: Mapping[str, Any], path: str) -> GraphicsSpec:
    kind = get_choice(params, "device", path, GRAPHICS, None)
    if kind is None:
        raise missing_parameter(field_path(path, "device"))
    spec = params.get("specParams") or {}
    spec = require_mapping(spec, field_path(path, "specParams"))
    sp = field_path(path, "specParams")
    return GraphicsSpec(
        type=kind,
        listen=get_str(spec, "displayIp", sp, max_len=64),
        keymap=get_str(spec, "keyMap", sp, max_len=32),
    )


@dataclass
class _Devices:
    disks: list[DiskSpec] = field(default_factory=list)
    nics: list[NicSpec] = field(default_factory=list)
    nic_paths: list[str] = field(default_factory=list)
    graphics: list[GraphicsSpec] = field(default_factory=list)
    video: str | None = None
    console: bool = False
    balloon: bool = True
    rng: bool = False


def _parse_devices(params: Mapping[str, Any], q35: bool) -> _Devices:
    out = _Devices()
    devices = params.get("devices") or []
    if not isinstance(devices, list):
        raise invalid_parameter("vmParams.devices", "expected a list")
    for i, dev in enumerate(devices):
        path = f"vmParams.devices[{i}]"
        dev = require_mapping(dev, path)
        kind = get_choice(dev, "type", path, DEVICE_TYPES, None)
        if kind is None:
            raise missing_parameter(field_path(path, "type"))
        if kind == "disk":
            out.disks.append(parse_disk(dev, path, q35=q35, on_storage_ok=True))
        elif kind == "interface":
            out.nics.append(parse_nic(dev, path))
            out.nic_paths.append(path)
        elif kind == "graphics":
            out.graphics.append(_parse_graphics(dev, path))
        elif kind == "video":
            out.video = get_choice(dev, "device", path, VIDEO_MODELS, "vga")
        elif kind == "console":
            out.console = True
        elif kind == "balloon":
            spec = require_mapping(dev.get("specParams") or {}, field_path(path, "specParams"))
            model = get_choice(spec, "model", field_path(path, "specParams"),
                               ("virtio", "none"), "virtio")
            out.balloon = model == "virtio"
        elif kind == "rng":
            out.rng = True
    for key, target, parse in (("drives", out.disks, True), ("nics", out.nics, False)):
        extra = params.get(key)
        if extra in (None, []):
            continue
        if not isinstance(extra, list):
            raise invalid_parameter(f"vmParams.{key}", "expected a list")
        if target:
            raise invalid_parameter(f"vmParams.{key}", "give devices either in 'devices' or "
                                    f"in '{key}', not in both")
        for i, item in enumerate(extra):
            where = f"vmParams.{key}[{i}]"
            if parse:
                out.disks.append(parse_disk(item, where, q35=q35, on_storage_ok=True))
            else:
                out.nics.append(parse_nic(item, where))
                out.nic_paths.append(where)
    display = get_choice(params, "display", "vmParams", GRAPHICS, None)
    if display and not out.graphics:
        out.graphics.append(GraphicsSpec(type=display))
    _check_devices(out)
    return out


def _check_devices(devs: _Devices) -> None:
    if len(devs.nics) > MAX_NICS:
        raise invalid_parameter("vmParams.devices", f"at most {MAX_NICS} NICs are supported")
    seen_macs: set[str] = set()
    for nic, path in zip(devs.nics, devs.nic_paths):
        if nic.mac in seen_macs:
            raise invalid_parameter(f"{path}.macAddr", f"{nic.mac} is used twice")
        seen_macs.add(nic.mac)
    names = [d.name for d in devs.disks if d.name]
    for name in names:
        if names.count(name) > 1:
            raise invalid_parameter("vmParams.devices", f"disk name {name} is used twice")
    kinds = [g.type for g in devs.graphics]
    if len(set(kinds)) != len(kinds):
        raise invalid_parameter("vmParams.devices", "one graphics device per type at most")


# -- the VM ---------------------------------------------------------------------------------


def parse_vm_params(vm_id: str, params: Mapping[str, Any]) -> VmSpec:
    """Check ``VM.create``'s plain ``vmParams`` and return the :class:`VmSpec`."""
    params = require_mapping(params, "vmParams")
    if params.get("vmId") not in (None, vm_id):
        raise invalid_parameter("vmParams.vmId", "differs from vmID")
    name = get_str(params, "vmName", "vmParams", required=True, max_len=255)
    assert name is not None
    if not name.strip() or "/" in name:
        raise invalid_parameter("vmParams.vmName", "must be a non-empty name without '/'")
    mem = get_int(params, "memSize", "vmParams", lo=1, hi=MAX_MEM_MIB, required=True)
    assert mem is not None
    vcpus = get_int(params, "smp", "vmParams", 1, lo=1, hi=MAX_VCPUS) or 1
    cores = get_int(params, "smpCoresPerSocket", "vmParams", 1, lo=1, hi=MAX_VCPUS) or 1
    threads = get_int(params, "smpThreadsPerCore", "vmParams", 1, lo=1, hi=MAX_VCPUS) or 1
    if vcpus % (cores * threads):
        raise invalid_parameter(
            "vmParams.smpCoresPerSocket",
            f"smp ({vcpus}) is not a multiple of smpCoresPerSocket x smpThreadsPerCore "
            f"({cores} x {threads})",
        )
    max_mem = get_int(params, "maxMemSize", "vmParams", None, lo=mem, hi=MAX_MEM_MIB)
    machine = get_str(params, "emulatedMachine", "vmParams", max_len=64)
    q35 = is_q35(machine or "")
    devs = _parse_devices(params, q35)
    boot = get_str(params, "boot", "vmParams", "", max_len=8) or ""
    if any(c not in "cdn" for c in boot):
        raise invalid_parameter("vmParams.boot", "letters c (disk), d (cdrom), n (network)")
    return VmSpec(
        vm_id=vm_id,
        name=name,
        mem_mib=mem,
        vcpus=vcpus,
        cores_per_socket=cores,
        threads_per_core=threads,
        max_mem_mib=max_mem,
        mem_guaranteed_mib=get_int(params, "memGuaranteedSize", "vmParams", 0, lo=0,
                                   hi=mem) or 0,
        cpu_model=get_str(params, "cpuType", "vmParams", max_len=64),
        emulated_machine=machine,
        kvm=get_bool(params, "kvmEnable", "vmParams", True),
        acpi=get_bool(params, "acpiEnable", "vmParams", True),
        launch_paused=get_bool(params, "launchPaused", "vmParams", False),
        time_offset=get_int(params, "timeOffset", "vmParams", 0,
                            lo=-(10**9), hi=10**9) or 0,
        kernel=_abs_path(params, "kernel"),
        initrd=_abs_path(params, "initrd"),
        kernel_args=get_str(params, "kernelArgs", "vmParams", max_len=4096),
        boot=boot,
        disks=tuple(devs.disks),
        nics=tuple(devs.nics),
        graphics=tuple(devs.graphics),
        video=devs.video,
        console=devs.console,
        balloon=devs.balloon,
        rng=devs.rng,
        custom=get_custom(params, "custom", "vmParams"),
    )


def _abs_path(params: Mapping[str, Any], key: str) -> str | None:
    value = get_str(params, key, "vmParams", max_len=4096)
    if value and not value.startswith("/"):
        raise invalid_parameter(f"vmParams.{key}", "must be an absolute path")
    return value or None


def is_q35(machine: str) -> bool:
    return "q35" in machine
