"""Image copies on real file domains with real qemu-img: collapsed (Volume.copy), structure
only (Image.cloneStructure), whole chains (Image.move), and their failures."""

from __future__ import annotations

import os
import subprocess

import pytest

from storage import constants as sc
from storage import image_copy, qemuimg
from storage.domain import DomainSpec, FileStorageDomain
from storage.image import Images
from storage.image_steps import resolver, run_now
from storage.tasks import Task, run
from storage.volume import Volumes, VolumeSpec
from vdsm_py.errors import (
    DestImageActionError,
    ImageIsNotLegalChain,
    InvalidParameter,
    StorageError,
    VolumeAlreadyExists,
)

SD = "5b0c7d7e-2222-4b1e-8a53-0d1f2c3b4a5d"
SD2 = "5b0c7d7e-2222-4b1e-8a53-0d1f2c3b4a5e"
IMG = "6c1d8e8f-3333-4c2f-9b64-1e2a3d4c5b6e"
IMG2 = "6c1d8e8f-3333-4c2f-9b64-1e2a3d4c5b6f"
V1 = "7d2e9f90-4444-4d30-8c75-2f3b4e5d6c7f"
V2 = "8e3fa0a1-5555-4e41-9d86-304c5f6e7d80"
V3 = "9f40b1b2-6666-4f52-ae97-415d60718e91"
NEW = "a051c2c3-7777-4063-bfa8-526e71829fa2"
MB = sc.MiB


def make_images(tmp_path, sd) -> Images:
    mnt = tmp_path / sd[-4:]
    mnt.mkdir()
    dom = FileStorageDomain.create(mnt, DomainSpec(sd, "d", sc.LOCALFS_DOMAIN, str(mnt)),
                                   io_timeout=1)
    return Images(Volumes(dom), tmp_path / "run")


@pytest.fixture
def src(tmp_path) -> Images:
    return make_images(tmp_path, SD)


@pytest.fixture
def dst(tmp_path) -> Images:
    return make_images(tmp_path, SD2)


def write(path, pattern: int, offset_mb: int, fmt="qcow2") -> None:
    subprocess.run(["qemu-io", "-f", fmt, "-c", f"write -P {pattern} {offset_mb}M 1M",
                    str(path)], check=True, capture_output=True)


def read_ok(path, pattern: int, offset_mb: int, fmt="qcow2") -> bool:
    out = subprocess.run(["qemu-io", "-f", fmt, "-c", f"read -P {pattern} {offset_mb}M 1M",
                          str(path)], check=False, capture_output=True, text=True)
    return out.returncode == 0 and "Pattern verification failed" not in out.stdout


def copy(src: Images, img, vol, dst: Images, dst_img, dst_vol, **kw):
    run_now(image_copy.copy_collapsed_plan(src, img, vol, dst, dst_img, dst_vol, **kw),
            src, dst)
    return dst.volumes.metadata(dst_img, dst_vol)


def clone(src: Images, dst: Images) -> None:
    run_now(image_copy.clone_structure_plan(src, IMG, dst.volumes), src, dst)


def copy_image(src: Images, dst: Images, **kw) -> None:
    run_now(image_copy.copy_image_plan(src, IMG, dst, **kw), src, dst)


def chain3(images: Images) -> None:
    """V1 <- V2 <- V3, each layer with its own 1 MiB of pattern."""
    vols = images.volumes
    vols.create(VolumeSpec(IMG, V1, 16 * MB, sc.COW_FORMAT, sc.SPARSE))
    write(vols.path(IMG, V1), 1, 0)
    vols.create(VolumeSpec(IMG, V2, 16 * MB, sc.COW_FORMAT, sc.SPARSE, parent=V1))
    write(vols.path(IMG, V2), 2, 1)
    vols.create(VolumeSpec(IMG, V3, 16 * MB, sc.COW_FORMAT, sc.SPARSE, parent=V2))
    write(vols.path(IMG, V3), 3, 2)


def test_collapsed_copy_of_a_chain_makes_one_legal_base_volume_with_all_data(src):
    chain3(src)
    md = copy(src, IMG, V3, src, IMG2, NEW, description="clone")
    path = src.volumes.path(IMG2, NEW)
    (info,) = qemuimg.info(path, chain=True)
    assert info.backing_filename is None and info.format == "qcow2"
    assert all(read_ok(path, p, p - 1) for p in (1, 2, 3))
    assert md.legality == sc.LEGAL_VOL and md.voltype == sc.LEAF_VOL
    assert md.parent == sc.BLANK_UUID and md.description == "clone"
    assert src.prepare(IMG2, NEW)["path"].endswith(NEW)


def test_collapsed_copy_as_shared_raw_makes_a_template_on_another_domain(src, dst):
    chain3(src)
    md = copy(src, IMG, V2, dst, IMG2, NEW, vol_type=sc.SHARED_VOL,
                                   vol_format=sc.RAW_FORMAT)
    path = dst.volumes.path(IMG2, NEW)
    assert md.voltype == sc.SHARED_VOL and md.format == sc.RAW_FORMAT
    assert qemuimg.info(path)[0].format == "raw"
    assert read_ok(path, 1, 0, "raw") and read_ok(path, 2, 1, "raw")
    assert read_ok(path, 0, 2, "raw")  # V3's data is above the copied volume
    with pytest.raises(StorageError):  # a template cannot be deleted as an image
        dst.delete(IMG2)


