"""The setupNetworks request model: VDSM's defaults, wire round trips, per-item errors,
the change plan and the undo log. No kernel, no root."""

from __future__ import annotations

import pytest

from network.configurator import plan
from network.connectivity import Requester, peer_host
from network.model import NetConfig, canonical_network, parse_request
from network.netlink import Link
from network.transaction import StepFailed, Transaction
from network.validate import NicFilter, validate
from vdsm_py.errors import NetworkBadParams, VdsmError


def test_defaults_are_vdsms_bridged_mtu_1500_stp_off_no_default_route():
    net = canonical_network("net1", {"nic": "eth0"})
    assert (net.bridged, net.mtu, net.stp, net.default_route, net.bootproto) == (
        True, 1500, False, False, "none")
    assert net.iface == "net1" and net.southbound == "eth0"


def test_engine_style_strings_are_canonicalized():
    net = canonical_network("net1", {"nic": "eth0", "vlan": "100", "mtu": "9000",
                                     "bridged": "false", "ipaddr": "10.0.0.5",
                                     "netmask": "255.255.0.0", "defaultRoute": "true",
                                     "gateway": "10.0.0.1"})
    assert (net.vlan, net.mtu, net.bridged, net.default_route) == (100, 9000, False, True)
    assert net.vlan_device == "eth0.100" and net.iface == "eth0.100"
    assert net.ipv4 is not None and net.ipv4.cidr == "10.0.0.5/16"


def test_wire_round_trip_is_identity():
    config = NetConfig.from_wire({
        "networks": {"n": {"bonding": "bond0", "vlan": 5, "ipaddr": "192.0.2.4", "prefix": 24,
                           "gateway": "192.0.2.1", "stp": True}},
        "bondings": {"bond0": {"nics": ["b", "a"], "options": "miimon=100 mode=4"}},
    })
    assert NetConfig.from_wire(config.to_wire()) == config
    assert config.bondings["bond0"].nics == ("a", "b")
    assert config.bondings["bond0"].options_string == "miimon=100 mode=802.3ad"


def test_connectivity_options_follow_vdsm_defaults():
    opts = parse_request({}, {}, {}).options
    assert (opts.connectivity_check, opts.connectivity_timeout) == (True, 4.0)
    opts = parse_request({}, {}, {"connectivityCheck": "false", "connectivityTimeout": "7"}).options
    assert (opts.connectivity_check, opts.connectivity_timeout) == (False, 7.0)


@pytest.mark.parametrize(("attrs", "code"), [
    ({"nic": "eth0", "bonding": "bond0"}, 21),
    ({"nic": "eth0", "nonsense": 1}, 21),
    ({"nic": "eth0", "mtu": "big"}, 21),
    ({"nic": "eth0", "stp": "maybe"}, 21),
    ({"bridged": False}, 21),
    ({"vlan": 5}, 26),
    ({"nic": "eth0", "ipaddr": "10.0.0.1"}, 22),
    ({"nic": "eth0", "ipaddr": "10.0.0.1", "prefix": 24, "netmask": "255.0.0.0"}, 21),
    ({"nic": "eth0", "ipaddr": "10.0.0.1", "prefix": 33}, 22),
    ({"nic": "eth0", "ipaddr": "224.0.0.1", "prefix": 24}, 22),
    ({"nic": "eth0", "ipaddr": "10.0.0.1", "prefix": 24, "gateway": "nope"}, 22),
])
def test_bad_network_attributes_are_refused_naming_the_network(attrs, code):
    with pytest.raises(VdsmError) as err:
        canonical_network("net1", attrs)
    assert err.value.code == code and "net1" in err.value.message


def _link(name: str, **kw) -> Link:
    return Link(index=1, name=name, kind=kw.pop("kind", ""), mtu=1500, up=True,
                operstate="up", mac="52:54:00:00:00:01", **kw)


def test_mtu_above_the_devices_range_is_refused():
    links = {"eth0": _link("eth0", min_mtu=68, max_mtu=9000)}
    with pytest.raises(NetworkBadParams, match="maximum 9000"):
        validate(parse_request({"n": {"nic": "eth0", "mtu": 9001}}, {}, {}), NetConfig(),
                 links, NicFilter())


def test_physical_devices_and_fake_nic_globs_are_nics_but_not_loopback_or_bridges():
    is_nic = NicFilter(["veth_*"])
    assert is_nic(_link("eth0")) and is_nic(_link("veth_a", kind="veth"))
    assert not is_nic(_link("lo")) and not is_nic(_link("br0", kind="bridge"))


def test_plan_rebuilds_networks_on_a_changed_bond_and_keeps_unchanged_ones():
    running = NetConfig.from_wire({
        "networks": {"a": {"bonding": "bond0"}, "b": {"nic": "eth1"}},
        "bondings": {"bond0": {"nics": ["eth2"], "options": "mode=1"}},
    })
    desired = running.merged(parse_request({}, {"bond0": {"nics": ["eth2", "eth3"]}}, {}))
    p = plan(running, desired)
    assert [n.name for n in p.nets_down] == ["a"] and [n.name for n in p.nets_up] == ["a"]
    assert p.bonds_down == ("bond0",) and [b.name for b in p.bonds_up] == ["bond0"]


def test_transaction_undoes_newest_first_and_reports_failed_undos():
    done: list[str] = []
    tx = Transaction()
    tx.step("x", "one", lambda: done.append("1"), lambda: done.append("-1"))
    tx.step("x", "two", lambda: done.append("2"), lambda: (_ for _ in ()).throw(OSError("no")))
    tx.step("x", "three", lambda: done.append("3"), lambda: done.append("-3"))
    with pytest.raises(StepFailed) as err:
        tx.step("y", "four", lambda: (_ for _ in ()).throw(OSError("boom")), None)
    assert err.value.item == "y" and "boom" in str(err.value)
    failures = tx.rollback()
    assert done == ["1", "2", "3", "-3", "-1"]
    assert failures == ["x: undo two: no"]


