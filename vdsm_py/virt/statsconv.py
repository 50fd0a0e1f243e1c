"""From two of libvirt's bulk samples of one VM to VDSM's statistics fields.

Owns the arithmetic: CPU percentages and network/disk rates between two samples of
``getAllDomainStats`` taken ``interval`` seconds apart, cumulative counters, disk
latencies, balloon and guest memory figures — with VDSM's field names and its habit of
sending numbers as strings. A missing sample or counter yields what VDSM yields (zero
CPU, no rate), never an error. Pure functions: no libvirt, no VM objects, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import libvirt

from vdsm_py.virt.domparse import DomainInfo

BULK_FLAGS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)

Sample = Mapping[str, Any]


def _pct(ns: float, interval: float) -> str:
    return f"{max(ns, 0) * 100 / interval / 1e9:.2f}"


def cpu(first: Sample | None, last: Sample, interval: float) -> dict[str, Any]:
    """cpuUser / cpuSys (% of one CPU over the interval), cpuUsage (ns used in total)."""
    out: dict[str, Any] = {"cpuUser": "0.00", "cpuSys": "0.00", "cpuUsage": "0",
                           "cpuActual": False}
    if "cpu.user" in last and "cpu.system" in last:
        out["cpuUsage"] = str(last["cpu.user"] + last["cpu.system"])
    elif "cpu.time" in last:
        out["cpuUsage"] = str(last["cpu.time"])
    if first is None or interval <= 0:
        return out
    keys = ("cpu.user", "cpu.system", "cpu.time")
    if not all(k in first and k in last for k in keys):
        return out
    sys_ns = last["cpu.system"] - first["cpu.system"]
    total_ns = last["cpu.time"] - first["cpu.time"]
    out["cpuSys"] = _pct(sys_ns, interval)
    out["cpuUser"] = _pct(total_ns - sys_ns, interval)
    out["cpuActual"] = True
    return out


def _index(sample: Sample | None, group: str) -> dict[str, int]:
    """name → index of a bulk-stats group (libvirt does not promise a stable order)."""
    if not sample:
        return {}
    out = {}
    for i in range(sample.get(f"{group}.count", 0)):
        name = sample.get(f"{group}.{i}.name")
        if name is not None:
            out[name] = i
    return out


def _rate(first: Sample | None, fi: int | None, last: Sample, li: int, key: str,
          interval: float, group: str) -> str | None:
    if first is None or fi is None or interval <= 0:
        return None
    a, b = first.get(f"{group}.{fi}.{key}"), last.get(f"{group}.{li}.{key}")
    if a is None or b is None:
        return None
    return f"{max(b - a, 0) / interval:.1f}"


def networks(info: DomainInfo, first: Sample | None, last: Sample, interval: float,
             sample_time: float) -> dict[str, Any]:
    """Per NIC (keyed by its host-side device name, as VDSM): counters and rates."""
    fidx, lidx = _index(first, "net"), _index(last, "net")
    out: dict[str, Any] = {}
    for nic in info.nics:
        li = lidx.get(nic.target)
        if li is None:
            continue
        fi = fidx.get(nic.target)
        p = f"net.{li}."
        stats: dict[str, Any] = {
            "macAddr": nic.mac,
            "name": nic.target,
            "network": nic.network,
            "speed": "1000" if nic.model in ("virtio", "e1000", "e1000e") else "100",
            "state": "up" if nic.link_up else "down",
            "rxErrors": str(last.get(p + "rx.errs", 0)),
            "rxDropped": str(last.get(p + "rx.drop", 0)),
            "txErrors": str(last.get(p + "tx.errs", 0)),
            "txDropped": str(last.get(p + "tx.drop", 0)),
            "rx": str(last.get(p + "rx.bytes", 0)),
            "tx": str(last.get(p + "tx.bytes", 0)),
            "sampleTime": sample_time,
        }
        for name, key in (("rxRate", "rx.bytes"), ("txRate", "tx.bytes")):
            rate = _rate(first, fi, last, li, key, interval, "net")
            if rate is not None:
                stats[name] = rate
        out[nic.target] = stats
    return out


def _latency(first: Sample | None, fi: int | None, last: Sample, li: int, mode: str) -> str:
    if first is None or fi is None:
        return "0"
    reqs = last.get(f"block.{li}.{mode}.reqs", 0) - first.get(f"block.{fi}.{mode}.reqs", 0)
    times = last.get(f"block.{li}.{mode}.times", 0) - first.get(f"block.{fi}.{mode}.times", 0)
    return str(times // reqs) if reqs > 0 else "0"


def disks(info: DomainInfo, storage_ids: Mapping[str, Mapping[str, Any]],
          first: Sample | None, last: Sample, interval: float) -> dict[str, Any]:
    """Per disk (keyed by target name): rates, latencies (ns), counters, sizes."""
    fidx, lidx = _index(first, "block"), _index(last, "block")
    out: dict[str, Any] = {}
    for disk in info.disks:
        li = lidx.get(disk.name)
        if li is None:
            continue
        fi = fidx.get(disk.name)
        p = f"block.{li}."
        stats: dict[str, Any] = {
            "readOps": str(last.get(p + "rd.reqs", 0)),
            "writeOps": str(last.get(p + "wr.reqs", 0)),
            "readBytes": str(last.get(p + "rd.bytes", 0)),
            "writtenBytes": str(last.get(p + "wr.bytes", 0)),
            "apparentsize": str(last.get(p + "capacity", 0)),
            "truesize": str(last.get(p + "physical", last.get(p + "allocation", 0))),
            "readLatency": _latency(first, fi, last, li, "rd"),
            "writeLatency": _latency(first, fi, last, li, "wr"),
            "flushLatency": _latency(first, fi, last, li, "fl"),
        }
        for name, key in (("readRate", "rd.bytes"), ("writeRate", "wr.bytes")):
            rate = _rate(first, fi, last, li, key, interval, "block")
            stats[name] = rate if rate is not None else "0.0"
        ids = storage_ids.get(disk.name) or {}
        if ids.get("imageID"):
            stats["imageID"] = ids["imageID"]
        out[disk.name] = stats
    return out


def balloon(info: DomainInfo, last: Sample, min_kib: int, enabled: bool) -> dict[str, Any]:
    if not enabled:
        return {}
    return {
        "balloon_max": str(info.mem_mib * 1024),
        "balloon_min": str(min_kib),
        "balloon_cur": str(last.get("balloon.current", info.current_mem_kib)),
        "balloon_target": str(info.current_mem_kib),
        "ballooning_enabled": True,
    }


def memory(first: Sample | None, last: Sample, interval: float) -> dict[str, Any]:
    """Guest memory figures from the balloon driver (empty without one)."""
    if "balloon.available" not in last:
        return {}
    out: dict[str, Any] = {
        "mem_total": str(last.get("balloon.available", 0)),
        "mem_unused": str(last.get("balloon.unused", 0)),
        "mem_free": str(last.get("balloon.unused", 0) + last.get("balloon.disk_caches", 0)),
    }
    for name, key in (("swap_in", "balloon.swap_in"), ("swap_out", "balloon.swap_out"),
                      ("majflt", "balloon.major_fault"), ("minflt", "balloon.minor_fault")):
        if first is None or interval <= 0:
            out[name] = 0
        else:
            out[name] = round(max(last.get(key, 0) - first.get(key, 0), 0) / interval)
    out["pageflt"] = out["majflt"] + out["minflt"]
    return out


def produce(
    info: DomainInfo,
    storage_ids: Mapping[str, Mapping[str, Any]],
    balloon_min_kib: int,
    balloon_enabled: bool,
    first: Sample | None,
    last: Sample,
    interval: float,
    sample_time: float,
) -> dict[str, Any]:
    """Every sampled field of one VM's ``VmStats``."""
    out = cpu(first, last, interval)
    vcpus = last.get("vcpu.current")
    out["vcpuCount"] = str(vcpus if vcpus is not None else info.vcpus)
    out["network"] = networks(info, first, last, interval, sample_time)
    out["disks"] = disks(info, storage_ids, first, last, interval)
    out["balloonInfo"] = balloon(info, last, balloon_min_kib, balloon_enabled)
    mem = memory(first, last, interval)
    if mem:
        out["memoryStats"] = mem
        if info.mem_mib:
            used = 100 - int(mem["mem_free"]) / 1024 / info.mem_mib * 100
            out["memUsage"] = str(max(int(used), 0))
    return out
