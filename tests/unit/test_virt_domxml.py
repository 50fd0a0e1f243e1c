"""Domain XML from a plain spec or from vmParams.xml: content, safety, NIC order."""

from __future__ import annotations

import uuid

import pytest
from lxml import etree

from vdsm_py.config import VirtConfig
from vdsm_py.errors import InvalidParameter
from vdsm_py.virt import domparse, domxml, metadata
from vdsm_py.virt.spec import parse_vm_params

CONFIG = VirtConfig()
NS = {"o": metadata.NS}


def nic(i: int, net: str = "ovirtmgmt", **extra):
    return {"type": "interface", "macAddr": f"00:1a:4a:00:00:{i:02x}", "network": net, **extra}


def build(**extra):
    vm_id = extra.pop("vm_id", str(uuid.uuid4()))
    params = {"vmName": "vm", "memSize": 512, **extra}
    defn = domxml.build(parse_vm_params(vm_id, params), CONFIG)
    return defn, etree.fromstring(defn.xml().encode())


def nic_layout(dom):
    return [(n.find("mac").get("address"), n.find("source").get("bridge"),
             {k: n.find("address").get(k) for k in ("bus", "slot", "function")})
            for n in dom.iterfind("devices/interface")]


def test_basic_domain_follows_the_spec_and_settings():
    _, dom = build(smp=4, smpCoresPerSocket=2, memSize=2048, emulatedMachine="pc-i440fx-7.2",
                   kernel="/boot/vmlinuz", kernelArgs="console=ttyS0", timeOffset=-60)
    assert dom.get("type") == "kvm"
    assert dom.findtext("memory") == str(2048 * 1024)
    assert dom.findtext("vcpu") == "4"
    topo = dom.find("cpu/topology")
    assert (topo.get("sockets"), topo.get("cores"), topo.get("threads")) == ("2", "2", "1")
    assert dom.find("os/type").get("machine") == "pc-i440fx-7.2"
    assert dom.findtext("os/kernel") == "/boot/vmlinuz"
    assert dom.findtext("os/cmdline") == "console=ttyS0"
    assert dom.find("clock").get("adjustment") == "-60"
    assert dom.find("features/acpi") is not None
    channel = dom.find("devices/channel/target")
    assert channel.get("name") == domxml.AGENT_CHANNEL


def test_kvm_disabled_means_tcg():
    _, dom = build(kvmEnable="false")
    assert dom.get("type") == "qemu"


def test_metacharacters_are_stored_as_text_not_markup():
    name = "x<y>&'\"]]>"
    defn, dom = build(vmName=name, custom={"k": "</ovirt-vm:custom><evil/>"},
                      kernelArgs="a=<b> & c")
    assert dom.findtext("name") == name
    assert dom.findtext("os/cmdline") == "a=<b> & c"
    assert dom.findtext("metadata/o:vm/o:custom/o:k", namespaces=NS) == \
        "</ovirt-vm:custom><evil/>"
    assert dom.find(".//evil") is None
    assert domparse.parse(defn.xml()).name == name


def test_consoles_are_locked_until_a_ticket_is_set():
    _, dom = build(devices=[{"type": "graphics", "device": "vnc"},
                            {"type": "graphics", "device": "spice"}])
    graphics = dom.findall("devices/graphics")
    assert [g.get("type") for g in graphics] == ["vnc", "spice"]
    for g in graphics:
        assert g.get("passwd") and g.get("passwdValidTo") == domxml.LOCKED_UNTIL
        assert g.find("listen").get("address") == CONFIG.graphics_listen
    assert dom.find("devices/video/model").get("type") == "vga"


def test_disks_are_named_per_bus_and_carry_storage_ids_in_metadata():
    image = str(uuid.uuid4())
    _, dom = build(devices=[
        {"type": "disk", "path": "/a.img", "imageID": image, "serial": "s1"},
        {"type": "disk", "path": "/b.img"},
        {"type": "disk", "path": "/dev/sdz", "iface": "scsi"},
        {"type": "disk", "device": "cdrom"},
    ])
    targets = [(d.find("target").get("dev"), d.get("type"))
               for d in dom.iterfind("devices/disk")]
    assert targets == [("vda", "file"), ("vdb", "file"), ("sda", "block"), ("hda", "file")]
    assert dom.find("devices/disk/source").get("file") == "/a.img"
    assert dom.find("devices/disk[4]/source") is None  # empty tray
    dev = dom.find("metadata/o:vm/o:device[@name='vda']", namespaces=NS)
    assert dev.findtext("o:imageID", namespaces=NS) == image


