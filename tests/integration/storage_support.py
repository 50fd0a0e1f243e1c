"""Shared pieces of the storage integration tests: a StorageService wired to a real
Dispatcher (all storage schema files, a real sanlock daemon), and a loop-backed file system.

Used by test_storage_image_api, test_storage_posixfs and test_storage_nfs. Everything started
here is stopped by the context managers, even when the test fails.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import yaml

from storage.monitor import DomainMonitor
from storage.sanlock_adapter import Sanlock
from storage.service import StorageService
from tests.integration.sanlock_daemon import shared_sanlock
from tests.integration.test_storage_api import Client
from vdsm_py.api.storage import register_all
from vdsm_py.executor import Executor
from vdsm_py.rpc.dispatch import Dispatcher
from vdsm_py.rpc.schema import SCHEMA_DIR, Schema


def schema_files() -> list[Path]:
    """Every schema file of the storage verbs (``host_storage.yml`` and ``storage_*.yml``)."""
    return [SCHEMA_DIR / "host_storage.yml", *sorted(SCHEMA_DIR.glob("storage_*.yml"))]


@contextlib.asynccontextmanager
async def storage_rpc(tmp_path: Path, sanlock_base: Path, *,
                      use_sanlock: bool = True) -> AsyncIterator[tuple[Client, StorageService]]:
    """A storage service under ``tmp_path`` (data center in ``dc``) and a client for it."""
    executor = Executor(4, 60, name="storage-test")
    sanlock = Sanlock(shared_sanlock(sanlock_base).run_dir) if use_sanlock else None
    service = StorageService(
        root=tmp_path / "dc", run_dir=tmp_path / "run", executor=executor, events=None,
        sanlock=sanlock, monitor=DomainMonitor(executor, interval=0.5, check_timeout=10),
        io_timeout=1, host_id_timeout=60)
    schema = Schema.from_documents(yaml.safe_load(f.read_text()) for f in schema_files())
    dispatcher = Dispatcher(schema, executor, call_timeout=60)
    register_all(dispatcher, service)
    await service.start()
    try:
        yield Client(dispatcher), service
    finally:
        await service.stop()
        executor.close()


@contextlib.contextmanager
def loop_device(image: Path, size_mb: int, mkfs: list[str]) -> Iterator[str]:
    """A fresh ``size_mb`` image formatted with ``mkfs`` (argv without the device), attached
    to a free loop device; detached at the end."""
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run([*mkfs, str(image)], check=True, capture_output=True)
    dev = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


async def become_spm(client: Client, sp_uuid: str, master: str, domains: list[str]) -> None:
    """Attach ``domains`` to a new pool, connect as host 1 and take the SPM role."""
    await client.ok("StoragePool.create", storagepoolID=sp_uuid, name="dc", masterSdUUID=master,
                    masterVersion=1, domainList=domains)
    await client.ok("StoragePool.connect", storagepoolID=sp_uuid, hostID=1, masterSdUUID=master,
                    masterVersion=1)
    await client.ok("StoragePool.spmStart", storagepoolID=sp_uuid)
