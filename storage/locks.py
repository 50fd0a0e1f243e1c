"""Cluster locks of one storage domain: its lockspace, host id and leases, on sanlock.

Knows VDSM's geometry: the lockspace (named after the domain UUID) lives in ``dom_md/ids``;
the SPM lease (``SDM``) in ``dom_md/leases`` at ``SDM_LEASE_SLOT * alignment``; a volume's
lease at offset 0 of its ``.lease`` file, named after the volume; VM leases in ``xleases``
(see :mod:`storage.xleases`). Every method blocks on the sanlock daemon: call from workers.
Must not read or write domain metadata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from storage import constants as sc
from storage.lease_records import free_lease_head
from storage.sanlock_adapter import Disk, HostIdState, Sanlock

log = logging.getLogger("vdsm_py.storage.locks")


@dataclass(frozen=True)
class Geometry:
    """Alignment and sector size sanlock uses on a domain, and its I/O timeout."""

    alignment: int = sc.ALIGNMENT_1M
    block_size: int = sc.BLOCK_SIZE_512
    io_timeout: int = 10


class DomainLocks:
    """The sanlock side of one domain, for this host."""

    def __init__(self, sanlock: Sanlock, sd_uuid: str, md_dir: Path, geometry: Geometry):
        self.sanlock = sanlock
        self.sd_uuid = sd_uuid
        self.md_dir = md_dir
        self.geometry = geometry

    @property
    def ids(self) -> Path:
        return self.md_dir / sc.IDS

    @property
    def spm_disk(self) -> Disk:
        return Disk(self.md_dir / sc.LEASES, sc.SDM_LEASE_SLOT * self.geometry.alignment)

    def _fmt(self) -> dict[str, int]:
        return {"align": self.geometry.alignment, "sector": self.geometry.block_size}

    # -- formatting (domain and volume creation) ----------------------------------------

    def format_domain(self) -> None:
        """Write the lockspace on ``ids`` and the SPM lease on ``leases``."""
        log.info("formatting lockspace of domain %s (io_timeout=%s)",
                 self.sd_uuid, self.geometry.io_timeout)
        self.sanlock.write_lockspace(
            self.sd_uuid, self.ids, io_timeout=self.geometry.io_timeout, **self._fmt()
        )
        self.sanlock.write_resource(self.sd_uuid, sc.SDM_LEASE_NAME, self.spm_disk, **self._fmt())

    def format_lease(self, name: str, disk: Disk) -> None:
        self.sanlock.write_resource(self.sd_uuid, name, disk, **self._fmt())

    def free_lease_head(self, name: str) -> bytes:
        """What :meth:`format_lease` writes first, for a file we write ourselves
        (:mod:`storage.lease_records`; the rest of the lease, ``geometry.alignment`` bytes in
        all, is zeros). ValueError for a geometry or a name sanlock would refuse."""
        return free_lease_head(self.sd_uuid, name, **self._fmt())

    # -- host id ------------------------------------------------------------------------

    def acquire_host_id(self, host_id: int, *, wait: bool = False) -> None:
        """Start joining the lockspace (``wait=False``: return at once; poll the state)."""
        log.info("acquiring host id %d on domain %s (wait=%s)", host_id, self.sd_uuid, wait)
        self.sanlock.add_lockspace(
            self.sd_uuid, host_id, self.ids, io_timeout=self.geometry.io_timeout, wait=wait
        )

    def host_id_state(self, host_id: int) -> HostIdState:
        return self.sanlock.host_id_state(self.sd_uuid, host_id, self.ids)

    def release_host_id(self, host_id: int, *, wait: bool = True, unused: bool = False) -> None:
        """``unused``: keep the host id while leases (running VMs') are held in it."""
        log.info("releasing host id %d on domain %s", host_id, self.sd_uuid)
        self.sanlock.rem_lockspace(self.sd_uuid, host_id, self.ids, wait=wait, unused=unused)

    # -- leases -------------------------------------------------------------------------

    def acquire(self, name: str, disk: Disk, *, shared: bool = False) -> None:
        self.sanlock.acquire(self.sd_uuid, name, disk, shared=shared)

    def release(self, name: str, disk: Disk) -> None:
        self.sanlock.release(self.sd_uuid, name, disk)

    def owners(self, name: str, disk: Disk) -> list[int]:
        return self.sanlock.owners(self.sd_uuid, name, disk, **self._fmt())
