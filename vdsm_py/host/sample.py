"""One snapshot of the host's counters (CPU, memory, load, NICs, block devices), via psutil.

Owns :class:`HostSample` and :func:`take_sample`. A sample holds raw cumulative counters and
instantaneous levels only; rates are computed between two samples by ``vdsm_py.host.stats``.
:func:`take_sample` blocks (procfs, sysfs, statvfs): run it on the worker pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psutil

from vdsm_py.host.numa import meminfo_kib
from vdsm_py.host.paths import DEFAULT_PATHS, HostPaths, read_text

MiB = 1024 * 1024


@dataclass(frozen=True)
class CpuTimes:
    """Seconds spent since boot, summed over the CPUs the times cover."""

    user: float  # user + nice
    system: float  # system + irq + softirq
    total: float  # every state, guest time not counted twice

    @classmethod
    def from_psutil(cls, t: Any) -> CpuTimes:
        guest = getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
        return cls(
            user=t.user + getattr(t, "nice", 0.0),
            system=t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0),
            total=sum(t) - guest,
        )


@dataclass(frozen=True)
class NicCounters:
    rx_bytes: int
    tx_bytes: int
    rx_errors: int
    tx_errors: int
    rx_dropped: int
    tx_dropped: int
    up: bool
    speed_mbps: int  # 0 when the driver does not say
    duplex: str  # full, half or unknown


@dataclass(frozen=True)
class DiskCounters:
    read_bytes: int
    write_bytes: int
    read_ops: int
    write_ops: int


@dataclass(frozen=True)
class MemoryLevels:
    """Bytes."""

    total: int
    free: int  # MemFree + Buffers + Cached + SReclaimable: VDSM's "free"
    available: int  # MemAvailable
    committed: int  # Committed_AS
    swap_total: int
    swap_free: int


@dataclass(frozen=True)
class HostSample:
    monotonic: float  # the sampler's clock when the sample was taken
    wall_time: float  # seconds since the epoch, same moment
    cpu: CpuTimes
    per_cpu: tuple[CpuTimes, ...]  # in /proc/stat order (ascending online CPU ids)
    memory: MemoryLevels
    load: tuple[float, float, float]
    nics: dict[str, NicCounters]
    disks: dict[str, DiskCounters]
    path_free_mib: dict[str, int]
    boot_time: float


_DUPLEX = {psutil.NIC_DUPLEX_FULL: "full", psutil.NIC_DUPLEX_HALF: "half"}


def _nics() -> dict[str, NicCounters]:
    counters = psutil.net_io_counters(pernic=True, nowrap=True)
    try:
        links = psutil.net_if_stats()
    except OSError:
        links = {}
    result = {}
    for name, c in sorted(counters.items()):
        link = links.get(name)
        result[name] = NicCounters(
            rx_bytes=c.bytes_recv, tx_bytes=c.bytes_sent,
            rx_errors=c.errin, tx_errors=c.errout,
            rx_dropped=c.dropin, tx_dropped=c.dropout,
            up=bool(link and link.isup),
            speed_mbps=max(0, link.speed) if link else 0,
            duplex=_DUPLEX.get(link.duplex, "unknown") if link else "unknown",
        )
    return result


def _disks() -> dict[str, DiskCounters]:
    counters = psutil.disk_io_counters(perdisk=True, nowrap=True) or {}
    return {
        name: DiskCounters(c.read_bytes, c.write_bytes, c.read_count, c.write_count)
        for name, c in sorted(counters.items())
    }


def _memory(paths: HostPaths) -> MemoryLevels:
    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    committed_kib = meminfo_kib(read_text(paths.proc / "meminfo") or "", "Committed_AS")
    # psutil's "cached" already includes SReclaimable on Linux.
    return MemoryLevels(
        total=vm.total,
        free=vm.free + getattr(vm, "buffers", 0) + getattr(vm, "cached", 0),
        available=vm.available,
        committed=(committed_kib or 0) * 1024,
        swap_total=swap.total,
        swap_free=swap.free,
    )


def _path_free(paths: Iterable[str]) -> dict[str, int]:
    free = {}
    for p in paths:
        try:
            st = os.statvfs(p)
        except OSError:
            continue
        free[p] = st.f_bavail * st.f_frsize // MiB
    return free


def take_sample(
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
    *,
    paths: HostPaths = DEFAULT_PATHS,
    monitored_paths: Iterable[str] = (),
) -> HostSample:
    """Read every counter now (blocking)."""
    monotonic, wall = clock(), wall_clock()
    return HostSample(
        monotonic=monotonic,
        wall_time=wall,
        cpu=CpuTimes.from_psutil(psutil.cpu_times()),
        per_cpu=tuple(CpuTimes.from_psutil(t) for t in psutil.cpu_times(percpu=True)),
        memory=_memory(paths),
        load=psutil.getloadavg(),
        nics=_nics(),
        disks=_disks(),
        path_free_mib=_path_free(monitored_paths),
        boot_time=psutil.boot_time(),
    )
