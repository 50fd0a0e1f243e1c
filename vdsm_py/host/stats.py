"""Host statistics for ``Host.getStats``: periodic sampling and rates between two samples.

Owns :class:`HostStatsSampler` — it takes a :class:`~vdsm_py.host.sample.HostSample` every
``interval`` seconds on the worker pool (never blocking the loop), keeps the last two, and
builds VDSM's ``HostStats`` dict from them — and :func:`build_report`, the pure computation.

Wire conventions follow VDSM: CPU figures are percentages formatted as strings
(``cpuUser: "3.25"``), ``memUsed`` is a percentage string, memory and swap sizes are integer
MiB, per-NIC counters are strings and ``rxRate``/``txRate`` are percentages of the link speed
(an unknown speed counts as 1000 Mb/s, as in VDSM). Byte and operation rates per second are
reported as plain numbers beside them. With a single sample (right after start-up) every
rate is 0, ``cpuIdle`` is 100 and ``sampleInterval`` is 0, as VDSM answers before its second
sample.

Time comes from injected ``clock``/``wall_clock``/``sleep`` so tests drive sampling without
sleeping. Must not import the RPC layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from vdsm_py.errors import ResourceUnavailable
from vdsm_py.executor import Executor
from vdsm_py.host import cpu
from vdsm_py.host.paths import DEFAULT_PATHS, HostPaths
from vdsm_py.host.sample import CpuTimes, HostSample, MiB, take_sample

log = logging.getLogger("vdsm_py.host")

DEFAULT_MONITORED_PATHS = ("/tmp", "/var/log")
_DEFAULT_SPEED_MBPS = 1000


def _delta(new: float, old: float) -> float:
    """Counter growth; a counter that went back (device re-created) grew by 0."""
    return max(0.0, new - old)


def _cpu_usage(first: CpuTimes | None, last: CpuTimes) -> tuple[float, float, float]:
    """(user %, system %, idle %) between two readings; idle is what is left, as VDSM."""
    if first is None:
        return 0.0, 0.0, 100.0
    total = _delta(last.total, first.total)
    if total <= 0:
        return 0.0, 0.0, 100.0
    user = min(100.0, 100.0 * _delta(last.user, first.user) / total)
    system = min(100.0 - user, 100.0 * _delta(last.system, first.system) / total)
    return user, system, max(0.0, 100.0 - user - system)


def _pct(value: float) -> str:
    return f"{value:.2f}"


def _network(first: HostSample | None, last: HostSample, interval: float) -> dict[str, Any]:
    result = {}
    for name, c in last.nics.items():
        prev = first.nics.get(name) if first and interval > 0 else None
        rx_rate = _delta(c.rx_bytes, prev.rx_bytes) / interval if prev else 0.0
        tx_rate = _delta(c.tx_bytes, prev.tx_bytes) / interval if prev else 0.0
        speed = c.speed_mbps or _DEFAULT_SPEED_MBPS
        link_bytes_per_s = speed * 1_000_000 / 8
        result[name] = {
            "name": name,
            "state": "up" if c.up else "down",
            "speed": str(speed),
            "duplex": c.duplex,
            "rx": str(c.rx_bytes),
            "tx": str(c.tx_bytes),
            "rxErrors": str(c.rx_errors),
            "txErrors": str(c.tx_errors),
            "rxDropped": str(c.rx_dropped),
            "txDropped": str(c.tx_dropped),
            "rxRate": f"{100.0 * rx_rate / link_bytes_per_s:.1f}",
            "txRate": f"{100.0 * tx_rate / link_bytes_per_s:.1f}",
            "rxBytesPerSec": rx_rate,
            "txBytesPerSec": tx_rate,
            "sampleTime": last.wall_time,
        }
    return result


def _disks(first: HostSample | None, last: HostSample, interval: float) -> dict[str, Any]:
    result = {}
    for name, c in last.disks.items():
        prev = first.disks.get(name) if first and interval > 0 else None

        def rate(new: int, old: int | None) -> float:
            return _delta(new, old) / interval if old is not None else 0.0

        result[name] = {
            "readBytes": c.read_bytes,
            "writeBytes": c.write_bytes,
            "readOps": c.read_ops,
            "writeOps": c.write_ops,
            "readBytesPerSec": rate(c.read_bytes, prev.read_bytes if prev else None),
            "writeBytesPerSec": rate(c.write_bytes, prev.write_bytes if prev else None),
            "readOpsPerSec": rate(c.read_ops, prev.read_ops if prev else None),
            "writeOpsPerSec": rate(c.write_ops, prev.write_ops if prev else None),
        }
    return result


def build_report(
    first: HostSample | None,
    last: HostSample,
    *,
    elapsed: float,
    cpu_ids: Sequence[int] = (),
    cpu_nodes: dict[int, int] | None = None,
) -> dict[str, Any]:
    """VDSM's ``HostStats`` from the last sample and, for rates, the one before it.

    ``elapsed`` is how long the daemon has run; ``cpu_ids``/``cpu_nodes`` name the CPUs of
    ``per_cpu`` and their NUMA nodes (per-CPU times come in ascending online-id order).
    """
    interval = last.monotonic - first.monotonic if first is not None else 0.0
    if interval <= 0:
        first, interval = None, 0.0
    user, system, idle = _cpu_usage(first.cpu if first else None, last.cpu)
    per_cpu = {}
    for i, times in enumerate(last.per_cpu):
        cpu_id = cpu_ids[i] if i < len(cpu_ids) else i
        before = first.per_cpu[i] if first and i < len(first.per_cpu) else None
        c_user, c_sys, c_idle = _cpu_usage(before, times)
        per_cpu[str(cpu_id)] = {
            "nodeIndex": (cpu_nodes or {}).get(cpu_id, 0),
            "cpuUser": _pct(c_user), "cpuSys": _pct(c_sys), "cpuIdle": _pct(c_idle),
        }
    mem = last.memory
    network = _network(first, last, interval)
    return {
        "cpuUser": _pct(user),
        "cpuSys": _pct(system),
        "cpuIdle": _pct(idle),
        "cpuLoad": _pct(last.load[1]),
        "loadAverage": list(last.load),
        "cpuStatistics": per_cpu,
        "memFree": mem.free // MiB,
        "memAvailable": mem.available // MiB,
        "memCommitted": mem.committed // MiB,
        "memUsed": str(100 - int(100.0 * mem.free / mem.total)) if mem.total else "0",
        "swapTotal": mem.swap_total // MiB,
        "swapFree": mem.swap_free // MiB,
        "network": network,
        "rxDropped": str(sum(c.rx_dropped for c in last.nics.values())),
        "txDropped": str(sum(c.tx_dropped for c in last.nics.values())),
        "disks": _disks(first, last, interval),
        "diskStats": {p: {"free": str(free)} for p, free in last.path_free_mib.items()},
        "bootTime": str(int(last.boot_time)),
        "elapsedTime": str(int(max(0.0, elapsed))),
        "sampleInterval": interval,
        "dateTime": time.strftime("%Y-%m-%dT%H:%M:%S GMT", time.gmtime(last.wall_time)),
    }


class HostStatsSampler:
    """Samples the host every ``interval`` seconds and answers ``Host.getStats`` from that.

    :meth:`start` takes the first sample before returning, so :meth:`report` works at once.
    """

    def __init__(
        self,
        executor: Executor,
        interval: float = 15.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        paths: HostPaths = DEFAULT_PATHS,
        monitored_paths: Iterable[str] = DEFAULT_MONITORED_PATHS,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"stats interval must be positive, got {interval}")
        self.executor = executor
        self.interval = interval
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep
        self.paths = paths
        self.monitored_paths = tuple(monitored_paths)
        self._samples: deque[HostSample] = deque(maxlen=2)
        self._started_at = clock()
        self._cpu_ids: list[int] = []
        self._cpu_nodes: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def samples(self) -> tuple[HostSample, ...]:
        """The kept samples, oldest first (at most two)."""
        return tuple(self._samples)

    async def start(self) -> None:
        self._started_at = self.clock()
        topology = await self.executor.run(
            cpu.read_topology, self.paths, timeout=self.interval, name="host cpu topology"
        )
        self._cpu_ids = topology.online
        self._cpu_nodes = {c.cpu_id: c.numa_node for c in topology.cpus}
        await self.sample_now()
        self._task = asyncio.create_task(self._loop(), name="host stats sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sample_now(self) -> HostSample:
        """Take one sample on the worker pool and keep it (the older of two is dropped)."""
        sample = await self.executor.run(
            take_sample, self.clock, self.wall_clock,
            paths=self.paths, monitored_paths=self.monitored_paths,
            timeout=self.interval, name="host stats sample",
        )
        self._samples.append(sample)
        return sample

    def report(self) -> dict[str, Any]:
        """VDSM's ``HostStats``; cheap (no I/O), safe to call on the loop."""
        if not self._samples:
            raise ResourceUnavailable("Host statistics are not sampled yet")
        first = self._samples[0] if len(self._samples) == 2 else None
        return build_report(
            first, self._samples[-1],
            elapsed=self.clock() - self._started_at,
            cpu_ids=self._cpu_ids, cpu_nodes=self._cpu_nodes,
        )

    async def _loop(self) -> None:
        while True:
            await self.sleep(self.interval)
            try:
                await self.sample_now()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Keep the previous samples: getStats answers from them meanwhile.
                log.exception("host statistics sample failed; keeping the previous one")
