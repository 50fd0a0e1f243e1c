"""The engine's records: clusters, hosts, VMs, events, and the vocabularies of their states.

Plain dataclasses, no behaviour beyond small derived properties and no I/O; the repository
(:mod:`engine_lite.repo`) stores them, the engine changes them.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class HostStatus(enum.StrEnum):
    """Connection-derived host states, as oVirt names them."""

    INSTALLING = "Installing"
    INITIALIZING = "Initializing"
    UP = "Up"
    CONNECTING = "Connecting"
    NON_RESPONSIVE = "NonResponsive"
    MAINTENANCE = "Maintenance"  # shown when the admin flag is set and the host is Up


class Desired(enum.StrEnum):
    UP = "up"
    DOWN = "down"


# VM statuses the engine uses besides the host's wire statuses (Up, Down, Powering up...).
VM_DOWN = "Down"
VM_UNKNOWN = "Unknown"  # its host stopped answering; the VM may well still run
VM_STARTING = "WaitForLaunch"


@dataclass
class Cluster:
    id: str
    name: str
    scheduling_policy: str = "even_distribution"
    mem_overcommit_pct: int = 100


@dataclass
class Host:
    id: str
    name: str
    cluster_id: str
    address: str
    port: int
    status: HostStatus = HostStatus.INSTALLING
    maintenance: bool = False
    status_reason: str = ""
    agent: dict[str, Any] = field(default_factory=dict)  # how to run host-side tasks
    cert_serial: str = ""
    prev_cert_serial: str = ""
    cert_not_after: str = ""  # ISO 8601, UTC
    mem_mib: int = 0  # physical memory from capabilities
    networks: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)  # last Host.getStats
    last_seen: float = 0.0  # wall clock of the last good answer
    fence_agent: list[str] = field(default_factory=list)  # argv; empty: none configured
    storage_domains: list[str] = field(default_factory=list)  # seen active and valid

    @property
    def effective_status(self) -> HostStatus:
        if self.maintenance and self.status == HostStatus.UP:
            return HostStatus.MAINTENANCE
        return self.status

    def view(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["status"] = str(self.effective_status)
        doc["connection"] = str(self.status)
        doc.pop("agent")
        doc.pop("stats")
        doc["memFree"] = self.stats.get("memFree")
        doc["cpuLoad"] = self.stats.get("cpuLoad")
        return doc


@dataclass
class Vm:
    id: str
    name: str
    cluster_id: str
    mem_mib: int
    vcpus: int = 1
    nics: list[dict[str, Any]] = field(default_factory=list)  # {"network": ..., "mac": ...}
    disks: list[dict[str, Any]] = field(default_factory=list)  # {"domainID", "imageID", ...}
    custom: dict[str, str] = field(default_factory=dict)
    ha: bool = False
    desired: Desired = Desired.DOWN
    status: str = VM_DOWN
    host_id: str | None = None
    display: dict[str, Any] = field(default_factory=dict)  # last displayInfo
    last_error: str = ""

    def view(self, host_name: str | None = None) -> dict[str, Any]:
        doc = asdict(self)
        doc["desired"] = str(self.desired)
        doc["host"] = host_name
        return doc


@dataclass
class Event:
    id: int
    time: float
    severity: str  # info | warning | error
    kind: str  # e.g. host_status, vm_status, vm_start, enrollment
    message: str
    host_id: str | None = None
    vm_id: str | None = None

    def view(self) -> dict[str, Any]:
        return asdict(self)
