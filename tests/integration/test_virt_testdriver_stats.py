"""Statistics on libvirt's test driver: bulk sampling, the cache, the JSON the verbs send."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.integration.virt_support import VirtHarness, plain_vm, running_harness
from tests.unit.hooks_support import install, sh
from vdsm_py.config import VirtConfig
from vdsm_py.hooks import HookRunner
from vdsm_py.virt.stats import StatsSampler

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


async def _sampler_passes(virt: VirtHarness, busy: Callable[[], bool],
                          interval: float) -> tuple[StatsSampler, list[float]]:
    """A second sampler over the harness's VMs that notes when each pass starts."""
    sampler = StatsSampler(virt.manager.svc, lambda: virt.manager.vms, busy=busy)
    sampler.interval = interval
    passes: list[float] = []
    loop = asyncio.get_running_loop()
    sample_once = sampler.sample_once

    async def noted() -> float:
        passes.append(loop.time())
        return await sample_once()

    sampler.sample_once = noted  # type: ignore[method-assign]
    await sampler.start()
    return sampler, passes


async def test_a_stats_pass_waits_for_vm_starts_under_way(virt):
    await _create(virt, "sampled")
    starting = True
    sampler, passes = await _sampler_passes(virt, lambda: starting, interval=3600)
    try:
        await asyncio.sleep(0.3)
        assert passes == []  # due at once, but VMs are starting
        loop = asyncio.get_running_loop()
        starting, ended = False, loop.time()
        for _ in range(100):
            if passes:
                break
            await asyncio.sleep(0.05)
        assert passes and passes[0] >= ended
    finally:
        await sampler.stop()


async def test_stats_passes_go_on_during_endless_vm_starts(virt):
    await _create(virt, "busy-host")
    sampler, passes = await _sampler_passes(virt, lambda: True, interval=0.1)
    try:
        for _ in range(100):
            if len(passes) >= 3:
                break
            await asyncio.sleep(0.05)
        assert len(passes) >= 3  # each deferred by at most one interval
    finally:
        await sampler.stop()


async def test_the_manager_counts_vm_starts_under_way_for_the_sampler(tmp_path):
    root, gate = tmp_path / "hooks", tmp_path / "gate"
    install(root, "before_vm_start", "10_wait", sh(f"""
        while [ ! -e '{gate}' ]; do sleep 0.02; done
    """))
    h = await VirtHarness(CONFIG, hooks=HookRunner(root, timeout=30)).start()
    try:
        vm_id, params = plain_vm("gated")
        await h.call("VM.create", vmID=vm_id, vmParams=params)  # answers; the start waits
        assert h.manager.starts_under_way == 1
        gate.touch()
        await h.wait_status(vm_id, "Up")
        assert h.manager.starts_under_way == 0
    finally:
        gate.touch()
        await h.close()