def test_pc_nics_take_bus0_slots_in_spec_order_from_0x03():
    _, dom = build(devices=[nic(1, "confidential"), nic(2, "public"), nic(3, "storage")])
    layout = nic_layout(dom)
    assert [(mac[-2:], net) for mac, net, _ in layout] == [
        ("01", "confidential"), ("02", "public"), ("03", "storage")]
    assert [a["slot"] for _, _, a in layout] == ["0x03", "0x04", "0x05"]
    assert {a["bus"] for _, _, a in layout} == {"0x00"}


def test_nic_layout_is_the_same_when_the_vm_is_recreated_from_the_same_spec():
    spec = {"devices": [nic(1), {"type": "disk", "path": "/x"}, nic(2)],
            "vm_id": str(uuid.uuid4())}
    assert nic_layout(build(**dict(spec))[1]) == nic_layout(build(**dict(spec))[1])


def test_explicit_nic_address_is_kept_and_later_nics_go_above_it():
    _, dom = build(devices=[nic(1, address={"bus": "0x00", "slot": "0x0a"}), nic(2)])
    assert [a["slot"] for _, _, a in nic_layout(dom)] == ["0x0a", "0x0b"]


def test_q35_nics_get_root_ports_of_their_own_in_order_plus_spares():
    _, dom = build(emulatedMachine="q35", devices=[nic(1), nic(2)])
    buses = [int(a["bus"], 16) for _, _, a in nic_layout(dom)]
    assert buses == [1, 2]
    ports = dom.findall("devices/controller[@model='pcie-root-port']")
    assert [int(p.get("index")) for p in ports] == [1, 2] + [
        3 + i for i in range(CONFIG.spare_root_ports)]
    first = ports[0].find("address")
    assert (first.get("slot"), first.get("function"), first.get("multifunction")) == \
        ("0x03", "0x0", "on")


def _engine_xml(vm_id: str, devices: str = "", meta: str = "") -> str:
    return (f"<domain type='kvm' xmlns:ovirt-vm='{metadata.NS}'><name>e</name>"
            f"<uuid>{vm_id}</uuid><memory>1048576</memory><metadata>{meta}</metadata>"
            f"<os><type machine='pc'>hvm</type></os><devices>{devices}</devices></domain>")


def test_xml_form_addresses_new_nics_around_taken_slots_and_keeps_metadata():
    vm_id = str(uuid.uuid4())
    devices = ("<interface type='bridge'><mac address='00:1a:4a:00:00:01'/>"
               "<source bridge='a'/></interface>"
               "<disk type='file' device='disk'><source file='/x'/><target dev='vda'/>"
               "<address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>"
               "</disk>"
               "<interface type='bridge'><mac address='00:1a:4a:00:00:02'/>"
               "<source bridge='b'/></interface>")
    meta = ("<ovirt-vm:vm><ovirt-vm:launchPaused>true</ovirt-vm:launchPaused>"
            "<ovirt-vm:custom><ovirt-vm:k>v</ovirt-vm:k></ovirt-vm:custom></ovirt-vm:vm>")
    defn = domxml.parse(_engine_xml(vm_id, devices, meta), vm_id)
    assert defn.launch_paused and defn.custom == {"k": "v"}
    dom = etree.fromstring(defn.xml().encode())
    assert [a["slot"] for _, _, a in nic_layout(dom)] == ["0x03", "0x05"]


@pytest.mark.parametrize("xml", [
    "<domain><name>x</name>",                      # not well-formed
    "<vm/>",                                       # not a domain
    "<domain><name>x</name><uuid>nope</uuid></domain>",
    f"<domain><name>x</name><uuid>{uuid.uuid4()}</uuid></domain>",  # another VM's uuid
])
def test_bad_xml_form_is_91_naming_vmparams_xml(xml):
    with pytest.raises(InvalidParameter) as err:
        domxml.parse(xml, str(uuid.uuid4()))
    assert err.value.data["param"] == "vmParams.xml"


def test_external_entities_are_never_loaded():
    vm_id = str(uuid.uuid4())
    xml = (f"<!DOCTYPE d [<!ENTITY e SYSTEM 'file:///etc/hostname'>]><domain><name>n&e;</name>"
           f"<uuid>{vm_id}</uuid></domain>")
    try:
        defn = domxml.parse(xml, vm_id)
    except InvalidParameter:
        return
    with open("/etc/hostname") as f:
        assert f.read().strip() not in defn.name


def test_device_snippet_must_hold_exactly_one_device_of_the_kind():
    el = domxml.parse_device_xml(
        "<hotplug><devices><interface type='bridge'/></devices></hotplug>", "p", ("interface",))
    assert el.tag == "interface"
    for bad in ("<devices/>", "<devices><disk/><disk/></devices>", "<disk/>"):
        with pytest.raises(InvalidParameter):
            domxml.parse_device_xml(bad, "p", ("interface",))
