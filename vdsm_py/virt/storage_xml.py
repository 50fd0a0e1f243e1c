"""How a domain definition names the host's storage: drives on volumes and lease devices.

Owns the vocabulary virt and storage share (:class:`DriveRef`, :class:`LeaseRef`,
:class:`LeaseTarget`, :class:`PreparedDrive`) and reading and writing those parts of a
definition, in both of ``VM.create``'s forms:

- a drive is a volume when its metadata names ``domainID``/``imageID``/``volumeID``
  (VDSM's keys); it is *exclusive* (it takes the volume's lease while the VM runs) when its
  ``shared`` is ``exclusive`` and it is neither read-only nor ``<shareable/>``, or when a
  ``<lease>`` device names its volume;
- a ``<lease>`` device is a VM lease (in the domain's ``xleases``; the plain spec's
  ``{type: lease, sd_id, lease_id}``) or a drive's volume lease, which VDSM writes as
  ``<lease><key>volUUID</key><lockspace>sdUUID</lockspace><target offset="0"
  path=".../volUUID.lease"/></lease>``. The engine may send either with the
  ``LEASE-PATH``/``LEASE-OFFSET`` placeholders as the target; they are replaced here.

XML is changed with lxml element calls only. No I/O, no storage calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lxml import etree

from vdsm_py.errors import invalid_parameter, missing_parameter
from vdsm_py.virt.fields import uuid_field
from vdsm_py.virt.metadata import DeviceMeta, VmMetadata
from vdsm_py.virt.spec import SHARED_EXCLUSIVE

LEASE_PATH_PLACEHOLDER = "LEASE-PATH"
LEASE_OFFSET_PLACEHOLDER = "LEASE-OFFSET"
STORAGE_KEYS = ("domainID", "imageID", "volumeID")


@dataclass(frozen=True, slots=True)
class LeaseRef:
    """A lease: a VM lease in ``xleases`` (``sd_id``/``lease_id``), or, with ``image_id``,
    the volume lease of volume ``lease_id`` of that image (its ``.lease`` file)."""

    sd_id: str
    lease_id: str
    image_id: str | None = None

    @property
    def is_volume(self) -> bool:
        return self.image_id is not None

    def describe(self) -> str:
        return f"volume lease {self}" if self.is_volume else f"VM lease {self}"

    def __str__(self) -> str:
        if self.image_id is not None:
            return f"{self.sd_id}/{self.image_id}/{self.lease_id}"
        return f"{self.sd_id}:{self.lease_id}"


@dataclass(frozen=True, slots=True)
class DriveRef:
    """A VM disk that is a volume of a storage domain (VDSM's drive keys)."""

    domain_id: str
    image_id: str
    volume_id: str
    pool_id: str | None = None

    def lease_ref(self) -> LeaseRef:
        """The volume's own lease (resource = the volume, lockspace = its domain)."""
        return LeaseRef(self.domain_id, self.volume_id, self.image_id)

    def __str__(self) -> str:
        return f"{self.domain_id}/{self.image_id}/{self.volume_id}"


@dataclass(frozen=True, slots=True)
class LeaseTarget:
    path: str
    offset: int


@dataclass(frozen=True, slots=True)
class PreparedDrive:
    path: str
    format: str  # qemu's name: "raw" or "qcow2"
    lease: LeaseTarget | None = None  # the volume's lease (its .lease file)


# -- reading a definition --------------------------------------------------------------------


@dataclass
class Drive:
    name: str
    ref: DriveRef
    element: etree._Element
    exclusive: bool = False


@dataclass
class Lease:
    ref: LeaseRef
    element: etree._Element


def drive_ref(values: Mapping[str, object], where: str) -> DriveRef | None:
    present = [k for k in STORAGE_KEYS if values.get(k)]
    if not present:
        return None
    if len(present) != len(STORAGE_KEYS):
        missing = next(k for k in STORAGE_KEYS if k not in present)
        raise invalid_parameter(f"{where}.{missing}", "a storage drive needs domainID, "
                                "imageID and volumeID")
    pool = values.get("poolID")
    return DriveRef(
        domain_id=uuid_field(values["domainID"], f"{where}.domainID"),
        image_id=uuid_field(values["imageID"], f"{where}.imageID"),
        volume_id=uuid_field(values["volumeID"], f"{where}.volumeID"),
        pool_id=uuid_field(pool, f"{where}.poolID") if pool else None,
    )


def wants_exclusive(values: Mapping[str, object], el: etree._Element | None) -> bool:
    """``shared: exclusive`` on a drive that is neither read-only nor shareable."""
    if str(values.get("shared") or "").strip().lower() != SHARED_EXCLUSIVE:
        return False
    return el is None or (el.find("readonly") is None and el.find("shareable") is None)


def storage_drives(root: etree._Element, meta: VmMetadata) -> list[Drive]:
    """The disks of ``root`` whose metadata names a volume (exclusive ones marked)."""
    leased = {((el.findtext("lockspace") or "").strip(), (el.findtext("key") or "").strip())
              for el in root.iterfind("devices/lease")}
    out: list[Drive] = []
    for el in root.iterfind("devices/disk"):
        target = el.find("target")
        name = target.get("dev", "") if target is not None else ""
        dev = meta.disk(name) if name else None
        if dev is None:
            continue
        ref = drive_ref(dev.values, f"disk {name}")
        if ref is None:
            continue
        exclusive = (ref.domain_id, ref.volume_id) in leased or wants_exclusive(dev.values, el)
        if exclusive and any(d.exclusive and d.ref.volume_id == ref.volume_id for d in out):
            raise invalid_parameter(f"disk {name}.volumeID",
                                    f"volume {ref.volume_id} is already an exclusive drive")
        out.append(Drive(name, ref, el, exclusive))
    return out


def lease_devices(root: etree._Element) -> list[Lease]:
    out = []
    for el in root.iterfind("devices/lease"):
        key = (el.findtext("key") or "").strip()
        lockspace = (el.findtext("lockspace") or "").strip()
        ref = LeaseRef(uuid_field(lockspace, "lease.lockspace (sd_id)"),
                       uuid_field(key, "lease.key (lease_id)"))
        out.append(Lease(ref, el))
    return out


def lease_elements(root: etree._Element, drive: DriveRef) -> list[etree._Element]:
    """The ``<lease>`` devices that are the drive's volume lease."""
    return [el for el in root.iterfind("devices/lease")
            if (el.findtext("lockspace") or "").strip() == drive.domain_id
            and (el.findtext("key") or "").strip() == drive.volume_id]


def references_storage(root: etree._Element, meta: VmMetadata) -> bool:
    """Cheap check: does this definition need the storage at all?"""
    return root.find("devices/lease") is not None or meta_references_storage(meta)


def meta_references_storage(meta: VmMetadata) -> bool:
    """Whether a VM's metadata names volumes or leases (what recovery must take again)."""
    for dev in meta.devices:
        kind = dev.attrs.get("devtype")
        if kind == "lease" or (kind == "disk" and any(dev.values.get(k) for k in STORAGE_KEYS)):
            return True
    return False


# -- writing a definition ----------------------------------------------------------------


def _lease(key: str, lockspace: str, path: str, offset: str) -> etree._Element:
    el = etree.Element("lease")
    etree.SubElement(el, "key").text = key
    etree.SubElement(el, "lockspace").text = lockspace
    etree.SubElement(el, "target", path=path, offset=offset)
    return el


def lease_element(ref: LeaseRef) -> etree._Element:
    """A VM lease's ``<lease>`` whose target is still the placeholders the engine sends."""
    return _lease(ref.lease_id, ref.sd_id,
                  f"{LEASE_PATH_PLACEHOLDER}:{ref.lease_id}:{ref.sd_id}",
                  f"{LEASE_OFFSET_PLACEHOLDER}:{ref.lease_id}:{ref.sd_id}")


def volume_lease_element(drive: DriveRef, target: LeaseTarget) -> etree._Element:
    """A drive's volume lease as VDSM writes it: key = volume, lockspace = its domain."""
    return _lease(drive.volume_id, drive.domain_id, target.path, str(target.offset))


def add_device(root: etree._Element, el: etree._Element) -> None:
    devices = root.find("devices")
    if devices is None:
        devices = etree.SubElement(root, "devices")
    devices.append(el)


def set_drive_source(el: etree._Element, prepared: PreparedDrive) -> None:
    """The prepared path and format into a ``<disk>`` (a file disk from now on)."""
    el.set("type", "file")
    driver = el.find("driver")
    if driver is None:
        driver = etree.Element("driver", name="qemu")
        el.insert(0, driver)
    driver.set("type", prepared.format)
    source = el.find("source")
    if source is None:
        source = etree.Element("source")
        driver.addnext(source)
    for attr in ("dev", "file", "name", "protocol"):
        source.attrib.pop(attr, None)
    source.set("file", prepared.path)


def set_lease_target(el: etree._Element, target: LeaseTarget) -> None:
    tgt = el.find("target")
    if tgt is None:
        tgt = etree.SubElement(el, "target")
    tgt.set("path", target.path)
    tgt.set("offset", str(target.offset))


# -- metadata ------------------------------------------------------------------------------


def lease_meta(ref: LeaseRef) -> DeviceMeta:
    return DeviceMeta(attrs={"devtype": "lease", "name": ref.lease_id},
                      values={"sd_id": ref.sd_id, "lease_id": ref.lease_id})


def meta_lease(meta: VmMetadata, ref: LeaseRef) -> DeviceMeta | None:
    for dev in meta.devices:
        if dev.attrs.get("devtype") == "lease" and dev.values.get("lease_id") == ref.lease_id \
                and dev.values.get("sd_id") == ref.sd_id:
            return dev
    return None


# -- the plain spec ------------------------------------------------------------------------


def plain_leases(params: Mapping[str, Any]) -> list[LeaseRef]:
    """The ``lease`` devices of a plain spec (``vmParams.devices``), checked."""
    devices = params.get("devices")
    out: list[LeaseRef] = []
    if not isinstance(devices, list):
        return out
    for i, dev in enumerate(devices):
        if isinstance(dev, Mapping) and dev.get("type") == "lease":
            where = f"vmParams.devices[{i}]"
            for key in ("sd_id", "lease_id"):
                if not dev.get(key):
                    raise missing_parameter(f"{where}.{key}")
            out.append(LeaseRef(uuid_field(dev["sd_id"], f"{where}.sd_id"),
                                uuid_field(dev["lease_id"], f"{where}.lease_id")))
    if len(set(out)) != len(out):
        raise invalid_parameter("vmParams.devices", "a lease is given twice")
    return out


def add_leases(root: etree._Element, meta: VmMetadata, leases: Iterable[LeaseRef]) -> None:
    """Placeholder ``<lease>`` devices (and their metadata) for a plain spec's leases."""
    for ref in leases:
        add_device(root, lease_element(ref))
        meta.devices.append(lease_meta(ref))