def test_collapsed_copy_refuses_an_existing_legal_image_unless_forced(src):
    chain3(src)
    copy(src, IMG, V3, src, IMG2, NEW)
    with pytest.raises(VolumeAlreadyExists):
        copy(src, IMG, V3, src, IMG2, NEW)
    copy(src, IMG, V1, src, IMG2, NEW, force=True)
    assert not read_ok(src.volumes.path(IMG2, NEW), 2, 1)


def test_collapsed_copy_replaces_an_illegal_destination_image(src):
    chain3(src)
    copy(src, IMG, V1, src, IMG2, NEW)
    src.volumes.set_legality(IMG2, NEW, sc.ILLEGAL_VOL)
    copy(src, IMG, V3, src, IMG2, NEW)
    assert src.volumes.metadata(IMG2, NEW).legality == sc.LEGAL_VOL


def test_collapsed_copy_to_the_same_image_is_invalid(src):
    chain3(src)
    with pytest.raises(InvalidParameter):
        copy(src, IMG, V3, src, IMG, NEW)


def test_copy_of_an_illegal_chain_is_refused_and_writes_nothing(src):
    chain3(src)
    src.volumes.set_legality(IMG, V2, sc.ILLEGAL_VOL)
    with pytest.raises(ImageIsNotLegalChain):
        copy(src, IMG, V3, src, IMG2, NEW)
    assert not src.volumes.domain.image_dir(IMG2).exists()


def test_task_stop_during_the_copy_rolls_back_to_nothing(src):
    chain3(src)
    steps = image_copy.copy_collapsed_plan(src, IMG, V3, src, IMG2, NEW)
    task = Task(id="t1", verb="copyImage", steps=steps)
    seen = []

    def stop_at_convert(task, step):
        if step.action == "convert":
            task.stop_requested = True  # what Task.stop does; the copy notices it in progress
        seen.append(step.action)

    run(task, resolver(lambda _sd: src), None, stop_at_convert)
    assert task.state == "recovered" and task.code == 443
    assert "convert" in seen and "set_volume" not in seen
    assert not src.volumes.domain.image_dir(IMG2).exists()


def test_copy_reports_progress_to_its_task(src):
    chain3(src)
    task = Task(id="t2", verb="copyImage",
                steps=image_copy.copy_collapsed_plan(src, IMG, V3, src, IMG2, NEW))
    run(task, resolver(lambda _sd: src), None)
    assert task.state == "finished" and task.progress == 100.0


def test_replacing_an_image_restores_the_old_one_when_the_copy_fails(src):
    chain3(src)
    copy(src, IMG, V1, src, IMG2, NEW)
    steps = image_copy.copy_collapsed_plan(src, IMG, V3, src, IMG2, NEW, force=True)
    task = Task(id="t3", verb="copyImage", steps=steps)

    def stop_at_convert(task, step):
        task.stop_requested = task.stop_requested or step.action == "convert"

    run(task, resolver(lambda _sd: src), None, stop_at_convert)
    assert task.state == "recovered"
    assert src.volumes.domain.volumes(IMG2) == [NEW]  # the old copy, back in place
    assert src.prepare(IMG2, NEW)["path"] and not read_ok(src.volumes.path(IMG2, NEW), 2, 1)
    assert sorted(os.listdir(src.volumes.domain.images_dir)) == sorted([IMG, IMG2])


def test_clone_structure_makes_empty_volumes_with_the_same_chain(src, dst):
    chain3(src)
    clone(src, dst)
    d = dst.volumes
    assert d.domain.volumes(IMG) == sorted([V1, V2, V3])
    assert d.metadata(IMG, V3).parent == V2 and d.metadata(IMG, V2).parent == V1
    assert [d.metadata(IMG, v).voltype for v in (V1, V2, V3)] == ["INTERNAL", "INTERNAL", "LEAF"]
    assert not read_ok(d.path(IMG, V3), 1, 0)
    assert dst.prepare(IMG, V3)["path"].endswith(V3)  # legal and qemu-consistent


def test_clone_structure_onto_the_same_domain_or_an_existing_image_is_refused(src, dst):
    chain3(src)
    with pytest.raises(InvalidParameter):
        clone(src, src)
    clone(src, dst)
    with pytest.raises(DestImageActionError):
        clone(src, dst)


def test_copy_image_keeps_the_chain_layer_by_layer(src, dst):
    chain3(src)
    copy_image(src, dst)
    d = dst.volumes
    infos = qemuimg.info(d.path(IMG, V3), chain=True)
    assert [os.path.basename(i.filename) for i in infos] == [V3, V2, V1]
    assert read_ok(d.path(IMG, V1), 1, 0) and not read_ok(d.path(IMG, V2), 1, 1)
    assert read_ok(d.path(IMG, V3), 2, 1) and read_ok(d.path(IMG, V3), 3, 2)
    # each layer holds only its own clusters
    assert os.path.getsize(d.path(IMG, V2)) < 2 * MB
    assert all(d.metadata(IMG, v).legality == "LEGAL" for v in (V1, V2, V3))
    assert src.volumes.domain.volumes(IMG)  # copy keeps the source


def test_move_image_removes_the_source_after_copying(src, dst):
    chain3(src)
    copy_image(src, dst, operation=image_copy.MOVE_OP)
    assert not src.volumes.domain.image_dir(IMG).exists()
    assert dst.prepare(IMG, V3)["path"]


def test_copy_image_refuses_existing_destination_unless_forced(src, dst):
    chain3(src)
    copy_image(src, dst)
    with pytest.raises(DestImageActionError):
        copy_image(src, dst)
    copy_image(src, dst, force=True)
    assert dst.prepare(IMG, V3)["path"]
