"""Images: the chain of volumes a VM disk is, prepared for use and torn down after.

``prepare`` walks the chain from the requested leaf to its base through the volumes'
metadata, checks every link (metadata sound, volume LEGAL, data file present, and qemu-img's
own view of the backing chain naming the same volumes in the same formats), then publishes
the image under ``<run_dir>/<sdUUID>/<imgUUID>`` (a symlink to the image directory, as
VDSM's ``/run/vdsm/storage``) and returns the path a VM opens. ``teardown`` removes the
link. ``delete`` renames the image directory out of sight first, then removes it.
Blocking: call from the executor. Must not acquire leases (the VM layer does).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage import constants as sc
from storage import qemuimg
from storage.volume import QEMU_FORMAT, Volumes
from vdsm_py.errors import (
    ImageDoesNotExistInSD,
    ImageIsNotLegalChain,
    ImagePathError,
    StorageError,
    VolumeDoesNotExist,
)

log = logging.getLogger("vdsm_py.storage.image")

REMOVED_PREFIX = "_remove_me_"


@dataclass(frozen=True)
class ChainLink:
    vol_uuid: str
    path: Path
    format: str
    lease_path: Path
    lease_offset: int


class Images:
    def __init__(self, volumes: Volumes, run_dir: Path):
        self.volumes = volumes
        self.domain = volumes.domain
        self.run_dir = run_dir

    def link_path(self, img_uuid: str) -> Path:
        return self.run_dir / self.domain.sd_uuid / img_uuid

    def chain(self, img_uuid: str, leaf_uuid: str) -> list[ChainLink]:
        """The chain base first, checked against metadata and qemu-img; 262 if broken."""
        links: list[ChainLink] = []
        seen: set[str] = set()
        vol = leaf_uuid
        while vol != sc.BLANK_UUID:
            if vol in seen:
                raise ImageIsNotLegalChain(f"image {img_uuid}: volume {vol} is its own ancestor")
            seen.add(vol)
            try:
                md = self.volumes.metadata(img_uuid, vol)
            except VolumeDoesNotExist:
                if vol == leaf_uuid:
                    raise
                raise ImageIsNotLegalChain(
                    f"image {img_uuid}: parent volume {vol} is missing") from None
            except StorageError as exc:
                raise ImageIsNotLegalChain(f"image {img_uuid}: volume {vol}: {exc}") from None
            if md.legality != sc.LEGAL_VOL:
                raise ImageIsNotLegalChain(f"image {img_uuid}: volume {vol} is {md.legality}")
            path = self.volumes.path(img_uuid, vol)
            if not path.is_file():
                raise ImageIsNotLegalChain(f"image {img_uuid}: data of volume {vol} is missing")
            disk = self.volumes.lease_disk(img_uuid, vol)
            links.append(ChainLink(vol, path, QEMU_FORMAT[md.format], disk.path, disk.offset))
            vol = md.parent
        links.reverse()
        self._check_with_qemu(img_uuid, links)
        return links

    def _check_with_qemu(self, img_uuid: str, links: list[ChainLink]) -> None:
        infos = qemuimg.info(links[-1].path, chain=True, error=ImageIsNotLegalChain)
        expected = list(reversed(links))  # qemu-img lists the top first
        if len(infos) != len(expected):
            raise ImageIsNotLegalChain(
                f"image {img_uuid}: metadata chain has {len(expected)} volumes, "
                f"qemu-img sees {len(infos)}")
        for info, link in zip(infos, expected, strict=True):
            if info.format != link.format:
                raise ImageIsNotLegalChain(
                    f"image {img_uuid}: volume {link.vol_uuid} is {info.format}, "
                    f"metadata says {link.format}")
        for info, below in zip(infos, expected[1:], strict=False):
            if info.backing_filename is None or \
                    os.path.basename(info.backing_filename) != below.vol_uuid:
                raise ImageIsNotLegalChain(
                    f"image {img_uuid}: {info.filename} is backed by "
                    f"{info.backing_filename!r}, metadata says {below.vol_uuid}")
        if infos[-1].backing_filename:
            raise ImageIsNotLegalChain(
                f"image {img_uuid}: base volume has a backing file the metadata does not know")

    def prepare(self, img_uuid: str, leaf_uuid: str) -> dict[str, Any]:
        if not self.domain.image_dir(img_uuid).is_dir():
            raise ImageDoesNotExistInSD(
                f"Image {img_uuid} does not exist in domain {self.domain.sd_uuid}")
        links = self.chain(img_uuid, leaf_uuid)
        link = self.link_path(img_uuid)
        try:
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = link.with_name(link.name + ".tmp")
            if tmp.is_symlink():
                tmp.unlink()
            tmp.symlink_to(self.domain.image_dir(img_uuid))
            os.replace(tmp, link)
        except OSError as exc:
            raise ImagePathError(f"cannot publish image {img_uuid}: {exc.strerror}") from None
        log.info("prepared image %s/%s (leaf %s, %d volumes)",
                 self.domain.sd_uuid, img_uuid, leaf_uuid, len(links))
        path = str(link / leaf_uuid)
        return {
            "path": path,
            "info": {"type": "file", "path": path},
            "imgVolumesInfo": [
                {"domainID": self.domain.sd_uuid, "imageID": img_uuid,
                 "volumeID": lk.vol_uuid, "path": str(link / lk.vol_uuid),
                 "leasePath": str(lk.lease_path), "leaseOffset": lk.lease_offset}
                for lk in links
            ],
        }

    def teardown(self, img_uuid: str) -> None:
        link = self.link_path(img_uuid)
        if link.is_symlink():
            link.unlink()
            log.info("tore down image %s/%s", self.domain.sd_uuid, img_uuid)

    def is_prepared(self, img_uuid: str) -> bool:
        return self.link_path(img_uuid).is_symlink()

    def delete(self, img_uuid: str) -> None:
        img_dir = self.domain.image_dir(img_uuid)
        if not img_dir.is_dir():
            raise ImageDoesNotExistInSD(
                f"Image {img_uuid} does not exist in domain {self.domain.sd_uuid}")
        if self.is_prepared(img_uuid):
            raise StorageError(f"image {img_uuid} is prepared (in use); tear it down first")
        for vol in self.domain.volumes(img_uuid):
            if self.volumes.metadata(img_uuid, vol).voltype == sc.SHARED_VOL:
                raise StorageError(f"image {img_uuid} holds a shared template volume")
        doomed = img_dir.with_name(REMOVED_PREFIX + img_uuid)
        os.rename(img_dir, doomed)
        shutil.rmtree(doomed)
        log.info("deleted image %s/%s", self.domain.sd_uuid, img_uuid)
