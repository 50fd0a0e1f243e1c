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


def _local(tag: str) -> str:
    """The local name of an element's tag (``{ns}name`` or ``name``)."""
    return tag.rpartition("}")[2]


def _load_custom(el: etree._Element) -> dict[str, str]:
    return {_local(child.tag): child.text or "" for child in el
            if isinstance(child.tag, str)}


def from_element(vm_el: etree._Element) -> VmMetadata:
    """Parse an ``<ovirt-vm:vm>`` element."""
    meta = VmMetadata()
    for child in vm_el:
        if not isinstance(child.tag, str):
            continue  # comments
        tag = _local(child.tag)
        if tag == "custom":
            meta.custom = _load_custom(child)
        elif tag == "device":
            dev = DeviceMeta(attrs=dict(child.attrib))
            for sub in child:
                if not isinstance(sub.tag, str):
                    continue
                sub_tag = _local(sub.tag)
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


def copy_of(meta: VmMetadata) -> VmMetadata:
    """A copy that later changes to ``meta`` leave alone (extra elements are shared)."""
    return VmMetadata(
        values=dict(meta.values), custom=dict(meta.custom),
        devices=[DeviceMeta(dict(d.attrs), dict(d.values), dict(d.custom))
                 for d in meta.devices],
        extra=list(meta.extra))


def _dump_value(parent: etree._Element, tag: str, value: Scalar) -> None:
    _set_value(etree.SubElement(parent, q(tag)), value)


def _set_value(el: etree._Element, value: Scalar) -> None:
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


def _same_value(a: Scalar, b: Scalar) -> bool:
    return type(a) is type(b) and a == b


def _rewrite_values(vm_el: etree._Element, old: VmMetadata, new: VmMetadata) -> bool:
    """Make ``vm_el`` (which holds ``old``) hold ``new`` by rewriting only its changed
    scalar values; False (nothing touched) when more than scalar values changed."""
    if (new.custom != old.custom or new.devices != old.devices or len(new.extra) != len(
            old.extra) or any(a is not b for a, b in zip(new.extra, old.extra))):
        return False
    changed = [k for k, v in new.values.items()
               if k not in old.values or not _same_value(old.values[k], v)]
    removed = [k for k in old.values if k not in new.values]
    if not changed and not removed:
        return True
    leaves: dict[str, list[etree._Element]] = {}
    for child in vm_el:
        if isinstance(child.tag, str) and len(child) == 0:
            leaves.setdefault(_local(child.tag), []).append(child)
    if any(len(leaves.get(k, ())) > 1 or k in ("custom", "device") for k in changed + removed):
        return False  # not a plain value element: let store rebuild the whole element
    for key in removed:
        vm_el.remove(leaves[key][0])
    for key in changed:
        if key in leaves:
            el = leaves[key][0]
            el.attrib.clear()
            _set_value(el, new.values[key])
        else:
            _dump_value(vm_el, key, new.values[key])
    return True


def store(domain: etree._Element, meta: VmMetadata, held: VmMetadata | None = None) -> None:
    """Put ``meta`` into a ``<domain>`` tree, replacing our previous element.

    ``held``: what the tree's element is known to hold (as parsed from it, unchanged since);
    when ``meta`` differs from it only in scalar values, only those elements are rewritten
    (the usual VM.create of an engine's XML: a start time added).
    """
    if held is not None:
        found = find(domain)
        if found is not None and _rewrite_values(found, held, meta):
            return
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
