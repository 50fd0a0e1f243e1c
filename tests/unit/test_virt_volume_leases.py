"""Volume leases of exclusive drives: the ``<lease>`` they put in the domain XML (VDSM's
shape), which drives take one, and the bookkeeping of drives plugged into and unplugged
from a running VM (everything given back exactly once, whatever fails)."""

from __future__ import annotations

import pytest
from lxml import etree

from tests.unit.test_virt_storage_drives import (
    IMG,
    IMG2,
    SD,
    SP,
    VM,
    VOL,
    VOL2,
    Storage,
    drive,
    plain,
)
from vdsm_py.errors import (
    HotplugDiskError,
    InvalidParameter,
    VMCreateError,
    VmLeaseHeld,
)
from vdsm_py.virt import domxml, spec, storage_drives, storage_xml
from vdsm_py.virt.metadata import DeviceMeta
from vdsm_py.virt.storage_xml import DriveRef, LeaseRef, LeaseTarget

LEASE_FILE = f"/data/{SD}/images/{IMG}/{VOL}.lease"


def test_a_volume_lease_element_has_vdsms_shape():
    el = storage_xml.volume_lease_element(DriveRef(SD, IMG, VOL),
                                             LeaseTarget(LEASE_FILE, 0))
    assert etree.tostring(el).decode() == (
        f'<lease><key>{VOL}</key><lockspace>{SD}</lockspace>'
        f'<target path="{LEASE_FILE}" offset="0"/></lease>')


async def test_an_exclusive_drive_gets_its_volume_lease_in_the_xml_and_takes_it():
    defn = plain(drive(shared="exclusive"), drive(IMG2, VOL2))
    storage = Storage()
    vms = storage_drives.VmStorage(storage)
    await vms.attach(VM, defn.root, defn.meta)
    (lease,) = etree.fromstring(defn.xml()).iterfind("devices/lease")
    assert lease.findtext("key") == VOL and lease.findtext("lockspace") == SD
    assert lease.find("target").attrib == {"path": LEASE_FILE, "offset": "0"}
    assert storage.exclusive == [f"{SD}/{IMG}/{VOL}"]  # the leaf check is asked for
    assert ("acquire", f"{SD}/{IMG}/{VOL}") in storage.calls  # the volume's lease
    assert not any(c[0] == "lease_info" for c in storage.calls)  # not an xleases lease
    # recovery knows the drive holds its lease; no VM lease metadata for it
    assert defn.meta.disk("vda").values["shared"] == "exclusive"
    assert "shared" not in defn.meta.disk("vdb").values
    assert not [d for d in defn.meta.devices if d.attrs.get("devtype") == "lease"]
    await vms.detach(VM)
    assert [c[0] for c in storage.calls][-3:] == ["release", "teardown", "teardown"]


async def test_a_vm_lease_and_a_volume_lease_are_taken_together_and_named_when_refused():
    defn = plain(drive(shared="exclusive"), {"type": "lease", "sd_id": SD, "lease_id": VM})
    storage = Storage(fail={"acquire": VmLeaseHeld("lease held by another host")})
    vms = storage_drives.VmStorage(storage)
    with pytest.raises(VMCreateError, match=f"cannot acquire VM lease {SD}:{VM}, volume "
                       f"lease {SD}/{IMG}/{VOL}: lease held by another host") as err:
        await vms.attach(VM, defn.root, defn.meta)
    assert err.value.code == 9 and err.value.data == {"storageCode": 651}
    assert [c[0] for c in storage.calls][-1] == "teardown" and not vms.holds(VM)


