"""Storage drives and VM leases in the domain XML (both VM.create forms), and the per-VM
bookkeeping that gives every prepared drive and lease back exactly once."""

from __future__ import annotations

import asyncio

import pytest
from lxml import etree

from vdsm_py.config import VirtConfig
from vdsm_py.errors import (
    InvalidParameter,
    MissingParameter,
    VdsmError,
    VMCreateError,
    VmLeaseHeld,
)
from vdsm_py.virt import domxml, storage_drives, storage_xml
from vdsm_py.virt.spec import parse_vm_params
from vdsm_py.virt.storage_xml import DriveRef, LeaseRef, LeaseTarget, PreparedDrive

VM = "9a1b2c3d-0000-4000-8000-000000000001"
SD = "9b1b2c3d-0000-4000-8000-000000000002"
SP = "9c1b2c3d-0000-4000-8000-000000000003"
IMG = "9d1b2c3d-0000-4000-8000-000000000004"
VOL = "9e1b2c3d-0000-4000-8000-000000000005"
IMG2 = "9d1b2c3d-0000-4000-8000-000000000006"
VOL2 = "9e1b2c3d-0000-4000-8000-000000000007"


def drive(img: str = IMG, vol: str = VOL, **extra: object) -> dict[str, object]:
    return {"type": "disk", "device": "disk", "domainID": SD, "poolID": SP, "imageID": img,
            "volumeID": vol, "format": "cow", "iface": "virtio", **extra}


def plain(*devices: dict[str, object]) -> domxml.Definition:
    params = {"vmName": "v", "memSize": 64, "devices": list(devices)}
    defn = domxml.build(parse_vm_params(VM, params), VirtConfig())
    storage_xml.add_leases(defn.root, defn.meta, storage_xml.plain_leases(params))
    return defn


