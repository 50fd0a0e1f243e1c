"""A VM on storage under real libvirtd + QEMU: the tiny guest boots with a prepared qcow2
volume as its disk, and its VM lease is held on the real sanlock daemon by a lease keeper
process that guards the VM's QEMU (docs/ARCHITECTURE.md "VM leases"):

- the daemon's SIGKILL leaves the lease held while QEMU runs on; the restarted daemon adopts
  the same keeper (no second one);
- a keeper told by SIGTERM that the lease is lost (what sanlock does when the lockspace
  goes) kills the QEMU it guards; a keeper killed outright makes the daemon destroy the VM;
- a running leased VM found without a keeper (daemon and keeper both killed) has its lease
  taken again, or, when another host (its own sanlock daemon, host id 2) took it meanwhile,
  is destroyed here, since that host runs the VM now.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import guest
from tests.integration.daemon_proc import free_port, start_daemon
from tests.integration.lease_keepers import (
    keeper_pids,
    keeper_reaper,  # noqa: F401 - fixture
    keepers_dir,
    record,
)
from tests.integration.libvirtd import LibvirtdInstance, pid_alive
from tests.integration.ptyconsole import PtyRecorder
from tests.integration.qemu_host import QemuHost, wait_until, write_config
from tests.integration.sanlock_daemon import SanlockDaemon, start_sanlock
from tests.integration.storage_host import resources
from tests.integration.test_virt_qemu import (
    BOOT_TIMEOUT,
    console_pty,
    domain_xml,
    qemu_pid,
    status_of,
    tiny_vm_params,
    wait_status,
)
from vdsm_py import devhost
from vdsm_py.client import RpcError

pytestmark = pytest.mark.slow

SP = "8a1b2c3d-aaaa-4a1e-8a53-0d1f2c3b4a5d"
SD = "8b2c3d4e-bbbb-4b2f-9b64-1e2a3d4c5b6e"
IMG = "8c3d4e5f-cccc-4c30-8c75-2f3b4e5d6c7f"
VOL = "8d4e5f60-dddd-4d41-9d86-304c5f6e7d80"
BLANK = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def storage_host(libvirtd: LibvirtdInstance, tmp_path: Path) -> Iterator[tuple[QemuHost,
                                                                              SanlockDaemon]]:
    sanlock = start_sanlock(tmp_path / "sanlock")
    root, port = tmp_path / "host", free_port()
    write_config(root, port, libvirtd.uri)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(root / devhost.CONF_NAME)
    parser.read_dict({"storage": {"sanlock_run_dir": str(sanlock.run_dir),
                                  "sanlock_io_timeout": "1", "monitor_interval": "1"}})
    with open(root / devhost.CONF_NAME, "w", encoding="utf-8") as f:
        parser.write(f)
    host = QemuHost(root, port, libvirtd, start_daemon(root, port=port, env=sanlock.env))
    try:
        yield host, sanlock
    finally:
        host.close()
        sanlock.stop()


def wait_task(host: QemuHost, task_id: str) -> None:
    def finished() -> dict[str, Any] | None:
        status = host.call("Task.getStatus", taskID=task_id)
        return status if status["taskState"] == "finished" else None
    status = wait_until(finished, 120, f"task {task_id}")
    assert status["taskResult"] == "success", status
    host.call("Task.clear", taskID=task_id)


def make_storage(host: QemuHost, tmp: Path) -> Path:
    """A localfs data domain in ``tmp/export``, master of pool SP, with the test volume."""
    export = tmp / "export"
    export.mkdir()
    conn = [{"id": "c1", "connection": str(export)}]
    host.call("StoragePool.connectStorageServer", storagepoolID=BLANK, domainType=4,
              connectionParams=conn)
    host.call("StorageDomain.create", storagedomainID=SD, domainType=4, typeArgs=str(export),
              name="data")
    host.call("StoragePool.create", storagepoolID=SP, name="dc", masterSdUUID=SD,
              masterVersion=1, domainList=[SD])
    host.call("StoragePool.connect", storagepoolID=SP, hostID=1, masterSdUUID=SD,
              masterVersion=1)
    wait_until(lambda: host.call("Host.getStorageRepoStats").get(SD, {}).get("acquired"), 60,
               "host id 1")
    host.call("StoragePool.spmStart", storagepoolID=SP)
    wait_task(host, host.call("Volume.create", storagepoolID=SP, storagedomainID=SD,
                              imageID=IMG, volumeID=VOL, volFormat=4, preallocate=2,
                              size=str(64 << 20)))
    return export


def lease_holder(sanlock: SanlockDaemon, resource: str) -> int | None:
    """The pid holding resource ``resource`` of domain SD: a VM lease is named by the vmId,
    a volume lease by the volUUID."""
    for line in sanlock.client_status().splitlines():
        parts = line.split()
        if parts[:1] == ["r"] and parts[1].startswith(f"{SD}:{resource}:"):
            return int(parts[parts.index("p") + 1])
    return None


HOST2 = """
import sys
from pathlib import Path
from storage.sanlock_adapter import Disk, Sanlock
from storage.xleases import LeasesVolume
run_dir, md_dir, sd, lease_id = sys.argv[1:5]
lock = Sanlock(Path(run_dir))
lock.add_lockspace(sd, 2, Path(md_dir) / "ids", io_timeout=1, wait=True)
info = LeasesVolume(Path(md_dir) / "xleases", sd, 1 << 20).lookup(lease_id)
lock.acquire(sd, lease_id, Disk(info.path, info.offset))
print("ACQUIRED", flush=True)
sys.stdin.read()
lock.release(sd, lease_id, Disk(info.path, info.offset))
lock.rem_lockspace(sd, 2, Path(md_dir) / "ids", wait=True)
"""


@contextlib.contextmanager
def other_host(run_dir: Path, export: Path, vm_id: str) -> Iterator[None]:
    """Host 2 (its own sanlock daemon, host id 2) holding the VM lease while inside."""
    sanlock2 = start_sanlock(run_dir)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOST2, str(run_dir), str(export / SD / "dom_md"), SD, vm_id],
        env=sanlock2.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ACQUIRED"
        assert lease_holder(sanlock2, vm_id) == proc.pid
        yield
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        sanlock2.stop()


def open_files(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            out.add(os.path.realpath(f"/proc/{pid}/fd/{fd}"))
    return out


def the_keeper(host: QemuHost, sanlock: SanlockDaemon, vm_id: str, qemu: int) -> int:
    """The VM's one keeper, holding its lease and guarding its QEMU."""
    (pid,) = keeper_pids(keepers_dir(host.root), vm_id)
    wait_until(lambda: (rec := record(host.root, vm_id)) is not None and rec.pid == pid
               and rec.state == "held" and rec.qemu_pid == qemu, 60, "the keeper guarding QEMU")
    assert lease_holder(sanlock, vm_id) == pid != host.daemon.proc.pid
    return pid


