"""The VM state kept in the domain XML's ``<metadata>``, in VDSM's ``ovirt-vm`` namespace.

Owns the one format of what must survive a daemon restart, so that libvirt alone is enough
to rebuild a VM: launch flags, guaranteed memory, start time, custom properties and, per
device, what libvirt does not keep (a NIC's logical network and custom properties, a disk's
storage IDs). The layout follows VDSM 4.2+ so that an engine's ``xml`` round-trips::

    <metadata>
      <ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
        <ovirt-vm:launchPaused type="bool">false</ovirt-vm:launchPaused>
        <ovirt-vm:startTime type="float">1700000000.5</ovirt-vm:startTime>
        <ovirt-vm:custom><ovirt-vm:speed>fast</ovirt-vm:speed></ovirt-vm:custom>
        <ovirt-vm:device mac_address="00:1a:4a:16:01:51">
          <ovirt-vm:network>ovirtmgmt</ovirt-vm:network>
        </ovirt-vm:device>
        <ovirt-vm:device devtype="disk" name="vda">...</ovirt-vm:device>
      </ovirt-vm:vm>
    </metadata>

Elements this module does not understand are kept verbatim. Values are text nodes set
through lxml, so metacharacters are always escaped. No I/O, no libvirt.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

from lxml import etree

NS = "http://ovirt.org/vm/1.0"
PREFIX = "ovirt-vm"
_Q = f"{{{NS}}}"

Scalar = str | int | float | bool

log = logging.getLogger("vdsm_py.virt")


def q(tag: str) -> str:
    """The qualified name of ``tag`` in our namespace."""
    return _Q + tag


@dataclass
class DeviceMeta:
    """Per-device metadata: identifying attributes, scalar values, custom properties."""

    attrs: dict[str, str] = field(default_factory=dict)
    values: dict[str, Scalar] = field(default_factory=dict)
    custom: dict[str, str] = field(default_factory=dict)


@dataclass
class VmMetadata:
    values: dict[str, Scalar] = field(default_factory=dict)
    custom: dict[str, str] = field(default_factory=dict)
    devices: list[DeviceMeta] = field(default_factory=list)
    extra: list[etree._Element] = field(default_factory=list)  # kept verbatim

    def nic(self, mac: str) -> DeviceMeta | None:
        mac = mac.lower()
        for dev in self.devices:
            if dev.attrs.get("mac_address", "").lower() == mac:
                return dev
        return None

    def disk(self, name: str) -> DeviceMeta | None:
        for dev in self.devices:
            if dev.attrs.get("devtype") == "disk" and dev.attrs.get("name") == name:
                return dev
        return None

    def drop_device(self, dev: DeviceMeta) -> None:
        self.devices = [d for d in self.devices if d is not dev]

    def get_bool(self, key: str, default: bool = False) -> bool:
        value = self.values.get(key, default)
        if isinstance(value, str):
            return value.strip().lower() == "true"
        return bool(value)

    def get_float(self, key: str) -> float | None:
        value = self.values.get(key)
        try:
            return None if value is None else float(value)
        except ValueError:
            return None

    def get_int(self, key: str, default: int = 0) -> int:
        value = self.values.get(key, default)
        try:
            return int(value)
        except ValueError:
            return default


# -- parsing -------------------------------------------------------------------------------


def _load_value(el: etree._Element) -> Scalar:
    text = (el.text or "").strip()
    kind = el.get("type")
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        log.warning("metadata %s: %r is not a %s; kept as text", el.tag, text, kind)
        return text
    if kind == "bool":
        return text.lower() == "true"
    return el.text or ""


def _load_custom(el: etree._Element) -> dict[str, str]:
    return {etree.QName(child).localname: child.text or "" for child in el
            if isinstance(child.tag, str)}


def from_element(vm_el: etree._Element) -> VmMetadata:
    """Parse an ``<ovirt-vm:vm>`` element."""
    meta = VmMetadata()
    for child in vm_el:
        if not isinstance(child.tag, str):
            continue  # comments
        tag = etree.QName(child).localname
        if tag == "custom":
            meta.custom = _load_custom(child)
        elif tag == "device":
            dev = DeviceMeta(attrs=dict(child.attrib))
            for sub in child:
                if not isinstance(sub.tag, str):
                    continue
                sub_tag = etree.QName(sub).localname
                if sub_tag == "custom":
                    dev.custom = _load_custom(sub)
                elif len(sub) == 0:
                    dev.values[sub_tag] = _load_value(sub)
            meta.devices.append(dev)
        elif len(child) == 0:
            meta.values[tag] = _load_value(child)
        else:
            meta.extra.append(copy.deepcopy(child))
    return meta


def find(domain: etree._Element) -> etree._Element | None:
    """The ``<ovirt-vm:vm>`` element of a ``<domain>`` tree, if any."""
    return domain.find(f"metadata/{q('vm')}")


def from_domain(domain: etree._Element) -> VmMetadata | None:
    el = find(domain)
    return None if el is None else from_element(el)


# -- writing -------------------------------------------------------------------------------


def _dump_value(parent: etree._Element, tag: str, value: Scalar) -> None:
    el = etree.SubElement(parent, q(tag))
    if isinstance(value, bool):
        el.set("type", "bool")
        el.text = "true" if value else "false"
    elif isinstance(value, int):
        el.set("type", "int")
        el.text = str(value)
    elif isinstance(value, float):
        el.set("type", "float")
        el.text = repr(value)
    else:
        el.text = value


def _dump_custom(parent: etree._Element, custom: dict[str, str]) -> None:
    el = etree.SubElement(parent, q("custom"))
    for key, value in custom.items():
        etree.SubElement(el, q(key)).text = value


def to_element(meta: VmMetadata) -> etree._Element:
    """A fresh ``<ovirt-vm:vm>`` element holding ``meta``."""
    vm_el = etree.Element(q("vm"), nsmap={PREFIX: NS})
    for key, value in meta.values.items():
        _dump_value(vm_el, key, value)
    if meta.custom:
        _dump_custom(vm_el, meta.custom)
    for dev in meta.devices:
        dev_el = etree.SubElement(vm_el, q("device"), dev.attrs)
        for key, value in dev.values.items():
            _dump_value(dev_el, key, value)
        if dev.custom:
            _dump_custom(dev_el, dev.custom)
    for extra in meta.extra:
        vm_el.append(copy.deepcopy(extra))
    return vm_el


def to_xml(meta: VmMetadata) -> str:
    """``meta`` serialized, as ``virDomainSetMetadata`` takes it."""
    return etree.tostring(to_element(meta), encoding="unicode")


def store(domain: etree._Element, meta: VmMetadata) -> None:
    """Put ``meta`` into a ``<domain>`` tree, replacing our previous element."""
    metadata = domain.find("metadata")
    if metadata is None:
        metadata = etree.Element("metadata")
        # libvirt's order: name, uuid, title, description, metadata, ...
        anchor = None
        for tag in ("description", "title", "uuid", "name"):
            anchor = domain.find(tag)
            if anchor is not None:
                break
        if anchor is None:
            domain.insert(0, metadata)
        else:
            anchor.addnext(metadata)
    old = metadata.find(q("vm"))
    new = to_element(meta)
    if old is None:
        metadata.append(new)
    else:
        old.getparent().replace(old, new)
