"""VMs on storage through real daemons: drives prepared from storage volumes, VM leases on
the real sanlock daemon held by a lease keeper process per VM, two hosts contending for one
leased VM.

Each host is a ``vdsmd --dev`` daemon (libvirt's test driver for the VMs) with its own
sanlock daemon and PKI; two hosts share one localfs export, as two machines share storage.
``[virt] create_error_wait`` is long here so that a refused start is answered by VM.create
itself (deterministically) rather than by the VM going Down a moment later. The test
driver's VMs live in the daemon process: they die with it, while their keepers (and
leases) stay until the restarted daemon's recovery finds the VMs gone. The keepers of VMs
whose QEMU outlives the daemon are adopted: tests/integration/test_vm_storage_qemu.py.
"""

from __future__ import annotations

import asyncio
import configparser
import os
import signal
import time
from pathlib import Path
from typing import Any

from lxml import etree

from tests.integration.lease_keepers import (
    holder,
    keeper_pids,
    keeper_reaper,  # noqa: F401 - fixture
    keepers_dir,
    record,
    wait_for,
)
from tests.integration.storage_host import StorageHost, resources
from tests.integration.test_storage_tasks_daemon import (  # the pool these tests share
    IMG,
    MB,
    NEW,
    SD,
    SP,
    V1,
    V2,
    hosts,  # noqa: F401 - the two-host fixture
    make_pool,
)
from vdsm_py.client.errors import RpcError
from vdsm_py.devhost import CONF_NAME

MISSING = "7f607182-ffff-4f63-8fa8-526e71829fa2"
VM = "70000000-1111-4222-8333-444444444444"
VM2 = "70000000-1111-4222-8333-555555555555"
LEASE = {"sd_id": SD, "lease_id": VM}


def slow_create_errors(host: StorageHost) -> StorageHost:
    """A refused start answered by VM.create itself: a long [virt] create_error_wait."""
    host.write_config()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(host.root / CONF_NAME)
    parser.set("virt", "create_error_wait", "60")
    with open(host.root / CONF_NAME, "w", encoding="utf-8") as f:
        parser.write(f)
    return host


async def make_spm_pool(host: StorageHost, export: Path) -> None:
    await make_pool(host, export)
    await host.ok("StoragePool.spmStart", storagepoolID=SP)


async def task(host: StorageHost, method: str, **params: Any) -> None:
    status = await host.wait_task(await host.ok(method, **params))
    assert status["taskResult"] == "success", status
    await host.ok("Task.clear", taskID=status["taskID"])


def drive(volume: str = V2) -> dict[str, Any]:
    return {"type": "disk", "device": "disk", "domainID": SD, "poolID": SP, "imageID": IMG,
            "volumeID": volume, "format": "cow", "iface": "virtio"}


def vm_params(vm_id: str, *devices: dict[str, Any]) -> dict[str, Any]:
    return {"vmId": vm_id, "vmName": f"vm-{vm_id[-4:]}", "memSize": 64,
            "devices": list(devices)}


async def our_vms(host: StorageHost) -> list[str]:
    """Our VMs on the host (the test driver's own "test" domain is adopted as external)."""
    return [v["vmId"] for v in await host.ok("Host.getVMList") if v["vmId"] in (VM, VM2)]


def link(host: StorageHost) -> Path:
    """Where a host publishes the prepared image (its [daemon] run_dir/storage)."""
    return host.root / "run" / "storage" / SD / IMG


async def create_error(host: StorageHost, vm_id: str, params: dict[str, Any]) -> RpcError:
    try:
        answer = await host.ok("VM.create", vmID=vm_id, vmParams=params)
    except RpcError as exc:
        return exc
    raise AssertionError(f"VM.create succeeded: {answer}")


async def wait_up(host: StorageHost, vm_id: str) -> None:
    deadline = time.monotonic() + 30
    while (await host.ok("Host.getVMList", vmList=[vm_id]))[0]["status"] != "Up":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


def vm_resources(host: StorageHost) -> list[str]:
    return [r for r in resources(host.sanlock.client_status(), SD) if r != "SDM"]


def keeper_of(host: StorageHost, vm_id: str = VM) -> int:
    """The one keeper of the VM on the host: a process of its own, not the daemon, and the
    holder of the VM's lease according to sanlock."""
    (pid,) = keeper_pids(keepers_dir(host.root), vm_id)
    rec = record(host.root, vm_id)
    assert rec is not None and rec.pid == pid and rec.state == "held", rec
    assert host.daemon is None or pid != host.daemon.proc.pid
    assert holder(host.sanlock, SD, vm_id) == pid
    return pid


def no_keeper(host: StorageHost) -> bool:
    """No keeper process, no keeper record on the host."""
    directory = keepers_dir(host.root)
    return keeper_pids(directory) == [] and not list(directory.glob("*.json"))


def host_id_line(host: StorageHost) -> str:
    (line,) = [ln for ln in host.sanlock.client_status().splitlines()
               if ln.startswith(f"s {SD}:")]
    return line


