"""VMs through the real Dispatcher on libvirt's embedded test driver: life cycle, events,
errors, hooks. (Recovery and statistics: test_virt_testdriver_recovery/_stats.py.)"""

from __future__ import annotations

import asyncio
import stat
import time
import uuid
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from tests.integration.virt_support import (
    RpcError,
    VirtHarness,
    driver_connection,
    plain_vm,
    running_harness,
)
from vdsm_py.config import VirtConfig
from vdsm_py.hooks import HookRunner
from vdsm_py.virt.manager import INLINE_PARSE_LIMIT

CONFIG = VirtConfig(libvirt_uri="test:///default", powering_up_timeout=0.2,
                    stats_interval=3600, guest_agent_interval=0)


@pytest.fixture
async def virt():
    async with running_harness(CONFIG) as h:
        yield h


@pytest.fixture
def libvirt_view():
    """A separate connection to the same test driver: what libvirt itself says."""
    with driver_connection() as conn:
        yield conn


def domain_exists(conn: libvirt.virConnect, vm_id: str) -> bool:
    try:
        conn.lookupByUUIDString(vm_id)
        return True
    except libvirt.libvirtError:
        return False


async def create(h: VirtHarness, name: str = "vm", **extra) -> str:
    vm_id, params = plain_vm(name, **extra)
    answer = await h.call("VM.create", vmID=vm_id, vmParams=params)
    assert answer["vmId"] == vm_id
    return vm_id


# -- life cycle and events -----------------------------------------------------------------


async def test_create_answers_wait_for_launch_then_announces_powering_up_and_up(virt):
    vm_id, params = plain_vm()
    answer = await virt.call("VM.create", vmID=vm_id, vmParams=params)
    assert answer["status"] == "WaitForLaunch"
    assert answer["vmName"] == params["vmName"]
    await virt.wait_status(vm_id, "Up")
    assert virt.statuses(vm_id) == ["Powering up", "Up"]
    (short,) = await virt.call("Host.getVMList", vmList=[vm_id])
    assert short["status"] == "Up"


async def test_status_event_follows_the_libvirt_event_promptly(virt, libvirt_view):
    """The VM_status event is published soon after libvirt's own lifecycle event
    (liveness bound; bench/vms.py measures the real figure)."""
    seen: dict[str, float] = {}

    def on_event(_conn, dom, event, _detail, _opaque):
        if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
            seen.setdefault(dom.UUIDString(), time.monotonic())

    cb = libvirt_view.domainEventRegisterAny(
        None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None)
    try:
        vm_id = await create(virt)
        await virt.wait_status(vm_id, "Up")
        # someone else pauses it: only libvirt's event can tell the daemon
        await asyncio.to_thread(lambda: libvirt_view.lookupByUUIDString(vm_id).suspend())
        published = await virt.wait_status(vm_id, "Paused")
        for _ in range(100):
            if vm_id in seen:
                break
            await asyncio.sleep(0.01)
        assert published - seen[vm_id] < 1.0
    finally:
        libvirt_view.domainEventDeregisterAny(cb)


async def test_pause_cont_shutdown_then_down_stays_listed_until_destroy(virt, libvirt_view):
    vm_id = await create(virt)
    await virt.wait_status(vm_id, "Up")
    assert await virt.call("VM.pause", vmID=vm_id) == {"vmList": {}}
    assert (await virt.call("VM.getStats", vmID=vm_id))[0]["status"] == "Paused"
    assert await virt.call("VM.cont", vmID=vm_id) == {"vmList": {}}
    assert (await virt.call("VM.getStats", vmID=vm_id))[0]["status"] == "Up"
    assert await virt.call("VM.shutdown", vmID=vm_id, timeout=10, message="bye <now>")
    await virt.wait_status(vm_id, "Down")
    down = virt.last_event(vm_id)
    assert (down["exitCode"], down["exitReason"]) == (0, 6)  # admin shut down
    assert "Powering down" in virt.statuses(vm_id)
    assert not domain_exists(libvirt_view, vm_id)
    (listed,) = await virt.call("Host.getVMList", vmList=[vm_id])
    assert listed["status"] == "Down"
    assert await virt.call("VM.destroy", vmID=vm_id) is True
    assert await virt.call("Host.getVMList", vmList=[vm_id]) == []


