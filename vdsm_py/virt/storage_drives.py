"""VM disks on the host's storage domains and VM leases: what a VM takes from storage.

Owns the virt side of storage: the per-VM bookkeeping of what a VM took (prepared drives,
VM leases in ``xleases``, the volume leases of its exclusive drives), so that everything is
given back exactly once. What a definition names is read and written by
:mod:`.storage_xml`.

- attach (before ``createXML``): prepare every storage drive (the chain is checked by
  storage; an exclusive drive must be a leaf) and write the prepared path and format into
  the disk's ``<source>``/``<driver>``; fill each ``<lease>``'s ``<target>`` (replacing the
  engine's ``LEASE-PATH``/``LEASE-OFFSET`` placeholders): a VM lease from the ``xleases``
  index, a drive's volume lease from its prepared volume; an exclusive drive without a
  ``<lease>`` gets one, as VDSM writes it. Then acquire the leases (storage holds them for
  the VM outside the daemon, so that they outlive it). A failure at any point gives back
  what was taken so far and raises;
- plug/unplug (disk hot-plug on a running VM): the same for one drive, and back;
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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lxml import etree

from vdsm_py.errors import HotplugDiskError, VdsmError, VMCreateError, VmLeaseHeld
from vdsm_py.virt.fields import uuid_field
from vdsm_py.virt.metadata import DeviceMeta, VmMetadata
from vdsm_py.virt.spec import SHARED_EXCLUSIVE, SHARED_NONE
from vdsm_py.virt.storage_xml import (
    DriveRef,
    Lease,
    LeaseRef,
    LeaseTarget,
    PreparedDrive,
    add_device,
    drive_ref,
    lease_devices,
    lease_meta,
    meta_lease,
    references_storage,
    set_drive_source,
    set_lease_target,
    storage_drives,
    volume_lease_element,
    wants_exclusive,
)

log = logging.getLogger("vdsm_py.virt")


# -- what virt asks of storage --------------------------------------------------------------


class DriveStorage(Protocol):
    """What the VMs need from the host's storage. Every method may raise a VdsmError."""

    async def prepare(self, drive: DriveRef, *, exclusive: bool = False) -> PreparedDrive:
        """Check the volume's chain and make it available; the path the VM opens and the
        volume's lease. ``exclusive``: the volume must be a leaf (224/219 otherwise)."""

    async def teardown(self, drive: DriveRef) -> None:
        """Undo :meth:`prepare` (when no other prepared drive of this host uses the image)."""

    async def lease_info(self, lease: LeaseRef) -> LeaseTarget:
        """Where a VM lease lives (looked up in the domain's ``xleases`` index)."""

    async def acquire_vm_leases(self, vm_id: str,
                                leases: Sequence[tuple[LeaseRef, LeaseTarget]]) -> None:
        """Take leases (VM leases and drives' volume leases) for the VM on this host, held
        for it outside the daemon (they outlive it); VmLeaseHeld when another host holds
        one. All or none; leases the VM holds already are kept."""

    async def adopt_vm_leases(self, vm_id: str,
                              leases: Sequence[tuple[LeaseRef, LeaseTarget]]) -> None:
        """Recovery, for a running VM: its leases as still held for it, or taken again
        (VmLeaseHeld if another host has them now); the VM is guarded from then on."""

    async def release_vm_leases(self, vm_id: str) -> None:
        """Give all the VM's leases back (holding none is not an error)."""

    async def release_lease(self, vm_id: str, lease: LeaseRef) -> None:
        """Give back one volume lease of the VM (its drive was unplugged)."""

    def vm_started(self, vm_id: str) -> bool:
        """The VM's domain runs: whoever holds its leases guards it (stops it if they are
        lost). False if the VM holds its leases no more."""

    async def reap_vm_leases(self, running: Collection[str]) -> None:
        """Recovery's end: give back the leases held for VMs not in ``running``."""

    def on_lease_lost(self, callback: Callable[[str, str], None]) -> None:
        """``callback(vm_id, why)`` when a running VM's leases are lost (not given back)."""


# -- per-VM bookkeeping ------------------------------------------------------------------


