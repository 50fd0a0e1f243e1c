"""Addressing against a real kernel and real servers: static IPv6, source routing for a
gateway that is not the default route, IPv4 DHCP (busybox udhcpc against dnsmasq), IPv6
autoconfiguration from real router advertisements and DHCPv6 (dnsmasq), and how all of it
is reported in the capabilities.

The host is a namespace whose veth ends are the NICs; the servers run in a second namespace
holding the peer ends. Everything is read back over netlink; DHCP clients are stopped (and
checked to be gone) when their network is removed or rolled back.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from network.caps import network_capabilities
from network.dhcp import DhcpClients
from network.l3 import SOURCE_RULE_PRIORITY, source_table
from network.model import parse_request
from network.setup import NetworkSetup
from tests.integration.net_l3 import (  # noqa: F401 - the fixtures host and setup
    Peer,
    can_run,
    dnsmasq,
    full_state,
    host_fixture,
    peer_of,
    setup_fixture,
)
from tests.integration.netns import NICS, TestHost, can_use_netns
from vdsm_py.errors import NetworkFailedIfup

ok, why = can_use_netns()
pytestmark = pytest.mark.skipif(not ok, reason=why)
has_dnsmasq = pytest.mark.skipif(not can_run("dnsmasq")[0], reason=can_run("dnsmasq")[1])
has_busybox = pytest.mark.skipif(not can_run("busybox")[0], reason=can_run("busybox")[1])

DHCP_RANGE = "--dhcp-range=192.0.2.50,192.0.2.60,255.255.255.0,1h"


@pytest.fixture
def peer(host: TestHost) -> Iterator[Peer]:
    """The peer ends of the NICs in their own namespace; 192.0.2.1/24 on peer_a."""
    with peer_of(host, NICS) as p:
        p.ipr.addr("add", index=p.ipr.link_lookup(ifname="peer_a")[0], address="192.0.2.1",
                   prefixlen=24)
        yield p


def apply(setup: NetworkSetup, networks) -> None:  # type: ignore[no-untyped-def]
    setup.commit(setup.apply(parse_request(networks, {}, {})))


def caps(setup: NetworkSetup) -> dict:
    return network_capabilities(setup.nl, setup.store.running(), setup.nic_filter)


def wait_for(predicate, what: str, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """Poll until ``predicate()`` is truthy (a generous liveness bound, not a timing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def in_pool(cidr: str) -> bool:
    """Whether ``cidr`` is a lease of DHCP_RANGE (192.0.2.50-60, /24)."""
    address, _, plen = cidr.partition("/")
    return plen == "24" and address.startswith("192.0.2.") and 50 <= int(address[8:]) <= 60


def pid_alive(pid: int) -> bool:
    return pid > 0 and os.path.exists(f"/proc/{pid}")


# -- static IPv6 and source routing ----------------------------------------------------------

def test_static_ipv6_address_and_gateway_on_the_default_route_network(host, setup):
    apply(setup, {"mgmt": {"nic": "veth_a", "defaultRoute": True,
                           "ipaddr": "192.0.2.10", "prefix": 24, "gateway": "192.0.2.1",
                           "ipv6addr": "2001:db8:1::10/64", "ipv6gateway": "2001:db8:1::1"}})
    state = full_state(host.name)
    assert state["addresses6"]["mgmt"] == ["2001:db8:1::10/64"]
    assert ("", "2001:db8:1::1", "mgmt") in state["routes6"]
    assert state["ipv6_conf"]["mgmt"] == (("accept_ra", "0"), ("autoconf", "0"))
    net = caps(setup)["networks"]["mgmt"]
    assert net["ipv6addrs"] == ["2001:db8:1::10/64"] and net["ipv6gateway"] == "2001:db8:1::1"
    assert net["ipv4addrs"] == ["192.0.2.10/24"] and net["gateway"] == "192.0.2.1"
    assert (net["dhcpv4"], net["dhcpv6"], net["ipv6autoconf"]) == (False, False, False)
    assert net["ipv4defaultroute"] is True


def test_gateway_off_the_default_route_gets_its_own_table_and_rules(host, setup):
    apply(setup, {"mgmt": {"nic": "veth_a", "defaultRoute": True, "ipaddr": "192.0.2.10",
                           "prefix": 24, "gateway": "192.0.2.1"},
                  "storage": {"nic": "veth_b", "bridged": False, "ipaddr": "198.51.100.7",
                              "prefix": 24, "gateway": "198.51.100.1"}})
    state = full_state(host.name)
    table = source_table("198.51.100.7")
    assert state["routes"] == [("192.0.2.1", "mgmt")]  # the main table's default is mgmt's
    assert (table, "", "198.51.100.1", "veth_b", "") in state["routes_all"]
    assert (table, "198.51.100.0/24", "", "veth_b", "198.51.100.7") in state["routes_all"]
    assert (SOURCE_RULE_PRIORITY, table, "198.51.100.0/24", "", "") in state["rules"]
    assert (SOURCE_RULE_PRIORITY, table, "", "198.51.100.0/24", "veth_b") in state["rules"]
    assert caps(setup)["networks"]["storage"]["gateway"] == "198.51.100.1"
    apply(setup, {"storage": {"remove": True}})
    state = full_state(host.name)
    assert not [r for r in state["rules"] if r[1] == table]
    assert not [r for r in state["routes_all"] if r[0] == table]


# -- DHCP -----------------------------------------------------------------------------------

@has_dnsmasq
@has_busybox
def test_dhcp_network_gets_a_lease_default_route_and_reports_it(host, peer, setup, tmp_path):
    before = full_state(host.name)
    with dnsmasq(peer, tmp_path / "dnsmasq", ["--interface=peer_a", DHCP_RANGE]):
        apply(setup, {"dnet": {"nic": "veth_a", "bootproto": "dhcp", "blockingdhcp": True,
                               "defaultRoute": True}})
        state = full_state(host.name)
        [address] = state["addresses"]["dnet"]
        assert in_pool(address)
        assert state["routes"] == [("192.0.2.1", "dnet")]
        pid = setup.dhcp.pid("dnet")
        assert pid_alive(pid)
        # A restarted agent finds the client again (pidfile, checked against /proc).
        assert DhcpClients(host.name, setup.dhcp.dir).pid("dnet") == pid
        net = caps(setup)["networks"]["dnet"]
        assert net["dhcpv4"] is True and net["bootproto4"] == "dhcp"
        assert net["ipv4addrs"] == [address] and net["gateway"] == "192.0.2.1"
        apply(setup, {"dnet": {"remove": True}})
    wait_for(lambda: not pid_alive(pid), "the DHCP client to exit", 10)
    assert full_state(host.name) == before
    assert not setup.dhcp.running("dnet")


@has_dnsmasq
@has_busybox
def test_static_to_dhcp_and_back_in_place(host, peer, setup, tmp_path):
    static = {"nic": "veth_a", "ipaddr": "192.0.2.20", "prefix": 24}
    apply(setup, {"net": static})
    index = full_state(host.name, with_indexes=True)["indexes"]["net"]
    with dnsmasq(peer, tmp_path / "dnsmasq", ["--interface=peer_a", DHCP_RANGE]):
        apply(setup, {"net": {"nic": "veth_a", "bootproto": "dhcp", "blockingdhcp": True}})
        state = full_state(host.name, with_indexes=True)
        assert state["indexes"]["net"] == index
        [address] = state["addresses"]["net"]
        assert in_pool(address)
        pid = setup.dhcp.pid("net")
        apply(setup, {"net": static})
    assert not pid_alive(pid) or wait_for(lambda: not pid_alive(pid), "client exit", 10)
    state = full_state(host.name, with_indexes=True)
    assert state["indexes"]["net"] == index
    assert state["addresses"]["net"] == ["192.0.2.20/24"]


@has_busybox
def test_dhcp_without_a_server_fails_and_rolls_back_stopping_the_client(host, peer, setup):
    setup.dhcp.lease_timeout = 3.0
    before = full_state(host.name)
    request = parse_request({
        "static": {"nic": "veth_b", "ipaddr": "198.51.100.2", "prefix": 24},
        "dnet": {"nic": "veth_a", "bootproto": "dhcp", "blockingdhcp": True},
    }, {}, {})
    with pytest.raises(NetworkFailedIfup) as err:
        setup.apply(request)
    assert "network dnet" in str(err.value) and "no DHCP lease" in str(err.value)
    assert full_state(host.name) == before
    assert not setup.dhcp.running("dnet")


@has_dnsmasq
@has_busybox
def test_rollback_of_a_dhcp_network_stops_its_client_and_removes_the_lease(
    host, peer, setup, tmp_path
):
    before = full_state(host.name)
    # A rule the second network needs already exists: its last step fails, after the
    # DHCP network got its lease.
    host.ipr().rule("add", table=source_table("203.0.113.5"), src="203.0.113.0", src_len=24,
                    priority=SOURCE_RULE_PRIORITY)
    before = full_state(host.name)
    with dnsmasq(peer, tmp_path / "dnsmasq", ["--interface=peer_a", DHCP_RANGE]):
        request = parse_request({
            "dnet": {"nic": "veth_a", "bootproto": "dhcp", "blockingdhcp": True,
                     "defaultRoute": True},
            "other": {"nic": "veth_b", "ipaddr": "203.0.113.5", "prefix": 24,
                      "gateway": "203.0.113.1"},
        }, {}, {})
        with pytest.raises(NetworkFailedIfup, match="network other: add rule"):
            setup.apply(request)
    assert full_state(host.name) == before
    assert not setup.dhcp.running("dnet")


# -- IPv6 autoconfiguration and DHCPv6 ---------------------------------------------------------

def _slaac(host: TestHost, iface: str) -> list[str]:
    return [a for a in full_state(host.name)["addresses6"].get(iface, [])
            if a.startswith("2001:db8:6:")]


@has_dnsmasq
def test_ipv6_autoconf_takes_an_address_from_real_router_advertisements(
    host, peer, setup, tmp_path
):
    peer.ipr.addr("add", index=peer.ipr.link_lookup(ifname="peer_b")[0],
                  address="2001:db8:6::1", prefixlen=64)
    with dnsmasq(peer, tmp_path / "dnsmasq", ["--interface=peer_b", "--enable-ra",
                                              "--dhcp-range=2001:db8:6::,ra-only,64"]):
        apply(setup, {"v6": {"nic": "veth_b", "ipv6autoconf": True}})
        [address] = wait_for(lambda: _slaac(host, "v6"), "a SLAAC address on v6")
        assert address.endswith("/64")
        state = full_state(host.name)
        assert state["ipv6_conf"]["v6"] == (("accept_ra", "1"), ("autoconf", "1"))
        net = caps(setup)["networks"]["v6"]
        assert net["ipv6autoconf"] is True and address in net["ipv6addrs"]
        assert net["ipv6gateway"].startswith("fe80:")  # the router's link-local address
        # Turning autoconf off in place switches the kernel's flags off, same bridge.
        apply(setup, {"v6": {"nic": "veth_b", "ipv6autoconf": False}})
        assert full_state(host.name)["ipv6_conf"]["v6"] == (("accept_ra", "0"),
                                                             ("autoconf", "0"))


@has_dnsmasq
def test_network_without_autoconf_ignores_router_advertisements(host, peer, setup, tmp_path):
    for dev, prefix in (("peer_b", "2001:db8:6::1"), ("peer_c", "2001:db8:7::1")):
        peer.ipr.addr("add", index=peer.ipr.link_lookup(ifname=dev)[0], address=prefix,
                      prefixlen=64)
    workdir = tmp_path / "dnsmasq"
    with dnsmasq(peer, workdir, ["--interface=peer_b", "--interface=peer_c", "--enable-ra",
                                 "--dhcp-range=::,constructor:peer_*,ra-only,64"]):
        apply(setup, {"v6": {"nic": "veth_b"}, "probe": {"nic": "veth_c",
                                                        "ipv6autoconf": True}})
        # Positive control: the same server's advertisements reach 'probe' ...
        wait_for(lambda: [a for a in full_state(host.name)["addresses6"].get("probe", [])
                          if a.startswith("2001:db8:7:")], "a SLAAC address on probe")
        wait_for(lambda: "RTR-ADVERT(peer_b)" in (workdir / "dnsmasq.log").read_text(),
                 "an advertisement towards v6")
    # ... while 'v6', without ipv6autoconf, takes nothing from them.
    assert _slaac(host, "v6") == []
    assert full_state(host.name)["ipv6_conf"]["v6"] == (("accept_ra", "0"), ("autoconf", "0"))
    assert caps(setup)["networks"]["v6"]["ipv6autoconf"] is False


@has_dnsmasq
@has_busybox
def test_dhcpv6_network_gets_an_address_from_a_real_server(host, peer, setup, tmp_path):
    peer.ipr.addr("add", index=peer.ipr.link_lookup(ifname="peer_c")[0],
                  address="2001:db8:8::1", prefixlen=64)
    with dnsmasq(peer, tmp_path / "dnsmasq", [
            "--interface=peer_c", "--enable-ra",
            "--dhcp-range=2001:db8:8::100,2001:db8:8::1ff,64,1h"]):
        apply(setup, {"v6d": {"nic": "veth_c", "dhcpv6": True, "blockingdhcp": True}})
        lease = setup.dhcp.lease("v6d", 6)
        assert lease["address"].startswith("2001:db8:8::1")
        assert lease["address"] in full_state(host.name)["addresses6"]["v6d"]
        assert caps(setup)["networks"]["v6d"]["dhcpv6"] is True
        pid = setup.dhcp.pid("v6d", 6)
        assert DhcpClients(host.name, setup.dhcp.dir).pid("v6d", 6) == pid
        apply(setup, {"v6d": {"remove": True}})
    wait_for(lambda: not pid_alive(pid), "the DHCPv6 client to exit", 10)


@has_dnsmasq
@has_busybox
def test_dhcp_client_that_dies_is_restarted_and_keeps_the_lease(host, peer, setup, tmp_path):
    with dnsmasq(peer, tmp_path / "dnsmasq", ["--interface=peer_a", DHCP_RANGE]):
        apply(setup, {"dnet": {"nic": "veth_a", "bootproto": "dhcp", "blockingdhcp": True}})
        first = setup.dhcp.pid("dnet")
        [address] = full_state(host.name)["addresses"]["dnet"]
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: (p := setup.dhcp.pid("dnet")) != first and p,
                          "a new DHCP client")
        assert pid_alive(second) and setup.dhcp.restarts == 1
        log = setup.dhcp.dir / "dnet.dhcp4.log"
        # The new client's lease (dnsmasq gives the same address again) is applied:
        wait_for(lambda: log.read_text().count("obtained") == 2
                 and setup.dhcp.lease("dnet").get("address") == address, "the new lease")
        assert full_state(host.name)["addresses"]["dnet"] == [address]
