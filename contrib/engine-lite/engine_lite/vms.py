"""VMs: definitions, start (schedule, then ``VM.create``), stop, console tickets, and the
convergence of the engine's view with what hosts report.

Owns the VM side of the engine: the checks on a definition, the scheduling decision and
its memory commitment (made before the first ``await`` so that concurrent starts see it),
the verbs sent to hosts (``VM.create``, ``VM.destroy``, ``VM.setTicket``), and how reports
(``Host.getAllVmStats``, ``|virt|VM_status|`` events) update VMs: a VM a host no longer
reports is Down; a Down VM is cleared from its host; a highly available VM that should be
up and went down is started again. VMs of a host that stopped answering are Unknown; they
are called Down (and highly available ones restarted elsewhere) only once fencing
(:mod:`engine_lite.fencing`) made sure they no longer run there. Must not manage hosts.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from typing import Any

from engine_lite.context import Context
from engine_lite.errors import (
    AlreadyExists,
    HostCallError,
    HostUnreachable,
    InvalidInput,
    InvalidState,
    NoHostAvailable,
)
from engine_lite.models import VM_DOWN, VM_STARTING, VM_UNKNOWN, Desired, HostStatus, Vm
from engine_lite.scheduler import Candidate, Limits, choose_host
from engine_lite.vmdef import check_disks, check_name, check_nics, vm_params
from vdsm_py.client import RpcError

log = logging.getLogger("engine_lite.vms")

NO_SUCH_VM = 1


class VmManager:
    def __init__(self, ctx: Context, cluster_id: str) -> None:
        self.ctx = ctx
        self.cluster_id = cluster_id
        self._locks: dict[str, asyncio.Lock] = {}
        self._unknown_reported: set[str] = set()
        self._touched: dict[str, float] = {}  # vm id -> loop time of its last known change
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- admin operations ---------------------------------------------------------------

    async def create(self, name: str, mem_mib: int, vcpus: int = 1, *,
                     nics: list[dict[str, Any]] | None = None,
                     custom: dict[str, str] | None = None, ha: bool = False,
                     disks: list[dict[str, Any]] | None = None) -> Vm:
        check_name("VM", name)
        if not isinstance(mem_mib, int) or mem_mib < 1:
            raise InvalidInput(f"memory must be a positive number of MiB, not {mem_mib!r}")
        if not isinstance(vcpus, int) or not 1 <= vcpus <= 4096:
            raise InvalidInput(f"vCPUs must be between 1 and 4096, not {vcpus!r}")
        nics = check_nics(nics)
        disks = check_disks(disks)
        if any(vm.name == name for vm in self.ctx.vms.values()):
            raise AlreadyExists(f"a VM named {name!r} already exists")
        vm = Vm(str(uuid.uuid4()), name, self.cluster_id, mem_mib, vcpus, nics,
                disks, dict(custom or {}), ha)
        await self.ctx.store.run(self.ctx.store.repo.add_vm, vm)
        self.ctx.vms[vm.id] = vm
        await self.ctx.record("info", "vm_created", f"VM {name} defined ({mem_mib} MiB, "
                              f"{vcpus} vCPU)", vm_id=vm.id)
        return vm

    async def remove(self, ref: str) -> None:
        vm = self.ctx.vm(ref)
        async with self._lock(vm.id):
            if vm.status != VM_DOWN:
                raise InvalidState(f"VM {vm.name} is {vm.status}; stop it first")
            await self.ctx.store.run(self.ctx.store.repo.remove_vm, vm.id)
            del self.ctx.vms[vm.id]
            self._touched.pop(vm.id, None)
        await self.ctx.record("info", "vm_removed", f"VM {vm.name} removed", vm_id=vm.id)

    async def start(self, ref: str, *, flow_id: str | None = None) -> Vm:
        vm = self.ctx.vm(ref)
        async with self._lock(vm.id):
            if vm.status == VM_UNKNOWN:
                raise InvalidState(f"VM {vm.name}'s host is not responding; its state is "
                                   "unknown, so it is not started elsewhere")
            if vm.status != VM_DOWN:
                raise InvalidState(f"VM {vm.name} is already {vm.status} on "
                                   f"{self._host_name(vm.host_id)}")
            vm.desired = Desired.UP
            await self._launch(vm, flow_id)
        return vm

    async def stop(self, ref: str, *, flow_id: str | None = None) -> Vm:
        vm = self.ctx.vm(ref)
        async with self._lock(vm.id):
            if vm.status == VM_DOWN:
                if vm.desired != Desired.DOWN:
                    vm.desired = Desired.DOWN
                    await self.ctx.save_vm(vm)
                raise InvalidState(f"VM {vm.name} is not running")
            host_id = vm.host_id
            vm.desired = Desired.DOWN
            await self.ctx.save_vm(vm)
            try:
                await self._call(host_id, "VM.destroy", {"vmID": vm.id}, flow_id)
            except HostCallError as exc:
                if exc.details.get("code") != NO_SUCH_VM:
                    raise
            await self._set_down(vm, "stopped by the admin")
        await self.ctx.record("info", "vm_stopped", f"VM {vm.name} stopped", vm_id=vm.id,
                              host_id=host_id)
        return vm

    async def ticket(self, ref: str, ttl: int | None = None) -> dict[str, Any]:
        vm = self.ctx.vm(ref)
        ttl = self.ctx.config.ticket_ttl if ttl is None else ttl
        if not isinstance(ttl, int) or ttl <= 0:
            raise InvalidInput(f"ticket validity must be a positive number of seconds, not {ttl!r}")
        if vm.host_id is None or vm.status in (VM_DOWN, VM_UNKNOWN):
            raise InvalidState(f"VM {vm.name} is not running ({vm.status})")
        password = secrets.token_urlsafe(12)
        await self._call(vm.host_id, "VM.setTicket", {
            "vmID": vm.id, "password": password, "ttl": ttl,
            "existingConnAction": "disconnect", "params": {}})
        host = self.ctx.hosts[vm.host_id]
        graphics: dict[str, Any] = next(iter(vm.display or []), {}) \
            if isinstance(vm.display, list) else {}
        return {"vm": vm.name, "host": host.address, "hostName": host.name,
                "type": graphics.get("type"), "port": graphics.get("port"),
                "tlsPort": graphics.get("tlsPort"), "password": password, "ttl": ttl}

    # -- scheduling and launching -------------------------------------------------------

    def candidates(self) -> list[Candidate]:
        committed: dict[str, int] = {}
        count: dict[str, int] = {}
        for other in self.ctx.vms.values():
            if other.host_id and other.status != VM_DOWN:
                committed[other.host_id] = committed.get(other.host_id, 0) + other.mem_mib
                count[other.host_id] = count.get(other.host_id, 0) + 1
        return [Candidate(h, committed.get(h.id, 0), count.get(h.id, 0))
                for h in self.ctx.hosts.values() if h.cluster_id == self.cluster_id]

    def schedule(self, vm: Vm) -> str:
        cfg = self.ctx.config
        limits = Limits(cfg.mem_overcommit_pct, cfg.host_reserved_mib)
        return choose_host(vm, self.candidates(), cfg.scheduling_policy, limits).id

    async def _launch(self, vm: Vm, flow_id: str | None) -> None:
        try:
            host_id = self.schedule(vm)  # no await between deciding and committing memory
        except NoHostAvailable as exc:
            vm.last_error = exc.message
            await self.ctx.save_vm(vm)
            raise
        vm.host_id, vm.status, vm.last_error = host_id, VM_STARTING, ""
        self._touch(vm.id)
        await self.ctx.save_vm(vm)
        host = self.ctx.hosts[host_id]
        try:
            result = await self._call(host_id, "VM.create",
                                      {"vmID": vm.id, "vmParams": vm_params(vm)}, flow_id)
        except (HostCallError, HostUnreachable) as exc:
            vm.host_id, vm.status, vm.last_error = None, VM_DOWN, exc.message
            await self.ctx.save_vm(vm)
            await self.ctx.record("error", "vm_start_failed",
                                  f"VM {vm.name} failed to start on {host.name}: {exc.message}",
                                  vm_id=vm.id, host_id=host_id)
            raise
        if isinstance(result, dict) and isinstance(result.get("status"), str) \
                and vm.status == VM_STARTING:
            vm.status = result["status"]
            self._touch(vm.id)
        await self.ctx.save_vm(vm)
        await self.ctx.record("info", "vm_started", f"VM {vm.name} started on {host.name}",
                              vm_id=vm.id, host_id=host_id)

    async def _call(self, host_id: str | None, method: str, params: dict[str, Any],
                    flow_id: str | None = None) -> Any:
        host = self.ctx.hosts.get(host_id or "")
        monitor = self.ctx.monitors.get(host_id or "")
        if host is None or monitor is None:
            raise HostUnreachable("the VM has no host")
        try:
            return await monitor.call(method, params, flow_id=flow_id)
        except RpcError as exc:
            raise HostCallError(f"host {host.name} refused {method}: {exc.message}",
                                code=exc.code, host=host.name) from None
        except (OSError, TimeoutError) as exc:
            raise HostUnreachable(f"host {host.name} did not answer {method}: {exc}",
                                  host=host.name) from None

    # -- what hosts report --------------------------------------------------------------

    async def host_report(self, host_id: str, stats: list[dict[str, Any]],
                          sent_at: float) -> None:
        """A full ``Host.getAllVmStats`` asked at loop time ``sent_at``: what ran there then,
        and nothing else. A VM that changed after ``sent_at`` (an event, a start, a stop
        crossing the report on the wire) is left alone: the report is older than what the
        engine knows of it, and would otherwise call a just-started VM down."""

        def fresh(vm_id: str) -> bool:
            return self._touched.get(vm_id, float("-inf")) < sent_at

        reported = {s["vmId"]: s for s in stats}
        for vm_id, stat in reported.items():
            if fresh(vm_id):
                await self.vm_update(host_id, vm_id, stat)
        for vm in list(self.ctx.vms.values()):
            if vm.host_id == host_id and vm.id not in reported and vm.status != VM_STARTING \
                    and vm.status != VM_DOWN and not self._lock(vm.id).locked() \
                    and fresh(vm.id):
                await self._went_down(vm, f"no longer running on {self._host_name(host_id)}")

    async def vm_event(self, host_id: str, vm_id: str, stat: dict[str, Any]) -> None:
        """A ``|virt|VM_status|`` event: newer than any report asked before it."""
        if vm_id in self.ctx.vms:
            self._touch(vm_id)
        await self.vm_update(host_id, vm_id, stat)

    async def vm_update(self, host_id: str, vm_id: str, stat: dict[str, Any]) -> None:
        vm = self.ctx.vms.get(vm_id)
        status = stat.get("status")
        if not isinstance(status, str):
            return
        if vm is None:
            if vm_id not in self._unknown_reported:
                self._unknown_reported.add(vm_id)
                await self.ctx.record("warning", "vm_external",
                                      f"host {self._host_name(host_id)} runs VM {vm_id} "
                                      "unknown to the engine", host_id=host_id, vm_id=vm_id)
            return
        if status == VM_DOWN:
            if vm.host_id == host_id and vm.status != VM_DOWN and not self._lock(vm.id).locked():
                reason = str(stat.get("exitMessage") or "the VM went down")
                self._spawn(self._clear_down(host_id, vm.id))
                await self._went_down(vm, reason)
            return
        display = stat.get("displayInfo")
        changed = vm.status != status or vm.host_id != host_id
        if changed or (isinstance(display, list) and display != vm.display):
            if changed and vm.status in (VM_UNKNOWN, VM_DOWN):
                await self.ctx.record("info", "vm_status", f"VM {vm.name} is {status} on "
                                      f"{self._host_name(host_id)}", vm_id=vm.id,
                                      host_id=host_id)
            vm.status, vm.host_id = status, host_id
            if isinstance(display, list):
                vm.display = display  # type: ignore[assignment]
            await self.ctx.save_vm(vm)

    async def host_unresponsive(self, host_id: str) -> None:
        for vm in self.ctx.vms.values():
            if vm.host_id == host_id and vm.status not in (VM_DOWN, VM_UNKNOWN):
                vm.status = VM_UNKNOWN
                await self.ctx.save_vm(vm)

    def awaiting_fence(self, host_id: str) -> list[Vm]:
        """Highly available VMs that should be up and are Unknown on ``host_id``."""
        return [vm for vm in self.ctx.vms.values() if vm.host_id == host_id and vm.ha
                and vm.desired == Desired.UP and vm.status == VM_UNKNOWN]

    async def fenced(self, host_id: str, vm_ids: list[str] | None, reason: str) -> None:
        """Fencing proved these VMs (None: every VM of ``host_id``) are not running there:
        they are Down, and highly available ones are restarted elsewhere."""
        for vm in list(self.ctx.vms.values()):
            if vm.host_id != host_id or vm.status == VM_DOWN or \
                    (vm_ids is not None and vm.id not in vm_ids):
                continue
            async with self._lock(vm.id):
                if vm.host_id == host_id and vm.status != VM_DOWN:
                    await self._went_down(vm, reason)

    async def _went_down(self, vm: Vm, reason: str) -> None:
        host_id = vm.host_id
        await self._set_down(vm, reason)
        await self.ctx.record("warning", "vm_down", f"VM {vm.name} is down: {reason}",
                              vm_id=vm.id, host_id=host_id)
        if vm.ha and vm.desired == Desired.UP:
            self._spawn(self._restart_ha(vm.id))

    async def _set_down(self, vm: Vm, reason: str) -> None:
        vm.status, vm.host_id, vm.last_error = VM_DOWN, None, reason
        vm.display = {}
        self._touch(vm.id)
        await self.ctx.save_vm(vm)

    async def _clear_down(self, host_id: str, vm_id: str) -> None:
        """A host keeps a Down VM until the engine has seen it; destroy it there."""
        try:
            await self._call(host_id, "VM.destroy", {"vmID": vm_id})
        except (HostCallError, HostUnreachable) as exc:
            log.info("vmId=%s: clearing the Down VM failed: %s", vm_id, exc.message)

    async def _restart_ha(self, vm_id: str) -> None:
        vm = self.ctx.vms.get(vm_id)
        if vm is None:
            return
        async with self._lock(vm_id):
            if vm.status != VM_DOWN or vm.desired != Desired.UP:
                return
            try:
                await self._launch(vm, None)
            except (NoHostAvailable, HostCallError, HostUnreachable) as exc:
                await self.ctx.record("error", "vm_ha_restart_failed",
                                      f"highly available VM {vm.name} not restarted: "
                                      f"{exc.message}", vm_id=vm.id)
                return
        await self.ctx.record("info", "vm_ha_restarted", f"highly available VM {vm.name} "
                              "restarted", vm_id=vm.id)

    async def recover_pending(self) -> None:
        """After an engine restart: HA VMs that should be up and are Down are started."""
        for vm in list(self.ctx.vms.values()):
            if vm.ha and vm.desired == Desired.UP and vm.status == VM_DOWN:
                self._spawn(self._restart_ha(vm.id))

    def host_ready(self, host_id: str) -> None:
        """A host came Up: HA VMs waiting for a host get another chance."""
        if self.ctx.hosts[host_id].status == HostStatus.UP:
            self._spawn(self.recover_pending())

    # -- helpers ------------------------------------------------------------------------

    def _touch(self, vm_id: str) -> None:
        self._touched[vm_id] = asyncio.get_running_loop().time()

    def _lock(self, vm_id: str) -> asyncio.Lock:
        return self._locks.setdefault(vm_id, asyncio.Lock())

    def _host_name(self, host_id: str | None) -> str:
        host = self.ctx.hosts.get(host_id or "")
        return host.name if host else "no host"

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
