"""Starting, destroying, pausing and resuming a VM's libvirt domain.

Owns the steps of each operation and their failure rules:

- start: ``before_vm_start`` hook (may rewrite the XML and the launch flags) →
  ``createXML`` (transient domain: libvirt forgets it when it stops, our metadata lives in
  it while it runs) → ``after_vm_start``. A start that fails at any step leaves no domain
  behind (a domain that a timed-out ``createXML`` may have created is looked up and
  destroyed) and ends Down with the reason; a destroy asked meanwhile is honoured at the
  next step instead of racing it. Without ``before_vm_start`` scripts, looking for hook
  scripts, serializing and ``createXML`` are one worker call (see :func:`_create_unless_hooked`);
- destroy: graceful attempts (SIGTERM through libvirt) before the forceful one;
- pause / cont.

The caller holds the VM's lock (the start task receives it already held and releases it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from vdsm_py.errors import DestroyError, NoSuchVM, UnexpectedError, VdsmError, VMCreateError
from vdsm_py.virt.domxml import Definition
from vdsm_py.virt.libvirtconn import error_code, is_no_domain, message
from vdsm_py.virt.services import Services, libvirt_failure
from vdsm_py.virt.status import ExitCode, ExitReason, VmStatus
from vdsm_py.virt.vm import Vm

log = logging.getLogger("vdsm_py.virt")

_NOT_RUNNING = (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID)
EVENT_WAIT = 5.0  # seconds an operation waits for libvirt's event before trusting itself


def _create(conn: libvirt.virConnect, xml: str, flags: int) -> None:
    """Worker: start the domain; emulate START_PAUSED on drivers without it."""
    try:
        conn.createXML(xml, flags)
    except libvirt.libvirtError as exc:
        paused = flags & libvirt.VIR_DOMAIN_START_PAUSED
        if not (paused and error_code(exc) == libvirt.VIR_ERR_INVALID_ARG
                and "unsupported flags" in message(exc)):
            raise
        log.info("driver cannot start paused; starting and suspending at once")
        conn.createXML(xml, flags & ~libvirt.VIR_DOMAIN_START_PAUSED).suspend()


def _remove_leftover(conn: libvirt.virConnect, vm_id: str) -> bool:
    """Worker: destroy the domain of a failed start, if it exists. True if one did."""
    try:
        conn.lookupByUUIDString(vm_id).destroy()
        return True
    except libvirt.libvirtError as exc:
        if error_code(exc) in _NOT_RUNNING:
            return False
        raise


async def start(svc: Services, vm: Vm, defn: Definition) -> None:
    """The start task: runs with ``vm.lock`` held by the creator and releases it."""
    vm.starting = True
    try:
        await _start(svc, vm, defn)
    finally:
        vm.starting = False
        vm.lock.release()


@dataclass(frozen=True, slots=True)
class _Started:
    xml: str  # the XML libvirt started
    after_hook: bool  # whether after_vm_start has scripts


def _create_unless_hooked(svc: Services, conn: libvirt.virConnect, defn: Definition,
                          flags: int) -> _Started | None:
    """Worker: the usual start in one call — None (nothing done) when ``before_vm_start``
    has scripts, else the definition serialized and started.

    The hook directories are looked at here and not on the loop: each look is a few
    system calls, and on the loop each one lets the GIL go and then waits to take it back
    behind the workers. lxml serializes without the GIL too (see :meth:`Definition.text`).
    """
    if svc.wants_hook("before_vm_start"):
        return None
    return _create_xml(svc, conn, defn.text(), flags)


def _create_xml(svc: Services, conn: libvirt.virConnect, xml: str, flags: int) -> _Started:
    """Worker: start ``xml``; and whether ``after_vm_start`` has scripts to run now."""
    _create(conn, xml, flags)
    return _Started(xml, svc.wants_hook("after_vm_start"))


async def _start(svc: Services, vm: Vm, defn: Definition) -> None:
    flags = libvirt.VIR_DOMAIN_START_PAUSED if defn.launch_paused else 0
    defn.store_metadata()  # on the loop: the loop may read the tree (Vm.definition)
    if _destroyed_first(vm):
        return
    started = await _call_create(svc, vm, lambda c: _create_unless_hooked(svc, c, defn, flags))
    if started is None and vm.start_error is None:  # before_vm_start has scripts
        assert svc.hooks is not None
        try:
            xml, flags = await svc.hooks.before_vm_start(
                defn.text(), vm_id=vm.id, custom=vm.custom, flags=flags)
        except VdsmError as exc:
            _failed(vm, ExitReason.GENERIC_ERROR, exc)
            return
        if _destroyed_first(vm):
            return
        hooked, hooked_flags = xml, flags
        started = await _call_create(svc, vm, lambda c: _create_xml(svc, c, hooked, hooked_flags))
    if started is None:
        return
    log.info("vmId=%s: domain %r started", vm.id, vm.name)
    vm.starting = False
    # What libvirt made of the domain (tap names, ports, aliases) is read by the next
    # stats pass (vm.xml_stale), not here: a start costs one libvirt call.
    vm.mark_stale()
    vm.started(paused=bool(flags & libvirt.VIR_DOMAIN_START_PAUSED))
    if vm.stopped_while_starting is not None:  # it died before createXML even returned
        vm.on_lifecycle(libvirt.VIR_DOMAIN_EVENT_STOPPED, vm.stopped_while_starting)
    if started.after_hook:
        await svc.after_hook("after_vm_start", started.xml, vm)


async def _call_create(svc: Services, vm: Vm,
                       fn: Callable[[libvirt.virConnect], _Started | None]) -> _Started | None:
    """A create step on a worker. A failure leaves no domain behind and makes the VM Down
    (``vm.start_error`` set, None returned)."""
    vm.stopped_while_starting = None
    try:
        return await svc.conn.call(fn, name="createXML")
    except (libvirt.libvirtError, VdsmError) as exc:
        await _cleanup_failed_start(svc, vm)
        _failed(vm, ExitReason.LIBVIRT_START_FAILED, VMCreateError(message(exc)))
        return None


def _destroyed_first(vm: Vm) -> bool:
    """A destroy asked before libvirt was called is honoured instead of raced."""
    if vm.destroy_requested:
        vm.set_down(ExitCode.NORMAL, ExitReason.DESTROYED_ON_STARTUP)
        return True
    return False


def _failed(vm: Vm, reason: ExitReason, error: VdsmError) -> None:
    log.warning("vmId=%s: start failed: %s", vm.id, error)
    vm.start_error = error
    vm.set_down(ExitCode.ERROR, reason, error.message)


async def _cleanup_failed_start(svc: Services, vm: Vm) -> None:
    try:
        if await svc.conn.call(lambda c: _remove_leftover(c, vm.id), name="cleanup"):
            log.warning("vmId=%s: destroyed the domain a failed start left behind", vm.id)
    except (libvirt.libvirtError, VdsmError) as exc:
        log.error("vmId=%s: cannot check for a domain left by the failed start: %s",
                  vm.id, message(exc))


def _kill(conn: libvirt.virConnect, vm_id: str, graceful_attempts: int) -> None:
    """Worker: graceful attempts first, then forceful. Gone already counts as done."""
    try:
        dom = conn.lookupByUUIDString(vm_id)
    except libvirt.libvirtError as exc:
        if is_no_domain(exc):
            return
        raise
    for attempt in range(graceful_attempts):
        try:
            dom.destroyFlags(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
            return
        except libvirt.libvirtError as exc:
            if error_code(exc) in _NOT_RUNNING:
                return
            log.warning("vmId=%s: graceful destroy %d/%d failed: %s", vm_id, attempt + 1,
                        graceful_attempts, message(exc))
    try:
        dom.destroyFlags(0)
    except libvirt.libvirtError as exc:
        if error_code(exc) not in _NOT_RUNNING:
            raise


async def destroy(svc: Services, vm: Vm, graceful_attempts: int) -> None:
    """Stop the domain (if any) and mark the VM Down; the caller removes it."""
    if not vm.has_domain:
        return
    xml = None
    if svc.wants_hook("before_vm_destroy") or svc.wants_hook("after_vm_destroy"):
        try:
            xml = await svc.domain_xml(vm.id)
        except libvirt.libvirtError as exc:
            log.debug("vmId=%s: no XML for the destroy hooks: %s", vm.id, message(exc))
    if xml is not None:
        await svc.hook("before_vm_destroy", xml, vm)
    if vm.shutdown_reason is None:
        vm.shutdown_reason = ExitReason.ADMIN_SHUTDOWN
    timeout = svc.config.libvirt_timeout * (graceful_attempts + 1)
    try:
        await svc.conn.call(lambda c: _kill(c, vm.id, graceful_attempts), name="destroy",
                            timeout=timeout)
    except libvirt.libvirtError as exc:
        raise DestroyError(f"Failed to destroy VM: {message(exc)}") from None
    vm.set_down(ExitCode.NORMAL, vm.shutdown_reason)
    log.info("vmId=%s: destroyed", vm.id)
    if xml is not None:
        await svc.after_hook("after_vm_destroy", xml, vm)


async def _hooked_call(
    svc: Services, vm: Vm, before: str, after: str, fn_name: str, what: str
) -> None:
    xml = ""
    if svc.wants_hook(before) or svc.wants_hook(after):
        xml = await svc.domain_xml(vm.id)
        await svc.hook(before, xml, vm)
    try:
        await svc.conn.call_domain(vm.id, lambda d: getattr(d, fn_name)(), name=fn_name)
    except libvirt.libvirtError as exc:
        raise libvirt_failure(exc, UnexpectedError, what) from None
    if xml:
        await svc.after_hook(after, xml, vm)


async def pause(svc: Services, vm: Vm) -> None:
    await _hooked_call(svc, vm, "before_vm_pause", "after_vm_pause", "suspend", "pause")
    if not await vm.wait_status({VmStatus.PAUSED, VmStatus.DOWN}, EVENT_WAIT):
        vm.paused()  # a driver that sent no event


async def cont(svc: Services, vm: Vm) -> None:
    await _hooked_call(svc, vm, "before_vm_cont", "after_vm_cont", "resume", "cont")
    running = {VmStatus.POWERING_UP, VmStatus.UP, VmStatus.DOWN}
    if not await vm.wait_status(running, EVENT_WAIT):
        vm.resumed()


def require_domain(vm: Vm) -> None:
    """Operations that need a running domain refuse a Down VM the way VDSM does."""
    if vm.status in (VmStatus.DOWN, VmStatus.WAIT_FOR_LAUNCH):
        raise NoSuchVM(f"Virtual machine {vm.id} is {vm.status}, not running")