def kill_daemon(host: QemuHost) -> None:
    host.daemon.close(signal.SIGKILL)


def domain_gone(host: QemuHost, vm_id: str) -> bool:
    """libvirt has finished with the domain (it tidies up a moment after QEMU dies)."""
    conn = host.libvirtd.connect()
    try:
        return vm_id not in {d.UUIDString() for d in conn.listAllDomains()}
    finally:
        conn.close()


def start_vm(host: QemuHost, vm_id: str, params: dict[str, Any]) -> int:
    wait_until(lambda: domain_gone(host, vm_id), 60, "libvirt done with the last domain")
    host.call("VM.create", vmID=vm_id, vmParams=params)
    wait_status(host, vm_id, "Up")
    return qemu_pid(host.libvirtd, vm_id)


def test_guest_boots_from_a_prepared_volume_and_its_lease_outlives_a_daemon_kill(
        storage_host, tiny_guest: guest.GuestImage, tmp_path: Path, keeper_reaper):  # noqa: F811
    host, sanlock = storage_host
    export = make_storage(host, tmp_path)
    vm_id = str(uuid.uuid4())
    lease = {"sd_id": SD, "lease_id": vm_id}
    wait_task(host, host.call("Lease.create", lease=lease))
    params = tiny_vm_params("leased", tiny_guest)
    params["devices"] += [
        {"type": "disk", "device": "disk", "domainID": SD, "poolID": SP, "imageID": IMG,
         "volumeID": VOL, "format": "cow", "iface": "virtio"},
        {"type": "lease", "device": "lease", **lease},
    ]
    host.call("VM.create", vmID=vm_id, vmParams=params)
    recorder = None
    try:  # the domain exists once the lease is held and createXML returned
        wait_until(lambda: status_of(host, vm_id)["status"] in ("Powering up", "Up"), 60,
                   "the domain started")
        pty = wait_until(lambda: console_pty(host, vm_id), 60, "the domain's console pty")
        recorder = PtyRecorder(pty, tmp_path / "console.log")
        guest.wait_for_console(tmp_path / "console.log", guest.MARKER_UP, timeout=BOOT_TIMEOUT)
        volume = (export / SD / "images" / IMG / VOL).resolve()
        qemu = qemu_pid(host.libvirtd, vm_id)
        assert str(volume) in open_files(qemu)  # QEMU runs the guest on the volume itself
        disk = domain_xml(host, vm_id).find("devices/disk")
        assert disk.find("source").get("file") == str(host.root / "run" / "storage" / SD /
                                                      IMG / VOL)
        assert disk.find("driver").get("type") == "qcow2"
        keeper = the_keeper(host, sanlock, vm_id, qemu)

        # the daemon dies: the keeper holds the lease on for the QEMU that runs on
        kill_daemon(host)
        assert pid_alive(qemu) and lease_holder(sanlock, vm_id) == keeper
        # restarted, it adopts the VM and the same keeper: no second keeper, no new lease
        host.daemon = start_daemon(host.root, port=host.port, env=sanlock.env)
        wait_status(host, vm_id, "Up")
        assert the_keeper(host, sanlock, vm_id, qemu) == keeper
        assert qemu_pid(host.libvirtd, vm_id) == qemu

        # sanlock's way of revoking a lease (lockspace lost) is SIGTERM to its holder: the
        # keeper kills the QEMU it guards, so the VM does not run on without its lease
        os.kill(keeper, signal.SIGTERM)
        wait_until(lambda: not pid_alive(qemu), 60, "QEMU killed by its keeper")
        wait_until(lambda: lease_holder(sanlock, vm_id) is None, 60, "the lease freed")
        wait_status(host, vm_id, "Down")  # libvirt's word or the keeper's, whichever first
        log = (keepers_dir(host.root) / f"{vm_id}.log").read_text()
        assert "SIGTERM" in log and "killing the VM's QEMU" in log, log
        host.call("VM.destroy", vmID=vm_id)
        assert keeper_pids(keepers_dir(host.root)) == []
        assert not (host.root / "run" / "storage" / SD / IMG).is_symlink()

        # a keeper killed outright cannot stop QEMU itself: the daemon destroys the VM
        qemu = start_vm(host, vm_id, params)
        keeper = the_keeper(host, sanlock, vm_id, qemu)
        os.kill(keeper, signal.SIGKILL)
        wait_until(lambda: not pid_alive(qemu), 60, "QEMU destroyed by the daemon")
        down = wait_status(host, vm_id, "Down")
        assert f"lease keeper {keeper} died" in down["exitMessage"], down
        wait_until(lambda: lease_holder(sanlock, vm_id) is None, 60, "the lease freed")
        host.call("VM.destroy", vmID=vm_id)

        # daemon and keeper both killed: the lease is free while QEMU runs; the restarted
        # daemon takes it again for the running VM with a new keeper
        qemu = start_vm(host, vm_id, params)
        keeper = the_keeper(host, sanlock, vm_id, qemu)
        kill_daemon(host)
        os.kill(keeper, signal.SIGKILL)
        wait_until(lambda: lease_holder(sanlock, vm_id) is None, 60, "the lease freed")
        host.daemon = start_daemon(host.root, port=host.port, env=sanlock.env)
        wait_status(host, vm_id, "Up")
        new_keeper = wait_until(lambda: keeper_pids(keepers_dir(host.root), vm_id), 60,
                                "a new keeper")[0]
        assert new_keeper != keeper and the_keeper(host, sanlock, vm_id, qemu) == new_keeper

        # and once more, but another host takes the lease meanwhile: that host runs the VM
        # now, so the restarted daemon's recovery destroys its own copy
        kill_daemon(host)
        os.kill(new_keeper, signal.SIGKILL)
        wait_until(lambda: lease_holder(sanlock, vm_id) is None, 60, "the lease freed")
        with other_host(tmp_path / "sanlock2", export, vm_id):
            host.daemon = start_daemon(host.root, port=host.port, env=sanlock.env)
            down = wait_status(host, vm_id, "Down")
            assert "held by another host" in down["exitMessage"]
            wait_until(lambda: not pid_alive(qemu), 60, "the local QEMU gone")
            assert lease_holder(sanlock, vm_id) is None
            assert keeper_pids(keepers_dir(host.root)) == []  # the refused keeper exited
        host.call("VM.destroy", vmID=vm_id)
        assert not (host.root / "run" / "storage" / SD / IMG).is_symlink()
        assert keeper_pids(keepers_dir(host.root)) == []
        assert resources(sanlock.client_status(), SD) == []  # the SPM lease died with it too
    finally:
        if recorder is not None:
            recorder.close()
        with contextlib.suppress(RpcError, OSError):
            host.call("VM.destroy", vmID=vm_id)


