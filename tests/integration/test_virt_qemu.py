"""The VM verbs on real QEMU: a tiny Linux guest driven through the daemon's mTLS API.

One daemon and one booted guest are shared by the module (TCG boots take ~10 s on these
machines); the tests run in file order and each leaves the guest running, except the last,
which shuts it down through ACPI. Every claim is checked where the truth is: the guest's
own serial console (it reports boot, hot-plugged devices and power-off), libvirt, QEMU's
VNC server and the QEMU process.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree

from tests.integration import guest, rfb
from tests.integration.libvirtd import LibvirtdInstance, pid_alive
from tests.integration.ptyconsole import PtyRecorder
from tests.integration.qemu_host import QemuHost, start_qemu_host, wait_until
from vdsm_py.client import RpcError

pytestmark = pytest.mark.slow

BOOT_TIMEOUT = 120  # TCG on 2 busy cores; usually ~10 s
INVALID_PARAMETER = 91
CREATE_ERROR = 9


@dataclass
class BootedVm:
    vm_id: str
    name: str
    console: Path  # everything the guest printed on its serial console


@pytest.fixture(scope="module")
def bridge() -> Iterator[str]:
    """A host bridge for the VM's NICs (VDSM's networks are bridges named after them)."""
    name = f"vpt{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True, timeout=30)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False, timeout=30)


@pytest.fixture(scope="module")
def host(libvirtd: LibvirtdInstance, tmp_path_factory: pytest.TempPathFactory):
    qemu_host = start_qemu_host(tmp_path_factory.mktemp("vdsmd-qemu"), libvirtd)
    try:
        yield qemu_host
    finally:
        qemu_host.close()


def status_of(host: QemuHost, vm_id: str) -> dict[str, Any]:
    return host.call("VM.getStats", vmID=vm_id)[0]


def wait_status(host: QemuHost, vm_id: str, status: str, timeout: float = 60) -> dict:
    def reached():
        stats = status_of(host, vm_id)
        return stats if stats["status"] == status else None

    return wait_until(reached, timeout, f"VM {vm_id} status {status}")


def domain_xml(host: QemuHost, vm_id: str) -> etree._Element:
    return etree.fromstring(host.call("Host.dumpxmls", vmList=[vm_id])[vm_id].encode())


def tiny_vm_params(name: str, image: guest.GuestImage) -> dict[str, Any]:
    """A plain (pre-4.2) VM.create spec booting the tiny guest directly from its kernel."""
    return {
        "vmName": name,
        "memSize": "192",
        "smp": "1",
        "kvmEnable": "false",
        "emulatedMachine": "pc",
        "kernel": str(image.kernel),
        "initrd": str(image.initramfs),
        "kernelArgs": image.cmdline,
        "devices": [
            {"type": "graphics", "device": "vnc", "specParams": {"displayIp": "127.0.0.1"}},
            {"type": "console"},
        ],
    }


def console_pty(host: QemuHost, vm_id: str) -> str | None:
    source = domain_xml(host, vm_id).find("devices/console/source")
    return None if source is None else source.get("path")


@pytest.fixture(scope="module")
def booted_vm(
    host: QemuHost, tiny_guest: guest.GuestImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BootedVm]:
    vm_id = str(uuid.uuid4())
    name = f"tiny <&> {vm_id[:8]}"  # XML metacharacters are stored as text
    console = tmp_path_factory.mktemp("console") / "console.log"
    answer = host.call("VM.create", vmID=vm_id, vmParams=tiny_vm_params(name, tiny_guest))
    assert answer["status"] == "WaitForLaunch"
    recorder = None
    try:
        # QEMU drops console output nobody reads: record the pty as soon as it exists.
        pty = wait_until(lambda: console_pty(host, vm_id), 60, "the domain's console pty")
        recorder = PtyRecorder(pty, console)
        guest.wait_for_console(console, guest.MARKER_UP, timeout=BOOT_TIMEOUT)
        yield BootedVm(vm_id, name, console)
    finally:
        if recorder is not None:
            recorder.close()
        with contextlib.suppress(RpcError, OSError):
            host.call("VM.destroy", vmID=vm_id)


def qemu_pid(libvirtd: LibvirtdInstance, vm_id: str) -> int:
    """The PID of the QEMU process running the VM (its command line carries the UUID)."""
    pids = [
        pid for pid in libvirtd.qemu_pids()
        if vm_id in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    ]
    assert len(pids) == 1, f"QEMU processes for {vm_id}: {pids}"
    return pids[0]


def test_plain_spec_vm_boots_under_tcg_and_reaches_up(host: QemuHost, booted_vm: BootedVm):
    stats = wait_status(host, booted_vm.vm_id, "Up")
    assert stats["vmName"] == booted_vm.name
    assert stats["kvmEnable"] == "false"
    listed = {v["vmId"]: v["status"] for v in host.call("Host.getVMList")}
    assert listed[booted_vm.vm_id] == "Up"

    conn = host.libvirtd.connect()
    try:
        dom = conn.lookupByUUIDString(booted_vm.vm_id)
        assert dom.isActive()
        assert dom.name() == booted_vm.name
        assert etree.fromstring(dom.XMLDesc()).get("type") == "qemu"
    finally:
        conn.close()


def test_stats_report_the_running_guest(host: QemuHost, booted_vm: BootedVm):
    wait_status(host, booted_vm.vm_id, "Up")

    def sampled():
        stats = status_of(host, booted_vm.vm_id)
        return stats if int(stats.get("cpuUsage", "0")) > 0 else None

    first = wait_until(sampled, 30, "a CPU sample")
    # A later sample: the guest's CPU time only grows; rates are computed between samples.
    later = wait_until(
        lambda: (s := status_of(host, booted_vm.vm_id))["cpuUsage"] != first["cpuUsage"] and s,
        30, "a newer sample",
    )
    assert int(later["cpuUsage"]) > int(first["cpuUsage"])
    assert float(later["cpuUser"]) + float(later["cpuSys"]) >= 0
    assert int(later["elapsedTime"]) >= 1
    assert later["vcpuCount"] == "1"
    assert int(later["balloonInfo"]["balloon_max"]) == 192 * 1024
    vnc = [d for d in later["displayInfo"] if d["type"] == "vnc"]
    assert len(vnc) == 1 and int(vnc[0]["port"]) >= 5900

    all_stats = {s["vmId"]: s for s in host.call("Host.getAllVmStats")}
    assert all_stats[booted_vm.vm_id]["status"] == "Up"


def vnc_port(host: QemuHost, vm_id: str) -> int:
    return int(domain_xml(host, vm_id).find("devices/graphics").get("port"))


def test_console_ticket_opens_vnc_to_that_password_only(host: QemuHost, booted_vm: BootedVm):
    port = vnc_port(host, booted_vm.vm_id)
    locked = rfb.vnc_login("127.0.0.1", port, None)
    assert rfb.SECURITY_VNC_AUTH in locked.security_types
    assert not locked.accepted  # consoles are locked until a ticket is set

    # The engine's tickets are 12 characters; VNC authentication uses the first 8.
    ticket = "Tk3&<x>9qZ!w"
    assert host.call("VM.setTicket", vmID=booted_vm.vm_id, password=ticket, ttl=120) is True
    assert rfb.vnc_login("127.0.0.1", port, ticket).accepted
    assert not rfb.vnc_login("127.0.0.1", port, "not-the-ticket").accepted

    for ttl in (-1, 10**9):
        with pytest.raises(RpcError) as err:
            host.call("VM.setTicket", vmID=booted_vm.vm_id, password="x", ttl=ttl)
        assert err.value.code == INVALID_PARAMETER
        assert "ttl" in err.value.message
    assert rfb.vnc_login("127.0.0.1", port, ticket).accepted  # refused calls changed nothing


def test_hotplugged_nic_and_disk_reach_the_guest_and_leave_it(
    host: QemuHost, booted_vm: BootedVm, bridge: str, tmp_path: Path
):
    vm_id, console = booted_vm.vm_id, booted_vm.console
    mark = len(guest.read_console(console))
    mac = "52:54:00:5e:00:01"
    host.call("VM.hotplugNic", vmID=vm_id, params={
        "vmId": vm_id, "nic": {"macAddr": mac, "network": bridge, "nicModel": "virtio"},
    })
    guest.wait_for_console(console, f"{guest.MARKER_UEVENT} add net eth0", start=mark)
    nics = domain_xml(host, vm_id).findall("devices/interface")
    assert [(n.find("mac").get("address"), n.find("source").get("bridge")) for n in nics] == [
        (mac, bridge)
    ]

    disk = tmp_path / "hotplug.img"
    disk.write_bytes(b"\0" * (4 << 20))
    host.call("VM.hotplugDisk", vmID=vm_id, params={
        "vmId": vm_id,
        "drive": {"path": str(disk), "iface": "virtio", "format": "raw", "device": "disk"},
    })
    guest.wait_for_console(console, f"{guest.MARKER_UEVENT} add block vda", start=mark)
    targets = [d.find("target").get("dev") for d in domain_xml(host, vm_id).findall(
        "devices/disk")]
    assert len(targets) == 1

    host.call("VM.hotunplugDisk", vmID=vm_id, params={"vmId": vm_id, "drive": {
        "path": str(disk), "name": targets[0]}})
    guest.wait_for_console(console, f"{guest.MARKER_UEVENT} remove block vda", start=mark)
    assert domain_xml(host, vm_id).findall("devices/disk") == []

    host.call("VM.hotunplugNic", vmID=vm_id, params={"vmId": vm_id, "nic": {
        "macAddr": mac, "network": bridge}})
    guest.wait_for_console(console, f"{guest.MARKER_UEVENT} remove net eth0", start=mark)
    assert domain_xml(host, vm_id).findall("devices/interface") == []


def libvirt_domain_id(host: QemuHost, vm_id: str) -> int:
    """libvirt's run-time domain id: a new one for every start of the domain."""
    conn = host.libvirtd.connect()
    try:
        return conn.lookupByUUIDString(vm_id).ID()
    finally:
        conn.close()


