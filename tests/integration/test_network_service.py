"""The network service end to end: JSON-RPC verbs, connectivity check, busy refusal,
persistence and restore, the restore-nets tool and the capabilities report.

All in a private namespace (veth NICs), with the real schema, dispatcher and executor; the
kernel is read back over netlink.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest

from network.service import NET_EVENT, NetworkService
from tests.integration.netns import TestHost, can_use_netns, host_with_nics, kernel_state
from vdsm_py import config as config_module
from vdsm_py.api.host import HostApi
from vdsm_py.events import EventBus
from vdsm_py.executor import Executor
from vdsm_py.host.caps import HostCapabilities
from vdsm_py.host.hardware import HardwareInfo
from vdsm_py.host.stats import HostStatsSampler
from vdsm_py.rpc.dispatch import CallContext, Dispatcher
from vdsm_py.rpc.schema import Schema

ok, why = can_use_netns()
pytestmark = pytest.mark.skipif(not ok, reason=why)

ROOT = Path(__file__).resolve().parents[2]
ENGINE = CallContext(client_id="conn-1@192.0.2.200:40000", peer="192.0.2.200:40000")
ENGINE_RECONNECTED = CallContext(client_id="conn-7@192.0.2.200:40123", peer="192.0.2.200:40123")
OTHER = CallContext(client_id="conn-2@198.51.100.9:5000", peer="198.51.100.9:5000")


async def kstate(host: TestHost) -> dict:
    """The kernel state, read off the loop (pyroute2's sync API wants a thread of its own)."""
    return await asyncio.to_thread(kernel_state, host.name)


async def never(seconds: float) -> None:
    await asyncio.Event().wait()


@pytest.fixture
def host() -> Iterator[TestHost]:
    with host_with_nics() as h:
        yield h


def make_config(host: TestHost, state: Path) -> config_module.Config:
    return config_module.load(None, {
        "daemon": {"state_dir": state},
        "network": {"netns": host.name, "fake_nics": "veth_*"},
    })


@dataclasses.dataclass
class Node:
    """One daemon's worth of wiring, as the composition root does it."""

    service: NetworkService
    dispatcher: Dispatcher
    events: list
    executor: Executor

    async def call(self, method: str, params=None, ctx: CallContext = ENGINE) -> dict:
        request = {"jsonrpc": "2.0", "method": method, "id": "r1", "params": params or {}}
        return orjson.loads(await self.dispatcher.handle(orjson.dumps([request]), ctx))


@pytest.fixture
async def node_factory(host, tmp_path) -> AsyncIterator:
    started: list[tuple[Node, HostStatsSampler]] = []

    async def start(state: Path | None = None) -> Node:
        cfg = make_config(host, state or tmp_path / "state")
        executor = Executor(workers=2, default_timeout=30.0, name="net-test")
        bus = EventBus()
        bus.bind(asyncio.get_running_loop())
        seen: list = []
        bus.subscribe(lambda ev: seen.append(ev))
        service = NetworkService.build(cfg, executor, bus)
        await service.start()
        sampler = HostStatsSampler(executor, interval=15.0, sleep=never)
        await sampler.start()
        dispatcher = Dispatcher(Schema.load(), executor, call_timeout=30.0)
        dispatcher.register("Host", HostApi(HostCapabilities(state_dir=tmp_path), sampler,
                                            HardwareInfo()))
        dispatcher.register("Host", service.api())
        dispatcher.on_activity(service.on_activity)
        node = Node(service, dispatcher, seen, executor)
        started.append((node, sampler))
        return node

    yield start
    for node, sampler in started:
        await sampler.stop()
        await node.service.stop()
        node.executor.close()


NET1 = {"nic": "veth_a", "ipaddr": "192.0.2.10", "netmask": "255.255.255.0"}
NO_CHECK = {"connectivityCheck": False}


async def test_setup_networks_over_json_rpc_changes_the_kernel_and_publishes(node_factory, host):
    node = await node_factory()
    reply = await node.call("Host.setupNetworks",
                            {"networks": {"net1": NET1}, "bondings": {}, "options": NO_CHECK})
    assert "error" not in reply, reply
    assert (await kstate(host))["addresses"]["net1"] == ["192.0.2.10/24"]
    await asyncio.sleep(0)  # events are delivered on the loop
    assert [ev.method for ev in node.events] == [NET_EVENT]


async def test_bad_request_over_json_rpc_is_a_vdsm_error_code(node_factory, host):
    node = await node_factory()
    before = await kstate(host)
    reply = await node.call("Host.setupNetworks",
                            {"networks": {"net1": {"nic": "veth_a", "vlan": 5000}},
                             "options": NO_CHECK})
    assert reply["error"]["code"] == 26 and "net1" in reply["error"]["message"]
    assert await kstate(host) == before


async def test_unconfirmed_change_is_rolled_back_after_the_timeout(node_factory, host):
    node = await node_factory()
    before = await kstate(host)
    call = asyncio.create_task(node.call(
        "Host.setupNetworks",
        {"networks": {"net1": NET1}, "options": {"connectivityCheck": "true",
                                                 "connectivityTimeout": 1}}))
    # Another client's calls do not prove that *this* client can still reach the host.
    while not node.service.watch._pending:
        await asyncio.sleep(0.01)
    assert "net1" in (await kstate(host))["links"]
    await node.call("Host.ping2", ctx=OTHER)
    reply = await call
    assert reply["error"]["code"] == 10, reply
    assert "rolled back" in reply["error"]["message"]
    assert await kstate(host) == before
    assert node.service.setup.store.running().networks == {}


async def test_change_confirmed_by_the_reconnected_client_is_kept(node_factory, host):
    node = await node_factory()
    call = asyncio.create_task(node.call(
        "Host.setupNetworks",
        {"networks": {"net1": NET1}, "options": {"connectivityTimeout": 30}}))
    while not node.service.watch._pending:
        await asyncio.sleep(0.01)
    # The engine's old connection died with the change; it reconnects and calls.
    assert (await node.call("Host.confirmConnectivity", ctx=ENGINE_RECONNECTED))["result"]
    reply = await call
    assert "error" not in reply, reply
    assert "net1" in (await kstate(host))["links"]
    assert list(node.service.setup.store.running().networks) == ["net1"]


async def test_concurrent_setup_networks_is_refused_busy_not_interleaved(node_factory, host):
    node = await node_factory()
    first = asyncio.create_task(node.call(
        "Host.setupNetworks", {"networks": {"net1": NET1}, "options": {"connectivityTimeout": 30}}))
    while not node.service.watch._pending:
        await asyncio.sleep(0.01)
    second = await node.call("Host.setupNetworks",
                             {"networks": {"net2": {"nic": "veth_b"}}, "options": NO_CHECK},
                             ctx=OTHER)
    assert second["error"]["code"] == 40
    assert "net2" not in (await kstate(host))["links"]
    await node.call("Host.ping2")  # confirms the first
    assert "error" not in await first


async def test_restart_restores_persisted_networks_and_drops_unsaved_ones(
    node_factory, host, tmp_path
):
    node = await node_factory()
    await node.call("Host.setupNetworks", {"networks": {
        "keep": NET1, "gone": {"nic": "veth_b", "mtu": 9000}}, "options": NO_CHECK})
    assert "error" not in await node.call("Host.setSafeNetworkConfig")
    persisted = await kstate(host)
    # Unsaved: remove one persisted network, add another.
    reply = await node.call("Host.setupNetworks", {"networks": {
        "gone": {"remove": True}, "unsaved": {"nic": "veth_c", "vlan": None}},
        "options": NO_CHECK})
    assert "error" not in reply, reply
    assert "gone" not in (await kstate(host))["links"]
    await node.service.stop()
    restarted = await node_factory()  # start() restores
    assert await kstate(host) == persisted
    assert sorted(restarted.service.setup.store.running().networks) == ["gone", "keep"]


def test_restore_nets_tool_rebuilds_persisted_networks_after_a_reboot(host, tmp_path):
    """A fresh namespace with the same NICs stands for the rebooted host."""
    state = tmp_path / "state"
    netdir = state / "network"
    netdir.mkdir(parents=True)
    saved = {"networks": {"mgmt": {**NET1, "gateway": "192.0.2.1", "defaultRoute": True}},
             "bondings": {}}
    (netdir / "safe.json").write_text(json.dumps(saved))
    (netdir / "running.json").write_text(json.dumps(saved))
    proc = subprocess.run(
        [sys.executable, "-m", "vdsm_py.cli.tool", "restore-nets", "--state-dir", str(state),
         "--netns", host.name],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mgmt" in proc.stdout
    state_now = kernel_state(host.name)
    assert state_now["links"]["veth_a"][2] == "mgmt"
    assert state_now["addresses"]["mgmt"] == ["192.0.2.10/24"]
    assert state_now["routes"] == [("192.0.2.1", "mgmt")]


async def test_capabilities_report_networks_bridges_nics_with_addresses(node_factory, host):
    node = await node_factory()
    await node.call("Host.setupNetworks", {"networks": {
        "net1": {**NET1, "mtu": 9000}, "raw": {"nic": "veth_b", "bridged": False,
                                               "ipaddr": "198.51.100.2", "prefix": 24}},
        "options": NO_CHECK})
    caps = await node.executor.run(node.service.capabilities)
    net1 = caps["networks"]["net1"]
    assert net1["bridged"] is True and net1["iface"] == "net1" and net1["mtu"] == "9000"
    assert net1["ports"] == ["veth_a"] and net1["ipv4addrs"] == ["192.0.2.10/24"]
    assert caps["networks"]["raw"]["iface"] == "veth_b"
    assert caps["networks"]["raw"]["addr"] == "198.51.100.2"
    assert caps["bridges"]["net1"]["ports"] == ["veth_a"]
    assert caps["bridges"]["net1"]["netmask"] == "255.255.255.0"
    assert set(caps["nics"]) == {"veth_a", "veth_b", "veth_c"}
    assert caps["nics"]["veth_b"]["ipv4addrs"] == ["198.51.100.2/24"]
    assert caps["nics"]["veth_a"]["operstate"] in ("up", "lowerlayerdown")
    assert caps["bondings"] == {} and caps["vlans"] == {}