def test_an_exclusive_volume_hotplugged_into_a_guest_holds_its_lease_until_unplugged(
        storage_host, tiny_guest: guest.GuestImage, tmp_path: Path, keeper_reaper):  # noqa: F811
    host, sanlock = storage_host
    export = make_storage(host, tmp_path)
    vm_id = str(uuid.uuid4())
    params = tiny_vm_params("hotplug", tiny_guest)
    key = f"{vm_id}.{VOL}"
    recorder = None
    try:
        qemu = start_vm(host, vm_id, params)
        pty = wait_until(lambda: console_pty(host, vm_id), 60, "the domain's console pty")
        console = tmp_path / "console.log"
        recorder = PtyRecorder(pty, console)
        guest.wait_for_console(console, guest.MARKER_UP, timeout=BOOT_TIMEOUT)
        mark = len(guest.read_console(console))
        drive = {"type": "disk", "device": "disk", "domainID": SD, "poolID": SP,
                 "imageID": IMG, "volumeID": VOL, "format": "cow", "iface": "virtio",
                 "shared": "exclusive"}
        host.call("VM.hotplugDisk", vmID=vm_id, params={"vmId": vm_id, "drive": drive})
        guest.wait_for_console(console, f"{guest.MARKER_UEVENT} add block vda", start=mark)
        xml = domain_xml(host, vm_id)
        (disk,) = xml.findall("devices/disk")
        prepared = host.root / "run" / "storage" / SD / IMG
        assert disk.find("source").get("file") == str(prepared / VOL)
        (lease,) = xml.findall("devices/lease")  # attached with the disk, VDSM's shape
        assert (lease.findtext("key"), lease.findtext("lockspace")) == (VOL, SD)
        assert Path(lease.find("target").get("path")).resolve() == \
            (export / SD / "images" / IMG / f"{VOL}.lease").resolve()
        # the drive's own keeper holds the volume lease and guards the VM's QEMU
        (keeper,) = keeper_pids(keepers_dir(host.root), vm_id)
        wait_until(lambda: (rec := record(host.root, key)) is not None and rec.pid == keeper
                   and rec.state == "held" and rec.qemu_pid == qemu, 60, "keeper guarding")
        assert lease_holder(sanlock, VOL) == keeper

        # the daemon dies and comes back: it adopts the drive's keeper (no second one)
        kill_daemon(host)
        host.daemon = start_daemon(host.root, port=host.port, env=sanlock.env)
        wait_status(host, vm_id, "Up")
        wait_until(lambda: b"storage.lease_keeper" in Path(f"/proc/{keeper}/cmdline")
                   .read_bytes(), 10, "the keeper alive")
        assert keeper_pids(keepers_dir(host.root), vm_id) == [keeper]
        assert lease_holder(sanlock, VOL) == keeper

        # unplugged: the guest lets go, the lease and the prepared image go back
        mark = len(guest.read_console(console))
        host.call("VM.hotunplugDisk", vmID=vm_id, params={"vmId": vm_id,
                                                           "drive": {"name": "vda"}})
        guest.wait_for_console(console, f"{guest.MARKER_UEVENT} remove block vda", start=mark)
        xml = domain_xml(host, vm_id)
        assert xml.findall("devices/disk") == [] and xml.findall("devices/lease") == []
        assert lease_holder(sanlock, VOL) is None
        assert keeper_pids(keepers_dir(host.root), vm_id) == []
        assert not prepared.is_symlink()
        assert status_of(host, vm_id)["status"] == "Up"  # the VM runs on without it
    finally:
        if recorder is not None:
            recorder.close()
        with contextlib.suppress(RpcError, OSError):
            host.call("VM.destroy", vmID=vm_id)
