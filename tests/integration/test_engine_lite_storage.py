"""engine-lite VMs with disks on a storage domain, against real daemons.

Two hosts: one joined to a storage pool whose (file) domain holds a real volume (its own
sanlock daemon, :class:`tests.integration.storage_host.StorageHost`), one without storage.
The engine learns which domains each host sees from ``Host.getStorageRepoStats`` and sends
the disk to ``VM.create`` by its storage IDs, never by a path; the host resolves them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from engine_lite.errors import NoHostAvailable
from lxml import etree

from tests.integration.engine_lite_support import (
    RUNNING,
    WAIT,
    DevHost,
    dev_hosts,
    enroll,
    running_engine,
    vm_verbs_available,
)
from tests.integration.sanlock_daemon import start_sanlock
from tests.integration.storage_host import StorageHost
from tests.integration.test_storage_tasks_daemon import SD, SP, make_pool

pytestmark = pytest.mark.slow

IMG = "6c3d4e5f-cccc-4c30-8c75-2f3b4e5d6c7f"
VOL = "6d4e5f60-dddd-4d41-9d86-304c5f6e7d80"


@contextlib.asynccontextmanager
async def storage_host(tmp_path: Path, export: Path) -> AsyncIterator[StorageHost]:
    """A daemon that is SPM of a pool with one active file domain (in ``export``) holding
    volume VOL."""
    host = StorageHost(tmp_path / "b-storage", start_sanlock(tmp_path / "sanlock"),
                       tmp_path / "hooks")
    export.mkdir()
    try:
        await host.start()
        await make_pool(host, export)  # pool SP, master domain SD, host id 1
        await host.ok("StoragePool.spmStart", storagepoolID=SP)
        task = await host.ok("Volume.create", storagepoolID=SP, storagedomainID=SD,
                             imageID=IMG, volumeID=VOL, volFormat=4, preallocate=2,
                             size=str(64 << 20))
        assert (await host.wait_task(task))["taskResult"] == "success"
        yield host
    finally:
        await host.close()
        host.sanlock.stop()


async def test_vm_disk_places_it_on_a_host_that_sees_the_domain_and_goes_by_ids(
        tmp_path: Path) -> None:
    export = tmp_path / "export"
    async with storage_host(tmp_path, export) as st, dev_hosts(tmp_path, 1) as (plain,), \
            running_engine(tmp_path / "engine") as engine:
        assert st.daemon is not None
        await enroll(engine, "a-plain", plain)
        await enroll(engine, "b-storage", DevHost(st.root, st.daemon.port, st.daemon))
        if not await vm_verbs_available(engine, "a-plain"):
            pytest.skip("the daemon has no VM verbs yet")
        storage, other = engine.host("b-storage"), engine.host("a-plain")
        await engine.ctx.wait_until(lambda: storage.storage_domains == [SD], WAIT)
        assert other.storage_domains == []

        vm = await engine.vms.create("db", 64, disks=[
            {"domainID": SD, "poolID": SP, "imageID": IMG, "volumeID": VOL, "format": "cow"}])
        await engine.set_maintenance("b-storage", True)
        with pytest.raises(NoHostAvailable) as err:
            await engine.vms.start("db")
        assert err.value.details["filtered"] == {
            "a-plain": f"does not see storage domain(s) {SD}", "b-storage": "in maintenance"}

        await engine.set_maintenance("b-storage", False)
        # Even distribution alone would pick a-plain (both empty, first by name).
        await engine.vms.start("db")
        assert vm.host_id == storage.id
        await engine.ctx.wait_until(lambda: vm.status in RUNNING, WAIT)
        # The host resolved the IDs to the very volume the SPM created.
        monitor = engine.ctx.monitors[storage.id]
        xml = (await monitor.call("Host.dumpxmls", {"vmList": [vm.id]}))[vm.id]
        disk = etree.fromstring(xml.encode()).find("devices/disk")
        assert disk is not None
        source = Path(disk.find("source").get("file"))
        assert source.parts[-3:] == (SD, IMG, VOL)
        assert source.resolve() == (export / SD / "images" / IMG / VOL).resolve()
        assert disk.find("driver").get("type") == "qcow2"
        assert vm.disks[0]["deviceId"] in disk.find("alias").get("name")
        await engine.vms.stop("db")