def test_connectivity_matches_same_connection_or_same_peer_host():
    class Ctx:
        def __init__(self, client_id: str, peer: str) -> None:
            self.client_id, self.peer = client_id, peer

    req = Requester("conn-1", "[2001:db8::1]:4000")
    assert req.matches(Ctx("conn-1", "[2001:db8::9]:1"))
    assert req.matches(Ctx("conn-9", "[2001:db8::1]:5555"))
    assert not req.matches(Ctx("conn-9", "192.0.2.1:4000"))
    assert peer_host("192.0.2.1:80") == "192.0.2.1"


# -- addressing: DHCP, IPv6, source routing, in-place edits, the journal --------------------

@pytest.mark.parametrize(("attrs", "code"), [
    ({"nic": "eth0", "bootproto": "dhcp", "ipaddr": "10.0.0.5", "prefix": 24}, 22),
    ({"nic": "eth0", "bootproto": "dhcp", "gateway": "10.0.0.1"}, 22),
    ({"nic": "eth0", "bootproto": "bootp"}, 21),
    ({"nic": "eth0", "ipv6addr": "2001:db8::1"}, 22),
    ({"nic": "eth0", "ipv6addr": "2001:db8::1/129"}, 22),
    ({"nic": "eth0", "ipv6addr": "2001:db8::g/64"}, 22),
    ({"nic": "eth0", "ipv6addr": "fe80::1/64"}, 22),
    ({"nic": "eth0", "ipv6addr": "2001:db8::1/64", "dhcpv6": True}, 22),
    ({"nic": "eth0", "ipv6gateway": "2001:db8::1"}, 22),
    ({"nic": "eth0", "ipv6addr": "2001:db8::1/64", "ipv6gateway": "2001:db9::1",
      "defaultRoute": True}, 22),
    ({"nic": "eth0", "ipv6addr": "2001:db8::1/64", "ipv6gateway": "fe80::1"}, 21),
    ({"nic": "eth0", "ipaddr": "10.0.0.5", "prefix": 24, "gateway": "10.0.1.1"}, 22),
    ({"nic": "eth0", "ipaddr": "10.0.0.5", "prefix": 24, "gateway": "10.0.0.5"}, 22),
])
def test_bad_addressing_is_refused_naming_the_network(attrs, code):
    with pytest.raises(VdsmError) as err:
        canonical_network("net1", attrs)
    assert err.value.code == code and "net1" in err.value.message


def test_dhcp_and_ipv6_round_trip_through_the_wire_shape():
    net = canonical_network("n", {"nic": "eth0", "bootproto": "DHCP", "blockingdhcp": "true",
                                  "ipv6addr": "2001:DB8::0001/64", "ipv6gateway": "fe80::1",
                                  "defaultRoute": True})
    assert net.dhcpv4 and net.blocking_dhcp
    assert net.ipv6 is not None and net.ipv6.addresses == ("2001:db8::1/64",)
    assert canonical_network("n", net.to_wire()) == net


def test_source_routing_only_for_a_static_gateway_off_the_default_route():
    from network.l3 import l3_spec, source_table

    off = canonical_network("s", {"nic": "eth1", "bridged": False, "ipaddr": "10.1.0.5",
                                  "prefix": 16, "gateway": "10.1.0.1"})
    spec = l3_spec(off)
    table = source_table("10.1.0.5")
    assert {(r.table, r.dst, r.gateway) for r in spec.routes} == {
        (table, "", "10.1.0.1"), (table, "10.1.0.0/16", "")}
    assert {(r.src, r.dst, r.iif) for r in spec.rules} == {
        ("10.1.0.0/16", "", ""), ("", "10.1.0.0/16", "eth1")}
    default = l3_spec(canonical_network("s", {**off.to_wire(), "defaultRoute": True}))
    assert not default.rules and {(r.table, r.gateway) for r in default.routes} == {
        (254, "10.1.0.1")}


def test_plan_edits_in_place_unless_the_devices_change_kind():
    running = NetConfig.from_wire({"networks": {
        "mtu": {"nic": "eth0"}, "move": {"nic": "eth1"}, "kind": {"nic": "eth2"},
        "raw": {"nic": "eth3", "bridged": False}}, "bondings": {}})
    desired = running.merged(parse_request({
        "mtu": {"nic": "eth0", "mtu": 9000}, "move": {"nic": "eth4"},
        "kind": {"nic": "eth2", "bridged": False}, "raw": {"nic": "eth5", "bridged": False},
    }, {}, {}))
    p = plan(running, desired)
    assert [old.name for old, _new in p.nets_edit] == ["move", "mtu"]
    assert [n.name for n in p.nets_down] == ["kind", "raw"]
    assert [n.name for n in p.nets_up] == ["kind", "raw"]


def test_journal_keeps_undos_in_order_and_survives_a_torn_last_line(tmp_path):
    from network.journal import Journal

    journal = Journal(tmp_path / "journal.jsonl")
    tx = Transaction(journal=journal)
    journal.begin()

    class Undo:
        def __init__(self, n: int) -> None:
            self.n = n

        def __call__(self) -> None:
            pass

        def to_wire(self) -> dict:
            return {"op": "x", "args": [self.n]}

    tx.step("a", "one", lambda: None, Undo(1))
    tx.step("a", "two", lambda: None, Undo(2))
    with open(journal.path, "a") as f:
        f.write('{"item": "a", "what": "thr')  # the process died mid-write
    assert [e.op["args"] for e in journal.pending()] == [[1], [2]]
    journal.clear()
    assert journal.pending() == []