async def test_destroy_stops_the_domain_and_announces_admin_shutdown(virt, libvirt_view):
    vm_id = await create(virt)
    await virt.wait_status(vm_id, "Up")
    assert await virt.call("VM.destroy", vmID=vm_id, gracefulAttempts=2) is True
    assert not domain_exists(libvirt_view, vm_id)
    assert virt.last_event(vm_id)["exitReason"] == 6
    with pytest.raises(RpcError) as err:
        await virt.call("VM.destroy", vmID=vm_id)
    assert err.value.code == 1


async def test_launch_paused_vm_is_paused_and_cont_powers_it_up(virt):
    vm_id = await create(virt, launchPaused="true")
    await virt.wait_status(vm_id, "Paused")
    await virt.call("VM.cont", vmID=vm_id)
    await virt.wait_status(vm_id, "Up")
    assert virt.statuses(vm_id) == ["Paused", "Powering up", "Up"]


async def test_external_pause_and_kill_are_reported_from_libvirt_events(virt, libvirt_view):
    vm_id = await create(virt)
    await virt.wait_status(vm_id, "Up")
    await asyncio.to_thread(lambda: libvirt_view.lookupByUUIDString(vm_id).destroy())
    await virt.wait_status(vm_id, "Down")
    down = virt.last_event(vm_id)
    assert (down["exitCode"], down["exitReason"]) == (1, 2)  # lost qemu connection


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("verb,extra", [
    ("VM.destroy", {}), ("VM.getStats", {}), ("VM.pause", {}), ("VM.cont", {}),
    ("VM.shutdown", {}), ("VM.setTicket", {"password": "x"}),
    ("VM.setBalloonTarget", {"target": 1024}), ("VM.hotplugNic", {"params": {}}),
])
async def test_unknown_vm_is_error_1(virt, verb, extra):
    with pytest.raises(RpcError) as err:
        await virt.call(verb, vmID=str(uuid.uuid4()), **extra)
    assert err.value.code == 1


async def test_dumpxmls_of_unknown_vm_is_error_1(virt):
    with pytest.raises(RpcError) as err:
        await virt.call("Host.dumpxmls", vmList=[str(uuid.uuid4())])
    assert err.value.code == 1


async def test_duplicate_vm_id_is_error_4_even_when_down(virt):
    vm_id, params = plain_vm()
    await virt.call("VM.create", vmID=vm_id, vmParams=params)
    with pytest.raises(RpcError) as err:
        await virt.call("VM.create", vmID=vm_id, vmParams=params)
    assert err.value.code == 4
    await virt.call("VM.shutdown", vmID=vm_id, timeout=5)
    await virt.wait_status(vm_id, "Down")
    with pytest.raises(RpcError) as err:
        await virt.call("VM.create", vmID=vm_id, vmParams=params)
    assert err.value.code == 4


@pytest.mark.parametrize("change,field", [
    ({"memSize": "lots"}, "vmParams.memSize"),
    ({"memSize": 0}, "vmParams.memSize"),
    ({"smp": 3, "smpCoresPerSocket": 2}, "vmParams.smpCoresPerSocket"),
    ({"vmName": "a/b"}, "vmParams.vmName"),
    ({"launchPaused": "maybe"}, "vmParams.launchPaused"),
    ({"custom": {"1bad": "x"}}, "vmParams.custom.1bad"),
])
async def test_invalid_spec_field_is_error_91_naming_it(virt, change, field):
    vm_id, params = plain_vm()
    params.update(change)
    with pytest.raises(RpcError) as err:
        await virt.call("VM.create", vmID=vm_id, vmParams=params)
    assert err.value.code == 91
    assert field in err.value.message
    assert await virt.call("Host.getVMList", vmList=[vm_id]) == []


async def test_invalid_mac_is_error_91_naming_the_device(virt):
    vm_id, params = plain_vm()
    params["devices"][1]["macAddr"] = "00:1a:4a:zz:00:01"
    with pytest.raises(RpcError) as err:
        await virt.call("VM.create", vmID=vm_id, vmParams=params)
    assert err.value.code == 91
    assert "vmParams.devices[1].macAddr" in err.value.message


async def test_libvirt_refusal_is_error_9_with_libvirts_message_and_leaves_nothing(
        virt, libvirt_view):
    first = await create(virt, "twin")
    name = (await virt.call("Host.getVMFullList", vmList=[first]))[0]["vmName"]
    vm_id, params = plain_vm(vmName=name)  # libvirt refuses a second domain of that name
    with pytest.raises(RpcError) as err:
        await virt.call("VM.create", vmID=vm_id, vmParams=params)
    assert err.value.code == 9
    assert "already exists" in err.value.message and name in err.value.message
    assert await virt.call("Host.getVMList", vmList=[vm_id]) == []
    assert not domain_exists(libvirt_view, vm_id)
    assert vm_id not in {k for _, e in virt.events for k in e.params}


