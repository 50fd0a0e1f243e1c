"""StorageService: the composition root of the storage domain, and its one facade.

Builds the parts (connections, sanlock, monitor, pools) from the configuration and offers
the operations the API verbs call, as coroutines: each runs its blocking work on the
executor (with the storage call timeout) and never blocks the loop. Keeps the little state
a host has: connected pools, active (monitored) domains. Everything else is read from
storage each time. Must not import the RPC or transport layers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from storage import constants as sc
from storage.connections import Connections, ConnectionSpec, mount_name
from storage.domain import DomainSpec, FileStorageDomain
from storage.image import Images
from storage.locks import DomainLocks, Geometry
from storage.monitor import DomainMonitor
from storage.pool import ConnectedPool, create_pool
from storage.sanlock_adapter import Sanlock
from storage.validation import check_uuid
from storage.volume import Volumes, VolumeSpec
from vdsm_py.config import Config
from vdsm_py.errors import (
    SpmStatusError,
    StorageDomainAlreadyExists,
    StorageDomainDoesNotExist,
    StorageDomainNotActive,
    StorageDomainNotInPool,
    StoragePoolNotConnected,
    StoragePoolUnknown,
    VdsmError,
)
from vdsm_py.events import EventBus
from vdsm_py.executor import Executor

log = logging.getLogger("vdsm_py.storage")

T = TypeVar("T")


class StorageService:
    def __init__(
        self,
        *,
        root: Path,
        run_dir: Path,
        executor: Executor,
        events: EventBus | None,
        sanlock: Sanlock | None,
        monitor: DomainMonitor,
        io_timeout: int = 10,
        host_id_timeout: float = 120.0,
        qemu_timeout: float = 300.0,
        call_timeout: float = 600.0,
    ) -> None:
        self.root = root
        self.run_dir = run_dir
        self.executor = executor
        self.events = events
        self.sanlock = sanlock
        self.monitor = monitor
        self.connections = Connections(root)
        self.io_timeout = io_timeout
        self.host_id_timeout = host_id_timeout
        self.qemu_timeout = qemu_timeout
        self.call_timeout = call_timeout
        self.pools: dict[str, ConnectedPool] = {}

    @classmethod
    def build(cls, config: Config, executor: Executor, events: EventBus | None) -> StorageService:
        cfg = config.storage
        run_dir = Path(cfg.sanlock_run_dir) if cfg.sanlock_run_dir else None
        try:
            sanlock: Sanlock | None = Sanlock(run_dir)
        except ImportError as exc:
            log.error("sanlock unavailable, domains will have no cluster locks: %s", exc)
            sanlock = None
        monitor = DomainMonitor(executor, interval=cfg.monitor_interval,
                                check_timeout=cfg.check_timeout)
        return cls(root=cfg.data_center, run_dir=config.daemon.run_dir / "storage",
                   executor=executor, events=events, sanlock=sanlock, monitor=monitor,
                   io_timeout=cfg.sanlock_io_timeout, host_id_timeout=cfg.host_id_timeout,
                   qemu_timeout=cfg.qemu_img_timeout, call_timeout=cfg.call_timeout)

    async def start(self) -> None:
        await self._run(lambda: self.run_dir.mkdir(parents=True, exist_ok=True), "storage start")

    async def stop(self) -> None:
        await self.monitor.stop()
        for sp_uuid in list(self.pools):
            try:
                await self.disconnect_pool(sp_uuid)
            except VdsmError as exc:
                log.error("cannot disconnect pool %s at stop: %s", sp_uuid, exc)

    async def _run(self, fn: Callable[[], T], name: str) -> T:
        return await self.executor.run(fn, timeout=self.call_timeout, name=name)

    # -- lookup (blocking helpers) -------------------------------------------------------

    def _locks_factory(self, sd_uuid: str, md_dir: Path, geo: Geometry) -> DomainLocks | None:
        return DomainLocks(self.sanlock, sd_uuid, md_dir, geo) if self.sanlock else None

    def find_domain(self, sd_uuid: str) -> FileStorageDomain:
        check_uuid("sdUUID", sd_uuid)
        for mount in self.connections.mount_points():
            root = mount / sd_uuid
            if (root / sc.DOMAIN_META_DATA).is_dir():
                dom = FileStorageDomain(root, sd_uuid)
                if self.sanlock is not None:
                    try:
                        geometry = dom.geometry(self.io_timeout)
                    except VdsmError as exc:  # bad metadata: every use will refuse it
                        log.warning("domain %s: %s", sd_uuid, exc)
                        geometry = Geometry(io_timeout=self.io_timeout)
                    dom.locks = DomainLocks(self.sanlock, sd_uuid, dom.md_dir, geometry)
                return dom
        raise StorageDomainDoesNotExist(f"Storage domain does not exist: {sd_uuid}")

    def _pool_of(self, dom: FileStorageDomain, sp_uuid: str | None) -> ConnectedPool | None:
        """The connected pool the domain belongs to (checked against ``sp_uuid``)."""
        pools = dom.pools()
        if sp_uuid and sp_uuid != sc.BLANK_UUID and pools and sp_uuid not in pools:
            raise StorageDomainNotInPool(
                f"domain {dom.sd_uuid} belongs to pool {pools[0]}, not {sp_uuid}")
        if not pools:
            return None
        pool = self.pools.get(pools[0])
        if pool is None:
            raise StoragePoolNotConnected(f"pool {pools[0]} of domain {dom.sd_uuid} is not "
                                          "connected on this host")
        return pool

    def _writable(self, sd_uuid: str, sp_uuid: str | None) -> FileStorageDomain:
        """A domain metadata may be changed in: unattached, or attached and we are SPM."""
        dom = self.find_domain(sd_uuid)
        pool = self._pool_of(dom, sp_uuid)
        if pool is not None:
            pool.require_spm()
            dom = pool.domain(sd_uuid)
        return dom

    # -- connections ---------------------------------------------------------------------

    async def connect_storage_server(self, specs: list[ConnectionSpec]) -> list[dict[str, Any]]:
        def connect() -> list[dict[str, Any]]:
            result = []
            for spec in specs:
                try:
                    self.connections.connect(spec)
                    result.append({"id": spec.id, "status": 0})
                except VdsmError as exc:
                    log.warning("connection %s failed: %s", spec.id, exc)
                    result.append({"id": spec.id, "status": exc.code})
            return result
        return await self._run(connect, "connectStorageServer")

    async def disconnect_storage_server(self, specs: list[ConnectionSpec]) -> list[dict[str, Any]]:
        def disconnect() -> list[dict[str, Any]]:
            result = []
            for spec in specs:
                try:
                    self.connections.disconnect(spec)
                    result.append({"id": spec.id, "status": 0})
                except VdsmError as exc:
                    result.append({"id": spec.id, "status": exc.code})
            return result
        return await self._run(disconnect, "disconnectStorageServer")

    # -- domains -------------------------------------------------------------------------

    async def create_domain(self, spec: DomainSpec) -> None:
        def create() -> None:
            check_uuid("sdUUID", spec.sd_uuid)
            try:
                self.find_domain(spec.sd_uuid)
            except StorageDomainDoesNotExist:
                pass
            else:
                raise StorageDomainAlreadyExists(f"Storage domain {spec.sd_uuid} exists")
            mount = self.connections.mnt_dir / _mount_of(spec)
            if not mount.is_dir():
                raise StorageDomainDoesNotExist(
                    f"{spec.remote_path} is not connected (connectStorageServer first)")
            FileStorageDomain.create(mount, spec, io_timeout=self.io_timeout,
                                     locks_factory=self._locks_factory)
        await self._run(create, "StorageDomain.create")

    async def domain_call(self, sd_uuid: str, fn: Callable[[FileStorageDomain], T]) -> T:
        return await self._run(lambda: fn(self.find_domain(sd_uuid)), "storage domain")

    async def activate_domain(self, sd_uuid: str) -> None:
        """Start monitoring the domain (and joining its lockspace when a pool is connected)."""
        dom = await self._run(lambda: self.find_domain(sd_uuid), "find domain")
        pool = next((p for p in self.pools.values() if sd_uuid in p.domains), None)
        probe = None
        if pool is not None and dom.locks is not None:
            locks, host_id = dom.locks, pool.host_id
            probe = lambda: locks.host_id_state(host_id)
        self.monitor.start_monitoring(sd_uuid, dom.metadata_path, probe)

    async def deactivate_domain(self, sd_uuid: str) -> None:
        if sd_uuid not in self.monitor.monitored():
            raise StorageDomainNotActive(f"Storage domain {sd_uuid} is not active")
        await self.monitor.stop_monitoring(sd_uuid)

    def repo_stats(self) -> dict[str, dict[str, Any]]:
        return self.monitor.repo_stats()

    async def list_domains(self) -> list[str]:
        def scan() -> list[str]:
            found = set()
            for mount in self.connections.mount_points():
                try:
                    names = [p.name for p in mount.iterdir()]
                except OSError as exc:
                    log.warning("getStorageDomainsList: cannot list mount %s: %s", mount, exc)
                    continue
                for name in names:
                    if (mount / name / sc.DOMAIN_META_DATA).is_dir():
                        found.add(name)
            return sorted(found)
        return await self._run(scan, "getStorageDomains")

    # -- volumes and images --------------------------------------------------------------

    async def volume_call(self, sd_uuid: str, sp_uuid: str | None,
                          fn: Callable[[Volumes], T], *, write: bool = False) -> T:
        def call() -> T:
            dom = self._writable(sd_uuid, sp_uuid) if write else self.find_domain(sd_uuid)
            return fn(Volumes(dom, qemu_timeout=self.qemu_timeout))
        return await self._run(call, "storage volume")

    async def create_volume(self, sd_uuid: str, sp_uuid: str | None, spec: VolumeSpec) -> None:
        await self.volume_call(sd_uuid, sp_uuid, lambda v: v.create(spec), write=True)

    async def image_call(self, sd_uuid: str, sp_uuid: str | None,
                         fn: Callable[[Images], T], *, write: bool = False) -> T:
        def call() -> T:
            dom = self._writable(sd_uuid, sp_uuid) if write else self.find_domain(sd_uuid)
            return fn(Images(Volumes(dom, qemu_timeout=self.qemu_timeout), self.run_dir))
        return await self._run(call, "storage image")

    # -- pools ---------------------------------------------------------------------------

    async def create_pool(self, sp_uuid: str, name: str, msd_uuid: str,
                          domains: list[str], master_version: int) -> None:
        def create() -> None:
            master = self.find_domain(msd_uuid)
            others = [self.find_domain(d) for d in domains if d != msd_uuid]
            create_pool(sp_uuid, name, master, others, master_version)
        await self._run(create, "StoragePool.create")

    async def connect_pool(self, sp_uuid: str, host_id: int, msd_uuid: str,
                           master_version: int) -> None:
        if sp_uuid in self.pools:
            return
        def connect() -> ConnectedPool:
            master = self.find_domain(msd_uuid)
            return ConnectedPool.connect(sp_uuid, host_id, master, master_version,
                                         self.find_domain)
        pool = await self._run(connect, "StoragePool.connect")
        self.pools[sp_uuid] = pool
        for sd_uuid in pool.domains:
            await self.activate_domain(sd_uuid)

    def pool(self, sp_uuid: str) -> ConnectedPool:
        check_uuid("storagepoolID", sp_uuid)
        pool = self.pools.get(sp_uuid)
        if pool is None:
            raise StoragePoolUnknown(f"Unknown pool id, pool not connected: {sp_uuid}")
        return pool

    async def disconnect_pool(self, sp_uuid: str) -> None:
        pool = self.pool(sp_uuid)
        for sd_uuid in pool.domains:
            await self.monitor.stop_monitoring(sd_uuid)
        await self._run(pool.disconnect, "StoragePool.disconnect")
        del self.pools[sp_uuid]

    async def spm_start(self, sp_uuid: str) -> dict[str, Any]:
        pool = self.pool(sp_uuid)
        return await self._run(lambda: pool.spm_start(self.host_id_timeout), "spmStart")

    async def spm_stop(self, sp_uuid: str) -> None:
        pool = self.pool(sp_uuid)
        if not pool.spm:
            raise SpmStatusError(f"this host is not the SPM of pool {sp_uuid}")
        await self._run(pool.spm_stop, "spmStop")

    async def pool_call(self, sp_uuid: str, fn: Callable[[ConnectedPool], T]) -> T:
        pool = self.pool(sp_uuid)
        return await self._run(lambda: fn(pool), "storage pool")


def _mount_of(spec: DomainSpec) -> str:
    return mount_name(spec.remote_path)
