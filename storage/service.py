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
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from storage import constants as sc
from storage.connections import Connections, ConnectionSpec, mount_name
from storage.domain import DomainSpec, FileStorageDomain
from storage.image import Images
from storage.image_steps import ImageOps
from storage.locks import DomainLocks, Geometry
from storage.monitor import DomainMonitor
from storage.pool import ConnectedPool, create_pool
from storage.sanlock_adapter import Sanlock
from storage.task_manager import TaskManager
from storage.task_store import TaskStore
from storage.tasks import Step, Task
from storage.validation import check_uuid
from storage.volume import Volumes
from vdsm_py.config import Config
from vdsm_py.errors import (
    CannotFormatStorageDomainInConnectedPool,
    SpmStartError,
    SpmStatusError,
    StorageDomainActive,
    StorageDomainAlreadyExists,
    StorageDomainDoesNotExist,
    StorageDomainNotActive,
    StorageDomainNotInPool,
    StoragePoolNotConnected,
    StoragePoolUnknown,
    TaskMetaDataLoadError,
    UnknownTask,
    VdsmError,
)
from vdsm_py.events import EventBus
from vdsm_py.executor import Executor

log = logging.getLogger("vdsm_py.storage")

T = TypeVar("T")

TASK_STATUS_EVENT = "|storage|task_status|"  # + taskID: a task ended (see _publish_task_end)


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
        task_workers: int = 10,
        max_tasks: int = 500,
        task_hook_dir: Path | None = None,
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
        self.task_workers = task_workers
        self.max_tasks = max_tasks
        self.task_hook_dir = task_hook_dir
        # step targets of SPM tasks: kind -> factory(pool, sdUUID) (see storage.tasks)
        self.task_targets: dict[str, Callable[[ConnectedPool, str], object]] = {
            "volume": lambda pool, sd: Volumes(pool.domain(sd), qemu_timeout=self.qemu_timeout),
        }
        self.task_targets["imageops"] = self._image_ops  # copies and merges (images helper)

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
                   qemu_timeout=cfg.qemu_img_timeout, call_timeout=cfg.call_timeout,
                   task_workers=cfg.task_workers, max_tasks=cfg.max_tasks,
                   task_hook_dir=Path(cfg.task_hook_dir) if cfg.task_hook_dir else None)

    async def start(self) -> None:
        await self._run(lambda: self.run_dir.mkdir(parents=True, exist_ok=True), "storage start")

    async def stop(self) -> None:
        await self.monitor.stop()
        for pool in self.pools.values():
            if pool.tasks is not None:  # let running tasks roll back before the SPM goes
                await self._run(partial(pool.tasks.shutdown, timeout=10.0), "stop tasks")
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
                for name in names:  # hidden: a domain being created or formatted
                    if not name.startswith(".") and \
                            (mount / name / sc.DOMAIN_META_DATA).is_dir():
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

    async def volume_task(self, sd_uuid: str, sp_uuid: str | None, verb: str,
                          plan: Callable[[Volumes], list[Step]], img_uuid: str) -> str:
        """Check now, then run ``plan``'s steps as an SPM task; return the task id."""
        return await self.spm_task(
            sd_uuid, sp_uuid, verb,
            lambda dom: plan(Volumes(dom, qemu_timeout=self.qemu_timeout)),
            [f"{sd_uuid}/{img_uuid}"])

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
        if pool.tasks is not None:
            pool.tasks.require_idle(sp_uuid)  # 406: never drop the SPM under a running task
        for sd_uuid in pool.domains:
            await self.monitor.stop_monitoring(sd_uuid)
        await self._run(pool.disconnect, "StoragePool.disconnect")
        del self.pools[sp_uuid]

    async def spm_start(self, sp_uuid: str) -> dict[str, Any]:
        """Take the SDM lease, then recover the tasks persisted on the master domain."""
        pool = self.pool(sp_uuid)

        def start() -> dict[str, Any]:
            status = pool.spm_start(self.host_id_timeout)
            if pool.tasks is None:
                try:
                    manager = self._task_manager(pool)
                    manager.recover_dumped()  # before any new task may run
                except (OSError, VdsmError) as exc:
                    pool.spm_stop(force=True)
                    raise SpmStartError(f"cannot recover the tasks of pool {sp_uuid}: {exc}")
                pool.tasks = manager
            return status
        return await self._run(start, "spmStart")

    async def spm_stop(self, sp_uuid: str) -> None:
        pool = self.pool(sp_uuid)
        if not pool.spm:
            raise SpmStatusError(f"this host is not the SPM of pool {sp_uuid}")
        await self._run(pool.spm_stop, "spmStop")

    async def pool_call(self, sp_uuid: str, fn: Callable[[ConnectedPool], T]) -> T:
        pool = self.pool(sp_uuid)
        return await self._run(lambda: fn(pool), "storage pool")

    # -- image copy/merge/format (images helper) ----------------------------------------

    def _images(self, dom: FileStorageDomain) -> Images:
        return Images(Volumes(dom, qemu_timeout=self.qemu_timeout), self.run_dir)

    def images(self, sd_uuid: str) -> Images:
        """Blocking: the images of a domain, as prepared for VMs (storage.vm_support)."""
        return self._images(self.find_domain(sd_uuid))

    def _image_ops(self, pool: ConnectedPool, sd_uuid: str) -> ImageOps:
        def lookup(sd: str) -> Images:
            return self._images(pool.domain(sd))
        return ImageOps(lookup(sd_uuid), lookup)

    async def image_task(self, sd_uuid: str, sp_uuid: str | None, dst_sd_uuid: str, verb: str,
                         plan: Callable[[Images, Images], list[Step]],
                         resources: list[str]) -> str:
        """Check and schedule ``plan(src_images, dst_images)`` as an SPM task (both domains
        in the pool: 353 otherwise); return the task id."""
        def images_plan(dom: FileStorageDomain) -> list[Step]:
            src = self._images(dom)
            if dst_sd_uuid == sd_uuid:
                return plan(src, src)
            return plan(src, self._images(self._writable(dst_sd_uuid, sp_uuid)))
        return await self.spm_task(sd_uuid, sp_uuid, verb, images_plan, resources)

    async def format_domain(self, sd_uuid: str, auto_detach: bool) -> None:
        for pool in self.pools.values():
            if sd_uuid in pool.domains:
                raise CannotFormatStorageDomainInConnectedPool(
                    f"domain {sd_uuid} is in connected pool {pool.sp_uuid}")
        if sd_uuid in self.monitor.monitored():
            raise StorageDomainActive(f"domain {sd_uuid} is active; deactivate it first")
        await self._run(lambda: self.find_domain(sd_uuid).format(auto_detach=auto_detach),
                        "StorageDomain.format")


    # -- SPM tasks -----------------------------------------------------------------------

    def _task_manager(self, pool: ConnectedPool) -> TaskManager:
        def resolve(target: str) -> object:
            kind, _, sd_uuid = target.partition(":")
            factory = self.task_targets.get(kind)
            if factory is None:
                raise TaskMetaDataLoadError(f"unknown step target {target!r}")
            return factory(pool, check_uuid("sdUUID", sd_uuid))
        store = TaskStore.of_master(pool.master.root)
        return TaskManager(store, resolve, workers=self.task_workers, max_tasks=self.max_tasks,
                           hook_dir=self.task_hook_dir, on_done=self._publish_task_end)

    def _publish_task_end(self, task: Task) -> None:
        """``|storage|task_status|<taskID>`` with ``{taskID: TaskStatus}``, once the task's end
        is durable (the status ``Task.getStatus`` would answer from then on)."""
        if self.events is not None:
            self.events.publish(f"{TASK_STATUS_EVENT}{task.id}", {task.id: task.status()})

    async def spm_task(self, sd_uuid: str, sp_uuid: str | None, verb: str,
                       plan: Callable[[FileStorageDomain], list[Step]],
                       resources: list[str]) -> str:
        """Check (``plan`` raises on bad input), then schedule its steps on the SPM.

        ``plan`` runs on a worker with the domain as the pool sees it; the task is persisted
        on the master domain before the id is returned. 654 unless this host is the SPM of
        the domain's pool; 309 for a domain in no pool (tasks live on a master domain).
        """
        def schedule() -> str:
            pool, dom = self._task_domain(sd_uuid, sp_uuid)
            steps = plan(dom)
            if pool is None:
                raise StoragePoolUnknown(
                    f"domain {sd_uuid} is in no pool: metadata changes run as SPM tasks")
            pool.require_spm()
            if pool.tasks is None:
                raise SpmStatusError(f"the SPM of pool {pool.sp_uuid} is still starting")
            return pool.tasks.schedule(verb, steps, resources)
        return await self._run(schedule, verb)

    def _task_domain(self, sd_uuid: str, sp_uuid: str | None
                     ) -> tuple[ConnectedPool | None, FileStorageDomain]:
        """The domain a task will change, as its pool sees it, resolved once per task.

        A domain of the connected pool ``sp_uuid`` is taken from the pool (one metadata
        read: its seal and its pool checked), without searching the mounts; any other
        domain is searched for and checked as :meth:`_pool_of` does."""
        pool = self.pools.get(sp_uuid) if sp_uuid else None
        dom = pool.domains.get(sd_uuid) if pool is not None else None
        if pool is not None and dom is not None and pool.sp_uuid in dom.pools():
            return pool, dom
        found = self.find_domain(sd_uuid)
        owner = self._pool_of(found, sp_uuid)
        return owner, owner.domain(sd_uuid) if owner is not None else found

    def _tasks_holding(self, task_id: str) -> TaskManager:
        check_uuid("taskID", task_id)
        for pool in self.pools.values():
            if pool.tasks is not None and pool.tasks.has(task_id):
                return pool.tasks
        raise UnknownTask(f"Task id unknown: {task_id}")

    def task_call(self, task_id: str, fn: Callable[[TaskManager], T]) -> T:
        """Answer from memory (cheap, on the loop): status, info, stop."""
        manager = self._tasks_holding(task_id)
        return fn(manager)

    async def clear_task(self, task_id: str) -> None:
        manager = self._tasks_holding(task_id)
        await self._run(lambda: manager.clear(task_id), "Task.clear")

    def all_tasks(self, fn: Callable[[TaskManager], dict[str, T]]) -> dict[str, T]:
        out: dict[str, T] = {}
        for pool in self.pools.values():
            if pool.tasks is not None:
                out.update(fn(pool.tasks))
        return out


def _mount_of(spec: DomainSpec) -> str:
    return mount_name(spec.remote_path)
