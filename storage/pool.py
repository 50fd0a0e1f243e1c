"""The storage pool (data center) as one host sees it: membership, host ids and the SPM.

Pool facts live in the master domain's metadata (as VDSM's ``sp.py``): ``POOL_UUID``,
``ROLE=Master``, ``MASTER_VERSION``, ``POOL_DESCRIPTION``, ``POOL_DOMAINS``
(``sdUUID:Active,...``), ``POOL_SPM_ID`` and ``POOL_SPM_LVER``. Connecting starts joining
every active domain's lockspace with this host's id (asynchronous: sanlock takes a few io
timeouts). The SPM role is the ``SDM`` lease of the master domain: whoever holds it may
change metadata; sanlock guarantees one holder, and frees the lease when the holder's
process dies. Blocking: call from the executor. Must not run qemu-img or the monitor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from storage import constants as sc
from storage.domain import FileStorageDomain
from storage.sanlock_adapter import HostIdState
from storage.task_manager import TaskManager
from vdsm_py.errors import (
    AcquireHostIdFailure,
    SpmStatusError,
    StorageDomainAlreadyExists,
    StorageDomainNotInPool,
    StoragePoolAlreadyExists,
    StoragePoolCreationError,
    StoragePoolMasterNotFound,
    invalid_parameter,
)

log = logging.getLogger("vdsm_py.storage.pool")

SPM, FREE = "SPM", "Free"


def parse_domains(value: str) -> dict[str, str]:
    out = {}
    for item in value.split(","):
        sd, _, status = item.partition(":")
        if sd:
            out[sd] = status or "Active"
    return out


def format_domains(domains: dict[str, str]) -> str:
    return ",".join(f"{sd}:{status}" for sd, status in sorted(domains.items()))


def create_pool(sp_uuid: str, name: str, master: FileStorageDomain,
                others: list[FileStorageDomain], master_version: int) -> None:
    """Attach ``master`` (and ``others``) to a new pool; refuse domains already in one."""
    if "\n" in name or "," in name:
        raise invalid_parameter("poolName", "must be one line without commas")
    for dom in [master, *others]:
        pools = dom.pools()
        if pools:
            if sp_uuid in pools:
                raise StoragePoolAlreadyExists(f"Storage pool {sp_uuid} already exists")
            raise StorageDomainAlreadyExists(
                f"domain {dom.sd_uuid} is already attached to pool {pools[0]}")
        if dom.metadata().get(sc.DMDK_CLASS) != "Data" and dom is master:
            raise StoragePoolCreationError("the master domain must be a data domain")
    domains = {d.sd_uuid: "Active" for d in [master, *others]}
    for dom in others:
        dom.update_metadata({sc.DMDK_POOLS: sp_uuid})
    master.update_metadata({
        sc.DMDK_POOLS: sp_uuid,
        sc.DMDK_ROLE: sc.MASTER_DOMAIN,
        sc.PMDK_MASTER_VERSION: str(master_version),
        sc.PMDK_POOL_DESCRIPTION: name,
        sc.PMDK_DOMAINS: format_domains(domains),
        sc.PMDK_SPM_ID: "-1",
        sc.PMDK_LVER: "-1",
    })
    log.info("created pool %s (%s) with master %s", sp_uuid, name, master.sd_uuid)


@dataclass
class ConnectedPool:
    """A pool this host is connected to."""

    sp_uuid: str
    host_id: int
    master: FileStorageDomain
    domains: dict[str, FileStorageDomain] = field(default_factory=dict)
    spm: bool = False
    tasks: TaskManager | None = None  # the SPM's tasks (set by the service after recovery)

    @classmethod
    def connect(cls, sp_uuid: str, host_id: int, master: FileStorageDomain,
                master_version: int, find: Callable[[str], FileStorageDomain]) -> ConnectedPool:
        md = master.metadata()
        if sp_uuid not in master.pools() or md.get(sc.DMDK_ROLE) != sc.MASTER_DOMAIN:
            raise StoragePoolMasterNotFound(
                f"domain {master.sd_uuid} is not the master of pool {sp_uuid}")
        if int(md.get(sc.PMDK_MASTER_VERSION, "-1")) != master_version:
            raise StoragePoolMasterNotFound(
                f"pool {sp_uuid}: master version is {md.get(sc.PMDK_MASTER_VERSION)}, "
                f"expected {master_version}")
        if not 1 <= host_id <= sc.MAX_HOST_ID:
            raise invalid_parameter("hostID", f"must be 1..{sc.MAX_HOST_ID}")
        pool = cls(sp_uuid, host_id, master)
        for sd_uuid, status in parse_domains(md.get(sc.PMDK_DOMAINS, "")).items():
            if status == "Active":
                pool.domains[sd_uuid] = master if sd_uuid == master.sd_uuid else find(sd_uuid)
        for dom in pool.domains.values():
            if dom.locks is not None:
                dom.locks.acquire_host_id(host_id, wait=False)
        log.info("connected to pool %s as host %d (%d domains)", sp_uuid, host_id,
                 len(pool.domains))
        return pool

    def disconnect(self) -> None:
        if self.spm:
            self.spm_stop()
        for dom in self.domains.values():
            if dom.locks is not None:  # VMs' lease keepers may hold leases: kept then
                dom.locks.release_host_id(self.host_id, wait=True, unused=True)
        log.info("disconnected from pool %s", self.sp_uuid)

    def domain(self, sd_uuid: str) -> FileStorageDomain:
        dom = self.domains.get(sd_uuid)
        if dom is None:
            raise StorageDomainNotInPool(f"domain {sd_uuid} is not in pool {self.sp_uuid}")
        return dom

    def wait_host_id(self, timeout: float) -> None:
        locks = self.master.locks
        if locks is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            state = locks.host_id_state(self.host_id)
            if state is HostIdState.ACQUIRED:
                return
            if state is HostIdState.FREE:
                locks.acquire_host_id(self.host_id, wait=False)
            if time.monotonic() > deadline:
                raise AcquireHostIdFailure(
                    f"host id {self.host_id} on {self.master.sd_uuid} not acquired in {timeout}s")
            time.sleep(0.2)

    def spm_start(self, host_id_timeout: float) -> dict[str, object]:
        if self.spm:
            return self.spm_status()
        self.wait_host_id(host_id_timeout)
        locks = self.master.locks
        if locks is not None:
            locks.acquire(sc.SDM_LEASE_NAME, locks.spm_disk)
        try:
            lver = int(self.master.metadata().get(sc.PMDK_LVER, "-1")) + 1
            self.master.update_metadata({sc.PMDK_SPM_ID: str(self.host_id),
                                         sc.PMDK_LVER: str(lver)})
        except BaseException:
            if locks is not None:
                locks.release(sc.SDM_LEASE_NAME, locks.spm_disk)
            raise
        self.spm = True
        log.info("host %d is the SPM of pool %s (lver %d)", self.host_id, self.sp_uuid, lver)
        return self.spm_status()

    def spm_stop(self, *, force: bool = False) -> None:
        """Release the SPM role; refused (406) while a task runs unless ``force``."""
        if not self.spm:
            return
        if self.tasks is not None:
            if not force:
                self.tasks.require_idle(self.sp_uuid)
            self.tasks.shutdown()
            self.tasks = None
        self.master.update_metadata({sc.PMDK_SPM_ID: "-1"})
        locks = self.master.locks
        if locks is not None:
            locks.release(sc.SDM_LEASE_NAME, locks.spm_disk)
        self.spm = False
        log.info("host %d stopped being the SPM of pool %s", self.host_id, self.sp_uuid)

    def require_spm(self) -> None:
        if not self.spm:
            raise SpmStatusError(f"this host is not the SPM of pool {self.sp_uuid}")

    def spm_status(self) -> dict[str, object]:
        md = self.master.metadata()
        lver = int(md.get(sc.PMDK_LVER, "-1"))
        spm_id = int(md.get(sc.PMDK_SPM_ID, "-1"))
        locks = self.master.locks
        if locks is not None:  # sanlock is the truth about who holds the lease
            owners = locks.owners(sc.SDM_LEASE_NAME, locks.spm_disk)
            spm_id = owners[0] if owners else -1
        status = SPM if self.spm and spm_id == self.host_id else FREE
        return {"spmStatus": status, "spmLver": lver, "spmId": spm_id}

    def info(self) -> dict[str, object]:
        md = self.master.metadata()
        return {
            "spm_id": int(md.get(sc.PMDK_SPM_ID, "-1")),
            "lver": int(md.get(sc.PMDK_LVER, "-1")),
            "master_uuid": self.master.sd_uuid,
            "master_ver": int(md.get(sc.PMDK_MASTER_VERSION, "0")),
            "name": md.get(sc.PMDK_POOL_DESCRIPTION, ""),
            "domains": md.get(sc.PMDK_DOMAINS, ""),
            "pool_status": "connected",
            "version": md.get(sc.DMDK_VERSION, ""),
            "type": md.get(sc.DMDK_TYPE, ""),
            "isoprefix": "",
        }
