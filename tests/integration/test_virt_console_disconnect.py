"""The console ticket's disconnectAction on libvirt's test driver.

The test driver emits no graphics events, so these tests hand the manager the events
libvirt would send (client connected / disconnected, as its graphics callback delivers
them); everything after that — the delay, the reconnect check, the shutdown through the
real power-down chain on the driver — is the daemon's real code. The same path with a real
VNC client against QEMU is in test_virt_qemu_console.py.
"""

from __future__ import annotations

import asyncio

import libvirt
import pytest

from tests.integration.virt_support import VirtHarness, plain_vm, running_harness
from vdsm_py.config import VirtConfig

CONFIG = VirtConfig(libvirt_uri="test:///default", powering_up_timeout=0.1,
                    stats_interval=3600, guest_agent_interval=0,
                    console_disconnect_action_delay=0.3)
CONNECT = libvirt.VIR_DOMAIN_EVENT_GRAPHICS_CONNECT
DISCONNECT = libvirt.VIR_DOMAIN_EVENT_GRAPHICS_DISCONNECT


@pytest.fixture
async def virt():
    async with running_harness(CONFIG) as h:
        yield h


async def _up_with_ticket(h: VirtHarness, action: str | None) -> str:
    vm_id, params = plain_vm()
    await h.call("VM.create", vmID=vm_id, vmParams=params)
    await h.wait_status(vm_id, "Up")
    vm = h.manager.get(vm_id)
    if action is not None:  # the test driver cannot update graphics: record as setTicket does
        vm.ticket_disconnect_action = action
    return vm_id


CLIENT = ("192.0.2.7", "50123")


async def _still_up_after(virt: VirtHarness, vm_id: str, *events: tuple) -> None:
    """Hand the manager ``events`` (phase, ip, port), wait past the delay: still Up."""
    for phase, ip, port in events:
        virt.manager.on_graphics(vm_id, phase, ip, port)
    await asyncio.sleep(CONFIG.console_disconnect_action_delay * 4)
    assert virt.statuses(vm_id)[-1] == "Up"


async def test_client_address_is_reported_while_connected(virt):
    vm_id = await _up_with_ticket(virt, "NONE")
    virt.manager.on_graphics(vm_id, CONNECT, "192.0.2.7", "50123")
    (stats,) = await virt.call("VM.getStats", vmID=vm_id)
    assert stats["clientIp"] == "192.0.2.7"
    virt.manager.on_graphics(vm_id, DISCONNECT, "192.0.2.7", "50123")
    (stats,) = await virt.call("VM.getStats", vmID=vm_id)
    assert stats["clientIp"] == ""


async def test_shutdown_action_powers_the_vm_down_after_the_delay(virt):
    vm_id = await _up_with_ticket(virt, "SHUTDOWN")
    virt.manager.on_graphics(vm_id, CONNECT, "192.0.2.7", "50123")
    virt.manager.on_graphics(vm_id, DISCONNECT, "192.0.2.7", "50123")
    assert virt.manager.get(vm_id).status.value == "Up"  # not at once: after the delay
    await virt.wait_status(vm_id, "Down", timeout=20)
    assert "Powering down" in virt.statuses(vm_id)
    (stats,) = await virt.call("VM.getStats", vmID=vm_id)
    assert stats["exitCode"] == 0


async def test_a_client_reconnecting_within_the_delay_cancels_the_action(virt):
    vm_id = await _up_with_ticket(virt, "SHUTDOWN")
    await _still_up_after(virt, vm_id, (CONNECT, *CLIENT), (DISCONNECT, *CLIENT),
                          (CONNECT, "192.0.2.7", "50124"))


async def test_none_action_leaves_the_vm_running(virt):
    vm_id = await _up_with_ticket(virt, "NONE")
    await _still_up_after(virt, vm_id, (CONNECT, *CLIENT), (DISCONNECT, *CLIENT))


async def test_disconnect_of_another_client_is_ignored(virt):
    vm_id = await _up_with_ticket(virt, "SHUTDOWN")
    await _still_up_after(virt, vm_id, (CONNECT, *CLIENT), (DISCONNECT, "198.51.100.1", "40000"))
    (stats,) = await virt.call("VM.getStats", vmID=vm_id)
    assert stats["clientIp"] == "192.0.2.7"


async def test_lock_screen_without_guest_agent_changes_nothing(virt, caplog):
    vm_id = await _up_with_ticket(virt, None)  # VDSM's default action: LOCK_SCREEN
    await _still_up_after(virt, vm_id, (CONNECT, *CLIENT), (DISCONNECT, *CLIENT))
    assert "cannot LOCK_SCREEN on console disconnect: no guest agent" in caplog.text


async def test_destroy_before_the_delay_cancels_the_action(virt):
    vm_id = await _up_with_ticket(virt, "REBOOT")
    virt.manager.on_graphics(vm_id, CONNECT, "192.0.2.7", "50123")
    virt.manager.on_graphics(vm_id, DISCONNECT, "192.0.2.7", "50123")
    await virt.call("VM.destroy", vmID=vm_id)
    await asyncio.sleep(CONFIG.console_disconnect_action_delay * 4)
    assert "Powering down" not in virt.statuses(vm_id)