async def test_late_libvirt_refusal_reports_down_with_libvirts_message(libvirt_view):
    h = await VirtHarness(VirtConfig(libvirt_uri="test:///default", create_error_wait=0,
                                     stats_interval=3600)).start()
    try:
        first = await create(h, "twin")
        await h.wait_status(first, "Powering up")
        name = h.manager.get(first).name
        vm_id, params = plain_vm(vmName=name)
        answer = await h.call("VM.create", vmID=vm_id, vmParams=params)
        assert answer["status"] == "WaitForLaunch"
        await h.wait_status(vm_id, "Down")
        down = h.last_event(vm_id)
        assert (down["exitCode"], down["exitReason"]) == (1, 3)
        assert "already exists" in down["exitMessage"]
        (listed,) = await h.call("Host.getVMList", vmList=[vm_id])
        assert listed["status"] == "Down"
        assert not domain_exists(libvirt_view, vm_id)
        await h.call("VM.destroy", vmID=vm_id)
        assert await h.call("Host.getVMList", vmList=[vm_id]) == []
    finally:
        await h.close()


@pytest.mark.parametrize("ttl", [-1, 0, 10**9])
async def test_ticket_with_negative_zero_or_huge_expiry_is_refused(virt, ttl):
    vm_id = await create(virt)
    with pytest.raises(RpcError) as err:
        await virt.call("VM.setTicket", vmID=vm_id, password="secret", ttl=ttl)
    assert err.value.code == 91
    assert "ttl" in err.value.message


async def test_ticket_on_a_driver_without_graphics_update_is_error_18_naming_why(virt):
    vm_id = await create(virt)
    with pytest.raises(RpcError) as err:
        await virt.call("VM.setTicket", vmID=vm_id, password="s3cr<e>t", ttl=120,
                        existingConnAction="keep")
    assert err.value.code == 18
    assert "virDomainUpdateDeviceFlags" in err.value.message


async def test_device_verbs_report_libvirts_refusal_with_their_codes(virt):
    vm_id = await create(virt)
    nic = {"macAddr": "00:1a:4a:aa:bb:cc", "network": "ovirtmgmt"}
    cases = [
        ("VM.hotplugNic", {"params": {"nic": nic}}, 49),
        ("VM.hotplugDisk", {"params": {"drive": {"path": "/var/tmp/extra.img"}}}, 45),
        ("VM.hotunplugNic", {"params": {"nic": {"macAddr": "00:1a:4a:00:00:99"}}}, 50),
        ("VM.updateDevice", {"params": {"deviceType": "interface", "alias": "net0",
                                        "linkActive": False}}, 56),
    ]
    for verb, extra, code in cases:
        with pytest.raises(RpcError) as err:
            await virt.call(verb, vmID=vm_id, **extra)
        assert err.value.code == code, verb
    (own,) = [d for d in (await virt.call("Host.getVMFullList", vmList=[vm_id]))[0]["devices"]
              if d["type"] == "interface" and d["network"] == "ovirtmgmt"]
    own_mac = own["macAddr"]
    with pytest.raises(RpcError) as err:
        await virt.call("VM.hotplugNic", vmID=vm_id,
                        params={"nic": {"macAddr": own_mac, "network": "x"}})
    assert err.value.code == 91


async def test_balloon_target_changes_current_memory(virt, libvirt_view):
    vm_id = await create(virt)
    assert await virt.call("VM.setBalloonTarget", vmID=vm_id, target=131072) is True
    dom = libvirt_view.lookupByUUIDString(vm_id)
    assert dom.info()[2] == 131072
    with pytest.raises(RpcError) as err:
        await virt.call("VM.setBalloonTarget", vmID=vm_id, target=10**9)
    assert err.value.code == 91


# -- what is stored ----------------------------------------------------------------------------


