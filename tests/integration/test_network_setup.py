"""setupNetworks against a real kernel: a private namespace whose veth pairs are the NICs.

Every assertion reads the kernel back over netlink. Failures are real kernel refusals (an
address that already exists, an unreachable gateway), not injected ones.
"""

from __future__ import annotations

import json

import pytest

from network.l3 import SOURCE_RULE_PRIORITY, source_table
from network.model import parse_request
from network.setup import NetworkSetup
from tests.integration.net_l3 import host_fixture, setup_fixture  # noqa: F401
from tests.integration.netns import TestHost, can_use_netns, kernel_state
from vdsm_py.errors import NetworkFailedIfup, NetworkUsedBridge

ok, why = can_use_netns()
pytestmark = pytest.mark.skipif(not ok, reason=why)


def apply(setup: NetworkSetup, networks=None, bondings=None) -> None:  # type: ignore[no-untyped-def]
    applied = setup.apply(parse_request(networks or {}, bondings or {}, {}))
    setup.commit(applied)


MGMT = {"nic": "veth_a", "mtu": "9000", "ipaddr": "192.0.2.10", "netmask": "255.255.255.0",
        "gateway": "192.0.2.1", "defaultRoute": True}


def test_bridged_network_gets_bridge_port_mtu_address_and_default_route(host, setup):
    apply(setup, {"ovirtmgmt": MGMT})
    state = kernel_state(host.name)
    kind, mtu, master, up, _vid, _parent, stp, _bond = state["links"]["ovirtmgmt"]
    assert (kind, mtu, master, up, stp) == ("bridge", 9000, "", True, False)
    assert state["links"]["veth_a"][1:4] == (9000, "ovirtmgmt", True)
    assert state["addresses"]["ovirtmgmt"] == ["192.0.2.10/24"]
    assert state["routes"] == [("192.0.2.1", "ovirtmgmt")]
    saved = json.loads(setup.store.running_path.read_text())
    assert saved["networks"]["ovirtmgmt"]["nic"] == "veth_a"
    assert saved["networks"]["ovirtmgmt"]["bridged"] is True


def test_bridgeless_network_puts_address_on_the_nic(host, setup):
    apply(setup, {"storage": {"nic": "veth_b", "bridged": "false", "ipaddr": "198.51.100.7",
                              "prefix": "25", "mtu": 4000}})
    state = kernel_state(host.name)
    assert "storage" not in state["links"]
    assert state["links"]["veth_b"][1] == 4000
    assert state["addresses"]["veth_b"] == ["198.51.100.7/25"]


def test_removal_leaves_nothing_behind(host, setup):
    before = kernel_state(host.name)
    apply(setup, {"ovirtmgmt": MGMT,
                  "storage": {"nic": "veth_b", "bridged": False, "ipaddr": "198.51.100.7",
                              "netmask": "255.255.255.0", "mtu": 2000}})
    assert kernel_state(host.name) != before
    apply(setup, {"ovirtmgmt": {"remove": True}, "storage": {"remove": "true"}})
    assert kernel_state(host.name) == before
    assert setup.store.running().networks == {}


def test_step_failing_part_way_rolls_back_every_change(host, setup):
    # An address the agent does not know about is already on veth_c: adding it again is
    # refused by the kernel, after the bridge of 'first' and the MTUs were already set.
    host.ipr().addr("add", index=host.ipr().link_lookup(ifname="veth_c")[0],
                    address="203.0.113.5", prefixlen=24)
    before = kernel_state(host.name)
    request = parse_request(
        {"first": {"nic": "veth_a", "mtu": 9000, "ipaddr": "192.0.2.10", "prefix": 24},
         "second": {"nic": "veth_c", "bridged": False, "mtu": 3000,
                    "ipaddr": "203.0.113.5", "prefix": 24}},
        {}, {},
    )
    with pytest.raises(NetworkFailedIfup) as err:
        setup.apply(request)
    assert err.value.code == 29
    assert "network second" in str(err.value) and "203.0.113.5" in str(err.value)
    assert "rolled back" in str(err.value)
    assert kernel_state(host.name) == before
    assert setup.store.running().networks == {}


