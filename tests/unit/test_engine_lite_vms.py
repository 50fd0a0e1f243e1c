"""engine-lite's VM convergence with host reports, and fencing decisions, on a real
(in-memory) repository. No daemons.

A ``Host.getAllVmStats`` answer describes the host as it was when the engine *asked*; a
status event or a start that happened after that must not be undone by it. A highly
available VM of a lost host is restarted only after fencing succeeded.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "contrib" / "engine-lite"))

from engine_lite.config import EngineConfig
from engine_lite.context import Context
from engine_lite.errors import InvalidInput
from engine_lite.fencing import Fencer
from engine_lite.models import Desired, Host, HostStatus, Vm
from engine_lite.pki import EngineCa
from engine_lite.repo import SqliteRepository
from engine_lite.store import Store
from engine_lite.vmdef import check_disks, vm_params
from engine_lite.vms import VmManager


@pytest.fixture
async def vms(tmp_path: Path) -> AsyncIterator[VmManager]:
    repo = SqliteRepository(":memory:")
    cluster = repo.default_cluster()
    ctx = Context(EngineConfig.load(tmp_path), Store(repo))
    host = Host("h1", "h1", cluster.id, "127.0.0.1", 1, status=HostStatus.UP, mem_mib=4096)
    repo.add_host(host)
    ctx.hosts[host.id] = host
    manager = VmManager(ctx, cluster.id)
    try:
        yield manager
    finally:
        await manager.close()
        ctx.store.close()


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_report_asked_before_a_vm_appeared_does_not_call_it_down(vms: VmManager) -> None:
    vm = await vms.create("a", 64)
    asked = now()
    await vms.vm_event("h1", vm.id, {"status": "Powering up"})
    await vms.host_report("h1", [], asked)  # crossed the VM's start on the wire
    assert (vm.status, vm.host_id) == ("Powering up", "h1")
    await vms.host_report("h1", [], now())  # asked afterwards: the VM is gone
    assert (vm.status, vm.host_id) == ("Down", None)
    assert "no longer running on h1" in vm.last_error


async def test_report_older_than_a_status_event_does_not_revert_it(vms: VmManager) -> None:
    vm = await vms.create("a", 64)
    await vms.vm_event("h1", vm.id, {"status": "Up"})
    asked = now()
    await vms.vm_event("h1", vm.id, {"status": "Paused"})
    await vms.host_report("h1", [{"vmId": vm.id, "status": "Up"}], asked)
    assert vm.status == "Paused"
    await vms.host_report("h1", [{"vmId": vm.id, "status": "Up"}], now())
    assert vm.status == "Up"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def lost_ha_vm(vms: VmManager, tmp_path: Path) -> tuple[Fencer, str]:
    """An HA VM that should run, Unknown on h1, which is NonResponsive and unreachable."""
    vm = await vms.create("ha", 64, ha=True)
    await vms.vm_event("h1", vm.id, {"status": "Up"})
    vm.desired = Desired.UP
    host = vms.ctx.hosts["h1"]
    host.port, host.status = closed_port(), HostStatus.NON_RESPONSIVE
    await vms.host_unresponsive("h1")
    ssl_context = EngineCa(tmp_path / "ca", tmp_path / "pki").client_context()
    return Fencer(vms.ctx, vms, ssl_context, lambda h: set()), vm.id


async def events(vms: VmManager) -> list[str]:
    return [e.kind for e in await vms.ctx.store.run(vms.ctx.store.repo.list_events)]


async def event_seen(vms: VmManager, kind: str) -> None:
    async with asyncio.timeout(30):
        while kind not in await events(vms):
            await asyncio.sleep(0.05)


async def test_unfenced_ha_vm_stays_unknown_and_the_failure_is_recorded(
        vms: VmManager, tmp_path: Path) -> None:
    fencer, vm_id = await lost_ha_vm(vms, tmp_path)
    fencer.host_unresponsive("h1")
    await event_seen(vms, "host_fence_failed")
    await fencer.close()
    assert vms.ctx.vms[vm_id].status == "Unknown"  # not restarted anywhere


async def test_fenced_ha_vm_is_down_and_a_restart_is_attempted(
        vms: VmManager, tmp_path: Path) -> None:
    fencer, vm_id = await lost_ha_vm(vms, tmp_path)
    vms.ctx.hosts["h1"].fence_agent = [sys.executable, "-c", "print('off')"]
    fencer.host_unresponsive("h1")
    vm = vms.ctx.vms[vm_id]
    await vms.ctx.wait_until(lambda: vm.status == "Down", 30)
    assert "was fenced" in vm.last_error
    await event_seen(vms, "vm_ha_restart_failed")  # h1 was the only host: none fits
    await fencer.close()
    kinds = await events(vms)
    assert kinds.index("host_fenced") < kinds.index("vm_ha_restart_failed")


# -- definitions with disks ---------------------------------------------------------------

SD, IMG, VOL = (str(uuid.UUID(int=i)) for i in (1, 2, 3))


def test_disks_are_sent_by_their_storage_ids_without_a_path() -> None:
    disks = check_disks([{"domainID": SD, "imageID": IMG, "volumeID": VOL, "format": "cow",
                          "bootOrder": 1}])
    vm = Vm("v", "web", "c", 64, disks=disks)
    devices = [d for d in vm_params(vm)["devices"] if d["type"] == "disk"]
    assert devices == [{"type": "disk", "device": "disk", "domainID": SD, "imageID": IMG,
                        "volumeID": VOL, "format": "cow", "iface": "virtio", "bootOrder": 1,
                        "deviceId": disks[0]["deviceId"]}]
    assert check_disks(disks) == disks  # stable: the device id is kept


@pytest.mark.parametrize(("disk", "why"), [
    ({"domainID": SD, "imageID": IMG}, "volumeID is required"),
    ({"domainID": "sd1", "imageID": IMG, "volumeID": VOL}, "'sd1' is not a UUID"),
    ({"domainID": SD, "imageID": IMG, "volumeID": VOL, "format": "qcow2"}, "format must be"),
    ({"domainID": SD, "imageID": IMG, "volumeID": VOL, "path": "/x"}, "unknown key(s) path"),
    ({"domainID": SD, "imageID": IMG, "volumeID": VOL, "bootOrder": True}, "bootOrder"),
])
def test_bad_disks_are_refused_with_the_reason(disk: dict[str, object], why: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(why)):
        check_disks([disk])


def test_the_same_volume_twice_is_refused() -> None:
    disk = {"domainID": SD, "imageID": IMG, "volumeID": VOL}
    with pytest.raises(InvalidInput, match="already a disk of this VM"):
        check_disks([disk, dict(disk)])
