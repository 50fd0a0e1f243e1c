"""Device changes on a running VM: NIC and disk hot-plug/unplug, NIC updates, balloon.

Owns the device verbs' flow: take the device from the plain form (``nic``/``drive``
dicts, checked by :mod:`.spec`) or the 4.2+ ``xml`` form; run the ``before_*`` hook over
the device XML (errors fail the call, nothing attached); attach/detach/update it live;
keep our metadata in the domain (``setMetadata``) so recovery knows the device's network
and storage IDs; run the ``after_*`` (or ``*_fail``) hook. A disk on a storage volume
(``domainID``/``imageID``/``volumeID``) is prepared first and, when exclusive, its volume
lease is taken and its ``<lease>`` attached before the disk (:mod:`.storage_drives`); a
failure at any later point gives both back. Unplugging it detaches the disk, then the
lease, and gives the lease and the prepared image back. A hot-plugged NIC gets the next
predictable PCI address (:mod:`.pciplan`). Unplug waits for libvirt's device-removed event
(the guest must let go of the device). libvirt's refusal becomes the verb's VDSM error
(45/46/49/50/53/56) with libvirt's message — the test driver refuses all of these.

The caller holds the VM's lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import libvirt
from lxml import etree

from vdsm_py.errors import (
    BalloonError,
    HotplugDiskError,
    HotplugNicError,
    HotunplugDiskError,
    HotunplugNicError,
    NotImplementedVerb,
    UpdateDeviceError,
    VdsmError,
    invalid_parameter,
    missing_parameter,
)
from vdsm_py.virt import (
    domparse,
    domxml,
    fields,
    metadata,
    pciplan,
    spec,
    storage_drives,
    storage_xml,
    ticket,
)
from vdsm_py.virt.libvirtconn import message
from vdsm_py.virt.metadata import DeviceMeta
from vdsm_py.virt.services import Services, libvirt_failure
from vdsm_py.virt.vm import Vm

log = logging.getLogger("vdsm_py.virt")

UNPLUG_TIMEOUT = 30.0
_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE


def _tree(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode("utf-8"))


def _attach(dom: libvirt.virDomain, device: str, meta_xml: str) -> None:
    dom.attachDeviceFlags(device, _LIVE)
    _store_meta(dom, meta_xml)


def _store_meta(dom: libvirt.virDomain, meta_xml: str) -> None:
    try:
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, meta_xml, metadata.PREFIX,
                        metadata.NS, _LIVE)
    except libvirt.libvirtError as exc:
        log.warning("domain %s: cannot store metadata: %s", dom.UUIDString(), message(exc))


def _meta_xml(meta: metadata.VmMetadata) -> str:
    """Our metadata for ``setMetadata``: without its namespace, which libvirt adds itself
    from the key and URI given (it refuses an element that declares them already)."""
    el = metadata.to_element(meta)
    for node in el.iter():
        if isinstance(node.tag, str):
            node.tag = etree.QName(node).localname
    etree.cleanup_namespaces(el)
    return etree.tostring(el, encoding="unicode")


async def _refresh(svc: Services, vm: Vm) -> str:
    xml = await svc.domain_xml(vm.id)
    vm.set_info(domparse.parse(xml), xml)
    vm.changed()
    return xml


def _hook_meta(doc: Any, where: str) -> DeviceMeta | None:
    """The device metadata a 4.2+ hot-plug document may carry."""
    if not isinstance(doc, str):
        return None
    root = _tree(doc) if doc.lstrip().startswith("<") else None
    if root is None:
        return None
    vm_el = root.find(f"metadata/{metadata.q('vm')}")
    if vm_el is None:
        return None
    devices = metadata.from_element(vm_el).devices
    return devices[0] if devices else None


# -- NICs ------------------------------------------------------------------------------------


async def hotplug_nic(svc: Services, vm: Vm, params: Mapping[str, Any]) -> dict[str, Any]:
    live = _tree(await svc.domain_xml(vm.id))
    if params.get("xml"):
        el = domxml.parse_device_xml(params["xml"], "params.xml", ("interface",))
        mac_el = el.find("mac")
        if mac_el is None or not mac_el.get("address"):
            raise invalid_parameter("params.xml", "the interface has no MAC address")
        mac = mac_el.get("address", "").lower()
        source = el.find("source")
        dev_meta = _hook_meta(params["xml"], "params.xml") or DeviceMeta(
            attrs={"mac_address": mac},
            values={"network": (source.get("bridge") or source.get("network") or "")
                    if source is not None else ""})
    elif params.get("nic"):
        nic = spec.parse_nic(params["nic"], "params.nic")
        el, dev_meta, mac = domxml.nic_element(nic), domxml.nic_meta(nic), nic.mac
    else:
        raise missing_parameter("params.nic")
    if any((m.get("address") or "").lower() == mac
           for m in live.iterfind("devices/interface/mac")):
        raise invalid_parameter("params.nic.macAddr", f"{mac} is already used by this VM")
    if el.find("address") is None:
        os_type = live.find("os/type")
        machine = os_type.get("machine", "") if os_type is not None else ""
        address = pciplan.hotplug_nic_address(live, spec.is_q35(machine))
        if address is not None:
            pciplan.set_address(el, address)
    device = await svc.hook("before_nic_hotplug", domxml.element_xml(el), vm,
                            env=dev_meta.custom)
    vm.meta.devices.append(dev_meta)
    meta_xml = _meta_xml(vm.meta)
    try:
        await svc.conn.call_domain(vm.id, lambda d: _attach(d, device, meta_xml),
                                   name="attachDevice")
    except (libvirt.libvirtError, VdsmError) as exc:
        vm.meta.drop_device(dev_meta)
        await svc.after_hook("after_nic_hotplug_fail", device, vm, env=dev_meta.custom)
        if isinstance(exc, VdsmError):
            raise
        raise libvirt_failure(exc, HotplugNicError, "Failed to hotplug NIC") from None
    log.info("vmId=%s: NIC %s plugged", vm.id, mac)
    await svc.after_hook("after_nic_hotplug", device, vm, env=dev_meta.custom)
    xml = await _refresh(svc, vm)
    alias = next((n.alias for n in vm.info.nics if n.mac == mac), "") if vm.info else ""
    return {"devices": [{"macAddr": mac, "alias": alias}], "xml": xml}


def _find_device(live: etree._Element, tag: str, keys: Mapping[str, str]) -> etree._Element | None:
    for el in live.iterfind(f"devices/{tag}"):
        alias = el.find("alias")
        if keys.get("alias") and alias is not None and alias.get("name") == keys["alias"]:
            return el
        mac = el.find("mac")
        mac_text = (mac.get("address") or "").lower() if mac is not None else ""
        if keys.get("mac") and mac_text == keys["mac"]:
            return el
        target = el.find("target")
        if keys.get("name") and target is not None and target.get("dev") == keys["name"]:
            return el
        if keys.get("serial") and el.findtext("serial") == keys["serial"]:
            return el
    return None


def _device_keys(params: Mapping[str, Any], form: str, tag: str) -> dict[str, str]:
    """What identifies the device to remove, from either form of the verb."""
    if params.get("xml"):
        el = domxml.parse_device_xml(params["xml"], "params.xml", (tag,))
        alias, mac, target = el.find("alias"), el.find("mac"), el.find("target")
        return {
            "alias": alias.get("name", "") if alias is not None else "",
            "mac": (mac.get("address") or "").lower() if mac is not None else "",
            "name": target.get("dev", "") if target is not None else "",
            "serial": el.findtext("serial") or "",
        }
    dev = params.get(form)
    if not isinstance(dev, Mapping):
        raise missing_parameter(f"params.{form}")
    keys = {k: str(dev.get(src) or "") for k, src in
            (("alias", "alias"), ("mac", "macAddr"), ("name", "name"), ("serial", "serial"))}
    keys["mac"] = keys["mac"].lower()
    if not any(keys.values()):
        raise missing_parameter(f"params.{form}.{'macAddr' if tag == 'interface' else 'name'}")
    return keys


async def _unplug(svc: Services, vm: Vm, params: Mapping[str, Any], *, form: str, tag: str,
                  error: type[VdsmError], kind: str) -> DeviceMeta | None:
    """Detach the device (the guest lets go of it); its metadata, if it had some."""
    live = _tree(await svc.domain_xml(vm.id))
    keys = _device_keys(params, form, tag)
    el = _find_device(live, tag, keys)
    if el is None:
        raise error(f"{kind} not found: {', '.join(f'{k}={v}' for k, v in keys.items() if v)}")
    device = domxml.element_xml(el)
    alias_el = el.find("alias")
    alias = alias_el.get("name", "") if alias_el is not None else ""
    dev_meta = (vm.meta.nic(el.find("mac").get("address") or "") if tag == "interface"
                else vm.meta.disk(el.find("target").get("dev", "")))
    custom = dev_meta.custom if dev_meta else {}
    point = "nic_hotunplug" if tag == "interface" else "disk_hotunplug"
    await svc.hook(f"before_{point}", device, vm, env=custom)
    removed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if alias:
        vm.removal_waiters[alias] = removed
    try:
        await svc.conn.call_domain(vm.id, lambda d: d.detachDeviceFlags(device, _LIVE),
                                   name="detachDevice")
        if alias:
            await _wait_removed(svc, vm, removed, alias, error, kind)
    except libvirt.libvirtError as exc:
        if tag == "interface":
            await svc.after_hook("after_nic_hotunplug_fail", device, vm, env=custom)
        raise libvirt_failure(exc, error, f"Failed to hot-unplug {kind}") from None
    finally:
        vm.removal_waiters.pop(alias, None)
    log.info("vmId=%s: %s %s unplugged", vm.id, kind, alias)
    if dev_meta is not None:
        vm.meta.drop_device(dev_meta)
        meta_xml = _meta_xml(vm.meta)
        await svc.conn.call_domain(vm.id, lambda d: _store_meta(d, meta_xml), name="setMetadata")
    await svc.after_hook(f"after_{point}", device, vm, env=custom)
    await _refresh(svc, vm)
    return dev_meta


async def _wait_removed(svc: Services, vm: Vm, removed: asyncio.Future[None], alias: str,
                        error: type[VdsmError], kind: str) -> None:
    """Wait for libvirt's device-removed event (or find the device already gone)."""
    try:
        await asyncio.wait_for(asyncio.shield(removed), UNPLUG_TIMEOUT)
        return
    except TimeoutError:
        pass
    still = _find_device(_tree(await svc.domain_xml(vm.id)), "*", {"alias": alias})
    if still is not None:
        raise error(f"{kind} {alias} still present {UNPLUG_TIMEOUT:g}s after the unplug "
                    "request: the guest did not release it")