def test_daemon_sigkill_and_restart_keep_the_vm_running_once(
    host: QemuHost, booted_vm: BootedVm
):
    wait_status(host, booted_vm.vm_id, "Up")
    pid = qemu_pid(host.libvirtd, booted_vm.vm_id)
    domain_id = libvirt_domain_id(host, booted_vm.vm_id)

    host.restart()  # SIGKILL, then start again on the same directory and port

    stats = wait_status(host, booted_vm.vm_id, "Up", timeout=30)
    assert stats["vmName"] == booted_vm.name
    listed = [v["vmId"] for v in host.call("Host.getVMList")]
    assert listed.count(booted_vm.vm_id) == 1
    # The same QEMU process and libvirt domain: not restarted, not started twice.
    assert qemu_pid(host.libvirtd, booted_vm.vm_id) == pid and pid_alive(pid)
    assert libvirt_domain_id(host, booted_vm.vm_id) == domain_id
    assert guest.read_console(booted_vm.console).count(guest.MARKER_UP) == 1  # not rebooted
    # The adopted VM is fully managed: its console takes a ticket again.
    port = vnc_port(host, booted_vm.vm_id)
    host.call("VM.setTicket", vmID=booted_vm.vm_id, password="again123", ttl=60)
    assert rfb.vnc_login("127.0.0.1", port, "again123").accepted


