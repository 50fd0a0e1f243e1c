"""A file storage domain in VDSM's layout, and its metadata.

Layout under a mount point::

    <sdUUID>/dom_md/{metadata, ids, leases, inbox, outbox, xleases}
    <sdUUID>/images/<imgUUID>/<volUUID>{,.meta,.lease}

Creation builds the whole tree in a hidden temporary directory beside its final place and
renames it into place last, so a failed or interrupted create leaves no half domain that
could be mistaken for a real one; :meth:`FileStorageDomain.format` does the reverse (rename
out of sight, then remove). Opening a domain verifies its metadata seal; a domain
whose metadata is torn or corrupted raises and is never used. Blocking file I/O: call from
the executor. Must not run qemu-img (see :mod:`storage.volume`) or talk to the RPC layer.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage import constants as sc
from storage import xleases
from storage.locks import DomainLocks, Geometry
from storage.metadata import dump_domain_metadata, parse_domain_metadata, write_atomically
from vdsm_py.errors import (
    CannotFormatAttachedStorageDomain,
    InvalidMetadata,
    MiscDirCleanupFailure,
    StorageDomainAlreadyExists,
    StorageDomainCreationError,
    StorageDomainMetadataNotFound,
    StorageError,
    UnsupportedDomainVersion,
    invalid_parameter,
)

log = logging.getLogger("vdsm_py.storage.domain")

LocksFactory = Callable[[str, Path, Geometry], DomainLocks | None]


@dataclass(frozen=True)
class DomainSpec:
    """What ``StorageDomain.create`` asks for."""

    sd_uuid: str
    name: str
    storage_type: int  # sc.DOMAIN_TYPES key
    remote_path: str
    domain_class: int = sc.DATA_DOMAIN
    version: int = 5
    block_size: int = sc.BLOCK_SIZE_512
    alignment: int = sc.ALIGNMENT_1M

    def check(self) -> None:
        if self.storage_type not in sc.DOMAIN_TYPES:
            raise invalid_parameter("domainType", f"unsupported file domain type {self.storage_type}")
        if self.domain_class not in sc.DOMAIN_CLASSES:
            raise invalid_parameter("domainClass", f"unknown class {self.domain_class}")
        if self.version not in sc.SUPPORTED_VERSIONS:
            raise UnsupportedDomainVersion(f"Domain version {self.version} is unsupported")
        if self.block_size not in sc.SUPPORTED_BLOCK_SIZES:
            raise invalid_parameter("block_size", f"must be 512 or 4096: {self.block_size}")
        if len(self.name) > 50 or "\n" in self.name:
            raise invalid_parameter("name", "at most 50 characters on one line")


class FileStorageDomain:
    """One domain directory; metadata is read from storage on every :meth:`metadata` call."""

    def __init__(self, root: Path, sd_uuid: str, locks: DomainLocks | None = None):
        self.root = root  # <mount>/<sdUUID>
        self.sd_uuid = sd_uuid
        self.locks = locks

    # -- paths ---------------------------------------------------------------------------

    @property
    def md_dir(self) -> Path:
        return self.root / sc.DOMAIN_META_DATA

    @property
    def metadata_path(self) -> Path:
        return self.md_dir / sc.METADATA

    @property
    def images_dir(self) -> Path:
        return self.root / sc.DOMAIN_IMAGES

    def image_dir(self, img_uuid: str) -> Path:
        return self.images_dir / img_uuid

    # -- creation ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        mount: Path,
        spec: DomainSpec,
        *,
        io_timeout: int,
        locks_factory: LocksFactory | None = None,
    ) -> FileStorageDomain:
        """Lay out a new domain under ``mount``; nothing remains if any step fails."""
        spec.check()
        final = mount / spec.sd_uuid
        if final.exists():
            raise StorageDomainAlreadyExists(f"Storage domain {spec.sd_uuid} already exists")
        staging = mount / f".{spec.sd_uuid}.creating-{uuid.uuid4().hex[:8]}"
        geometry = Geometry(spec.alignment, spec.block_size, io_timeout)
        try:
            md_dir = staging / sc.DOMAIN_META_DATA
            md_dir.mkdir(mode=0o775, parents=True)
            (staging / sc.DOMAIN_IMAGES).mkdir(mode=0o775)
            for name in (sc.IDS, sc.LEASES, sc.XLEASES):
                _truncate(md_dir / name, 0)
            for name in (sc.INBOX, sc.OUTBOX):
                _truncate(md_dir / name, sc.MAILBOX_SIZE)
            xleases.format_index(md_dir / sc.XLEASES, spec.sd_uuid, spec.alignment)
            locks = locks_factory(spec.sd_uuid, md_dir, geometry) if locks_factory else None
            if locks is not None:
                locks.format_domain()
            md = {
                sc.DMDK_VERSION: str(spec.version),
                sc.DMDK_SDUUID: spec.sd_uuid,
                sc.DMDK_TYPE: sc.DOMAIN_TYPES[spec.storage_type],
                sc.DMDK_CLASS: sc.DOMAIN_CLASSES[spec.domain_class],
                sc.DMDK_DESCRIPTION: spec.name,
                sc.DMDK_ROLE: sc.REGULAR_DOMAIN,
                sc.DMDK_POOLS: "",
                sc.REMOTE_PATH: spec.remote_path,
                sc.DMDK_BLOCK_SIZE: str(spec.block_size),
                sc.DMDK_ALIGNMENT: str(spec.alignment),
                **sc.DEFAULT_LEASE_PARAMS,
            }
            write_atomically(md_dir / sc.METADATA, dump_domain_metadata(md))
            os.rename(staging, final)
        except StorageError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise StorageDomainCreationError(
                f"cannot create domain {spec.sd_uuid} in {mount}: {exc.strerror or exc}"
            ) from None
        log.info("created storage domain %s (%s) in %s", spec.sd_uuid, spec.name, mount)
        domain = cls(final, spec.sd_uuid)
        if locks_factory:
            domain.locks = locks_factory(spec.sd_uuid, domain.md_dir, geometry)
        return domain

    # -- format --------------------------------------------------------------------------

    def format(self, *, auto_detach: bool = False) -> None:
        """Erase the domain (VDSM's formatStorageDomain on a detached domain).

        A domain attached to a pool is refused (391) unless ``auto_detach``; a domain whose
        metadata is unreadable or broken may be formatted (that is how one gets rid of it).
        The caller refuses a domain of a connected pool or an active one. The tree is
        renamed to a hidden name first, so no reader ever sees a half-removed domain.
        """
        try:
            pools = self.pools()
        except StorageError as exc:
            log.warning("formatting domain %s despite its metadata: %s", self.sd_uuid, exc)
            pools = []
        if pools and not auto_detach:
            raise CannotFormatAttachedStorageDomain(
                f"domain {self.sd_uuid} is attached to pool {pools[0]}")
        doomed = self.root.with_name(f".{self.sd_uuid}.removing-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.root, doomed)
        except OSError as exc:
            raise MiscDirCleanupFailure(
                f"cannot format domain {self.sd_uuid}: {exc.strerror}") from None
        try:
            shutil.rmtree(doomed)
        except OSError as exc:
            raise MiscDirCleanupFailure(
                f"domain {self.sd_uuid} formatted, but {doomed} is left: {exc.strerror}"
            ) from None
        log.info("formatted storage domain %s (was in %s)", self.sd_uuid, self.root.parent)

    # -- metadata ------------------------------------------------------------------------

    def metadata(self) -> dict[str, str]:
        """The verified metadata; raises 364 (missing), 751 (torn) or 752 (bad seal)."""
        try:
            data = self.metadata_path.read_bytes()
        except FileNotFoundError:
            raise StorageDomainMetadataNotFound(
                f"Storage domain {self.sd_uuid} has no metadata at {self.metadata_path}"
            ) from None
        except OSError as exc:
            raise StorageDomainMetadataNotFound(
                f"cannot read metadata of domain {self.sd_uuid}: {exc.strerror}"
            ) from None
        md = parse_domain_metadata(data, f"domain {self.sd_uuid}")
        if md.get(sc.DMDK_SDUUID) != self.sd_uuid:
            raise InvalidMetadata(
                f"domain {self.sd_uuid}: metadata names {md.get(sc.DMDK_SDUUID)!r}"
            )
        return md

    def update_metadata(self, changes: Mapping[str, str | None]) -> dict[str, str]:
        """Set (or with ``None`` remove) keys, re-sealing the file; return the new content."""
        md = self.metadata()
        for key, value in changes.items():
            if value is None:
                md.pop(key, None)
            else:
                md[key] = value
        write_atomically(self.metadata_path, dump_domain_metadata(md))
        return md

    def geometry(self, io_timeout: int) -> Geometry:
        md = self.metadata()
        return Geometry(
            int(md.get(sc.DMDK_ALIGNMENT, sc.ALIGNMENT_1M)),
            int(md.get(sc.DMDK_BLOCK_SIZE, sc.BLOCK_SIZE_512)),
            io_timeout,
        )

    def pools(self) -> list[str]:
        value = self.metadata().get(sc.DMDK_POOLS, "")
        return [p for p in value.split(",") if p]

    # -- reports (VDSM wire shapes) ------------------------------------------------------

    def info(self) -> dict[str, Any]:
        md = self.metadata()
        info: dict[str, Any] = {
            "uuid": self.sd_uuid,
            "type": md.get(sc.DMDK_TYPE, ""),
            "class": md.get(sc.DMDK_CLASS, ""),
            "name": md.get(sc.DMDK_DESCRIPTION, ""),
            "role": md.get(sc.DMDK_ROLE, ""),
            "pool": [p for p in md.get(sc.DMDK_POOLS, "").split(",") if p],
            "version": md.get(sc.DMDK_VERSION, ""),
            "block_size": int(md.get(sc.DMDK_BLOCK_SIZE, sc.BLOCK_SIZE_512)),
            "alignment": int(md.get(sc.DMDK_ALIGNMENT, sc.ALIGNMENT_1M)),
            "remotePath": md.get(sc.REMOTE_PATH, ""),
        }
        if sc.PMDK_MASTER_VERSION in md:
            info["master_ver"] = int(md[sc.PMDK_MASTER_VERSION])
            info["spm_id"] = int(md.get(sc.PMDK_SPM_ID, "-1"))
            info["lver"] = int(md.get(sc.PMDK_LVER, "-1"))
        return info

    def stats(self) -> dict[str, Any]:
        self.metadata()  # a domain with bad metadata has no stats to give
        st = os.statvfs(self.root)
        return {
            "disktotal": str(st.f_blocks * st.f_frsize),
            "diskfree": str(st.f_bavail * st.f_frsize),
            "mdasize": 0,
            "mdafree": 0,
            "mdavalid": True,
            "mdathreshold": True,
        }

    def images(self) -> list[str]:
        try:
            names = os.listdir(self.images_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _is_uuid(n))

    def volumes(self, img_uuid: str) -> list[str]:
        try:
            names = os.listdir(self.image_dir(img_uuid))
        except FileNotFoundError:
            return []
        return sorted(n[: -len(sc.META_EXT)] for n in names
                      if n.endswith(sc.META_EXT) and _is_uuid(n[: -len(sc.META_EXT)]))


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, sc.METADATA_PERMISSIONS)
    try:
        os.fchmod(fd, sc.METADATA_PERMISSIONS)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _is_uuid(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False