class Storage:
    """An in-memory storage that records calls; ``fail`` injects one failure by name."""

    def __init__(self, fail: dict[str, VdsmError] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.exclusive: list[str] = []  # drives prepared as exclusive
        self.fail = fail or {}
        self.lost: set[str] = set()  # VMs whose leases are lost
        self.on_lost: object = None

    def _call(self, what: str, ref: object) -> None:
        self.calls.append((what, str(ref)))
        if what in self.fail:
            raise self.fail.pop(what)

    async def prepare(self, drive: DriveRef, *, exclusive: bool = False) -> PreparedDrive:
        self._call("prepare", drive)
        if exclusive:
            self.exclusive.append(str(drive))
        return PreparedDrive(f"/run/storage/{drive.domain_id}/{drive.image_id}/"
                             f"{drive.volume_id}", "qcow2", LeaseTarget(
                                 f"/data/{drive.domain_id}/images/{drive.image_id}/"
                                 f"{drive.volume_id}.lease", 0))

    async def teardown(self, drive: DriveRef) -> None:
        self._call("teardown", drive)

    async def lease_info(self, lease: LeaseRef) -> LeaseTarget:
        self._call("lease_info", lease)
        return LeaseTarget(f"/data/{lease.sd_id}/dom_md/xleases", 3 << 20)

    async def acquire_vm_leases(self, vm_id: str,
                                leases: list[tuple[LeaseRef, LeaseTarget]]) -> None:
        self._call("acquire", ",".join(str(ref) for ref, _ in leases))

    async def adopt_vm_leases(self, vm_id: str,
                              leases: list[tuple[LeaseRef, LeaseTarget]]) -> None:
        self._call("adopt", ",".join(str(ref) for ref, _ in leases))

    async def release_vm_leases(self, vm_id: str) -> None:
        self._call("release", vm_id)

    async def release_lease(self, vm_id: str, lease: LeaseRef) -> None:
        self._call("release_lease", lease)

    def vm_started(self, vm_id: str) -> bool:
        self.calls.append(("started", vm_id))
        return vm_id not in self.lost

    async def reap_vm_leases(self, running: object) -> None:
        self.calls.append(("reap", ",".join(sorted(running))))  # type: ignore[call-overload]

    def on_lease_lost(self, callback: object) -> None:
        self.on_lost = callback


def test_a_plain_disk_on_storage_needs_no_path_and_keeps_its_ids_in_metadata():
    defn = plain(drive())
    (disk,) = defn.root.iterfind("devices/disk")
    assert disk.find("source") is None  # filled in by the prepare, before the start
    (ref,) = storage_xml.storage_drives(defn.root, defn.meta)
    assert ref.name == "vda" and ref.ref == DriveRef(SD, IMG, VOL, SP)


def test_a_plain_disk_without_path_or_volume_is_still_refused():
    with pytest.raises(MissingParameter, match=r"devices\[0\]\.path"):
        plain({"type": "disk", "device": "disk"})


def test_an_incomplete_or_non_uuid_storage_reference_is_refused_naming_the_field():
    defn = plain({**drive(), "volumeID": None})
    with pytest.raises(InvalidParameter, match="disk vda.volumeID"):
        storage_drives.VmStorage(None).check(defn.root, defn.meta)
    with pytest.raises(InvalidParameter, match=r"devices\[0\]\.imageID"):
        plain(drive(img="../../etc"))
    with pytest.raises(InvalidParameter, match=r"devices\[1\]\.sd_id"):
        plain(drive(), {"type": "lease", "sd_id": "../x", "lease_id": VM})
    with pytest.raises(MissingParameter, match=r"devices\[0\]\.lease_id"):
        plain({"type": "lease", "sd_id": SD})


def test_plain_lease_devices_become_placeholder_leases_with_metadata():
    defn = plain({"type": "lease", "device": "lease", "sd_id": SD, "lease_id": VM})
    (lease,) = defn.root.iterfind("devices/lease")
    assert lease.findtext("key") == VM and lease.findtext("lockspace") == SD
    assert lease.find("target").get("path") == f"LEASE-PATH:{VM}:{SD}"
    assert lease.find("target").get("offset") == f"LEASE-OFFSET:{VM}:{SD}"
    (meta,) = [d for d in defn.meta.devices if d.attrs.get("devtype") == "lease"]
    assert meta.values == {"sd_id": SD, "lease_id": VM}


async def test_attach_writes_prepared_paths_formats_and_lease_targets_into_the_xml():
    defn = plain(drive(), drive(IMG2, VOL2, format="raw"),
                 {"type": "lease", "sd_id": SD, "lease_id": VM})
    storage = Storage()
    vms = storage_drives.VmStorage(storage)
    await vms.attach(VM, defn.root, defn.meta)
    disks = list(defn.root.iterfind("devices/disk"))
    assert [d.find("source").get("file") for d in disks] == [
        f"/run/storage/{SD}/{IMG}/{VOL}", f"/run/storage/{SD}/{IMG2}/{VOL2}"]
    assert [d.find("driver").get("type") for d in disks] == ["qcow2", "qcow2"]  # the volume's
    assert all(d.get("type") == "file" for d in disks)
    target = defn.root.find("devices/lease/target")
    assert (target.get("path"), target.get("offset")) == (f"/data/{SD}/dom_md/xleases",
                                                          str(3 << 20))
    # the XML that is started carries it all, and our metadata knows the lease for recovery
    root = etree.fromstring(defn.xml())
    assert root.find("devices/lease/target").get("offset") == str(3 << 20)
    assert [c[0] for c in storage.calls] == ["prepare", "prepare", "lease_info", "acquire"]
    assert vms.holds(VM)

    await vms.detach(VM)
    await vms.detach(VM)  # once only
    assert [c[0] for c in storage.calls[4:]] == ["release", "teardown", "teardown"]
    assert not vms.holds(VM)


async def test_xml_form_drives_are_found_by_metadata_and_placeholders_replaced():
    xml = f"""<domain type='qemu'><name>x</name><uuid>{VM}</uuid>
      <metadata><ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
        <ovirt-vm:device devtype="disk" name="sda"><ovirt-vm:domainID>{SD}</ovirt-vm:domainID>
          <ovirt-vm:imageID>{IMG}</ovirt-vm:imageID><ovirt-vm:poolID>{SP}</ovirt-vm:poolID>
          <ovirt-vm:volumeID>{VOL}</ovirt-vm:volumeID></ovirt-vm:device>
      </ovirt-vm:vm></metadata>
      <devices>
        <disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/>
          <source file='/rhev/data-center/{SP}/{SD}/images/{IMG}/{VOL}'/>
          <target dev='sda' bus='scsi'/></disk>
        <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>
        <lease><key>{VM}</key><lockspace>{SD}</lockspace>
          <target offset="LEASE-OFFSET:{VM}:{SD}" path="LEASE-PATH:{VM}:{SD}"/></lease>
      </devices></domain>"""
    defn = domxml.parse(xml, VM)
    storage = Storage()
    await storage_drives.VmStorage(storage).attach(VM, defn.root, defn.meta)
    disk = defn.root.find("devices/disk")
    assert disk.find("source").get("file") == f"/run/storage/{SD}/{IMG}/{VOL}"
    assert disk.find("driver").get("type") == "qcow2" and disk.find("driver").get("cache") == "none"
    assert defn.root.find("devices/lease/target").get("path") == f"/data/{SD}/dom_md/xleases"
    assert storage.calls == [("prepare", f"{SD}/{IMG}/{VOL}"), ("lease_info", f"{SD}:{VM}"),
                             ("acquire", f"{SD}:{VM}")]
    assert storage_xml.meta_lease(defn.meta, LeaseRef(SD, VM)) is not None


async def test_a_held_lease_gives_back_everything_taken_before_it():
    defn = plain(drive(), {"type": "lease", "sd_id": SD, "lease_id": VM})
    storage = Storage(fail={"acquire": VmLeaseHeld("held by another host")})
    vms = storage_drives.VmStorage(storage)
    with pytest.raises(VMCreateError, match=f"cannot acquire VM lease {SD}:{VM}: held by "
                       "another host \\(code 651\\)") as err:
        await vms.attach(VM, defn.root, defn.meta)
    assert err.value.data == {"storageCode": 651}
    assert [c[0] for c in storage.calls] == ["prepare", "lease_info", "acquire", "teardown"]
    assert not vms.holds(VM)


async def test_a_failed_prepare_tears_down_the_drives_prepared_before_it():
    defn = plain(drive(), drive(IMG2, VOL2))
    storage = Storage()
    real_prepare = storage.prepare

    async def second_fails(ref: DriveRef, *, exclusive: bool = False) -> PreparedDrive:
        if ref.image_id == IMG2:
            storage.fail["prepare"] = VdsmError("Image does not exist in domain")
        return await real_prepare(ref, exclusive=exclusive)

    storage.prepare = second_fails  # type: ignore[method-assign]
    with pytest.raises(VMCreateError, match=f"cannot prepare drive vdb \\({SD}/{IMG2}/{VOL2}\\)"):
        await storage_drives.VmStorage(storage).attach(VM, defn.root, defn.meta)
    assert storage.calls[-1] == ("teardown", f"{SD}/{IMG}/{VOL}")


async def test_a_host_without_storage_refuses_storage_drives_but_not_plain_vms():
    vms = storage_drives.VmStorage(None)
    defn = plain({"type": "disk", "device": "disk", "path": "/var/tmp/a.img"})
    await vms.attach(VM, defn.root, defn.meta)
    assert not vms.holds(VM)
    with pytest.raises(VMCreateError, match="no storage"):
        await vms.attach(VM, plain(drive()).root, plain(drive()).meta)


async def test_concurrent_detach_requests_share_one_give_back():
    defn = plain(drive())
    storage = Storage()
    vms = storage_drives.VmStorage(storage)
    await vms.attach(VM, defn.root, defn.meta)
    first = vms.detach_soon(VM)
    await asyncio.gather(vms.detach(VM), vms.detach(VM))
    assert first is not None and first.done()
    assert [c[0] for c in storage.calls].count("teardown") == 1


async def test_recovery_reacquires_and_reports_a_lease_taken_by_another_host():
    defn = plain(drive(), {"type": "lease", "sd_id": SD, "lease_id": VM})
    storage = Storage()
    assert await storage_drives.VmStorage(storage).adopt(VM, defn.meta)
    assert [c[0] for c in storage.calls] == ["prepare", "lease_info", "adopt"]
    lost = Storage(fail={"adopt": VmLeaseHeld("held")})
    vms = storage_drives.VmStorage(lost)
    assert not await vms.adopt(VM, defn.meta)
    await vms.detach(VM)  # whatever part of its leases it might still hold goes back
    assert [c[0] for c in lost.calls] == ["prepare", "lease_info", "adopt", "release",
                                          "teardown"]


def test_a_disk_needs_a_path_unless_its_caller_prepares_volumes():
    from vdsm_py.virt.spec import parse_disk

    with pytest.raises(MissingParameter, match=r"params\.drive\.path"):
        parse_disk(drive(), "params.drive")
    assert parse_disk(drive(), "x", on_storage_ok=True).path == ""


def test_recovery_looks_for_storage_only_in_vms_that_reference_it():
    assert storage_xml.meta_references_storage(plain(drive()).meta)
    leased = plain({"type": "lease", "sd_id": SD, "lease_id": VM})
    assert storage_xml.meta_references_storage(leased.meta)
    local = plain({"type": "disk", "device": "disk", "path": "/var/tmp/a.img"})
    assert not storage_xml.meta_references_storage(local.meta)


async def test_all_leases_of_a_vm_are_taken_in_one_call_and_given_back_in_one():
    sd2 = "9b1b2c3d-0000-4000-8000-000000000008"
    defn = plain({"type": "lease", "sd_id": SD, "lease_id": VM},
                 {"type": "lease", "sd_id": sd2, "lease_id": VM})
    storage = Storage()
    vms = storage_drives.VmStorage(storage)
    await vms.attach(VM, defn.root, defn.meta)
    assert storage.calls[-1] == ("acquire", f"{SD}:{VM},{sd2}:{VM}")
    await vms.detach(VM)
    assert storage.calls[-1] == ("release", VM)


async def test_a_started_vm_is_guarded_by_its_leases_holder_and_a_lost_holder_is_told():
    storage = Storage()
    lost: list[tuple[str, str]] = []
    vms = storage_drives.VmStorage(storage, on_lost=lambda vm, why: lost.append((vm, why)))
    assert storage.on_lost is not None  # the manager's callback reaches the storage
    defn = plain({"type": "lease", "sd_id": SD, "lease_id": VM})
    await vms.attach(VM, defn.root, defn.meta)
    assert vms.started(VM) and storage.calls[-1] == ("started", VM)
    storage.lost.add(VM)
    assert not vms.started(VM)
    unleased = "9a1b2c3d-0000-4000-8000-0000000000ff"
    assert vms.started(unleased)  # nothing to guard: no call
    assert storage.calls[-1] == ("started", VM)


async def test_recovery_end_tells_storage_which_vms_run_so_the_others_leases_go_back():
    storage = Storage()
    await storage_drives.VmStorage(storage).recovered({VM, "other"})
    assert storage.calls == [("reap", f"{VM},other")]  # the VMs that run
    await storage_drives.VmStorage(None).recovered({VM})  # no storage: nothing to do


async def test_a_vm_that_goes_down_while_its_leases_are_adopted_gives_them_back():
    defn = plain({"type": "lease", "sd_id": SD, "lease_id": VM})
    storage = Storage()
    vms = storage_drives.VmStorage(storage)
    real_adopt = storage.adopt_vm_leases

    async def down_meanwhile(vm_id: str, leases: list[tuple[LeaseRef, LeaseTarget]]) -> None:
        await real_adopt(vm_id, leases)
        await vms.detach(vm_id)  # the VM went Down while its keeper was being adopted

    storage.adopt_vm_leases = down_meanwhile  # type: ignore[method-assign]
    assert await vms.adopt(VM, defn.meta)
    assert [c[0] for c in storage.calls] == ["lease_info", "adopt", "release"]
