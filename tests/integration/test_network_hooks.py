"""``before_network_setup`` / ``after_network_setup`` / ``after_network_setup_fail`` hooks
through a real daemon (``vdsmd --dev``) managing a private network namespace.

Real shell and Python scripts are dropped into ``ROOT/hooks/<point>/`` while the daemon
runs; ``Host.setupNetworks`` is called over TLS/STOMP/JSON-RPC with the client library and
the kernel is read back over netlink.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_proc import DaemonProcess
from tests.integration.net_daemon import connected, start_net_daemon
from tests.integration.netns import TestHost, can_use_netns, host_with_nics, kernel_state
from vdsm_py.client import Client, RpcError

ok, why = can_use_netns()
pytestmark = pytest.mark.skipif(not ok, reason=why)

HOOK_ERROR = 1500
NO_CHECK = {"connectivityCheck": False}

# Raises the MTU of every requested network to 9000 and adds a network "hooknet" on veth_b.
REWRITE = """#!/usr/bin/python3
import hooking

doc = hooking.read_json()
nets = doc["request"]["networks"]
for attrs in nets.values():
    if not attrs.get("remove"):
        attrs["mtu"] = 9000
nets["hooknet"] = {"nic": "veth_b", "bridged": True}
hooking.write_json(doc)
"""

REFUSE = """#!/bin/sh
echo "no network changes during the maintenance window" >&2
exit 2
"""

# Appends the document it got to RECORD (the path is filled in by the test).
RECORD = """#!/usr/bin/python3
import json, os
import hooking

with open({path!r}, "a") as f:
    f.write(json.dumps({{"point": os.path.basename(os.path.dirname(os.path.abspath(__file__))),
                        "doc": hooking.read_json()}}) + "\\n")
"""


@pytest.fixture(scope="module")
def host() -> Iterator[TestHost]:
    with host_with_nics() as h:
        yield h


@pytest.fixture(scope="module")
def daemon(host: TestHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    proc = start_net_daemon(tmp_path_factory.mktemp("net-hooks") / "host", host.name)
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def hooks(daemon: DaemonProcess) -> Path:
    """The daemon's hooks root (emptied by ``client`` after each test)."""
    return daemon.root / "hooks"


def install(root: Path, point: str, name: str, text: str) -> None:
    path = root / point / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
async def client(daemon: DaemonProcess) -> AsyncIterator[Client]:
    async with connected(daemon) as c:
        yield c
        # The next test starts with no hooks and no networks (hooks first: a rewriting
        # hook would change the removal too).
        for point in (daemon.root / "hooks").iterdir():
            shutil.rmtree(point)
        caps = await c.call("Host.getCapabilities")
        gone = {name: {"remove": True} for name in caps["networks"]}
        if gone:
            await c.call("Host.setupNetworks", {"networks": gone, "options": NO_CHECK})


async def kstate(host: TestHost) -> dict:
    return await asyncio.to_thread(kernel_state, host.name)


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_before_hook_rewrites_the_request_that_is_applied(client, hooks, host):
    install(hooks, "before_network_setup", "50_rewrite", REWRITE)
    await client.call("Host.setupNetworks",
                      {"networks": {"net1": {"nic": "veth_a"}}, "options": NO_CHECK})
    links = (await kstate(host))["links"]
    assert links["net1"][1] == 9000 and links["veth_a"][2] == "net1"
    assert links["hooknet"][0] == "bridge" and links["veth_b"][2] == "hooknet"
    caps = await client.call("Host.getCapabilities")
    assert sorted(caps["networks"]) == ["hooknet", "net1"]


async def test_failing_before_hook_refuses_with_hook_error_and_touches_nothing(
    client, hooks, host, tmp_path
):
    record = tmp_path / "record.jsonl"
    install(hooks, "before_network_setup", "50_refuse", REFUSE)
    install(hooks, "after_network_setup", "50_record", RECORD.format(path=str(record)))
    install(hooks, "after_network_setup_fail", "50_record", RECORD.format(path=str(record)))
    before = await kstate(host)
    with pytest.raises(RpcError) as err:
        await client.call("Host.setupNetworks", {
            "networks": {"net1": {"nic": "veth_a", "ipaddr": "192.0.2.5", "prefix": 24}},
            "options": NO_CHECK})
    assert err.value.code == HOOK_ERROR
    assert "50_refuse (exit code 2)" in err.value.message
    assert "maintenance window" in err.value.message
    assert await kstate(host) == before
    assert (await client.call("Host.getCapabilities"))["networks"] == {}
    # As in VDSM, the failure hook sees the request that failed; the success hook never ran.
    assert [r["point"] for r in records(record)] == ["after_network_setup_fail"]
    assert list(records(record)[0]["doc"]["request"]["networks"]) == ["net1"]


async def test_after_hook_gets_the_request_as_applied(client, hooks, host, tmp_path):
    record = tmp_path / "record.jsonl"
    install(hooks, "before_network_setup", "50_rewrite", REWRITE)
    install(hooks, "after_network_setup", "50_record", RECORD.format(path=str(record)))
    await client.call("Host.setupNetworks", {
        "networks": {"net2": {"nic": "veth_c", "bridged": False}},
        "bondings": {}, "options": NO_CHECK})
    [seen] = records(record)
    assert seen["point"] == "after_network_setup"
    request = seen["doc"]["request"]
    assert request["networks"]["net2"] == {"nic": "veth_c", "bridged": False, "mtu": 9000}
    assert request["networks"]["hooknet"] == {"nic": "veth_b", "bridged": True}
    assert request["bondings"] == {} and request["options"] == NO_CHECK


async def test_after_fail_hook_runs_when_the_request_is_invalid(client, hooks, host, tmp_path):
    record = tmp_path / "record.jsonl"
    install(hooks, "after_network_setup_fail", "50_record", RECORD.format(path=str(record)))
    install(hooks, "after_network_setup", "50_record", RECORD.format(path=str(record)))
    with pytest.raises(RpcError) as err:
        await client.call("Host.setupNetworks",
                          {"networks": {"bad": {"nic": "veth_nope"}}, "options": NO_CHECK})
    assert err.value.code != HOOK_ERROR
    assert [r["point"] for r in records(record)] == ["after_network_setup_fail"]
    assert "bad" not in (await kstate(host))["links"]
