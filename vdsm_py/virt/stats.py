"""Periodic bulk sampling of every VM's statistics; the verbs answer from what it leaves.

Owns the sampling loop: every ``stats_interval`` seconds one worker call asks libvirt for
all domains at once (``getAllDomainStats``), refreshes the domain XML of VMs started or
changed since (tap names, ports, aliases; at most ``XML_REFRESH_PER_PASS`` per pass), and turns each VM's previous and current samples into
VDSM's fields (:mod:`.statsconv`) — all on the worker, so a thousand VMs never hold the
asyncio loop; the loop then only stores each VM's result. Every ``guest_agent_interval``
the VMs whose guest agent is connected are asked for guest information
(:mod:`.guestagent`). A failed pass is logged and the previous figures stay.

A pass that falls due while VMs are starting waits until the starts are over (at most
:data:`MAX_DEFER` seconds, and never longer than one interval): a pass over a thousand VMs
holds the GIL for a tenth of a second, and every start of a burst would stall behind it
(each libvirt call of a start needs the GIL before and after), while stats a moment older
cost nobody anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import libvirt

from vdsm_py.errors import VdsmError
from vdsm_py.virt import domparse, guestagent, statsconv
from vdsm_py.virt.domparse import DomainInfo
from vdsm_py.virt.libvirtconn import message
from vdsm_py.virt.services import Services
from vdsm_py.virt.vm import Vm

log = logging.getLogger("vdsm_py.virt.stats")

# Domain XMLs re-read in one pass at most (~0.15 ms each): after a burst of creates the
# refresh is spread over a few passes and one pass stays short.
XML_REFRESH_PER_PASS = 200
MAX_DEFER = 2.0  # seconds a pass waits at most for VM starts under way to end
DEFER_POLL = 0.05  # how often a deferred pass looks again


@dataclass(frozen=True, slots=True)
class _Job:
    """What the worker needs to know of one VM (immutable, taken on the loop)."""

    vm_id: str
    info: DomainInfo | None
    storage_ids: dict[str, dict[str, Any]]
    balloon_min_kib: int
    refresh_xml: bool
    xml_generation: int


@dataclass
class _Result:
    at: float
    raw: dict[str, dict[str, Any]]  # libvirt's sample of every domain, by UUID
    stats: dict[str, dict[str, Any]]  # VDSM's fields of every VM sampled
    infos: dict[str, tuple[DomainInfo, str, int]]  # refreshed XML: parsed, hash, generation


class StatsSampler:
    def __init__(self, svc: Services, vms: Callable[[], Mapping[str, Vm]],
                 busy: Callable[[], bool] | None = None) -> None:
        self.svc = svc
        self._vms = vms
        self._busy = busy  # whether VM starts are under way (passes wait for them)
        self.interval = svc.config.stats_interval
        self.agent_interval = svc.config.guest_agent_interval
        self._previous: dict[str, tuple[float, dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_agent_poll = 0.0
        self.last_duration = 0.0

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="vm-stats")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._stopping = True
        # Python 3.11's wait_for (under Executor.run) can swallow a cancellation that
        # races with the result: cancel until the task really ended.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1)

    async def _run(self) -> None:
        while not self._stopping:
            await self._wait_quiet()
            try:
                await self.sample_once()
            except (libvirt.libvirtError, VdsmError) as exc:
                log.warning("VM stats sampling failed: %s", message(exc))
            except Exception:
                log.exception("VM stats sampling failed")
            await asyncio.sleep(self.interval)

    async def _wait_quiet(self) -> None:
        """Let starts under way end first (bounded: see the module's docstring)."""
        busy = self._busy
        if busy is None or not busy():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(MAX_DEFER, self.interval)
        while busy() and loop.time() < deadline and not self._stopping:
            await asyncio.sleep(DEFER_POLL)

    async def sample_once(self) -> float:
        """One pass over every VM; returns how long it took (seconds)."""
        started = time.monotonic()
        vms = [vm for vm in self._vms().values() if vm.has_domain and not vm.starting]
        # after a burst of creates the reads are spread over a few passes
        stale = [vm.id for vm in vms if not vm.described]
        refresh = set(stale[:XML_REFRESH_PER_PASS])
        jobs = [self._job(vm, vm.id in refresh) for vm in vms]
        previous = self._previous
        result = await self.svc.conn.call(
            lambda conn: _sample(conn, jobs, previous), name="getAllDomainStats")
        self._store(result)
        if self.agent_interval > 0 and started - self._last_agent_poll >= self.agent_interval:
            self._last_agent_poll = started
            await self.poll_agents()
        self.last_duration = time.monotonic() - started
        log.debug("sampled %d VMs in %.1f ms", len(jobs), self.last_duration * 1000)
        return self.last_duration

    def _job(self, vm: Vm, refresh_xml: bool) -> _Job:
        return _Job(vm.id, vm.known_info, _storage_ids(vm),
                    vm.meta.get_int("memGuaranteedSize") * 1024, refresh_xml,
                    vm.xml_generation)

    def _store(self, result: _Result) -> None:
        vms = self._vms()
        for vm_id, (info, xml_hash, generation) in result.infos.items():
            vm = vms.get(vm_id)
            if vm is not None:
                vm.info = info
                vm.xml_hash = xml_hash
                vm.xml_stale = vm.xml_generation != generation  # changed while we read
                vm.agent_changed(info.agent_connected or vm.agent_connected)
        for vm_id, stats in result.stats.items():
            vm = vms.get(vm_id)
            if vm is not None and vm.has_domain:
                vm.sample = stats
                vm.stats_cache = None
        self._previous = {vm_id: (result.at, raw) for vm_id, raw in result.raw.items()}

    async def poll_agents(self) -> None:
        ids = [vm.id for vm in self._vms().values() if vm.agent_connected and vm.has_domain]
        if not ids:
            return
        try:
            found = await self.svc.conn.call(lambda c: guestagent.query(c, ids),
                                             name="guestInfo")
        except (libvirt.libvirtError, VdsmError) as exc:
            log.warning("guest agent poll failed: %s", message(exc))
            return
        vms = self._vms()
        for vm_id, guest in found.items():
            vm = vms.get(vm_id)
            if vm is not None and guest != vm.guest:
                vm.guest = guest
                vm.stats_cache = None


def _storage_ids(vm: Vm) -> dict[str, dict[str, Any]]:
    """Each disk's storage IDs by name, rebuilt only when the VM's devices may have changed
    (a pass over 1000 VMs must not rebuild 1000 unchanged dicts)."""
    key = (vm.xml_generation, len(vm.meta.devices))
    cached = vm.storage_ids_cache
    if cached is not None and cached[0] == key:
        return cached[1]
    ids = {d.attrs.get("name", ""): dict(d.values) for d in vm.meta.devices
           if d.attrs.get("devtype") == "disk"}
    vm.storage_ids_cache = (key, ids)
    return ids


def _sample(conn: libvirt.virConnect, jobs: list[_Job],
            previous: Mapping[str, tuple[float, dict[str, Any]]]) -> _Result:
    """Worker: one bulk query, the XML refreshes, and the conversion of every VM."""
    raw = {dom.UUIDString(): stats
           for dom, stats in conn.getAllDomainStats(statsconv.BULK_FLAGS, 0)}
    at = time.monotonic()
    infos: dict[str, tuple[DomainInfo, str, int]] = {}
    for job in jobs:
        if job.refresh_xml and job.vm_id in raw:
            try:
                xml = conn.lookupByUUIDString(job.vm_id).XMLDesc(0)
            except libvirt.libvirtError as exc:
                log.debug("vmId=%s: XML refresh failed: %s", job.vm_id, message(exc))
                continue
            infos[job.vm_id] = (domparse.parse(xml), str(zlib.crc32(xml.encode("utf-8"))),
                                job.xml_generation)
    stats = {}
    for job in jobs:
        last = raw.get(job.vm_id)
        info = infos[job.vm_id][0] if job.vm_id in infos else job.info
        if last is None or info is None:
            continue
        prev_at, first = previous.get(job.vm_id, (at, None))
        stats[job.vm_id] = statsconv.produce(
            info, job.storage_ids, job.balloon_min_kib, info.balloon, first, last,
            at - prev_at, at)
    return _Result(at, raw, stats, infos)
