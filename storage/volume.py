"""Volumes and images of a file domain: create, inspect, extend, delete, legality.

A volume is ``images/<imgUUID>/<volUUID>`` (the data, made by qemu-img), ``.meta`` (its
metadata, see :mod:`storage.metadata`) and ``.lease`` (its sanlock lease). Create, extend
and delete are plans of :class:`storage.tasks.Step` (``*_plan``), each forward step paired
with its undo, run by the SPM's task manager (persisted, recovered after a crash) or in
this thread by :meth:`Volumes.create` & co. (undone in memory on failure). A new volume is
written ILLEGAL and turned LEGAL only as the last step, so a crash mid-create leaves a
volume that no VM will use, and recovery removes it. The files are made in one step
(``create_volume_files``: qemu-img started first; the ILLEGAL ``.meta``, the lease and the
sync of a new image directory's entry in ``images/`` done while it runs; in a task, qemu-img
is started and the lease written ahead by ``prepare_volume_files``, into unnamed files that
the step syncs and links into place) and the final LEGAL
write is durable (``.meta`` and image directory fsync'd) and makes the whole volume durable
with it (qemu-img syncs the data, the lease is fsync'd), so a task never
ends with a volume a power loss could take away. Until the task records its end, any crash
rolls a create back (it has no point of no return), whatever state its files are in.
Deletion marks the volume ILLEGAL (undoable), then removes it (only ever completed).
Blocking (files, qemu-img): call from workers. Must not acquire host ids or know about
pools.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from storage import constants as sc
from storage import qemuimg
from storage.domain import FileStorageDomain
from storage.metadata import VolumeMetadata, fsync_dir, write_atomically
from storage.sanlock_adapter import Disk
from storage.tasks import Step, current_step, run_inline
from storage.unnamed import UnnamedFile, UnnamedVolume
from vdsm_py.errors import (
    CannotDeleteVolume,
    ImageDoesNotExistInSD,
    NoSpaceLeftOnDomain,
    VolumeAlreadyExists,
    VolumeCreationError,
    VolumeDoesNotExist,
    VolumeExtendingError,
    VolumeMetadataReadError,
    invalid_parameter,
)

log = logging.getLogger("vdsm_py.storage.volume")

QEMU_FORMAT = {sc.COW_FORMAT: "qcow2", sc.RAW_FORMAT: "raw"}


@dataclass(frozen=True)
class VolumeSpec:
    img_uuid: str
    vol_uuid: str
    capacity: int
    format: str  # COW or RAW
    allocation: str  # PREALLOCATED or SPARSE
    disktype: str = "DATA"
    description: str = ""
    parent: str = sc.BLANK_UUID

    def check(self) -> None:
        if self.format not in QEMU_FORMAT:
            raise invalid_parameter("volFormat", f"unknown format {self.format}")
        if self.allocation not in (sc.PREALLOCATED, sc.SPARSE):
            raise invalid_parameter("preallocate", f"unknown allocation {self.allocation}")
        if self.capacity <= 0 or self.capacity % 512:
            raise invalid_parameter("size", f"must be a positive multiple of 512: {self.capacity}")
        if self.disktype not in sc.DISK_TYPES:
            raise invalid_parameter("diskType", f"unknown disk type {self.disktype}")
        if self.parent != sc.BLANK_UUID and self.format != sc.COW_FORMAT:
            raise invalid_parameter("volFormat", "a snapshot layer must be COW")
        if self.format == sc.COW_FORMAT and self.allocation == sc.PREALLOCATED and \
                self.parent != sc.BLANK_UUID:
            raise invalid_parameter("preallocate", "a snapshot layer must be sparse")


class Volumes:
    """Volume operations on one domain (its metadata is the only state)."""

    def __init__(self, domain: FileStorageDomain, *, qemu_timeout: float = 300.0):
        self.domain = domain
        self.qemu_timeout = qemu_timeout

    # -- paths and metadata --------------------------------------------------------------

    def path(self, img_uuid: str, vol_uuid: str) -> Path:
        return self.domain.image_dir(img_uuid) / vol_uuid

    def meta_path(self, img_uuid: str, vol_uuid: str) -> Path:
        return self.domain.image_dir(img_uuid) / (vol_uuid + sc.META_EXT)

    def lease_disk(self, img_uuid: str, vol_uuid: str) -> Disk:
        return Disk(self.domain.image_dir(img_uuid) / (vol_uuid + sc.LEASE_EXT),
                    sc.VOLUME_LEASE_OFFSET)

    def metadata(self, img_uuid: str, vol_uuid: str) -> VolumeMetadata:
        path = self.meta_path(img_uuid, vol_uuid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if not self.domain.image_dir(img_uuid).is_dir():
                raise ImageDoesNotExistInSD(
                    f"Image {img_uuid} does not exist in domain {self.domain.sd_uuid}"
                ) from None
            raise VolumeDoesNotExist(f"Volume {vol_uuid} does not exist") from None
        md = VolumeMetadata.parse(data, f"volume {vol_uuid}")
        if md.image != img_uuid or md.domain != self.domain.sd_uuid:
            raise VolumeMetadataReadError(
                f"volume {vol_uuid}: metadata names image {md.image} of domain {md.domain}"
            )
        return md

    def _write_metadata(self, img_uuid: str, vol_uuid: str, md: VolumeMetadata, *,
                        durable: bool = True) -> None:
        write_atomically(self.meta_path(img_uuid, vol_uuid), md.dump(),
                         sc.FILE_VOLUME_PERMISSIONS, durable=durable)

    def update(self, img_uuid: str, vol_uuid: str, **changes: Any) -> VolumeMetadata:
        md = replace(self.metadata(img_uuid, vol_uuid), **changes)
        self._write_metadata(img_uuid, vol_uuid, md)
        return md

    def _set_voltype(self, img_uuid: str, vol_uuid: str, voltype: str) -> None:
        self.update(img_uuid, vol_uuid, voltype=voltype)

    # -- create (steps: see storage.tasks) ---------------------------------------------

    STEP_ACTIONS = frozenset({
        "check_create", "create_image_dir", "remove_image_dir_if_empty", "create_metadata",
        "remove_metadata", "create_volume_data", "remove_volume_data", "create_lease",
        "remove_lease", "create_data_and_lease", "remove_data_and_lease",
        "create_volume_files", "remove_volume_files",
        "mark_parent_internal", "restore_parent_leaf", "set_legal",
        "check_delete", "mark_illegal", "restore_legality", "remove_volume",
        "check_extend", "acquire_lease", "release_lease", "resize_data", "set_capacity",
    })
    STEP_PREPARES = MappingProxyType({"create_volume_files": "prepare_volume_files"})

    @property
    def target(self) -> str:
        """How steps name this object (see :func:`storage.tasks.call`)."""
        return f"volume:{self.domain.sd_uuid}"

    def create(self, spec: VolumeSpec) -> VolumeMetadata:
        """Create now, in this thread; on failure the steps done are undone."""
        run_inline(lambda _target: self, self.create_plan(spec), "createVolume")
        log.info("created volume %s/%s in domain %s (%s %s, %d bytes, parent %s)",
                 spec.img_uuid, spec.vol_uuid, self.domain.sd_uuid, spec.format,
                 spec.allocation, spec.capacity, spec.parent)
        return self.metadata(spec.img_uuid, spec.vol_uuid)

    def create_plan(self, spec: VolumeSpec) -> list[Step]:
        """Checked now; the steps make the volume ILLEGAL first and LEGAL last (durable when
        the last step ends: see :meth:`create_volume_files` and :meth:`set_legal`)."""
        self.check_create(asdict(spec))
        args = {"spec": asdict(spec)}
        steps = [Step(self.target, "check_create", args),  # again, under the image's lock
                 Step(self.target, "create_volume_files", args, undo="remove_volume_files")]
        if spec.parent != sc.BLANK_UUID:
            steps.append(Step(self.target, "mark_parent_internal", args,
                              undo="restore_parent_leaf"))
        return [*steps, Step(self.target, "set_legal", args)]

    def making_steps(self, spec: VolumeSpec) -> list[Step]:
        """The steps that make the volume, ILLEGAL (no checks, no final LEGAL write: a
        plan that fills the volume first, e.g. a copy, ends with its own durable one)."""
        args = {"spec": asdict(spec)}
        steps = [
            Step(self.target, "create_image_dir", args, undo="remove_image_dir_if_empty"),
            Step(self.target, "create_metadata", args, undo="remove_metadata"),
            Step(self.target, "create_data_and_lease", args, undo="remove_data_and_lease"),
        ]
        if spec.parent != sc.BLANK_UUID:
            steps.append(Step(self.target, "mark_parent_internal", args,
                              undo="restore_parent_leaf"))
        return steps

    def check_create(self, spec: dict[str, Any]) -> None:
        vs = VolumeSpec(**spec)
        vs.check()
        self.domain.metadata()  # never write into a domain whose metadata is not sound
        if self.meta_path(vs.img_uuid, vs.vol_uuid).exists() or \
                self.path(vs.img_uuid, vs.vol_uuid).exists():
            raise VolumeAlreadyExists(f"Volume {vs.vol_uuid} already exists")
        if vs.parent != sc.BLANK_UUID:
            parent_md = self.metadata(vs.img_uuid, vs.parent)
            if vs.capacity < parent_md.capacity:
                raise invalid_parameter("size", "smaller than the parent volume")

    def create_image_dir(self, spec: dict[str, Any]) -> None:
        with _creating(spec):
            try:
                self.domain.image_dir(spec["img_uuid"]).mkdir(mode=0o755)
            except FileExistsError:
                return
            fsync_dir(self.domain.images_dir)  # a new image survives a power loss

    def remove_image_dir_if_empty(self, spec: dict[str, Any]) -> None:
        try:
            self.domain.image_dir(spec["img_uuid"]).rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                raise

    def prepare_volume_files(self, spec: dict[str, Any]) -> UnnamedVolume | None:
        """Preparer of :meth:`create_volume_files` (see :mod:`storage.tasks`): qemu-img
        started, and the lease written free (:mod:`storage.lease_records`; left to sanlock
        where that fails), into unnamed files of ``images/`` (:mod:`storage.unnamed`) that
        only the step links into place; None where unnamed files are not supported."""
        vs = VolumeSpec(**spec)
        parent_md = self._parent_metadata(vs)
        with _creating(spec):
            data = UnnamedFile.open(self.domain.images_dir, sc.FILE_VOLUME_PERMISSIONS)
        if data is None:
            return None
        try:
            assert data.fd is not None
            made = UnnamedVolume(data, self._start_data(vs, data.fd, parent_md))
        except BaseException:
            data.close()
            raise
        locks = self.domain.locks
        if locks is not None:
            lease = None
            try:
                head = locks.free_lease_head(vs.vol_uuid)
                lease = UnnamedFile.open(self.domain.images_dir, sc.FILE_VOLUME_PERMISSIONS)
                if lease is not None:
                    lease.write_lease(head, locks.geometry.alignment)
                made.lease, lease = lease, None
            except (OSError, ValueError) as exc:
                log.info("volume %s: lease to be formatted by sanlock: %s", vs.vol_uuid, exc)
            finally:
                if lease is not None:
                    lease.close()
        return made

    def create_volume_files(self, spec: dict[str, Any]) -> None:
        """The image directory, then the volume's three files at once (ILLEGAL ``.meta``).

        Only what does not wait for qemu-img is synced here, while it runs: a new image
        directory's entry in ``images/``, the lease (written synchronously by sanlock, then
        fsync'd). qemu-img syncs the data it writes; the LEGAL write that ends the plan
        (:meth:`set_legal`) makes the ``.meta`` and the entries of the image directory
        durable. The data may have been started by :meth:`prepare_volume_files` before the
        task's record: it is linked into place once qemu-img is done."""
        prepared = current_step().take_prepared()
        try:
            new_dir = True
            with _creating(spec):
                try:
                    self.domain.image_dir(spec["img_uuid"]).mkdir(mode=0o755)
                except FileExistsError:
                    new_dir = False
            self._make_files(spec, metadata=True,
                             sync_dir=self.domain.images_dir if new_dir else None,
                             made=prepared if isinstance(prepared, UnnamedVolume) else None)
        finally:
            if prepared is not None:
                prepared.discard()  # after place_data(): only closes what is left

    def remove_volume_files(self, spec: dict[str, Any]) -> None:
        """Undo of :meth:`create_volume_files`: whatever of it exists, and the image
        directory if that leaves it empty."""
        self.remove_data_and_lease(spec)
        self.remove_metadata(spec)
        self.remove_image_dir_if_empty(spec)

    def create_metadata(self, spec: dict[str, Any]) -> None:
        vs = VolumeSpec(**spec)
        self._write_illegal_metadata(vs, self._parent_metadata(vs))

    def _parent_metadata(self, vs: VolumeSpec) -> VolumeMetadata | None:
        return self.metadata(vs.img_uuid, vs.parent) if vs.parent != sc.BLANK_UUID else None

    def _write_illegal_metadata(self, vs: VolumeSpec, parent_md: VolumeMetadata | None) -> None:
        md = VolumeMetadata(
            domain=self.domain.sd_uuid, image=vs.img_uuid, parent=vs.parent,
            capacity=vs.capacity, format=vs.format, type=vs.allocation,
            voltype=sc.LEAF_VOL, disktype=vs.disktype, description=vs.description,
            legality=sc.ILLEGAL_VOL, ctime=int(time.time()),
            sequence=(parent_md.sequence + 1) if parent_md else 0,
        )
        with _creating(asdict(vs)):  # made durable by the LEGAL write that ends the plan
            self._write_metadata(vs.img_uuid, vs.vol_uuid, md, durable=False)

    def remove_metadata(self, spec: dict[str, Any]) -> None:
        meta = self.meta_path(spec["img_uuid"], spec["vol_uuid"])
        _unlink(meta.with_name(meta.name + ".new"))  # write_atomically's temporary file
        _unlink(meta)

    def create_volume_data(self, spec: dict[str, Any]) -> None:
        vs = VolumeSpec(**spec)
        path = self.path(vs.img_uuid, vs.vol_uuid)
        with _creating(spec):
            self._start_data(vs, path, self._parent_metadata(vs)).wait()
            os.chmod(path, sc.FILE_VOLUME_PERMISSIONS)

    def remove_volume_data(self, spec: dict[str, Any]) -> None:
        _unlink(self.path(spec["img_uuid"], spec["vol_uuid"]))

    def create_lease(self, spec: dict[str, Any]) -> None:
        disk = self.lease_disk(spec["img_uuid"], spec["vol_uuid"])
        with _creating(spec):
            _create_empty(disk.path)
        if self.domain.locks is not None:
            self.domain.locks.format_lease(spec["vol_uuid"], disk)
            _fsync(disk.path)  # sanlock's direct writes grew the file: its size too

    def remove_lease(self, spec: dict[str, Any]) -> None:
        _unlink(self.lease_disk(spec["img_uuid"], spec["vol_uuid"]).path)

    def create_data_and_lease(self, spec: dict[str, Any]) -> None:
        self._make_files(spec, metadata=False)

    def _make_files(self, spec: dict[str, Any], *, metadata: bool,
                    sync_dir: Path | None = None, made: UnnamedVolume | None = None) -> None:
        """qemu-img is started first (its own start-up is most of its time) unless ``made``
        has it, and maybe the lease, already under way into unnamed files; the ILLEGAL
        ``.meta`` (if asked) and the lease (synced and linked, or 1 MiB written by sanlock's
        daemon) are made while it runs, in this thread, and ``sync_dir`` is fsync'd."""
        vs = VolumeSpec(**spec)
        parent_md = self._parent_metadata(vs)
        path = self.path(vs.img_uuid, vs.vol_uuid)
        with _creating(spec):
            running = made.running if made else self._start_data(vs, path, parent_md)
        try:
            if metadata:
                self._write_illegal_metadata(vs, parent_md)
            with _creating(spec):
                placed = made is not None and made.place_lease(
                    self.lease_disk(vs.img_uuid, vs.vol_uuid).path)
            if not placed:
                self.create_lease(spec)
            if sync_dir is not None:
                with _creating(spec):
                    fsync_dir(sync_dir)
        except BaseException:
            running.wait()  # its error first: the others' are often a consequence
            raise
        with _creating(spec):
            running.wait()
            if made is not None:
                made.place_data(path)
            else:
                os.chmod(path, sc.FILE_VOLUME_PERMISSIONS)

    def remove_data_and_lease(self, spec: dict[str, Any]) -> None:
        self.remove_lease(spec)
        self.remove_volume_data(spec)

    def mark_parent_internal(self, spec: dict[str, Any]) -> None:
        if self.metadata(spec["img_uuid"], spec["parent"]).voltype == sc.LEAF_VOL:
            self._set_voltype(spec["img_uuid"], spec["parent"], sc.INTERNAL_VOL)

    def restore_parent_leaf(self, spec: dict[str, Any]) -> None:
        """The parent is a leaf again unless another volume than this one builds on it."""
        img, parent = spec["img_uuid"], spec["parent"]
        if not self.meta_path(img, parent).exists():
            return
        others = [v for v in self.children(img, parent) if v != spec["vol_uuid"]]
        if not others and self.metadata(img, parent).voltype == sc.INTERNAL_VOL:
            self._set_voltype(img, parent, sc.LEAF_VOL)

    def set_legal(self, spec: dict[str, Any]) -> None:
        """The LEGAL ``.meta`` replaces the ILLEGAL one, then it and the image directory are
        fsync'd: durable, with the volume's other entries, when this returns.

        Unlike :meth:`update`, the new file is not fsync'd before its rename (one journal
        commit, not two, after qemu-img): a power loss in between may leave an empty or
        ILLEGAL ``.meta``, but only before the task's end is recorded, and a create that did
        not record its end is always rolled back, which removes the volume whatever its
        ``.meta`` holds. Readers still see the old file or the new one (rename)."""
        img, vol = spec["img_uuid"], spec["vol_uuid"]
        md = replace(self.metadata(img, vol), legality=sc.LEGAL_VOL)
        path = self.meta_path(img, vol)
        self._write_metadata(img, vol, md, durable=False)
        _fsync(path)
        fsync_dir(path.parent)

    def _start_data(self, spec: VolumeSpec, path: Path | int,
                    parent: VolumeMetadata | None) -> qemuimg.Running:
        """qemu-img creating the data at ``path``, or into the open file descriptor."""
        fmt = QEMU_FORMAT[spec.format]
        prealloc = None
        if spec.allocation == sc.PREALLOCATED:
            prealloc = "falloc"  # raw: fallocate; qcow2: metadata + fallocate
        return qemuimg.start_create(
            path, fmt, spec.capacity,
            backing=spec.parent if parent else None,
            backing_format=QEMU_FORMAT[parent.format] if parent else None,
            preallocation=prealloc, error=VolumeCreationError, timeout=self.qemu_timeout,
        )

    # -- inspect -------------------------------------------------------------------------

    def size(self, img_uuid: str, vol_uuid: str) -> dict[str, str]:
        self.metadata(img_uuid, vol_uuid)
        st = os.stat(self.path(img_uuid, vol_uuid))
        return {"apparentsize": str(st.st_size), "truesize": str(st.st_blocks * 512)}

    def info(self, img_uuid: str, vol_uuid: str, pool_uuid: str = "") -> dict[str, Any]:
        md = self.metadata(img_uuid, vol_uuid)
        sizes = self.size(img_uuid, vol_uuid)
        disk = self.lease_disk(img_uuid, vol_uuid)
        return {
            "uuid": vol_uuid, "domain": md.domain, "image": md.image, "pool": pool_uuid,
            "parent": md.parent, "capacity": str(md.capacity), "format": md.format,
            "type": md.type, "voltype": md.voltype, "disktype": md.disktype,
            "description": md.description, "legality": md.legality, "ctime": str(md.ctime),
            "generation": md.generation, "sequence": md.sequence, "status": sc.VOL_STATUS_OK,
            "lease": {"path": str(disk.path), "offset": disk.offset},
            **sizes,
        }

    def children(self, img_uuid: str, vol_uuid: str) -> list[str]:
        return [v for v in self.domain.volumes(img_uuid)
                if v != vol_uuid and self.metadata(img_uuid, v).parent == vol_uuid]

    # -- change --------------------------------------------------------------------------

    def extend(self, img_uuid: str, vol_uuid: str, new_size: int) -> VolumeMetadata:
        run_inline(lambda _target: self, self.extend_plan(img_uuid, vol_uuid, new_size),
                   "extendVolumeSize")
        return self.metadata(img_uuid, vol_uuid)

    def extend_plan(self, img_uuid: str, vol_uuid: str, new_size: int) -> list[Step]:
        """Under the volume's lease; committed once the resize begins (it cannot be undone)."""
        args = {"img_uuid": img_uuid, "vol_uuid": vol_uuid, "new_size": new_size}
        if not self.check_extend(img_uuid, vol_uuid, new_size):
            return []
        steps = [Step(self.target, "check_extend", args)]
        if self.domain.locks is not None:
            steps.append(Step(self.target, "acquire_lease", args, undo="release_lease"))
        steps += [Step(self.target, "resize_data", args, forward=True),
                  Step(self.target, "set_capacity", args, forward=True)]
        if self.domain.locks is not None:
            steps.append(Step(self.target, "release_lease", args, forward=True))
        return steps

    def check_extend(self, img_uuid: str, vol_uuid: str, new_size: int) -> bool:
        """Whether there is anything to do; raises if the extension is not allowed."""
        md = self.metadata(img_uuid, vol_uuid)
        if new_size % 512 or new_size < md.capacity:
            raise invalid_parameter("newSize", f"must grow the volume ({md.capacity} bytes) "
                                    f"in multiples of 512: {new_size}")
        if new_size == md.capacity:
            return False
        if md.voltype != sc.LEAF_VOL:
            raise VolumeExtendingError(f"volume {vol_uuid} is not a leaf")
        return True

    def acquire_lease(self, img_uuid: str, vol_uuid: str, **_: Any) -> None:
        if self.domain.locks is not None:
            self.domain.locks.acquire(vol_uuid, self.lease_disk(img_uuid, vol_uuid))

    def release_lease(self, img_uuid: str, vol_uuid: str, **_: Any) -> None:
        """Release if this process holds it (after a restart sanlock already freed it)."""
        locks = self.domain.locks
        if locks is not None and (locks.sd_uuid, vol_uuid) in locks.sanlock.held():
            locks.release(vol_uuid, self.lease_disk(img_uuid, vol_uuid))

    def resize_data(self, img_uuid: str, vol_uuid: str, new_size: int) -> None:
        md = self.metadata(img_uuid, vol_uuid)
        qemuimg.resize(self.path(img_uuid, vol_uuid), QEMU_FORMAT[md.format], new_size,
                       error=VolumeExtendingError, timeout=self.qemu_timeout)

    def set_capacity(self, img_uuid: str, vol_uuid: str, new_size: int) -> None:
        self.update(img_uuid, vol_uuid, capacity=new_size)

    def set_legality(self, img_uuid: str, vol_uuid: str, legality: str) -> VolumeMetadata:
        if legality not in (sc.LEGAL_VOL, sc.ILLEGAL_VOL):
            raise invalid_parameter("legality", f"must be LEGAL or ILLEGAL: {legality}")
        return self.update(img_uuid, vol_uuid, legality=legality)

    # -- delete --------------------------------------------------------------------------

    def delete(self, img_uuid: str, vol_uuid: str) -> None:
        """Remove a leaf (or a lone) volume; its parent becomes the leaf again."""
        run_inline(lambda _target: self, self.delete_plan(img_uuid, vol_uuid), "deleteVolume")

    def delete_plan(self, img_uuid: str, vol_uuid: str) -> list[Step]:
        """ILLEGAL first (undone by restoring the legality), then removal, only ever completed."""
        md = self.check_delete(img_uuid, vol_uuid)
        args = {"img_uuid": img_uuid, "vol_uuid": vol_uuid, "parent": md.parent,
                "legality": md.legality}
        return [Step(self.target, "check_delete", {"img_uuid": img_uuid, "vol_uuid": vol_uuid}),
                Step(self.target, "mark_illegal", args, undo="restore_legality"),
                Step(self.target, "remove_volume", args, forward=True)]

    def check_delete(self, img_uuid: str, vol_uuid: str) -> VolumeMetadata:
        md = self.metadata(img_uuid, vol_uuid)
        if md.voltype == sc.SHARED_VOL:
            raise CannotDeleteVolume(f"volume {vol_uuid} is a shared template volume")
        kids = self.children(img_uuid, vol_uuid)
        if kids:
            raise CannotDeleteVolume(f"volume {vol_uuid} has children: {', '.join(kids)}")
        return md

    def mark_illegal(self, img_uuid: str, vol_uuid: str, **_: Any) -> None:
        self.update(img_uuid, vol_uuid, legality=sc.ILLEGAL_VOL)

    def restore_legality(self, img_uuid: str, vol_uuid: str, legality: str, **_: Any) -> None:
        if self.meta_path(img_uuid, vol_uuid).exists():
            self.update(img_uuid, vol_uuid, legality=legality)

    def remove_volume(self, img_uuid: str, vol_uuid: str, parent: str, **_: Any) -> None:
        """Idempotent: a re-run after a crash finishes what the first run began."""
        _unlink(self.path(img_uuid, vol_uuid))
        _unlink(self.lease_disk(img_uuid, vol_uuid).path)
        self.remove_metadata({"img_uuid": img_uuid, "vol_uuid": vol_uuid})
        if parent != sc.BLANK_UUID and self.meta_path(img_uuid, parent).exists():
            self.restore_parent_leaf({"img_uuid": img_uuid, "vol_uuid": vol_uuid,
                                      "parent": parent})
        log.info("deleted volume %s/%s of domain %s", img_uuid, vol_uuid, self.domain.sd_uuid)
        if not self.domain.volumes(img_uuid):
            shutil.rmtree(self.domain.image_dir(img_uuid), ignore_errors=True)


@contextmanager
def _creating(spec: dict[str, Any]) -> Iterator[None]:
    """File errors of a create step as VDSM's codes (397 when the domain is full)."""
    try:
        yield
    except OSError as exc:
        cls = NoSpaceLeftOnDomain if exc.errno == errno.ENOSPC else VolumeCreationError
        raise cls(f"cannot create volume {spec['vol_uuid']}: {exc.strerror}") from None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_empty(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, sc.FILE_VOLUME_PERMISSIONS)
    try:
        os.fchmod(fd, sc.FILE_VOLUME_PERMISSIONS)
    finally:
        os.close(fd)
