"""Volumes and images of a file domain: create, inspect, extend, delete, legality.

A volume is ``images/<imgUUID>/<volUUID>`` (the data, made by qemu-img), ``.meta`` (its
metadata, see :mod:`storage.metadata`) and ``.lease`` (its sanlock lease). Creation is a
list of forward steps, each paired with its undo; when a step fails, the undos run in
reverse and the caller gets the error with nothing left behind. A new volume is written
ILLEGAL and turned LEGAL only as the last step, so a crash mid-create leaves a volume that
no VM will use. Blocking (files, qemu-img): call from the executor. Must not acquire host
ids or know about pools.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from storage import constants as sc
from storage import qemuimg
from storage.domain import FileStorageDomain
from storage.metadata import VolumeMetadata, write_atomically
from storage.sanlock_adapter import Disk
from vdsm_py.errors import (
    CannotDeleteVolume,
    ImageDoesNotExistInSD,
    NoSpaceLeftOnDomain,
    StorageError,
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

    def _write_metadata(self, img_uuid: str, vol_uuid: str, md: VolumeMetadata) -> None:
        write_atomically(self.meta_path(img_uuid, vol_uuid), md.dump(),
                         sc.FILE_VOLUME_PERMISSIONS)

    def update(self, img_uuid: str, vol_uuid: str, **changes: Any) -> VolumeMetadata:
        md = replace(self.metadata(img_uuid, vol_uuid), **changes)
        self._write_metadata(img_uuid, vol_uuid, md)
        return md

    def _set_voltype(self, img_uuid: str, vol_uuid: str, voltype: str) -> None:
        self.update(img_uuid, vol_uuid, voltype=voltype)

    # -- create --------------------------------------------------------------------------

    def create(self, spec: VolumeSpec) -> VolumeMetadata:
        spec.check()
        self.domain.metadata()  # never write into a domain whose metadata is not sound
        img_dir = self.domain.image_dir(spec.img_uuid)
        vol_path = self.path(spec.img_uuid, spec.vol_uuid)
        if self.meta_path(spec.img_uuid, spec.vol_uuid).exists() or vol_path.exists():
            raise VolumeAlreadyExists(f"Volume {spec.vol_uuid} already exists")
        parent_md: VolumeMetadata | None = None
        if spec.parent != sc.BLANK_UUID:
            parent_md = self.metadata(spec.img_uuid, spec.parent)
            if spec.capacity < parent_md.capacity:
                raise invalid_parameter("size", "smaller than the parent volume")
        undo: list[Callable[[], None]] = []
        try:
            if not img_dir.exists():
                img_dir.mkdir(mode=0o755)
                undo.append(lambda: shutil.rmtree(img_dir, ignore_errors=True))
            md = VolumeMetadata(
                domain=self.domain.sd_uuid, image=spec.img_uuid, parent=spec.parent,
                capacity=spec.capacity, format=spec.format, type=spec.allocation,
                voltype=sc.LEAF_VOL, disktype=spec.disktype, description=spec.description,
                legality=sc.ILLEGAL_VOL, ctime=int(time.time()),
                sequence=(parent_md.sequence + 1) if parent_md else 0,
            )
            undo.append(lambda: _unlink(self.meta_path(spec.img_uuid, spec.vol_uuid)))
            self._write_metadata(spec.img_uuid, spec.vol_uuid, md)
            undo.append(lambda: _unlink(vol_path))
            self._create_data(spec, vol_path, parent_md)
            os.chmod(vol_path, sc.FILE_VOLUME_PERMISSIONS)
            disk = self.lease_disk(spec.img_uuid, spec.vol_uuid)
            undo.append(lambda: _unlink(disk.path))
            _create_empty(disk.path)
            if self.domain.locks is not None:
                self.domain.locks.format_lease(spec.vol_uuid, disk)
            if parent_md is not None and parent_md.voltype == sc.LEAF_VOL:
                self.update(spec.img_uuid, spec.parent, voltype=sc.INTERNAL_VOL)
                undo.append(lambda: self._set_voltype(spec.img_uuid, spec.parent,
                                                      sc.LEAF_VOL))
            md = replace(md, legality=sc.LEGAL_VOL)
            self._write_metadata(spec.img_uuid, spec.vol_uuid, md)
        except BaseException as exc:
            for step in reversed(undo):
                try:
                    step()
                except (OSError, StorageError) as undo_exc:
                    log.error("undo of volume %s create failed: %s", spec.vol_uuid, undo_exc)
            if isinstance(exc, OSError):
                cls = NoSpaceLeftOnDomain if exc.errno == 28 else VolumeCreationError
                raise cls(f"cannot create volume {spec.vol_uuid}: {exc.strerror}") from None
            raise
        log.info("created volume %s/%s in domain %s (%s %s, %d bytes, parent %s)",
                 spec.img_uuid, spec.vol_uuid, self.domain.sd_uuid, spec.format,
                 spec.allocation, spec.capacity, spec.parent)
        return md

    def _create_data(self, spec: VolumeSpec, path: Path, parent: VolumeMetadata | None) -> None:
        fmt = QEMU_FORMAT[spec.format]
        prealloc = None
        if spec.allocation == sc.PREALLOCATED:
            prealloc = "falloc"  # raw: fallocate; qcow2: metadata + fallocate
        qemuimg.create(
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
        md = self.metadata(img_uuid, vol_uuid)
        if new_size % 512 or new_size < md.capacity:
            raise invalid_parameter("newSize", f"must grow the volume ({md.capacity} bytes) "
                                    f"in multiples of 512: {new_size}")
        if new_size == md.capacity:
            return md
        if md.voltype != sc.LEAF_VOL:
            raise VolumeExtendingError(f"volume {vol_uuid} is not a leaf")
        qemuimg.resize(self.path(img_uuid, vol_uuid), QEMU_FORMAT[md.format], new_size,
                       error=VolumeExtendingError, timeout=self.qemu_timeout)
        return self.update(img_uuid, vol_uuid, capacity=new_size)

    def set_legality(self, img_uuid: str, vol_uuid: str, legality: str) -> VolumeMetadata:
        if legality not in (sc.LEGAL_VOL, sc.ILLEGAL_VOL):
            raise invalid_parameter("legality", f"must be LEGAL or ILLEGAL: {legality}")
        return self.update(img_uuid, vol_uuid, legality=legality)

    def delete(self, img_uuid: str, vol_uuid: str) -> None:
        """Remove a leaf (or a lone) volume; its parent becomes the leaf again."""
        md = self.metadata(img_uuid, vol_uuid)
        if md.voltype == sc.SHARED_VOL:
            raise CannotDeleteVolume(f"volume {vol_uuid} is a shared template volume")
        kids = self.children(img_uuid, vol_uuid)
        if kids:
            raise CannotDeleteVolume(f"volume {vol_uuid} has children: {', '.join(kids)}")
        # Illegal first: if we die half way, what remains is never used.
        self.update(img_uuid, vol_uuid, legality=sc.ILLEGAL_VOL)
        _unlink(self.path(img_uuid, vol_uuid))
        _unlink(self.lease_disk(img_uuid, vol_uuid).path)
        _unlink(self.meta_path(img_uuid, vol_uuid))
        if md.parent != sc.BLANK_UUID:
            self.update(img_uuid, md.parent, voltype=sc.LEAF_VOL)
        log.info("deleted volume %s/%s of domain %s", img_uuid, vol_uuid, self.domain.sd_uuid)
        if not self.domain.volumes(img_uuid):
            shutil.rmtree(self.domain.image_dir(img_uuid), ignore_errors=True)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _create_empty(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, sc.FILE_VOLUME_PERMISSIONS)
    try:
        os.fchmod(fd, sc.FILE_VOLUME_PERMISSIONS)
    finally:
        os.close(fd)