async def hotunplug_nic(svc: Services, vm: Vm, params: Mapping[str, Any]) -> dict[str, Any]:
    await _unplug(svc, vm, params, form="nic", tag="interface", error=HotunplugNicError,
                  kind="NIC")
    return {}


# -- disks -----------------------------------------------------------------------------------


def _attach_disk(dom: libvirt.virDomain, device: str, lease: str | None, meta_xml: str) -> None:
    """The volume lease first (libvirt's lock manager would need it before the disk)."""
    if lease is not None:
        dom.attachDeviceFlags(lease, _LIVE)
    try:
        dom.attachDeviceFlags(device, _LIVE)
    except libvirt.libvirtError:
        if lease is not None:
            _detach_lease(dom, lease)
        raise
    _store_meta(dom, meta_xml)


def _detach_lease(dom: libvirt.virDomain, lease: str) -> None:
    try:
        dom.detachDeviceFlags(lease, _LIVE)
    except libvirt.libvirtError as exc:  # the lease itself is given back all the same
        log.error("domain %s: cannot detach lease %s: %s", dom.UUIDString(), lease,
                  message(exc))


async def hotplug_disk(svc: Services, vm: Vm, params: Mapping[str, Any],
                       drives: storage_drives.VmStorage | None = None) -> dict[str, Any]:
    live = _tree(await svc.domain_xml(vm.id))
    used = {t.get("dev", "") for t in live.iterfind("devices/disk/target")}
    if params.get("xml"):
        el = domxml.parse_device_xml(params["xml"], "params.xml", ("disk",))
        target = el.find("target")
        if target is None or not target.get("dev"):
            raise invalid_parameter("params.xml", "the disk has no target dev")
        name = target.get("dev", "")
        dev_meta = _hook_meta(params["xml"], "params.xml") or DeviceMeta(
            attrs={"devtype": "disk", "name": name})
    elif params.get("drive"):
        os_type = live.find("os/type")
        q35 = spec.is_q35(os_type.get("machine", "") if os_type is not None else "")
        disk = spec.parse_disk(params["drive"], "params.drive", q35=q35, on_storage_ok=True)
        name = domxml.disk_name(disk, used)
        el, dev_meta = domxml.disk_element(disk, name), domxml.disk_meta(disk, name)
    else:
        raise missing_parameter("params.drive")
    if name in used:
        raise invalid_parameter("params.drive.name", f"{name} is already used by this VM")
    ref = storage_xml.drive_ref(dev_meta.values, "params.drive")
    if ref is None:
        device = await _plug_disk(svc, vm, el, dev_meta, None)
    else:
        if drives is None:
            raise HotplugDiskError("this host has no storage: cannot plug a storage drive")
        exclusive = storage_xml.wants_exclusive(dev_meta.values, el)
        storage_drives.set_shared(dev_meta, exclusive)
        lease = await drives.plug(vm.id, name, ref, el, exclusive)
        try:
            device = await _plug_disk(svc, vm, el, dev_meta, lease)
        except BaseException:
            await drives.unplug(vm.id, ref)
            raise
    log.info("vmId=%s: disk %s plugged", vm.id, name)
    await svc.after_hook("after_disk_hotplug", device, vm, env=dev_meta.custom)
    await _refresh(svc, vm)
    return {}


