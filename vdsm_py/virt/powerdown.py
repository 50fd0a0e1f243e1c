"""Graceful shutdown and reboot: a chain of methods, each given ``timeout`` seconds.

Owns VDSM's power-down semantics (``vmpowerdown``): try the guest agent (when the VM has
a qemu-guest-agent channel), then ACPI (when the VM has ACPI), then — only with ``force``
— destroy (shutdown) or reset (reboot). Each method is issued under the VM's lock and then
given ``timeout`` seconds to show success: the VM going Down, or libvirt's reboot event.
The chain runs as a background task; the verb returns once it is under way, with the VM
reported "Powering down" / "RebootInProgress". When every method fails the VM goes back to
Up. ``VM.destroy`` cancels a running chain.

The optional message and delay are logged: qemu-guest-agent has no way to show a message
to the guest's users (VDSM shows it only through the retired oVirt guest agent).
"""

from __future__ import annotations

import asyncio
import logging

import libvirt

from vdsm_py.errors import VdsmError, VMExists
from vdsm_py.virt import domparse
from vdsm_py.virt.libvirtconn import error_code, message
from vdsm_py.virt.services import Services
from vdsm_py.virt.status import ExitReason, VmStatus
from vdsm_py.virt.vm import Vm

log = logging.getLogger("vdsm_py.virt")


def _acpi_shutdown(dom: libvirt.virDomain) -> None:
    try:
        dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    except libvirt.libvirtError as exc:
        if error_code(exc) != libvirt.VIR_ERR_INVALID_ARG:
            raise
        dom.shutdownFlags(0)  # a driver without method flags: its own default


_SHUTDOWN = {
    "agent": lambda d: d.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT),
    "acpi": _acpi_shutdown,
    "force": lambda d: d.destroyFlags(0),
}
_REBOOT = {
    "agent": lambda d: d.reboot(libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT),
    "acpi": lambda d: d.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN),
    "force": lambda d: d.reset(0),
}


async def _methods(svc: Services, vm: Vm, force: bool) -> list[str]:
    info = vm.info
    if info is None:
        info = vm.info = domparse.parse(await svc.domain_xml(vm.id))
    methods = []
    if info.agent_channel:
        methods.append("agent")
    if info.acpi:
        methods.append("acpi")
    if force:
        methods.append("force")
    return methods


async def power_down(
    svc: Services, vm: Vm, *, reboot: bool, timeout: float, force: bool,
    delay: int = 0, user_message: str = "",
) -> None:
    """Start the chain (the caller holds the VM's lock)."""
    methods = await _methods(svc, vm, force)
    if not methods:
        # VDSM answers this case with its 'exist' error.
        raise VMExists("VM without ACPI or guest agent. Try Forced Shutdown.")
    action = "reboot" if reboot else "shutdown"
    log.info("vmId=%s: %s via %s (timeout %gs each, delay %ss, message %r)",
             vm.id, action, ", ".join(methods), timeout, delay, user_message)
    if vm.powerdown_task is not None:
        vm.powerdown_task.cancel()
    if reboot:
        vm.reboot_event.clear()
        vm.set_status(VmStatus.REBOOT_IN_PROGRESS)
    else:
        vm.shutdown_reason = ExitReason.ADMIN_SHUTDOWN
        vm.set_status(VmStatus.POWERING_DOWN)
    vm.powerdown_task = asyncio.create_task(
        _chain(svc, vm, methods, reboot, timeout), name=f"{action}-{vm.id}")


async def _chain(svc: Services, vm: Vm, methods: list[str], reboot: bool,
                 timeout: float) -> None:
    table = _REBOOT if reboot else _SHUTDOWN
    done = vm.reboot_event if reboot else vm.down_event
    for method in methods:
        async with vm.lock:
            if vm.is_down:
                return
            try:
                await svc.conn.call_domain(vm.id, table[method], name=f"powerdown.{method}")
            except (libvirt.libvirtError, VdsmError) as exc:
                log.warning("vmId=%s: %s by %s failed: %s", vm.id,
                            "reboot" if reboot else "shutdown", method, message(exc))
                continue
            if method == "force" and reboot:
                vm.rebooted()  # a reset is done when it returns
                return
        try:
            await asyncio.wait_for(done.wait(), timeout)
            log.info("vmId=%s: %s by %s succeeded", vm.id,
                     "reboot" if reboot else "shutdown", method)
            return
        except TimeoutError:
            log.warning("vmId=%s: %s by %s timed out after %gs", vm.id,
                        "reboot" if reboot else "shutdown", method, timeout)
    log.warning("vmId=%s: every %s method failed", vm.id, "reboot" if reboot else "shutdown")
    if vm.status in (VmStatus.POWERING_DOWN, VmStatus.REBOOT_IN_PROGRESS):
        vm.shutdown_reason = None
        vm.set_status(VmStatus.UP)
