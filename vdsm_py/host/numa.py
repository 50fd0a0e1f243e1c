"""The host's NUMA layout from ``/sys/devices/system/node``: CPUs, memory, distances, huge pages.

Owns parsing of the node directories, with a single-node fallback for kernels built without
NUMA. Blocking file reads: call from a worker thread. Must not format for the wire.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from vdsm_py.host.cpu import CpuTopology, parse_cpu_list
from vdsm_py.host.paths import HostPaths, read_text

log = logging.getLogger("vdsm_py.host")

_NODE_DIR = re.compile(r"node(\d+)$")
_HUGEPAGE_DIR = re.compile(r"hugepages-(\d+)kB$")


@dataclass(frozen=True)
class NumaNode:
    node_id: int
    cpus: tuple[int, ...]
    total_memory_kib: int
    distances: tuple[int, ...]
    hugepages: dict[int, int]  # page size in KiB → pages configured on this node


def meminfo_kib(text: str, key: str) -> int | None:
    """The value of ``key`` (in KiB) in a ``/proc/meminfo``-style text, or None."""
    for line in text.splitlines():
        # "MemTotal:  123 kB" or, per node, "Node 0 MemTotal:  123 kB"
        name, sep, value = line.partition(":")
        if sep and name.split()[-1:] == [key]:
            try:
                return int(value.split()[0])
            except (ValueError, IndexError):
                return None
    return None


def read_nodes(paths: HostPaths, topology: CpuTopology) -> list[NumaNode]:
    """Every NUMA node, in id order; one node holding everything when sysfs has none."""
    base = paths.sys / "devices" / "system" / "node"
    nodes = []
    try:
        entries = sorted(
            (int(m.group(1)), e) for e in base.iterdir() if (m := _NODE_DIR.match(e.name))
        )
    except OSError:
        entries = []
    for node_id, node_dir in entries:
        try:
            cpus = tuple(parse_cpu_list(read_text(node_dir / "cpulist") or ""))
        except ValueError:
            cpus = ()
        total = meminfo_kib(read_text(node_dir / "meminfo") or "", "MemTotal") or 0
        distance_text = read_text(node_dir / "distance") or ""
        distances = tuple(int(d) for d in distance_text.split() if d.isdigit())
        pages: dict[int, int] = {}
        try:
            for hp in (node_dir / "hugepages").iterdir():
                m = _HUGEPAGE_DIR.match(hp.name)
                count = read_text(hp / "nr_hugepages")
                if m and count and count.isdigit():
                    pages[int(m.group(1))] = int(count)
        except OSError:
            pass
        nodes.append(NumaNode(node_id, cpus, total, distances, dict(sorted(pages.items()))))
    if nodes:
        return nodes
    total = meminfo_kib(read_text(paths.proc / "meminfo") or "", "MemTotal") or 0
    return [NumaNode(0, tuple(topology.online), total, (10,), {})]


def hugepage_sizes(paths: HostPaths) -> list[int]:
    """Huge page sizes (KiB) the kernel supports, from ``/sys/kernel/mm/hugepages``."""
    sizes = []
    try:
        for entry in (paths.sys / "kernel" / "mm" / "hugepages").iterdir():
            m = _HUGEPAGE_DIR.match(entry.name)
            if m:
                sizes.append(int(m.group(1)))
    except OSError:
        pass
    return sorted(sizes)
