"""Bad setupNetworks requests: VDSM's code, the item named, and the host untouched.

Validation sees the real kernel of a private namespace (veth NICs, plus a bridge the agent
does not own), and the kernel is read back after each refusal.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from network.model import parse_request
from network.persistence import ConfigStore
from network.setup import NetworkSetup
from network.validate import NicFilter
from tests.integration.netns import NICS, TestHost, can_use_netns, host_with_nics, kernel_state
from vdsm_py.errors import VdsmError

ok, why = can_use_netns()
pytestmark = pytest.mark.skipif(not ok, reason=why)


@pytest.fixture(scope="module")
def host() -> Iterator[TestHost]:
    with host_with_nics((*NICS, "veth_d")) as h:
        ipr = h.ipr()
        ipr.link("add", ifname="foreign", kind="bridge")
        ipr.link("set", index=ipr.link_lookup(ifname="veth_d")[0],
                 master=ipr.link_lookup(ifname="foreign")[0])
        yield h


@pytest.fixture
def setup(host: TestHost, tmp_path: Path) -> Iterator[NetworkSetup]:
    s = NetworkSetup(host.name, ConfigStore(tmp_path), NicFilter(["veth_*"]))
    try:
        yield s
    finally:
        s.close()


BAD = [
    ("unknown nic", {"n1": {"nic": "eth99"}}, {}, 23, "eth99"),
    ("nic used by two networks", {"n1": {"nic": "veth_a"}, "n2": {"nic": "veth_a"}}, {}, 24,
     "veth_a"),
    ("nic of a foreign bridge", {"n1": {"nic": "veth_d"}}, {}, 24, "foreign"),
    ("vlan id 0", {"n1": {"nic": "veth_a", "vlan": 0}}, {}, 26, "n1"),
    ("vlan id 4095", {"n1": {"nic": "veth_a", "vlan": "4095"}}, {}, 26, "4095"),
    ("vlan id not a number", {"n1": {"nic": "veth_a", "vlan": "ten"}}, {}, 26, "n1"),
    ("same vlan twice on a nic", {"n1": {"nic": "veth_a", "vlan": 5},
                                  "n2": {"nic": "veth_a", "vlan": 5, "bridged": False}}, {},
     26, "n2"),
    ("vlan mtu above its parent's network", {"n1": {"nic": "veth_a", "mtu": 1500},
                                             "n2": {"nic": "veth_a", "vlan": 5, "mtu": 9000}},
     {}, 21, "n2"),
    ("mtu outside any device's range", {"n1": {"nic": "veth_a", "mtu": 70000}}, {}, 21, "n1"),
    ("mtu below the minimum", {"n1": {"nic": "veth_a", "mtu": 60}}, {}, 21, "n1"),
    ("bond without slaves", {}, {"bond0": {"nics": []}}, 25, "bond0"),
    ("bond with a slave that is not a nic", {}, {"bond0": {"nics": ["foreign"]}}, 25, "foreign"),
    ("bond with a foreign slave", {}, {"bond0": {"nics": ["veth_a", "veth_d"]}}, 25, "veth_d"),
    ("bond with an unknown slave", {}, {"bond0": {"nics": ["veth_x"]}}, 23, "veth_x"),
    ("nic in two bonds", {}, {"bond0": {"nics": ["veth_a"]}, "bond1": {"nics": ["veth_a"]}},
     25, "veth_a"),
    ("bad bond name", {}, {"mybond": {"nics": ["veth_a"]}}, 25, "mybond"),
    ("bad bond option", {}, {"bond0": {"nics": ["veth_a"], "options": "mode=7"}}, 25, "bond0"),
    ("network on a nic enslaved to a bond", {"n1": {"nic": "veth_a"}},
     {"bond0": {"nics": ["veth_a", "veth_b"]}}, 24, "bond0"),
    ("network on an unknown bond", {"n1": {"bonding": "bond7"}}, {}, 25, "bond7"),
    ("network named like a bond", {"bond0": {"bonding": "bond0"}},
     {"bond0": {"nics": ["veth_a"]}}, 21, "bond0"),
    ("network named like a foreign device", {"foreign": {"nic": "veth_a"}}, {}, 28, "foreign"),
    ("bad bridge name", {"a.b": {"nic": "veth_a"}}, {}, 27, "a.b"),
    ("bridge name too long", {"n" * 16: {"nic": "veth_a"}}, {}, 27, "n" * 16),
    ("invalid address", {"n1": {"nic": "veth_a", "ipaddr": "192.0.2.300", "prefix": 24}}, {},
     22, "n1"),
    ("invalid netmask", {"n1": {"nic": "veth_a", "ipaddr": "192.0.2.3",
                                "netmask": "255.0.255.0"}}, {}, 22, "n1"),
    ("broadcast address", {"n1": {"nic": "veth_a", "ipaddr": "192.0.2.255", "prefix": 24}}, {},
     22, "n1"),
    ("gateway without address", {"n1": {"nic": "veth_a", "gateway": "192.0.2.1"}}, {}, 22, "n1"),
    ("same address twice", {"n1": {"nic": "veth_a", "ipaddr": "192.0.2.3", "prefix": 24},
                            "n2": {"nic": "veth_b", "ipaddr": "192.0.2.3", "prefix": 24}}, {},
     22, "n2"),
    ("two default routes", {"n1": {"nic": "veth_a", "defaultRoute": True},
                            "n2": {"nic": "veth_b", "defaultRoute": True}}, {}, 21, "n2"),
    ("removing an unknown network", {"nope": {"remove": True}}, {}, 27, "nope"),
    ("removing an unknown bond", {}, {"bond9": {"remove": True}}, 25, "bond9"),
    ("dhcp with a static address", {"n1": {"nic": "veth_a", "bootproto": "dhcp",
                                           "ipaddr": "192.0.2.3", "prefix": 24}}, {}, 22, "n1"),
    ("invalid ipv6 address", {"n1": {"nic": "veth_a", "ipv6addr": "2001:db8::zz/64"}}, {}, 22,
     "n1"),
    ("ipv6 prefix out of range", {"n1": {"nic": "veth_a", "ipv6addr": "2001:db8::5/129"}}, {},
     22, "n1"),
    ("ipv6 address without prefix", {"n1": {"nic": "veth_a", "ipv6addr": "2001:db8::5"}}, {},
     22, "n1"),
    ("static ipv6 with autoconf", {"n1": {"nic": "veth_a", "ipv6addr": "2001:db8::5/64",
                                          "ipv6autoconf": True}}, {}, 22, "n1"),
    ("ipv6 gateway outside the subnet", {"n1": {"nic": "veth_a", "defaultRoute": True,
                                                "ipv6addr": "2001:db8:1::5/64",
                                                "ipv6gateway": "2001:db8:2::1"}}, {}, 22, "n1"),
    ("ipv6 gateway off the default route", {"n1": {"nic": "veth_a", "ipv6addr": "2001:db8::5/64",
                                                   "ipv6gateway": "fe80::1"}}, {}, 21, "n1"),
    ("gateway outside the subnet", {"n1": {"nic": "veth_a", "ipaddr": "192.0.2.3", "prefix": 24,
                                           "gateway": "192.0.3.1"}}, {}, 22, "192.0.3.1"),
    ("same ipv6 address twice", {"n1": {"nic": "veth_a", "ipv6addr": "2001:db8::5/64"},
                                 "n2": {"nic": "veth_b", "ipv6addr": "2001:db8::5/64"}}, {},
     22, "n2"),
    ("gateway is the own address", {"n1": {"nic": "veth_a", "ipaddr": "192.0.2.3",
                                           "prefix": 24, "gateway": "192.0.2.3"}}, {}, 22, "n1"),
]


@pytest.mark.parametrize(("networks", "bondings", "code", "named"),
                         [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_request_is_refused_with_its_code_and_leaves_host_untouched(
    host, setup, networks, bondings, code, named
):
    before = kernel_state(host.name)
    with pytest.raises(VdsmError) as err:
        setup.apply(parse_request(networks, bondings, {}))
    assert err.value.code == code, err.value.message
    assert named in err.value.message
    assert kernel_state(host.name) == before
    assert not setup.store.running_path.exists()


def test_removing_a_bond_still_used_by_a_network_is_refused(host, setup, tmp_path):
    # Validation with a running configuration that has a bond and a network on it (the
    # bond itself is never created: this kernel may lack the bonding driver).
    from network.model import NetConfig, canonical_bonding, canonical_network

    setup.store.save_running(NetConfig(
        {"n1": canonical_network("n1", {"bonding": "bond0"})},
        {"bond0": canonical_bonding("bond0", {"nics": ["veth_a"]})},
    ))
    before = kernel_state(host.name)
    with pytest.raises(VdsmError) as err:
        setup.apply(parse_request({}, {"bond0": {"remove": True}}, {}))
    assert err.value.code == 31 and "bond0" in err.value.message and "n1" in err.value.message
    assert kernel_state(host.name) == before