def collect_events(host: QemuHost, vm_id: str, until_status: str, sink: list) -> threading.Thread:
    """Record this VM's VM_status events in a thread until one has ``until_status``."""
    client = host.client()
    key = f"|virt|VM_status|{vm_id}"

    def run() -> None:
        with contextlib.suppress(OSError):
            for method, params in client.events():
                if method == key:
                    sink.append(params[vm_id]["status"])
                    if sink[-1] == until_status:
                        return

    thread = threading.Thread(target=run, name="events", daemon=True)
    thread.start()
    return thread


def test_acpi_shutdown_powers_the_guest_off_and_the_vm_stays_down_until_destroyed(
    host: QemuHost, booted_vm: BootedVm
):
    vm_id = booted_vm.vm_id
    wait_status(host, vm_id, "Up")
    pid = qemu_pid(host.libvirtd, booted_vm.vm_id)
    seen: list[str] = []
    events = collect_events(host, vm_id, "Down", seen)

    assert host.call("VM.shutdown", vmID=vm_id, delay=0, message="bye <&>", timeout=60)

    guest.wait_for_console(booted_vm.console, guest.MARKER_POWEROFF, timeout=60)
    down = wait_status(host, vm_id, "Down", timeout=60)
    assert down["exitCode"] == 0
    assert down["exitReason"] in (6, 7)  # admin / user shut down: a clean guest power-off
    events.join(30)
    assert "Powering down" in seen and seen[-1] == "Down"
    listed = {v["vmId"]: v["status"] for v in host.call("Host.getVMList")}
    assert listed[vm_id] == "Down"  # still listed
    wait_until(lambda: not pid_alive(pid), 30, "QEMU gone")

    host.call("VM.destroy", vmID=vm_id)
    assert vm_id not in [v["vmId"] for v in host.call("Host.getVMList")]
    conn = host.libvirtd.connect()
    try:
        with pytest.raises(libvirt.libvirtError):
            conn.lookupByUUIDString(vm_id)
    finally:
        conn.close()