async def _plug_disk(svc: Services, vm: Vm, el: etree._Element, dev_meta: DeviceMeta,
                     lease: etree._Element | None) -> str:
    """Hook, metadata and libvirt for a disk ready to attach; the device XML attached."""
    device = await svc.hook("before_disk_hotplug", domxml.element_xml(el), vm,
                            env=dev_meta.custom)
    lease_xml = domxml.element_xml(lease) if lease is not None else None
    vm.meta.devices.append(dev_meta)
    meta_xml = _meta_xml(vm.meta)
    try:
        await svc.conn.call_domain(vm.id, lambda d: _attach_disk(d, device, lease_xml, meta_xml),
                                   name="attachDevice")
    except (libvirt.libvirtError, VdsmError) as exc:
        vm.meta.drop_device(dev_meta)
        if isinstance(exc, VdsmError):
            raise
        raise libvirt_failure(exc, HotplugDiskError, "Failed to hotplug disk") from None
    return device


async def hotunplug_disk(svc: Services, vm: Vm, params: Mapping[str, Any],
                         drives: storage_drives.VmStorage | None = None) -> dict[str, Any]:
    dev_meta = await _unplug(svc, vm, params, form="drive", tag="disk",
                             error=HotunplugDiskError, kind="disk")
    ref = storage_xml.drive_ref(dev_meta.values, "drive") if dev_meta is not None else None
    if ref is None or drives is None:
        return {}
    for el in storage_xml.lease_elements(_tree(await svc.domain_xml(vm.id)), ref):
        lease = domxml.element_xml(el)
        await svc.conn.call_domain(vm.id, partial(_detach_lease, lease=lease),
                                   name="detachDevice")
    await drives.unplug(vm.id, ref)
    log.info("vmId=%s: drive %s given back to storage", vm.id, ref)
    return {}


