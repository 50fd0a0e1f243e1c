"""The VM status machine: statuses, exit reasons, events, the cached stats JSON."""

from __future__ import annotations

import asyncio

import libvirt
import orjson

from vdsm_py.virt import report
from vdsm_py.virt.metadata import VmMetadata
from vdsm_py.virt.status import ExitCode, ExitReason, VmStatus
from vdsm_py.virt.vm import Vm

EV = libvirt


def make_vm(up_after: float = 60.0, **meta) -> tuple[Vm, list[str]]:
    changes: list[str] = []
    vm = Vm("11111111-2222-3333-4444-555555555555", "vm", meta=VmMetadata(values=meta),
            on_change=lambda v: changes.append(str(v.status)), powering_up_timeout=up_after)
    return vm, changes


async def test_start_goes_powering_up_then_up_after_the_timeout():
    vm, changes = make_vm(up_after=0.05)
    vm.on_lifecycle(EV.VIR_DOMAIN_EVENT_STARTED, 0)
    vm.started(paused=False)  # the creator's own news: no second change
    assert changes == ["Powering up"]
    await asyncio.sleep(0.2)
    assert changes == ["Powering up", "Up"]


async def test_guest_agent_makes_the_vm_up_at_once():
    vm, changes = make_vm()
    vm.started(paused=False)
    vm.agent_changed(True)
    assert changes == ["Powering up", "Up"]
    vm.cancel_timers()


async def test_launch_paused_vm_starts_paused_and_resumes_powering_up():
    vm, changes = make_vm(launchPaused=True)
    vm.on_lifecycle(EV.VIR_DOMAIN_EVENT_STARTED, 0)
    vm.on_lifecycle(EV.VIR_DOMAIN_EVENT_SUSPENDED, EV.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED)
    assert changes == ["Paused"]
    vm.on_lifecycle(EV.VIR_DOMAIN_EVENT_RESUMED, 0)
    assert changes == ["Paused", "Powering up"]
    vm.cancel_timers()


async def test_io_error_pause_carries_a_pause_code_until_resumed():
    vm, _ = make_vm(up_after=0)
    vm.started(paused=False)
    vm.on_lifecycle(EV.VIR_DOMAIN_EVENT_SUSPENDED, EV.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR)
    assert vm.event_params()["pauseCode"] == "EOTHER"
    vm.on_lifecycle(EV.VIR_DOMAIN_EVENT_RESUMED, 0)
    assert vm.status == VmStatus.UP and "pauseCode" not in vm.event_params()


def _stopped(detail, reason=None, shutdown_detail=None):
    vm, _ = make_vm(up_after=0)
    vm.started(paused=False)
    vm.shutdown_reason = reason
    if shutdown_detail is not None:
        vm.on_lifecycle(EV.VIR_DOMAIN_EVENT_SHUTDOWN, shutdown_detail)
    vm.on_lifecycle(EV.VIR_DOMAIN_EVENT_STOPPED, detail)
    return vm.exit.code, vm.exit.reason


async def test_exit_reasons_follow_vdsm():
    assert _stopped(EV.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN) == (
        ExitCode.NORMAL, ExitReason.USER_SHUTDOWN)
    assert _stopped(EV.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN, ExitReason.ADMIN_SHUTDOWN) == (
        ExitCode.NORMAL, ExitReason.ADMIN_SHUTDOWN)
    assert _stopped(EV.VIR_DOMAIN_EVENT_STOPPED_DESTROYED, ExitReason.ADMIN_SHUTDOWN) == (
        ExitCode.NORMAL, ExitReason.ADMIN_SHUTDOWN)
    assert _stopped(EV.VIR_DOMAIN_EVENT_STOPPED_DESTROYED) == (
        ExitCode.ERROR, ExitReason.LOST_QEMU_CONNECTION)
    assert _stopped(EV.VIR_DOMAIN_EVENT_STOPPED_CRASHED) == (
        ExitCode.ERROR, ExitReason.LOST_QEMU_CONNECTION)
    assert _stopped(EV.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN, None,
                    EV.VIR_DOMAIN_EVENT_SHUTDOWN_GUEST) == (
        ExitCode.NORMAL, ExitReason.USER_SHUTDOWN)


async def test_down_is_final_and_announced_once():
    vm, changes = make_vm(up_after=0)
    vm.started(paused=False)
    vm.set_down(ExitCode.NORMAL, ExitReason.ADMIN_SHUTDOWN)
    vm.on_lifecycle(EV.VIR_DOMAIN_EVENT_STOPPED, EV.VIR_DOMAIN_EVENT_STOPPED_DESTROYED)
    vm.on_lifecycle(EV.VIR_DOMAIN_EVENT_RESUMED, 0)
    assert changes == ["Up", "Down"]
    assert vm.event_params()["exitReason"] == int(ExitReason.ADMIN_SHUTDOWN)
    assert vm.down_event.is_set()


async def test_stop_during_start_is_left_to_the_start():
    vm, changes = make_vm()
    vm.starting = True
    vm.on_lifecycle(EV.VIR_DOMAIN_EVENT_STOPPED, EV.VIR_DOMAIN_EVENT_STOPPED_FAILED)
    assert changes == [] and vm.stopped_while_starting == EV.VIR_DOMAIN_EVENT_STOPPED_FAILED


async def test_status_time_strictly_grows_with_each_change():
    vm, _ = make_vm(up_after=0)
    times = [vm.status_time]
    vm.started(paused=False)
    times.append(vm.status_time)
    vm.paused()
    times.append(vm.status_time)
    assert times == sorted(times) and len(set(times)) == 3


async def test_cached_stats_json_is_valid_fresh_and_dropped_on_change():
    vm, _ = make_vm(up_after=0)
    vm.started(paused=False)
    vm.sample = {"cpuUser": "1.00", "network": {"vnet0": {"rx": "5"}}}
    one = orjson.loads(report.stats_json(vm, 1000, vm.start_time + 42))
    assert one["statusTime"] == "1000" and one["elapsedTime"] == "42"
    assert one["status"] == "Up" and one["network"]["vnet0"]["rx"] == "5"
    assert vm.stats_cache is not None
    vm.paused()
    assert vm.stats_cache is None
    both = orjson.loads(orjson.dumps(report.all_stats_json([vm, vm])))
    assert [s["status"] for s in both] == ["Paused", "Paused"]
    vm.set_down(ExitCode.ERROR, ExitReason.LOST_QEMU_CONNECTION)
    down = orjson.loads(report.stats_json(vm, 2000, 0))
    assert "elapsedTime" not in down and down["exitCode"] == 1 and "network" not in down