async def test_storage_drives_are_prepared_for_the_vm_and_torn_down_after_it(
        tmp_path, hosts):  # noqa: F811
    export = tmp_path / "export"
    export.mkdir()
    host = slow_create_errors(hosts("a"))
    await host.start()
    await make_spm_pool(host, export)
    await task(host, "Volume.create", volumeID=V1, **NEW)
    await task(host, "Volume.create", volumeID=V2, srcVolUUID=V1, **NEW)

    # plain spec: the drive names the volume; the daemon finds its path
    await host.ok("VM.create", vmID=VM, vmParams=vm_params(VM, drive()))
    assert link(host).resolve() == (export / SD / "images" / IMG).resolve()
    xml = etree.fromstring((await host.ok("Host.dumpxmls", vmList=[VM]))[VM].encode())
    (disk,) = xml.iterfind("devices/disk")
    assert disk.find("source").get("file") == str(link(host) / V2)
    assert disk.find("driver").get("type") == "qcow2"
    await host.ok("VM.destroy", vmID=VM)
    assert not link(host).exists() and not link(host).is_symlink()

    # a broken reference: refused with the drive and the storage error named, nothing left
    err = await create_error(host, VM, vm_params(VM, drive(MISSING)))
    assert err.code == 9 and f"cannot prepare drive vda ({SD}/{IMG}/{MISSING})" in err.message
    assert "does not exist" in err.message
    assert await our_vms(host) == []
    assert not link(host).is_symlink()
    err = await create_error(host, VM, vm_params(VM, {**drive(), "imageID": "../../etc"}))
    assert err.code == 91 and "imageID" in err.message

    # the 4.2+ xml form: the engine's source path and lease placeholders are replaced
    await task(host, "Lease.create", lease=LEASE)
    info = await host.ok("Lease.info", lease=LEASE)
    assert Path(info["path"]).resolve() == (export / SD / "dom_md" / "xleases").resolve()
    assert info["offset"] == 3 * MB  # the first lease slot (1 MiB alignment)
    domain = etree.fromstring(f"""<domain type='kvm'><name>x</name><uuid>{VM}</uuid>
        <memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os>
        <metadata><ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
          <ovirt-vm:device devtype="disk" name="vda"><ovirt-vm:domainID>{SD}</ovirt-vm:domainID>
            <ovirt-vm:imageID>{IMG}</ovirt-vm:imageID><ovirt-vm:poolID>{SP}</ovirt-vm:poolID>
            <ovirt-vm:volumeID>{V1}</ovirt-vm:volumeID></ovirt-vm:device>
        </ovirt-vm:vm></metadata>
        <devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>
          <source file='/rhev/data-center/{SP}/{SD}/images/{IMG}/{V1}'/>
          <target dev='vda' bus='virtio'/></disk>
        <lease><key>{VM}</key><lockspace>{SD}</lockspace>
          <target offset="LEASE-OFFSET:{VM}:{SD}" path="LEASE-PATH:{VM}:{SD}"/></lease>
        </devices></domain>""")
    await host.ok("VM.create", vmID=VM, vmParams={"xml": etree.tostring(domain).decode()})
    xml = etree.fromstring((await host.ok("Host.dumpxmls", vmList=[VM]))[VM].encode())
    assert xml.find("devices/disk/source").get("file") == str(link(host) / V1)
    target = xml.find("devices/lease/target")
    assert (target.get("path"), int(target.get("offset"))) == (info["path"], info["offset"])
    assert vm_resources(host) == [VM]
    keeper = keeper_of(host)  # held for the VM by its keeper, not by the daemon
    argv = Path(f"/proc/{keeper}/cmdline").read_bytes().split(b"\0")
    assert b"storage.lease_keeper" in argv and VM.encode() in argv
    assert os.getsid(keeper) == keeper != os.getsid(host.daemon.proc.pid)  # own session
    await host.ok("VM.destroy", vmID=VM)
    assert vm_resources(host) == [] and not link(host).is_symlink()
    assert no_keeper(host)

    # sanlock gone: a leased VM is not started, and nothing stays prepared
    await host.ok("StoragePool.spmStop", storagepoolID=SP)
    host.sanlock.stop()
    for _ in range(2):
        err = await create_error(host, VM, vm_params(VM, drive(), {"type": "lease", **LEASE}))
        assert err.code == 9 and f"cannot acquire VM lease {SD}:{VM}" in err.message
        assert "is the sanlock daemon running?" in err.message, err.message
        assert await our_vms(host) == []
        assert not link(host).is_symlink()
        assert no_keeper(host)  # the failed keeper exited and its record is gone
    # ...while a VM without a lease still starts from its drive
    await host.ok("VM.create", vmID=VM2, vmParams=vm_params(VM2, drive()))
    await host.ok("VM.destroy", vmID=VM2)
    assert not link(host).is_symlink()