# -- updates ---------------------------------------------------------------------------------


async def update_nic(svc: Services, vm: Vm, params: Mapping[str, Any]) -> dict[str, Any]:
    """Link state and/or network of a NIC, found by ``alias`` (or ``macAddr``)."""
    keys = {"alias": str(params.get("alias") or ""),
            "mac": str(params.get("macAddr") or "").lower()}
    if not any(keys.values()):
        raise missing_parameter("params.alias")
    link = fields.get_bool(params, "linkActive", "params", True) \
        if "linkActive" in params else None
    network = fields.get_str(params, "network", "params", max_len=255)
    live = _tree(await svc.domain_xml(vm.id))
    el = _find_device(live, "interface", keys)
    if el is None:
        raise UpdateDeviceError(f"no NIC with {keys['alias'] or keys['mac']}")
    mac = (el.find("mac").get("address") or "").lower()
    if link is not None:
        link_el = el.find("link")
        if link_el is None:
            link_el = etree.SubElement(el, "link")
        link_el.set("state", "up" if link else "down")
    if network:
        source = el.find("source")
        if source is None:
            source = etree.SubElement(el, "source")
        source.attrib.clear()
        source.set(el.get("type", "bridge"), network)
    device = await svc.hook("before_update_device", domxml.element_xml(el), vm)
    dev_meta = vm.meta.nic(mac)
    if network and dev_meta is not None:
        dev_meta.values["network"] = network
    meta_xml = _meta_xml(vm.meta)

    def update(dom: libvirt.virDomain) -> None:
        dom.updateDeviceFlags(device, _LIVE)
        _store_meta(dom, meta_xml)

    try:
        await svc.conn.call_domain(vm.id, update, name="updateDevice")
    except libvirt.libvirtError as exc:
        await svc.after_hook("after_update_device_fail", device, vm)
        raise libvirt_failure(exc, UpdateDeviceError, "Failed to update NIC") from None
    await svc.after_hook("after_update_device", device, vm)
    await _refresh(svc, vm)
    return {}


