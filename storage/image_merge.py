"""Cold merge: removing one snapshot layer (``top``) of an image while its VM is down.

VDSM's cold merge (``prepareMerge`` → ``SDM.merge`` → ``finalizeMerge`` → delete) as one
plan of steps (see :mod:`storage.tasks`): the base (``top``'s parent) is marked ILLEGAL and
grown to ``top``'s capacity; ``qemu-img commit -b base top`` writes ``top``'s clusters into
the base, leaving ``top`` intact; finalizing marks ``top`` ILLEGAL, points its child (if any)
at the base with an unsafe rebase and in its metadata, or, when ``top`` was the leaf, makes
the base the leaf, and makes the base LEGAL again; then ``top``'s files are removed.

Rollback: until finalize the chain ``base <- top <- child`` reads exactly what it read
before (``top``'s clusters hide the base's new ones), so undoing means only making the base
LEGAL again; finalize is undone by pointing the child back at ``top`` and making ``top``
LEGAL. Removing ``top`` is the point of no return (idempotent: recovery completes it). The step methods live on
:class:`storage.image_steps.ImageOps`. Must not take leases or know about pools.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from storage import constants as sc
from storage import qemuimg
from storage.image import Images
from storage.image_copy import leaf_of, ops_target
from storage.tasks import Step
from storage.volume import QEMU_FORMAT, Volumes
from vdsm_py.errors import (
    MergeSnapshotsError,
    SharedVolumeNonWritable,
    VolumeIsBusy,
    WrongParentVolume,
)

log = logging.getLogger("vdsm_py.storage.image_merge")


@dataclass(frozen=True)
class Subchain:
    """The layer to remove (``top``), the volume it is merged into, and top's child."""

    img_uuid: str
    base: str
    top: str
    child: str | None  # None when top is the leaf
    generation: int  # the base's generation before the merge

    def args(self) -> dict[str, object]:
        return {"img_uuid": self.img_uuid, "base": self.base, "top": self.top,
                "child": self.child, "generation": self.generation}


def validate(images: Images, img_uuid: str, base: str, top: str) -> Subchain:
    vols = images.volumes
    if images.is_prepared(img_uuid):
        raise VolumeIsBusy(f"image {img_uuid} is prepared (its VM may be running); "
                           "a cold merge needs it torn down")
    images.chain(img_uuid, leaf_of(vols, img_uuid))  # the whole chain legal and consistent
    top_md = vols.metadata(img_uuid, top)
    base_md = vols.metadata(img_uuid, base)
    if top_md.parent != base:
        raise WrongParentVolume(f"volume {top} is based on {top_md.parent}, not on {base}")
    for vol, md in ((base, base_md), (top, top_md)):
        if md.voltype == sc.SHARED_VOL:
            raise SharedVolumeNonWritable(f"volume {vol} is a shared template volume")
    kids = vols.children(img_uuid, top)
    if len(kids) > 1:
        raise MergeSnapshotsError(f"volume {top} has several children: {kids}")
    return Subchain(img_uuid, base, top, kids[0] if kids else None, base_md.generation)


def merge_plan(images: Images, img_uuid: str, base: str, top: str) -> list[Step]:
    """Checked now; the steps remove layer ``top`` into ``base``, all volumes end LEGAL."""
    args = validate(images, img_uuid, base, top).args()
    target = ops_target(images.volumes.domain.sd_uuid)
    return [
        Step(target, "merge_prepare", args, undo="merge_unprepare"),
        Step(target, "merge_commit", args),
        Step(target, "merge_finalize", args, undo="merge_unfinalize"),
        Step(target, "merge_remove_top", args, forward=True),
    ]


def prepare(vols: Volumes, sub: Subchain) -> None:
    """Base ILLEGAL (no VM may use the chain meanwhile) and as large as ``top``."""
    top_md = vols.metadata(sub.img_uuid, sub.top)
    base_md = vols.update(sub.img_uuid, sub.base, legality=sc.ILLEGAL_VOL)
    if top_md.capacity > base_md.capacity:
        qemuimg.resize(vols.path(sub.img_uuid, sub.base), QEMU_FORMAT[base_md.format],
                       top_md.capacity, error=MergeSnapshotsError, timeout=vols.qemu_timeout)
        vols.update(sub.img_uuid, sub.base, capacity=top_md.capacity)


def unprepare(vols: Volumes, sub: Subchain) -> None:
    if vols.meta_path(sub.img_uuid, sub.base).exists():
        vols.update(sub.img_uuid, sub.base, legality=sc.LEGAL_VOL)


def commit(vols: Volumes, sub: Subchain, progress: qemuimg.Progress | None = None) -> None:
    top_md = vols.metadata(sub.img_uuid, sub.top)
    qemuimg.commit(vols.path(sub.img_uuid, sub.top), QEMU_FORMAT[top_md.format],
                   vols.path(sub.img_uuid, sub.base), progress=progress,
                   error=MergeSnapshotsError, timeout=vols.qemu_timeout)


def finalize(vols: Volumes, sub: Subchain) -> None:
    """Take ``top`` out of the qemu and metadata chains; the base LEGAL again. Idempotent."""
    base_md = vols.metadata(sub.img_uuid, sub.base)
    if vols.meta_path(sub.img_uuid, sub.top).exists():
        vols.update(sub.img_uuid, sub.top, legality=sc.ILLEGAL_VOL)
    voltype = sc.LEAF_VOL
    if sub.child is not None:
        qemuimg.rebase_unsafe(vols.path(sub.img_uuid, sub.child), sub.base,
                              QEMU_FORMAT[base_md.format], error=MergeSnapshotsError)
        vols.update(sub.img_uuid, sub.child, parent=sub.base)
        voltype = sc.INTERNAL_VOL
    vols.update(sub.img_uuid, sub.base, voltype=voltype, legality=sc.LEGAL_VOL,
                generation=sub.generation + 1)
    log.info("merged volume %s into %s in image %s/%s", sub.top, sub.base,
             vols.domain.sd_uuid, sub.img_uuid)


def unfinalize(vols: Volumes, sub: Subchain) -> None:
    """Put ``top`` back between base and child (whatever part of finalize ran)."""
    if not vols.meta_path(sub.img_uuid, sub.top).exists():
        return
    if sub.child is not None:
        vols.update(sub.img_uuid, sub.child, parent=sub.top)
    vols.update(sub.img_uuid, sub.base, voltype=sc.INTERNAL_VOL, generation=sub.generation)
    top_md = vols.update(sub.img_uuid, sub.top, legality=sc.LEGAL_VOL)
    if sub.child is not None:
        qemuimg.rebase_unsafe(vols.path(sub.img_uuid, sub.child), sub.top,
                              QEMU_FORMAT[top_md.format], error=MergeSnapshotsError)


def remove_top(vols: Volumes, sub: Subchain) -> None:
    """Delete the merged-out ``top`` (already ILLEGAL and out of every chain). Idempotent."""
    for path in (vols.path(sub.img_uuid, sub.top), vols.lease_disk(sub.img_uuid, sub.top).path,
                 vols.meta_path(sub.img_uuid, sub.top)):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
