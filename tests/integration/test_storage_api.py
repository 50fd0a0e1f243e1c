"""Storage verbs through the real Dispatcher (JSON in, JSON out) with a real sanlock daemon,
real qemu-img and a local directory as the storage server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest
import yaml

from storage.monitor import DomainMonitor
from storage.sanlock_adapter import Sanlock
from storage.service import StorageService
from tests.integration.sanlock_daemon import shared_sanlock
from vdsm_py.api.storage import register_all
from vdsm_py.events import Event, EventBus
from vdsm_py.executor import Executor
from vdsm_py.rpc.dispatch import CallContext, Dispatcher
from vdsm_py.rpc.schema import SCHEMA_DIR, Schema

CTX = CallContext(client_id="c", peer="127.0.0.1:1", flow_id="flow-storage")
FILES = ("host_storage.yml", "storage_domain.yml", "storage_pool.yml",
         "storage_volume.yml", "storage_image.yml", "storage_task.yml")
SP = "0a1b2c3d-aaaa-4a1e-8a53-0d1f2c3b4a5d"
SD = "1b2c3d4e-bbbb-4b2f-9b64-1e2a3d4c5b6e"
IMG = "2c3d4e5f-cccc-4c30-8c75-2f3b4e5d6c7f"
V1 = "3d4e5f60-dddd-4d41-9d86-304c5f6e7d80"
V2 = "4e5f6071-eeee-4e52-ae97-415d60718e91"
BLANK = "00000000-0000-0000-0000-000000000000"


class Client:
    def __init__(self, dispatcher: Dispatcher, events: EventBus | None = None):
        self.dispatcher = dispatcher
        self.n = 0
        self.events: list[Event] | None = None  # the bus's events, when given one
        if events is not None:
            self.events = []
            events.subscribe(self.events.append)

    async def call(self, method: str, **params):
        self.n += 1
        body = orjson.dumps({"jsonrpc": "2.0", "id": self.n, "method": method, "params": params})
        return orjson.loads(await self.dispatcher.handle(body, CTX))

    async def ok(self, method: str, **params):
        answer = await self.call(method, **params)
        assert "error" not in answer, answer
        return answer["result"]

    async def error(self, method: str, **params) -> int:
        answer = await self.call(method, **params)
        assert "error" in answer, answer
        return answer["error"]["code"]

    async def task(self, method: str, **params) -> dict:
        """Run an SPM task verb and wait for its end; return its final TaskStatus."""
        task_id = await self.ok(method, **params)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while (status := await self.ok("Task.getStatus", taskID=task_id))["taskState"] \
                != "finished":
            assert loop.time() < deadline, status
            await asyncio.sleep(0.05)
        if self.events is None:
            return status
        # its end is also published, with the status Task.getStatus answers from then on
        method = f"|storage|task_status|{task_id}"
        while not (ends := [e.params for e in self.events if e.method == method]):
            assert loop.time() < deadline, f"no {method} event"
            await asyncio.sleep(0.01)
        assert len(ends) == 1 and ends[0][task_id] == status, ends
        return status

    async def task_ok(self, method: str, **params) -> None:
        status = await self.task(method, **params)
        assert status["taskResult"] == "success", status
        await self.ok("Task.clear", taskID=status["taskID"])


@pytest.fixture
async def env(tmp_path, tmp_path_factory):
    daemon = shared_sanlock(tmp_path_factory.getbasetemp())
    executor = Executor(4, 60, name="storage-test")
    events = EventBus(asyncio.get_running_loop())
    service = StorageService(
        root=tmp_path / "dc", run_dir=tmp_path / "run", executor=executor, events=events,
        sanlock=Sanlock(daemon.run_dir),
        monitor=DomainMonitor(executor, interval=0.5, check_timeout=10),
        io_timeout=1, host_id_timeout=60)
    schema = Schema.from_documents(yaml.safe_load((SCHEMA_DIR / f).read_text()) for f in FILES)
    dispatcher = Dispatcher(schema, executor, call_timeout=60)
    register_all(dispatcher, service)
    await service.start()
    (tmp_path / "export").mkdir()
    try:
        yield Client(dispatcher, events), service, tmp_path
    finally:
        await service.stop()
        executor.close()
        assert service.sanlock is not None and service.sanlock.held() == []


async def wait_for(predicate, timeout=60.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.2)


async def test_domain_pool_spm_volume_lifecycle(env):
    client, _service, tmp = env
    export = str(tmp / "export")
    conn = [{"id": "c1", "connection": export}]
    assert await client.ok("StoragePool.connectStorageServer", storagepoolID=BLANK,
                           domainType=4, connectionParams=conn) == [{"id": "c1", "status": 0}]
    await client.ok("StorageDomain.create", storagedomainID=SD, domainType=4, typeArgs=export,
                    name="data")
    assert await client.ok("Host.getStorageDomains") == [SD]
    info = await client.ok("StorageDomain.getInfo", storagedomainID=SD)
    assert info["uuid"] == SD and info["type"] == "LOCALFS" and info["role"] == "Regular"

    await client.ok("StoragePool.create", storagepoolID=SP, name="dc1", masterSdUUID=SD,
                    masterVersion=1, domainList=[SD])
    await client.ok("StoragePool.connect", storagepoolID=SP, hostID=1, masterSdUUID=SD,
                    masterVersion=1)
    stats = (await client.ok("Host.getStorageRepoStats"))
    assert SD in stats

    async def acquired():
        return (await client.ok("Host.getStorageRepoStats"))[SD]["acquired"]
    await wait_for(acquired)
    assert (await client.ok("Host.getStorageRepoStats"))[SD]["valid"] is True

    # not SPM yet: metadata changes are refused
    vol = {"storagepoolID": SP, "storagedomainID": SD, "imageID": IMG, "size": str(64 << 20),
               "volFormat": 4, "preallocate": 2}
    assert await client.error("Volume.create", volumeID=V1, **vol) == 654
    spm = await client.ok("StoragePool.spmStart", storagepoolID=SP)
    assert spm == {"spmStatus": "SPM", "spmLver": 0, "spmId": 1}
    await client.task_ok("Volume.create", volumeID=V1, **vol)
    await client.task_ok("Volume.create", volumeID=V2, srcVolUUID=V1, **vol)
    assert await client.ok("StorageDomain.getVolumes", storagedomainID=SD, imageID=IMG) \
        == [V1, V2]
    ids = {"storagepoolID": SP, "storagedomainID": SD, "imageID": IMG}
    got = await client.ok("Volume.getInfo", volumeID=V2, **ids)
    assert got["parent"] == V1 and got["format"] == "COW" and got["legality"] == "LEGAL"
    prepared = await client.ok("Image.prepare", volumeID=V2, **ids)
    assert os.path.exists(prepared["path"])
    assert [v["volumeID"] for v in prepared["imgVolumesInfo"]] == [V1, V2]
    await client.ok("Image.teardown", **ids)
    await client.task_ok("Volume.extendSize", volumeID=V2, newSize=str(128 << 20), **ids)
    assert (await client.ok("Volume.getInfo", volumeID=V2, **ids))["capacity"] == str(128 << 20)
    assert await client.error("Volume.delete", volumeID=V1, **ids) == 222
    await client.task_ok("Volume.delete", volumeID=V2, **ids)
    assert await client.ok("Host.getAllTasksStatuses") == {}
    await client.ok("Image.delete", **ids)
    assert await client.ok("StorageDomain.getImages", storagedomainID=SD) == []

    status = await client.ok("StoragePool.getSpmStatus", storagepoolID=SP)
    assert status["spmId"] == 1
    await client.ok("StoragePool.spmStop", storagepoolID=SP)
    assert (await client.ok("StoragePool.getSpmStatus", storagepoolID=SP))["spmId"] == -1
    await client.ok("StoragePool.disconnect", storagepoolID=SP, hostID=1)
    assert await client.ok("Host.getStorageRepoStats") == {}


async def test_bad_input_gives_typed_errors_and_touches_nothing(env):
    client, service, tmp = env
    export = str(tmp / "export")
    assert await client.error("StorageDomain.getInfo", storagedomainID="../../etc") == 91
    assert await client.error("StorageDomain.getInfo", storagedomainID=SD) == 358
    res = await client.ok("StoragePool.connectStorageServer", storagepoolID=BLANK,
                          domainType=4, connectionParams=[{"id": "x", "connection":
                                                           str(tmp / "missing")}])
    assert res == [{"id": "x", "status": 453}]
    assert await client.error("StoragePool.connectStorageServer", storagepoolID=BLANK,
                              domainType=4, connectionParams=[{"id": "x",
                                                               "connection": "rel/path"}]) == 91
    # a domain on a path that is not connected
    assert await client.error("StorageDomain.create", storagedomainID=SD, domainType=4,
                              typeArgs=export, name="d") == 358
    await client.ok("StoragePool.connectStorageServer", storagepoolID=BLANK, domainType=4,
                    connectionParams=[{"id": "c", "connection": export}])
    assert await client.error("StorageDomain.create", storagedomainID=SD, domainType=4,
                              typeArgs=export, name="d", version=3) == 394
    assert os.listdir(export) == []
    await client.ok("StorageDomain.create", storagedomainID=SD, domainType=4, typeArgs=export,
                    name="d")
    vol = {"storagepoolID": BLANK, "storagedomainID": SD, "imageID": IMG, "volFormat": 4,
               "preallocate": 2}
    assert await client.error("Volume.create", volumeID="x/../y", size="1048576", **vol) == 91
    assert await client.error("Volume.create", volumeID=V1, size="12345", **vol) == 91
    assert await client.error("Volume.create", volumeID=V1, size="1048576",
                              srcVolUUID=V2, **vol) == 268
    assert await client.ok("StorageDomain.getImages", storagedomainID=SD) == []
    # corrupted metadata: the domain is reported invalid and not used
    md = Path(export) / SD / "dom_md" / "metadata"
    md.write_bytes(md.read_bytes().replace(b"DESCRIPTION=d", b"DESCRIPTION=e"))
    assert await client.error("StorageDomain.getInfo", storagedomainID=SD) == 752
    assert await client.error("Volume.create", volumeID=V1, size="1048576", **vol) == 752
    await client.ok("StorageDomain.activate", storagedomainID=SD)
    await service.monitor.check_once(SD)
    stats = (await client.ok("Host.getStorageRepoStats"))[SD]
    assert stats["valid"] is False and stats["code"] == 752
    await client.ok("StorageDomain.deactivate", storagedomainID=SD)
    assert await client.error("StorageDomain.deactivate", storagedomainID=SD) == 369
