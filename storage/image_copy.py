"""Copying images: collapsed (``Volume.copy``), structure only (``Image.cloneStructure``)
and whole chains between domains (``Image.move`` with the copy or move operation).

VDSM's semantics: a collapsed copy reads a volume through its whole backing chain and
writes one new base volume in a new image (``volType`` SHARED makes it a template, the way
a template is made from a VM, LEAF a VM disk cloned from a template); ``cloneStructure``
makes, on another domain, empty volumes with the same UUIDs, formats, sizes, roles and
parents; ``move``/copy then fills them layer by layer (``qemu-img convert -B <parent>``
copies only each layer's own clusters) and, to move, removes the source.

Each operation is a *plan*: a list of :class:`storage.tasks.Step` that the SPM runs as a
persisted task (or :func:`storage.tasks.run_inline` runs now). The destination is checked
for space before anything is written (``qemu-img measure`` against the free space); new
volumes stay ILLEGAL until their data is complete; an image being replaced is renamed
aside and only removed once the copy succeeded; every step that makes something has an
undo, so a failed, stopped or crashed copy leaves no partial file. The steps are methods of
:class:`storage.image_steps.ImageOps` (kind ``imageops``) and of
:class:`storage.volume.Volumes` (kind ``volume``). Must not take leases or know about pools
(the caller checks the SPM).
"""

from __future__ import annotations

import logging
import os

from storage import constants as sc
from storage import qemuimg
from storage.image import Images
from storage.metadata import VolumeMetadata
from storage.tasks import Step
from storage.volume import QEMU_FORMAT, Volumes, VolumeSpec
from vdsm_py.errors import (
    DestImageActionError,
    ImageDoesNotExistInSD,
    ImageIsNotLegalChain,
    NoSpaceLeftOnDomain,
    SourceImageActionError,
    StorageError,
    VolumeAlreadyExists,
    invalid_parameter,
)

log = logging.getLogger("vdsm_py.storage.image_copy")

COPY_OP, MOVE_OP = 1, 2  # VDSM's ImageMoveOperation
SPACE_MARGIN = sc.MiB  # metadata, lease and file system overhead per volume
STASH_PREFIX = "_replaced_"  # an image renamed aside while its replacement is copied


def ops_target(sd_uuid: str) -> str:
    return f"imageops:{sd_uuid}"


def leaf_of(vols: Volumes, img_uuid: str) -> str:
    """The one volume of the image no other volume is based on."""
    names = vols.domain.volumes(img_uuid)
    if not names:
        raise ImageDoesNotExistInSD(
            f"Image {img_uuid} does not exist in domain {vols.domain.sd_uuid}")
    parents = {vols.metadata(img_uuid, v).parent for v in names}
    leaves = [v for v in names if v not in parents]
    if len(leaves) != 1:
        raise ImageIsNotLegalChain(f"image {img_uuid} has {len(leaves)} leaves: {leaves}")
    return leaves[0]


def chain_ids(vols: Volumes, img_uuid: str, leaf: str) -> list[str]:
    """Volume UUIDs from the base to ``leaf`` (metadata only; see Images.chain for checks)."""
    ids: list[str] = []
    vol = leaf
    while vol != sc.BLANK_UUID and len(ids) <= len(vols.domain.volumes(img_uuid)):
        ids.append(vol)
        vol = vols.metadata(img_uuid, vol).parent
    return ids[::-1]


def check_space(vols: Volumes, needed: int, what: str) -> None:
    """Refuse (397) before writing anything when the domain cannot hold ``needed`` bytes."""
    st = os.statvfs(vols.domain.root)
    free = st.f_bavail * st.f_frsize
    if needed > free:
        raise NoSpaceLeftOnDomain(
            f"{what} needs {needed} bytes, domain {vols.domain.sd_uuid} has {free} free")