async def pool_hosts(tmp_path: Path, hosts: Any, names: str, *volumes: str  # noqa: F811
                     ) -> list[StorageHost]:
    """Started hosts sharing one export: the first is the SPM (host id 1) and made
    ``volumes`` (each the child of the one before) on it, the others joined (ids 2, ...)."""
    export = tmp_path / "export"
    export.mkdir()
    made = [slow_create_errors(hosts(name)) for name in names]
    for host in made:
        await host.start()
    await make_spm_pool(made[0], export)
    for host_id, host in enumerate(made[1:], start=2):
        await host.join_pool(export, SP, SD, host_id)
    parent = None
    for volume in volumes:
        extra = {"srcVolUUID": parent} if parent else {}
        await task(made[0], "Volume.create", volumeID=volume, **NEW, **extra)
        parent = volume
    return made


async def test_a_leased_vm_runs_on_one_host_of_two_and_its_lease_outlives_the_daemon(
        tmp_path, hosts, keeper_reaper):  # noqa: F811
    a, b = await pool_hosts(tmp_path, hosts, "ab", V1)
    await task(a, "Lease.create", lease=LEASE)
    on_a, on_b = await a.ok("Lease.info", lease=LEASE), await b.ok("Lease.info", lease=LEASE)
    assert on_a["offset"] == on_b["offset"]  # each host reaches it through its own mount
    assert Path(on_a["path"]).resolve() == Path(on_b["path"]).resolve()
    params = vm_params(VM, drive(V1), {"type": "lease", "device": "lease", **LEASE})

    await a.ok("VM.create", vmID=VM, vmParams=params)
    await wait_up(a, VM)
    err = await create_error(b, VM, params)
    assert err.code == 9 and "held by another host" in err.message, err.message
    assert await our_vms(b) == [] and not link(b).is_symlink()
    assert no_keeper(b)  # a failed start leaves no keeper
    # what the daemons say matches sanlock: a (host id 1) holds the lease, b (2) nothing
    assert vm_resources(a) == [VM] and vm_resources(b) == []
    keeper_of(a)
    assert host_id_line(a).startswith(f"s {SD}:1:") and host_id_line(b).startswith(f"s {SD}:2:")
    for host in (a, b):
        assert (await host.ok("Host.getStorageRepoStats"))[SD]["acquired"] is True

    # the VM stops on a: its keeper gives the lease back and exits; b may run the VM
    await a.ok("VM.destroy", vmID=VM)
    assert vm_resources(a) == [] and not link(a).is_symlink() and no_keeper(a)
    await b.ok("VM.create", vmID=VM, vmParams=params)
    await wait_up(b, VM)
    keeper_b = keeper_of(b)
    err = await create_error(a, VM, params)
    assert err.code == 9 and "held by another host" in err.message
    assert no_keeper(a)

    # b's daemon dies (SIGKILL): its keeper holds on, so a still may not run the VM
    await b.kill()
    assert keeper_of(b) == keeper_b and vm_resources(b) == [VM]
    err = await create_error(a, VM, params)
    assert err.code == 9 and "held by another host" in err.message
    # b comes back: the test driver's VM died with the daemon, so recovery releases the
    # keeper of a VM that is gone, and a can take the VM over
    await b.start()
    assert await our_vms(b) == []
    wait_for(lambda: no_keeper(b), 60, "b's keeper released")
    assert vm_resources(b) == []
    await a.ok("VM.create", vmID=VM, vmParams=params)
    await wait_up(a, VM)
    keeper_a = keeper_of(a)

    # a keeper killed under a running VM: the lease is gone, so the VM must not run on
    os.kill(keeper_a, signal.SIGKILL)
    wait_for(lambda: vm_resources(a) == [], 60, "sanlock freeing the dead keeper's lease")
    down = await wait_status(a, VM, "Down")
    assert "died" in down["exitMessage"] and str(keeper_a) in down["exitMessage"], down
    await a.ok("VM.destroy", vmID=VM)
    assert no_keeper(a) and not link(a).is_symlink()

    # a stops cleanly with the VM running: the keeper holds on (a restart is invisible to
    # a VM whose QEMU runs on), the host id stays since a lease is held in its lockspace
    await a.ok("VM.create", vmID=VM, vmParams=params)
    await wait_up(a, VM)
    keeper_a = keeper_of(a)
    assert a.client is not None and a.daemon is not None
    await a.client.close()
    a.client = None
    assert a.daemon.stop(signal.SIGTERM) == 0
    assert f"host id 1 kept in {SD}" in a.daemon.log()
    a.daemon.close()
    a.daemon = None
    assert keeper_of(a) == keeper_a and host_id_line(a).startswith(f"s {SD}:1:")
    await a.start()  # ...and its VM is gone (test driver): recovery releases the keeper
    wait_for(lambda: no_keeper(a), 60, "a's keeper released")
    assert vm_resources(a) == []


async def wait_status(host: StorageHost, vm_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (vm := (await host.ok("Host.getVMList", vmList=[vm_id]))[0])["status"] != status:
        assert time.monotonic() < deadline, vm
        await asyncio.sleep(0.1)
    return vm
