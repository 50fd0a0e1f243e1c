"""Image copy, merge and domain format through the real Dispatcher, with a real sanlock
daemon, real qemu-img, and a small tmpfs as a domain that runs out of space for real."""

from __future__ import annotations

import os
import subprocess

import pytest

from storage import constants as sc
from storage import image_copy
from storage.image import Images
from storage.image_steps import run_now
from storage.volume import Volumes, VolumeSpec
from tests.integration.storage_support import become_spm, storage_rpc
from tests.integration.test_storage_api import BLANK
from vdsm_py.errors import NoSpaceLeftOnDomain

SP = "0a1b2c3d-aaaa-4a1e-8a53-0d1f2c3b4a5d"
SD = "1b2c3d4e-bbbb-4b2f-9b64-1e2a3d4c5b6e"
SMALL = "1b2c3d4e-bbbb-4b2f-9b64-1e2a3d4c5b6f"
IMG = "2c3d4e5f-cccc-4c30-8c75-2f3b4e5d6c7f"
IMG2 = "2c3d4e5f-cccc-4c30-8c75-2f3b4e5d6c70"
V1 = "3d4e5f60-dddd-4d41-9d86-304c5f6e7d80"
V2 = "4e5f6071-eeee-4e52-ae97-415d60718e91"
V3 = "4e5f6071-eeee-4e52-ae97-415d60718e92"
MB = sc.MiB

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_fs(tmp_path):
    """A 24 MiB tmpfs: real ENOSPC, unmounted by the fixture even on failure."""
    path = tmp_path / "small"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
async def domains(tmp_path, tmp_path_factory, small_fs):
    """Two unattached domains: SD on a directory, SMALL on the 24 MiB tmpfs."""
    async with storage_rpc(tmp_path, tmp_path_factory.getbasetemp()) as (client, service):
        export = tmp_path / "export"
        export.mkdir()
        for sd, path in ((SD, export), (SMALL, small_fs)):
            await client.ok("StoragePool.connectStorageServer", storagepoolID=BLANK,
                            domainType=4, connectionParams=[{"id": sd, "connection": str(path)}])
            await client.ok("StorageDomain.create", storagedomainID=sd, domainType=4,
                            typeArgs=str(path), name="d")
        yield client, service, export, small_fs


@pytest.fixture
async def env(domains):
    """Both domains in pool SP, this host its SPM."""
    client, _service, _export, _small = domains
    await become_spm(client, SP, SD, [SD, SMALL])
    return domains


def fill(path, mbytes: int) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 7 0 {mbytes}M", str(path)],
                   check=True, capture_output=True)


IDS = {"storagepoolID": SP, "storagedomainID": SD, "imageID": IMG}
NEW_VOL = {"size": str(64 * MB), "volFormat": 4, "preallocate": 2}


async def test_copy_that_does_not_fit_fails_with_397_and_leaves_nothing(env):
    client, _service, export, small = env
    await client.task_ok("Volume.create", volumeID=V1, **IDS, **NEW_VOL)
    fill(export / SD / "images" / IMG / V1, 40)
    code = await client.error("Volume.copy", volumeID=V1, **IDS, dstSdUUID=SMALL,
                              dstImgUUID=IMG2, dstVolUUID=V2, volType=8)
    assert code == 397
    assert os.listdir(small / SMALL / "images") == []
    assert await client.error("Image.move", **IDS, dstSdUUID=SMALL, operation=1) == 397
    assert os.listdir(small / SMALL / "images") == []
    # it fits on the big domain: a template made from the disk
    await client.task_ok("Volume.copy", volumeID=V1, **IDS, dstSdUUID=BLANK, dstImgUUID=IMG2,
                         dstVolUUID=V2, volType=6, desc="template")
    info = await client.ok("Volume.getInfo", volumeID=V2, **dict(IDS, imageID=IMG2))
    assert info["voltype"] == "SHARED" and info["legality"] == "LEGAL"
    assert info["description"] == "template"


async def test_real_enospc_during_the_copy_removes_the_partial_volume(domains, monkeypatch):
    _client, service, _export, small = domains
    src = Images(Volumes(service.find_domain(SD)), service.run_dir)
    dst = Images(Volumes(service.find_domain(SMALL)), service.run_dir)
    src.volumes.create(VolumeSpec(IMG, V1, 64 * MB, sc.COW_FORMAT, sc.SPARSE))
    fill(src.volumes.path(IMG, V1), 40)
    # Skip the space check so that qemu-img itself hits the full file system.
    monkeypatch.setattr(image_copy, "check_space", lambda *a, **k: None)
    with pytest.raises(NoSpaceLeftOnDomain):
        run_now(image_copy.copy_collapsed_plan(src, IMG, V1, dst, IMG2, V2), src, dst)
    assert os.listdir(small / SMALL / "images") == []
    with pytest.raises(NoSpaceLeftOnDomain):
        run_now(image_copy.copy_image_plan(src, IMG, dst), src, dst)
    assert os.listdir(small / SMALL / "images") == []