async def test_metacharacters_in_names_and_values_are_stored_as_given(virt):
    name = "a<b>&\"c' ]]> vm"
    vm_id, params = plain_vm(vmName=name, custom={"note": "<x/> & \"y\" 'z'"})
    await virt.call("VM.create", vmID=vm_id, vmParams=params)
    xml = (await virt.call("Host.dumpxmls", vmList=[vm_id]))[vm_id]
    dom = etree.fromstring(xml.encode())
    assert dom.findtext("name") == name
    ns = {"o": "http://ovirt.org/vm/1.0"}
    assert dom.findtext("metadata/o:vm/o:custom/o:note", namespaces=ns) == "<x/> & \"y\" 'z'"
    (full,) = await virt.call("Host.getVMFullList", vmList=[vm_id])
    assert full["vmName"] == name and full["custom"] == {"note": "<x/> & \"y\" 'z'"}


async def test_nics_get_pci_slots_in_spec_order_stable_across_recreate(virt):
    vm_id, params = plain_vm()
    params["devices"][0:2] = [
        {"type": "interface", "macAddr": f"00:1a:4a:00:00:0{i}", "network": net}
        for i, net in enumerate(["confidential", "public", "storage"], 1)
    ]

    async def layout():
        xml = (await virt.call("Host.dumpxmls", vmList=[vm_id]))[vm_id]
        return [(n.find("mac").get("address"), n.find("source").get("bridge"),
                 n.find("address").get("slot"))
                for n in etree.fromstring(xml.encode()).iterfind("devices/interface")]

    await virt.call("VM.create", vmID=vm_id, vmParams=params)
    first = await layout()
    assert [(mac, net) for mac, net, _ in first] == [
        ("00:1a:4a:00:00:01", "confidential"), ("00:1a:4a:00:00:02", "public"),
        ("00:1a:4a:00:00:03", "storage")]
    slots = [int(slot, 16) for _, _, slot in first]
    assert slots == sorted(slots) and len(set(slots)) == 3
    await virt.call("VM.destroy", vmID=vm_id)
    await virt.call("VM.create", vmID=vm_id, vmParams=params)
    assert await layout() == first


async def test_xml_form_keeps_the_engines_metadata(virt):
    vm_id = str(uuid.uuid4())
    xml = f"""<domain type='kvm' xmlns:ovirt-vm='http://ovirt.org/vm/1.0'>
      <name>engine-vm</name><uuid>{vm_id}</uuid><memory unit='MiB'>256</memory>
      <metadata><ovirt-vm:vm>
        <ovirt-vm:clusterVersion>4.7</ovirt-vm:clusterVersion>
        <ovirt-vm:custom><ovirt-vm:team>a&amp;b</ovirt-vm:team></ovirt-vm:custom>
        <ovirt-vm:device mac_address='00:1a:4a:16:20:01'>
          <ovirt-vm:network>ovirtmgmt</ovirt-vm:network>
        </ovirt-vm:device>
      </ovirt-vm:vm></metadata>
      <os><type arch='x86_64' machine='pc'>hvm</type></os>
      <devices>
        <interface type='bridge'><mac address='00:1a:4a:16:20:01'/>
          <source bridge='ovirtmgmt'/><model type='virtio'/></interface>
      </devices></domain>"""
    answer = await virt.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    assert answer["vmName"] == "engine-vm"
    await virt.wait_status(vm_id, "Up")
    (full,) = await virt.call("Host.getVMFullList", vmList=[vm_id])
    assert full["custom"] == {"team": "a&b"}
    (nic,) = [d for d in full["devices"] if d["type"] == "interface"]
    assert nic["network"] == "ovirtmgmt" and nic["address"]["slot"] == "0x03"
    live = (await virt.call("Host.dumpxmls", vmList=[vm_id]))[vm_id]
    assert "clusterVersion" in live
    assert "<ovirt-vm:startTime type=\"float\">" in live  # ours, added to the engine's


# a small domain XML is parsed on the loop, a large one on a worker: both paths
@pytest.mark.parametrize("padding", [0, INLINE_PARSE_LIMIT], ids=["on-loop", "on-worker"])
async def test_concurrent_creates_of_one_vm_id_start_one_vm_and_refuse_the_rest(
        virt, libvirt_view, padding):
    vm_id = str(uuid.uuid4())
    xml = (f"<domain type='kvm'><name>twin</name><uuid>{vm_id}</uuid>"
           f"<description>{'x' * padding}</description><memory unit='MiB'>256</memory>"
           "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>")
    answers = await asyncio.gather(
        *(virt.call("VM.create", vmID=vm_id, vmParams={"xml": xml}) for _ in range(8)),
        return_exceptions=True)
    started = [a for a in answers if isinstance(a, dict)]
    refused = [a for a in answers if isinstance(a, RpcError)]
    assert len(started) == 1 and len(refused) == 7, answers
    assert all(err.code == 4 for err in refused)
    await virt.wait_status(vm_id, "Up")
    assert domain_exists(libvirt_view, vm_id)


