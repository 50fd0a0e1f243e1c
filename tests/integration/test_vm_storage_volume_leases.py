"""Volume leases of exclusive drives through real daemons (libvirt's test driver for the
VMs) and real sanlock daemons: a drive with ``shared: exclusive`` holds its volume's lease
(the ``.lease`` file beside the volume, offset 0, resource = volume, lockspace = domain)
while its VM runs, held by a lease keeper of its own (key ``<vmId>.<volUUID>``), so that
no second VM (on another host or on this one) can use the volume meanwhile; bad drives are
refused with VDSM's codes and leave nothing behind; a disk hot-plug that fails in libvirt
gives back the lease and the prepared image it took.

Two hosts share one export as in tests/integration/test_vm_storage_daemon.py.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from lxml import etree

from storage.lease_keeper import KeeperRecord, record_path
from tests.integration.lease_keepers import (
    holder,
    keeper_pids,
    keeper_reaper,  # noqa: F401 - fixture
    keepers_dir,
    wait_for,
)
from tests.integration.storage_host import StorageHost
from tests.integration.test_storage_tasks_daemon import (  # the pool these tests share
    IMG,
    SD,
    V1,
    V2,
    hosts,  # noqa: F401 - the two-host fixture
)
from tests.integration.test_vm_storage_daemon import (
    LEASE,
    MISSING,
    VM,
    VM2,
    create_error,
    drive,
    link,
    no_keeper,
    our_vms,
    pool_hosts,
    task,
    vm_params,
    vm_resources,
    wait_status,
    wait_up,
)
from vdsm_py.client.errors import RpcError


def exclusive(volume: str = V2, **extra: Any) -> dict[str, Any]:
    return {**drive(volume), "shared": "exclusive", **extra}


def drive_keeper(host: StorageHost, vm_id: str = VM, volume: str = V2) -> int:
    """The keeper of the drive's volume lease: its own process, the holder sanlock names,
    with its record ``<vmId>.<volUUID>.json`` saying held."""
    key = f"{vm_id}.{volume}"
    pids = [pid for pid in keeper_pids(keepers_dir(host.root), vm_id)
            if f"--key\0{key}\0".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(pids) == 1, pids
    rec = KeeperRecord.load(record_path(keepers_dir(host.root), key))
    assert rec is not None and (rec.pid, rec.state, rec.vm_id) == (pids[0], "held", vm_id)
    assert holder(host.sanlock, SD, volume) == pids[0]
    assert host.daemon is None or pids[0] != host.daemon.proc.pid
    return pids[0]


def nothing_left(host: StorageHost) -> bool:
    return not link(host).is_symlink() and no_keeper(host) and vm_resources(host) == []


async def lease_of(host: StorageHost, vm_id: str) -> etree._Element:
    xml = etree.fromstring((await host.ok("Host.dumpxmls", vmList=[vm_id]))[vm_id].encode())
    (lease,) = xml.iterfind("devices/lease")
    return lease


async def refused(host: StorageHost, vm_id: str, params: dict[str, Any]) -> RpcError:
    err = await create_error(host, vm_id, params)
    assert err.code == 9, err
    assert await our_vms(host) == [] and nothing_left(host)
    return err


async def test_an_exclusive_drive_runs_in_one_vm_of_two_hosts_and_its_lease_follows_the_vm(
        tmp_path, hosts, keeper_reaper):  # noqa: F811
    a, b = await pool_hosts(tmp_path, hosts, "ab", V1, V2)
    export = tmp_path / "export"
    params = vm_params(VM, exclusive())

    await a.ok("VM.create", vmID=VM, vmParams=params)
    await wait_up(a, VM)
    # the XML carries the lease as VDSM writes it: the volume's .lease file at offset 0
    lease = await lease_of(a, VM)
    assert (lease.findtext("key"), lease.findtext("lockspace")) == (V2, SD)
    target = lease.find("target")
    assert target.get("offset", "0") == "0"  # libvirt leaves out an offset of 0
    assert Path(target.get("path")).resolve() == \
        (export / SD / "images" / IMG / f"{V2}.lease").resolve()
    # ...and sanlock agrees: host id 1's keeper of the drive holds resource V2
    assert vm_resources(a) == [V2] and vm_resources(b) == []
    keeper_a = drive_keeper(a)

    # another host may not run any VM on that volume: refused, nothing left there
    for vm_id in (VM, VM2):
        err = await refused(b, vm_id, vm_params(vm_id, exclusive()))
        assert f"cannot acquire volume lease {SD}/{IMG}/{V2}" in err.message, err.message
        assert "held by another host (code 651)" in err.message
    # nor may a second VM of the same host (sanlock: held by another process here)
    err = await refused_here(a, vm_params(VM2, exclusive()))
    assert "held by another process of this host" in err.message, err.message
    # a VM that only reads the volume (read-only drive), or shares it, takes no lease
    for extra in ({"readonly": True}, {"shared": "shared"}):
        await b.ok("VM.create", vmID=VM2, vmParams=vm_params(VM2, {**drive(V2), **extra}))
        assert vm_resources(b) == [] and no_keeper(b)
        await b.ok("VM.destroy", vmID=VM2)
        assert nothing_left(b)

    # the VM goes away on a: its drive's keeper gives the lease back; b runs the VM now
    await a.ok("VM.destroy", vmID=VM)
    assert nothing_left(a)
    await b.ok("VM.create", vmID=VM, vmParams=params)
    await wait_up(b, VM)
    keeper_b = drive_keeper(b)
    await refused(a, VM, params)

    # b's daemon dies: the keeper holds on; the restarted daemon finds the (test driver)
    # VM gone with it and releases the keeper; then a may run the VM
    await b.kill()
    assert drive_keeper(b) == keeper_b
    await refused(a, VM, params)
    await b.start()
    wait_for(lambda: no_keeper(b), 60, "b's keeper released")
    assert vm_resources(b) == []
    await a.ok("VM.create", vmID=VM, vmParams=params)
    await wait_up(a, VM)
    keeper_a = drive_keeper(a)

    # the drive's keeper killed under the running VM: the VM must not run on
    os.kill(keeper_a, signal.SIGKILL)
    wait_for(lambda: vm_resources(a) == [], 60, "sanlock freeing the dead keeper's lease")
    down = await wait_status(a, VM, "Down")
    assert f"lease keeper {keeper_a} died" in down["exitMessage"], down
    await a.ok("VM.destroy", vmID=VM)
    assert nothing_left(a)


async def refused_here(host: StorageHost, params: dict[str, Any]) -> RpcError:
    """A second VM of a host that runs one already: refused, the running one untouched."""
    before = await our_vms(host)
    err = await create_error(host, params["vmId"], params)
    assert err.code == 9 and await our_vms(host) == before
    return err


async def test_a_vm_lease_and_a_drive_lease_are_held_by_their_own_keepers_and_adopted(
        tmp_path, hosts, keeper_reaper):  # noqa: F811
    (host,) = await pool_hosts(tmp_path, hosts, "a", V1)
    await task(host, "Lease.create", lease=LEASE)
    params = vm_params(VM, exclusive(V1), {"type": "lease", **LEASE})
    await host.ok("VM.create", vmID=VM, vmParams=params)
    await wait_up(host, VM)
    assert sorted(vm_resources(host)) == sorted([V1, VM])
    keepers = keeper_pids(keepers_dir(host.root), VM)
    assert len(keepers) == 2 and drive_keeper(host, volume=V1) in keepers
    assert holder(host.sanlock, SD, VM) in keepers
    # a daemon SIGKILL leaves both held; the restarted daemon (whose test-driver VM died
    # with the old one) releases both
    await host.kill()
    assert sorted(vm_resources(host)) == sorted([V1, VM])
    assert keeper_pids(keepers_dir(host.root), VM) == keepers
    await host.start()
    wait_for(lambda: no_keeper(host), 60, "both keepers released")
    assert vm_resources(host) == []


async def test_bad_exclusive_drives_are_refused_with_vdsm_codes_and_leave_nothing(
        tmp_path, hosts, keeper_reaper):  # noqa: F811
    (host,) = await pool_hosts(tmp_path, hosts, "a", V1, V2)

    # a volume below the leaf (V1 is V2's parent now) cannot be written: 224
    err = await refused(host, VM, vm_params(VM, exclusive(V1)))
    assert f"cannot prepare drive vda ({SD}/{IMG}/{V1})" in err.message
    assert "(code 224)" in err.message and "not a leaf" in err.message
    # unknown volume, unknown domain: the storage codes, named
    err = await refused(host, VM, vm_params(VM, exclusive(MISSING)))
    assert "(code 201)" in err.message and MISSING in err.message
    err = await refused(host, VM, vm_params(VM, {**exclusive(), "domainID": MISSING}))
    assert "(code 358)" in err.message, err
    # transient disks are not made: refused, naming the field
    err = await create_error(host, VM, vm_params(VM, {**drive(), "shared": "transient"}))
    assert err.code == 91 and "shared" in err.message
    assert nothing_left(host) and await our_vms(host) == []

    # hot-plug: the test driver refuses every attach, after the drive was prepared and its
    # lease taken: both are given back, and the VM's own drive stays as it was
    await host.ok("VM.create", vmID=VM, vmParams=vm_params(VM))
    await wait_up(host, VM)
    code = await host.error("VM.hotplugDisk", vmID=VM, params={"vmId": VM,
                                                                "drive": exclusive()})
    assert code == 45
    assert nothing_left(host)
    try:
        await host.ok("VM.hotplugDisk", vmID=VM, params={"vmId": VM, "drive": exclusive(V1)})
    except RpcError as exc:  # refused before libvirt is asked: not a leaf
        assert exc.code == 45 and "(code 224)" in exc.message, exc
    else:
        raise AssertionError("a non-leaf exclusive drive was plugged")
    assert nothing_left(host)
    await host.ok("VM.destroy", vmID=VM)