def space_needed(vols: Volumes, img_uuid: str, vol_uuid: str, allocation: str,
                 volumes: int = 1) -> int:
    """Bytes a copy of ``vol_uuid`` read through its chain takes: its capacity when
    preallocated, else its data (measured as qcow2) plus a margin per volume."""
    md = vols.metadata(img_uuid, vol_uuid)
    if allocation == sc.PREALLOCATED:
        data = md.capacity
    else:
        data = qemuimg.measure(vols.path(img_uuid, vol_uuid), QEMU_FORMAT[md.format], "qcow2",
                               error=SourceImageActionError)
    return data + SPACE_MARGIN * volumes


def replaces_destination(dst_images: Images, img_uuid: str, force: bool,
                         vol_uuid: str | None = None) -> bool:
    """VDSM: an existing destination image is replaced when forced or when not legal."""
    dst = dst_images.volumes
    if not dst.domain.image_dir(img_uuid).is_dir():
        return False
    try:
        dst_images.chain(img_uuid, leaf_of(dst, img_uuid))
        legal = True
    except StorageError:
        legal = False
    if dst_images.is_prepared(img_uuid):
        raise DestImageActionError(f"image {img_uuid} on domain {dst.domain.sd_uuid} is "
                                   "prepared (in use); it cannot be replaced")
    if legal and not force:
        if vol_uuid is not None and dst.meta_path(img_uuid, vol_uuid).exists():
            raise VolumeAlreadyExists(f"Volume {vol_uuid} already exists")
        raise DestImageActionError(
            f"image {img_uuid} exists on domain {dst.domain.sd_uuid}; use force to replace it")
    log.info("image %s on domain %s will be replaced (force=%s, legal=%s)",
             img_uuid, dst.domain.sd_uuid, force, legal)
    return True


def _replace_steps(dst: Volumes, img_uuid: str, replace: bool) -> tuple[list[Step], list[Step]]:
    """Steps before and after the copy that rename an old image aside and drop it."""
    if not replace:
        return [], []
    args = {"img_uuid": img_uuid}
    target = ops_target(dst.domain.sd_uuid)
    return ([Step(target, "stash_image", args, undo="unstash_image")],
            [Step(target, "drop_stash", args, forward=True)])


# -- Volume.copy ---------------------------------------------------------------------------


def copy_collapsed_plan(
    src_images: Images, img_uuid: str, vol_uuid: str, dst_images: Images, dst_img: str,
    dst_vol: str, *, description: str = "", vol_type: str = sc.LEAF_VOL,
    vol_format: str | None = None, allocation: str | None = None, force: bool = False,
) -> list[Step]:
    """Checked now (chain, space, destination); the steps copy ``vol_uuid`` through its
    chain into the new base volume ``dst_img/dst_vol``."""
    src, dst = src_images.volumes, dst_images.volumes
    if vol_type not in (sc.LEAF_VOL, sc.SHARED_VOL):
        raise invalid_parameter("volType", f"LEAF or SHARED: {vol_type}")
    if (dst.domain.sd_uuid, dst_img) == (src.domain.sd_uuid, img_uuid):
        raise invalid_parameter("dstImgUUID", "a collapsed copy goes to another image")
    links = src_images.chain(img_uuid, vol_uuid)
    src_md = src.metadata(img_uuid, vol_uuid)
    fmt = vol_format or src_md.format
    alloc = allocation or src.metadata(img_uuid, links[0].vol_uuid).type
    check_space(dst, space_needed(src, img_uuid, vol_uuid, alloc),
                f"copy of volume {vol_uuid}")
    replace = replaces_destination(dst_images, dst_img, force, dst_vol)
    spec = VolumeSpec(dst_img, dst_vol, src_md.capacity, fmt, alloc,
                      disktype=src_md.disktype, description=description)
    spec.check()
    target = ops_target(dst.domain.sd_uuid)
    check = {"src_sd": src.domain.sd_uuid, "img_uuid": img_uuid, "vol_uuid": vol_uuid,
             "allocation": alloc}
    convert = {"src_sd": src.domain.sd_uuid, "src_img": img_uuid, "src_vol": vol_uuid,
               "dst_img": dst_img, "dst_vol": dst_vol}
    before, after = _replace_steps(dst, dst_img, replace)
    return [
        Step(target, "check_copy", check),
        *before,
        *dst.making_steps(spec),
        Step(target, "convert", convert),
        Step(target, "set_volume", {"img_uuid": dst_img, "vol_uuid": dst_vol,
                                    "changes": {"voltype": vol_type,
                                                "legality": sc.LEGAL_VOL}}),
        *after,
    ]


