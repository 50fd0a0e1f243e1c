"""Domain XML: built from a :class:`~vdsm_py.virt.spec.VmSpec`, or taken from ``vmParams.xml``.

Owns the translation of what the engine asked for into the libvirt document that is
started, in both of ``VM.create``'s forms, and the device elements the device verbs attach.
Everything is built with lxml element calls, never by formatting strings, so names and
values with XML metacharacters are stored as the text they are. The result always carries
our ``<metadata>`` (:mod:`.metadata`) and explicit NIC addresses (:mod:`.pciplan`).

Consoles are locked until ``VM.setTicket``: graphics get a random password that expired in
1970. No libvirt, no I/O.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from lxml import etree

from vdsm_py.config import VirtConfig
from vdsm_py.errors import invalid_parameter
from vdsm_py.virt import metadata, pciplan
from vdsm_py.virt.metadata import DeviceMeta, VmMetadata
from vdsm_py.virt.spec import (
    SHARED_NONE,
    SHARED_SHARED,
    DiskSpec,
    GraphicsSpec,
    NicSpec,
    VmSpec,
    is_q35,
)

AGENT_CHANNEL = "org.qemu.guest_agent.0"
LOCKED_UNTIL = "1970-01-01T00:00:01"
_DISK_PREFIX = {"virtio": "vd", "ide": "hd", "scsi": "sd", "sata": "sd", "fdc": "fd"}
_BOOT_DEV = {"c": "hd", "d": "cdrom", "n": "network"}

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=True,
                          huge_tree=False)


@dataclass
class Definition:
    """A domain ready to start: the XML tree and the metadata stored in it."""

    vm_id: str
    name: str
    root: etree._Element
    meta: VmMetadata
    # what the tree's metadata element holds, when it came with the XML (see metadata.store)
    held: VmMetadata | None = field(default=None, repr=False)

    def xml(self) -> str:
        """The domain XML to start, with the metadata as it is now."""
        self.store_metadata()
        return self.text()

    def store_metadata(self) -> None:
        """Write :attr:`meta` into the tree (Python work: do it on the loop)."""
        metadata.store(self.root, self.meta, self.held)
        self.held = None

    def text(self) -> str:
        """The tree serialized as it is. The start does this on the worker of its libvirt
        call, beside ``createXML``: lxml lets go of the GIL while it serializes, and on the
        loop the call may then end waiting for the GIL behind other threads."""
        return etree.tostring(self.root, encoding="unicode")

    @property
    def launch_paused(self) -> bool:
        return self.meta.get_bool("launchPaused")

    @property
    def custom(self) -> dict[str, str]:
        return self.meta.custom


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


# -- devices (also used by the hot-plug verbs) -------------------------------------------------


def user_alias(device_id: str | None) -> str | None:
    """libvirt keeps aliases starting with ``ua-``: VDSM's way to name devices by their ID."""
    return f"ua-{device_id}" if device_id else None


def nic_element(nic: NicSpec) -> etree._Element:
    el = etree.Element("interface", type=nic.kind)
    _sub(el, "mac", address=nic.mac)
    _sub(el, "source", **{nic.kind: nic.network})
    _sub(el, "model", type=nic.model)
    _sub(el, "link", state="up" if nic.link_active else "down")
    if nic.filter:
        _sub(el, "filterref", filter=nic.filter)
    if nic.boot_order:
        _sub(el, "boot", order=str(nic.boot_order))
    alias = user_alias(nic.device_id) or (f"ua-{nic.alias}" if nic.alias else None)
    if alias:
        _sub(el, "alias", name=alias)
    if nic.address is not None:
        pciplan.set_address(el, nic.address)
    return el


def nic_meta(nic: NicSpec) -> DeviceMeta:
    values: dict[str, metadata.Scalar] = {"network": nic.network}
    if nic.device_id:
        values["deviceId"] = nic.device_id
    return DeviceMeta(attrs={"mac_address": nic.mac}, values=values, custom=dict(nic.custom))


def disk_name(disk: DiskSpec, used: set[str]) -> str:
    """``disk.name``, or the first free name of its bus: vda, vdb, ... sda, ..."""
    if disk.name:
        return disk.name
    prefix = _DISK_PREFIX[disk.iface]
    n = 0
    while True:
        letters = ""
        k = n
        while True:
            letters = chr(ord("a") + k % 26) + letters
            k = k // 26 - 1
            if k < 0:
                break
        name = prefix + letters
        if name not in used:
            return name
        n += 1


