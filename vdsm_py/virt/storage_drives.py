"""VM disks on the host's storage domains and VM leases: what a VM takes from storage.

Owns the virt side of storage: which drives of a domain definition reference a volume
(``domainID``/``imageID``/``volumeID`` in the disk's metadata, VDSM's keys, in both of
``VM.create``'s forms), which ``<lease>`` devices it has (``sd_id``/``lease_id``), and the
per-VM bookkeeping of what was taken, so that everything is given back exactly once:

- attach (before ``createXML``): prepare every storage drive (the chain is checked by
  storage) and write the prepared path and format into the disk's ``<source>``/``<driver>``;
  look each lease up and write its path and offset into the ``<lease>``'s ``<target>``
  (replacing the engine's ``LEASE-PATH``/``LEASE-OFFSET`` placeholders); then acquire the
  leases (storage holds them for the VM outside the daemon, so that they outlive it). A
  failure at any point gives back what was taken so far and raises;
- started (the domain runs): the leases' holder guards the VM from then on;
- detach (the VM went Down, was destroyed, or its start failed): release the leases, tear
  the drives down. Idempotent, and one detach runs per VM however many callers ask;
- adopt (recovery after a daemon restart): re-prepare (idempotent), and find the leases
  still held for the running VM (or take them again); then release the leases of VMs that
  are gone. A lease lost while the VM runs is reported to the ``on_lost`` callback.

Storage is reached only through the :class:`DriveStorage` protocol (the daemon passes an
adapter over the storage service); this module must not import the storage package. All
XML is changed with lxml element calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lxml import etree

from vdsm_py.errors import (
    VdsmError,
    VMCreateError,
    VmLeaseHeld,
    invalid_parameter,
    missing_parameter,
)
from vdsm_py.virt.fields import uuid_field
from vdsm_py.virt.metadata import DeviceMeta, VmMetadata

log = logging.getLogger("vdsm_py.virt")

LEASE_PATH_PLACEHOLDER = "LEASE-PATH"
LEASE_OFFSET_PLACEHOLDER = "LEASE-OFFSET"
_STORAGE_KEYS = ("domainID", "imageID", "volumeID")


# -- what virt asks of storage --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DriveRef:
    """A VM disk that is a volume of a storage domain (VDSM's drive keys)."""

    domain_id: str
    image_id: str
    volume_id: str
    pool_id: str | None = None

    def __str__(self) -> str:
        return f"{self.domain_id}/{self.image_id}/{self.volume_id}"


@dataclass(frozen=True, slots=True)
class PreparedDrive:
    path: str
    format: str  # qemu's name: "raw" or "qcow2"


@dataclass(frozen=True, slots=True)
class LeaseRef:
    """A VM lease in the ``xleases`` volume of a domain (VDSM's ``sd_id``/``lease_id``)."""

    sd_id: str
    lease_id: str

    def __str__(self) -> str:
        return f"{self.sd_id}:{self.lease_id}"


@dataclass(frozen=True, slots=True)
class LeaseTarget:
    path: str
    offset: int


class DriveStorage(Protocol):
    """What the VMs need from the host's storage. Every method may raise a VdsmError."""

    async def prepare(self, drive: DriveRef) -> PreparedDrive:
        """Check the volume's chain and make it available; the path the VM opens."""

    async def teardown(self, drive: DriveRef) -> None:
        """Undo :meth:`prepare` (when no other prepared drive of this host uses the image)."""

    async def lease_info(self, lease: LeaseRef) -> LeaseTarget:
        """Where the lease lives (looked up in the domain's ``xleases`` index)."""

    async def acquire_vm_leases(self, vm_id: str,
                                leases: Sequence[tuple[LeaseRef, LeaseTarget]]) -> None:
        """Take the VM's leases for this host, held for the VM outside the daemon (they
        outlive it); VmLeaseHeld when another host holds one. All or none."""

    async def adopt_vm_leases(self, vm_id: str,
                              leases: Sequence[tuple[LeaseRef, LeaseTarget]]) -> None:
        """Recovery, for a running VM: its leases as still held for it, or taken again
        (VmLeaseHeld if another host has them now); the VM is guarded from then on."""

    async def release_vm_leases(self, vm_id: str) -> None:
        """Give the VM's leases back (holding none is not an error)."""

    def vm_started(self, vm_id: str) -> bool:
        """The VM's domain runs: whoever holds its leases guards it (stops it if they are
        lost). False if the VM holds its leases no more."""

    async def reap_vm_leases(self, running: Collection[str]) -> None:
        """Recovery's end: give back the leases held for VMs not in ``running``."""

    def on_lease_lost(self, callback: Callable[[str, str], None]) -> None:
        """``callback(vm_id, why)`` when a running VM's leases are lost (not given back)."""


# -- reading a definition --------------------------------------------------------------------


@dataclass
class _Drive:
    name: str
    ref: DriveRef
    element: etree._Element


@dataclass
class _Lease:
    ref: LeaseRef
    element: etree._Element


def _drive_ref(values: Mapping[str, object], where: str) -> DriveRef | None:
    present = [k for k in _STORAGE_KEYS if values.get(k)]
    if not present:
        return None
    if len(present) != len(_STORAGE_KEYS):
        missing = next(k for k in _STORAGE_KEYS if k not in present)
        raise invalid_parameter(f"{where}.{missing}", "a storage drive needs domainID, "
                                "imageID and volumeID")
    pool = values.get("poolID")
    return DriveRef(
        domain_id=uuid_field(values["domainID"], f"{where}.domainID"),
        image_id=uuid_field(values["imageID"], f"{where}.imageID"),
        volume_id=uuid_field(values["volumeID"], f"{where}.volumeID"),
        pool_id=uuid_field(pool, f"{where}.poolID") if pool else None,
    )


def storage_drives(root: etree._Element, meta: VmMetadata) -> list[_Drive]:
    """The disks of ``root`` whose metadata names a volume."""
    out = []
    for el in root.iterfind("devices/disk"):
        target = el.find("target")
        name = target.get("dev", "") if target is not None else ""
        dev = meta.disk(name) if name else None
        if dev is None:
            continue
        ref = _drive_ref(dev.values, f"disk {name}")
        if ref is not None:
            out.append(_Drive(name, ref, el))
    return out


def lease_devices(root: etree._Element) -> list[_Lease]:
    out = []
    for el in root.iterfind("devices/lease"):
        key = (el.findtext("key") or "").strip()
        lockspace = (el.findtext("lockspace") or "").strip()
        ref = LeaseRef(uuid_field(lockspace, "lease.lockspace (sd_id)"),
                       uuid_field(key, "lease.key (lease_id)"))
        out.append(_Lease(ref, el))
    return out


def lease_element(ref: LeaseRef) -> etree._Element:
    """A ``<lease>`` whose target is still the placeholders the engine sends."""
    el = etree.Element("lease")
    etree.SubElement(el, "key").text = ref.lease_id
    etree.SubElement(el, "lockspace").text = ref.sd_id
    etree.SubElement(el, "target", path=f"{LEASE_PATH_PLACEHOLDER}:{ref.lease_id}:{ref.sd_id}",
                     offset=f"{LEASE_OFFSET_PLACEHOLDER}:{ref.lease_id}:{ref.sd_id}")
    return el


def lease_meta(ref: LeaseRef) -> DeviceMeta:
    return DeviceMeta(attrs={"devtype": "lease", "name": ref.lease_id},
                      values={"sd_id": ref.sd_id, "lease_id": ref.lease_id})


def references_storage(root: etree._Element, meta: VmMetadata) -> bool:
    """Cheap check: does this definition need the storage at all?"""
    return root.find("devices/lease") is not None or meta_references_storage(meta)


def meta_references_storage(meta: VmMetadata) -> bool:
    """Whether a VM's metadata names volumes or leases (what recovery must take again)."""
    for dev in meta.devices:
        kind = dev.attrs.get("devtype")
        if kind == "lease" or (kind == "disk" and any(dev.values.get(k) for k in _STORAGE_KEYS)):
            return True
    return False


# -- writing a definition ----------------------------------------------------------------


def set_drive_source(el: etree._Element, prepared: PreparedDrive) -> None:
    """The prepared path and format into a ``<disk>`` (a file disk from now on)."""
    el.set("type", "file")
    driver = el.find("driver")
    if driver is None:
        driver = etree.Element("driver", name="qemu")
        el.insert(0, driver)
    driver.set("type", prepared.format)
    source = el.find("source")
    if source is None:
        source = etree.Element("source")
        driver.addnext(source)
    for attr in ("dev", "file", "name", "protocol"):
        source.attrib.pop(attr, None)
    source.set("file", prepared.path)


def set_lease_target(el: etree._Element, target: LeaseTarget) -> None:
    tgt = el.find("target")
    if tgt is None:
        tgt = etree.SubElement(el, "target")
    tgt.set("path", target.path)
    tgt.set("offset", str(target.offset))


# -- per-VM bookkeeping ------------------------------------------------------------------


@dataclass
class Attached:
    """What one VM holds: prepared drives and acquired leases (with their targets)."""

    drives: list[DriveRef] = field(default_factory=list)
    leases: list[tuple[LeaseRef, LeaseTarget]] = field(default_factory=list)


def _create_error(what: str, exc: VdsmError) -> VMCreateError:
    return VMCreateError(f"{what}: {exc.message} (code {exc.code})",
                         data={"storageCode": exc.code})


class VmStorage:
    """The drives and leases of every VM of this host (the manager holds one)."""

    def __init__(self, storage: DriveStorage | None,
                 on_lost: Callable[[str, str], None] | None = None) -> None:
        self.storage = storage
        self._attached: dict[str, Attached] = {}
        self._detaching: dict[str, asyncio.Task[None]] = {}
        if storage is not None and on_lost is not None:
            storage.on_lease_lost(on_lost)

    def check(self, root: etree._Element, meta: VmMetadata) -> None:
        """Refuse (91) storage references that are not UUIDs or are incomplete, at once."""
        if references_storage(root, meta):
            storage_drives(root, meta)
            lease_devices(root)

    def holds(self, vm_id: str) -> bool:
        return vm_id in self._attached

    async def attach(self, vm_id: str, root: etree._Element, meta: VmMetadata) -> None:
        """Prepare drives and take leases for a VM about to start; all or nothing.

        Raises VMCreateError (9) naming the drive or lease and the storage error.
        """
        if not references_storage(root, meta):
            return
        drives = storage_drives(root, meta)
        leases = lease_devices(root)
        if self.storage is None:
            raise VMCreateError("this host has no storage: cannot start a VM with storage "
                                "drives or leases")
        held = Attached()
        self._attached[vm_id] = held
        try:
            for drive in drives:
                try:
                    prepared = await self.storage.prepare(drive.ref)
                except VdsmError as exc:
                    raise _create_error(f"cannot prepare drive {drive.name} ({drive.ref})",
                                        exc) from None
                held.drives.append(drive.ref)
                set_drive_source(drive.element, prepared)
            targets = []
            for lease in leases:
                try:
                    target = await self.storage.lease_info(lease.ref)
                except VdsmError as exc:
                    raise _create_error(f"cannot find VM lease {lease.ref}", exc) from None
                set_lease_target(lease.element, target)
                if meta_lease(meta, lease.ref) is None:
                    meta.devices.append(lease_meta(lease.ref))
                targets.append((lease.ref, target))
            if targets:
                try:
                    await self.storage.acquire_vm_leases(vm_id, targets)
                except VdsmError as exc:
                    names = ", ".join(str(ref) for ref, _ in targets)
                    raise _create_error(f"cannot acquire VM lease {names}", exc) from None
                held.leases = targets
        except BaseException:
            await self.detach(vm_id)
            raise
        log.info("vmId=%s: %d storage drives prepared, %d VM leases held", vm_id,
                 len(held.drives), len(held.leases))

    def started(self, vm_id: str) -> bool:
        """The domain runs: its leases guard it. False if it lost them meanwhile."""
        held = self._attached.get(vm_id)
        if held is None or not held.leases or self.storage is None:
            return True
        return self.storage.vm_started(vm_id)

    async def recovered(self, running: Collection[str]) -> None:
        """Recovery's end: leases still held for VMs that no longer run are given back."""
        if self.storage is not None:
            await self.storage.reap_vm_leases(running)

    def detach_soon(self, vm_id: str) -> asyncio.Task[None] | None:
        """Start giving back what the VM holds (once); the task doing it, if any."""
        task = self._detaching.get(vm_id)
        if task is not None:
            return task
        held = self._attached.pop(vm_id, None)
        if held is None:
            return None
        task = asyncio.get_running_loop().create_task(self._give_back(vm_id, held),
                                                      name=f"detach-{vm_id}")
        self._detaching[vm_id] = task
        task.add_done_callback(lambda _t: self._detaching.pop(vm_id, None))
        return task

    async def detach(self, vm_id: str) -> None:
        task = self.detach_soon(vm_id)
        if task is not None:
            await asyncio.shield(task)

    async def _give_back(self, vm_id: str, held: Attached) -> None:
        assert self.storage is not None
        if held.leases:
            try:
                await self.storage.release_vm_leases(vm_id)
            except VdsmError as exc:
                log.error("vmId=%s: cannot release its VM leases: %s", vm_id, exc)
        for drive in reversed(held.drives):
            try:
                await self.storage.teardown(drive)
            except VdsmError as exc:
                log.error("vmId=%s: cannot tear down drive %s: %s", vm_id, drive, exc)
        if held.drives or held.leases:
            log.info("vmId=%s: storage given back (%d drives, %d leases)", vm_id,
                     len(held.drives), len(held.leases))

    async def adopt(self, vm_id: str, meta: VmMetadata) -> bool:
        """A running VM found by recovery: re-prepare its drives, re-take its leases.

        False if a lease is held by another host now (the caller must stop this VM: the
        other host runs it). Other failures are logged: the VM keeps running.
        """
        if self.storage is None or vm_id in self._attached:
            return True
        held = Attached()
        self._attached[vm_id] = held
        leases = []
        for dev in meta.devices:
            kind = dev.attrs.get("devtype")
            try:
                if kind == "disk":
                    ref = _drive_ref(dev.values, f"disk {dev.attrs.get('name', '')}")
                    if ref is not None:
                        held.drives.append(ref)
                        await self.storage.prepare(ref)
                elif kind == "lease":
                    lease = LeaseRef(uuid_field(dev.values.get("sd_id"), "lease.sd_id"),
                                     uuid_field(dev.values.get("lease_id"), "lease.lease_id"))
                    leases.append((lease, await self.storage.lease_info(lease)))
            except VdsmError as exc:
                log.error("vmId=%s: recovery of %s storage failed: %s", vm_id, kind, exc)
        if not leases:
            return True
        try:
            await self.storage.adopt_vm_leases(vm_id, leases)
        except VdsmError as exc:
            log.error("vmId=%s: recovery of its VM leases failed: %s", vm_id, exc)
            return not isinstance(exc, VmLeaseHeld)
        held.leases = leases
        if self._attached.get(vm_id) is not held:  # went Down meanwhile: given back already
            await self.storage.release_vm_leases(vm_id)
        return True


def meta_lease(meta: VmMetadata, ref: LeaseRef) -> DeviceMeta | None:
    for dev in meta.devices:
        if dev.attrs.get("devtype") == "lease" and dev.values.get("lease_id") == ref.lease_id \
                and dev.values.get("sd_id") == ref.sd_id:
            return dev
    return None


def plain_leases(params: Mapping[str, Any]) -> list[LeaseRef]:
    """The ``lease`` devices of a plain spec (``vmParams.devices``), checked."""
    devices = params.get("devices")
    out: list[LeaseRef] = []
    if not isinstance(devices, list):
        return out
    for i, dev in enumerate(devices):
        if isinstance(dev, Mapping) and dev.get("type") == "lease":
            where = f"vmParams.devices[{i}]"
            for key in ("sd_id", "lease_id"):
                if not dev.get(key):
                    raise missing_parameter(f"{where}.{key}")
            out.append(LeaseRef(uuid_field(dev["sd_id"], f"{where}.sd_id"),
                                uuid_field(dev["lease_id"], f"{where}.lease_id")))
    if len(set(out)) != len(out):
        raise invalid_parameter("vmParams.devices", "a lease is given twice")
    return out


def add_leases(root: etree._Element, meta: VmMetadata, leases: Iterable[LeaseRef]) -> None:
    """Placeholder ``<lease>`` devices (and their metadata) for a plain spec's leases."""
    devices = root.find("devices")
    if devices is None:
        devices = etree.SubElement(root, "devices")
    for ref in leases:
        devices.append(lease_element(ref))
        meta.devices.append(lease_meta(ref))
