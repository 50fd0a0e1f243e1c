"""engine-lite with three real daemons, and fencing before a highly available VM is
restarted elsewhere.

Three hosts prove placement spreads across all of them and that losing one leaves the two
others working. Fencing uses a real fence agent (:mod:`tests.integration.fence_kill`, which
kills a daemon by PID) and a failing one; a frozen daemon (SIGSTOP) is a host that stopped
answering but still runs its VMs, the case fencing exists for.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest
from engine_lite.engine import Engine
from engine_lite.models import HostStatus

from tests.integration.engine_lite_support import (
    RUNNING,
    UP,
    WAIT,
    DevHost,
    dev_hosts,
    enroll,
    running_engine,
    vm_verbs_available,
    wait_events,
)
from vdsm_py.client import Client

FENCE_KILL = Path(__file__).with_name("fence_kill.py")


async def enroll_all(engine: Engine, hosts: list[DevHost]) -> None:
    await asyncio.gather(*(enroll(engine, f"h{i + 1}", h) for i, h in enumerate(hosts)))
    if not await vm_verbs_available(engine, "h1"):
        pytest.skip("the daemon has no VM verbs yet")


async def vm_ids_on(engine: Engine, host: DevHost) -> set[str]:
    """What the daemon itself runs, asked on a connection of its own."""
    client = await Client.connect("127.0.0.1", host.port, ssl_context=engine._ssl, timeout=10)
    try:
        return {s["vmId"] for s in await client.call("Host.getAllVmStats", timeout=10)}
    finally:
        await client.close()


async def test_three_hosts_share_vms_and_two_keep_working_while_one_is_dead(
        tmp_path: Path) -> None:
    async with dev_hosts(tmp_path, 3) as hosts, running_engine(tmp_path / "engine") as engine:
        await enroll_all(engine, hosts)
        vms = [await engine.vms.create(f"vm-{i}", 64) for i in range(6)]
        for vm in vms:
            await engine.vms.start(vm.name)
        name = {h.id: h.name for h in engine.list_hosts()}
        assert Counter(name[vm.host_id or ""] for vm in vms) == {"h1": 2, "h2": 2, "h3": 2}
        await engine.ctx.wait_until(lambda: all(vm.status in RUNNING for vm in vms), WAIT)

        h3 = engine.host("h3")
        on_h3 = [vm for vm in vms if vm.host_id == h3.id]
        seen: list[HostStatus] = []

        def nonresponsive() -> bool:
            if not seen or seen[-1] != h3.status:
                seen.append(h3.status)
            return h3.status == HostStatus.NON_RESPONSIVE and \
                all(vm.status == "Unknown" for vm in on_h3)

        hosts[2].kill()
        await engine.ctx.wait_until(nonresponsive, WAIT)
        assert seen[-2:] == [HostStatus.CONNECTING, HostStatus.NON_RESPONSIVE]

        # The two others keep working: fresh stats, and new VMs land on them, one each.
        last = {n: engine.host(n).last_seen for n in ("h1", "h2")}
        await engine.ctx.wait_until(
            lambda: all(engine.host(n).last_seen > t for n, t in last.items()), WAIT)
        extra = [await engine.vms.create(f"extra-{i}", 64) for i in range(2)]
        for vm in extra:
            await engine.vms.start(vm.name)
        assert sorted(name[vm.host_id or ""] for vm in extra) == ["h1", "h2"]
        others = [vm for vm in vms + extra if vm not in on_h3]
        await engine.ctx.wait_until(lambda: all(vm.status in RUNNING for vm in others), WAIT)
        assert [h.effective_status for h in engine.list_hosts()][:2] == [UP, UP]

        # h3 comes back Up; its VMs died with its process: Down now, no longer Unknown.
        await hosts[2].start()
        await engine.wait_host_status("h3", UP, WAIT)
        await engine.ctx.wait_until(lambda: all(vm.status == "Down" for vm in on_h3), WAIT)


async def test_ha_vm_of_a_frozen_host_restarts_elsewhere_once_its_agent_killed_it(
        tmp_path: Path) -> None:
    async with dev_hosts(tmp_path, 3) as hosts, running_engine(tmp_path / "engine") as engine:
        await enroll_all(engine, hosts)
        ha = await engine.vms.create("ha", 64, ha=True)
        await engine.vms.start("ha")
        assert engine.ctx.hosts[ha.host_id or ""].name == "h1"  # all empty: by name
        await engine.vms.create("filler", 64)
        await engine.vms.start("filler")  # on h2: h3 is now the emptiest survivor
        await engine.set_fence_agent("h1", [sys.executable, str(FENCE_KILL),
                                            "--pid-file", str(hosts[0].lock_file)])
        await engine.ctx.wait_until(lambda: ha.status in RUNNING, WAIT)
        lost_id = ha.host_id

        hosts[0].freeze()
        await engine.ctx.wait_until(
            lambda: ha.status in RUNNING and ha.host_id != lost_id, WAIT)
        assert ha.host_id == engine.host("h3").id
        # The agent really powered h1 off (killed its frozen daemon) before the restart.
        assert await asyncio.to_thread(hosts[0].proc.proc.wait, 10) == -signal.SIGKILL
        await wait_events(engine, "vm_ha_restarted")
        kinds = [e.kind for e in await engine.events(1000)]
        assert kinds.index("host_fenced") < kinds.index("vm_ha_restarted")
        assert "host_fence_failed" not in kinds
        assert engine.host("h1").status == HostStatus.NON_RESPONSIVE


async def test_failed_fence_blocks_the_restart_until_soft_fencing_destroys_the_vm_there(
        tmp_path: Path) -> None:
    state = tmp_path / "engine"
    async with dev_hosts(tmp_path, 2) as hosts:
        async with running_engine(state) as engine:
            await enroll_all(engine, hosts)
        # The monitor waits long before reconnecting, so only the fencer talks to h1 again.
        slow = {"nonresponsive_after": 2.0, "connect_timeout": 2.0, "backoff_initial": 300.0,
                "backoff_max": 300.0, "fence_retry_interval": 1.0}
        async with running_engine(state, **slow) as engine:
            await engine.wait_host_status("h1", UP, WAIT)
            await engine.wait_host_status("h2", UP, WAIT)
            ha = await engine.vms.create("ha", 64, ha=True)
            await engine.vms.start("ha")
            h1 = engine.host("h1")
            assert ha.host_id == h1.id
            await engine.ctx.wait_until(lambda: ha.status in RUNNING, WAIT)
            missing = tmp_path / "no-such-pid-file"  # as an unreachable power switch
            await engine.set_fence_agent("h1", [sys.executable, str(FENCE_KILL),
                                                "--pid-file", str(missing)])

            hosts[0].freeze()
            failures = await wait_events(engine, "host_fence_failed", count=2)  # retried
            assert "its fence agent failed" in failures[0]
            assert "cannot read the host's PID" in failures[0]
            assert "ha not restarted elsewhere" in failures[0]
            assert (ha.status, ha.host_id) == ("Unknown", h1.id)
            assert ha.id not in await vm_ids_on(engine, hosts[1])

            hosts[0].thaw()  # the daemon answers again: soft fencing destroys the VM there
            h2_id = engine.host("h2").id
            await engine.ctx.wait_until(
                lambda: ha.status in RUNNING and ha.host_id == h2_id, WAIT)
            await wait_events(engine, "host_soft_fenced")
            assert ha.id not in await vm_ids_on(engine, hosts[0])
            assert ha.id in await vm_ids_on(engine, hosts[1])