def disk_element(disk: DiskSpec, name: str) -> etree._Element:
    el = etree.Element("disk", type=disk.disk_type, device=disk.device)
    driver = {"name": "qemu", "type": disk.format}
    if disk.cache:
        driver["cache"] = disk.cache
    if disk.discard:
        driver["discard"] = "unmap"
    _sub(el, "driver", **driver)
    if disk.path:
        _sub(el, "source", **{"dev" if disk.disk_type == "block" else "file": disk.path})
    _sub(el, "target", dev=name, bus=disk.iface)
    if disk.readonly:
        _sub(el, "readonly")
    if disk.shared == SHARED_SHARED:
        _sub(el, "shareable")
    if disk.serial:
        _sub(el, "serial", disk.serial)
    if disk.boot_order:
        _sub(el, "boot", order=str(disk.boot_order))
    alias = user_alias(disk.device_id)
    if alias:
        _sub(el, "alias", name=alias)
    return el


def disk_meta(disk: DiskSpec, name: str) -> DeviceMeta:
    values: dict[str, metadata.Scalar] = dict(disk.storage_ids)
    if disk.device_id:
        values["deviceId"] = disk.device_id
    if disk.shared != SHARED_NONE:
        values["shared"] = disk.shared  # VDSM keeps it in the drive's metadata too
    return DeviceMeta(attrs={"devtype": "disk", "name": name}, values=values,
                      custom=dict(disk.custom))


def _graphics_element(g: GraphicsSpec, listen: str) -> etree._Element:
    el = etree.Element("graphics", type=g.type, port="-1", autoport="yes",
                       passwd=secrets.token_hex(4), passwdValidTo=LOCKED_UNTIL)
    if g.keymap:
        el.set("keymap", g.keymap)
    _sub(el, "listen", type="address", address=g.listen or listen)
    return el


# -- the whole domain ------------------------------------------------------------------------


def build(spec: VmSpec, config: VirtConfig) -> Definition:
    """The domain of a plain spec, with our metadata and predictable NIC addresses."""
    machine = spec.emulated_machine or config.emulated_machine
    q35 = is_q35(machine)
    dom = etree.Element("domain", type=config.domain_type if spec.kvm else "qemu")
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.vm_id)
    kib = str(spec.mem_mib * 1024)
    _sub(dom, "memory", kib, unit="KiB")
    _sub(dom, "currentMemory", kib, unit="KiB")
    _sub(dom, "vcpu", str(spec.vcpus), placement="static")
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch=config.arch, machine=machine)
    for tag, value in (("kernel", spec.kernel), ("initrd", spec.initrd),
                       ("cmdline", spec.kernel_args)):
        if value:
            _sub(os_el, tag, value)
    per_device_boot = any(d.boot_order for d in spec.disks) or any(
        n.boot_order for n in spec.nics)
    if not per_device_boot:
        for letter in spec.boot or "c":
            _sub(os_el, "boot", dev=_BOOT_DEV[letter])
    if spec.acpi:
        _sub(_sub(dom, "features"), "acpi")
    cpu = _sub(dom, "cpu")
    if spec.cpu_model:
        cpu.set("mode", "custom")
        cpu.set("match", "exact")
        _sub(cpu, "model", spec.cpu_model, fallback="allow")
    sockets = spec.vcpus // (spec.cores_per_socket * spec.threads_per_core)
    _sub(cpu, "topology", sockets=str(sockets), cores=str(spec.cores_per_socket),
         threads=str(spec.threads_per_core))
    _sub(dom, "clock", offset="variable", adjustment=str(spec.time_offset), basis="utc")
    for tag, action in (("on_poweroff", "destroy"), ("on_reboot", "restart"),
                        ("on_crash", "destroy")):
        _sub(dom, tag, action)

    meta = VmMetadata(values={"launchPaused": spec.launch_paused})
    if spec.mem_guaranteed_mib:
        meta.values["memGuaranteedSize"] = spec.mem_guaranteed_mib
    if spec.max_mem_mib:
        meta.values["maxMemSize"] = spec.max_mem_mib
    meta.custom = dict(spec.custom)

    devices = _sub(dom, "devices")
    used_names = {d.name for d in spec.disks if d.name}
    for disk in spec.disks:
        name = disk_name(disk, used_names)
        used_names.add(name)
        devices.append(disk_element(disk, name))
        meta.devices.append(disk_meta(disk, name))
    for nic in spec.nics:
        devices.append(nic_element(nic))
        meta.devices.append(nic_meta(nic))
    for g in spec.graphics:
        devices.append(_graphics_element(g, config.graphics_listen))
    video = spec.video or (("qxl" if spec.graphics[0].type == "spice" else "vga")
                           if spec.graphics else None)
    if video:
        _sub(_sub(devices, "video"), "model", type=video)
    if spec.console:
        _sub(_sub(devices, "serial", type="pty"), "target", port="0")
        _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")
    if config.guest_agent_channel:
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "source", mode="bind")
        _sub(channel, "target", type="virtio", name=AGENT_CHANNEL)
    balloon = _sub(devices, "memballoon", model="virtio" if spec.balloon else "none")
    if spec.balloon:
        _sub(balloon, "stats", period="5")
    if spec.rng:
        rng = _sub(devices, "rng", model="virtio")
        _sub(rng, "backend", "/dev/urandom", model="random")
    pciplan.assign_nic_addresses(dom, q35, config.spare_root_ports)
    return Definition(spec.vm_id, spec.name, dom, meta)


