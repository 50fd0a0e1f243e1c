"""In-place edits of existing networks against a real kernel (veth NICs in a namespace).

An edit changes only what differs: the bridge keeps its ifindex when its MTU, addresses,
gateway, default-route flag or NIC change; a failing edit is rolled back to exactly the
previous state (links, every routing table, rules, IPv6 switches, indexes), all read back
over netlink.
"""

from __future__ import annotations

import pytest

from network.l3 import SOURCE_RULE_PRIORITY, source_table
from network.model import parse_request
from network.setup import NetworkSetup
from tests.integration.net_l3 import full_state, host_fixture, setup_fixture  # noqa: F401
from tests.integration.netns import can_use_netns
from vdsm_py.errors import NetworkFailedIfup

ok, why = can_use_netns()
pytestmark = pytest.mark.skipif(not ok, reason=why)


def apply(setup: NetworkSetup, networks) -> list[str]:  # type: ignore[no-untyped-def]
    """Apply and commit; returns the descriptions of the steps it took."""
    applied = setup.apply(parse_request(networks, {}, {}))
    setup.commit(applied)
    return [u.what for u in applied.tx.undos]


MGMT = {"nic": "veth_a", "ipaddr": "192.0.2.10", "prefix": 24, "gateway": "192.0.2.1",
        "defaultRoute": True}


def test_mtu_change_keeps_the_bridge_and_touches_nothing_else(host, setup):
    apply(setup, {"mgmt": MGMT})
    before = full_state(host.name, with_indexes=True)
    steps = apply(setup, {"mgmt": {**MGMT, "mtu": 9000}})
    after = full_state(host.name, with_indexes=True)
    assert after["indexes"] == before["indexes"]
    assert after["links"]["mgmt"][1] == 9000 and after["links"]["veth_a"][1] == 9000
    assert after["links"]["veth_a"][2] == "mgmt"
    assert all("mtu" in s for s in steps), steps  # no address or route was touched
    assert {k: v for k, v in after.items() if k != "links"} == {
        k: v for k, v in before.items() if k != "links"}


def test_address_and_gateway_change_in_place(host, setup):
    apply(setup, {"mgmt": MGMT})
    index = full_state(host.name, with_indexes=True)["indexes"]["mgmt"]
    apply(setup, {"mgmt": {**MGMT, "ipaddr": "198.51.100.10", "gateway": "198.51.100.1"}})
    state = full_state(host.name, with_indexes=True)
    assert state["indexes"]["mgmt"] == index
    assert state["addresses"]["mgmt"] == ["198.51.100.10/24"]
    assert state["routes"] == [("198.51.100.1", "mgmt")]


def test_default_route_moves_between_networks_and_leaves_source_routing(host, setup):
    other = {"nic": "veth_b", "ipaddr": "198.51.100.10", "prefix": 24,
             "gateway": "198.51.100.1"}
    apply(setup, {"mgmt": MGMT, "other": other})
    first = full_state(host.name, with_indexes=True)
    table = source_table("198.51.100.10")
    assert (SOURCE_RULE_PRIORITY, table, "198.51.100.0/24", "", "") in first["rules"]
    apply(setup, {"mgmt": {**MGMT, "defaultRoute": False},
                  "other": {**other, "defaultRoute": True}})
    state = full_state(host.name, with_indexes=True)
    assert state["indexes"] == first["indexes"]
    assert state["routes"] == [("198.51.100.1", "other")]
    # mgmt, no longer the default route, now routes its own replies by source.
    mgmt_table = source_table("192.0.2.10")
    assert (SOURCE_RULE_PRIORITY, mgmt_table, "192.0.2.0/24", "", "") in state["rules"]
    assert (SOURCE_RULE_PRIORITY, mgmt_table, "", "192.0.2.0/24", "mgmt") in state["rules"]
    assert not [r for r in state["rules"] if r[1] == table]
    assert not [r for r in state["routes_all"] if r[0] == table]


def test_moving_a_bridged_network_to_another_nic_keeps_the_bridge(host, setup):
    apply(setup, {"mgmt": {**MGMT, "mtu": 4000}})
    index = full_state(host.name, with_indexes=True)["indexes"]["mgmt"]
    apply(setup, {"mgmt": {**MGMT, "nic": "veth_c", "mtu": 4000}})
    state = full_state(host.name, with_indexes=True)
    assert state["indexes"]["mgmt"] == index
    assert state["links"]["veth_c"][1:3] == (4000, "mgmt")
    assert state["links"]["veth_a"][1:3] == (1500, "")  # released and back to the default
    assert state["addresses"]["mgmt"] == ["192.0.2.10/24"]
    assert state["routes"] == [("192.0.2.1", "mgmt")]


def test_failing_edit_restores_exactly_the_previous_state(host, setup):
    other = {"nic": "veth_b", "bridged": False, "ipaddr": "203.0.113.10", "prefix": 24,
             "gateway": "203.0.113.1", "ipv6addr": "2001:db8:5::10/64"}
    apply(setup, {"mgmt": {**MGMT, "ipv6addr": "2001:db8:1::10/64",
                           "ipv6gateway": "2001:db8:1::1"}, "other": other})
    # A rule the edited 'other' will need already exists: the kernel refuses it at the
    # end, after mgmt's MTU, NIC, addresses and default route were already changed.
    host.ipr().rule("add", table=source_table("203.0.113.20"), src="203.0.113.0",
                    src_len=24, priority=SOURCE_RULE_PRIORITY)
    before = full_state(host.name, with_indexes=True)
    request = parse_request({
        "mgmt": {"nic": "veth_c", "mtu": 9000, "ipaddr": "192.0.2.11", "prefix": 24,
                 "gateway": "192.0.2.1", "ipv6autoconf": True},
        "other": {**other, "ipaddr": "203.0.113.20", "mtu": 2000},
    }, {}, {})
    with pytest.raises(NetworkFailedIfup, match="network other: add rule"):
        setup.apply(request)
    assert full_state(host.name, with_indexes=True) == before
    assert setup.store.running().networks["mgmt"].nic == "veth_a"