def source_rule_behind_the_agents_back(host: TestHost, address: str, subnet: str) -> None:
    """The rule a source-routed network needs already exists: the kernel refuses to add it
    again (EEXIST), a real failure at the very end of a change that validation cannot
    foresee."""
    net, _, plen = subnet.partition("/")
    host.ipr().rule("add", table=source_table(address), src=net, src_len=int(plen),
                    priority=SOURCE_RULE_PRIORITY)


def test_kernel_refusal_at_the_last_step_rolls_back_bridges_addresses_routes(host, setup):
    source_rule_behind_the_agents_back(host, "192.0.2.10", "192.0.2.0/24")
    before = kernel_state(host.name)
    request = parse_request(
        {"net1": {"nic": "veth_a", "ipaddr": "198.51.100.1", "prefix": 24,
                  "gateway": "198.51.100.254", "defaultRoute": True},
         "net2": {"nic": "veth_b", "ipaddr": "192.0.2.10", "prefix": 24,
                  "gateway": "192.0.2.1"}},
        {}, {},
    )
    with pytest.raises(NetworkFailedIfup, match="network net2: add rule 192.0.2.0/24"):
        setup.apply(request)
    assert kernel_state(host.name) == before


def test_failed_change_restores_the_networks_it_had_torn_down(host, setup):
    apply(setup, {"net1": {"nic": "veth_a", "mtu": 9000, "ipaddr": "192.0.2.10",
                           "prefix": 24, "gateway": "192.0.2.1", "defaultRoute": True},
                  "net2": {"nic": "veth_b", "stp": True}})
    source_rule_behind_the_agents_back(host, "198.51.100.99", "198.51.100.0/24")
    before = kernel_state(host.name)
    request = parse_request(
        {"net1": {"remove": True},  # torn down (bridge deleted) before the failure
         "net2": {"nic": "veth_b", "mtu": 1400, "stp": True},  # edited, then undone
         "net3": {"nic": "veth_c", "ipaddr": "198.51.100.99", "prefix": 24,
                  "gateway": "198.51.100.1"}},  # its source rule is refused: fails
        {}, {},
    )
    with pytest.raises(NetworkFailedIfup, match="network net3"):
        setup.apply(request)
    assert kernel_state(host.name) == before
    assert sorted(setup.store.running().networks) == ["net1", "net2"]


def test_device_created_behind_the_agents_back_fails_cleanly(host, setup):
    # Validation passed, then the name was taken: the kernel's EEXIST is reported as a
    # used bridge (28), with the earlier steps undone.
    before = kernel_state(host.name)
    request = parse_request({"aaa": {"nic": "veth_a"}, "zzz": {"nic": "veth_b"}}, {}, {})
    real_add_bridge = setup.nl.add_bridge

    def race_then_add_bridge(name, **kw):  # type: ignore[no-untyped-def]
        if name == "zzz":  # taken between validation and the agent's own request
            host.ipr().link("add", ifname="zzz", kind="bridge")
        return real_add_bridge(name, **kw)

    setup.nl.add_bridge = race_then_add_bridge  # type: ignore[method-assign]
    with pytest.raises(NetworkUsedBridge, match="create bridge zzz"):
        setup.apply(request)
    setup.nl.add_bridge = real_add_bridge  # type: ignore[method-assign]
    host.ipr().link("del", index=host.ipr().link_lookup(ifname="zzz")[0])
    assert kernel_state(host.name) == before


def test_failure_after_removing_several_networks_at_once_recreates_them_all(host, setup):
    # Removals are one batched kernel request; its undo brings back every bridge with its
    # port, MTU, address and the default route.
    apply(setup, {"net1": {"nic": "veth_a", "mtu": 9000, "ipaddr": "192.0.2.10", "prefix": 24,
                           "gateway": "192.0.2.1", "defaultRoute": True},
                  "net2": {"nic": "veth_b", "stp": True},
                  "net3": {"nic": "veth_c", "mtu": 2000}})
    source_rule_behind_the_agents_back(host, "198.51.100.99", "198.51.100.0/24")
    before = kernel_state(host.name)
    request = parse_request(
        {"net1": {"remove": True}, "net2": {"remove": True}, "net3": {"remove": True},
         "net4": {"nic": "veth_a", "bridged": False, "ipaddr": "198.51.100.99", "prefix": 24,
                  "gateway": "198.51.100.1"}},
        {}, {},
    )
    with pytest.raises(NetworkFailedIfup, match="network net4: add rule"):
        setup.apply(request)
    assert kernel_state(host.name) == before
