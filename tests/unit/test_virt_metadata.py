"""Our <metadata>: what survives a daemon restart, round-tripped through XML."""

from __future__ import annotations

from lxml import etree

from vdsm_py.virt import metadata
from vdsm_py.virt.metadata import DeviceMeta, VmMetadata


def roundtrip(meta: VmMetadata) -> VmMetadata:
    return metadata.from_element(etree.fromstring(metadata.to_xml(meta).encode()))


def test_typed_values_custom_and_devices_survive_a_round_trip():
    meta = VmMetadata(
        values={"launchPaused": True, "memGuaranteedSize": 512, "startTime": 1700000000.25,
                "note": "a<b>&c"},
        custom={"team": "blue & <green>"},
        devices=[DeviceMeta(attrs={"mac_address": "00:1a:4a:00:00:01"},
                            values={"network": "ovirtmgmt"}, custom={"qos": "1"}),
                 DeviceMeta(attrs={"devtype": "disk", "name": "vda"},
                            values={"imageID": "abc"})],
    )
    back = roundtrip(meta)
    assert back.values == meta.values
    assert back.custom == meta.custom
    assert back.nic("00:1A:4A:00:00:01").values == {"network": "ovirtmgmt"}
    assert back.nic("00:1a:4a:00:00:01").custom == {"qos": "1"}
    assert back.disk("vda").values == {"imageID": "abc"}
    assert back.get_bool("launchPaused") and back.get_int("memGuaranteedSize") == 512


def test_elements_we_do_not_know_are_kept_verbatim():
    el = etree.fromstring(
        f"<ovirt-vm:vm xmlns:ovirt-vm='{metadata.NS}'>"
        "<ovirt-vm:snapshot><ovirt-vm:id>1</ovirt-vm:id></ovirt-vm:snapshot>"
        "<ovirt-vm:resumeBehavior>auto_resume</ovirt-vm:resumeBehavior></ovirt-vm:vm>")
    meta = metadata.from_element(el)
    assert meta.values == {"resumeBehavior": "auto_resume"}
    again = etree.fromstring(metadata.to_xml(meta).encode())
    assert again.findtext(f"{metadata.q('snapshot')}/{metadata.q('id')}") == "1"


def test_store_puts_metadata_after_the_uuid_and_replaces_the_old_one():
    dom = etree.fromstring("<domain><name>x</name><uuid>u</uuid><memory>1</memory></domain>")
    metadata.store(dom, VmMetadata(values={"a": 1}))
    metadata.store(dom, VmMetadata(values={"a": 2}))
    assert [c.tag for c in dom] == ["name", "uuid", "metadata", "memory"]
    assert len(dom.find("metadata")) == 1
    assert metadata.from_domain(dom).values == {"a": 2}


def test_a_domain_without_our_metadata_has_none():
    assert metadata.from_domain(etree.fromstring("<domain><metadata/></domain>")) is None


ENGINE_XML = (
    f"<domain><name>x</name><uuid>u</uuid><metadata>"
    f"<ovirt-vm:vm xmlns:ovirt-vm='{metadata.NS}'>"
    "<ovirt-vm:launchPaused type='bool'>false</ovirt-vm:launchPaused>"
    "<ovirt-vm:memGuaranteedSize type='int'>512</ovirt-vm:memGuaranteedSize>"
    "<ovirt-vm:note>old</ovirt-vm:note>"
    "<ovirt-vm:custom><ovirt-vm:team>blue</ovirt-vm:team></ovirt-vm:custom>"
    "<ovirt-vm:device mac_address='00:1a:4a:00:00:01'>"
    "<ovirt-vm:network>ovirtmgmt</ovirt-vm:network></ovirt-vm:device>"
    "<ovirt-vm:snapshot><ovirt-vm:id>1</ovirt-vm:id></ovirt-vm:snapshot>"
    "</ovirt-vm:vm></metadata><memory>1</memory></domain>"
)


def _changes(meta: VmMetadata) -> None:
    meta.values["startTime"] = 1700000000.5  # added
    meta.values["launchPaused"] = True  # changed
    meta.values["memGuaranteedSize"] = True  # same truth, other type
    del meta.values["note"]  # removed


def test_storing_over_the_parsed_element_gives_what_a_full_rebuild_gives():
    # VM.create's usual case: the engine's metadata plus a start time, written over the
    # element it came in (metadata.store's ``held``), must read back like a full rebuild.
    results = []
    for held in (True, False):
        dom = etree.fromstring(ENGINE_XML)
        meta = metadata.from_domain(dom)
        parsed = metadata.copy_of(meta) if held else None
        _changes(meta)
        metadata.store(dom, meta, parsed)
        results.append(metadata.from_domain(etree.fromstring(etree.tostring(dom))))
    partial, full = results
    assert partial.values == full.values == {
        "launchPaused": True, "memGuaranteedSize": True, "startTime": 1700000000.5}
    assert partial.custom == full.custom == {"team": "blue"}
    assert partial.devices == full.devices
    assert [etree.QName(e).localname for e in partial.extra] == ["snapshot"]


def test_storing_over_the_parsed_element_notices_every_kind_of_change():
    for change in (
        lambda m: m.custom.update(team="red"),
        lambda m: m.devices[0].values.update(network="storage"),
        lambda m: m.devices.append(DeviceMeta(attrs={"devtype": "disk", "name": "vda"})),
        lambda m: m.extra.clear(),
    ):
        dom = etree.fromstring(ENGINE_XML)
        meta = metadata.from_domain(dom)
        parsed = metadata.copy_of(meta)
        change(meta)
        metadata.store(dom, meta, parsed)
        back = metadata.from_domain(etree.fromstring(etree.tostring(dom)))
        assert (back.custom, back.devices, len(back.extra)) == (
            meta.custom, meta.devices, len(meta.extra))