async def update_device(svc: Services, vm: Vm, params: Mapping[str, Any]) -> dict[str, Any]:
    kind = params.get("deviceType")
    if kind == "interface":
        return await update_nic(svc, vm, params)
    if kind == "graphics":
        ttl = fields.get_int(params, "ttl", "params", ticket.DEFAULT_TTL)
        await ticket.set_ticket(
            svc, vm, str(params.get("password", "")), ttl if ttl is not None else 120,
            params.get("existingConnAction", "disconnect"), params.get("params") or {},
            graphics_type=fields.get_choice(params, "graphicsType", "params",
                                          ("vnc", "spice"), None))
        return {}
    raise NotImplementedVerb(f"updateDevice of deviceType {kind!r} is not supported")


async def set_balloon_target(svc: Services, vm: Vm, target_kib: int) -> None:
    info = vm.info or domparse.parse(await svc.domain_xml(vm.id))
    if not info.balloon:
        raise BalloonError("the VM has no balloon device")
    limit = info.mem_mib * 1024
    if not 0 < target_kib <= limit:
        raise invalid_parameter("target", f"must be between 1 and {limit} KiB")
    try:
        await svc.conn.call_domain(vm.id, lambda d: d.setMemoryFlags(target_kib, _LIVE),
                                   name="setMemory")
    except libvirt.libvirtError as exc:
        raise libvirt_failure(exc, BalloonError, "Failed to set the balloon target") from None
    vm.mark_stale()
    log.info("vmId=%s: balloon target %d KiB", vm.id, target_kib)
