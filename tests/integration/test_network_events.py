"""Link changes as ``|net|host_conn|no_id`` events, through a real daemon (``vdsmd --dev``)
managing a private network namespace, to a client subscribed over TLS/STOMP.

The test changes the namespace's links behind the daemon's back with pyroute2 (as an admin
with ``ip link`` would) and waits for the event; the capabilities the daemon reports
afterwards must show the change (the cached report was invalidated).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from network.service import NET_EVENT
from tests.integration.daemon_proc import DaemonProcess
from tests.integration.net_daemon import connected, start_net_daemon
from tests.integration.netns import TestHost, can_use_netns, host_with_nics
from vdsm_py.client import Client, EventStream

ok, why = can_use_netns()
pytestmark = pytest.mark.skipif(not ok, reason=why)

DELAY = 0.3  # [network] link_event_delay of the test daemon
NO_CHECK = {"connectivityCheck": False}
BRIDGES = 20


@pytest.fixture
def host() -> Iterator[TestHost]:
    nics = ("veth_a", "veth_b", *(f"veth_{i}" for i in range(BRIDGES)))
    with host_with_nics(nics) as h:
        yield h


@pytest.fixture
def daemon(host: TestHost, tmp_path) -> Iterator[DaemonProcess]:
    proc = start_net_daemon(tmp_path / "host", host.name,
                            {"network": {"link_event_delay": str(DELAY)}})
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
async def client(daemon: DaemonProcess) -> AsyncIterator[Client]:
    async with connected(daemon) as c:
        yield c


async def next_net_event(events: EventStream, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        async for method, _params in events:
            if method == NET_EVENT:
                return


async def net_events_within(events: EventStream, seconds: float) -> int:
    """How many net events arrive in the next ``seconds`` (a window, not an assertion)."""
    count = 0
    try:
        async with asyncio.timeout(seconds):
            async for method, _params in events:
                count += method == NET_EVENT
    except TimeoutError:
        pass
    return count


def set_link(host: TestHost, name: str, state: str) -> None:
    ipr = host.ipr()
    ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state=state)


async def test_nic_set_down_behind_the_daemon_is_published_and_reported(client, host):
    caps = await client.call("Host.getCapabilities")
    assert caps["nics"]["veth_a"]["up"] is True
    events = await client.subscribe_events(confirm=True)
    await asyncio.to_thread(set_link, host, "veth_a", "down")
    await next_net_event(events)
    caps = await client.call("Host.getCapabilities")
    assert caps["nics"]["veth_a"]["up"] is False
    assert caps["nics"]["veth_a"]["operstate"] == "down"


async def test_nic_added_and_removed_is_published_and_reported(client, host):
    events = await client.subscribe_events(confirm=True)
    await client.call("Host.getCapabilities")  # fill the cache
    await asyncio.to_thread(host.add_nic, "veth_new")
    await next_net_event(events)
    assert "veth_new" in (await client.call("Host.getCapabilities"))["nics"]
    ipr = host.ipr()
    await asyncio.to_thread(lambda: ipr.link("del", index=ipr.link_lookup(ifname="veth_new")[0]))
    await next_net_event(events)
    assert "veth_new" not in (await client.call("Host.getCapabilities"))["nics"]


async def test_setup_of_many_bridges_sends_a_few_events_not_one_per_link(client, host):
    events = await client.subscribe_events(confirm=True)
    nets = {f"bnet{i}": {"nic": f"veth_{i}"} for i in range(BRIDGES)}
    await client.call("Host.setupNetworks", {"networks": nets, "options": NO_CHECK})
    # 20 bridges make well over 60 link notifications (create, enslave, MTU, up, carrier);
    # the call's own event plus at most a trailing one or two for late carrier changes.
    count = await net_events_within(events, 10 * DELAY)
    assert 1 <= count <= 3


async def test_daemon_stops_cleanly_with_the_monitor_running(daemon, client, host):
    events = await client.subscribe_events(confirm=True)
    await asyncio.to_thread(set_link, host, "veth_b", "down")
    await next_net_event(events)
    await client.close()
    assert await asyncio.to_thread(daemon.stop) == 0
    assert "Traceback" not in daemon.log()
