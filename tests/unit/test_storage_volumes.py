"""Volumes and images on a real file domain with real qemu-img (no sanlock: unit level)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from storage import constants as sc
from storage import qemuimg
from storage.domain import DomainSpec, FileStorageDomain
from storage.image import Images
from storage.volume import Volumes, VolumeSpec
from vdsm_py.errors import (
    CannotDeleteVolume,
    ImageDoesNotExistInSD,
    ImageIsNotLegalChain,
    InvalidParameter,
    NoSpaceLeftOnDomain,
    VolumeAlreadyExists,
    VolumeCreationError,
    VolumeDoesNotExist,
)

SD = "5b0c7d7e-2222-4b1e-8a53-0d1f2c3b4a5d"
IMG = "6c1d8e8f-3333-4c2f-9b64-1e2a3d4c5b6e"
V1 = "7d2e9f90-4444-4d30-8c75-2f3b4e5d6c7f"
V2 = "8e3fa0a1-5555-4e41-9d86-304c5f6e7d80"
V3 = "9f40b1b2-6666-4f52-ae97-415d60718e91"
MB = sc.MiB


@pytest.fixture
def vols(tmp_path) -> Volumes:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    dom = FileStorageDomain.create(mnt, DomainSpec(SD, "d", sc.LOCALFS_DOMAIN, str(mnt)),
                                   io_timeout=1)
    return Volumes(dom)


def spec(vol=V1, fmt=sc.COW_FORMAT, alloc=sc.SPARSE, size=64 * MB, parent=sc.BLANK_UUID):
    return VolumeSpec(IMG, vol, size, fmt, alloc, parent=parent)


def files(vols: Volumes) -> list[str]:
    d = vols.domain.image_dir(IMG)
    return sorted(os.listdir(d)) if d.exists() else []


def test_create_sparse_qcow2_writes_data_meta_and_lease(vols):
    md = vols.create(spec())
    assert files(vols) == [V1, V1 + ".lease", V1 + ".meta"]
    assert md.legality == "LEGAL" and md.voltype == "LEAF" and md.capacity == 64 * MB
    (info,) = qemuimg.info(vols.path(IMG, V1))
    assert info.format == "qcow2" and info.virtual_size == 64 * MB and info.compat == "1.1"
    got = vols.info(IMG, V1)
    assert got["format"] == "COW" and got["type"] == "SPARSE" and got["capacity"] == str(64 * MB)
    assert got["lease"] == {"path": str(vols.path(IMG, V1)) + ".lease", "offset": 0}


def test_preallocated_raw_allocates_its_size(vols):
    vols.create(spec(fmt=sc.RAW_FORMAT, alloc=sc.PREALLOCATED, size=8 * MB))
    sizes = vols.size(IMG, V1)
    assert int(sizes["apparentsize"]) == 8 * MB and int(sizes["truesize"]) >= 8 * MB


def test_sparse_raw_allocates_nothing(vols):
    vols.create(spec(fmt=sc.RAW_FORMAT, size=8 * MB))
    assert int(vols.size(IMG, V1)["truesize"]) < MB


def test_snapshot_layer_backs_on_parent_with_format(vols):
    vols.create(spec())
    vols.create(spec(vol=V2, parent=V1))
    assert vols.metadata(IMG, V1).voltype == "INTERNAL"
    assert vols.metadata(IMG, V2).parent == V1 and vols.metadata(IMG, V2).sequence == 1
    top, base = qemuimg.info(vols.path(IMG, V2), chain=True)
    assert top.backing_filename == V1 and top.backing_format == "qcow2"
    assert base.filename.endswith(V1)


def test_existing_volume_is_refused(vols):
    vols.create(spec())
    with pytest.raises(VolumeAlreadyExists):
        vols.create(spec())


def test_missing_parent_touches_nothing(vols):
    with pytest.raises(ImageDoesNotExistInSD):
        vols.create(spec(vol=V2, parent=V1))
    assert files(vols) == []


@pytest.mark.parametrize("kw", [{"size": 1000}, {"size": 0}, {"fmt": "VMDK"},
                                {"alloc": "THICK"}])
def test_bad_spec_is_invalid_parameter_and_touches_nothing(vols, kw):
    with pytest.raises(InvalidParameter):
        vols.create(spec(**kw))
    assert not vols.domain.image_dir(IMG).exists()


def test_qemu_failure_rolls_back_everything(vols, monkeypatch):
    vols.create(spec())

    def boom(*a, **kw):
        raise VolumeCreationError("qemu-img create failed")
    monkeypatch.setattr(qemuimg, "start_create", boom)
    with pytest.raises(VolumeCreationError):
        vols.create(spec(vol=V2, parent=V1))
    assert files(vols) == [V1, V1 + ".lease", V1 + ".meta"]
    assert vols.metadata(IMG, V1).voltype == "LEAF"


def test_out_of_space_is_397_and_leaves_no_partial_files(vols):
    # A preallocated volume larger than the free space: fallocate fails for real (ENOSPC)
    # at once, without writing anything.
    dom = vols.domain
    st = os.statvfs(dom.root)
    free = st.f_bavail * st.f_frsize
    too_big = (free // MB + 1024) * MB
    with pytest.raises(NoSpaceLeftOnDomain) as err:
        vols.create(spec(fmt=sc.RAW_FORMAT, alloc=sc.PREALLOCATED, size=too_big))
    assert err.value.code == 397
    assert not dom.image_dir(IMG).exists()


def test_extend_grows_image_and_metadata(vols):
    vols.create(spec())
    vols.extend(IMG, V1, 128 * MB)
    assert qemuimg.info(vols.path(IMG, V1))[0].virtual_size == 128 * MB
    assert vols.metadata(IMG, V1).capacity == 128 * MB
    with pytest.raises(InvalidParameter):
        vols.extend(IMG, V1, 64 * MB)


def test_legality_and_delete_restore_the_leaf(vols):
    vols.create(spec())
    vols.create(spec(vol=V2, parent=V1))
    with pytest.raises(CannotDeleteVolume) as err:
        vols.delete(IMG, V1)
    assert err.value.code == 222
    vols.set_legality(IMG, V2, "ILLEGAL")
    assert vols.metadata(IMG, V2).legality == "ILLEGAL"
    vols.delete(IMG, V2)
    assert vols.metadata(IMG, V1).voltype == "LEAF"
    assert files(vols) == [V1, V1 + ".lease", V1 + ".meta"]
    vols.delete(IMG, V1)
    assert not vols.domain.image_dir(IMG).exists()
    with pytest.raises(ImageDoesNotExistInSD):
        vols.info(IMG, V1)


def test_prepare_returns_chain_and_teardown_unlinks(vols, tmp_path):
    vols.create(spec())
    vols.create(spec(vol=V2, parent=V1))
    images = Images(vols, tmp_path / "run")
    res = images.prepare(IMG, V2)
    link = tmp_path / "run" / SD / IMG
    assert res["path"] == str(link / V2) and os.path.exists(res["path"])
    assert [v["volumeID"] for v in res["imgVolumesInfo"]] == [V1, V2]
    assert res["imgVolumesInfo"][1]["leasePath"].endswith(V2 + ".lease")
    images.teardown(IMG)
    assert not link.exists()


def test_prepare_refuses_illegal_volume_in_chain(vols, tmp_path):
    vols.create(spec())
    vols.create(spec(vol=V2, parent=V1))
    vols.set_legality(IMG, V1, "ILLEGAL")
    with pytest.raises(ImageIsNotLegalChain) as err:
        Images(vols, tmp_path / "run").prepare(IMG, V2)
    assert err.value.code == 262
    assert not (tmp_path / "run" / SD / IMG).exists()


def test_prepare_detects_backing_file_disagreeing_with_metadata(vols, tmp_path):
    vols.create(spec())
    vols.create(spec(vol=V2, parent=V1))
    vols.create(spec(vol=V3, parent=V2))
    # rebase V3 onto V1 behind the metadata's back
    subprocess.run(["qemu-img", "rebase", "-u", "-b", V1, "-F", "qcow2",
                    str(vols.path(IMG, V3))], check=True)
    with pytest.raises(ImageIsNotLegalChain, match="metadata"):
        Images(vols, tmp_path / "run").prepare(IMG, V3)


def test_prepare_of_missing_volume_is_201(vols, tmp_path):
    vols.create(spec())
    with pytest.raises(VolumeDoesNotExist) as err:
        Images(vols, tmp_path / "run").prepare(IMG, V2)
    assert err.value.code == 201


def test_image_delete_removes_directory(vols, tmp_path):
    vols.create(spec())
    images = Images(vols, tmp_path / "run")
    images.delete(IMG)
    assert vols.domain.images() == []


def test_qemuimg_info_of_garbage_maps_to_given_error(tmp_path):
    path = tmp_path / "nope"
    with pytest.raises(VolumeCreationError, match="qemu-img info"):
        qemuimg.info(path, error=VolumeCreationError)


def test_qemuimg_create_argv_has_backing_format(tmp_path, monkeypatch):
    seen = []
    real = subprocess.run

    def spy(argv, **kw):
        seen.append(argv)
        return real(argv, **kw)
    monkeypatch.setattr(subprocess, "run", spy)
    qemuimg.create(tmp_path / "base", "qcow2", MB)
    qemuimg.create(tmp_path / "top", "qcow2", MB, backing="base", backing_format="qcow2")
    assert seen[1][seen[1].index("-b") + 1:seen[1].index("-b") + 4] == ["base", "-F", "qcow2"]
    out = real(["qemu-img", "info", "--output", "json", str(tmp_path / "top")],
               capture_output=True, check=True).stdout
    assert json.loads(out)["backing-filename-format"] == "qcow2"
