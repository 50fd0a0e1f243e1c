"""The VMs of this host: the one object the daemon builds and the VM verbs call.

Owns the container of :class:`~vdsm_py.virt.vm.Vm` objects and its rules (one VM per
UUID; a Down VM stays listed until destroyed), the routing of libvirt's events to the VMs,
the publication of ``|virt|VM_status|<vmId>`` events, and the life of the parts: the
libvirt connection, the stats sampler, recovery. Each operation takes the VM's lock and
hands the work to the module that owns it (:mod:`.lifecycle`, :mod:`.powerdown`,
:mod:`.ticket`, :mod:`.devices`), so operations on one VM are serialized while different
VMs proceed in parallel.

Composition (the daemon)::

    manager = VmManager.build(config.virt, executor, events, hooks)
    await manager.start()      # connect to libvirt, start sampling
    await manager.recover()    # adopt running domains (dispatcher.recovering meanwhile)
    ...
    await manager.stop()       # stop watching; never touches the VMs themselves
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import libvirt
import orjson

from vdsm_py.config import VirtConfig
from vdsm_py.errors import NoSuchVM, VdsmError, VMExists, invalid_parameter
from vdsm_py.events import EventBus
from vdsm_py.executor import Executor
from vdsm_py.virt import (
    console,
    devices,
    domxml,
    lifecycle,
    powerdown,
    recovery,
    report,
    storage_drives,
    storage_xml,
    ticket,
)
from vdsm_py.virt.libvirtconn import LibvirtConnection, message
from vdsm_py.virt.metadata import VmMetadata
from vdsm_py.virt.services import Services, libvirt_failure
from vdsm_py.virt.spec import parse_vm_params
from vdsm_py.virt.stats import StatsSampler
from vdsm_py.virt.status import ExitCode, ExitReason, VmStatus
from vdsm_py.virt.vm import Vm

if TYPE_CHECKING:
    from vdsm_py.hooks import HookRunner

log = logging.getLogger("vdsm_py.virt")

T = TypeVar("T")

MAX_POWERDOWN_TIMEOUT = 24 * 3600
# VM.create parses a domain XML up to this many characters on the loop itself. A worker
# would not spare the GIL: most of domxml.parse is Python (our metadata, NIC addresses,
# checks) that holds it wherever it runs, and handing it to a worker adds GIL hand-offs
# with the loop and with the createXML calls on every create (bench/vms.py, 200 creates
# at once, against as many raw createXML: the VM layer alone 1.43 against 1.84, medians of
# 3 A/B runs; over RPC 2.03 against 2.30, lower in 7 of 9 same-run rounds). Larger
# documents still go to a worker, so that one VM.create holds the loop for about a
# millisecond at most.
INLINE_PARSE_LIMIT = 32 * 1024


class VmManager:
    def __init__(
        self,
        conn: LibvirtConnection,
        executor: Executor,
        events: EventBus,
        config: VirtConfig,
        hooks: HookRunner | None = None,
        storage: storage_drives.DriveStorage | None = None,
    ) -> None:
        self.svc = Services(conn, config, hooks)
        # prepared drives and VM leases; a lease lost under a running VM stops it
        self.drives = storage_drives.VmStorage(storage, on_lost=self._lease_lost)
        self.config = config
        self.executor = executor
        self.events = events
        self.vms: dict[str, Vm] = {}
        self._starting = 0  # start tasks under way (the sampler lets them go first)
        self.sampler = StatsSampler(self.svc, lambda: self.vms,
                                    busy=lambda: self.starts_under_way > 0)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._held_events: list[tuple[str, tuple[Any, ...]]] | None = None

    @classmethod
    def build(cls, config: VirtConfig, executor: Executor, events: EventBus,
              hooks: HookRunner | None = None,
              storage: storage_drives.DriveStorage | None = None) -> VmManager:
        conn = LibvirtConnection(config.libvirt_uri, executor, timeout=config.libvirt_timeout)
        return cls(conn, executor, events, config, hooks, storage)

    # -- life of the subsystem -------------------------------------------------------------

    async def start(self) -> None:
        """Connect to libvirt (events flow from now on) and start sampling."""
        await self.svc.conn.open(self)
        await self.sampler.start()

    async def recover(self) -> int:
        """Adopt every running domain; returns how many VMs are known afterwards."""
        self._held_events = []
        try:
            for found in await recovery.scan(self.svc, self.executor.size):
                self._adopt(found)
        finally:
            held, self._held_events = self._held_events, None
            for method, args in held:
                getattr(self, method)(*args)
        await self.drives.recovered(set(self.vms))  # leases of VMs gone meanwhile go back
        log.info("recovery done: %d VMs", len(self.vms))
        await self.executor.run(recovery.release_freed_memory, name="malloc_trim")
        return len(self.vms)

    async def stop(self) -> None:
        """Stop watching (sampler, timers, connection). Running VMs are left alone."""
        await self.sampler.stop()
        for vm in self.vms.values():
            vm.cancel_timers()
        for task in list(self._tasks):
            task.cancel()
        await self.svc.conn.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the container ---------------------------------------------------------------------

    @property
    def starts_under_way(self) -> int:
        """VM starts begun and not finished yet (stats passes wait for them)."""
        return self._starting

    def get(self, vm_id: str) -> Vm:
        vm = self.vms.get(vm_id)
        if vm is None:
            raise NoSuchVM(f"Virtual machine {vm_id} does not exist")
        return vm

    def _new_vm(self, vm_id: str, name: str, meta: VmMetadata, **kw: Any) -> Vm:
        return Vm(vm_id, name, meta=meta, on_change=self._on_change,
                  powering_up_timeout=self.config.powering_up_timeout, **kw)

    def _on_change(self, vm: Vm) -> None:
        if vm.is_down:
            self.drives.detach_soon(vm.id)  # its drives and leases go back to storage
        if vm.is_down and vm.start_error and vm.create_waiting:
            return  # the creator answers with the error; nothing to announce
        self.events.publish(f"|virt|VM_status|{vm.id}", {vm.id: vm.event_params()})

    def _adopt(self, found: recovery.Found) -> None:
        info = found.info
        vm = self.vms.get(info.vm_id)
        if vm is not None:
            if not vm.starting and vm.status != found.status and found.status in (
                    VmStatus.UP, VmStatus.PAUSED):
                vm.set_status(found.status)
            return
        meta = info.meta or VmMetadata()
        vm = self._new_vm(info.vm_id, info.name, meta, status=found.status, info=info,
                          external=info.external, start_time=meta.get_float("startTime"))
        vm.xml_hash = found.xml_hash
        vm.xml_stale = False
        vm.was_up = True
        self.vms[vm.id] = vm
        log.info("vmId=%s: adopted %s VM %r (%s)", vm.id,
                 "external" if vm.external else "our", vm.name, vm.status)
        if self.drives.storage is not None and info.meta is not None and \
                storage_xml.meta_references_storage(info.meta):
            self._spawn(self._adopt_storage(vm), f"adopt-storage-{vm.id}")

    async def _adopt_storage(self, vm: Vm) -> None:
        """Re-take an adopted VM's leases; if another host took one, this copy must go."""
        if not await self.drives.adopt(vm.id, vm.meta):
            self._lease_lost(vm.id, "VM lease held by another host: the VM runs there")

    def _lease_lost(self, vm_id: str, why: str) -> None:
        """A VM without its lease must not run on: Down, and its domain destroyed."""
        vm = self.vms.get(vm_id)
        if vm is None or vm.is_down:
            return
        log.error("vmId=%s: %s; destroying this copy", vm_id, why)
        vm.destroy_requested = True  # a start under way stops before createXML
        vm.set_down(ExitCode.ERROR, ExitReason.GENERIC_ERROR, why)
        self._spawn(self._kill_stray(vm_id), f"lease-lost-{vm_id}")

    # -- libvirt events (EventListener) -----------------------------------------------

    def _held(self, method: str, *args: Any) -> bool:
        if self._held_events is None:
            return False
        self._held_events.append((method, args))
        return True

    def on_lifecycle(self, vm_id: str, event: int, detail: int) -> None:
        if self._held("on_lifecycle", vm_id, event, detail):
            return
        vm = self.vms.get(vm_id)
        if vm is None:
            if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
                self._spawn(self._adopt_one(vm_id), f"adopt-{vm_id}")
            return
        if vm.is_down and vm.start_error and event == libvirt.VIR_DOMAIN_EVENT_STARTED:
            # a create that timed out in libvirt finished after all: nobody wants it
            self._spawn(self._kill_stray(vm_id), f"stray-{vm_id}")
            return
        vm.on_lifecycle(event, detail)

    def on_reboot(self, vm_id: str) -> None:
        if not self._held("on_reboot", vm_id) and vm_id in self.vms:
            self.vms[vm_id].rebooted()

    def on_agent(self, vm_id: str, connected: bool) -> None:
        if self._held("on_agent", vm_id, connected) or vm_id not in self.vms:
            return
        self.vms[vm_id].agent_changed(connected)
        if connected:
            self._spawn(self.sampler.poll_agents(), "guest-agent-poll")

    def on_device_removed(self, vm_id: str, alias: str) -> None:
        vm = self.vms.get(vm_id)
        waiter = vm.removal_waiters.get(alias) if vm else None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_graphics(self, vm_id: str, phase: int, client_ip: str, client_port: str) -> None:
        vm = self.vms.get(vm_id)
        if vm is None:
            return
        if phase in (libvirt.VIR_DOMAIN_EVENT_GRAPHICS_CONNECT,
                     libvirt.VIR_DOMAIN_EVENT_GRAPHICS_INITIALIZE):
            console.client_connected(vm, client_ip, client_port)
        elif phase == libvirt.VIR_DOMAIN_EVENT_GRAPHICS_DISCONNECT:
            console.client_disconnected(vm, client_ip, client_port,
                                        self.config.console_disconnect_action_delay,
                                        self._console_action)

    async def _console_action(self, vm: Vm, action: str) -> None:
        """The ticket's disconnectAction, once the console client stayed away."""
        log.info("vmId=%s: console disconnect action %s", vm.id, action)
        try:
            if action in ("SHUTDOWN", "REBOOT"):
                reboot = action == "REBOOT"
                await self.shutdown(vm.id, delay=0, reboot=reboot, message=(
                    console.REBOOT_MESSAGE if reboot else console.SHUTDOWN_MESSAGE))
                return
            command = console.guest_command(action)
            if command is None:
                return
            if not vm.agent_connected:
                log.warning("vmId=%s: cannot %s on console disconnect: no guest agent",
                            vm.id, action)
                return
            timeout = int(self.config.libvirt_timeout)
            answer = await self.svc.conn.call_domain(
                vm.id, lambda d: console.run_guest_command(d, command, timeout),
                name="qemuAgentCommand")
            log.info("vmId=%s: guest agent ran %s: %s", vm.id, action, answer)
        except (libvirt.libvirtError, VdsmError) as exc:
            log.error("vmId=%s: console disconnect action %s failed: %s", vm.id, action,
                      message(exc))

    def on_reconnected(self) -> None:
        self._spawn(self._resync(), "virt-resync")

    async def _adopt_one(self, vm_id: str) -> None:
        try:
            for found in await recovery.scan(self.svc, 1):
                if found.info.vm_id == vm_id:
                    self._adopt(found)
        except (libvirt.libvirtError, VdsmError) as exc:
            log.warning("vmId=%s: cannot adopt the new domain: %s", vm_id, message(exc))

    async def _kill_stray(self, vm_id: str) -> None:
        try:
            await self.svc.conn.call_domain(vm_id, lambda d: d.destroy(), name="destroy")
            log.warning("vmId=%s: destroyed a domain whose start had been given up", vm_id)
        except (libvirt.libvirtError, VdsmError) as exc:
            log.error("vmId=%s: cannot destroy the stray domain: %s", vm_id, message(exc))

    async def _resync(self) -> None:
        """After libvirtd came back: VMs that vanished are Down, new domains adopted."""
        try:
            found = await recovery.scan(self.svc, self.executor.size)
        except (libvirt.libvirtError, VdsmError) as exc:
            log.error("resynchronising with libvirt failed: %s", message(exc))
            return
        present = {f.info.vm_id for f in found}
        for vm in list(self.vms.values()):
            if vm.has_domain and not vm.starting and vm.id not in present:
                vm.set_down(ExitCode.ERROR, ExitReason.LIBVIRT_DOMAIN_MISSING)
        for f in found:
            self._adopt(f)

    # -- create and destroy --------------------------------------------------------------

    async def create(self, vm_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Admit the VM and start it in the background; the WaitForLaunch status.

        A libvirt refusal within ``create_error_wait`` is raised as 9 and leaves nothing;
        later failures make the VM Down (and announce it).
        """
        if vm_id in self.vms:
            raise VMExists(f"Virtual machine {vm_id} already exists")
        xml = params.get("xml")
        if xml is not None:
            if not isinstance(xml, str):
                raise invalid_parameter("vmParams.xml", "expected a string")
            if len(xml) <= INLINE_PARSE_LIMIT:
                defn = domxml.parse(xml, vm_id)
            else:
                defn = await self.executor.run(domxml.parse, xml, vm_id, name="parse domain XML")
                if vm_id in self.vms:  # created meanwhile
                    raise VMExists(f"Virtual machine {vm_id} already exists")
            if "launchPaused" in params:
                defn.meta.values["launchPaused"] = params["launchPaused"] in (True, "true")
        else:
            defn = domxml.build(parse_vm_params(vm_id, params), self.config)
            storage_xml.add_leases(defn.root, defn.meta, storage_xml.plain_leases(params))
        self.drives.check(defn.root, defn.meta)
        domxml.stamp_start(defn)
        vm = self._new_vm(vm_id, defn.name, defn.meta,
                          start_time=defn.meta.get_float("startTime"))
        vm.definition = defn.root  # described from it only if asked before libvirt is read
        self.vms[vm_id] = vm
        answer = {**vm.status_dict(), "vmName": vm.name}
        await vm.lock.acquire()  # free: the VM is brand new
        vm.create_waiting = True
        task = self._spawn(self._start(vm, defn), f"start-{vm_id}")
        self._starting += 1
        task.add_done_callback(self._start_ended)
        try:
            if self.config.create_error_wait > 0:
                await asyncio.wait({task}, timeout=self.config.create_error_wait)
        finally:
            vm.create_waiting = False
        if task.done() and vm.start_error is not None:
            if self.vms.get(vm_id) is vm:
                del self.vms[vm_id]
            await self.drives.detach(vm_id)
            raise vm.start_error
        return answer

    def _start_ended(self, _task: asyncio.Task[Any]) -> None:
        self._starting -= 1

    async def _start(self, vm: Vm, defn: domxml.Definition) -> None:
        """The start task: storage drives and VM leases first, then libvirt."""
        try:
            await self.drives.attach(vm.id, defn.root, defn.meta)
        except BaseException as exc:
            vm.lock.release()
            if not isinstance(exc, VdsmError):
                raise
            log.warning("vmId=%s: start failed: %s", vm.id, exc)
            vm.start_error = exc
            vm.set_down(ExitCode.ERROR, ExitReason.GENERIC_ERROR, exc.message)
            return
        await lifecycle.start(self.svc, vm, defn)
        if vm.has_domain and not self.drives.started(vm.id):
            self._lease_lost(vm.id, "VM lease lost while the VM started")

    async def destroy(self, vm_id: str, graceful_attempts: int = 1) -> None:
        vm = self.get(vm_id)
        vm.destroy_requested = True
        if vm.powerdown_task is not None:
            vm.powerdown_task.cancel()
        async with vm.lock:
            if self.vms.get(vm_id) is not vm:
                raise NoSuchVM(f"Virtual machine {vm_id} does not exist")
            try:
                await lifecycle.destroy(self.svc, vm, graceful_attempts)
            except VdsmError:
                vm.destroy_requested = False
                raise
            vm.cancel_timers()
            del self.vms[vm_id]
        await self.drives.detach(vm_id)

    # -- operations under the VM's lock ----------------------------------------------

    async def _locked(self, vm_id: str, coro_fn: Any, *args: Any, running: bool = True) -> Any:
        vm = self.get(vm_id)
        async with vm.lock:
            if self.vms.get(vm_id) is not vm:
                raise NoSuchVM(f"Virtual machine {vm_id} does not exist")
            if running:
                lifecycle.require_domain(vm)
            return await coro_fn(self.svc, vm, *args)

    async def shutdown(self, vm_id: str, *, delay: int | None = None, message: str | None = None,
                       reboot: bool = False, timeout: int | None = None,
                       force: bool = False) -> None:
        if timeout is None:
            timeout = int(self.config.shutdown_timeout)
        if not 0 < timeout <= MAX_POWERDOWN_TIMEOUT:
            raise invalid_parameter("timeout", f"must be between 1 and {MAX_POWERDOWN_TIMEOUT}")
        if delay is not None and delay < 0:
            raise invalid_parameter("delay", "must not be negative")

        async def run(svc: Services, vm: Vm) -> None:
            await powerdown.power_down(svc, vm, reboot=reboot, timeout=timeout, force=force,
                                       delay=delay or 0, user_message=message or "")

        await self._locked(vm_id, run)

    async def pause(self, vm_id: str) -> None:
        await self._locked(vm_id, lifecycle.pause)

    async def cont(self, vm_id: str) -> None:
        await self._locked(vm_id, lifecycle.cont)

    async def set_ticket(self, vm_id: str, password: str, ttl: int, existing_conn_action: str,
                         params: Mapping[str, str] | None = None) -> None:
        await self._locked(vm_id, ticket.set_ticket, password, ttl, existing_conn_action,
                           params)

    async def hotplug_nic(self, vm_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return await self._locked(vm_id, devices.hotplug_nic, params)

    async def hotunplug_nic(self, vm_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return await self._locked(vm_id, devices.hotunplug_nic, params)

    async def hotplug_disk(self, vm_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return await self._locked(vm_id, devices.hotplug_disk, params, self.drives)

    async def hotunplug_disk(self, vm_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return await self._locked(vm_id, devices.hotunplug_disk, params, self.drives)

    async def update_device(self, vm_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return await self._locked(vm_id, devices.update_device, params)

    async def set_balloon_target(self, vm_id: str, target_kib: int) -> None:
        await self._locked(vm_id, devices.set_balloon_target, target_kib)

    # -- reports ---------------------------------------------------------------------------

    def _selected(self, vm_ids: Iterable[str] | None) -> list[Vm]:
        wanted = set(vm_ids or ())
        return [vm for vm in self.vms.values() if not wanted or vm.id in wanted]

    def host_stats(self) -> dict[str, Any]:
        """VM counts for ``Host.getStats`` (a cheap, non-blocking contributor)."""
        active = sum(1 for vm in self.vms.values() if vm.has_domain)
        return {"vmCount": len(self.vms), "vmActive": active, "vmMigrating": 0}

    async def get_stats(self, vm_id: str) -> list[dict[str, Any]]:
        """``VM.getStats``, with VDSM's ``before/after_get_vm_stats`` hook points."""
        vm = self.get(vm_id)
        await self._before_stats_hook("before_get_vm_stats")
        stats = [report.vm_stats(vm)]
        if self.svc.wants_hook("after_get_vm_stats"):
            stats = await self._after_stats_hook("after_get_vm_stats", stats)
        return stats

    async def all_stats(self) -> orjson.Fragment | list[dict[str, Any]]:
        """``Host.getAllVmStats``, with ``before/after_get_all_vm_stats``.

        Without ``after_get_all_vm_stats`` scripts the answer is the pre-encoded JSON; with
        them, the decoded list the scripts rewrote.
        """
        await self._before_stats_hook("before_get_all_vm_stats")
        if not self.svc.wants_hook("after_get_all_vm_stats"):
            return report.all_stats_json(self.vms.values())
        stats = [report.vm_stats(vm) for vm in self.vms.values()]
        return await self._after_stats_hook("after_get_all_vm_stats", stats)

    async def _before_stats_hook(self, point: str) -> None:
        # VDSM hands these an empty document; their errors fail the call (1500)
        if self.svc.hooks is not None:
            await self.svc.hooks.run_json(point, {})

    async def _after_stats_hook(self, point: str,
                                stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The scripts' list of stats records; what they broke is logged and ignored."""
        if self.svc.hooks is None:
            return stats
        result = await self.svc.hooks.run_json(point, stats)
        if isinstance(result, list) and all(isinstance(r, dict) for r in result) and (
                point != "after_get_vm_stats" or len(result) == 1):
            return result
        log.error("%s hook left %s instead of a list of stats records; ignored", point,
                  type(result).__name__)
        return stats

    def vm_list(self, vm_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        return [vm.status_dict() for vm in self._selected(vm_ids)]

    def full_list(self, vm_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        return [report.full_info(vm) for vm in self._selected(vm_ids)]

    async def dumpxmls(self, vm_ids: Iterable[str]) -> dict[str, str]:
        wanted = list(vm_ids) or [vm.id for vm in self.vms.values() if vm.has_domain]
        for vm_id in wanted:
            self.get(vm_id)

        def read(conn: libvirt.virConnect) -> dict[str, str]:
            return {vm_id: conn.lookupByUUIDString(vm_id).XMLDesc(0) for vm_id in wanted}

        try:
            return await self.svc.conn.call(read, name="dumpxmls")
        except libvirt.libvirtError as exc:
            raise libvirt_failure(exc, VdsmError, "cannot read domain XML") from None
