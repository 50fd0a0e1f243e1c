"""Recovery on libvirt's test driver: a new manager adopts what runs, from libvirt alone."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from lxml import etree

from tests.integration.virt_support import RpcError, VirtHarness, driver_connection, plain_vm
from vdsm_py.config import VirtConfig
from vdsm_py.virt import domxml
from vdsm_py.virt.spec import parse_vm_params

CONFIG = VirtConfig(libvirt_uri="test:///default", powering_up_timeout=0.1,
                    stats_interval=3600, guest_agent_interval=0)
TEST_DOMAIN = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # the test driver's own "test" VM


async def test_vm_verbs_answer_99_while_recovering_then_serve(tmp_path):
    h = await VirtHarness(CONFIG).start(recover=False)
    try:
        h.dispatcher.recovering = True
        for method, params in (("VM.getStats", {"vmID": TEST_DOMAIN}),
                               ("Host.getVMList", {}), ("Host.getAllVmStats", {}),
                               ("VM.create", {"vmID": str(uuid.uuid4()), "vmParams": {}})):
            with pytest.raises(RpcError) as err:
                await h.call(method, **params)
            assert err.value.code == 99, method
        await h.manager.recover()
        h.dispatcher.recovering = False
        (stats,) = await h.call("VM.getStats", vmID=TEST_DOMAIN)
        assert stats["status"] == "Up"
    finally:
        await h.close()


@pytest.fixture
def keep_test_driver_state():
    """test:///default forgets its domains when its last connection closes: hold one."""
    with driver_connection() as conn:
        yield conn


async def test_new_manager_adopts_running_and_paused_vms_with_their_metadata(
        keep_test_driver_state):
    old = await VirtHarness(CONFIG).start()
    running, params = plain_vm("running", custom={"team": "<blue>"})
    await old.call("VM.create", vmID=running, vmParams=params)
    paused, params = plain_vm("paused", launchPaused=True)
    await old.call("VM.create", vmID=paused, vmParams=params)
    await old.wait_status(running, "Up")
    await old.wait_status(paused, "Paused")
    await old.close(destroy=False)  # the daemon goes away; the VMs do not

    new = await VirtHarness(CONFIG).start()
    try:
        listed = {v["vmId"]: v for v in await new.call("Host.getVMFullList")}
        assert listed[running]["status"] == "Up"
        assert listed[running]["custom"] == {"team": "<blue>"}
        assert listed[running]["external"] is False
        nets = [d["network"] for d in listed[running]["devices"] if d["type"] == "interface"]
        assert nets == ["ovirtmgmt", "default"]
        assert listed[paused]["status"] == "Paused"
        assert listed[paused]["launchPaused"] == "true"
        assert listed[TEST_DOMAIN]["external"] is True
        await new.call("VM.cont", vmID=paused)
        await new.wait_status(paused, "Up")
        # nothing was started twice: one domain per VM
        names = [v["vmName"] for v in listed.values()]
        assert len(names) == len(set(names))
    finally:
        await new.close()


def _driver_file(path: Path, vm_ids: list[str]) -> str:
    """A test-driver state file whose running domains carry our metadata."""
    node = etree.Element("node")
    for i, vm_id in enumerate(vm_ids):
        _, params = plain_vm(f"file{i}", custom={"index": str(i)})
        spec = parse_vm_params(vm_id, params)
        defn = domxml.build(spec, CONFIG)
        domxml.stamp_start(defn)
        node.append(etree.fromstring(defn.xml().encode()))
    path.write_bytes(etree.tostring(node))
    return f"test://{path}"


async def test_recovery_rebuilds_vms_from_libvirt_alone(tmp_path):
    """A fresh libvirt state (as after a host-side restart of the daemon process)."""
    vm_ids = [str(uuid.uuid4()) for _ in range(3)]
    uri = _driver_file(tmp_path / "node.xml", vm_ids)
    h = await VirtHarness(VirtConfig(libvirt_uri=uri, stats_interval=3600)).start()
    try:
        full = {v["vmId"]: v for v in await h.call("Host.getVMFullList")}
        assert set(full) == set(vm_ids)
        for i, vm_id in enumerate(vm_ids):
            assert full[vm_id]["custom"] == {"index": str(i)}
            assert full[vm_id]["status"] == "Up"
            assert full[vm_id]["external"] is False
        (stats,) = await h.call("VM.getStats", vmID=vm_ids[0])
        assert int(stats["elapsedTime"]) >= 0
        assert await h.call("VM.destroy", vmID=vm_ids[0]) is True
    finally:
        await h.close()


async def test_domain_started_behind_our_back_is_adopted_as_external():
    h = await VirtHarness(CONFIG).start()
    try:
        vm_id = str(uuid.uuid4())
        xml = etree.tostring(etree.fromstring(
            f"<domain type='kvm'><name>stranger-{vm_id[:8]}</name><uuid>{vm_id}</uuid>"
            "<memory unit='MiB'>64</memory><os><type>hvm</type></os></domain>"))

        def start_elsewhere(conn):
            conn.createXML(xml.decode(), 0)

        await h.manager.svc.conn.call(start_elsewhere, name="test")
        for _ in range(100):
            if vm_id in h.manager.vms:
                break
            await asyncio.sleep(0.02)
        (full,) = await h.call("Host.getVMFullList", vmList=[vm_id])
        assert full["external"] is True and full["status"] == "Up"
        await h.call("VM.destroy", vmID=vm_id)
    finally:
        await h.close()
