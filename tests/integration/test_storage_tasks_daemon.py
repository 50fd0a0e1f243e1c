"""SPM tasks through real daemons: SIGKILL mid-task, restart, spmStart recovers; two hosts
(two daemons, two sanlock daemons, one shared export) contend for the SPM.

A task is held at a step by the test-only ``[storage] task_hook_dir`` FIFO: the test knows
the step is reached when it can open the FIFO for writing, then kills the daemon there.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage import qemuimg
from tests.integration.sanlock_daemon import start_sanlock
from tests.integration.storage_host import (
    StorageHost,
    resources,
    wait_no_resources,
    wait_paused,
)
from vdsm_py.client.stream import EventStream

SP = "5a1b2c3d-aaaa-4a1e-8a53-0d1f2c3b4a5d"
SD = "5b2c3d4e-bbbb-4b2f-9b64-1e2a3d4c5b6e"
IMG = "5c3d4e5f-cccc-4c30-8c75-2f3b4e5d6c7f"
V1 = "5d4e5f60-dddd-4d41-9d86-304c5f6e7d80"
V2 = "5e5f6071-eeee-4e52-ae97-415d60718e91"
V3 = "5f607182-ffff-4f63-8fa8-526e71829fa2"
MB = 1 << 20
IDS = {"storagepoolID": SP, "storagedomainID": SD, "imageID": IMG}
NEW = {**IDS, "volFormat": 4, "preallocate": 2, "size": str(64 * MB)}


@pytest.fixture
async def hosts(tmp_path) -> AsyncIterator:
    made: list[StorageHost] = []

    def make(name: str) -> StorageHost:
        host = StorageHost(tmp_path / name, start_sanlock(tmp_path / f"sanlock-{name}"),
                           tmp_path / f"hooks-{name}")
        made.append(host)
        return host

    try:
        yield make
    finally:
        for host in made:
            await host.close()
            host.sanlock.stop()


async def make_pool(host: StorageHost, export: Path) -> None:
    conn = [{"id": "c1", "connection": str(export)}]
    await host.ok("StoragePool.connectStorageServer", storagepoolID=SP, domainType=4,
                  connectionParams=conn)
    await host.ok("StorageDomain.create", storagedomainID=SD, domainType=4,
                  typeArgs=str(export), name="data")
    await host.ok("StoragePool.create", storagepoolID=SP, name="dc", masterSdUUID=SD,
                  masterVersion=1, domainList=[SD])
    await host.join_pool(export, SP, SD, 1)


def image_files(export: Path) -> list[str]:
    d = export / SD / "images" / IMG
    return sorted(os.listdir(d)) if d.exists() else []


async def task_end_event(events: EventStream, task_id: str) -> dict[str, Any]:
    """The status in the ``|storage|task_status|<taskID>`` event of ``task_id``."""
    async with asyncio.timeout(60):
        async for method, params in events:
            if method == f"|storage|task_status|{task_id}":
                return params[task_id]  # type: ignore[no-any-return]
    raise AssertionError(f"the event stream ended before task {task_id} did")


def task_dirs(export: Path) -> list[str]:
    return sorted(os.listdir(export / SD / "master" / "tasks"))


async def test_killed_mid_create_and_extend_the_restarted_spm_rolls_back_and_forward(
        tmp_path, hosts):
    export = tmp_path / "export"
    export.mkdir()
    host = hosts("a")
    await host.start()
    await make_pool(host, export)
    assert await host.error("Volume.create", volumeID=V1, **NEW) == 654  # not SPM yet
    await host.ok("StoragePool.spmStart", storagepoolID=SP)
    assert host.client is not None
    events = await host.client.subscribe_events(confirm=True)
    task_id = await host.ok("Volume.create", volumeID=V1, **NEW)
    ended = await task_end_event(events, task_id)  # its end, published: no polling needed
    assert ended["taskResult"] == "success"
    assert await host.ok("Task.getStatus", taskID=task_id) == ended
    await host.ok("Task.clear", taskID=task_id)

    # an injected fault in a live task: rolled back at once, nothing left
    fifo = host.pause_before("mark_parent_internal")
    task_id = await host.ok("Volume.create", volumeID=V2, srcVolUUID=V1, **NEW)
    fd = wait_paused(fifo)
    os.write(fd, b"fail")
    os.close(fd)
    status = await host.wait_task(task_id)
    assert status["taskResult"] == "cleanSuccess" and "fault injected" in status["message"]
    assert image_files(export) == [V1, V1 + ".lease", V1 + ".meta"]
    await host.ok("Task.clear", taskID=task_id)

    # SIGKILL with the snapshot volume half made: data, lease and ILLEGAL .meta, the parent
    # still a leaf
    create_id = await host.ok("Volume.create", volumeID=V2, srcVolUUID=V1, **NEW)
    fd = wait_paused(fifo)
    assert image_files(export) == sorted([V1, V1 + ".lease", V1 + ".meta", V2, V2 + ".lease",
                                          V2 + ".meta"])
    assert (await host.ok("Task.getStatus", taskID=create_id))["taskState"] == "running"
    assert (await host.ok("Task.getInfo", taskID=create_id))["verb"] == "createVolume"
    await host.kill()
    os.close(fd)
    fifo.unlink()
    assert task_dirs(export) == [create_id]  # the record outlives the daemon

    await host.start()
    await host.join_pool(export, SP, SD, 1)
    assert await host.error("Task.getStatus", taskID=create_id) == 401  # not SPM: unknown
    assert host.client is not None
    events = await host.client.subscribe_events(confirm=True)
    await host.ok("StoragePool.spmStart", storagepoolID=SP)
    status = await host.ok("Task.getStatus", taskID=create_id)
    assert status["taskState"] == "finished" and status["taskResult"] == "cleanSuccess"
    assert status["code"] == 411
    assert await task_end_event(events, create_id) == status  # recovery's end, published
    assert image_files(export) == [V1, V1 + ".lease", V1 + ".meta"]
    info = await host.ok("Volume.getInfo", volumeID=V1, **IDS)
    assert info["voltype"] == "LEAF" and info["legality"] == "LEGAL"
    assert list(await host.ok("Host.getAllTasksStatuses")) == [create_id]
    await host.ok("Task.clear", taskID=create_id)
    assert task_dirs(export) == []

    # SIGKILL during an extend that holds the volume's lease: completed on recovery
    fifo = host.pause_before("resize_data")
    extend_id = await host.ok("Volume.extendSize", volumeID=V1, newSize=str(128 * MB), **IDS)
    fd = wait_paused(fifo)
    assert V1 in resources(host.sanlock.client_status(), SD)
    assert sorted(resources(host.sanlock.client_status(), SD)) == sorted(["SDM", V1])
    await host.kill()
    os.close(fd)
    fifo.unlink()
    wait_no_resources(host.sanlock, SD)  # sanlock freed both with the process

    await host.start()
    await host.join_pool(export, SP, SD, 1)
    await host.ok("StoragePool.spmStart", storagepoolID=SP)
    status = await host.ok("Task.getStatus", taskID=extend_id)
    assert status["taskResult"] == "success", status
    assert "completed by recovery" in status["message"]
    assert (await host.ok("Volume.getInfo", volumeID=V1, **IDS))["capacity"] == str(128 * MB)
    (image,) = qemuimg.info(export / SD / "images" / IMG / V1)
    assert image.virtual_size == 128 * MB
    assert resources(host.sanlock.client_status(), SD) == ["SDM"]  # no stale volume lease
    await host.ok("Task.clear", taskID=extend_id)

    await host.ok("StoragePool.spmStop", storagepoolID=SP)
    await host.ok("StoragePool.disconnect", storagepoolID=SP, hostID=1)


async def test_one_spm_of_two_hosts_and_the_survivor_recovers_the_dead_ones_task(
        tmp_path, hosts):
    export = tmp_path / "export"
    export.mkdir()
    a, b = hosts("a"), hosts("b")
    await a.start()
    await b.start()
    await make_pool(a, export)
    await a.ok("StoragePool.spmStart", storagepoolID=SP)
    await b.join_pool(export, SP, SD, 2)

    assert await b.error("StoragePool.spmStart", storagepoolID=SP) == 651
    assert await b.error("Volume.create", volumeID=V1, **NEW) == 654
    assert await b.ok("StoragePool.getSpmStatus", storagepoolID=SP) == \
        {"spmStatus": "Free", "spmLver": 0, "spmId": 1}
    assert (await a.ok("StoragePool.getSpmStatus", storagepoolID=SP))["spmStatus"] == "SPM"
    assert resources(a.sanlock.client_status(), SD) == ["SDM"]
    assert resources(b.sanlock.client_status(), SD) == []

    # the SPM dies in the middle of a create; its lease goes with it
    status = await a.wait_task(await a.ok("Volume.create", volumeID=V1, **NEW))
    assert status["taskResult"] == "success"
    fifo = a.pause_before("create_volume_files")
    task_id = await a.ok("Volume.create", volumeID=V3, srcVolUUID=V1, **NEW)
    fd = wait_paused(fifo)
    await a.kill()
    os.close(fd)
    wait_no_resources(a.sanlock, SD)

    spm = await b.ok("StoragePool.spmStart", storagepoolID=SP)
    assert spm == {"spmStatus": "SPM", "spmLver": 1, "spmId": 2}
    assert resources(b.sanlock.client_status(), SD) == ["SDM"]
    # the dead SPM's task was persisted on the master domain: the new SPM rolled it back
    status = await b.ok("Task.getStatus", taskID=task_id)
    assert status["taskResult"] == "cleanSuccess" and status["code"] == 411
    assert image_files(export) == [V1, V1 + ".lease", V1 + ".meta"]
    status = await b.wait_task(await b.ok("Volume.create", volumeID=V2, srcVolUUID=V1, **NEW))
    assert status["taskResult"] == "success"
    assert (await b.ok("Volume.getInfo", volumeID=V1, **IDS))["voltype"] == "INTERNAL"
    for tid in await b.ok("Host.getAllTasksStatuses"):
        await b.ok("Task.clear", taskID=tid)
    await b.ok("StoragePool.spmStop", storagepoolID=SP)
    await b.ok("StoragePool.disconnect", storagepoolID=SP, hostID=2)
