"""Cold merge of a snapshot layer on a real file domain with real qemu-img."""

from __future__ import annotations

import os

import pytest

from storage import constants as sc
from storage import image_merge, qemuimg
from storage.image_steps import resolver, run_now
from storage.tasks import Task, run
from storage.volume import VolumeSpec
from tests.unit.test_storage_image_copy import IMG, MB, V1, V2, V3, chain3, make_images, read_ok
from vdsm_py.errors import (
    ImageIsNotLegalChain,
    MergeSnapshotsError,
    SharedVolumeNonWritable,
    VolumeIsBusy,
    WrongParentVolume,
)

SD = "5b0c7d7e-2222-4b1e-8a53-0d1f2c3b4a5d"


@pytest.fixture
def images(tmp_path):
    imgs = make_images(tmp_path, SD)
    chain3(imgs)
    return imgs


def merge(images, base, top):
    run_now(image_merge.merge_plan(images, IMG, base, top), images)
    return images.volumes.metadata(IMG, base)


def chain_names(images, leaf):
    return [os.path.basename(i.filename) for i in qemuimg.info(images.volumes.path(IMG, leaf),
                                                               chain=True)]


def test_merging_an_internal_layer_rebases_its_child_onto_the_base(images):
    vols = images.volumes
    md = merge(images, V1, V2)
    assert vols.domain.volumes(IMG) == sorted([V1, V3])
    assert not vols.path(IMG, V2).exists()
    assert chain_names(images, V3) == [V3, V1]
    assert vols.metadata(IMG, V3).parent == V1
    assert md.voltype == sc.INTERNAL_VOL and md.legality == sc.LEGAL_VOL and md.generation == 1
    leaf = vols.path(IMG, V3)
    assert read_ok(leaf, 1, 0) and read_ok(leaf, 2, 1) and read_ok(leaf, 3, 2)
    assert read_ok(vols.path(IMG, V1), 2, 1)  # V2's data now lives in the base
    assert images.prepare(IMG, V3)["path"]  # whole chain legal


def test_merging_the_leaf_makes_the_base_the_leaf(images):
    vols = images.volumes
    md = merge(images, V2, V3)
    assert md.voltype == sc.LEAF_VOL
    assert vols.domain.volumes(IMG) == sorted([V1, V2])
    assert read_ok(vols.path(IMG, V2), 3, 2) and read_ok(vols.path(IMG, V2), 1, 0)
    assert images.prepare(IMG, V2)["path"]


def test_merge_grows_a_smaller_base_to_the_top_capacity(tmp_path):
    imgs = make_images(tmp_path, SD)
    vols = imgs.volumes
    vols.create(VolumeSpec(IMG, V1, 8 * MB, sc.RAW_FORMAT, sc.SPARSE))
    vols.create(VolumeSpec(IMG, V2, 16 * MB, sc.COW_FORMAT, sc.SPARSE, parent=V1))
    merge(imgs, V1, V2)
    assert vols.metadata(IMG, V1).capacity == 16 * MB
    assert qemuimg.info(vols.path(IMG, V1))[0].virtual_size == 16 * MB


def test_merge_refuses_a_volume_that_is_not_the_parent(images):
    with pytest.raises(WrongParentVolume):
        merge(images, V1, V3)
    assert images.volumes.domain.volumes(IMG) == sorted([V1, V2, V3])


def test_merge_refuses_a_prepared_image(images):
    images.prepare(IMG, V3)
    with pytest.raises(VolumeIsBusy):
        merge(images, V2, V3)
    images.teardown(IMG)
    merge(images, V2, V3)


def test_merge_refuses_an_illegal_chain_and_a_template(images):
    vols = images.volumes
    vols.set_legality(IMG, V3, sc.ILLEGAL_VOL)
    with pytest.raises(ImageIsNotLegalChain):
        merge(images, V2, V3)
    vols.set_legality(IMG, V3, sc.LEGAL_VOL)
    vols.update(IMG, V1, voltype=sc.SHARED_VOL)
    with pytest.raises(SharedVolumeNonWritable):
        merge(images, V1, V2)


def run_stopped_at(images, action):
    task = Task(id="t", verb="mergeSnapshots",
                steps=image_merge.merge_plan(images, IMG, V1, V2))

    def stop(task, step):
        task.stop_requested = task.stop_requested or step.action == action

    run(task, resolver(lambda _sd: images), None, stop)
    return task


def test_stopped_commit_rolls_back_to_a_legal_unchanged_chain(images):
    vols = images.volumes
    task = run_stopped_at(images, "merge_commit")
    assert task.state == "recovered"
    assert all(vols.metadata(IMG, v).legality == sc.LEGAL_VOL for v in (V1, V2, V3))
    assert chain_names(images, V3) == [V3, V2, V1]
    assert read_ok(vols.path(IMG, V3), 2, 1)


def test_failed_rebase_puts_top_back_between_base_and_child(images):
    vols = images.volumes
    task = Task(id="t", verb="mergeSnapshots", steps=image_merge.merge_plan(images, IMG, V1, V2))
    leaf, away = vols.path(IMG, V3), vols.path(IMG, V3).with_suffix(".away")
    os.rename(leaf, away)  # the child's file is gone: the rebase fails for real
    run(task, resolver(lambda _sd: images), None)
    assert task.state in ("recovered", "failed") and task.code == MergeSnapshotsError.code
    os.rename(away, leaf)
    assert [vols.metadata(IMG, v).legality for v in (V1, V2, V3)] == ["LEGAL"] * 3
    assert vols.metadata(IMG, V3).parent == V2 and vols.metadata(IMG, V1).generation == 0
    assert images.prepare(IMG, V3)["path"]
