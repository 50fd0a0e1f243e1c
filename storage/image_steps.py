"""The step target of image copies and merges (kind ``imageops``), and running their plans
now, without a task.

:class:`ImageOps` holds one domain's images and a way to reach the other domains of the
pool (a copy reads from one domain and writes to another). Its methods in ``STEP_ACTIONS``
are what the plans of :mod:`storage.image_copy` and :mod:`storage.image_merge` call, with
JSON arguments, so a persisted task can run, undo or resume them after a restart. Each
undo tolerates its step never having run or having run half way. Long steps report
progress and notice ``Task.stop`` through :func:`storage.tasks.current_step`.
Blocking: runs on task workers or the executor. Must not know about pools or the RPC.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

from storage import image_copy, image_merge, qemuimg
from storage.image import Images
from storage.image_merge import Subchain
from storage.metadata import fsync_dir
from storage.tasks import Step, current_step, run_inline
from storage.volume import QEMU_FORMAT
from vdsm_py.errors import CopyImageError, NoSpaceLeftOnDomain, TaskMetaDataLoadError

log = logging.getLogger("vdsm_py.storage.image_steps")

Lookup = Callable[[str], Images]


class ImageOps:
    """Image-level steps on one domain (``imageops:<sdUUID>``)."""

    STEP_ACTIONS = frozenset({
        "check_copy", "stash_image", "unstash_image", "drop_stash", "convert", "set_volume",
        "remove_image", "merge_prepare", "merge_unprepare", "merge_commit", "merge_finalize",
        "merge_unfinalize", "merge_remove_top",
    })

    def __init__(self, images: Images, lookup: Lookup) -> None:
        self.images = images
        self.vols = images.volumes
        self.lookup = lookup

    # -- copies --------------------------------------------------------------------------

    def check_copy(self, src_sd: str, img_uuid: str, vol_uuid: str, allocation: str) -> None:
        """Again under the image's lock: the source chain legal, the space still there."""
        src = self.lookup(src_sd)
        src.chain(img_uuid, vol_uuid)
        image_copy.check_space(self.vols, image_copy.space_needed(
            src.volumes, img_uuid, vol_uuid, allocation), f"copy of volume {vol_uuid}")

    def _stash(self, img_uuid: str) -> Any:
        return self.vols.domain.images_dir / (image_copy.STASH_PREFIX + img_uuid)

    def stash_image(self, img_uuid: str) -> None:
        """Rename the image being replaced aside (dropped once its replacement is whole)."""
        img_dir = self.vols.domain.image_dir(img_uuid)
        if img_dir.is_dir() and not self._stash(img_uuid).exists():
            os.rename(img_dir, self._stash(img_uuid))

    def unstash_image(self, img_uuid: str) -> None:
        stash = self._stash(img_uuid)
        if not stash.is_dir():
            return
        img_dir = self.vols.domain.image_dir(img_uuid)
        if img_dir.exists():
            shutil.rmtree(img_dir)
        os.rename(stash, img_dir)

    def drop_stash(self, img_uuid: str) -> None:
        shutil.rmtree(self._stash(img_uuid), ignore_errors=True)

    def convert(self, src_sd: str, src_img: str, src_vol: str, dst_img: str, dst_vol: str,
                backing: str | None = None, part: list[int] | None = None) -> None:
        """Copy a volume's data into an existing destination volume of this domain.

        Without ``backing`` the source is read through its chain (collapsed); with it only
        the source's own clusters are written, the destination being backed by ``backing``.
        """
        src = self.lookup(src_sd).volumes
        src_md = src.metadata(src_img, src_vol)
        dst_md = self.vols.metadata(dst_img, dst_vol)
        backing_fmt = None
        if backing is not None:
            backing_fmt = QEMU_FORMAT[self.vols.metadata(dst_img, backing).format]
        index, count = part or (0, 1)
        step = current_step()
        try:
            qemuimg.convert(
                src.path(src_img, src_vol), QEMU_FORMAT[src_md.format],
                self.vols.path(dst_img, dst_vol), QEMU_FORMAT[dst_md.format],
                backing=backing, backing_format=backing_fmt,
                progress=lambda pct: step.progress((index + pct / 100.0) * 100.0 / count),
                error=CopyImageError, timeout=self.vols.qemu_timeout)
        except OSError as exc:
            cls = NoSpaceLeftOnDomain if exc.errno == 28 else CopyImageError
            raise cls(f"copy of volume {src_vol}: {exc.strerror}") from None

    def set_volume(self, img_uuid: str, vol_uuid: str, changes: dict[str, Any]) -> None:
        allowed = {"type", "voltype", "legality"}
        if not set(changes) <= allowed:
            raise TaskMetaDataLoadError(f"set_volume may change only {sorted(allowed)}")
        self.vols.update(img_uuid, vol_uuid, **changes)  # durable .meta and image dir
        # the volume was made by Volumes.making_steps, which leaves a new image directory's
        # entry in images/ unsynced: this write ends the plan, so it makes it durable
        fsync_dir(self.vols.domain.images_dir)

    def remove_image(self, img_uuid: str) -> None:
        """After a move: the source image (idempotent)."""
        if self.vols.domain.image_dir(img_uuid).exists():
            self.images.delete(img_uuid)

    # -- merge ---------------------------------------------------------------------------

    def merge_prepare(self, **args: Any) -> None:
        image_merge.prepare(self.vols, Subchain(**args))

    def merge_unprepare(self, **args: Any) -> None:
        image_merge.unprepare(self.vols, Subchain(**args))

    def merge_commit(self, **args: Any) -> None:
        step = current_step()
        image_merge.commit(self.vols, Subchain(**args), step.progress)

    def merge_finalize(self, **args: Any) -> None:
        image_merge.finalize(self.vols, Subchain(**args))

    def merge_unfinalize(self, **args: Any) -> None:
        image_merge.unfinalize(self.vols, Subchain(**args))

    def merge_remove_top(self, **args: Any) -> None:
        image_merge.remove_top(self.vols, Subchain(**args))


def resolver(lookup: Lookup) -> Callable[[str], object]:
    """Step targets over the domains ``lookup`` knows (for running a plan inline)."""
    def resolve(target: str) -> object:
        kind, _, sd_uuid = target.partition(":")
        images = lookup(sd_uuid)
        if kind == "volume":
            return images.volumes
        if kind == "imageops":
            return ImageOps(images, lookup)
        raise TaskMetaDataLoadError(f"unknown step target {target!r}")
    return resolve


def run_now(steps: list[Step], *images: Images, verb: str = "inline") -> None:
    """Run a plan in this thread over these domains; on failure its undos run."""
    known = {i.volumes.domain.sd_uuid: i for i in images}

    def lookup(sd_uuid: str) -> Images:
        try:
            return known[sd_uuid]
        except KeyError:
            raise TaskMetaDataLoadError(f"domain {sd_uuid} is not part of this plan") from None
    run_inline(resolver(lookup), steps, verb)


