"""Reading links fast without reading them wrong, against a real kernel.

The full link dump (``network.linkdump``: one request, parsed with ``struct``) must say
exactly what pyroute2's full decoding of each link says; the configurator's
``LinkView`` (links read once per change) must re-read what the kernel changes by itself
(a bridge re-tuning its MTU to a port's) and know, without asking, what it does not
(ports of a deleted bridge are released as they were).
"""

from __future__ import annotations

import pytest

from network.linkview import LinkView
from network.netlink import Netlink
from tests.integration.net_l3 import host_fixture  # noqa: F401
from tests.integration.netns import TestHost, can_use_netns

ok, why = can_use_netns()
pytestmark = pytest.mark.skipif(not ok, reason=why)


def test_fast_dump_reads_every_link_as_pyroute2_decodes_it(host: TestHost) -> None:
    with Netlink(host.name) as nl:
        nl.add_bridge("br_stp", stp=True, mtu=1400)
        nl.add_bridge("br_port", stp=False, mtu=1500)  # left down: no state in flux
        nl.set_master("veth_a", "br_port")
        nl.set_mtu("veth_b", 1300)
        nl.set_up("veth_c", False)
        dumped = nl.links()
        assert {"lo", "veth_a", "peer_a", "br_stp", "br_port"} <= set(dumped)
        assert dumped == {name: nl.link(name) for name in dumped}
        assert dumped["veth_a"].master == "br_port" and dumped["br_stp"].stp is True
        assert dumped["veth_b"].mtu == 1300 and dumped["veth_c"].up is False


def test_view_rereads_a_bridge_whose_mtu_the_kernel_retuned_to_its_port(
        host: TestHost) -> None:
    with Netlink(host.name) as nl:
        nl.add_bridge("br0", stp=False, mtu=1400)
        view = LinkView(nl, nl.links())
        nl.set_master("veth_a", "br0")  # a 1500 port: the kernel raises br0 to 1500
        view.changed("veth_a", master="br0")
        assert view.get("br0").mtu == 1500  # type: ignore[union-attr]
        assert view.get("veth_a").master == "br0"  # type: ignore[union-attr]


def test_view_keeps_a_bridge_whose_port_has_its_mtu_and_releases_ports_on_delete(
        host: TestHost) -> None:
    with Netlink(host.name) as nl:
        nl.add_bridge("br0", stp=False, mtu=1500)
        view = LinkView(nl, nl.links())
        nl.set_master("veth_a", "br0")
        view.changed("veth_a", master="br0")
        assert [p.name for p in view.ports("br0")] == ["veth_a"]
        nl.delete("br0")
        view.deleted(["br0"])
        assert view.get("br0") is None
        assert view.get("veth_a") == nl.link("veth_a")  # released, as the kernel says
        assert view.get("veth_a").master == ""  # type: ignore[union-attr]