async def test_the_engines_lease_for_a_drive_is_filled_from_the_volume_not_xleases():
    xml = f"""<domain type='qemu'><name>x</name><uuid>{VM}</uuid>
      <metadata><ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
        <ovirt-vm:device devtype="disk" name="vda"><ovirt-vm:domainID>{SD}</ovirt-vm:domainID>
          <ovirt-vm:imageID>{IMG}</ovirt-vm:imageID><ovirt-vm:poolID>{SP}</ovirt-vm:poolID>
          <ovirt-vm:volumeID>{VOL}</ovirt-vm:volumeID>
          <ovirt-vm:shared>exclusive</ovirt-vm:shared></ovirt-vm:device>
      </ovirt-vm:vm></metadata>
      <devices>
        <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
          <target dev='vda' bus='virtio'/></disk>
        <lease><key>{VOL}</key><lockspace>{SD}</lockspace>
          <target offset="LEASE-OFFSET:{VOL}:{SD}" path="LEASE-PATH:{VOL}:{SD}"/></lease>
      </devices></domain>"""
    defn = domxml.parse(xml, VM)
    storage = Storage()
    await storage_drives.VmStorage(storage).attach(VM, defn.root, defn.meta)
    (lease,) = defn.root.iterfind("devices/lease")  # filled in, no second one added
    assert lease.find("target").attrib == {"offset": "0", "path": LEASE_FILE}
    assert storage.calls == [("prepare", f"{SD}/{IMG}/{VOL}"),
                             ("acquire", f"{SD}/{IMG}/{VOL}")]


def test_read_only_and_shareable_drives_take_no_lease():
    defn = plain(drive(shared="exclusive", readonly=True), drive(IMG2, VOL2, shared="shared"))
    drives = storage_xml.storage_drives(defn.root, defn.meta)
    assert [d.exclusive for d in drives] == [False, False]
    disks = list(defn.root.iterfind("devices/disk"))
    assert disks[1].find("shareable") is not None and disks[0].find("shareable") is None


@pytest.mark.parametrize(("value", "expected"), [
    (None, "none"), ("exclusive", "exclusive"), ("EXCLUSIVE", "exclusive"),
    ("shared", "shared"), ("none", "none"), ("true", "shared"), (True, "shared"),
    ("false", "none"), (False, "none")])
def test_shared_takes_vdsms_values_and_the_old_booleans(value, expected):
    assert spec.parse_shared({"shared": value}, "d") == expected


@pytest.mark.parametrize("value", ["transient", "bogus", 3])
def test_transient_and_unknown_shared_values_are_refused_naming_the_field(value):
    with pytest.raises(InvalidParameter, match=r"devices\[0\]\.shared"):
        plain(drive(shared=value))


def test_one_volume_cannot_be_two_exclusive_drives_of_a_vm():
    defn = plain(drive(shared="exclusive"), drive(shared="exclusive"))
    with pytest.raises(InvalidParameter, match="already an exclusive drive"):
        storage_drives.VmStorage(None).check(defn.root, defn.meta)


async def test_recovery_takes_the_volume_leases_of_exclusive_drives_again():
    defn = plain(drive(shared="exclusive"), {"type": "lease", "sd_id": SD, "lease_id": VM})
    storage = Storage()
    assert await storage_drives.VmStorage(storage).adopt(VM, defn.meta)
    assert storage.exclusive == [f"{SD}/{IMG}/{VOL}"]
    assert storage.calls[-1] == ("adopt", f"{SD}/{IMG}/{VOL},{SD}:{VM}")


# -- hot-plug ----------------------------------------------------------------------------


def disk_el() -> etree._Element:
    return etree.fromstring("<disk type='file' device='disk'><target dev='vdb'/></disk>")


