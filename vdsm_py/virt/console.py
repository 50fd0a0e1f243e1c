"""The console client of a VM: who is connected, and what happens when it goes away.

Owns VDSM's console disconnect semantics. libvirt's graphics events (VNC/SPICE client
connected, initialised, disconnected) record the client's address (``clientIp`` in the
stats). When that client disconnects, the ``disconnectAction`` given with the last
``VM.setTicket`` runs after ``[virt] console_disconnect_action_delay`` seconds — unless a
client connected again meanwhile (SPICE clients reconnect channel by channel; VDSM delays
for the same reason):

- ``NONE``: nothing;
- ``LOCK_SCREEN`` / ``LOGOUT``: asked of the guest through qemu-guest-agent
  (``guest-exec`` of ``loginctl lock-sessions`` / ``loginctl terminate-seat seat0`` on
  Linux guests); without a connected agent this is logged, as VDSM does when its agent is
  missing;
- ``SHUTDOWN`` / ``REBOOT``: the guest is powered down / rebooted the way ``VM.shutdown``
  does it (guest agent, then ACPI), with VDSM's messages.

Runs on the asyncio loop; the action itself is handed to the caller's callbacks (the
manager, which takes the VM's lock).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import libvirt
import libvirt_qemu

from vdsm_py.virt.vm import Vm

log = logging.getLogger("vdsm_py.virt")

DEFAULT_ACTION = "LOCK_SCREEN"  # VDSM's, until a ticket says otherwise
SHUTDOWN_MESSAGE = "Scheduled shutdown on disconnect"
REBOOT_MESSAGE = "Scheduled reboot on disconnect"
_GUEST_COMMANDS = {
    "LOCK_SCREEN": ["lock-sessions"],
    "LOGOUT": ["terminate-seat", "seat0"],
}

Action = Callable[[Vm, str], Coroutine[Any, Any, None]]


def client_connected(vm: Vm, ip: str, port: str) -> None:
    """A console client connected (or finished its handshake)."""
    vm.cancel_console_timer()
    if (vm.client_ip, vm.client_port) != (ip, port):
        log.info("vmId=%s: console client %s:%s connected", vm.id, ip, port)
    vm.client_ip, vm.client_port = ip, port
    vm.stats_cache = None


def client_disconnected(vm: Vm, ip: str, port: str, delay: float, act: Action) -> None:
    """The console client went away: schedule the disconnect action."""
    if vm.client_ip and (vm.client_ip, vm.client_port) != (ip, port):
        log.info("vmId=%s: ignoring the disconnection of %s:%s, the console client is %s:%s",
                 vm.id, ip, port, vm.client_ip, vm.client_port)
        return
    log.info("vmId=%s: console client %s:%s disconnected; %s in %gs", vm.id, ip, port,
             vm.ticket_disconnect_action, delay)
    vm.client_ip, vm.client_port = "", ""
    vm.stats_cache = None
    action = vm.ticket_disconnect_action
    if action == "NONE":
        return
    vm.cancel_console_timer()
    loop = asyncio.get_running_loop()
    vm.console_timer = loop.call_later(delay, _fire, vm, action, act)


def _fire(vm: Vm, action: str, act: Action) -> None:
    vm.console_timer = None
    if vm.client_ip:
        log.info("vmId=%s: a console client connected again; %s skipped", vm.id, action)
        return
    if not vm.has_domain:
        return
    task = asyncio.create_task(act(vm, action), name=f"console-{action}-{vm.id}")
    vm.console_action_task = task


def guest_command(action: str) -> str | None:
    """The ``guest-exec`` request performing ``action`` in a Linux guest, as JSON."""
    args = _GUEST_COMMANDS.get(action)
    if args is None:
        return None
    return json.dumps({"execute": "guest-exec",
                       "arguments": {"path": "loginctl", "arg": args, "capture-output": True}})


def run_guest_command(dom: libvirt.virDomain, command: str, timeout: int) -> str:
    """Worker: send ``command`` to qemu-guest-agent; its answer."""
    return str(libvirt_qemu.qemuAgentCommand(dom, command, timeout, 0))