def parse(xml: str, vm_id: str) -> Definition:
    """``vmParams.xml`` (VDSM 4.2+): checked, NICs addressed, consoles locked."""
    try:
        dom = etree.fromstring(xml.encode("utf-8"), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise invalid_parameter("vmParams.xml", f"not well-formed XML: {exc}") from None
    if dom.tag != "domain":
        raise invalid_parameter("vmParams.xml", f"expected a domain document, got the element {dom.tag!r}")
    name = (dom.findtext("name") or "").strip()
    if not name or "/" in name:
        raise invalid_parameter("vmParams.xml", "domain name missing or contains '/'")
    uuid_text = (dom.findtext("uuid") or "").strip()
    try:
        xml_id = str(uuid.UUID(uuid_text))
    except ValueError:
        raise invalid_parameter("vmParams.xml", f"domain uuid is not a UUID: {uuid_text!r:.40}")
    if xml_id != vm_id:
        raise invalid_parameter("vmParams.xml", f"domain uuid {xml_id} differs from vmID")
    meta = metadata.from_domain(dom)
    held = None if meta is None else metadata.copy_of(meta)
    meta = meta or VmMetadata()
    machine = dom.find("os/type")
    q35 = is_q35(machine.get("machine", "") if machine is not None else "")
    for g in dom.iterfind("devices/graphics"):
        if g.get("passwd") is None:
            g.set("passwd", secrets.token_hex(4))
            g.set("passwdValidTo", LOCKED_UNTIL)
    pciplan.assign_nic_addresses(dom, q35)
    return Definition(xml_id, name, dom, meta, held)


def stamp_start(defn: Definition) -> None:
    """Record the start time (for ``elapsedTime`` after a daemon restart)."""
    defn.meta.values["startTime"] = round(time.time(), 3)


def element_xml(el: etree._Element) -> str:
    return etree.tostring(el, encoding="unicode")


def parse_device_xml(xml: str, where: str, tags: Iterable[str]) -> etree._Element:
    """The one device of a ``<devices>`` snippet (hot-plug's ``xml`` form)."""
    try:
        root = etree.fromstring(xml.encode("utf-8"), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise invalid_parameter(where, f"not well-formed XML: {exc}") from None
    if root.tag in ("hotplug", "hotunplug"):
        found = root.find("devices")
        if found is None:
            raise invalid_parameter(where, "expected a <devices> element")
        root = found
    if root.tag == "devices":
        children = [c for c in root if isinstance(c.tag, str)]
        if len(children) != 1:
            raise invalid_parameter(where, "expected exactly one device in <devices>")
        root = children[0]
    tags = tuple(tags)
    if root.tag not in tags:
        raise invalid_parameter(where, f"expected a {' or '.join(tags)} device, got {root.tag}")
    return root