async def test_plugging_an_exclusive_drive_prepares_takes_and_guards_and_unplug_undoes():
    storage = Storage()
    vms = storage_drives.VmStorage(storage)
    el = disk_el()
    ref = DriveRef(SD, IMG, VOL)
    lease = await vms.plug(VM, "vdb", ref, el, exclusive=True)
    assert el.find("source").get("file") == f"/run/storage/{SD}/{IMG}/{VOL}"
    assert lease is not None and lease.find("target").get("path") == LEASE_FILE
    assert [c[0] for c in storage.calls] == ["prepare", "acquire", "started"]
    await vms.unplug(VM, ref)
    assert storage.calls[-2:] == [("release_lease", f"{SD}/{IMG}/{VOL}"),
                                  ("teardown", f"{SD}/{IMG}/{VOL}")]
    await vms.detach(VM)  # nothing left to give back
    assert [c[0] for c in storage.calls].count("teardown") == 1
    assert ("release", VM) not in storage.calls


async def test_a_plugged_drive_whose_lease_is_held_elsewhere_leaves_nothing_prepared():
    storage = Storage(fail={"acquire": VmLeaseHeld("lease held by another host")})
    vms = storage_drives.VmStorage(storage)
    with pytest.raises(HotplugDiskError, match="cannot acquire volume lease") as err:
        await vms.plug(VM, "vdb", DriveRef(SD, IMG, VOL), disk_el(), exclusive=True)
    assert err.value.code == 45 and err.value.data == {"storageCode": 651}
    assert [c[0] for c in storage.calls] == ["prepare", "acquire", "teardown"]


async def test_a_plain_plugged_drive_takes_no_lease_and_goes_back_with_the_vm():
    storage = Storage()
    vms = storage_drives.VmStorage(storage)
    assert await vms.plug(VM, "vdb", DriveRef(SD, IMG, VOL), disk_el(), exclusive=False) is None
    await vms.detach(VM)
    assert [c[0] for c in storage.calls] == ["prepare", "teardown"]


async def test_a_vm_that_goes_down_during_a_plug_gives_everything_back_once():
    storage = Storage()
    vms = storage_drives.VmStorage(storage)
    defn = plain({"type": "lease", "sd_id": SD, "lease_id": VM})
    await vms.attach(VM, defn.root, defn.meta)
    real = storage.acquire_vm_leases

    async def down_meanwhile(vm_id: str, leases: list[tuple[LeaseRef, LeaseTarget]]) -> None:
        await real(vm_id, leases)
        await vms.detach(vm_id)  # the VM went Down while the drive's lease was taken

    storage.acquire_vm_leases = down_meanwhile  # type: ignore[method-assign]
    with pytest.raises(HotplugDiskError, match="went down"):
        await vms.plug(VM, "vdb", DriveRef(SD, IMG, VOL), disk_el(), exclusive=True)
    kinds = [c[0] for c in storage.calls]
    assert kinds.count("teardown") == 1 and ("release_lease", f"{SD}/{IMG}/{VOL}") in \
        storage.calls and ("release", VM) in storage.calls
    assert not vms.holds(VM)


def test_set_shared_keeps_the_metadata_truthful_for_recovery():
    meta = DeviceMeta(attrs={"devtype": "disk", "name": "vda"}, values={"shared": "exclusive"})
    storage_drives.set_shared(meta, False)  # e.g. read-only: no lease taken
    assert meta.values["shared"] == "none"
    storage_drives.set_shared(meta, True)
    assert meta.values["shared"] == "exclusive"


def test_device_metadata_is_stored_in_a_form_libvirt_takes():
    import libvirt

    from vdsm_py.virt import devices, metadata

    meta = metadata.VmMetadata()
    meta.devices.append(DeviceMeta(attrs={"devtype": "disk", "name": "vdb"},
                                   values={"domainID": SD, "shared": "exclusive"}))
    conn = libvirt.open("test:///default")
    try:
        dom = conn.lookupByName("test")
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, devices._meta_xml(meta),
                        metadata.PREFIX, metadata.NS, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        stored = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, metadata.NS,
                              libvirt.VIR_DOMAIN_AFFECT_LIVE)
    finally:
        conn.close()
    back = metadata.from_element(etree.fromstring(stored))
    assert back.disk("vdb").values == {"domainID": SD, "shared": "exclusive"}
