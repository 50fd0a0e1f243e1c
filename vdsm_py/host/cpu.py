"""The host's processors: model, flags and speed from ``/proc/cpuinfo``; topology from sysfs.

Owns parsing of ``/proc/cpuinfo`` and of ``/sys/devices/system/cpu`` (online CPUs, and for
each its socket, die, core and NUMA node). Blocking file reads: call from a worker thread.
Must not format anything for the wire (``caps`` does that) nor talk to libvirt.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from vdsm_py.host.paths import HostPaths, read_text

log = logging.getLogger("vdsm_py.host")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: tuple[str, ...]
    speed_mhz: float


@dataclass(frozen=True)
class LogicalCpu:
    cpu_id: int
    socket_id: int
    die_id: int
    core_id: int
    numa_node: int


@dataclass(frozen=True)
class CpuTopology:
    cpus: tuple[LogicalCpu, ...]

    @property
    def online(self) -> list[int]:
        return [c.cpu_id for c in self.cpus]

    @property
    def threads(self) -> int:
        return len(self.cpus)

    @property
    def sockets(self) -> int:
        return len({c.socket_id for c in self.cpus})

    @property
    def cores(self) -> int:
        return len({(c.socket_id, c.die_id, c.core_id) for c in self.cpus})

    def node_of(self, cpu_id: int) -> int:
        for c in self.cpus:
            if c.cpu_id == cpu_id:
                return c.numa_node
        return 0


def parse_cpu_list(text: str) -> list[int]:
    """Kernel CPU list syntax (``0-3,8,10-11``) → sorted ids; empty text → []."""
    ids: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep:
            ids.update(range(int(lo), int(hi) + 1))
        else:
            ids.add(int(lo))
    return sorted(ids)


def read_cpuinfo(paths: HostPaths) -> CpuInfo:
    """Model name, feature flags and current speed of the first processor listed."""
    text = read_text(paths.proc / "cpuinfo") or ""
    first: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if first:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            first.setdefault(key.strip(), value.strip())
    model = (
        first.get("model name")
        or first.get("cpu")  # POWER
        or first.get("Processor")  # older ARM kernels
        or platform.processor()
        or "unknown"
    )
    flags = tuple((first.get("flags") or first.get("Features") or "").split())
    try:
        speed = float(first.get("cpu MHz", "0").split()[0])
    except (ValueError, IndexError):
        speed = 0.0
    if not speed:
        khz = read_text(paths.sys / "devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        speed = int(khz) / 1000 if khz and khz.isdigit() else 0.0
    return CpuInfo(model=model, flags=flags, speed_mhz=speed)


def _int_file(path: Path, default: int) -> int:
    text = read_text(path)
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _numa_node(cpu_dir: Path) -> int:
    try:
        for entry in cpu_dir.iterdir():
            name = entry.name
            if name.startswith("node") and name[4:].isdigit():
                return int(name[4:])
    except OSError:
        pass
    return 0


def read_topology(paths: HostPaths) -> CpuTopology:
    """Socket, die, core and NUMA node of every online logical CPU."""
    base = paths.sys / "devices" / "system" / "cpu"
    online_text = read_text(base / "online")
    try:
        online = parse_cpu_list(online_text) if online_text else []
    except ValueError:
        log.warning("cannot parse %s: %r", base / "online", online_text)
        online = []
    if not online:
        online = list(range(os.cpu_count() or 1))
    cpus = []
    for cpu_id in online:
        cpu_dir = base / f"cpu{cpu_id}"
        topo = cpu_dir / "topology"
        cpus.append(
            LogicalCpu(
                cpu_id=cpu_id,
                socket_id=_int_file(topo / "physical_package_id", 0),
                die_id=_int_file(topo / "die_id", 0),
                core_id=_int_file(topo / "core_id", cpu_id),
                numa_node=_numa_node(cpu_dir),
            )
        )
    return CpuTopology(tuple(cpus))