async def test_bad_ids_are_refused_before_any_file_is_touched(env):
    client, _service, export, small = env
    await client.task_ok("Volume.create", volumeID=V1, **IDS, **NEW_VOL)
    before = sorted(os.listdir(export / SD / "images"))
    for bad in ("../../etc", "x/../..", "/tmp", V1.upper()):
        assert await client.error("Volume.copy", volumeID=V1, **IDS, dstSdUUID=BLANK,
                                  dstImgUUID=bad, dstVolUUID=V2) == 91
        assert await client.error("Image.merge", **IDS, baseVolUUID=V1, topVolUUID=bad) == 91
        assert await client.error("Image.cloneStructure", **dict(IDS, imageID=bad),
                                  dstSdUUID=SMALL) == 91
        assert await client.error("Image.move", **IDS, dstSdUUID=bad, operation=1) == 91
        assert await client.error("StorageDomain.format", storagedomainID=bad) == 91
    assert sorted(os.listdir(export / SD / "images")) == before
    assert os.listdir(small / SMALL / "images") == []
    assert await client.ok("Host.getAllTasksStatuses") == {}


async def test_merge_clone_structure_and_move_through_the_api(env):
    client, _service, export, small = env
    await client.task_ok("Volume.create", volumeID=V1, **IDS, **NEW_VOL)
    await client.task_ok("Volume.create", volumeID=V2, srcVolUUID=V1, **IDS, **NEW_VOL)
    await client.task_ok("Volume.create", volumeID=V3, srcVolUUID=V2, **IDS, **NEW_VOL)
    fill(export / SD / "images" / IMG / V2, 2)
    await client.task_ok("Image.cloneStructure", **IDS, dstSdUUID=SMALL)
    assert await client.ok("StorageDomain.getVolumes", storagedomainID=SMALL, imageID=IMG) \
        == sorted([V1, V2, V3])
    assert await client.error("Image.merge", **IDS, baseVolUUID=V1, topVolUUID=V3) == 921
    await client.task_ok("Image.merge", **IDS, baseVolUUID=V1, topVolUUID=V2)
    assert await client.ok("StorageDomain.getVolumes", storagedomainID=SD, imageID=IMG) \
        == [V1, V3]
    base = await client.ok("Volume.getInfo", volumeID=V1, **IDS)
    assert (base["legality"], base["voltype"], base["generation"]) == ("LEGAL", "INTERNAL", 1)
    # move the merged image over the structure-only copy (forced), then back is refused
    await client.task_ok("Image.move", **IDS, dstSdUUID=SMALL, operation=2, force=True)
    assert await client.ok("StorageDomain.getImages", storagedomainID=SD) == []
    small_ids = dict(IDS, storagedomainID=SMALL)
    prepared = await client.ok("Image.prepare", volumeID=V3, **small_ids)
    assert [v["volumeID"] for v in prepared["imgVolumesInfo"]] == [V1, V3]
    assert await client.error("Image.merge", **small_ids, baseVolUUID=V1, topVolUUID=V3) == 203
    await client.ok("Image.teardown", **small_ids)
    await client.task_ok("Image.merge", **small_ids, baseVolUUID=V1, topVolUUID=V3)
    assert await client.ok("StorageDomain.getVolumes", storagedomainID=SMALL, imageID=IMG) \
        == [V1]
    assert sorted(os.listdir(small / SMALL / "images" / IMG)) == [V1, V1 + ".lease", V1 + ".meta"]


async def test_format_refuses_active_attached_and_connected_domains(domains):
    client, _service, _export, small = domains
    await client.ok("StorageDomain.activate", storagedomainID=SMALL)
    assert await client.error("StorageDomain.format", storagedomainID=SMALL) == 382
    await client.ok("StorageDomain.deactivate", storagedomainID=SMALL)
    await client.ok("StoragePool.create", storagepoolID=SP, name="dc", masterSdUUID=SD,
                    masterVersion=1, domainList=[SD])
    assert await client.error("StorageDomain.format", storagedomainID=SD) == 391
    await client.ok("StoragePool.connect", storagepoolID=SP, hostID=1, masterSdUUID=SD,
                    masterVersion=1)
    assert await client.error("StorageDomain.format", storagedomainID=SD, autoDetach=True) \
        == 392
    await client.ok("StoragePool.disconnect", storagepoolID=SP, hostID=1)
    await client.ok("StorageDomain.format", storagedomainID=SD, autoDetach=True)
    await client.ok("StorageDomain.format", storagedomainID=SMALL)
    assert os.listdir(small) == []
    assert await client.ok("Host.getStorageDomains") == []
    assert await client.error("StorageDomain.format", storagedomainID=SMALL) == 358