@dataclass
class Attached:
    """What one VM holds: prepared drives and acquired leases (with their targets)."""

    drives: list[DriveRef] = field(default_factory=list)
    leases: list[tuple[LeaseRef, LeaseTarget]] = field(default_factory=list)


def _wrapped(cls: type[VdsmError], what: str, exc: VdsmError) -> VdsmError:
    return cls(f"{what}: {exc.message} (code {exc.code})", data={"storageCode": exc.code})


def _acquire_what(leases: Sequence[tuple[LeaseRef, LeaseTarget]]) -> str:
    return "cannot acquire " + ", ".join(ref.describe() for ref, _ in leases)


def _volume_lease(prepared: PreparedDrive, drive: DriveRef) -> LeaseTarget:
    if prepared.lease is None:
        raise VMCreateError(f"volume {drive} has no lease")
    return prepared.lease


def set_shared(meta: DeviceMeta | None, exclusive: bool) -> None:
    """Metadata says whether the drive holds its volume's lease (recovery reads it)."""
    if meta is None:
        return
    if exclusive:
        meta.values["shared"] = SHARED_EXCLUSIVE
    elif meta.values.get("shared") == SHARED_EXCLUSIVE:
        meta.values["shared"] = SHARED_NONE


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
            volume_leases = {}
            for drive in drives:
                try:
                    prepared = await self.storage.prepare(drive.ref, exclusive=drive.exclusive)
                except VdsmError as exc:
                    raise _wrapped(VMCreateError, f"cannot prepare drive {drive.name} "
                                   f"({drive.ref})", exc) from None
                held.drives.append(drive.ref)
                set_drive_source(drive.element, prepared)
                set_shared(meta.disk(drive.name), drive.exclusive)
                if drive.exclusive:
                    volume_leases[drive.ref.lease_ref()] = (drive.ref,
                                                             _volume_lease(prepared, drive.ref))
            targets = await self._fill_leases(leases, volume_leases, meta)
            for ref, (drive_ref_, target) in volume_leases.items():  # no <lease> sent for it
                add_device(root, volume_lease_element(drive_ref_, target))
                targets.append((ref, target))
            if targets:
                try:
                    await self.storage.acquire_vm_leases(vm_id, targets)
                except VdsmError as exc:
                    raise _wrapped(VMCreateError, _acquire_what(targets), exc) from None
                held.leases = targets
        except BaseException:
            await self.detach(vm_id)
            raise
        log.info("vmId=%s: %d storage drives prepared, %d leases held", vm_id,
                 len(held.drives), len(held.leases))

    async def _fill_leases(self, leases: list[Lease], volume_leases: dict[
            LeaseRef, tuple[DriveRef, LeaseTarget]], meta: VmMetadata,
    ) -> list[tuple[LeaseRef, LeaseTarget]]:
        """The targets of the ``<lease>`` devices; the volume leases they name are taken
        out of ``volume_leases``."""
        assert self.storage is not None
        targets = []
        for lease in leases:
            ref = next((r for r in volume_leases if (r.sd_id, r.lease_id) ==
                        (lease.ref.sd_id, lease.ref.lease_id)), None)
            if ref is not None:
                target = volume_leases.pop(ref)[1]
            else:
                ref = lease.ref
                try:
                    target = await self.storage.lease_info(ref)
                except VdsmError as exc:
                    raise _wrapped(VMCreateError, f"cannot find VM lease {ref}", exc) from None
                if meta_lease(meta, ref) is None:
                    meta.devices.append(lease_meta(ref))
            set_lease_target(lease.element, target)
            targets.append((ref, target))
        return targets

    def started(self, vm_id: str) -> bool:
        """The domain runs: its leases guard it. False if it lost them meanwhile."""
        held = self._attached.get(vm_id)
        if held is None or not held.leases or self.storage is None:
            return True
        return self.storage.vm_started(vm_id)

    # -- hot-plug ---------------------------------------------------------------------

    async def plug(self, vm_id: str, name: str, drive: DriveRef, element: etree._Element,
                   exclusive: bool) -> etree._Element | None:
        """A drive for a running VM: prepared (its path into ``element``) and, if
        exclusive, its volume lease taken and guarded; the ``<lease>`` to attach with it.
        All or nothing; HotplugDiskError (45) naming the storage error."""
        if self.storage is None:
            raise HotplugDiskError("this host has no storage: cannot plug a storage drive")
        held = self._attached.setdefault(vm_id, Attached())
        what = f"drive {name} ({drive})"
        try:
            prepared = await self.storage.prepare(drive, exclusive=exclusive)
        except VdsmError as exc:
            raise _wrapped(HotplugDiskError, f"cannot prepare {what}", exc) from None
        held.drives.append(drive)
        try:
            self._still_held(vm_id, held)
            set_drive_source(element, prepared)
            if not exclusive:
                return None
            lease = (drive.lease_ref(), _volume_lease(prepared, drive))
            try:
                await self.storage.acquire_vm_leases(vm_id, [lease])
            except VdsmError as exc:
                raise _wrapped(HotplugDiskError, _acquire_what([lease]), exc) from None
            held.leases.append(lease)
            self._still_held(vm_id, held)
            self.storage.vm_started(vm_id)  # the new holder guards the running VM too
            return volume_lease_element(drive, lease[1])
        except BaseException:
            await self.unplug(vm_id, drive, held)
            raise

    def _still_held(self, vm_id: str, held: Attached) -> None:
        if self._attached.get(vm_id) is not held:
            raise HotplugDiskError("the VM went down meanwhile")

    async def unplug(self, vm_id: str, drive: DriveRef, held: Attached | None = None) -> None:
        """Give back one drive of a VM (its volume lease, then the prepared image)."""
        held = held or self._attached.get(vm_id)
        if held is None or self.storage is None:
            return
        lease = next((item for item in held.leases if item[0] == drive.lease_ref()), None)
        if lease is not None:
            held.leases.remove(lease)
            try:
                await self.storage.release_lease(vm_id, lease[0])
            except VdsmError as exc:
                log.error("vmId=%s: cannot release %s: %s", vm_id, lease[0].describe(), exc)
        if drive in held.drives:
            held.drives.remove(drive)
            try:
                await self.storage.teardown(drive)
            except VdsmError as exc:
                log.error("vmId=%s: cannot tear down drive %s: %s", vm_id, drive, exc)

    # -- giving back ----------------------------------------------------------------------

    async def recovered(self, running: Collection[str]) -> None:
        """Recovery's end: leases still held for VMs that no longer run are given back."""
        if self.storage is not None:
            await self.storage.reap_vm_leases(running)

    def detach_soon(self, vm_id: str) -> asyncio.Task[None] | None:
        """Start giving back what the VM holds (once); the task doing it, if any."""
        task = self._detaching.get(vm_id)
        if task is not None:
            return task
        attached = self._attached.pop(vm_id, None)
        if attached is None:
            return None
        # what it holds now is given back here; a hot-plug under way undoes its own part
        held = Attached(list(attached.drives), list(attached.leases))
        attached.drives.clear()
        attached.leases.clear()
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
                log.error("vmId=%s: cannot release its leases: %s", vm_id, exc)
        for drive in reversed(held.drives):
            try:
                await self.storage.teardown(drive)
            except VdsmError as exc:
                log.error("vmId=%s: cannot tear down drive %s: %s", vm_id, drive, exc)
        if held.drives or held.leases:
            log.info("vmId=%s: storage given back (%d drives, %d leases)", vm_id,
                     len(held.drives), len(held.leases))

    # -- recovery -------------------------------------------------------------------------

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
                    ref = drive_ref(dev.values, f"disk {dev.attrs.get('name', '')}")
                    if ref is not None:
                        exclusive = wants_exclusive(dev.values, None)
                        held.drives.append(ref)
                        prepared = await self.storage.prepare(ref, exclusive=exclusive)
                        if exclusive:
                            leases.append((ref.lease_ref(), _volume_lease(prepared, ref)))
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
            log.error("vmId=%s: recovery of its leases failed: %s", vm_id, exc)
            held.leases = leases  # some may be held: the VM's Down gives them back
            return not isinstance(exc, VmLeaseHeld)
        held.leases = leases
        if self._attached.get(vm_id) is not held:  # went Down meanwhile: given back already
            await self.storage.release_vm_leases(vm_id)
        return True


