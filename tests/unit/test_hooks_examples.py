"""The example hooks (hooks/examples/), run for real by HookRunner on real XML files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from lxml import etree

from vdsm_py.errors import HookError
from vdsm_py.hooks import HOOKING_PATH, HookRunner

EXAMPLES = HOOKING_PATH / "examples"
DOMAIN_XML = (EXAMPLES / "testdata" / "domain.xml").read_text()
INTERFACE_XML = (EXAMPLES / "testdata" / "interface.xml").read_text()
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def install(root: Path, point: str, name: str, example: str) -> None:
    (root / point).mkdir(parents=True, exist_ok=True)
    shutil.copy2(EXAMPLES / example, root / point / name)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "hooks"


@pytest.fixture
def runner(root: Path, tmp_path: Path) -> HookRunner:
    (tmp_path / "tmp").mkdir()
    return HookRunner(root, timeout=60, tmp_dir=tmp_path / "tmp")


def nics(xml: str) -> list[etree._Element]:
    return etree.fromstring(xml).findall("devices/interface")


# --- extnet ---------------------------------------------------------------------------


async def test_extnet_moves_the_first_nic_onto_the_libvirt_network(root, runner):
    install(root, "before_vm_start", "50_extnet", "extnet/extnet.py")
    out = await runner.run_xml(
        "before_vm_start", DOMAIN_XML, vm_id="vm-1", custom={"extnet": "ovs-net"}
    )
    first, second = nics(out)
    assert first.get("type") == "network"
    assert [s.attrib for s in first.findall("source")] == [{"network": "ovs-net"}]
    assert first.find("virtualport") is None, "the old connection's virtualport is dropped"
    assert first.find("mac").get("address") == "00:1a:4a:16:01:b0"
    assert first.find("filterref").get("filter") == "vdsm-no-mac-spoofing"
    assert first.find("boot").get("order") == "1"
    assert first.find("address").get("slot") == "0x00"
    assert second.get("type") == "bridge"
    assert second.find("source").get("bridge") == "storage-net"


async def test_extnet_moves_all_nics_or_those_chosen_by_mac(root, runner):
    install(root, "before_vm_start", "50_extnet", "extnet/extnet.py")
    out = await runner.run_xml(
        "before_vm_start", DOMAIN_XML, custom={"extnet": "default", "extnet_nics": "all"}
    )
    assert [n.find("source").get("network") for n in nics(out)] == ["default", "default"]
    out = await runner.run_xml(
        "before_vm_start",
        DOMAIN_XML,
        custom={"extnet": "default", "extnet_nics": "00:1A:4A:16:01:B1"},
    )
    first, second = nics(out)
    assert first.get("type") == "bridge" and second.get("type") == "network"


async def test_extnet_moves_a_hotplugged_nic_given_as_device_xml(root, runner):
    install(root, "before_nic_hotplug", "50_extnet", "extnet/extnet.py")
    out = await runner.run_xml("before_nic_hotplug", INTERFACE_XML, env={"extnet": "ovs-net"})
    interface = etree.fromstring(out)
    assert interface.get("type") == "network"
    assert interface.find("source").attrib == {"network": "ovs-net"}


async def test_extnet_without_its_property_changes_nothing(root, runner):
    install(root, "before_vm_start", "50_extnet", "extnet/extnet.py")
    assert await runner.run_xml("before_vm_start", DOMAIN_XML, custom={"x": "y"}) == DOMAIN_XML


@pytest.mark.parametrize(
    ("custom", "message"),
    [
        ({"extnet": ""}, "'' is not a libvirt network name"),
        ({"extnet": "a/b"}, "is not a libvirt network name"),
        ({"extnet": "n", "extnet_nics": "00:00:00:00:00:99"}, "no NIC with MAC 00:00:00:00:00:99"),
    ],
)
async def test_extnet_bad_property_fails_the_start_with_its_reason(root, runner, custom, message):
    install(root, "before_vm_start", "50_extnet", "extnet/extnet.py")
    with pytest.raises(HookError, match=message) as info:
        await runner.run_xml("before_vm_start", DOMAIN_XML, custom=custom)
    assert "50_extnet (exit code 2)" in info.value.message


async def test_extnet_on_a_vm_without_nics_fails_clearly(root, runner):
    install(root, "before_vm_start", "50_extnet", "extnet/extnet.py")
    bare = "<domain type='kvm'><name>x</name><devices><disk/></devices></domain>"
    with pytest.raises(HookError, match="the VM has no network interface"):
        await runner.run_xml("before_vm_start", bare, custom={"extnet": "n"})


# --- qemu_cmdline ---------------------------------------------------------------------


async def test_qemu_cmdline_appends_arguments_in_the_qemu_namespace(root, runner):
    install(root, "before_vm_start", "50_qemu_cmdline", "qemu_cmdline/qemu_cmdline.py")
    args = ["-device", "pvpanic", "-global", "kvm-pit.lost_tick_policy=discard"]
    out = await runner.run_xml(
        "before_vm_start", DOMAIN_XML, custom={"qemu_cmdline": json.dumps(args)}
    )
    domain = etree.fromstring(out)
    values = [a.get("value") for a in domain.iterfind(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    assert values == args
    assert domain.findtext("name") == "hooked-vm"
    assert domain.find("metadata") is not None, "the rest of the domain is kept"


async def test_qemu_cmdline_extends_an_existing_commandline_under_its_own_prefix(root, runner):
    install(root, "before_vm_start", "50_qemu_cmdline", "qemu_cmdline/qemu_cmdline.py")
    xml = (
        f"<domain type='kvm' xmlns:q='{QEMU_NS}'><name>x</name>"
        "<q:commandline><q:arg value='-S'/><q:env name='A' value='1'/></q:commandline>"
        "</domain>"
    )
    out = await runner.run_xml("before_vm_start", xml, custom={"qemu_cmdline": '["-nodefaults"]'})
    commandlines = etree.fromstring(out).findall(f"{{{QEMU_NS}}}commandline")
    assert len(commandlines) == 1
    children = [(etree.QName(c).localname, c.get("value")) for c in commandlines[0]]
    assert children == [("arg", "-S"), ("arg", "-nodefaults"), ("env", "1")]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-device pvpanic", "not JSON"),
        ('{"a": 1}', "expected a JSON list of strings, got dict"),
        ('["-m", null]', "None is not a string"),
    ],
)
async def test_qemu_cmdline_bad_property_fails_the_start(root, runner, value, message):
    install(root, "before_vm_start", "50_qemu_cmdline", "qemu_cmdline/qemu_cmdline.py")
    with pytest.raises(HookError, match=message):
        await runner.run_xml("before_vm_start", DOMAIN_XML, custom={"qemu_cmdline": value})


async def test_both_examples_chain_on_one_start(root, runner):
    install(root, "before_vm_start", "50_extnet", "extnet/extnet.py")
    install(root, "before_vm_start", "60_qemu_cmdline", "qemu_cmdline/qemu_cmdline.py")
    out = await runner.run_xml(
        "before_vm_start",
        DOMAIN_XML,
        custom={"extnet": "ovs-net", "qemu_cmdline": '["-device", "pvpanic"]'},
    )
    domain = etree.fromstring(out)
    assert domain.find("devices/interface/source").get("network") == "ovs-net"
    assert domain.find(f"{{{QEMU_NS}}}commandline") is not None


async def test_hooked_domain_is_accepted_by_libvirt(root, runner):
    libvirt = pytest.importorskip("libvirt")
    install(root, "before_vm_start", "50_extnet", "extnet/extnet.py")
    install(root, "before_vm_start", "60_qemu_cmdline", "qemu_cmdline/qemu_cmdline.py")
    out = await runner.run_xml(
        "before_vm_start",
        DOMAIN_XML,
        custom={"extnet": "default", "qemu_cmdline": '["-device", "pvpanic"]'},
    )
    conn = libvirt.open("test:///default")
    try:
        dom = conn.createXML(out, 0)
        live = etree.fromstring(dom.XMLDesc(0))
        assert live.find("devices/interface").get("type") == "network"
        assert live.find("devices/interface/source").get("network") == "default"
        dom.destroy()
    finally:
        conn.close()


async def test_worked_example_of_the_hook_authors_guide_runs(root, runner):
    guide = (HOOKING_PATH.parent / "docs" / "hooks.md").read_text()
    code = guide.split("```python\n", 1)[1].split("```", 1)[0]
    path = root / "before_vm_start" / "50_hugepages_1g"
    path.parent.mkdir(parents=True)
    path.write_text(code)
    path.chmod(0o755)
    assert await runner.run_xml("before_vm_start", DOMAIN_XML) == DOMAIN_XML
    if Path("/sys/kernel/mm/hugepages/hugepages-1048576kB").is_dir():
        out = await runner.run_xml("before_vm_start", DOMAIN_XML, custom={"hugepages_1g": "1"})
        assert etree.fromstring(out).find("memoryBacking/hugepages/page").get("unit") == "GiB"
    else:
        with pytest.raises(HookError, match=r"50_hugepages_1g \(exit code 2\): .* no 1 GiB"):
            await runner.run_xml("before_vm_start", DOMAIN_XML, custom={"hugepages_1g": "1"})
