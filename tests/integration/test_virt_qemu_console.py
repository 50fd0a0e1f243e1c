"""The console ticket's disconnectAction on real QEMU: a real VNC client logs in with the
ticket and leaves; libvirt's graphics events reach the daemon, which reports the client
while it is connected and, once it stayed away for the configured delay, shuts the guest
down through ACPI (the guest's own console shows the power-off)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from tests.integration import guest, rfb
from tests.integration.libvirtd import LibvirtdInstance
from tests.integration.ptyconsole import PtyRecorder
from tests.integration.qemu_host import QemuHost, start_qemu_host, wait_until
from tests.integration.test_virt_qemu import (
    BOOT_TIMEOUT,
    console_pty,
    tiny_vm_params,
    wait_status,
)
from vdsm_py.client import RpcError

pytestmark = pytest.mark.slow

DELAY = 2  # seconds: [virt] console_disconnect_action_delay of this host


@pytest.fixture(scope="module")
def host(libvirtd: LibvirtdInstance, tmp_path_factory: pytest.TempPathFactory):
    qemu_host = start_qemu_host(tmp_path_factory.mktemp("vdsmd-console"), libvirtd,
                                {"console_disconnect_action_delay": str(DELAY)})
    try:
        yield qemu_host
    finally:
        qemu_host.close()


@pytest.fixture
def booted(host: QemuHost, tiny_guest: guest.GuestImage,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    vm_id = str(uuid.uuid4())
    console = tmp_path_factory.mktemp("console") / "console.log"
    host.call("VM.create", vmID=vm_id, vmParams=tiny_vm_params(f"console-{vm_id[:8]}",
                                                               tiny_guest))
    recorder = None
    try:
        pty = wait_until(lambda: console_pty(host, vm_id), 60, "the domain's console pty")
        recorder = PtyRecorder(pty, console)
        guest.wait_for_console(console, guest.MARKER_UP, timeout=BOOT_TIMEOUT)
        wait_status(host, vm_id, "Up")
        yield vm_id, console
    finally:
        if recorder is not None:
            recorder.close()
        with contextlib.suppress(RpcError, OSError):
            host.call("VM.destroy", vmID=vm_id)


def _vnc_port(host: QemuHost, vm_id: str) -> int:
    (stats,) = host.call("VM.getStats", vmID=vm_id)
    return int(stats["displayInfo"][0]["port"])


def test_vnc_client_leaving_triggers_the_shutdown_disconnect_action(host, booted):
    vm_id, console = booted
    ticket = "leave-me"
    assert host.call("VM.setTicket", vmID=vm_id, password=ticket, ttl=300,
                     params={"disconnectAction": "SHUTDOWN"}) is True
    login = rfb.vnc_login("127.0.0.1", _vnc_port(host, vm_id), ticket)
    assert login.accepted  # the client logged in and has now closed its connection
    guest.wait_for_console(console, guest.MARKER_POWEROFF, timeout=60 + DELAY)
    down = wait_status(host, vm_id, "Down", timeout=60)
    assert down["exitCode"] == 0


def test_vnc_client_leaving_with_none_action_leaves_the_guest_running(host, booted):
    vm_id, console = booted
    ticket = "stay-up!"
    host.call("VM.setTicket", vmID=vm_id, password=ticket, ttl=300,
              params={"disconnectAction": "NONE"})
    assert rfb.vnc_login("127.0.0.1", _vnc_port(host, vm_id), ticket).accepted
    # The libvirt disconnect event reached the daemon: the client is no longer reported.
    wait_until(lambda: host.call("VM.getStats", vmID=vm_id)[0]["clientIp"] == "", 30,
               "clientIp cleared")
    with contextlib.suppress(TimeoutError):
        guest.wait_for_console(console, guest.MARKER_POWEROFF, timeout=DELAY * 3)
    assert guest.MARKER_POWEROFF not in guest.read_console(console)
    assert host.call("VM.getStats", vmID=vm_id)[0]["status"] == "Up"
