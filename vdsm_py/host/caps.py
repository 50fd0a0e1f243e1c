"""Host capabilities as VDSM reports them in ``Host.getCapabilities``.

Owns assembling the capability dict under VDSM's key names and value types (VDSM sends many
numbers as strings — ``cpuCores: "4"``, ``memSize: "7899"`` — and engines expect that), and
caching it: everything but the hook listing is computed once (it runs ``dpkg-query`` and
reads procfs/sysfs), on the first call or at start-up through :meth:`HostCapabilities.static`
from a worker thread. The hook listing comes from an injected provider on every call.

Must not: talk to libvirt connections (CPU models from domain capabilities come through
``extra_cpu_flags``), import the RPC layer, or block the event loop (all methods block).
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vdsm_py import __version__
from vdsm_py.host import cpu, numa, osinfo
from vdsm_py.host.host_uuid import host_uuid
from vdsm_py.host.osinfo import PackageVersion, Runner
from vdsm_py.host.paths import DEFAULT_PATHS, HostPaths, read_text

log = logging.getLogger("vdsm_py.host")

HooksProvider = Callable[[], dict[str, Any]]
CpuFlagsProvider = Callable[[], Iterable[str]]

VERSION_NAME = "vdsm_py"
SUPPORTED_ENGINES = ["4.2", "4.3", "4.4", "4.5"]
_BASE_CLUSTER_LEVELS = ["4.2", "4.3", "4.4", "4.5", "4.6"]


def cluster_levels(
    libvirt: PackageVersion | None, qemu: PackageVersion | None
) -> list[str]:
    """Cluster levels this host can serve, by VDSM's rule on libvirt and QEMU versions."""
    levels = list(_BASE_CLUSTER_LEVELS)
    lv = libvirt.major_minor() if libvirt else None
    qv = qemu.major_minor() if qemu else None
    if lv and lv >= (8, 0):
        levels.append("4.7")
    if lv and qv and lv >= (10, 10) and qv >= (9, 1):
        levels.append("4.8")
    return levels


def _no_hooks() -> dict[str, Any]:
    return {}


def _nested_virtualization(paths: HostPaths) -> bool:
    for module in ("kvm_intel", "kvm_amd"):
        value = read_text(paths.sys / "module" / module / "parameters" / "nested")
        if value in ("Y", "1"):
            return True
    return False


class HostCapabilities:
    """The ``Host.getCapabilities`` report; static parts computed once and cached.

    ``hooks`` returns VDSM's hook listing (``{hook_point: {script: {"checksum": ...}}}``);
    ``extra_cpu_flags`` adds flags that only libvirt knows (VDSM appends ``model_<Name>`` for
    every CPU model the host can run; the engine matches them against the cluster CPU).
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        configured_uuid: str = "",
        paths: HostPaths = DEFAULT_PATHS,
        hooks: HooksProvider | None = None,
        extra_cpu_flags: CpuFlagsProvider | None = None,
        run: Runner = osinfo.run_command,
    ) -> None:
        self.state_dir = state_dir
        self.configured_uuid = configured_uuid
        self.paths = paths
        self.hooks = hooks or _no_hooks
        self.extra_cpu_flags = extra_cpu_flags
        self.run = run
        self._static: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def static(self) -> dict[str, Any]:
        """Everything but hooks; computed on the first call only (blocking)."""
        with self._lock:
            if self._static is None:
                self._static = self._collect()
                log.info(
                    "host capabilities: %s, %s CPUs, %s MiB, packages %s",
                    self._static["cpuModel"], self._static["cpuThreads"],
                    self._static["memSize"],
                    {k: v["version"] for k, v in self._static["packages2"].items()},
                )
            return self._static

    def report(self) -> dict[str, Any]:
        """The full report: a fresh copy of the static part plus the current hook listing."""
        caps = copy.deepcopy(self.static())
        try:
            caps["hooks"] = self.hooks()
        except Exception:
            log.exception("cannot list hooks; reporting none")
            caps["hooks"] = {}
        return caps

    # -- collection -------------------------------------------------------------------

    def _collect(self) -> dict[str, Any]:
        paths = self.paths
        info = cpu.read_cpuinfo(paths)
        topo = cpu.read_topology(paths)
        nodes = numa.read_nodes(paths, topo)
        packages = osinfo.package_versions(self.run)
        mem_kib = numa.meminfo_kib(read_text(paths.proc / "meminfo") or "", "MemTotal") or 0
        flags = list(info.flags)
        if self.extra_cpu_flags is not None:
            try:
                flags += [f for f in self.extra_cpu_flags() if f not in flags]
            except Exception:
                log.exception("cannot get extra CPU flags; reporting /proc/cpuinfo's only")
        packages2 = {name: v.as_dict() for name, v in packages.items()}
        packages2["vdsm"] = {"version": __version__, "release": ""}
        return {
            "cpuModel": info.model,
            "cpuFlags": ",".join(flags),
            "cpuCores": str(topo.cores),
            "cpuThreads": str(topo.threads),
            "cpuSockets": str(topo.sockets),
            "cpuSpeed": f"{info.speed_mhz:.3f}",
            "onlineCpus": ",".join(str(c) for c in topo.online),
            "cpuTopology": [
                {"cpu_id": c.cpu_id, "numa_cell_id": c.numa_node, "socket_id": c.socket_id,
                 "die_id": c.die_id, "core_id": c.core_id}
                for c in topo.cpus
            ],
            "memSize": str(mem_kib // 1024),
            "kvmEnabled": str(os.path.exists(paths.dev / "kvm")).lower(),
            "vmTypes": ["kvm"],
            "numaNodes": {
                str(n.node_id): {
                    "cpus": list(n.cpus),
                    "totalMemory": str(n.total_memory_kib // 1024),
                    "hugepages": {str(size): {"totalPages": str(count)}
                                  for size, count in n.hugepages.items()},
                }
                for n in nodes
            },
            "numaNodeDistance": {str(n.node_id): list(n.distances) for n in nodes},
            "hugepages": numa.hugepage_sizes(paths),
            "operatingSystem": osinfo.operating_system(paths),
            "kernelArgs": osinfo.kernel_args(paths),
            "realtimeKernel": osinfo.realtime_kernel(),
            "nestedVirtualization": _nested_virtualization(paths),
            "packages2": packages2,
            "software_version": __version__,
            "software_revision": "0",
            "version_name": VERSION_NAME,
            "supportedENGINEs": list(SUPPORTED_ENGINES),
            "clusterLevels": cluster_levels(packages.get("libvirt"), packages.get("qemu-kvm")),
            "uuid": host_uuid(self.configured_uuid, self.state_dir, paths),
            "hostname": socket.gethostname(),
        }
