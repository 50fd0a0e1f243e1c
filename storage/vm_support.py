"""What the VMs of this host take from storage: prepared drives and VM leases.

Owns two things:

- :class:`VmDriveStorage`, the adapter the daemon hands to the VM manager (it implements
  :class:`vdsm_py.virt.storage_drives.DriveStorage`): ``prepare``/``teardown`` of a drive
  through :class:`storage.image.Images` (the whole chain checked; an image used by several
  drives of this host is torn down when the last one goes), the lookup of a VM lease in the
  domain's ``xleases`` index, and the leases of the VMs (VM leases, and the volume leases
  of exclusive drives: the ``.lease`` file beside the volume, offset 0, resource = volume,
  lockspace = domain) held by lease keeper processes (:mod:`storage.vm_lease_keepers`: one
  for a VM's VM leases, one per exclusive drive), which outlive the daemon.
- :class:`VmLeases`, the SPM task target that adds and removes VM leases in ``xleases``
  (``Lease.create``/``Lease.delete``), and the lease verbs' service calls.

VM leases are never held by the daemon process itself (see docs/ARCHITECTURE.md, "VM
leases"): a daemon SIGKILL leaves them held for the running VMs, and recovery adopts the
keepers. Every blocking call runs on the executor through the storage service.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from storage import constants as sc
from storage.domain import FileStorageDomain
from storage.sanlock_adapter import Disk
from storage.service import StorageService
from storage.tasks import Step
from storage.validation import check_uuid
from storage.vm_lease_keepers import LeaseKeepers, LeaseSpec, unit_key
from storage.volume import QEMU_FORMAT
from storage.xleases import LeaseInfo, LeasesVolume
from vdsm_py.errors import (
    AcquireLockFailure,
    NonLeafVolumeNotWritable,
    NoSuchLease,
    SharedVolumeNonWritable,
    StorageError,
    VmLeaseHeld,
)
from vdsm_py.virt.storage_xml import DriveRef, LeaseRef, LeaseTarget, PreparedDrive

log = logging.getLogger("vdsm_py.storage.vm")

TARGET_KIND = "xleases"


def _leases_volume(dom: FileStorageDomain, io_timeout: int) -> LeasesVolume:
    alignment = dom.locks.geometry.alignment if dom.locks else dom.geometry(io_timeout).alignment
    return LeasesVolume(dom.md_dir / sc.XLEASES, dom.sd_uuid, alignment)


class VmLeases:
    """Step target (``xleases:<sdUUID>``): VM leases of one domain, on the SPM."""

    STEP_ACTIONS = frozenset({"add", "remove"})

    def __init__(self, dom: FileStorageDomain, io_timeout: int) -> None:
        self.dom = dom
        self.volume = _leases_volume(dom, io_timeout)

    def check_new(self, lease_id: str) -> None:
        if lease_id in self.volume.leases():
            raise StorageError(f"Lease {lease_id} exists in domain {self.dom.sd_uuid}")

    def add(self, lease_id: str) -> None:
        """Format the sanlock resource, then record it (a re-run finds it recorded)."""
        if lease_id in self.volume.leases():
            return
        locks = self.dom.locks
        if locks is None:
            raise StorageError("sanlock is not available on this host")
        self.volume.add(lease_id, lambda info: locks.format_lease(
            lease_id, Disk(info.path, info.offset)))

    def remove(self, lease_id: str) -> None:
        try:
            self.volume.remove(lease_id)
        except NoSuchLease:
            pass  # never added, or removed already


def register(service: StorageService) -> None:
    """Let SPM tasks (and their recovery) reach :class:`VmLeases`."""
    service.task_targets[TARGET_KIND] = lambda pool, sd: VmLeases(pool.domain(sd),
                                                                  service.io_timeout)


async def create_lease(service: StorageService, sd_id: str, lease_id: str) -> str:
    """``Lease.create``: an SPM task adding the lease; its id."""
    check_uuid("lease.sd_id", sd_id)
    check_uuid("lease.lease_id", lease_id)

    def plan(dom: FileStorageDomain) -> list[Step]:
        VmLeases(dom, service.io_timeout).check_new(lease_id)
        return [Step(target=f"{TARGET_KIND}:{sd_id}", action="add",
                     args={"lease_id": lease_id}, undo="remove")]
    return await service.spm_task(sd_id, None, "create_lease", plan, [f"{sd_id}/{lease_id}"])


async def delete_lease(service: StorageService, sd_id: str, lease_id: str) -> str:
    """``Lease.delete``: an SPM task removing the lease from the index; its id."""
    check_uuid("lease.sd_id", sd_id)
    check_uuid("lease.lease_id", lease_id)

    def plan(dom: FileStorageDomain) -> list[Step]:
        VmLeases(dom, service.io_timeout).volume.lookup(lease_id)  # 936 if unknown
        return [Step(target=f"{TARGET_KIND}:{sd_id}", action="remove",
                     args={"lease_id": lease_id}, forward=True)]
    return await service.spm_task(sd_id, None, "delete_lease", plan, [f"{sd_id}/{lease_id}"])


def _lookup(service: StorageService, sd_id: str, lease_id: str) -> LeaseInfo:
    check_uuid("lease.sd_id", sd_id)
    check_uuid("lease.lease_id", lease_id)
    dom = service.find_domain(sd_id)
    return _leases_volume(dom, service.io_timeout).lookup(lease_id)


async def lease_info(service: StorageService, sd_id: str, lease_id: str) -> dict[str, Any]:
    """``Lease.info``: where the lease lives (any host may ask)."""
    info = await service.executor.run(_lookup, service, sd_id, lease_id,
                                      timeout=service.call_timeout, name="Lease.info")
    return {"sd_id": sd_id, "lease_id": lease_id, "path": str(info.path),
            "offset": info.offset}


def _check_leaf(drive: DriveRef, voltype: str) -> None:
    """An exclusive drive writes its volume: a leaf only (VDSM's 224, 219 for a template)."""
    if voltype == sc.SHARED_VOL:
        raise SharedVolumeNonWritable(f"volume {drive} is a shared template volume: it "
                                      "cannot be an exclusive drive")
    if voltype != sc.LEAF_VOL:
        raise NonLeafVolumeNotWritable(f"volume {drive} is not a leaf ({voltype}): it cannot "
                                       "be an exclusive drive")


class VmDriveStorage:
    """The storage of this host as the VMs see it (``DriveStorage``)."""

    def __init__(self, service: StorageService, keepers_dir: Path | None = None) -> None:
        self.service = service
        self._users: Counter[tuple[str, str]] = Counter()  # (sd, img) -> prepared drives
        self._lock = threading.RLock()  # teardown unlinks under it
        sanlock = service.sanlock
        self.keepers = LeaseKeepers(keepers_dir or service.run_dir.parent / "vm-leases",
                                    service.executor,
                                    sanlock_run_dir=sanlock.run_dir if sanlock else None)

    async def _run(self, fn: Any, name: str) -> Any:
        return await self.service.executor.run(fn, timeout=self.service.call_timeout, name=name)

    async def prepare(self, drive: DriveRef, *, exclusive: bool = False) -> PreparedDrive:
        def prepare() -> PreparedDrive:
            key = (drive.domain_id, drive.image_id)
            with self._lock:  # counted first: a concurrent teardown keeps the link
                self._users[key] += 1
            try:
                images = self.service.images(drive.domain_id)
                md = images.volumes.metadata(drive.image_id, drive.volume_id)
                if exclusive:
                    _check_leaf(drive, md.voltype)
                result = images.prepare(drive.image_id, drive.volume_id)
                lease = images.volumes.lease_disk(drive.image_id, drive.volume_id)
            except BaseException:
                self._forget(key)
                raise
            return PreparedDrive(path=result["path"], format=QEMU_FORMAT[md.format],
                                 lease=LeaseTarget(str(lease.path), lease.offset))
        return await self._run(prepare, "prepare drive")  # type: ignore[no-any-return]

    async def teardown(self, drive: DriveRef) -> None:
        def teardown() -> None:
            with self._lock:
                if self._forget((drive.domain_id, drive.image_id)):
                    self.service.images(drive.domain_id).teardown(drive.image_id)
        await self._run(teardown, "teardown drive")

    def _forget(self, key: tuple[str, str]) -> bool:
        """One user of the image less; True if it was the last."""
        with self._lock:
            self._users[key] -= 1
            if self._users[key] > 0:
                return False
            del self._users[key]
            return True

    async def lease_info(self, lease: LeaseRef) -> LeaseTarget:
        info = await self._run(lambda: _lookup(self.service, lease.sd_id, lease.lease_id),
                               "VM lease lookup")
        return LeaseTarget(path=str(info.path), offset=info.offset)

    def _check_sanlock(self, sd_id: str) -> None:
        if self.service.find_domain(sd_id).locks is None:
            raise AcquireLockFailure("sanlock is not available on this host: VM leases "
                                     "cannot be acquired")

    def on_lease_lost(self, callback: Callable[[str, str], None]) -> None:
        self.keepers.on_lost = callback

    async def _units(self, vm_id: str, leases: Sequence[tuple[LeaseRef, LeaseTarget]]
                     ) -> dict[str, list[LeaseSpec]]:
        """The leases by keeper: the VM leases together, each volume lease alone."""
        for sd_id in {ref.sd_id for ref, _ in leases}:
            await self._run(partial(self._check_sanlock, sd_id), "VM lease sanlock")
        units: dict[str, list[LeaseSpec]] = {}
        for ref, target in leases:
            key = unit_key(vm_id, ref.lease_id if ref.is_volume else None)
            units.setdefault(key, []).append([ref.sd_id, ref.lease_id, target.offset,
                                              target.path])
        return units

    async def acquire_vm_leases(self, vm_id: str,
                                leases: Sequence[tuple[LeaseRef, LeaseTarget]]) -> None:
        units = await self._units(vm_id, leases)
        results = await asyncio.gather(
            *(self.keepers.start(vm_id, specs, key=key) for key, specs in units.items()),
            return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if not failed:
            return
        for key, result in zip(units, results, strict=True):  # all or none
            if not isinstance(result, BaseException):
                await self.keepers.release_key(key)
        raise next((e for e in failed if isinstance(e, VmLeaseHeld)), failed[0])

    async def adopt_vm_leases(self, vm_id: str,
                              leases: Sequence[tuple[LeaseRef, LeaseTarget]]) -> None:
        await self.keepers.adopt(vm_id, await self._units(vm_id, leases))

    async def release_vm_leases(self, vm_id: str) -> None:
        await self.keepers.release(vm_id)

    async def release_lease(self, vm_id: str, lease: LeaseRef) -> None:
        await self.keepers.release_key(unit_key(vm_id, lease.lease_id if lease.is_volume
                                                else None))

    def vm_started(self, vm_id: str) -> bool:
        return self.keepers.guard(vm_id)

    async def reap_vm_leases(self, running: Collection[str]) -> None:
        await self.keepers.reap(running)

    def stop(self) -> None:
        """Daemon stop: the keepers go on holding the leases of the VMs that run on."""
        self.keepers.stop()
