"""VM.create's plain vmParams: what is accepted, and 91 naming the field otherwise."""

from __future__ import annotations

import uuid

import pytest

from vdsm_py.errors import InvalidParameter, MissingParameter
from vdsm_py.virt.spec import parse_disk, parse_nic, parse_vm_params

VM_ID = str(uuid.uuid4())


def params(**extra):
    base = {"vmName": "vm1", "memSize": 1024}
    base.update(extra)
    return base


def field_of(exc_info) -> str:
    return exc_info.value.data["param"]


def test_minimal_spec_gets_vdsm_defaults():
    spec = parse_vm_params(VM_ID, params())
    assert (spec.name, spec.mem_mib, spec.vcpus) == ("vm1", 1024, 1)
    assert spec.acpi and spec.kvm and spec.balloon and not spec.launch_paused
    assert spec.nics == () and spec.disks == () and spec.graphics == ()


def test_numbers_and_booleans_may_come_as_strings_as_vdsm_declares_them():
    spec = parse_vm_params(VM_ID, params(memSize="2048", smp="4", smpCoresPerSocket="2",
                                         launchPaused="true", acpiEnable="false"))
    assert (spec.mem_mib, spec.vcpus, spec.cores_per_socket) == (2048, 4, 2)
    assert spec.launch_paused and not spec.acpi


@pytest.mark.parametrize("extra,field", [
    ({"memSize": None}, "vmParams.memSize"),
    ({"vmName": None}, "vmParams.vmName"),
])
def test_missing_required_field_is_named(extra, field):
    with pytest.raises(MissingParameter) as err:
        parse_vm_params(VM_ID, params(**extra))
    assert field_of(err) == field


@pytest.mark.parametrize("extra,field", [
    ({"memSize": "1e3"}, "vmParams.memSize"),
    ({"memSize": -1}, "vmParams.memSize"),
    ({"memSize": True}, "vmParams.memSize"),
    ({"smp": 0}, "vmParams.smp"),
    ({"smp": 6, "smpCoresPerSocket": 4}, "vmParams.smpCoresPerSocket"),
    ({"vmName": "a/b"}, "vmParams.vmName"),
    ({"vmName": "tab\there"}, "vmParams.vmName"),
    ({"vmId": str(uuid.uuid4())}, "vmParams.vmId"),
    ({"kernel": "vmlinuz"}, "vmParams.kernel"),
    ({"boot": "x"}, "vmParams.boot"),
    ({"display": "rdp"}, "vmParams.display"),
    ({"custom": {"has space": "x"}}, "vmParams.custom.has space"),
    ({"custom": {"k": ["list"]}}, "vmParams.custom.k"),
    ({"maxMemSize": 512}, "vmParams.maxMemSize"),
    ({"devices": "disk"}, "vmParams.devices"),
    ({"devices": [{"type": "floppy-drive"}]}, "vmParams.devices[0].type"),
])
def test_invalid_field_is_named_by_its_wire_path(extra, field):
    with pytest.raises(InvalidParameter) as err:
        parse_vm_params(VM_ID, params(**extra))
    assert field_of(err) == field
    assert field in err.value.message


def test_devices_are_split_by_type_in_order():
    spec = parse_vm_params(VM_ID, params(devices=[
        {"type": "interface", "macAddr": "00:1A:4A:16:01:51", "network": "a"},
        {"type": "disk", "path": "/images/root.img", "format": "cow", "iface": "scsi"},
        {"type": "interface", "macAddr": "00:1a:4a:16:01:52", "network": "b",
         "device": "network", "nicModel": "pv", "linkActive": "false"},
        {"type": "graphics", "device": "qxl", "specParams": {"keyMap": "fr"}},
        {"type": "console"},
        {"type": "balloon", "specParams": {"model": "none"}},
    ]))
    assert [n.mac for n in spec.nics] == ["00:1a:4a:16:01:51", "00:1a:4a:16:01:52"]
    assert spec.nics[1].kind == "network" and spec.nics[1].model == "virtio"
    assert not spec.nics[1].link_active
    assert spec.disks[0].format == "qcow2" and spec.disks[0].iface == "scsi"
    assert spec.graphics[0].type == "spice" and spec.graphics[0].keymap == "fr"
    assert spec.console and not spec.balloon


def test_separate_drives_and_nics_lists_are_accepted_but_not_mixed():
    spec = parse_vm_params(VM_ID, params(
        drives=[{"path": "/d.img"}], nics=[{"macAddr": "00:1a:4a:00:00:01", "network": "n"}]))
    assert len(spec.disks) == 1 and len(spec.nics) == 1
    with pytest.raises(InvalidParameter) as err:
        parse_vm_params(VM_ID, params(
            nics=[{"macAddr": "00:1a:4a:00:00:01", "network": "n"}],
            devices=[{"type": "interface", "macAddr": "00:1a:4a:00:00:02", "network": "m"}]))
    assert field_of(err) == "vmParams.nics"


def test_a_mac_used_twice_is_refused_naming_the_second_nic():
    with pytest.raises(InvalidParameter) as err:
        parse_vm_params(VM_ID, params(devices=[
            {"type": "interface", "macAddr": "00:1a:4a:00:00:01", "network": "a"},
            {"type": "disk", "path": "/d"},
            {"type": "interface", "macAddr": "00:1A:4A:00:00:01", "network": "b"},
        ]))
    assert field_of(err) == "vmParams.devices[2].macAddr"


@pytest.mark.parametrize("nic,field", [
    ({"network": "n"}, "nic.macAddr"),
    ({"macAddr": "00:1a:4a:00:00", "network": "n"}, "nic.macAddr"),
    ({"macAddr": "01:00:5e:00:00:01", "network": "n"}, "nic.macAddr"),  # multicast
    ({"macAddr": "00:1a:4a:00:00:01", "network": ""}, "nic.network"),
    ({"macAddr": "00:1a:4a:00:00:01", "network": "n", "nicModel": "ne2k"}, "nic.nicModel"),
    ({"macAddr": "00:1a:4a:00:00:01", "network": "n", "address": {"slot": "0x40"}},
     "nic.address.slot"),
])
def test_nic_fields_are_checked(nic, field):
    with pytest.raises((InvalidParameter, MissingParameter)) as err:
        parse_nic(nic, "nic")
    assert field_of(err) == field


def test_cdrom_may_be_empty_and_defaults_to_a_bus_the_machine_has():
    assert parse_disk({"device": "cdrom"}, "d").iface == "ide"
    assert parse_disk({"device": "cdrom"}, "d", q35=True).iface == "sata"
    with pytest.raises(MissingParameter):
        parse_disk({"device": "disk"}, "d")
    with pytest.raises(InvalidParameter) as err:
        parse_disk({"path": "relative.img"}, "d")
    assert field_of(err) == "d.path"