# -- Image.cloneStructure / Image.move -----------------------------------------------------


def _structure(src_images: Images, img_uuid: str, dst: Volumes,
               legality: str) -> tuple[list[VolumeMetadata], list[str], list[Step]]:
    src = src_images.volumes
    if dst.domain.sd_uuid == src.domain.sd_uuid:
        raise invalid_parameter("dstSdUUID", "the image is already on this domain")
    leaf = leaf_of(src, img_uuid)
    src_images.chain(img_uuid, leaf)  # legal and consistent
    ids = chain_ids(src, img_uuid, leaf)
    mds = [src.metadata(img_uuid, v) for v in ids]
    steps: list[Step] = []
    for vol, md in zip(ids, mds, strict=True):
        # made sparse (a copy fills it), then given the source's allocation and role
        spec = VolumeSpec(img_uuid, vol, md.capacity, md.format, sc.SPARSE,
                          disktype=md.disktype, description=md.description, parent=md.parent)
        steps += dst.making_steps(spec)
        steps.append(Step(ops_target(dst.domain.sd_uuid), "set_volume", {
            "img_uuid": img_uuid, "vol_uuid": vol,
            "changes": {"type": md.type, "voltype": md.voltype, "legality": legality}}))
    return mds, ids, steps


def clone_structure_plan(src_images: Images, img_uuid: str, dst: Volumes) -> list[Step]:
    """Image.cloneStructure: the image's volumes, empty, with the same UUIDs on ``dst``."""
    _mds, _ids, steps = _structure(src_images, img_uuid, dst, sc.LEGAL_VOL)
    if dst.domain.image_dir(img_uuid).exists():
        raise DestImageActionError(
            f"image {img_uuid} already exists on domain {dst.domain.sd_uuid}")
    return steps


def copy_image_plan(src_images: Images, img_uuid: str, dst_images: Images, *,
                    operation: int = COPY_OP, force: bool = False) -> list[Step]:
    """Image.move: the whole chain, layer by layer, to ``dst`` (then, to move, removed)."""
    if operation not in (COPY_OP, MOVE_OP):
        raise invalid_parameter("operation", f"1 (copy) or 2 (move): {operation}")
    src, dst = src_images.volumes, dst_images.volumes
    mds, ids, structure = _structure(src_images, img_uuid, dst, sc.ILLEGAL_VOL)
    check_space(dst, space_needed(src, img_uuid, ids[-1], sc.SPARSE, len(ids)),
                f"copy of image {img_uuid}")
    if operation == MOVE_OP and src_images.is_prepared(img_uuid):
        raise SourceImageActionError(f"image {img_uuid} is prepared (in use); it cannot move")
    replace = replaces_destination(dst_images, img_uuid, force)
    target = ops_target(dst.domain.sd_uuid)
    before, after = _replace_steps(dst, img_uuid, replace)
    steps = [*before, *structure]
    for i, vol in enumerate(ids):
        steps.append(Step(target, "convert", {
            "src_sd": src.domain.sd_uuid, "src_img": img_uuid, "src_vol": vol,
            "dst_img": img_uuid, "dst_vol": vol, "backing": ids[i - 1] if i else None,
            "part": [i, len(ids)]}))
    for vol, md in zip(ids, mds, strict=True):  # leaf last: legal means complete
        steps.append(Step(target, "set_volume", {"img_uuid": img_uuid, "vol_uuid": vol,
                                                 "changes": {"legality": md.legality}}))
    steps += after
    if operation == MOVE_OP:
        steps.append(Step(ops_target(src.domain.sd_uuid), "remove_image",
                          {"img_uuid": img_uuid}, forward=True))
    return steps