def test_domain_xml_vm_with_guest_agent_reports_the_guest_and_shuts_down_through_it(
    host: QemuHost, tiny_guest: guest.GuestImage, tmp_path: Path
):
    """VDSM 4.2+ form (engine-made domain XML) with a real qemu-guest-agent in the guest."""
    if not tiny_guest.has_agent:
        pytest.skip("no qemu-ga on this machine: apt-get install qemu-guest-agent")
    vm_id = str(uuid.uuid4())
    console = tmp_path / "console.log"
    xml = guest.domain_xml(f"agent-{vm_id[:8]}", tiny_guest, console, uuid=vm_id, vnc=True,
                           agent=True, user_nic_ip="10.0.2.15/24")
    host.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    try:
        guest.wait_for_console(console, guest.MARKER_UP, timeout=BOOT_TIMEOUT)
        assert guest.MARKER_AGENT in guest.read_console(console)
        stats = wait_until(
            lambda: (s := status_of(host, vm_id)).get("guestFQDN") and s, 60, "guest agent data"
        )
        assert stats["status"] == "Up"
        assert stats["guestFQDN"] == guest.GUEST_HOSTNAME
        assert stats["guestIPs"].split() == ["10.0.2.15"]
        assert [(n["name"], n["hw"], n["inet"]) for n in stats["netIfaces"]] == [
            ("eth0", "52:54:00:00:0a:01", ["10.0.2.15"])
        ]
        assert stats["guestOsInfo"]["distribution"] == "vdsm_py tiny guest"
        assert stats["guestOsInfo"]["kernel"] == tiny_guest.kernel_version

        host.call("VM.shutdown", vmID=vm_id, timeout=60)
        text = guest.wait_for_console(console, guest.MARKER_AGENT_SHUTDOWN, timeout=60)
        assert guest.MARKER_POWEROFF not in text  # the agent did it, not the ACPI button
        down = wait_status(host, vm_id, "Down", timeout=60)
        assert down["exitCode"] == 0
    finally:
        host.call("VM.destroy", vmID=vm_id)
    assert vm_id not in [v["vmId"] for v in host.call("Host.getVMList")]


def test_libvirt_refusal_is_a_create_error_and_leaves_no_domain(
    host: QemuHost, tiny_guest: guest.GuestImage, tmp_path: Path
):
    # A disk whose storage is missing: libvirt refuses to start the domain, naming it.
    bad_id = str(uuid.uuid4())
    missing = str(tmp_path / "not-prepared.img")
    params = tiny_vm_params(f"bad-{bad_id[:8]}", tiny_guest)
    params["devices"].append({"type": "disk", "device": "disk", "path": missing})
    try:
        host.call("VM.create", vmID=bad_id, vmParams=params)
    except RpcError as exc:  # refused at once: nothing is listed
        assert exc.code == CREATE_ERROR
        assert missing in exc.message
        assert bad_id not in [v["vmId"] for v in host.call("Host.getVMList")]
    else:  # refused after VM.create answered: Down with libvirt's reason
        down = wait_status(host, bad_id, "Down", timeout=30)
        assert (down["exitCode"], down["exitReason"]) == (1, 3)
        assert missing in down["exitMessage"]
        host.call("VM.destroy", vmID=bad_id)
    conn = host.libvirtd.connect()
    try:
        assert bad_id not in [d.UUIDString() for d in conn.listAllDomains()]
    finally:
        conn.close()
