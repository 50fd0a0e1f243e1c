"""A real daemon killed in the middle of setupNetworks: the next start leaves the host in
the persisted state, with nothing half-made.

The daemon is started with the test-only hook ``VDSM_PY_TEST_NET_STOP_AFTER`` (see
``network/transaction.py``): it stops itself (SIGSTOP) right after a named step, the test
checks that the change really is half-made in the kernel, SIGKILLs it, and starts a fresh
daemon on the same state directory. Its start-up undoes the dead change from the journal
and restores the persisted configuration; the kernel is read back over netlink.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from network.transaction import STOP_AFTER_ENV
from tests.integration.daemon_proc import DaemonProcess, start_daemon
from tests.integration.net_daemon import connected, write_net_config
from tests.integration.net_l3 import full_state
from tests.integration.netns import TestHost, can_use_netns, host_with_nics

ok, why = can_use_netns()
pytestmark = pytest.mark.skipif(not ok, reason=why)

NO_CHECK = {"connectivityCheck": False}
KEEP = {"nic": "veth_a", "ipaddr": "192.0.2.10", "prefix": 24, "gateway": "192.0.2.1",
        "defaultRoute": True, "ipv6addr": "2001:db8:1::10/64"}


@pytest.fixture
def host() -> Iterator[TestHost]:
    with host_with_nics(("veth_a", "veth_b", "veth_c", "veth_d")) as h:
        yield h


def start(root: Path, host: TestHost, stop_after: str = "") -> DaemonProcess:
    if not (root / "tmp").exists():
        write_net_config(root, host.name)
        (root / "tmp").mkdir()
    env = {"TMPDIR": str(root / "tmp")}
    if stop_after:
        env[STOP_AFTER_ENV] = stop_after
    return start_daemon(root, extra_args=["--log-level", "INFO"], env=env)


def wait_stopped(pid: int, timeout: float = 60.0) -> None:
    """Until the process is in state T (stopped by the hook); a liveness bound only."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "T":
            return
        time.sleep(0.05)
    raise AssertionError("the daemon never reached the test hook's step")


async def state(host: TestHost) -> dict:
    return await asyncio.to_thread(full_state, host.name, with_indexes=False)


async def test_daemon_killed_mid_setup_restarts_into_the_persisted_state(host, tmp_path):
    root = tmp_path / "host"
    daemon = start(root, host, stop_after="network new2: create bridge new2")
    try:
        async with connected(daemon) as client:
            await client.call("Host.setupNetworks", {"networks": {"keep": KEEP},
                                                     "options": NO_CHECK})
            await client.call("Host.setSafeNetworkConfig", {})
            persisted = await state(host)
            # An unsaved change: restart must drop it as well.
            await client.call("Host.setupNetworks", {
                "networks": {"unsaved": {"nic": "veth_d", "bridged": False,
                                         "ipaddr": "203.0.113.4", "prefix": 24}},
                "options": NO_CHECK})
            # The change that dies: edits keep in place, builds new1 whole and new2 half.
            call = asyncio.create_task(client.call("Host.setupNetworks", {
                "networks": {
                    "keep": {**KEEP, "mtu": 9000, "ipaddr": "192.0.2.11"},
                    "new1": {"nic": "veth_b", "ipaddr": "198.51.100.5", "prefix": 24,
                             "gateway": "198.51.100.1", "ipv6autoconf": True},
                    "new2": {"nic": "veth_c", "mtu": 4000},
                },
                "options": NO_CHECK}, timeout=120))
            await asyncio.to_thread(wait_stopped, daemon.pid)
            half = await state(host)
            assert "new2" in half["links"] and half["links"]["veth_c"][2] == ""
            assert half["addresses"]["keep"] == ["192.0.2.11/24"]
            assert half["links"]["veth_b"][2] == "new1"
            daemon.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(daemon.proc.wait, 30)
            with contextlib.suppress(Exception):
                await call  # the connection died with the daemon
    finally:
        daemon.close()
    journal = next(root.rglob("journal.jsonl"))
    assert journal.read_text().count("\n") > 5  # the dead change's undos were recorded

    restarted = start(root, host)
    try:
        assert await state(host) == persisted
        assert not journal.exists()
        async with connected(restarted) as client:
            caps = await client.call("Host.getCapabilities", {})
        assert sorted(caps["networks"]) == ["keep"]
        assert caps["networks"]["keep"]["ipv4addrs"] == ["192.0.2.10/24"]
        assert caps["networks"]["keep"]["mtu"] == "1500"
    finally:
        restarted.close()
    assert "undoing its" in restarted.log_path.read_text(errors="replace")
