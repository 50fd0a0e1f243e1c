"""Predictable PCI addresses for vNICs: the order of the spec is the order the guest sees.

A guest names its NICs by PCI address (eth0 is the lowest), so a VM whose NICs were
left to libvirt's address assignment could find eth0 and eth1 swapped after a device was
added or after an import. Here every NIC without an address gets one explicitly, in
document order, each one above the previous NIC:

- i440fx (``pc``) machines: slots of bus 0 from ``0x03`` upwards (the slots other devices
  get are chosen by libvirt around the ones we took);
- q35 machines: each NIC gets a ``pcie-root-port`` of its own, with a controller index
  (= the NIC's bus number) above every existing one; root ports are packed as functions of
  bus-0 slots from ``0x03`` upwards. Spare empty root ports can be added for hot-plug.

The addresses are written into the domain XML, which libvirt keeps, so they survive a
restart; the computation depends only on the document, so re-creating a VM from the same
spec gives the same layout. Operates on lxml trees only; no libvirt, no I/O.
"""

from __future__ import annotations

import logging

from lxml import etree

from vdsm_py.virt.spec import PciAddress

log = logging.getLogger("vdsm_py.virt")

FIRST_SLOT = 0x03
LAST_SLOT = 0x1E  # 0x1f is the q35 LPC/SATA function block


def _int(text: str | None) -> int:
    return int(text or "0", 0)


def _address_of(el: etree._Element) -> tuple[int, int, int, int] | None:
    addr = next(el.iterchildren("address"), None)
    if addr is None or addr.get("type") != "pci":
        return None
    return (_int(addr.get("domain")), _int(addr.get("bus")), _int(addr.get("slot")),
            _int(addr.get("function")))


def taken(devices: etree._Element) -> set[tuple[int, int, int]]:
    """(bus, slot, function) of every device with an explicit PCI address (domain 0)."""
    out = set()
    for el in devices:
        addr = _address_of(el) if isinstance(el.tag, str) else None
        if addr is not None and addr[0] == 0:
            out.add(addr[1:])
    return out


def _pci_indexes(devices: etree._Element) -> set[int]:
    return {_int(c.get("index")) for c in devices.findall("controller[@type='pci']")}


def set_address(el: etree._Element, address: PciAddress, multifunction: bool = False) -> None:
    old = el.find("address")
    if old is not None:
        el.remove(old)
    attrs = address.wire()
    if multifunction:
        attrs["multifunction"] = "on"
    etree.SubElement(el, "address", attrs)


class _Bus0:
    """Allocates bus-0 slots (whole) or functions of slots nobody else uses."""

    def __init__(self, used: set[tuple[int, int, int]]) -> None:
        self.used_slots = {slot for bus, slot, _ in used if bus == 0}
        self.packing: tuple[int, int] | None = None  # (slot, next function)

    def slot_above(self, floor: int) -> int | None:
        for slot in range(max(floor, FIRST_SLOT), LAST_SLOT + 1):
            if slot not in self.used_slots:
                self.used_slots.add(slot)
                return slot
        return None

    def function(self) -> tuple[int, int] | None:
        if self.packing is not None and self.packing[1] < 8:
            slot, fn = self.packing
            self.packing = (slot, fn + 1)
            return slot, fn
        fresh = self.slot_above(FIRST_SLOT)
        if fresh is None:
            return None
        self.packing = (fresh, 1)
        return fresh, 0


def _add_root_port(devices: etree._Element, bus0: _Bus0, index: int) -> bool:
    place = bus0.function()
    if place is None:
        log.warning("no free bus-0 slot for a pcie-root-port; leaving it to libvirt")
        return False
    slot, fn = place
    ctrl = etree.SubElement(devices, "controller", type="pci", index=str(index),
                            model="pcie-root-port")
    set_address(ctrl, PciAddress(0, slot, fn), multifunction=fn == 0)
    return True


def assign_nic_addresses(domain: etree._Element, q35: bool, spare_root_ports: int = 0) -> None:
    """Give every ``<interface>`` of ``domain`` without an address one, in document order."""
    devices = domain.find("devices")
    if devices is None:
        return
    nics = devices.findall("interface")
    if not spare_root_ports and all(_address_of(nic) is not None for nic in nics):
        return  # the usual case of an engine's XML: nothing to plan
    bus0 = _Bus0(taken(devices))
    indexes = _pci_indexes(devices)
    last = 0  # slot (i440fx) or bus (q35) of the previous NIC
    for nic in nics:
        addr = _address_of(nic)
        if addr is not None:
            last = max(last, addr[1] if q35 else (addr[2] if addr[1] == 0 else last))
            continue
        if q35:
            index = max(indexes | {0}) + 1
            if not _add_root_port(devices, bus0, index):
                return
            indexes.add(index)
            set_address(nic, PciAddress(index, 0))
            last = index
        else:
            free = bus0.slot_above(last + 1)
            if free is None:
                log.warning("no free bus-0 slot above %#x for a NIC; leaving it to libvirt",
                            last)
                return
            set_address(nic, PciAddress(0, free))
            last = free
    if q35:
        for _ in range(spare_root_ports):
            index = max(indexes | {0}) + 1
            if not _add_root_port(devices, bus0, index):
                return
            indexes.add(index)


def hotplug_nic_address(domain: etree._Element, q35: bool) -> PciAddress | None:
    """Where a NIC hot-plugged into the running ``domain`` should go (after every NIC).

    None: no such place; the caller lets libvirt choose (order then is libvirt's).
    """
    devices = domain.find("devices")
    if devices is None:
        return None
    used = taken(devices)
    nic_addrs = [a for a in (_address_of(n) for n in devices.findall("interface")) if a]
    if q35:
        last_bus = max((a[1] for a in nic_addrs), default=0)
        used_buses = {bus for bus, _, _ in used}
        free = sorted(
            _int(c.get("index")) for c in devices.findall("controller[@model='pcie-root-port']")
            if _int(c.get("index")) not in used_buses
        )
        above = [i for i in free if i > last_bus]
        if above:
            return PciAddress(above[0], 0)
        return None
    last_slot = max((a[2] for a in nic_addrs if a[1] == 0), default=FIRST_SLOT - 1)
    slot = _Bus0(used).slot_above(last_slot + 1)
    return None if slot is None else PciAddress(0, slot)
