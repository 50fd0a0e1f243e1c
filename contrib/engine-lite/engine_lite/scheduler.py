"""VM placement: filters say which hosts may run a VM and why not; weights pick among them.

Filters (every refusal is reported with its reason): the host is Up, not in maintenance,
has the VM's networks, sees (active and valid) the storage domains of the VM's disks, and
has enough schedulable memory counting what is already committed
to VMs placed there (running or starting). Weights: ``even_distribution`` (default) prefers
the host with the fewest VMs, then the lowest committed share; ``power_saving`` packs VMs
on the most committed host that still fits, so others can be emptied. Pure functions over
snapshots; the engine supplies the numbers and acts on the choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine_lite.errors import InvalidInput, NoHostAvailable
from engine_lite.models import Host, HostStatus, Vm

POLICIES = ("even_distribution", "power_saving")


@dataclass(frozen=True)
class Candidate:
    host: Host
    committed_mib: int  # memory of VMs the engine has on this host (running or starting)
    vm_count: int


@dataclass(frozen=True)
class Limits:
    mem_overcommit_pct: int = 100
    host_reserved_mib: int = 256


def schedulable_mib(c: Candidate, limits: Limits) -> int:
    return c.host.mem_mib * limits.mem_overcommit_pct // 100 - limits.host_reserved_mib \
        - c.committed_mib


def refusal(vm: Vm, c: Candidate, limits: Limits) -> str | None:
    """Why ``c`` cannot run ``vm``, or None if it can."""
    host = c.host
    if host.status != HostStatus.UP:
        return f"status is {host.status}"
    if host.maintenance:
        return "in maintenance"
    wanted = {nic["network"] for nic in vm.nics if nic.get("network")}
    missing = sorted(wanted - set(host.networks))
    if missing:
        return f"lacks network(s) {', '.join(missing)}"
    unseen = sorted({d["domainID"] for d in vm.disks} - set(host.storage_domains))
    if unseen:
        return f"does not see storage domain(s) {', '.join(unseen)}"
    free = schedulable_mib(c, limits)
    if vm.mem_mib > free:
        return (f"not enough memory: VM needs {vm.mem_mib} MiB, {max(free, 0)} MiB schedulable "
                f"({host.mem_mib} MiB x {limits.mem_overcommit_pct}% - "
                f"{limits.host_reserved_mib} reserved - {c.committed_mib} committed)")
    return None


def choose_host(vm: Vm, candidates: Sequence[Candidate], policy: str, limits: Limits) -> Host:
    """The host to run ``vm`` on; :class:`NoHostAvailable` naming why each host was refused."""
    if policy not in POLICIES:
        raise InvalidInput(f"unknown scheduling policy {policy!r} (use {', '.join(POLICIES)})")
    fit: list[Candidate] = []
    refused: dict[str, str] = {}
    for c in candidates:
        reason = refusal(vm, c, limits)
        if reason is None:
            fit.append(c)
        else:
            refused[c.host.name] = reason
    if not fit:
        if not candidates:
            raise NoHostAvailable(f"cannot run VM {vm.name!r}: no hosts in the cluster",
                                  filtered={})
        why = "; ".join(f"{name}: {reason}" for name, reason in sorted(refused.items()))
        raise NoHostAvailable(f"cannot run VM {vm.name!r}: no host fits ({why})",
                              filtered=refused)
    if policy == "power_saving":
        best = min(fit, key=lambda c: (-_share(c), c.host.name))
    else:
        best = min(fit, key=lambda c: (c.vm_count, _share(c), c.host.name))
    return best.host


def _share(c: Candidate) -> float:
    return c.committed_mib / c.host.mem_mib if c.host.mem_mib else 1.0
