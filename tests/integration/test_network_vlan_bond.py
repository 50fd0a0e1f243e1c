"""VLANs and bonds for real, inside a guest booting the stock Debian kernel.

This machine's kernel has no 8021q or bonding, so ``test_vlans_and_bonds_in_a_stock_kernel_guest``
boots one QEMU guest (see ``kernel_vm``) and runs the ``guest_*`` tests of this file inside
it, where they use private namespaces with veth NICs like the other network tests. The
``guest_*`` tests only run when ``VDSM_PY_IN_KERNEL_GUEST=1`` (set by the guest script).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import kernel_vm

IN_GUEST = os.environ.get(kernel_vm.IN_GUEST_ENV) == "1"
GUEST_TESTS = 7


@pytest.mark.slow
@pytest.mark.skipif(IN_GUEST, reason="this is the host side")
@pytest.mark.skipif(os.geteuid() != 0, reason="the guest tests need root inside the guest")
@pytest.mark.skipif(bool(kernel_vm.unavailable_reason()), reason=kernel_vm.unavailable_reason())
def test_vlans_and_bonds_in_a_stock_kernel_guest() -> None:
    kernel_vm.run_guest_tests(
        __file__, GUEST_TESTS,
        preamble="modprobe 8021q && modprobe bonding max_bonds=0 || exit 90")


# --- inside the guest ------------------------------------------------------------------------

guest = pytest.mark.skipif(not IN_GUEST, reason="runs inside the stock-kernel guest only")


@pytest.fixture
def host() -> Iterator:
    from tests.integration.netns import host_with_nics

    with host_with_nics() as h:
        yield h


@pytest.fixture
def setup(host, tmp_path: Path) -> Iterator:
    from network.persistence import ConfigStore
    from network.setup import NetworkSetup
    from network.validate import NicFilter

    s = NetworkSetup(host.name, ConfigStore(tmp_path), NicFilter(["veth_*"]))
    try:
        yield s
    finally:
        s.close()


def apply(setup, networks=None, bondings=None) -> None:  # type: ignore[no-untyped-def]
    from network.model import parse_request

    setup.commit(setup.apply(parse_request(networks or {}, bondings or {}, {})))


BOND = {"bond0": {"nics": ["veth_b", "veth_c"], "options": "mode=1 miimon=100"}}
NETS = {
    "vmnet": {"nic": "veth_a", "vlan": 100, "mtu": 9000, "ipaddr": "192.0.2.10", "prefix": 24},
    "storage": {"nic": "veth_a", "vlan": "200", "bridged": False, "mtu": 4000,
                "ipaddr": "198.51.100.10", "prefix": 24},
    "mgmt": {"bonding": "bond0", "vlan": 300, "ipaddr": "203.0.113.10", "prefix": 24,
             "gateway": "203.0.113.1", "defaultRoute": True},
}


def rule_behind_the_agents_back(host, address: str, subnet: str) -> None:  # type: ignore
    """The source rule a network will need already exists: adding it fails (EEXIST)."""
    from network.l3 import SOURCE_RULE_PRIORITY, source_table

    host.ipr().rule("add", table=source_table(address), src=subnet, src_len=24,
                    priority=SOURCE_RULE_PRIORITY)


@guest
def test_guest_moving_a_bridged_network_to_another_vlan_keeps_the_bridge(host, setup):
    from tests.integration.netns import kernel_state

    apply(setup, {"vmnet": NETS["vmnet"]})
    index = setup.nl.link("vmnet").index
    apply(setup, {"vmnet": {**NETS["vmnet"], "vlan": 101, "mtu": 4000}})
    links = kernel_state(host.name)["links"]
    assert setup.nl.link("vmnet").index == index  # edited in place, not rebuilt
    assert "veth_a.100" not in links
    assert links["veth_a.101"][:6] == ("vlan", 4000, "vmnet", True, 101, "veth_a")
    assert links["vmnet"][1] == 4000 and links["veth_a"][1] == 4000


@guest
def test_guest_vlan_and_bond_networks_are_built_as_requested(host, setup):
    from tests.integration.netns import kernel_state

    apply(setup, NETS, BOND)
    links = kernel_state(host.name)["links"]
    # (kind, mtu, master, up, vlan_id, vlan_parent, stp, bond options)
    assert links["veth_a.100"][:6] == ("vlan", 9000, "vmnet", True, 100, "veth_a")
    assert links["vmnet"][:4] == ("bridge", 9000, "", True)
    assert links["veth_a.200"][:6] == ("vlan", 4000, "", True, 200, "veth_a")
    assert links["veth_a"][1] == 9000  # the largest MTU of its networks
    assert links["bond0"][0] == "bond" and dict(links["bond0"][7])["mode"] == "active-backup"
    assert dict(links["bond0"][7])["miimon"] == "100"
    assert links["veth_b"][2] == "bond0" and links["veth_c"][2] == "bond0"
    assert links["bond0.300"][:6] == ("vlan", 1500, "mgmt", True, 300, "bond0")
    state = kernel_state(host.name)
    assert state["addresses"]["veth_a.200"] == ["198.51.100.10/24"]
    assert state["addresses"]["mgmt"] == ["203.0.113.10/24"]
    assert state["routes"] == [("203.0.113.1", "mgmt")]


@guest
def test_guest_fast_dump_reads_vlans_and_bonds_as_pyroute2_decodes_them(host, setup):
    apply(setup, NETS, BOND)
    dumped = setup.nl.links()
    assert {"veth_a.100", "veth_a.200", "bond0", "bond0.300"} <= set(dumped)
    # operstate settles asynchronously after a device goes up: compared apart
    decoded = {name: setup.nl.link(name) for name in dumped}
    for name, link in dumped.items():
        other = decoded[name]
        assert other is not None and (link.operstate, other.operstate)
        link.operstate = other.operstate = ""
    assert dumped == decoded
    assert dumped["bond0.300"].vlan_id == 300 and dumped["bond0.300"].vlan_parent == "bond0"


@guest
def test_guest_removing_vlans_and_bond_leaves_nothing_behind(host, setup):
    from tests.integration.netns import kernel_state

    before = kernel_state(host.name)
    apply(setup, NETS, BOND)
    apply(setup, {n: {"remove": True} for n in NETS}, {"bond0": {"remove": True}})
    assert kernel_state(host.name) == before


@guest
def test_guest_failure_after_creating_vlans_and_bond_rolls_all_back(host, setup):
    from network.model import parse_request
    from tests.integration.netns import kernel_state
    from vdsm_py.errors import NetworkFailedIfup

    rule_behind_the_agents_back(host, "192.0.2.77", "192.0.2.0")
    before = kernel_state(host.name)
    bad = dict(NETS)
    # The last step, the source rule of zlast's gateway, is refused by the kernel (EEXIST).
    bad["zlast"] = {"nic": "veth_a", "vlan": 400, "ipaddr": "192.0.2.77", "prefix": 24,
                    "gateway": "192.0.2.1"}
    with pytest.raises(NetworkFailedIfup, match="network zlast: add rule"):
        setup.apply(parse_request(bad, BOND, {}))
    assert kernel_state(host.name) == before


@guest
def test_guest_failed_bond_change_recreates_the_old_bond_and_its_vlan(host, setup):
    from network.model import parse_request
    from tests.integration.netns import kernel_state
    from vdsm_py.errors import NetworkFailedIfup

    apply(setup, {"mgmt": NETS["mgmt"]}, BOND)
    rule_behind_the_agents_back(host, "192.0.2.5", "192.0.2.0")
    before = kernel_state(host.name)
    # Changing the bond's options rebuilds it (and the VLAN network on it); a later step
    # fails, so the old bond, its slaves, its VLAN, bridge, address and route come back.
    request = parse_request(
        {"zfail": {"nic": "veth_a", "ipaddr": "192.0.2.5", "prefix": 24,
                   "gateway": "192.0.2.1"},
         "mgmt": {**NETS["mgmt"], "defaultRoute": False}},
        {"bond0": {"nics": ["veth_b", "veth_c"], "options": "mode=4 miimon=200"}}, {},
    )
    with pytest.raises(NetworkFailedIfup, match="network zfail"):
        setup.apply(request)
    assert kernel_state(host.name) == before


@guest
def test_guest_restore_rebuilds_persisted_bond_and_vlans_after_reboot(host, tmp_path):
    from network.persistence import ConfigStore
    from network.setup import NetworkSetup
    from network.validate import NicFilter
    from tests.integration.netns import host_with_nics, kernel_state

    store = ConfigStore(tmp_path / "persist")
    first = NetworkSetup(host.name, store, NicFilter(["veth_*"]))
    apply(first, NETS, BOND)
    store.persist(store.running())
    wanted = kernel_state(host.name)
    first.close()
    with host_with_nics() as rebooted:  # same NICs, nothing else: what a reboot leaves
        second = NetworkSetup(rebooted.name, store, NicFilter(["veth_*"]))
        second.restore()
        second.close()
        got = kernel_state(rebooted.name)
        strip = lambda s: {k: v for k, v in s.items() if k != "links"}
        assert strip(got) == strip(wanted)
        assert {k: v[:7] for k, v in got["links"].items()} == \
            {k: v[:7] for k, v in wanted["links"].items()}
