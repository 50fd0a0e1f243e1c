"""A real ``vdsmd --dev`` host with storage: its own sanlock daemon, a shared export directory,
and (optionally) the test-only task hook directory. Used by the SPM task tests.

Each host is a daemon process plus a sanlock daemon of its own (two hosts = two sanlock
daemons sharing the storage, as two machines would). The config is written before the first
start; restarts keep it. Everything is stopped by PID by the caller.
"""

from __future__ import annotations

import asyncio
import configparser
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.daemon_proc import DaemonProcess, start_daemon
from tests.integration.sanlock_daemon import SanlockDaemon
from vdsm_py.client.aio import Client
from vdsm_py.client.errors import RpcError
from vdsm_py.devhost import CONF_NAME, dev_settings

BLANK = "00000000-0000-0000-0000-000000000000"


@dataclass
class StorageHost:
    root: Path
    sanlock: SanlockDaemon
    hook_dir: Path
    daemon: DaemonProcess | None = None
    client: Client | None = None

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.hook_dir.mkdir(parents=True, exist_ok=True)
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_dict(dev_settings(self.root.resolve()))
        parser.read_dict({"storage": {
            "sanlock_run_dir": str(self.sanlock.run_dir), "sanlock_io_timeout": "1",
            "monitor_interval": "1", "host_id_timeout": "60",
            "task_hook_dir": str(self.hook_dir)}})
        with open(self.root / CONF_NAME, "w", encoding="utf-8") as f:
            parser.write(f)

    async def start(self) -> None:
        if not (self.root / CONF_NAME).exists():
            self.write_config()
        self.daemon = await asyncio.to_thread(start_daemon, self.root, env=self.sanlock.env)
        self.client = await Client.connect("127.0.0.1", self.daemon.port,
                                           ssl_context=self.daemon.client_ssl_context())

    async def kill(self) -> None:
        """SIGKILL the daemon (no cleanup of any kind runs in it)."""
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.daemon is not None:
            self.daemon.close(signal.SIGKILL)
            self.daemon = None

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None

    async def ok(self, method: str, **params: Any) -> Any:
        assert self.client is not None
        return await self.client.call(method, params, timeout=120)

    async def error(self, method: str, **params: Any) -> int:
        try:
            answer = await self.ok(method, **params)
        except RpcError as exc:
            return exc.code
        raise AssertionError(f"{method} succeeded: {answer}")

    async def wait_task(self, task_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (status := await self.ok("Task.getStatus", taskID=task_id))["taskState"] \
                != "finished":
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.05)
        return status

    async def join_pool(self, export: Path, sp: str, sd: str, host_id: int) -> None:
        """Connect the export and the pool; wait for the host id in the domain's lockspace."""
        conn = [{"id": "c1", "connection": str(export)}]
        assert await self.ok("StoragePool.connectStorageServer", storagepoolID=BLANK,
                             domainType=4, connectionParams=conn) == [{"id": "c1", "status": 0}]
        await self.ok("StoragePool.connect", storagepoolID=sp, hostID=host_id,
                      masterSdUUID=sd, masterVersion=1)
        deadline = time.monotonic() + 60
        while not (await self.ok("Host.getStorageRepoStats")).get(sd, {}).get("acquired"):
            assert time.monotonic() < deadline, "host id not acquired"
            await asyncio.sleep(0.2)

    def pause_before(self, action: str) -> Path:
        """Make every task stop before steps named ``action`` (see task_hook_dir)."""
        fifo = self.hook_dir / action
        os.mkfifo(fifo)
        return fifo


def wait_paused(fifo: Path, timeout: float = 60) -> int:
    """Block until a task waits on ``fifo``; return the write end (close it to release)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            assert time.monotonic() < deadline, f"no task reached {fifo.name}"
            time.sleep(0.05)


def resources(status: str, lockspace: str) -> list[str]:
    """The ``r`` lines of ``sanlock client status`` for one lockspace: resource names."""
    names = []
    for line in status.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "r" and parts[1].startswith(lockspace + ":"):
            names.append(parts[1].split(":")[1])
    return names


def wait_no_resources(sanlock: SanlockDaemon, lockspace: str, timeout: float = 60) -> None:
    """sanlock frees a dead process's leases shortly after it notices the death."""
    deadline = time.monotonic() + timeout
    while held := resources(sanlock.client_status(), lockspace):
        assert time.monotonic() < deadline, f"leases still held: {held}"
        time.sleep(0.1)