@pytest.mark.parametrize("padding", [0, INLINE_PARSE_LIMIT], ids=["on-loop", "on-worker"])
async def test_xml_form_with_another_uuid_is_error_91(virt, padding):
    xml = (f"<domain type='kvm'><name>x</name><uuid>{uuid.uuid4()}</uuid>"
           f"<description>{'x' * padding}</description></domain>")
    with pytest.raises(RpcError) as err:
        await virt.call("VM.create", vmID=str(uuid.uuid4()), vmParams={"xml": xml})
    assert err.value.code == 91 and "vmParams.xml" in err.value.message


# -- hooks and races -----------------------------------------------------------------------


def _hook(root: Path, point: str, name: str, body: str) -> None:
    d = root / point
    d.mkdir(parents=True, exist_ok=True)
    script = d / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(stat.S_IRWXU)


@pytest.fixture
async def hooked(tmp_path):
    root = tmp_path / "hooks"
    root.mkdir()
    h = VirtHarness(CONFIG, hooks=HookRunner(root, timeout=10))
    h.hook_root = root  # type: ignore[attr-defined]
    await h.start()
    try:
        yield h
    finally:
        await h.close()


async def test_before_vm_start_hook_rewrites_the_domain(hooked):
    _hook(hooked.hook_root, "before_vm_start", "10_mem",
          "sed -i 's|<memory unit=\"KiB\">262144</memory>|"
          "<memory unit=\"KiB\">131072</memory>|' \"$_hook_domxml\"\n")
    vm_id = await create(hooked)
    await hooked.wait_status(vm_id, "Up")
    (full,) = await hooked.call("Host.getVMFullList", vmList=[vm_id])
    xml = (await hooked.call("Host.dumpxmls", vmList=[vm_id]))[vm_id]
    assert "131072" in xml and full["status"] == "Up"


async def test_failing_before_vm_start_hook_fails_create_and_leaves_nothing(hooked, libvirt_view):
    _hook(hooked.hook_root, "before_vm_start", "10_no", "echo 'not today' >&2\nexit 2\n")
    vm_id, params = plain_vm()
    with pytest.raises(RpcError) as err:
        await hooked.call("VM.create", vmID=vm_id, vmParams=params)
    assert err.value.code == 1500 and "not today" in err.value.message
    assert await hooked.call("Host.getVMList", vmList=[vm_id]) == []
    assert not domain_exists(libvirt_view, vm_id)


async def test_destroy_during_create_leaves_no_domain(hooked, libvirt_view):
    _hook(hooked.hook_root, "before_vm_start", "10_slow", "sleep 1\n")
    vm_id, params = plain_vm()
    answer = await hooked.call("VM.create", vmID=vm_id, vmParams=params)
    assert answer["status"] == "WaitForLaunch"
    assert await hooked.call("VM.destroy", vmID=vm_id) is True
    assert await hooked.call("Host.getVMList", vmList=[vm_id]) == []
    assert not domain_exists(libvirt_view, vm_id)
    await asyncio.sleep(0.2)
    assert not domain_exists(libvirt_view, vm_id)
    assert hooked.last_event(vm_id)["status"] == "Down"


async def test_operations_on_one_vm_are_serialized_and_vms_run_in_parallel(
        hooked, tmp_path):
    log_file = tmp_path / "pauses.log"
    _hook(hooked.hook_root, "before_vm_pause", "10_slow",
          f'echo "start $vmId" >> {log_file}\nsleep 0.5\necho "end $vmId" >> {log_file}\n')
    a, b = await create(hooked, "a"), await create(hooked, "b")
    await hooked.wait_status(a, "Up")
    await hooked.wait_status(b, "Up")
    await asyncio.gather(hooked.call("VM.pause", vmID=a), hooked.call("VM.pause", vmID=b))
    two_vms = [line.split()[0] for line in log_file.read_text().splitlines()]
    assert two_vms == ["start", "start", "end", "end"]
    log_file.unlink()
    await hooked.call("VM.cont", vmID=a)
    await asyncio.gather(hooked.call("VM.pause", vmID=a), hooked.call("VM.pause", vmID=a),
                         return_exceptions=True)
    one_vm = [line.split()[0] for line in log_file.read_text().splitlines()]
    assert one_vm == ["start", "end", "start", "end"]
