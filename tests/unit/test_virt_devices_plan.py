"""Hot-plug placement and guest agent translation (pure parts of the device verbs)."""

from __future__ import annotations

import libvirt
from lxml import etree

from vdsm_py.virt import guestagent, pciplan
from vdsm_py.virt.spec import PciAddress
from vdsm_py.virt.ticket import ticket_element, valid_to


def dom(devices: str) -> etree._Element:
    return etree.fromstring(f"<domain><devices>{devices}</devices></domain>")


def addr(bus: int, slot: int, fn: int = 0) -> str:
    return (f"<address type='pci' domain='0x0000' bus='{bus:#04x}' slot='{slot:#04x}' "
            f"function='{fn:#x}'/>")


def test_hotplugged_nic_goes_after_the_last_nic_on_pc():
    d = dom(f"<interface>{addr(0, 3)}</interface><interface>{addr(0, 4)}</interface>"
            f"<disk>{addr(0, 5)}</disk><video>{addr(0, 2)}</video>")
    assert pciplan.hotplug_nic_address(d, q35=False) == PciAddress(0, 6)


def test_hotplugged_nic_on_q35_takes_the_first_free_root_port_above_the_nics():
    ports = "".join(f"<controller type='pci' model='pcie-root-port' index='{i}'>"
                    f"{addr(0, 3, i - 1)}</controller>" for i in range(1, 6))
    d = dom(ports + f"<interface>{addr(1, 0)}</interface><disk>{addr(3, 0)}</disk>"
            f"<interface>{addr(2, 0)}</interface>")
    assert pciplan.hotplug_nic_address(d, q35=True) == PciAddress(4, 0)
    full = dom(ports + "".join(f"<interface>{addr(i, 0)}</interface>" for i in range(1, 6)))
    assert pciplan.hotplug_nic_address(full, q35=True) is None


def test_ticket_element_sets_password_expiry_and_spice_connection_policy():
    graphics = etree.fromstring("<graphics type='spice' port='5900' autoport='yes' "
                                "passwd='old'><listen type='address' address='::'/></graphics>")
    el = ticket_element(graphics, "p<&>", 120, "keep")
    assert el.get("passwd") == "p<&>" and el.get("connected") == "keep"
    assert el.get("passwdValidTo") <= valid_to(121)
    assert el.find("listen").get("address") == "::"
    vnc = ticket_element(etree.fromstring("<graphics type='vnc'/>"), "Tk3&<x>9qZ!w", 5, "keep")
    assert vnc.get("connected") is None
    assert vnc.get("passwd") == "Tk3&<x>9"  # VNC authenticates 8 characters


def test_guest_agent_answers_become_vdsm_guest_fields():
    info = {"hostname": "web1.example.com", "os.id": "debian", "os.name": "Debian GNU/Linux",
            "os.version-id": "12", "os.kernel-release": "6.1.0", "os.machine": "x86_64",
            "timezone.name": "CET", "timezone.offset": 3600, "user.count": 1,
            "user.0.name": "root"}
    v4, v6 = libvirt.VIR_IP_ADDR_TYPE_IPV4, libvirt.VIR_IP_ADDR_TYPE_IPV6
    ifaces = {"lo": {"hwaddr": "00:00:00:00:00:00", "addrs": [{"addr": "127.0.0.1", "type": v4}]},
              "eth0": {"hwaddr": "00:1a:4a:00:00:01",
                       "addrs": [{"addr": "10.0.0.5", "type": v4},
                                 {"addr": "fe80::1", "type": v6}]}}
    out = guestagent.translate(info, ifaces)
    assert out["guestFQDN"] == "web1.example.com"
    assert out["guestOsInfo"]["distribution"] == "Debian GNU/Linux"
    assert out["guestTimezone"] == {"offset": 60, "zone": "CET"}
    assert out["guestIPs"] == "10.0.0.5" and out["username"] == "root"
    assert out["netIfaces"] == [{"name": "eth0", "hw": "00:1a:4a:00:00:01",
                                 "inet": ["10.0.0.5"], "inet6": ["fe80::1"]}]
