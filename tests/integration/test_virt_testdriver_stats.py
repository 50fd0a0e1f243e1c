"""Statistics on libvirt's test driver: bulk sampling, the cache, the JSON the verbs send."""

from __future__ import annotations

import pytest

from tests.integration.virt_support import VirtHarness, plain_vm, running_harness
from vdsm_py.config import VirtConfig

CONFIG = VirtConfig(libvirt_uri="test:///default", powering_up_timeout=0.05,
                    stats_interval=3600, guest_agent_interval=0)


@pytest.fixture
async def virt():
    async with running_harness(CONFIG) as h:
        yield h


async def _create(h: VirtHarness, name: str) -> str:
    vm_id, params = plain_vm(name)
    await h.call("VM.create", vmID=vm_id, vmParams=params)
    await h.wait_status(vm_id, "Up")
    return vm_id


async def test_all_vm_stats_cover_running_and_down_vms(virt):
    up, down = await _create(virt, "up"), await _create(virt, "down")
    await virt.call("VM.shutdown", vmID=down, timeout=5)
    await virt.wait_status(down, "Down")
    await virt.manager.sampler.sample_once()
    await virt.manager.sampler.sample_once()
    stats = {s["vmId"]: s for s in await virt.call("Host.getAllVmStats")}
    assert stats[up]["status"] == "Up"
    assert stats[up]["vcpuCount"] == "2"
    assert stats[up]["balloonInfo"]["balloon_max"] == str(256 * 1024)
    assert stats[up]["displayInfo"][0]["type"] == "vnc"
    assert stats[up]["hash"]
    assert int(stats[up]["elapsedTime"]) >= 0
    assert set(stats[down]) == {"vmId", "vmName", "status", "statusTime", "exitCode",
                                "exitMessage", "exitReason"}
    (single,) = await virt.call("VM.getStats", vmID=up)
    assert set(single) == set(stats[up])
    assert int(single["statusTime"]) >= int(stats[up]["statusTime"])


async def test_cached_stats_follow_status_changes_at_once(virt):
    vm_id = await _create(virt, "cached")
    await virt.manager.sampler.sample_once()
    before = {s["vmId"]: s for s in await virt.call("Host.getAllVmStats")}
    assert before[vm_id]["status"] == "Up"
    await virt.call("VM.pause", vmID=vm_id)
    after = {s["vmId"]: s for s in await virt.call("Host.getAllVmStats")}
    assert after[vm_id]["status"] == "Paused"


async def test_status_time_grows_between_polls(virt):
    vm_id = await _create(virt, "clock")
    first = {s["vmId"]: s for s in await virt.call("Host.getAllVmStats")}[vm_id]
    second = {s["vmId"]: s for s in await virt.call("Host.getAllVmStats")}[vm_id]
    assert int(second["statusTime"]) >= int(first["statusTime"])


async def test_host_stats_contributor_counts_vms(virt):
    vm_id = await _create(virt, "count")
    counts = virt.manager.host_stats()
    assert counts["vmCount"] == len(virt.manager.vms) and counts["vmActive"] >= 1
    await virt.call("VM.destroy", vmID=vm_id)
    assert virt.manager.host_stats()["vmCount"] == counts["vmCount"] - 1
