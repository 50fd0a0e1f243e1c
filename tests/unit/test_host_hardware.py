"""Host.getHardwareInfo's domain: DMI files mapped to VDSM's keys, missing and unreadable
files left out, the first reading kept."""

from __future__ import annotations

import logging
from pathlib import Path

from vdsm_py.host.hardware import DMI_FILES, HardwareInfo, read_dmi
from vdsm_py.host.paths import HostPaths

FULL = {
    "sys_vendor": "Dell Inc.",
    "product_name": "PowerEdge R740",
    "product_version": "1.2",
    "product_serial": "ABC1234",
    "product_uuid": "4c4c4544-0042-3510-8051-b4c04f563232",
    "product_family": "PowerEdge",
}


def dmi_tree(tmp_path: Path, files: dict[str, str]) -> HostPaths:
    paths = HostPaths(sys=tmp_path / "sys")
    paths.dmi.mkdir(parents=True)
    for name, value in files.items():
        (paths.dmi / name).write_text(value + "\n")
    return paths


def test_every_dmi_file_maps_to_its_vdsm_key(tmp_path):
    info = read_dmi(dmi_tree(tmp_path, FULL))
    assert info == {
        "systemManufacturer": "Dell Inc.",
        "systemProductName": "PowerEdge R740",
        "systemVersion": "1.2",
        "systemSerialNumber": "ABC1234",
        "systemUUID": "4c4c4544-0042-3510-8051-b4c04f563232",
        "systemFamily": "PowerEdge",
    }


def test_missing_and_not_specified_fields_are_left_out(tmp_path):
    paths = dmi_tree(tmp_path, {"sys_vendor": "QEMU", "product_name": "Standard PC",
                                "product_version": "Not Specified", "product_family": ""})
    assert read_dmi(paths) == {"systemManufacturer": "QEMU",
                               "systemProductName": "Standard PC"}


def test_unreadable_file_is_left_out_and_logged(tmp_path, caplog):
    paths = dmi_tree(tmp_path, {"sys_vendor": "QEMU"})
    # A directory in place of the file cannot be read, even by root.
    (paths.dmi / "product_serial").mkdir()
    with caplog.at_level(logging.INFO, logger="vdsm_py.host"):
        assert read_dmi(paths) == {"systemManufacturer": "QEMU"}
    assert "product_serial" in caplog.text


def test_no_dmi_at_all_gives_an_empty_report(tmp_path):
    assert HardwareInfo(HostPaths(sys=tmp_path / "nothing")).report() == {}


def test_first_reading_is_kept(tmp_path):
    paths = dmi_tree(tmp_path, {"sys_vendor": "QEMU"})
    hw = HardwareInfo(paths)
    first = hw.report()
    (paths.dmi / "sys_vendor").write_text("Changed\n")
    assert hw.report() == first == {"systemManufacturer": "QEMU"}
    first["systemManufacturer"] = "tampered"
    assert hw.report()["systemManufacturer"] == "QEMU"


def test_real_machine_reports_only_known_keys_with_values():
    info = HardwareInfo().report()
    assert set(info) <= set(DMI_FILES)
    assert all(isinstance(v, str) and v and v != "Not Specified" for v in info.values())
    dmi = Path("/sys/class/dmi/id/sys_vendor")
    if dmi.exists():
        assert info.get("systemManufacturer") == dmi.read_text().strip() or \
            dmi.read_text().strip() in ("", "Not Specified")
