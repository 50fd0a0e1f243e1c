"""What the daemon needs to know about a running domain, read from libvirt's domain XML.

Owns :class:`DomainInfo`: identity, memory, vCPUs, the NICs (MAC, network, the host-side
device name the bulk stats use), disks, consoles (ports), whether a guest agent channel is
there and connected, and our metadata. Built from the XML libvirt returns (which carries
the ports, aliases and tap names it chose) after a start, on recovery and after device
changes. Pure parsing; no libvirt calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from vdsm_py.virt import metadata
from vdsm_py.virt.domxml import AGENT_CHANNEL
from vdsm_py.virt.metadata import VmMetadata

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


@dataclass(frozen=True, slots=True)
class NicInfo:
    mac: str
    kind: str
    network: str  # the bridge or libvirt network name
    model: str
    target: str  # host-side device (vnet3): the name in the bulk stats
    alias: str
    link_up: bool
    bus: int | None
    slot: int | None


@dataclass(frozen=True, slots=True)
class DiskInfo:
    name: str  # target dev (vda): the name in the bulk stats
    device: str
    path: str
    iface: str
    serial: str
    alias: str
    readonly: bool


@dataclass(frozen=True, slots=True)
class GraphicsInfo:
    type: str
    port: int
    tls_port: int
    listen: str


@dataclass(frozen=True)
class DomainInfo:
    vm_id: str
    name: str
    domain_type: str
    machine: str
    mem_mib: int
    current_mem_kib: int
    vcpus: int
    acpi: bool
    nics: tuple[NicInfo, ...] = ()
    disks: tuple[DiskInfo, ...] = ()
    graphics: tuple[GraphicsInfo, ...] = ()
    agent_channel: bool = False
    agent_connected: bool = False
    balloon: bool = False
    meta: VmMetadata | None = field(default=None, compare=False)

    @property
    def external(self) -> bool:
        """A domain without our metadata was not started by us."""
        return self.meta is None


def _int(text: str | None, default: int = 0) -> int:
    try:
        return int(text, 0) if text else default
    except ValueError:
        return default


def _kib(el: etree._Element | None) -> int:
    if el is None or not el.text:
        return 0
    value = int(el.text)
    unit = (el.get("unit") or "KiB").lower()
    factor = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024,
              "m": 1024, "mib": 1024, "mb": 1000**2 / 1024, "g": 1024**2, "gib": 1024**2,
              "gb": 1000**3 / 1024, "t": 1024**3, "tib": 1024**3}.get(unit, 1)
    return int(value * factor)


def parse(xml: str | bytes) -> DomainInfo:
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    return from_tree(etree.fromstring(data, _PARSER))


def _children(el: etree._Element) -> dict[str, etree._Element]:
    """The first child of each tag (one pass; much cheaper than a find() per tag)."""
    out: dict[str, etree._Element] = {}
    for child in el:
        tag = child.tag
        if isinstance(tag, str) and tag not in out:
            out[tag] = child
    return out


_NONE: dict[str, str] = {}


def _attrs(el: etree._Element | None) -> Any:
    return _NONE if el is None else el.attrib


def _nic(el: etree._Element) -> NicInfo:
    c = _children(el)
    source = _attrs(c.get("source"))
    addr = _attrs(c.get("address"))
    pci = addr.get("type") == "pci"
    return NicInfo(
        mac=_attrs(c.get("mac")).get("address", "").lower(),
        kind=el.get("type", ""),
        network=source.get("bridge") or source.get("network") or source.get("dev") or "",
        model=_attrs(c.get("model")).get("type", ""),
        target=_attrs(c.get("target")).get("dev", ""),
        alias=_attrs(c.get("alias")).get("name", ""),
        link_up=_attrs(c.get("link")).get("state", "up") == "up",
        bus=_int(addr.get("bus")) if pci else None,
        slot=_int(addr.get("slot")) if pci else None,
    )


def _disk(el: etree._Element) -> DiskInfo:
    c = _children(el)
    source = _attrs(c.get("source"))
    target = _attrs(c.get("target"))
    serial = c.get("serial")
    return DiskInfo(
        name=target.get("dev", ""),
        device=el.get("device", "disk"),
        path=source.get("file") or source.get("dev") or source.get("name") or "",
        iface=target.get("bus", ""),
        serial=(serial.text or "") if serial is not None else "",
        alias=_attrs(c.get("alias")).get("name", ""),
        readonly="readonly" in c,
    )


def _graphics(el: etree._Element) -> GraphicsInfo:
    listen = el.get("listen") or _attrs(el.find("listen")).get("address", "")
    return GraphicsInfo(type=el.get("type", ""), port=_int(el.get("port"), -1),
                        tls_port=_int(el.get("tlsPort"), -1), listen=listen)


def from_tree(dom: etree._Element) -> DomainInfo:
    top = _children(dom)
    nics: list[NicInfo] = []
    disks: list[DiskInfo] = []
    graphics: list[GraphicsInfo] = []
    agent: etree._Element | None = None
    balloon = False
    devices = top.get("devices")
    for el in devices if devices is not None else ():
        tag = el.tag
        if tag == "interface":
            nics.append(_nic(el))
        elif tag == "disk":
            disks.append(_disk(el))
        elif tag == "graphics":
            graphics.append(_graphics(el))
        elif tag == "channel" and agent is None:
            target = el.find("target")
            if target is not None and target.get("name") == AGENT_CHANNEL:
                agent = target
        elif tag == "memballoon":
            balloon = el.get("model", "none") != "none"
    os_type = dom.find("os/type")
    memory = _kib(top.get("memory"))
    vcpu = top.get("vcpu")
    features = top.get("features")
    metadata_el = top.get("metadata")
    vm_el = metadata_el.find(metadata.q("vm")) if metadata_el is not None else None
    return DomainInfo(
        vm_id=(_text(top.get("uuid"))).strip(),
        name=_text(top.get("name")),
        domain_type=dom.get("type", ""),
        machine=os_type.get("machine", "") if os_type is not None else "",
        mem_mib=memory // 1024,
        current_mem_kib=_kib(top.get("currentMemory")) or memory,
        vcpus=_int(vcpu.text if vcpu is not None else None, 1),
        acpi=features is not None and features.find("acpi") is not None,
        nics=tuple(nics),
        disks=tuple(disks),
        graphics=tuple(graphics),
        agent_channel=agent is not None,
        agent_connected=agent is not None and agent.get("state") == "connected",
        balloon=balloon,
        meta=metadata.from_element(vm_el) if vm_el is not None else None,
    )


def _text(el: etree._Element | None) -> str:
    return (el.text or "") if el is not None else ""
