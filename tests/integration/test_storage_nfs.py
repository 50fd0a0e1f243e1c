"""NFS storage domains for real, inside a guest booting the stock Debian kernel.

This machine's kernel has neither an NFS client nor a server, so
``test_nfs_domains_in_a_stock_kernel_guest`` boots one QEMU guest (see ``kernel_vm``), starts
the kernel NFS server there (two tmpfs exports on the guest's loopback: ``/srv/export`` for
NFSv3, ``/srv/v4`` as the NFSv4 root) and runs the ``guest_*`` tests of this file inside it.
They connect with ``connectStorageServer`` as VDSM does (soft, nosharecache, timeo, retrans,
nfsvers), lay out a domain and run volume tasks on it. The ``guest_*`` tests only run when
``VDSM_PY_IN_KERNEL_GUEST=1`` (set by the guest script).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration import kernel_vm
from tests.integration.storage_support import become_spm, storage_rpc
from tests.integration.test_storage_api import BLANK

IN_GUEST = os.environ.get(kernel_vm.IN_GUEST_ENV) == "1"
GUEST_TESTS = 3
NFS = 1

SERVER = """
ip link set lo up
modprobe nfsd && modprobe nfsv3 && modprobe nfsv4 || exit 90
mount -t nfsd nfsd /proc/fs/nfsd
echo 10 > /proc/fs/nfsd/nfsv4gracetime
echo 10 > /proc/fs/nfsd/nfsv4leasetime
mkdir -p /srv/export /srv/v4 /var/lib/nfs/rpc_pipefs /run/rpcbind
mount -t tmpfs -o size=256m tmpfs /srv/export
mount -t tmpfs -o size=256m tmpfs /srv/v4
rpcbind -w && exportfs -o rw,no_root_squash,insecure,fsid=1 127.0.0.1:/srv/export \\
  && exportfs -o rw,no_root_squash,insecure,fsid=0 127.0.0.1:/srv/v4 \\
  && rpc.mountd && rpc.nfsd 2 || exit 91
"""


@pytest.mark.slow
@pytest.mark.skipif(IN_GUEST, reason="this is the host side")
@pytest.mark.skipif(os.geteuid() != 0, reason="the guest tests need root inside the guest")
@pytest.mark.skipif(bool(kernel_vm.unavailable_reason()), reason=kernel_vm.unavailable_reason())
def test_nfs_domains_in_a_stock_kernel_guest() -> None:
    kernel_vm.run_guest_tests(__file__, GUEST_TESTS, preamble=SERVER)


# --- inside the guest ------------------------------------------------------------------------

guest = pytest.mark.skipif(not IN_GUEST, reason="runs inside the stock-kernel guest only")

SP = "0a1b2c3d-aaaa-4a1e-8a53-0d1f2c3b4a5d"
SD = "1b2c3d4e-bbbb-4b2f-9b64-1e2a3d4c5b6e"
IMG = "2c3d4e5f-cccc-4c30-8c75-2f3b4e5d6c7f"
IMG2 = "2c3d4e5f-cccc-4c30-8c75-2f3b4e5d6c70"
V1 = "3d4e5f60-dddd-4d41-9d86-304c5f6e7d80"
V2 = "4e5f6071-eeee-4e52-ae97-415d60718e91"


def mount_options(target: Path) -> set[str]:
    out = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,OPTIONS", str(target)],
                         capture_output=True, text=True, check=True).stdout.split()
    return {out[0], *out[1].split(",")}


@pytest.fixture
async def rpc(tmp_path):
    # No sanlock daemon in the guest: the NFS mount and the domain's files are the point here.
    async with storage_rpc(tmp_path, tmp_path, use_sanlock=False) as (client, service):
        try:
            yield client, service
        finally:
            for mount in service.connections.mount_points():
                if os.path.ismount(mount):
                    await asyncio.to_thread(subprocess.run, ["umount", "-f", "-l", str(mount)],
                                            check=False)


@guest
async def test_guest_nfs_v3_domain_with_volume_tasks(rpc):
    client, service = rpc
    conn = [{"id": "n3", "connection": "127.0.0.1:/srv/export", "version": "3",
             "mnt_options": "nolock", "timeout": 100, "retrans": 3}]
    params = {"storagepoolID": BLANK, "domainType": NFS, "connectionParams": conn}
    assert await client.ok("StoragePool.connectStorageServer", **params) \
        == [{"id": "n3", "status": 0}]
    (mount,) = service.connections.mount_points()
    assert mount.name == "127.0.0.1:_srv_export"
    opts = mount_options(mount)
    assert {"nfs", "soft", "nosharecache", "timeo=100", "retrans=3", "vers=3", "nolock"} <= opts
    assert await client.ok("StoragePool.connectStorageServer", **params) \
        == [{"id": "n3", "status": 0}]  # idempotent

    await client.ok("StorageDomain.create", storagedomainID=SD, domainType=NFS,
                    typeArgs="127.0.0.1:/srv/export", name="nfs")
    assert Path("/srv/export", SD, "dom_md", "metadata").is_file()  # on the server's side
    info = await client.ok("StorageDomain.getInfo", storagedomainID=SD)
    assert info["type"] == "NFS"
    await become_spm(client, SP, SD, [SD])
    ids = {"storagepoolID": SP, "storagedomainID": SD, "imageID": IMG}
    await client.task_ok("Volume.create", volumeID=V1, size=str(64 << 20), volFormat=4,
                         preallocate=2, **ids)
    await client.task_ok("Volume.copy", volumeID=V1, **ids, dstSdUUID=BLANK, dstImgUUID=IMG2,
                         dstVolUUID=V2, volType=6)
    assert Path("/srv/export", SD, "images", IMG2, V2).is_file()
    stats = await client.ok("StorageDomain.getStats", storagedomainID=SD)
    assert int(stats["disktotal"]) <= 256 << 20  # the export's tmpfs
    await client.ok("StoragePool.disconnect", storagepoolID=SP, hostID=1)
    assert await client.ok("StoragePool.disconnectStorageServer", **params) \
        == [{"id": "n3", "status": 0}]
    assert not os.path.ismount(mount) and not mount.exists()


@guest
async def test_guest_nfs_v4_2_mounts_with_vdsm_options(rpc):
    client, service = rpc
    conn = [{"id": "n4", "connection": "127.0.0.1:/", "version": "4.2"}]
    params = {"storagepoolID": BLANK, "domainType": NFS, "connectionParams": conn}
    assert await client.ok("StoragePool.connectStorageServer", **params) \
        == [{"id": "n4", "status": 0}]
    (mount,) = service.connections.mount_points()
    assert {"nfs4", "vers=4.2", "soft", "nosharecache"} <= mount_options(mount)
    await client.ok("StorageDomain.create", storagedomainID=SD, domainType=NFS,
                    typeArgs="127.0.0.1:/", name="nfs4")
    assert Path("/srv/v4", SD, "dom_md", "ids").is_file()
    assert await client.ok("Host.getStorageDomains") == [SD]
    await client.ok("StoragePool.disconnectStorageServer", **params)
    assert not mount.exists()


@guest
async def test_guest_nfs_missing_export_fails_with_477_and_leaves_no_mount_point(rpc):
    client, service = rpc
    conn = [{"id": "bad", "connection": "127.0.0.1:/srv/missing", "version": "3",
             "mnt_options": "nolock"}]
    got = await client.ok("StoragePool.connectStorageServer", storagepoolID=BLANK,
                          domainType=NFS, connectionParams=conn)
    assert got == [{"id": "bad", "status": 477}]
    assert service.connections.mount_points() == []
