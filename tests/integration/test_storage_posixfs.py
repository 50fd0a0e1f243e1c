"""posixfs for real: a loop device holding an ext4 file system, connected with
``connectStorageServer`` (vfs_type ext4), a domain and volumes on it, and its failures."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import pytest

from tests.integration.storage_support import become_spm, loop_device, storage_rpc
from tests.integration.test_storage_api import BLANK

SP = "0a1b2c3d-aaaa-4a1e-8a53-0d1f2c3b4a5d"
SD = "1b2c3d4e-bbbb-4b2f-9b64-1e2a3d4c5b6e"
IMG = "2c3d4e5f-cccc-4c30-8c75-2f3b4e5d6c7f"
V1 = "3d4e5f60-dddd-4d41-9d86-304c5f6e7d80"
V2 = "4e5f6071-eeee-4e52-ae97-415d60718e91"
POSIXFS = 6
MB = 1 << 20

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="losetup and mount need root"),
    pytest.mark.skipif(shutil.which("losetup") is None or shutil.which("mkfs.ext4") is None,
                       reason="util-linux losetup and e2fsprogs are needed"),
]


def findmnt(target) -> dict[str, str]:
    out = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "--target", str(target)],
                         capture_output=True, text=True, check=True).stdout.split()
    return {"source": out[0], "fstype": out[1]}


@pytest.fixture
def device(tmp_path):
    with loop_device(tmp_path / "disk.img", 64, ["mkfs.ext4", "-q", "-F"]) as dev:
        yield dev


@pytest.fixture
async def rpc(tmp_path, tmp_path_factory):
    async with storage_rpc(tmp_path, tmp_path_factory.getbasetemp()) as (client, service):
        try:
            yield client, service
        finally:  # a failed test must not leave the loop device mounted
            for mount in service.connections.mount_points():
                if os.path.ismount(mount):
                    await asyncio.to_thread(subprocess.run, ["umount", "-l", str(mount)],
                                            check=False)


def conn(device, vfs="ext4", **extra):
    return [{"id": "c1", "connection": device, "vfs_type": vfs, **extra}]


async def test_posixfs_loop_device_domain_lifecycle(device, rpc):
    client, service = rpc
    params = {"storagepoolID": BLANK, "domainType": POSIXFS}
    assert await client.ok("StoragePool.connectStorageServer", **params,
                           connectionParams=conn(device, mnt_options="noatime")) \
        == [{"id": "c1", "status": 0}]
    (mount,) = service.connections.mount_points()
    assert mount.name == device.replace("/", "_")
    assert os.path.ismount(mount) and findmnt(mount) == {"source": device, "fstype": "ext4"}
    # idempotent
    assert await client.ok("StoragePool.connectStorageServer", **params,
                           connectionParams=conn(device)) == [{"id": "c1", "status": 0}]

    await client.ok("StorageDomain.create", storagedomainID=SD, domainType=POSIXFS,
                    typeArgs=device, name="loop")
    info = await client.ok("StorageDomain.getInfo", storagedomainID=SD)
    assert info["type"] == "POSIXFS" and info["remotePath"] == device
    stats = await client.ok("StorageDomain.getStats", storagedomainID=SD)
    assert int(stats["disktotal"]) < 64 * MB  # the loop file system's size, not the host's

    await become_spm(client, SP, SD, [SD])
    ids = {"storagepoolID": SP, "storagedomainID": SD, "imageID": IMG}
    await client.task_ok("Volume.create", volumeID=V1, size=str(32 * MB), volFormat=4,
                         preallocate=2, **ids)
    assert (mount / SD / "images" / IMG / V1).is_file()
    # more than the file system holds: the task fails with 397 and leaves nothing
    status = await client.task("Volume.create", volumeID=V2, size=str(128 * MB), volFormat=5,
                               preallocate=1, **dict(ids, imageID=V2))
    assert status["code"] == 397 and status["taskResult"] == "cleanSuccess", status
    assert not (mount / SD / "images" / V2).exists()
    await client.ok("StoragePool.spmStop", storagepoolID=SP)
    await client.ok("StoragePool.disconnect", storagepoolID=SP, hostID=1)

    assert await client.ok("StoragePool.disconnectStorageServer", **params,
                           connectionParams=conn(device)) == [{"id": "c1", "status": 0}]
    assert not os.path.ismount(mount) and not mount.exists()
    assert await client.ok("StoragePool.disconnectStorageServer", **params,
                           connectionParams=conn(device)) == [{"id": "c1", "status": 0}]
    # the data stayed on the device: connect again and find the domain
    await client.ok("StoragePool.connectStorageServer", **params, connectionParams=conn(device))
    assert await client.ok("Host.getStorageDomains") == [SD]
    await client.ok("StoragePool.disconnectStorageServer", **params,
                    connectionParams=conn(device))


async def test_posixfs_wrong_type_or_missing_device_fails_with_477_and_no_mount(
        device, rpc, tmp_path):
    client, service = rpc
    params = {"storagepoolID": BLANK, "domainType": POSIXFS}
    got = await client.ok("StoragePool.connectStorageServer", **params,
                          connectionParams=conn(device, vfs="xfs"))
    assert got == [{"id": "c1", "status": 477}]
    got = await client.ok("StoragePool.connectStorageServer", **params,
                          connectionParams=conn(str(tmp_path / "no-such-device")))
    assert got == [{"id": "c1", "status": 477}]
    assert service.connections.mount_points() == []
    # an option list trying to smuggle a mount(8) flag is refused before running anything
    assert await client.error("StoragePool.connectStorageServer", **params,
                              connectionParams=conn(device, vfs="-oremount")) == 91
